//! The QEMU flow's steps. The identity is known before configure runs (it is a function of
//! the tree, the options and the toolchain), so a reused identity skips configure too.

use std::path::{Path, PathBuf};

use super::{Configured, Hit, PREFIX, QemuIdentityInputs, QemuManifest, QemuRun, RECIPE};
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::fsutil::write_atomic;
use crate::manifest::Reused;
use crate::process::Cmd;
use crate::slot::git::git;
use crate::store::{Layer, Published, sources_under};
use crate::toolchain::{Compiler, ccache};

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

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
pub(super) fn entry_binary(root: &Path, m: &QemuManifest) -> Option<PathBuf> {
    m.target_list
        .iter()
        .find_map(|t| t.strip_suffix("-softmmu"))
        .map(|arch| {
            root.join(PREFIX.trim_start_matches('/'))
                .join("bin")
                .join(format!("qemu-system-{arch}"))
        })
}

pub struct PrepareWorktree;

impl Step<QemuRun> for PrepareWorktree {
    fn name(&self) -> &'static str {
        "prepare_worktree"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let plan = &ctx.plan;
        let slot = &plan.slot;
        let report = slot.sync(
            &plan.mirror,
            &plan.resolved.commit,
            plan.request.recreate_build_worktree,
        )?;
        let at = format!("{} ({})", plan.resolved.name, short(&plan.resolved.commit));
        let what = match (report.fresh_clone, report.changed_files) {
            (true, _) => format!("laid a fresh checkout of {at}"),
            (false, Some(0)) => format!("already at {at}"),
            (false, Some(n)) => format!("re-synced to {at}: {n} files differ"),
            (false, None) => format!("checked out {at}"),
        };
        info(reporter, self.name(), &what);
        if let Some((msgid, mbox)) = &plan.series {
            ctx.series = Some(crate::series::apply_and_publish(
                slot,
                &plan.mirror.path,
                (msgid, mbox.as_deref()),
                &plan.resolved.commit,
                self.name(),
                reporter,
            )?);
        }
        let slot = &ctx.plan.slot;
        if ctx.plan.request.wipe_build {
            info(reporter, self.name(), "wipe_build: removing build/");
            slot.wipe_build()?;
        }
        fs_err::create_dir_all(&slot.build)?;
        fs_err::create_dir_all(&slot.destdir)?;
        ctx.tree = Some(slot.head_tree()?);
        ctx.pinned = Some(ctx.plan.resolved.clone());
        Ok(Outcome::Ran)
    }
}

/// build_flags: configure's argv and environment, and the identity they make.
pub struct BuildFlags;

impl Step<QemuRun> for BuildFlags {
    fn name(&self) -> &'static str {
        "build_flags"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let plan = &ctx.plan;
        let req = &plan.request;
        let slot = &plan.slot;
        let version_file = slot.src.join("VERSION");
        let version = fs_err::read_to_string(&version_file)?.trim().to_owned();
        if version.is_empty()
            || version.len() > 24
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+".contains(c))
        {
            return Err(Error::Build(format!(
                "{} says `{}`, which is not a QEMU version",
                version_file.display(),
                version.escape_debug()
            )));
        }
        let (cc, cxx) = match req.compiler {
            Compiler::Gcc => ("gcc", "g++"),
            Compiler::Clang => ("clang", "clang++"),
        };
        crate::process::find_program(cxx)?;
        let mut env = Vec::new();
        let wrap = if req.ccache {
            let conf = ccache::write_ccache_conf(&ccache::CcacheSettings {
                cache_dir: plan.dirs.ccache_dir.clone(),
                max_size: req.ccache_max_size.clone(),
                base_dir: plan.dirs.workers_dir.clone(),
                remote: plan.dirs.ccache_remote.clone(),
            })?;
            env.extend(ccache::env_for(&conf));
            "ccache "
        } else {
            ""
        };
        // (the argument configure gets, the form it takes in the identity)
        let mut options: Vec<(String, String)> = Vec::new();
        let same = |a: String| (a.clone(), a);
        options.push(same(format!("--prefix={PREFIX}")));
        options.push(same(format!("--target-list={}", req.target_list.join(","))));
        options.push((format!("--cc={wrap}{cc}"), format!("--cc={cc}")));
        options.push((format!("--cxx={wrap}{cxx}"), format!("--cxx={cxx}")));
        options.push(same(format!("--host-cc={cc}")));
        options.extend(req.features.options().iter().map(|o| same((*o).to_owned())));
        options.extend(req.configure_options.iter().cloned().map(same));
        if !req.has_firmware_path() {
            options.push(same(format!(
                "--firmwarepath={}",
                super::request::DEFAULT_FIRMWARE_PATH
            )));
        }
        if req.reproducible {
            // Debug info names the build directory; map the slot out so slots agree.
            options.push((
                format!("--extra-cflags=-ffile-prefix-map={}=.", slot.src.display()),
                "--extra-cflags=-ffile-prefix-map=<slot>=.".to_owned(),
            ));
            let epoch = git(&slot.src)
                .args(["show", "--no-patch", "--format=%ct", "HEAD"])
                .output()?;
            env.push(("SOURCE_DATE_EPOCH".to_owned(), epoch.trim().to_owned()));
        }
        let inputs = QemuIdentityInputs {
            recipe: RECIPE.to_owned(),
            tree: ctx.tree.clone().expect("prepare_worktree ran"),
            version: version.clone(),
            target_list: req.target_list.clone(),
            configure_options: options.iter().map(|(_, id)| id.clone()).collect(),
            toolchain: plan.toolchain.clone(),
            meson: first_line_of("meson"),
            ninja: first_line_of("ninja"),
        };
        let digest = inputs.digest();
        let release = format!("{version}-{digest}");
        crate::store::validate_release(&release)?;
        let mut argv: Vec<String> = options.into_iter().map(|(a, _)| a).collect();
        // `qemu-system-x86_64 --version` then names the identity, as `uname -r` does a kernel's.
        argv.push(format!("--with-pkgversion=kforge-qemu-{release}"));
        info(
            reporter,
            self.name(),
            &format!("identity qemu-{release} ({})", req.features.as_str()),
        );
        ctx.configured = Some(Configured {
            release,
            digest,
            inputs,
            args: argv,
            env,
        });
        Ok(Outcome::Ran)
    }
}

/// reuse_check: is `qemu-<release>` in this host's store, intact?
pub struct ReuseCheck;

impl Step<QemuRun> for ReuseCheck {
    fn name(&self) -> &'static str {
        "reuse_check"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if !ctx.plan.request.reuse {
            return Ok(Outcome::Skipped("reuse is off: building anew".into()));
        }
        let release = ctx.configured().release.clone();
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&release)?);
        }
        let record = match store.record_as::<QemuManifest>(Layer::Run, &release) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(Outcome::Ran),
            Err(e) => {
                reporter.event(&Event::Warn {
                    step: self.name(),
                    message: &format!("qemu-{release} in the store is damaged, rebuilding: {e}"),
                });
                return Ok(Outcome::Ran);
            }
        };
        let problems = store.verify(Layer::Run, &release)?;
        if !problems.is_empty() {
            reporter.event(&Event::Warn {
                step: self.name(),
                message: &format!(
                    "qemu-{release} in the store is damaged, rebuilding: {}",
                    problems.join("; ")
                ),
            });
            return Ok(Outcome::Ran);
        }
        store.touch(&release);
        let entry = store.layer_dir(Layer::Run, &release);
        info(
            reporter,
            self.name(),
            &format!(
                "qemu-{release} is in the store ({}): not rebuilding",
                entry.display()
            ),
        );
        ctx.reused = Some(Hit {
            entry,
            manifest: record.manifest,
        });
        Ok(Outcome::Ran)
    }
}

/// What configure last ran with in build/, so a warm slot is not configured again.
const CONFIGURE_STAMP: &str = "kforge-configure.json";

pub struct Configure;

impl Step<QemuRun> for Configure {
    fn name(&self) -> &'static str {
        "configure"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let slot = &ctx.plan.slot;
        let c = ctx.configured();
        let stamp_text = serde_json::to_string_pretty(&serde_json::json!({
            "args": c.args,
            "env": c.env,
        }))
        .expect("serializes");
        let stamp = slot.build.join(CONFIGURE_STAMP);
        if slot.build.join("build.ninja").is_file()
            && fs_err::read_to_string(&stamp).ok().as_deref() == Some(stamp_text.as_str())
        {
            return Ok(Outcome::Skipped(
                "build/ is configured with these options already".into(),
            ));
        }
        // Another configuration's build/ would mix the two: start it clean.
        slot.wipe_build()?;
        let mut cmd = Cmd::new(slot.src.join("configure").as_os_str())
            .cwd(&slot.build)
            .args(c.args.iter().cloned());
        for (k, v) in &c.env {
            cmd = cmd.env(k, v);
        }
        stream(&cmd, self.name(), reporter)?;
        write_atomic(&stamp, stamp_text.as_bytes())?;
        Ok(Outcome::Ran)
    }
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

#[derive(serde::Deserialize)]
struct MesonTarget {
    filename: Vec<PathBuf>,
    installed: bool,
}

pub struct Compile;

impl Step<QemuRun> for Compile {
    fn name(&self) -> &'static str {
        "compile"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let slot = &ctx.plan.slot;
        // Only what install takes: the test programs and benchmarks of a plain `ninja`
        // would double the build.
        let json = Cmd::new(meson(&slot.build))
            .cwd(&slot.build)
            .args(["introspect", "--targets"])
            .output()?;
        let targets: Vec<MesonTarget> = serde_json::from_str(&json)
            .map_err(|e| Error::Build(format!("meson introspect --targets: {e}")))?;
        let mut outputs: Vec<String> = targets
            .iter()
            .filter(|t| t.installed)
            .flat_map(|t| t.filename.iter())
            .filter_map(|f| f.strip_prefix(&slot.build).ok())
            .map(|f| f.display().to_string())
            .collect();
        outputs.sort();
        outputs.dedup();
        if outputs.is_empty() {
            return Err(Error::Build(
                "meson lists nothing to install: is the target list empty?".into(),
            ));
        }
        let jobs = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut cmd = Cmd::new("ninja")
            .cwd(&slot.build)
            .arg(format!("-j{jobs}"))
            .args(outputs);
        for (k, v) in &ctx.configured().env {
            cmd = cmd.env(k, v);
        }
        stream(&cmd, self.name(), reporter)?;
        Ok(Outcome::Ran)
    }
}

pub struct Install;

impl Step<QemuRun> for Install {
    fn name(&self) -> &'static str {
        "install"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let slot = &ctx.plan.slot;
        if slot.destdir.exists() {
            fs_err::remove_dir_all(&slot.destdir)?;
        }
        fs_err::create_dir_all(&slot.destdir)?;
        let cmd = Cmd::new(meson(&slot.build))
            .cwd(&slot.build)
            .args(["install", "--no-rebuild", "--destdir"])
            .arg(&slot.destdir);
        stream(&cmd, self.name(), reporter)?;
        let mut programs = Vec::new();
        for dir in ["bin", "libexec"] {
            let rel = format!("{}/{dir}", PREFIX.trim_start_matches('/'));
            let abs = slot.destdir.join(&rel);
            if abs.is_dir() {
                programs.extend(sources_under(&abs, &rel)?.into_iter().map(|s| s.dest));
            }
        }
        programs.sort();
        let c = ctx.configured();
        let probe = QemuManifest {
            target_list: ctx.plan.request.target_list.clone(),
            ..placeholder(c)
        };
        let version = match entry_binary(&slot.destdir, &probe) {
            Some(bin) => {
                let out = Cmd::new(bin.as_os_str()).arg("--version").output()?;
                let line = out.lines().next().unwrap_or_default().trim().to_owned();
                let want = format!("kforge-qemu-{}", c.release);
                if !line.contains(&want) {
                    return Err(Error::Build(format!(
                        "{} --version says `{line}`, not the identity {want}",
                        bin.display()
                    )));
                }
                info(reporter, self.name(), &line);
                Some(line)
            }
            None => None,
        };
        ctx.programs = Some(programs);
        ctx.qemu_version = version;
        Ok(Outcome::Ran)
    }
}

/// A manifest with this run's identity and nothing else yet.
fn placeholder(c: &Configured) -> QemuManifest {
    QemuManifest {
        schema_version: super::MANIFEST_SCHEMA_VERSION,
        identity: format!("qemu-{}", c.release),
        release: c.release.clone(),
        version: c.inputs.version.clone(),
        digest: c.digest.clone(),
        commit: String::new(),
        git_ref: String::new(),
        ref_kind: String::new(),
        series: None,
        compiler: c.inputs.toolchain.compiler.clone(),
        target_list: c.inputs.target_list.clone(),
        features: String::new(),
        configure_args: c.args.clone(),
        qemu_binary: None,
        qemu_version: None,
        programs: Vec::new(),
        build_dir: String::new(),
        destdir: String::new(),
        worker_index: 0,
        inputs: c.inputs.clone(),
        reused: None,
        store_entry: None,
    }
}

/// The manifest of this run as it stands: a reused build's as recorded, pointed at the
/// store; a fresh one's from the steps' results. Either way with this run's ref and slot.
fn manifest_of(ctx: &QemuRun) -> QemuManifest {
    let slot = &ctx.plan.slot;
    let mut m = if let Some(hit) = &ctx.reused {
        let mut m = hit.manifest.clone();
        m.qemu_binary = entry_binary(&hit.entry, &m).map(|p| p.display().to_string());
        m.store_entry = Some(hit.entry.display().to_string());
        m.reused = Some(Reused::Store);
        m
    } else {
        let c = ctx.configured();
        let mut m = placeholder(c);
        m.programs = ctx.programs.clone().unwrap_or_default();
        m.qemu_version.clone_from(&ctx.qemu_version);
        let root = ctx.store_entry.as_deref().unwrap_or(&slot.destdir);
        m.qemu_binary = entry_binary(root, &m).map(|p| p.display().to_string());
        m.store_entry = ctx.store_entry.as_ref().map(|p| p.display().to_string());
        m
    };
    ctx.head_commit().clone_into(&mut m.commit);
    m.git_ref.clone_from(&ctx.plan.resolved.name);
    m.ref_kind = serde_json::to_value(ctx.plan.resolved.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    m.series.clone_from(&ctx.series);
    ctx.plan
        .request
        .features
        .as_str()
        .clone_into(&mut m.features);
    m.build_dir = slot.build.display().to_string();
    m.destdir = slot.destdir.display().to_string();
    m.worker_index = slot.index;
    m
}

pub struct Publish;

impl Step<QemuRun> for Publish {
    fn name(&self) -> &'static str {
        "publish"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let c = ctx.configured().clone();
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&c.release)?);
        }
        let entry = store.layer_dir(Layer::Run, &c.release);
        let sources = sources_under(&ctx.plan.slot.destdir, "")?;
        ctx.store_entry = Some(entry.clone());
        let manifest = manifest_of(ctx);
        let (published, path) = store.publish_entry(
            Layer::Run,
            &c.release,
            &c.digest,
            &manifest,
            &sources,
            "local",
        )?;
        let what = match published {
            Published::Added => "added",
            Published::AlreadyPresent => "already there (another build published it)",
            Published::Replaced => "replaced the damaged copy of",
        };
        info(
            reporter,
            self.name(),
            &format!(
                "{what} qemu-{} ({} files) at {}",
                c.release,
                sources.len(),
                path.display()
            ),
        );
        Ok(Outcome::Ran)
    }
}

pub struct Collect;

impl Step<QemuRun> for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }

    fn run(&self, ctx: &mut QemuRun, _reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let manifest = manifest_of(ctx);
        if let Some(bin) = &manifest.qemu_binary
            && !Path::new(bin).is_file()
        {
            return Err(Error::Build(format!("the QEMU binary {bin} is missing")));
        }
        let mut text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
        text.push('\n');
        write_atomic(&super::manifest_path(&ctx.plan.slot), text.as_bytes())?;
        ctx.manifest = Some(manifest);
        Ok(Outcome::Ran)
    }
}
