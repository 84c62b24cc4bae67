//! prepare_worktree: sync the QEMU slot to the ref from its mirror; with b4_series, apply
//! the mailed series on top and publish it to the mirror (the code every flow uses).

use super::QemuRun;
use crate::error::Error;
use crate::flow::checkout::Checkout;
use crate::flow::{Outcome, Reporter, Step};

pub struct PrepareWorktree;

impl Step<QemuRun> for PrepareWorktree {
    fn name(&self) -> &'static str {
        "prepare_worktree"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let plan = &ctx.plan;
        let done = Checkout {
            slot: &plan.slot,
            mirror: &plan.mirror,
            resolved: &plan.resolved,
            series: plan.series.as_ref(),
            recreate_build_worktree: plan.request.recreate_build_worktree,
            wipe_build: plan.request.wipe_build,
        }
        .run(self.name(), reporter)?;
        ctx.state.series = done.series;
        ctx.state.tree = Some(done.tree);
        ctx.state.pinned = Some(ctx.plan.resolved.clone());
        Ok(Outcome::Ran)
    }
}
