//! collect: the manifest of the run, written beside the slot.

use std::path::Path;

use super::{QemuManifest, QemuRun, entry_binary};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::fsutil::write_atomic;

/// The manifest of this run: what the build made (a reused build's as its manifest
/// recorded, pointed at the store; a fresh one's from the steps' results), with this run's
/// ref and slot.
pub(super) fn manifest_of(ctx: &QemuRun) -> QemuManifest {
    let slot = &ctx.plan.slot;
    let c = ctx.configured();
    let req = &ctx.plan.request;
    let (root, configure_args, programs, qemu_version, reused) = match &ctx.state.reused {
        Some(hit) => (
            Some(hit.entry.clone()),
            hit.manifest.configure_args.clone(),
            hit.manifest.programs.clone(),
            hit.manifest.qemu_version.clone(),
            Some(hit.how),
        ),
        None => (
            ctx.state.store_entry.clone(),
            c.args.clone(),
            ctx.state.programs.clone().unwrap_or_default(),
            ctx.state.qemu_version.clone(),
            None,
        ),
    };
    let binary_root = root.as_deref().unwrap_or(&slot.destdir);
    QemuManifest {
        schema_version: super::MANIFEST_SCHEMA_VERSION,
        identity: format!("qemu-{}", c.release),
        release: c.release.to_string(),
        version: c.inputs.version.clone(),
        digest: c.digest.clone(),
        commit: ctx.head_commit().to_owned(),
        git_ref: ctx.plan.resolved.name.clone(),
        ref_kind: ctx.plan.resolved.kind,
        series: ctx.state.series.clone(),
        compiler: req.compiler,
        target_list: c.inputs.target_list.clone(),
        features: req.features,
        configure_args,
        qemu_binary: entry_binary(binary_root, &c.inputs.target_list)
            .map(|p| p.display().to_string()),
        qemu_version,
        programs,
        build_dir: slot.build.display().to_string(),
        destdir: slot.destdir.display().to_string(),
        worker_index: slot.index,
        inputs: c.inputs.clone(),
        reused,
        store_entry: root.map(|p| p.display().to_string()),
    }
}

pub struct Collect;

impl Step<QemuRun> for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }

    fn run(&self, ctx: &mut QemuRun, _reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let manifest = manifest_of(ctx);
        if let Some(bin) = &manifest.qemu_binary
            && !Path::new(bin).is_file()
        {
            return Err(crate::error::ProductError::NotProduced {
                step: "install",
                path: bin.into(),
            }
            .into());
        }
        keep(ctx, manifest)?;
        Ok(Outcome::Ran)
    }
}

/// Writes the manifest beside the slot and keeps it as the run's result.
pub(super) fn keep(ctx: &mut QemuRun, manifest: QemuManifest) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    text.push('\n');
    let path = super::manifest_path(&ctx.plan.slot);
    fs_err::create_dir_all(path.parent().expect("beside the slot"))?;
    write_atomic(&path, text.as_bytes())?;
    ctx.state.manifest = Some(manifest);
    Ok(())
}
