//! collect: the manifest of the run, written beside the slot.

use std::path::Path;

use super::{Configured, QemuManifest, QemuRun, entry_binary};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::fsutil::write_atomic;

/// A manifest with this run's identity and nothing else yet.
pub(super) fn placeholder(c: &Configured) -> QemuManifest {
    QemuManifest {
        schema_version: super::MANIFEST_SCHEMA_VERSION,
        identity: format!("qemu-{}", c.release),
        release: c.release.to_string(),
        version: c.inputs.version.clone(),
        digest: c.digest.clone(),
        commit: String::new(),
        git_ref: String::new(),
        ref_kind: String::new(),
        series: None,
        compiler: c.inputs.toolchain.compiler.clone(),
        target_list: c.inputs.target_list.clone(),
        features: String::new(),
        configure_args: c.args.clone(),
        qemu_binary: None,
        qemu_version: None,
        programs: Vec::new(),
        build_dir: String::new(),
        destdir: String::new(),
        worker_index: 0,
        inputs: c.inputs.clone(),
        reused: None,
        store_entry: None,
    }
}

/// The manifest of this run as it stands: a reused build's as recorded, pointed at the
/// store; a fresh one's from the steps' results. Either way with this run's ref and slot.
pub(super) fn manifest_of(ctx: &QemuRun) -> QemuManifest {
    let slot = &ctx.plan.slot;
    let mut m = if let Some(hit) = &ctx.reused {
        let mut m = hit.manifest.clone();
        m.qemu_binary = entry_binary(&hit.entry, &m).map(|p| p.display().to_string());
        m.store_entry = Some(hit.entry.display().to_string());
        m.reused = Some(hit.how);
        m
    } else {
        let c = ctx.configured();
        let mut m = placeholder(c);
        m.programs = ctx.programs.clone().unwrap_or_default();
        m.qemu_version.clone_from(&ctx.qemu_version);
        let root = ctx.store_entry.as_deref().unwrap_or(&slot.destdir);
        m.qemu_binary = entry_binary(root, &m).map(|p| p.display().to_string());
        m.store_entry = ctx.store_entry.as_ref().map(|p| p.display().to_string());
        m
    };
    ctx.head_commit().clone_into(&mut m.commit);
    m.git_ref.clone_from(&ctx.plan.resolved.name);
    m.ref_kind = serde_json::to_value(ctx.plan.resolved.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    m.series.clone_from(&ctx.series);
    ctx.plan
        .request
        .features
        .as_str()
        .clone_into(&mut m.features);
    m.build_dir = slot.build.display().to_string();
    m.destdir = slot.destdir.display().to_string();
    m.worker_index = slot.index;
    m
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
            return Err(Error::Build(format!("the QEMU binary {bin} is missing")));
        }
        let mut text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
        text.push('\n');
        write_atomic(&super::manifest_path(&ctx.plan.slot), text.as_bytes())?;
        ctx.manifest = Some(manifest);
        Ok(Outcome::Ran)
    }
}
