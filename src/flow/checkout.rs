//! prepare_worktree for every flow: sync the slot's warm tree to the resolved ref from the
//! flow's mirror; with a mailed series, apply it on top and publish it to the mirror; wipe
//! build/ when asked.

use std::path::PathBuf;

use super::{Event, Outcome, Reporter, Step};
use crate::error::Error;
use crate::series::Applied;
use crate::slot::{Mirror, ResolvedRef, Slot};

/// What a flow's plan says about the checkout.
pub struct Checkout<'a> {
    pub slot: &'a Slot,
    pub mirror: &'a Mirror,
    pub resolved: &'a ResolvedRef,
    /// The series' message-id and local thread copy, as the plan checked them.
    pub series: Option<&'a (String, Option<PathBuf>)>,
    pub recreate_build_worktree: bool,
    pub wipe_build: bool,
}

/// The checkout as it stands: the applied series, if any, and the worktree's tree object.
pub struct CheckedOut {
    pub series: Option<Applied>,
    pub tree: String,
}

impl Checkout<'_> {
    pub fn run(&self, step: &str, reporter: &dyn Reporter) -> Result<CheckedOut, Error> {
        let info = |message: &str| reporter.event(&Event::Info { step, message });
        let slot = self.slot;
        let commit = &self.resolved.commit;
        let report = slot.sync(self.mirror, commit, self.recreate_build_worktree)?;
        let at = format!(
            "{} ({})",
            self.resolved.name,
            &commit[..12.min(commit.len())]
        );
        info(&match (report.fresh_clone, report.changed_files) {
            (true, _) => format!("laid a fresh checkout of {at}"),
            (false, Some(0)) => format!("already at {at}"),
            (false, Some(n)) => format!("re-synced to {at}: {n} files differ"),
            (false, None) => format!("checked out {at}"),
        });
        let series = match self.series {
            Some((msgid, mbox)) => Some(crate::series::apply_and_publish(
                slot,
                &self.mirror.path,
                (msgid, mbox.as_deref()),
                commit,
                &mut |message| info(message),
            )?),
            None => None,
        };
        if self.wipe_build {
            info("wipe_build: removing build/");
            slot.wipe_build()?;
        }
        fs_err::create_dir_all(&slot.build)?;
        fs_err::create_dir_all(&slot.destdir)?;
        Ok(CheckedOut {
            series,
            tree: slot.head_tree()?,
        })
    }
}

/// A flow's run, as the prepare_worktree step sees it.
pub trait Checks {
    /// What the run's plan asks of the checkout.
    fn checkout(&self) -> Checkout<'_>;
    /// Keeps the checkout's result (and pins the ref it checked out) in the run's state.
    fn checked_out(&mut self, done: CheckedOut);
}

/// Implements [`Checks`] and [`Stateful`](super::Stateful) for a run (`plan`, `hold`, `state`)
/// whose plan has `slot`, `mirror`, `resolved`, `series` and a request with
/// `recreate_build_worktree` and `wipe_build`, and whose state has `series`, `tree` and
/// `pinned` (the kernel's and QEMU's runs). A macro because the runs share those fields by
/// name, not by type: a trait cannot reach them without the same wiring per flow.
macro_rules! checks_by_fields {
    ($run:ty, $state:ty) => {
        impl $crate::flow::checkout::Checks for $run {
            fn checkout(&self) -> $crate::flow::checkout::Checkout<'_> {
                let plan = &self.plan;
                $crate::flow::checkout::Checkout {
                    slot: &plan.slot,
                    mirror: &plan.mirror,
                    resolved: &plan.resolved,
                    series: plan.series.as_ref(),
                    recreate_build_worktree: plan.request.recreate_build_worktree,
                    wipe_build: plan.request.wipe_build,
                }
            }
            fn checked_out(&mut self, done: $crate::flow::checkout::CheckedOut) {
                self.state.series = done.series;
                self.state.tree = Some(done.tree);
                self.state.pinned = Some(self.plan.resolved.clone());
            }
        }

        impl $crate::flow::Stateful for $run {
            type State = $state;
            fn state(&self) -> &$state {
                &self.state
            }
            fn state_mut(&mut self) -> &mut $state {
                &mut self.state
            }
            /// The ref moved after prepare_worktree: keep building what it checked out.
            fn restored(&mut self) {
                if let Some(p) = &self.state.pinned
                    && p.commit != self.plan.resolved.commit
                {
                    self.plan.resolved = p.clone();
                }
            }
        }
    };
}
pub(crate) use checks_by_fields;

/// The prepare_worktree step of every flow.
pub struct PrepareWorktree;

impl<C: Checks> Step<C> for PrepareWorktree {
    fn name(&self) -> &'static str {
        "prepare_worktree"
    }

    fn run(&self, ctx: &mut C, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let done = ctx.checkout().run(Step::<C>::name(self), reporter)?;
        ctx.checked_out(done);
        Ok(Outcome::Ran)
    }
}
