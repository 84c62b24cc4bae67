//! build_flags: configure's argv and environment, and the identity they make (the identity
//! is known before configure runs, so a reused identity skips configure too).

use super::request::Features;
use super::{Configured, PREFIX, QemuIdentityInputs, QemuRun, RECIPE, first_line_of, info};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::slot::git::git;
use crate::toolchain::{Compiler, ccache};

/// build_flags: configure's argv and environment, and the identity they make.
pub struct BuildFlags;

impl Step<QemuRun> for BuildFlags {
    fn name(&self) -> &'static str {
        "build_flags"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let plan = &ctx.plan;
        let req = &plan.request;
        let version_file = plan.slot.src.join("VERSION");
        let version = checked_version(&fs_err::read_to_string(&version_file)?, &version_file)?;
        let mut env = Vec::new();
        if req.ccache {
            let conf = ccache::write_ccache_conf(&ccache::CcacheSettings {
                cache_dir: plan.dirs.ccache_dir.clone(),
                max_size: req.ccache_max_size.clone(),
                base_dir: plan.dirs.workers_dir.clone(),
                remote: plan.dirs.ccache_remote.clone(),
            })?;
            env.extend(ccache::env_for(&conf));
        }
        if req.reproducible {
            let epoch = git(&plan.mirror.path)
                .args(["show", "--no-patch", "--format=%ct", "--end-of-options"])
                .arg(ctx.head_commit())
                .output()?;
            env.push(("SOURCE_DATE_EPOCH".to_owned(), epoch.trim().to_owned()));
        }
        let tree = ctx.state.tree.clone().expect("prepare_worktree ran");
        let configured = configured(plan, tree, &version, env)?;
        info(
            reporter,
            self.name(),
            &format!(
                "identity qemu-{} ({})",
                configured.release,
                req.features.as_str()
            ),
        );
        ctx.state.configured = Some(configured);
        Ok(Outcome::Ran)
    }
}

/// For the minimal feature set, `--with-devices-<target>=minimal` for each target whose tree
/// has such a device set (QEMU's `configs/devices/<target>-softmmu/minimal.mak`: for aarch64
/// the `virt` and `sbsa-ref` machines instead of every Arm board, a third of the target's
/// compile), unless the request's own options choose that target's devices. Read from the
/// mirror, so the fast path knows it without a checkout.
fn minimal_devices(plan: &super::Plan, tree: &str) -> Result<Vec<String>, Error> {
    let req = &plan.request;
    let mut out = Vec::new();
    for target in &req.target_list {
        let Some(arch) = target.strip_suffix("-softmmu") else {
            continue;
        };
        let option = format!("--with-devices-{arch}");
        if req
            .configure_options
            .iter()
            .any(|o| o.split('=').next() == Some(option.as_str()))
        {
            continue;
        }
        let dir = format!("configs/devices/{target}");
        if plan
            .mirror
            .list_dir(tree, &dir)?
            .iter()
            .any(|f| f == "minimal.mak")
        {
            out.push(format!("{option}=minimal"));
        }
    }
    Ok(out)
}

/// The tree's VERSION file's text, checked to be a QEMU version.
pub(super) fn checked_version(text: &str, file: &std::path::Path) -> Result<String, Error> {
    let version = text.trim().to_owned();
    if version.is_empty()
        || version.len() > 24
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+".contains(c))
    {
        return Err(crate::error::ProductError::Unusable {
            what: file.display().to_string(),
            problem: format!("`{}` is not a QEMU version", version.escape_debug()),
        }
        .into());
    }
    Ok(version)
}

/// configure's argv and the identity it makes, for `tree` at `version`: a function of the
/// plan alone (the slot's path appears only in a prefix map the identity leaves out), so
/// the fast path computes what this step does without a checkout. `env` is configure's
/// environment (the ccache config, SOURCE_DATE_EPOCH).
pub(super) fn configured(
    plan: &super::Plan,
    tree: String,
    version: &str,
    env: Vec<(String, String)>,
) -> Result<Configured, Error> {
    let req = &plan.request;
    let slot = &plan.slot;
    let (cc, cxx) = match req.compiler {
        Compiler::Gcc => ("gcc", "g++"),
        Compiler::Clang => ("clang", "clang++"),
    };
    crate::process::find_program(cxx)?;
    let wrap = if req.ccache { "ccache " } else { "" };
    // (the argument configure gets, the form it takes in the identity)
    let mut options: Vec<(String, String)> = Vec::new();
    let same = |a: String| (a.clone(), a);
    options.push(same(format!("--prefix={PREFIX}")));
    options.push(same(format!("--target-list={}", req.target_list.join(","))));
    options.push((format!("--cc={wrap}{cc}"), format!("--cc={cc}")));
    options.push((format!("--cxx={wrap}{cxx}"), format!("--cxx={cxx}")));
    options.push(same(format!("--host-cc={cc}")));
    options.extend(req.features.options().iter().map(|o| same((*o).to_owned())));
    if req.features == Features::Minimal {
        options.extend(minimal_devices(plan, &tree)?.into_iter().map(same));
    }
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
    }
    let inputs = QemuIdentityInputs {
        recipe: RECIPE.to_owned(),
        tree,
        version: version.to_owned(),
        target_list: req.target_list.clone(),
        configure_options: options.iter().map(|(_, id)| id.clone()).collect(),
        toolchain: plan.toolchain.clone(),
        meson: first_line_of("meson"),
        ninja: first_line_of("ninja"),
    };
    let digest = inputs.digest();
    let release: crate::store::Release = format!("{version}-{digest}").parse()?;
    let mut args: Vec<String> = options.into_iter().map(|(a, _)| a).collect();
    // `qemu-system-x86_64 --version` then names the identity, as `uname -r` does a kernel's.
    args.push(format!("--with-pkgversion=kforge-qemu-{release}"));
    Ok(Configured {
        release,
        digest,
        inputs,
        args,
        env,
    })
}
