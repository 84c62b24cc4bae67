//! collect: merge the steps' results into the manifest, with the provenance read back from
//! the kernel's generated headers, and write it beside the slot.

use super::{KernelRun, kbuild};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::fsutil::write_atomic;
use crate::manifest::{MANIFEST_SCHEMA_VERSION, Manifest};

pub struct Collect;

impl Step<KernelRun> for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }

    fn run(&self, ctx: &mut KernelRun, _reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let slot = &ctx.plan.slot;
        let c = ctx.configured();
        let headers = kbuild::read_provenance(&slot.build)?;
        let header = |name: &str| -> Result<String, Error> {
            headers.get(name).cloned().ok_or_else(|| {
                Error::Build(format!(
                    "{name} is missing from {}/include/generated (did the build run?)",
                    slot.build.display()
                ))
            })
        };
        let manifest = Manifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            commit: ctx.head_commit().to_owned(),
            uts_release: c.uts_release.clone(),
            bz_image: ctx.bz_image.as_ref().map(|p| p.display().to_string()),
            build_dir: slot.build.display().to_string(),
            config: slot.build.join(".config").display().to_string(),
            config_method: ctx.plan.request.config_method.as_str().to_owned(),
            destdir: slot.destdir.display().to_string(),
            linux_compiler: header("LINUX_COMPILER")?,
            uts_version: header("UTS_VERSION")?,
            uts_machine: header("UTS_MACHINE")?,
            linux_compile_by: header("LINUX_COMPILE_BY")?,
            linux_compile_host: header("LINUX_COMPILE_HOST")?,
            git_ref: ctx.plan.resolved.name.clone(),
            ref_kind: serde_json::to_value(ctx.plan.resolved.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            version: c.version.clone(),
            label: c.label.clone(),
            digest: c.digest.clone(),
            compiler: ctx.plan.request.compiler.as_str().to_owned(),
            modules_dir: ctx.modules_dir.as_ref().map(|p| p.display().to_string()),
            worker_index: slot.index,
            series: ctx.series.clone(),
            identity: c.inputs.clone(),
        };
        let uts_release_header = header("UTS_RELEASE")?;
        if uts_release_header != manifest.uts_release {
            return Err(Error::Build(format!(
                "utsrelease.h says `{uts_release_header}`, the identity is `{}`",
                manifest.uts_release
            )));
        }
        let mut text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
        text.push('\n');
        write_atomic(&manifest_path(slot), text.as_bytes())?;
        ctx.manifest = Some(manifest);
        Ok(Outcome::Ran)
    }
}

/// Where the manifest is kept: beside the slot's worktree.
pub fn manifest_path(slot: &crate::slot::Slot) -> std::path::PathBuf {
    slot.root.join(format!("{}.manifest.json", super::PROJECT))
}
