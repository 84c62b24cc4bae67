//! The fast path, as the kernel flow has it: a request whose identity the mirror and the
//! request alone determine (the ref's tree and VERSION, configure's options, the toolchain)
//! and that the store holds, intact, is answered before the slot is locked or touched.

use super::{Hit, QemuManifest, QemuRun, build_flags, collect, info};
use crate::error::Error;
use crate::flow::{Reporter, Reused};
use crate::store::Layer;

/// Answers a build from the store when its identity is there; `false` when the steps must
/// run (a series to apply, slot work asked for, reuse off, not in the store, damaged).
pub fn answer(
    run: &mut QemuRun,
    until: Option<&str>,
    reporter: &dyn Reporter,
) -> Result<bool, Error> {
    let plan = &run.plan;
    let req = &plan.request;
    if until.is_some()
        || plan.series.is_some()
        || req.recreate_build_worktree
        || req.wipe_build
        || !req.reuse
    {
        return Ok(false);
    }
    let commit = &plan.resolved.commit;
    let version = build_flags::checked_version(
        &plan.mirror.read_file(commit, "VERSION")?,
        std::path::Path::new("VERSION"),
    )?;
    let configured =
        build_flags::configured(plan, plan.mirror.tree_of(commit)?, &version, Vec::new())?;
    let release = configured.release.clone();
    let store = run.store()?;
    // Held before it is checked, so that gc cannot take it in between.
    let hold = store.hold(&release)?;
    let Ok(Some(record)) = store.record::<QemuManifest>(Layer::Run, &release) else {
        return Ok(false);
    };
    // A damaged entry is the slow path's to report and rebuild.
    if !store.verify_cached(Layer::Run, &release)?.is_empty() {
        return Ok(false);
    }
    store.touch(&release);
    let entry = store.layer_dir(Layer::Run, &release);
    info(
        reporter,
        "reuse_check",
        &format!("qemu-{release} is in the store: answered without the slot"),
    );
    run.hold = Some(hold);
    run.state.tree = Some(configured.inputs.tree.clone());
    run.state.configured = Some(configured);
    run.state.reused = Some(Hit {
        how: Reused::Store,
        entry,
        manifest: record.manifest,
    });
    let manifest = collect::manifest_of(run);
    collect::keep(run, manifest)?;
    Ok(true)
}
