//! The fast path: a request whose identity is known without the slot is answered before the
//! slot is locked or touched. Known means: the configure memory holds what these inputs
//! (the ref's tree from the mirror, the toolchain, the make flags, the library texts, the
//! label's source) produced before, and, for a build, the store holds that identity with its
//! run layer intact. Anything unknown (new inputs, a series to apply, slot work asked for,
//! no store entry, a damaged one) leaves the run to the steps, exactly as before.

use super::memory::{self, Memory};
use super::reuse_check::store_hit;
use super::{KernelRun, build_flags, collect};
use crate::error::Error;
use crate::flow::{Event, Reporter, Reused};
use crate::kernel::manifest::Manifest;
use crate::store::{Layer, Release};

/// Answers `run` through `until` (`configure` for `kforge identity`, `None` for a build)
/// when it is known; `false` when the steps must run.
pub fn answer(
    run: &mut KernelRun,
    until: Option<&str>,
    reporter: &dyn Reporter,
) -> Result<bool, Error> {
    let plan = &run.plan;
    let req = &plan.request;
    let identity_only = until == Some("configure");
    // A series is applied in the slot (its tree is known only then); the others ask for
    // work in the slot or beside it.
    if plan.series.is_some()
        || req.recreate_build_worktree
        || req.wipe_build
        || req.worktree_group.is_some()
        || !(identity_only || req.reuse)
    {
        return Ok(false);
    }
    let commit = &plan.resolved.commit;
    let tree = plan.mirror.tree_of(commit)?;
    let timestamp = build_flags::timestamp(req, &plan.mirror, commit)?;
    let key = memory::key(
        plan,
        &tree,
        &build_flags::identity_flags(req, timestamp.as_deref()),
        None,
    );
    let Some(found) = Memory::of(&plan.dirs).recall(&key) else {
        return Ok(false);
    };
    let release: Release = found.entry.configured.uts_release.parse()?;
    if !identity_only {
        let store = run.store()?;
        // Held before it is checked, so that gc cannot take it in between.
        let hold = store.hold(&release)?;
        let Ok(Some(record)) = store.record::<Manifest>(Layer::Run, &release) else {
            return Ok(false);
        };
        // A damaged entry is the slow path's to report and rebuild.
        if !store.verify_cached(Layer::Run, &release)?.is_empty() {
            return Ok(false);
        }
        store.touch(&release);
        run.hold = Some(hold);
        run.state.reused = Some(store_hit(&store, &record, Reused::Store));
    }
    for w in &found.entry.warnings {
        reporter.event(&Event::Warn {
            step: "configure",
            message: w,
        });
    }
    run.state.tree = Some(tree);
    run.state.configured = Some(found.entry.configured);
    run.state.config = Some(found.config);
    let (step, message) = if identity_only {
        (
            "configure",
            format!(
                "identity {release} (remembered: these inputs made it before; the slot was not used)"
            ),
        )
    } else {
        (
            "reuse_check",
            format!(
                "kernel-{release} is in the store: answered without the slot (these inputs made it before)"
            ),
        )
    };
    reporter.event(&Event::Info {
        step,
        message: &message,
    });
    if !identity_only {
        let manifest = collect::manifest_of(run)?;
        collect::keep(run, manifest)?;
    }
    Ok(true)
}
