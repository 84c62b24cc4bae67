//! collect: merge the steps' results into the manifest, with the provenance read back from
//! the kernel's generated headers (or, for a reused build, from the manifest of the build
//! that made it), and write it beside the slot.

use super::{KernelRun, kbuild, reuse_check};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::fsutil::write_atomic;
use crate::manifest::{MANIFEST_SCHEMA_VERSION, Manifest};
use crate::store::{Layer, LayerRecord, RECORD_SCHEMA, sources_under};

pub struct Collect;

/// The manifest of this run as it stands (paths as the steps so far left them).
pub fn manifest_of(ctx: &KernelRun) -> Result<Manifest, Error> {
    let slot = &ctx.plan.slot;
    let c = ctx.configured();
    let mut m = if let Some(hit) = &ctx.reused {
        let mut m = hit.manifest.clone();
        m.bz_image = Some(hit.bz_image.display().to_string());
        m.modules_dir = hit.modules_dir.as_ref().map(|p| p.display().to_string());
        m.store_entry = hit.entry.as_ref().map(|p| p.display().to_string());
        m.store_devel = hit.devel.as_ref().map(|p| p.display().to_string());
        m.reused = Some(hit.how);
        m
    } else {
        let headers = kbuild::read_provenance(&slot.build)?;
        let header = |name: &str| -> Result<String, Error> {
            headers.get(name).cloned().ok_or_else(|| {
                Error::Build(format!(
                    "{name} is missing from {}/include/generated (did the build run?)",
                    slot.build.display()
                ))
            })
        };
        let uts_release_header = header("UTS_RELEASE")?;
        if uts_release_header != c.uts_release {
            return Err(Error::Build(format!(
                "utsrelease.h says `{uts_release_header}`, the identity is `{}`",
                c.uts_release
            )));
        }
        Manifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            commit: String::new(),
            uts_release: c.uts_release.clone(),
            bz_image: ctx.bz_image.as_ref().map(|p| p.display().to_string()),
            build_dir: String::new(),
            config: String::new(),
            config_method: String::new(),
            destdir: String::new(),
            linux_compiler: header("LINUX_COMPILER")?,
            uts_version: header("UTS_VERSION")?,
            uts_machine: header("UTS_MACHINE")?,
            linux_compile_by: header("LINUX_COMPILE_BY")?,
            linux_compile_host: header("LINUX_COMPILE_HOST")?,
            git_ref: String::new(),
            ref_kind: String::new(),
            version: c.version.clone(),
            label: c.label.clone(),
            digest: c.digest.clone(),
            compiler: ctx.plan.request.compiler.as_str().to_owned(),
            modules_dir: ctx.modules_dir.as_ref().map(|p| p.display().to_string()),
            worker_index: 0,
            series: None,
            identity: c.inputs.clone(),
            reused: None,
            store_entry: ctx.store_entry.as_ref().map(|p| p.display().to_string()),
            store_devel: ctx.store_devel.as_ref().map(|p| p.display().to_string()),
            dev_worktree: None,
        }
    };
    // What this run was asked and where: the same for a reused build as for a compiled one.
    m.schema_version = MANIFEST_SCHEMA_VERSION;
    ctx.head_commit().clone_into(&mut m.commit);
    m.build_dir = slot.build.display().to_string();
    m.config = slot.build.join(".config").display().to_string();
    ctx.plan
        .request
        .config_method
        .as_str()
        .clone_into(&mut m.config_method);
    m.destdir = slot.destdir.display().to_string();
    m.git_ref.clone_from(&ctx.plan.resolved.name);
    m.ref_kind = serde_json::to_value(ctx.plan.resolved.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    m.worker_index = slot.index;
    m.series.clone_from(&ctx.series);
    m.dev_worktree = ctx.dev_worktree.as_ref().map(|p| p.display().to_string());
    Ok(m)
}

impl Step<KernelRun> for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }

    fn run(&self, ctx: &mut KernelRun, _reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let manifest = manifest_of(ctx)?;
        if ctx.reused.is_none() {
            record_destdir(ctx, &manifest)?;
        }
        let mut text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
        text.push('\n');
        write_atomic(&manifest_path(&ctx.plan.slot), text.as_bytes())?;
        ctx.manifest = Some(manifest);
        Ok(Outcome::Ran)
    }
}

/// Records what this build installed into destdir/ (hashes of the boot image and modules),
/// so that reuse_check can trust it next time without the store.
fn record_destdir(ctx: &KernelRun, manifest: &Manifest) -> Result<(), Error> {
    let path = reuse_check::destdir_record_path(ctx);
    let _ = fs_err::remove_file(&path);
    let release = &manifest.uts_release;
    let destdir = &ctx.plan.slot.destdir;
    let image = destdir.join("boot").join(format!("vmlinuz-{release}"));
    if !image.is_file() {
        return Ok(());
    }
    let mut files = Vec::new();
    let mut paths = vec![format!("boot/vmlinuz-{release}")];
    let modules = destdir.join("lib/modules").join(release);
    if modules.join("modules.dep").is_file() {
        paths.extend(
            sources_under(&modules, &format!("lib/modules/{release}"))?
                .into_iter()
                .filter(|s| !s.from.is_symlink())
                .map(|s| s.dest),
        );
    }
    for p in paths {
        let (sha256, size) = crate::store::hash_file(&destdir.join(&p))?;
        files.push(crate::store::FileRecord {
            path: p,
            size,
            sha256,
            executable: false,
            link: None,
        });
    }
    let mut m = manifest.clone();
    m.bz_image = Some(image.display().to_string());
    m.modules_dir = modules
        .join("modules.dep")
        .is_file()
        .then(|| modules.display().to_string());
    m.store_entry = None;
    m.store_devel = None;
    let record = LayerRecord {
        schema: RECORD_SCHEMA.to_owned(),
        layer: Layer::Run,
        uts_release: release.clone(),
        digest: manifest.digest.clone(),
        created_unix: crate::store::now_unix(),
        origin: "destdir".to_owned(),
        files,
        manifest: m,
    };
    let text = serde_json::to_vec_pretty(&record).expect("record serializes");
    write_atomic(&path, &text)?;
    Ok(())
}

/// Where the manifest is kept: beside the slot's worktree.
pub fn manifest_path(slot: &crate::slot::Slot) -> std::path::PathBuf {
    slot.root.join(format!("{}.manifest.json", super::PROJECT))
}
