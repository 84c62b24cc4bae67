//! prepare_worktree: sync this slot's warm tree to `git_ref` from the mirror.

use super::KernelRun;
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};

pub struct PrepareWorktree;

impl Step<KernelRun> for PrepareWorktree {
    fn name(&self) -> &'static str {
        "prepare_worktree"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let plan = &ctx.plan;
        let slot = &plan.slot;
        let report = slot.sync(
            &plan.mirror,
            &plan.resolved.commit,
            plan.request.recreate_build_worktree,
        )?;
        let what = if report.fresh_clone {
            format!(
                "laid a fresh checkout of {} at {}",
                plan.resolved.name,
                short(&plan.resolved.commit)
            )
        } else {
            match report.changed_files {
                Some(0) => format!(
                    "already at {} ({})",
                    plan.resolved.name,
                    short(&plan.resolved.commit)
                ),
                Some(n) => format!(
                    "re-synced to {} ({}): {n} files differ",
                    plan.resolved.name,
                    short(&plan.resolved.commit)
                ),
                None => format!(
                    "checked out {} ({})",
                    plan.resolved.name,
                    short(&plan.resolved.commit)
                ),
            }
        };
        reporter.event(&Event::Info {
            step: self.name(),
            message: &what,
        });
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
        let plan = &ctx.plan;
        let slot = &plan.slot;
        if plan.request.wipe_build {
            reporter.event(&Event::Info {
                step: self.name(),
                message: "wipe_build: removing build/",
            });
            slot.wipe_build()?;
        }
        fs_err::create_dir_all(&slot.build)?;
        fs_err::create_dir_all(&slot.destdir)?;
        ctx.state.tree = Some(slot.head_tree()?);
        ctx.state.pinned = Some(ctx.plan.resolved.clone());
        Ok(Outcome::Ran)
    }
}

pub(crate) fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}
