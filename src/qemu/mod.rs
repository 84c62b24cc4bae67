//! The QEMU flow (`kforge qemu build`): the kernel flow's sibling on the same machinery: a
//! bare mirror, warm slots (`WORKERS_DIR/<index>/main/qemu` with `build/` and `destdir/`),
//! the generic step runner and run record, the managed ccache config, the store (entries
//! `qemu-<release>`), and a manifest whose `qemu_binary` the guest layer boots with.
//!
//! Steps: prepare_worktree -> build_flags -> fetch_identity -> reuse_check -> configure -> compile -> install
//! -> publish -> collect. The identity is known at build_flags (tree, options, toolchain),
//! so a reused QEMU is not even configured. `plan` does every check that needs no change on
//! disk first.

mod build_flags;
mod collect;
mod compile;
mod configure;
mod fetch_identity;
mod install;
mod known;
mod publish;
pub mod request;
mod reuse_check;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::dirs::Dirs;
use crate::error::{Error, PickError, PlanError};
use crate::flow::{self, Event, Reporter, Reused, Step};
use crate::process::Cmd;
use crate::slot::{Mirror, RefKind, ResolvedRef, Slot};
use crate::store::{EntryName, Kind, Layer, Release, Store};
use crate::toolchain::{self, Compiler, ToolchainIdentity};

pub use request::{Features, QemuRequest};

/// The project name of this flow's slots and mirror.
pub const PROJECT: &str = "qemu";
/// Bumped when kforge changes how it configures or installs QEMU (part of every digest).
pub const RECIPE: &str = "kforge-qemu/1";
/// Where the build installs under destdir/ (configure's --prefix).
pub const PREFIX: &str = "/usr/local";
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;

/// Every input of a QEMU identity's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QemuIdentityInputs {
    pub recipe: String,
    /// The git tree object built (the ref's, or the series' HEAD's).
    pub tree: String,
    /// The tree's VERSION file.
    pub version: String,
    pub target_list: Vec<String>,
    /// configure's options as they shape the binary (no ccache, no host paths, no package
    /// version, which is derived from the identity).
    pub configure_options: Vec<String>,
    pub toolchain: ToolchainIdentity,
    /// First lines of `meson --version` and `ninja --version`.
    pub meson: String,
    pub ninja: String,
}

impl QemuIdentityInputs {
    /// The 12-hex-digit digest of these inputs.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("serializes");
        hex::encode(sha2::Sha256::digest(&bytes))[..crate::identity::DIGEST_LEN].to_owned()
    }
}

/// What `collect` writes to `WORKERS_DIR/<index>/main/qemu.manifest.json` and prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QemuManifest {
    pub schema_version: u32,
    /// `qemu-<release>`: the store entry's name, and what `--qemu` accepts.
    pub identity: String,
    /// `<version>-<digest>`.
    pub release: String,
    pub version: String,
    pub digest: String,
    pub commit: String,
    pub git_ref: String,
    pub ref_kind: RefKind,
    pub series: Option<crate::series::Applied>,
    pub compiler: Compiler,
    pub target_list: Vec<String>,
    pub features: Features,
    /// configure's argv as this build ran it.
    pub configure_args: Vec<String>,
    /// The system emulator the guest layer runs (the first softmmu target's), in the store
    /// when the build is there.
    pub qemu_binary: Option<String>,
    /// The first line of `qemu_binary --version` (it names the identity).
    pub qemu_version: Option<String>,
    /// Every installed program, relative to the install root (`usr/local/bin/...`).
    pub programs: Vec<String>,
    pub build_dir: String,
    pub destdir: String,
    pub worker_index: u32,
    pub inputs: QemuIdentityInputs,
    /// `null` when this run built QEMU; else where the existing copy was found.
    pub reused: Option<Reused>,
    /// The store's entry (`STORE/run/qemu-<release>`), when it is there.
    pub store_entry: Option<String>,
}

/// A checked request, ready to run: nothing on disk has been changed to make it.
#[derive(Debug)]
pub struct Plan {
    pub request: QemuRequest,
    pub dirs: Dirs,
    pub mirror: Mirror,
    pub slot: Slot,
    pub resolved: ResolvedRef,
    pub toolchain: ToolchainIdentity,
    pub series: Option<(String, Option<PathBuf>)>,
}

/// What configure decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Configured {
    pub release: Release,
    pub digest: String,
    pub inputs: QemuIdentityInputs,
    /// configure's argv (after the script's path).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// An existing copy of the identity in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hit {
    /// Where it was found: the store, or a peer (now in the store).
    pub how: Reused,
    pub entry: PathBuf,
    pub manifest: QemuManifest,
}

/// State shared by the steps of one run.
#[derive(Debug)]
pub struct QemuRun {
    pub plan: Plan,
    /// The identity's store lock, held shared from reuse_check to the end of the run.
    pub hold: Option<crate::fsutil::FileLock>,
    pub state: QemuState,
}

/// What the steps of a run have found and made: the part of a run that crosses process
/// boundaries (see [`flow::Stateful`]); a step's result carries the fields it changed.
#[derive(Debug, Default, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QemuState {
    /// The ref as prepare_worktree resolved it (see the kernel flow's state).
    pub pinned: Option<ResolvedRef>,
    pub tree: Option<String>,
    pub series: Option<crate::series::Applied>,
    pub configured: Option<Configured>,
    /// The existing copy reuse_check (or fetch_identity) found.
    pub reused: Option<Hit>,
    /// Installed programs, relative to destdir/.
    pub programs: Option<Vec<String>>,
    pub qemu_version: Option<String>,
    pub store_entry: Option<PathBuf>,
    pub manifest: Option<QemuManifest>,
}

flow::checkout::checks_by_fields!(QemuRun, QemuState);

impl QemuRun {
    fn new(plan: Plan) -> Self {
        Self {
            plan,
            hold: None,
            state: QemuState::default(),
        }
    }
    /// The commit built: the series' HEAD when one was applied, else the ref's commit.
    pub fn head_commit(&self) -> &str {
        self.state
            .series
            .as_ref()
            .map_or(self.plan.resolved.commit.as_str(), |s| s.head.as_str())
    }
    pub fn store(&self) -> Result<Store, Error> {
        Ok(Store::open(&self.plan.dirs.store, Kind::Qemu)?)
    }
    fn configured(&self) -> &Configured {
        self.state.configured.as_ref().expect("configure ran")
    }
    fn reused_reason(&self) -> Option<String> {
        self.state
            .reused
            .as_ref()
            .map(|h| format!("{} reused from {}", h.manifest.identity, h.how.as_str()))
    }
}

/// The QEMU mirror, with a hint that names this flow's commands when it is missing.
fn open_mirror(dirs: &Dirs) -> Result<Mirror, Error> {
    Mirror::open(&dirs.qemu_mirror).map_err(|e| match e {
        crate::slot::mirror::MirrorError::Missing(p) => PlanError::NoQemuMirror(p).into(),
        other => other.into(),
    })
}

/// Checks a request against the mirror and the host before any change.
pub fn plan(request: QemuRequest, dirs: &Dirs) -> Result<Plan, Error> {
    request.validate()?;
    let mirror = open_mirror(dirs)?;
    let git_ref = match &request.git_ref {
        Some(r) => r.clone(),
        None => mirror.newest_tag()?,
    };
    let resolved = mirror.resolve(&git_ref)?;
    let top = mirror.list_dir(&resolved.commit, "")?;
    for needed in ["configure", "VERSION", "meson.build"] {
        if !top.iter().any(|n| n == needed) {
            return Err(PlanError::NotAQemuTree {
                git_ref,
                commit: resolved.commit,
                missing: needed,
            }
            .into());
        }
    }
    let known = mirror.list_dir(&resolved.commit, "configs/targets")?;
    if !known.is_empty() {
        for t in &request.target_list {
            if !known.iter().any(|k| k == &format!("{t}.mak")) {
                let known = known
                    .iter()
                    .filter_map(|k| k.strip_suffix(".mak"))
                    .map(str::to_owned)
                    .collect();
                return Err(PlanError::UnknownTarget {
                    target: t.clone(),
                    git_ref,
                    known,
                }
                .into());
            }
        }
    }
    let series = match &request.b4_series {
        Some(s) => {
            let msgid = crate::series::parse_message_id(s)?;
            let mbox = request
                .b4_mbox
                .as_deref()
                .map(crate::series::check_mbox)
                .transpose()?;
            crate::process::find_program("b4")?;
            Some((msgid, mbox))
        }
        None => None,
    };
    let toolchain = toolchain::resolve(
        request.compiler,
        Some(&toolchain::hash_cache(&dirs.system_dir)),
    )?;
    crate::process::find_program("ninja")?;
    if request.ccache {
        crate::process::find_program("ccache")?;
    }
    let slot = Slot::new(&dirs.workers_dir, dirs.worker_index, PROJECT);
    Ok(Plan {
        request: QemuRequest {
            git_ref: Some(git_ref),
            ..request
        },
        dirs: dirs.clone(),
        mirror,
        slot,
        resolved,
        toolchain,
        series,
    })
}

/// Every step of the QEMU flow, in order.
pub const STEPS: &[&dyn Step<QemuRun>] = &[
    &flow::checkout::PrepareWorktree,
    &build_flags::BuildFlags,
    &fetch_identity::FetchIdentity,
    &reuse_check::ReuseCheck,
    &configure::Configure,
    &compile::Compile,
    &install::Install,
    &publish::Publish,
    &collect::Collect,
];

/// The QEMU flow on the generic lifecycle ([`flow::lifecycle`]).
pub struct QemuFlow;

impl flow::lifecycle::Flow for QemuFlow {
    const PROJECT: &'static str = PROJECT;
    const WHAT: &'static str = "QEMU";
    const BUILD_COMMAND: &'static str = "kforge qemu build";
    type Request = QemuRequest;
    type Plan = Plan;
    type Run = QemuRun;
    type Manifest = QemuManifest;

    fn plan(request: QemuRequest, dirs: &Dirs) -> Result<Plan, Error> {
        plan(request, dirs)
    }
    fn request(plan: &Plan) -> &QemuRequest {
        &plan.request
    }
    fn slot(plan: &Plan) -> &Slot {
        &plan.slot
    }
    fn dirs(plan: &Plan) -> &Dirs {
        &plan.dirs
    }
    fn start(plan: Plan) -> QemuRun {
        QemuRun::new(plan)
    }
    fn steps() -> &'static [&'static dyn Step<QemuRun>] {
        STEPS
    }
    fn manifest(run: &QemuRun) -> Option<&QemuManifest> {
        run.state.manifest.as_ref()
    }
    fn known(
        run: &mut QemuRun,
        until: Option<&str>,
        reporter: &dyn Reporter,
    ) -> Result<bool, Error> {
        known::answer(run, until, reporter)
    }
}

/// The result of a QEMU run.
pub type Finished = flow::lifecycle::Finished<QemuFlow>;

/// A slot's last QEMU run.
pub type RunRecord = flow::record::RunRecord<QemuRequest>;

/// Where collect writes the slot's last QEMU manifest.
pub fn manifest_path(slot: &Slot) -> PathBuf {
    slot.root.join(format!("{PROJECT}.manifest.json"))
}

/// Resolves what `--qemu` names to a QEMU binary: a QEMU manifest (its `qemu_binary`), an
/// identity in the store (`qemu-<release>` or `<release>`), or an executable file.
pub fn binary_for(arg: &Path, store_root: &Path) -> Result<PathBuf, Error> {
    let text = arg.to_string_lossy();
    if arg.is_file() {
        let bytes = fs_err::read(arg)?;
        if bytes.first() == Some(&b'{') {
            let m: QemuManifest =
                serde_json::from_slice(&bytes).map_err(|source| PickError::NotAManifest {
                    path: arg.to_owned(),
                    what: "a QEMU manifest (kforge qemu build writes them)",
                    source,
                })?;
            let bin = m
                .qemu_binary
                .ok_or_else(|| PickError::NoQemuBinary(arg.to_owned()))?;
            return check_executable(PathBuf::from(bin));
        }
        return check_executable(crate::dirs::absolute(arg));
    }
    if let Ok(
        name @ EntryName {
            kind: Kind::Qemu, ..
        },
    ) = EntryName::parse_or(&text, Kind::Qemu)
    {
        let store = Store::open(store_root, Kind::Qemu)?;
        let Some(record) = store.record::<QemuManifest>(Layer::Run, &name.release)? else {
            return Err(PickError::NotInStore {
                arg: text.into_owned(),
                name,
                store: store_root.to_owned(),
                hint: "`kforge qemu build` makes one",
            }
            .into());
        };
        let entry = store.layer_dir(Layer::Run, &name.release);
        let bin = entry_binary(&entry, &record.manifest.target_list)
            .ok_or(PickError::NoEmulator(name))?;
        return check_executable(bin);
    }
    Err(PickError::Neither {
        arg: text.into_owned(),
        what: "a file nor a QEMU identity (qemu-<release>)",
    }
    .into())
}

fn check_executable(p: PathBuf) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt as _;
    match fs_err::metadata(&p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(p),
        Ok(_) => Err(PickError::NotExecutable(p).into()),
        Err(_) => Err(PickError::NoSuchBinary(p).into()),
    }
}

// ---- Shared by the steps

fn forward<'a>(step: &'a str, reporter: &'a dyn Reporter) -> impl FnMut(&str) + 'a {
    move |line: &str| reporter.event(&Event::Output { step, line })
}

fn info(reporter: &dyn Reporter, step: &str, message: &str) {
    reporter.event(&Event::Info { step, message });
}

/// Runs `cmd`, showing it with -v and streaming its lines as events of `step`.
fn stream(cmd: &Cmd, step: &str, reporter: &dyn Reporter) -> Result<(), Error> {
    reporter.event(&Event::Command {
        step,
        command: &cmd.display(),
    });
    cmd.stream(&mut forward(step, reporter))?;
    Ok(())
}

fn first_line_of(program: &str) -> String {
    Cmd::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| o.lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "none".to_owned())
}

/// The system emulator of an installed tree: the first softmmu target's.
fn entry_binary(root: &Path, target_list: &[String]) -> Option<PathBuf> {
    target_list
        .iter()
        .find_map(|t| t.strip_suffix("-softmmu"))
        .map(|arch| {
            root.join(PREFIX.trim_start_matches('/'))
                .join("bin")
                .join(format!("qemu-system-{arch}"))
        })
}

/// The meson configure set up: the tree's own (in build/pyvenv) or the host's.
fn meson(build: &Path) -> std::ffi::OsString {
    let own = build.join("pyvenv/bin/meson");
    if own.is_file() {
        own.into_os_string()
    } else {
        "meson".into()
    }
}

impl crate::store::peers::OfRelease for QemuManifest {
    fn release(&self) -> &str {
        &self.release
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> QemuIdentityInputs {
        QemuIdentityInputs {
            recipe: RECIPE.into(),
            tree: "a".repeat(40),
            version: "7.2.22".into(),
            target_list: vec!["x86_64-softmmu".into()],
            configure_options: vec!["--without-default-features".into()],
            toolchain: ToolchainIdentity {
                compiler: "gcc".into(),
                cc: "gcc (Debian 12.2.0-14) 12.2.0".into(),
                linker: "GNU ld 2.40".into(),
                make: "GNU Make 4.3".into(),
                env: None,
                tools: std::collections::BTreeMap::new(),
            },
            meson: "1.0.1".into(),
            ninja: "1.11.1".into(),
        }
    }

    #[test]
    fn every_input_moves_the_digest() {
        let base = inputs().digest();
        assert_eq!(base.len(), 12);
        assert_eq!(base, inputs().digest(), "a pure function");
        let mut changed = Vec::new();
        let mut i = inputs();
        i.tree = "b".repeat(40);
        changed.push(i.digest());
        let mut i = inputs();
        i.configure_options.push("--enable-slirp".into());
        changed.push(i.digest());
        let mut i = inputs();
        i.target_list.push("aarch64-softmmu".into());
        changed.push(i.digest());
        let mut i = inputs();
        i.toolchain.cc = "clang version 14".into();
        changed.push(i.digest());
        let mut i = inputs();
        i.meson = "1.7.0".into();
        changed.push(i.digest());
        for d in changed {
            assert_ne!(d, base);
        }
    }
}
