//! install_modules: `make modules_install` into `destdir/` (depmod included), and the
//! optional `/lib/modules/<release>/source` symlink.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{KernelRun, run_make};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};

/// depmod lives in /sbin, which a non-root PATH may lack.
/// depmod, also where a user's PATH lacks the sbin directories.
fn depmod() -> Result<PathBuf, crate::process::RunError> {
    crate::process::find_program("depmod").or_else(|missing| {
        ["/usr/sbin/depmod", "/sbin/depmod"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or(missing)
    })
}

pub struct InstallModules;

impl Step<KernelRun> for InstallModules {
    fn name(&self) -> &'static str {
        "install_modules"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let slot = ctx.plan.slot.clone();
        let req = &ctx.plan.request;
        if !req.modules_install {
            return Ok(Outcome::Skipped("modules_install is off".into()));
        }
        let config = fs_err::read_to_string(slot.build.join(".config"))?;
        if !config.lines().any(|l| l == "CONFIG_MODULES=y") {
            return Ok(Outcome::Skipped(
                "CONFIG_MODULES is off: an all-built-in kernel".into(),
            ));
        }
        if !slot.build.join("modules.order").is_file() {
            return Ok(Outcome::Skipped(
                "no modules were built (targets narrowed the build)".into(),
            ));
        }
        let depmod = depmod()?;
        let release = ctx.configured().uts_release.clone();
        let mut mod_path = OsString::from("INSTALL_MOD_PATH=");
        mod_path.push(&slot.destdir);
        let mut depmod_arg = OsString::from("DEPMOD=");
        depmod_arg.push(&depmod);
        run_make(
            ctx,
            self.name(),
            &[mod_path, depmod_arg, "modules_install".into()],
            reporter,
        )?;
        let dir = slot.destdir.join("lib/modules").join(&release);
        if !dir.join("modules.dep").is_file() {
            return Err(crate::error::ProductError::NotProduced {
                step: "modules_install",
                path: dir.join("modules.dep"),
            }
            .into());
        }
        if ctx.plan.request.source_symlink {
            let link = dir.join("source");
            let _ = fs_err::remove_file(&link);
            std::os::unix::fs::symlink(&slot.src, &link).map_err(|e| {
                std::io::Error::new(e.kind(), format!("symlink {}: {e}", link.display()))
            })?;
        }
        if let Some(f) = ctx.state.figures.as_mut() {
            f.sizes.modules = Some(super::figures::tree_bytes(&dir));
        }
        ctx.state.modules_dir = Some(dir);
        Ok(Outcome::Ran)
    }
}
