//! compile: `make --jobs=$(nproc)` (plus `targets`): vmlinux, the boot image, modules.

use std::ffi::OsString;

use super::{KernelRun, run_make};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};

pub struct Compile;

impl Step<KernelRun> for Compile {
    fn name(&self) -> &'static str {
        "compile"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let goals: Vec<OsString> = ctx.plan.request.targets.iter().map(Into::into).collect();
        run_make(ctx, self.name(), &goals, reporter)?;
        // The release the build baked must be the identity configure computed.
        let release_file = ctx.plan.slot.build.join("include/config/kernel.release");
        let release = fs_err::read_to_string(&release_file)?.trim().to_owned();
        let want = &ctx.configured().uts_release;
        if &release != want {
            return Err(crate::error::ProductError::NotTheIdentity {
                what: release_file.display().to_string(),
                found: release,
                want: want.clone(),
            }
            .into());
        }
        Ok(Outcome::Ran)
    }
}
