//! build_flags: configure's argv and environment, and the identity they make (the identity
//! is known before configure runs, so a reused identity skips configure too).

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
        let slot = &plan.slot;
        let version_file = slot.src.join("VERSION");
        let version = fs_err::read_to_string(&version_file)?.trim().to_owned();
        if version.is_empty()
            || version.len() > 24
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+".contains(c))
        {
            return Err(crate::error::ProductError::Unusable {
                what: version_file.display().to_string(),
                problem: format!("`{}` is not a QEMU version", version.escape_debug()),
            }
            .into());
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
            tree: ctx.state.tree.clone().expect("prepare_worktree ran"),
            version: version.clone(),
            target_list: req.target_list.clone(),
            configure_options: options.iter().map(|(_, id)| id.clone()).collect(),
            toolchain: plan.toolchain.clone(),
            meson: first_line_of("meson"),
            ninja: first_line_of("ninja"),
        };
        let digest = inputs.digest();
        let release: crate::store::Release = format!("{version}-{digest}").parse()?;
        let mut argv: Vec<String> = options.into_iter().map(|(a, _)| a).collect();
        // `qemu-system-x86_64 --version` then names the identity, as `uname -r` does a kernel's.
        argv.push(format!("--with-pkgversion=kforge-qemu-{release}"));
        info(
            reporter,
            self.name(),
            &format!("identity qemu-{release} ({})", req.features.as_str()),
        );
        ctx.state.configured = Some(Configured {
            release,
            digest,
            inputs,
            args: argv,
            env,
        });
        Ok(Outcome::Ran)
    }
}
