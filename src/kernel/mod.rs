//! The kernel flow (`f/kernel/build`): its steps in the spec's order, one file each, on the
//! generic runner, slots and toolchain parts.
//!
//! `plan` does every check that needs no change on disk (request, mirror, ref, library,
//! config goals, toolchain); only then is the slot locked and touched.

pub mod figures;
pub mod kbuild;
pub mod manifest;
pub mod repro;
pub mod request;

mod build_flags;
mod collect;
mod compile;
mod config_file;
mod configure;
mod deploy_worktree;
mod devtools;
mod fetch_devel;
mod fetch_identity;
mod install;
mod install_modules;
mod known;
mod memory;
pub(crate) mod publish;
mod reuse_check;

use std::path::PathBuf;

use crate::dirs::Dirs;
use crate::error::{Error, InvalidRequest};
use crate::flow::{self, Reporter, Step};
use crate::identity::IdentityInputs;
use crate::kernel::manifest::Manifest;
use crate::kernel::request::{ConfigMethod, KernelRequest};
use crate::library::Library;
use crate::slot::{Mirror, ResolvedRef, Slot};
use crate::store::{Kind, Layer, LayerRecord, Release, Store, StoreError};
use crate::toolchain::{self, ToolchainIdentity};

pub use build_flags::{BuildFlags, jobs};
pub use collect::manifest_path as collect_manifest_path;
pub use configure::Configured;
pub use publish::devel_sources;
pub use reuse_check::Hit;

/// The project name of this flow's slots and mirror.
pub const PROJECT: &str = "linux";

/// A checked request, ready to run: nothing on disk has been changed to make it.
#[derive(Debug)]
pub struct Plan {
    pub request: KernelRequest,
    pub dirs: Dirs,
    pub mirror: Mirror,
    pub library: Library,
    pub slot: Slot,
    pub resolved: ResolvedRef,
    pub toolchain: ToolchainIdentity,
    /// The files the configure step will feed Kconfig, read from the library now so an
    /// unknown name fails before anything is touched.
    pub config_inputs: Vec<(String, String)>,
    /// The series' message-id and local thread copy, checked.
    pub series: Option<(String, Option<PathBuf>)>,
    /// With `worktree`: the snapshot of its files that this run builds.
    pub snapshot: Option<crate::slot::snapshot::Snapshot>,
}

/// State shared by the steps of one run.
#[derive(Debug)]
pub struct KernelRun {
    pub plan: Plan,
    /// The identity's store lock, held shared from reuse_check to the end of the run.
    pub hold: Option<crate::fsutil::FileLock>,
    pub state: KernelState,
}

/// What the steps of a run have found and made: the part of a run that crosses process
/// boundaries (see [`flow::Stateful`]); a step's result carries the fields it changed.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KernelState {
    /// The ref as prepare_worktree resolved it: later steps run in other processes build
    /// this commit even if the ref has moved since.
    pub pinned: Option<ResolvedRef>,
    /// The git tree object prepare_worktree checked out.
    pub tree: Option<String>,
    /// The applied series, when `b4_series` is set.
    pub series: Option<crate::series::Applied>,
    pub flags: Option<BuildFlags>,
    pub configured: Option<Configured>,
    /// Where this identity's `.config` is: the slot's build/.config, or the configure
    /// memory's copy when the run was answered without the slot.
    pub config: Option<PathBuf>,
    pub bz_image: Option<PathBuf>,
    pub modules_dir: Option<PathBuf>,
    /// The existing copy reuse_check (or fetch_identity) found.
    pub reused: Option<Hit>,
    pub store_entry: Option<PathBuf>,
    pub store_devel: Option<PathBuf>,
    /// build/compile_commands.json, when devtools made it.
    pub compile_commands: Option<PathBuf>,
    /// The developer worktree deploy_worktree laid (or found) for this build.
    pub dev_worktree: Option<PathBuf>,
    /// Warnings, ccache and sizes of the build compile made (see [`figures`]).
    pub figures: Option<figures::BuildFigures>,
    pub manifest: Option<Manifest>,
}

flow::checkout::checks_by_fields!(KernelRun, KernelState);

impl KernelRun {
    /// The commit built: the series' HEAD when one was applied, else the ref's commit.
    pub fn head_commit(&self) -> &str {
        self.state
            .series
            .as_ref()
            .map_or(self.plan.resolved.commit.as_str(), |s| s.head.as_str())
    }
    /// This host's store, as its kernel entries.
    pub fn store(&self) -> Result<Store, Error> {
        Ok(Store::open(&self.plan.dirs.store, Kind::Kernel)?)
    }
    /// The identity as a store release (known once configure ran).
    pub fn release(&self) -> Release {
        self.configured()
            .uts_release
            .parse()
            .expect("compose_release makes a valid release")
    }
    /// Why a making step is skipped: the identity was found.
    pub(crate) fn reused_reason(&self) -> Option<String> {
        self.state.reused.as_ref().map(|h| {
            format!(
                "kernel-{} reused from {}",
                h.manifest.uts_release,
                h.how.as_str()
            )
        })
    }
    /// Where this identity's `.config` is (see [`KernelState::config`]).
    pub fn config_path(&self) -> PathBuf {
        self.state
            .config
            .clone()
            .unwrap_or_else(|| self.plan.slot.build.join(".config"))
    }
    fn flags(&self) -> &BuildFlags {
        self.state.flags.as_ref().expect("build_flags ran")
    }
    fn configured(&self) -> &Configured {
        self.state.configured.as_ref().expect("configure ran")
    }
}

/// Checks a request against the mirror, the library and the host before any change.
pub fn plan(request: KernelRequest, dirs: &Dirs) -> Result<Plan, Error> {
    request.validate()?;
    let mirror = Mirror::open(&dirs.mirror)?;
    let (git_ref, resolved, snapshot) = if let Some(dir) = &request.worktree {
        let s = crate::slot::snapshot::take(dir)?;
        (None, s.publish(&mirror)?, Some(s))
    } else {
        let git_ref = match &request.git_ref {
            Some(r) => r.clone(),
            None => mirror.newest_tag()?,
        };
        let resolved = mirror.resolve(&git_ref)?;
        (Some(git_ref), resolved, None)
    };
    let library = Library::new(dirs.library.clone());
    let config_inputs = match request.config_method {
        ConfigMethod::Preset => vec![(
            request.preset.clone(),
            library.preset_for(&request.preset, request.arch)?,
        )],
        ConfigMethod::Fragments => crate::library::canonical_order(&request.fragments)
            .into_iter()
            .map(|id| {
                Library::check_fragment_arch(&id, request.arch)?;
                library.fragment(&id).map(|text| (id, text))
            })
            .collect::<Result<_, _>>()?,
        ConfigMethod::Make => {
            check_goals_exist(
                &mirror,
                &resolved.commit,
                request.arch,
                &request.config_goals(),
            )?;
            Vec::new()
        }
    };
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
    let mut toolchain = toolchain::resolve_for(
        request.compiler,
        request.arch,
        Some(&toolchain::hash_cache(&dirs.system_dir)),
    )?;
    // A declared environment joins the tools' own hashes (validated with the request).
    toolchain.env = request
        .toolchain_env
        .as_deref()
        .map(toolchain::parse_env)
        .transpose()
        .map_err(InvalidRequest::one)?;
    let slot = Slot::new(&dirs.workers_dir, dirs.worker_index, PROJECT);
    Ok(Plan {
        request: KernelRequest { git_ref, ..request },
        dirs: dirs.clone(),
        mirror,
        library,
        slot,
        resolved,
        toolchain,
        config_inputs,
        series,
        snapshot,
    })
}

/// In-tree config goals must exist in the commit being built: `<name>_defconfig` under
/// `arch/<srcarch>/configs/`, `<name>.config` there or under `kernel/configs/`.
fn check_goals_exist(
    mirror: &Mirror,
    commit: &str,
    arch: crate::arch::Arch,
    goals: &[String],
) -> Result<(), Error> {
    let arch = mirror.list_dir(commit, &format!("arch/{}/configs", arch.srcarch()))?;
    let kernel = mirror.list_dir(commit, "kernel/configs")?;
    for goal in goals {
        if kbuild::BUILTIN_CONFIG_GOALS.contains(&goal.as_str()) {
            continue;
        }
        let found = if goal.ends_with("_defconfig") {
            arch.contains(goal)
        } else if goal.ends_with(".config") {
            arch.contains(goal) || kernel.contains(goal)
        } else {
            false
        };
        if !found {
            let mut known: Vec<String> = kbuild::BUILTIN_CONFIG_GOALS
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            known.extend(arch.iter().chain(kernel.iter()).cloned());
            return Err(crate::error::PlanError::UnknownGoal {
                goal: goal.clone(),
                commit: commit.to_owned(),
                known,
            }
            .into());
        }
    }
    Ok(())
}

/// How far a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Up to configure: the identity is known.
    Identity,
    /// The whole flow: built, installed, manifest collected.
    Collect,
}

/// Every step of the kernel flow, in the spec's order.
pub const STEPS: &[&dyn Step<KernelRun>] = &[
    &flow::checkout::PrepareWorktree,
    &build_flags::BuildFlagsStep,
    &configure::Configure,
    &fetch_identity::FetchIdentity,
    &reuse_check::ReuseCheck,
    &compile::Compile,
    &devtools::Devtools,
    &install::Install,
    &install_modules::InstallModules,
    &publish::Publish,
    &publish::PublishDevel,
    &deploy_worktree::DeployWorktree,
    &fetch_devel::FetchDevel,
    &collect::Collect,
];

/// The kernel flow on the generic lifecycle ([`flow::lifecycle`]).
pub struct KernelFlow;

/// The configure branches an engine runs by name (`configure_<config_method>`).
const CONFIGURE_BRANCHES: &[&str] = &["configure_preset", "configure_make", "configure_fragments"];

impl flow::lifecycle::Flow for KernelFlow {
    const PROJECT: &'static str = PROJECT;
    const WHAT: &'static str = "kernel";
    const BUILD_COMMAND: &'static str = "kforge build";
    type Request = KernelRequest;
    type Plan = Plan;
    type Run = KernelRun;
    type Manifest = Manifest;

    fn plan(request: KernelRequest, dirs: &Dirs) -> Result<Plan, Error> {
        plan(request, dirs)
    }
    fn request(plan: &Plan) -> &KernelRequest {
        &plan.request
    }
    fn slot(plan: &Plan) -> &Slot {
        &plan.slot
    }
    fn dirs(plan: &Plan) -> &Dirs {
        &plan.dirs
    }
    fn start(plan: Plan) -> KernelRun {
        KernelRun::new(plan)
    }
    fn steps() -> &'static [&'static dyn Step<KernelRun>] {
        STEPS
    }
    fn manifest(run: &KernelRun) -> Option<&Manifest> {
        run.state.manifest.as_ref()
    }
    fn known(
        run: &mut KernelRun,
        until: Option<&str>,
        reporter: &dyn Reporter,
    ) -> Result<bool, Error> {
        known::answer(run, until, reporter)
    }
    /// `configure_<method>` is configure, for a request whose config_method is `<method>`.
    fn alias(name: &str, request: &KernelRequest) -> Result<Option<&'static str>, Error> {
        let Some(method) = name.strip_prefix("configure_") else {
            return Ok(None);
        };
        if !CONFIGURE_BRANCHES.contains(&name) {
            return Ok(None);
        }
        if method != request.config_method.as_str() {
            return Err(crate::error::FlowError::WrongBranch(format!(
                "step {name} is the configure branch for config_method {method}, but the request's config_method is {}",
                request.config_method.as_str()
            ))
            .into());
        }
        Ok(Some("configure"))
    }
    fn alias_names() -> &'static [&'static str] {
        CONFIGURE_BRANCHES
    }
}

/// The result of a kernel run.
pub type Finished = flow::lifecycle::Finished<KernelFlow>;

/// A slot's last kernel run (see [`flow::record`]).
pub type RunRecord = flow::record::RunRecord<KernelRequest>;

impl KernelRun {
    fn new(plan: Plan) -> Self {
        Self {
            plan,
            hold: None,
            state: KernelState::default(),
        }
    }
}

/// Locks the plan's slot and runs the flow up to `until`.
pub fn run(
    plan: Plan,
    until: Until,
    wait: bool,
    reporter: &dyn Reporter,
) -> Result<Finished, Error> {
    let last = match until {
        Until::Identity => Some("configure"),
        Until::Collect => None,
    };
    flow::lifecycle::run::<KernelFlow>(plan, last, wait, reporter)
}

/// A kernel entry's layer record.
pub type KernelRecord = LayerRecord<Manifest>;

/// The manifest for an identity in this store: the record's, with `bzImage`,
/// `modules_dir` and the store fields pointing at this store's copy.
pub fn store_manifest(store: &Store, release: &Release) -> Result<Manifest, StoreError> {
    let record: KernelRecord = store
        .record(Layer::Run, release)?
        .ok_or_else(|| StoreError::Missing(store.entry(release), "run"))?;
    let entry = store.layer_dir(Layer::Run, release);
    let modules = entry.join("lib/modules").join(release.as_str());
    let devel = store.layer_dir(Layer::Devel, release);
    let mut m = record.manifest;
    m.bz_image = Some(
        entry
            .join(format!("boot/vmlinuz-{release}"))
            .display()
            .to_string(),
    );
    m.modules_dir = modules.is_dir().then(|| modules.display().to_string());
    m.store_entry = Some(entry.display().to_string());
    m.store_devel = devel.is_dir().then(|| devel.display().to_string());
    Ok(m)
}

/// What `kforge identity` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdentityReport {
    pub uts_release: String,
    pub version: String,
    pub label: String,
    pub digest: String,
    pub commit: String,
    pub git_ref: String,
    pub config: String,
    pub inputs: IdentityInputs,
}

impl IdentityReport {
    pub fn of(run: &KernelRun) -> Self {
        let c = run.configured();
        Self {
            uts_release: c.uts_release.clone(),
            version: c.version.clone(),
            label: c.label.clone(),
            digest: c.digest.clone(),
            commit: run.head_commit().to_owned(),
            git_ref: run.plan.resolved.name.clone(),
            config: run.config_path().display().to_string(),
            inputs: c.inputs.clone(),
        }
    }
}

/// Forwards a tool's output lines to the reporter as events of `step`.
pub(crate) fn forward<'a>(step: &'a str, reporter: &'a dyn Reporter) -> impl FnMut(&str) + 'a {
    move |line: &str| reporter.event(&flow::Event::Output { step, line })
}

/// Runs `make O=build <flags> <extra>` in the slot's tree, streaming its lines as events.
pub(crate) fn run_make(
    ctx: &KernelRun,
    step: &'static str,
    extra: &[std::ffi::OsString],
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    run_make_observed(ctx, step, extra, &[], &mut |_| {}, reporter)
}

/// [`run_make`] with more environment and every output line also shown to `observe`.
pub(crate) fn run_make_observed(
    ctx: &KernelRun,
    step: &'static str,
    extra: &[std::ffi::OsString],
    env: &[(&str, &std::path::Path)],
    observe: &mut dyn FnMut(&str),
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    let flags = ctx.flags();
    let mut cmd = crate::process::Cmd::new("make")
        .cwd(&ctx.plan.slot.src)
        .args(kbuild::make_argv(&flags.make, &[]))
        .args(extra.iter().cloned())
        .hints(kbuild::build_hints);
    for (k, v) in &flags.make.env {
        cmd = cmd.env(k, v);
    }
    for (k, v) in env {
        cmd = cmd.env(*k, *v);
    }
    reporter.event(&flow::Event::Command {
        step,
        command: &cmd.display(),
    });
    let mut show = forward(step, reporter);
    cmd.stream(&mut |line: &str| {
        observe(line);
        show(line);
    })?;
    Ok(())
}
