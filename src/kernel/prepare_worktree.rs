//! prepare_worktree: sync this slot's warm tree to `git_ref` from the mirror.

use super::KernelRun;
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::identity::{LabelSource, infer_label};

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
            let mut applied = crate::series::apply(
                &slot.src,
                &slot.state.join("b4"),
                msgid,
                mbox.as_deref(),
                &plan.resolved.commit,
            )?;
            let (base, suffix) = infer_label(&LabelSource::Series {
                subject: &applied.subject,
            });
            let branch = crate::series::publish(
                &slot.src,
                &plan.mirror.path,
                &format!("{base}{suffix}"),
                &applied.head,
            )
            .map_err(|e| Error::Input(e.to_string()))?;
            reporter.event(&Event::Info {
                step: self.name(),
                message: &format!(
                    "applied {} patch(es) of \"{}\" on {}; published as {branch}",
                    applied.patches.len(),
                    applied.subject,
                    short(&plan.resolved.commit)
                ),
            });
            applied.branch = Some(branch);
            ctx.series = Some(applied);
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
        ctx.tree = Some(slot.head_tree()?);
        ctx.pinned = Some(ctx.plan.resolved.clone());
        Ok(Outcome::Ran)
    }
}

pub(crate) fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}
