//! prepare_worktree: sync the QEMU slot to the ref from its mirror; with b4_series, apply
//! the mailed series on top and publish it to the mirror.

use super::{QemuRun, info, short};
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};

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
            ctx.state.series = Some(crate::series::apply_and_publish(
                slot,
                &plan.mirror.path,
                (msgid, mbox.as_deref()),
                &plan.resolved.commit,
                &mut |message| {
                    reporter.event(&Event::Info {
                        step: self.name(),
                        message,
                    });
                },
            )?);
        }
        let slot = &ctx.plan.slot;
        if ctx.plan.request.wipe_build {
            info(reporter, self.name(), "wipe_build: removing build/");
            slot.wipe_build()?;
        }
        fs_err::create_dir_all(&slot.build)?;
        fs_err::create_dir_all(&slot.destdir)?;
        ctx.state.tree = Some(slot.head_tree()?);
        ctx.state.pinned = Some(ctx.plan.resolved.clone());
        Ok(Outcome::Ran)
    }
}
