//! collect: merge the steps' results into the manifest, with the provenance read back from
//! the kernel's generated headers (or, for a reused build, from the manifest of the build
//! that made it), and write it beside the slot.

use super::{KernelRun, kbuild, reuse_check};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::fsutil::write_atomic;
use crate::kernel::manifest::{MANIFEST_SCHEMA_VERSION, Manifest};
use crate::store::{Layer, LayerRecord, RECORD_SCHEMA, sources_under};

pub struct Collect;

/// What the kernel's generated headers (or, for a reused build, the manifest of the
/// build that made it) say about how it was compiled.
struct Provenance {
    linux_compiler: String,
    uts_version: String,
    uts_machine: String,
    linux_compile_by: String,
    linux_compile_host: String,
}

fn provenance(ctx: &KernelRun) -> Result<Provenance, Error> {
    if let Some(hit) = &ctx.state.reused {
        let m = &hit.manifest;
        return Ok(Provenance {
            linux_compiler: m.linux_compiler.clone(),
            uts_version: m.uts_version.clone(),
            uts_machine: m.uts_machine.clone(),
            linux_compile_by: m.linux_compile_by.clone(),
            linux_compile_host: m.linux_compile_host.clone(),
        });
    }
    let build = &ctx.plan.slot.build;
    let headers = kbuild::read_provenance(build)?;
    let header = |name: &str| -> Result<String, Error> {
        headers.get(name).cloned().ok_or_else(|| {
            crate::error::ProductError::MissingHeader {
                name: name.to_owned(),
                build: build.clone(),
            }
            .into()
        })
    };
    let uts_release = header("UTS_RELEASE")?;
    let want = &ctx.configured().uts_release;
    if &uts_release != want {
        return Err(crate::error::ProductError::NotTheIdentity {
            what: "include/generated/utsrelease.h".into(),
            found: uts_release,
            want: want.clone(),
        }
        .into());
    }
    Ok(Provenance {
        linux_compiler: header("LINUX_COMPILER")?,
        uts_version: header("UTS_VERSION")?,
        uts_machine: header("UTS_MACHINE")?,
        linux_compile_by: header("LINUX_COMPILE_BY")?,
        linux_compile_host: header("LINUX_COMPILE_HOST")?,
    })
}

/// The manifest of this run as it stands (paths as the steps so far left them). What the
/// run was asked and where comes from this run, reused or not; what was built and where it
/// lies comes from the store hit when the build was reused.
pub fn manifest_of(ctx: &KernelRun) -> Result<Manifest, Error> {
    let slot = &ctx.plan.slot;
    let request = &ctx.plan.request;
    let c = ctx.configured();
    let p = provenance(ctx)?;
    let shown = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let (bz_image, modules_dir, store_entry, store_devel, reused) = match &ctx.state.reused {
        Some(hit) => (
            Some(hit.bz_image.display().to_string()),
            shown(&hit.modules_dir),
            shown(&hit.entry),
            shown(&hit.devel),
            Some(hit.how),
        ),
        None => (
            shown(&ctx.state.bz_image),
            shown(&ctx.state.modules_dir),
            shown(&ctx.state.store_entry),
            shown(&ctx.state.store_devel),
            None,
        ),
    };
    Ok(Manifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        commit: ctx.head_commit().to_owned(),
        uts_release: c.uts_release.clone(),
        bz_image,
        build_dir: slot.build.display().to_string(),
        config: ctx.config_path().display().to_string(),
        config_method: request.config_method,
        destdir: slot.destdir.display().to_string(),
        linux_compiler: p.linux_compiler,
        uts_version: p.uts_version,
        uts_machine: p.uts_machine,
        linux_compile_by: p.linux_compile_by,
        linux_compile_host: p.linux_compile_host,
        git_ref: ctx.plan.resolved.name.clone(),
        ref_kind: ctx.plan.resolved.kind,
        version: c.version.clone(),
        label: c.label.clone(),
        digest: c.digest.clone(),
        compiler: request.compiler,
        arch: request.arch,
        modules_dir,
        worker_index: slot.index,
        series: ctx.state.series.clone(),
        identity: c.inputs.clone(),
        reused,
        store_entry,
        store_devel,
        dev_worktree: ctx
            .state
            .dev_worktree
            .as_ref()
            .map(|p| p.display().to_string()),
        worktree: ctx.plan.snapshot.clone(),
        reproducible: Some(reproducibility(ctx, &c.uts_release)),
    })
}

/// The manifest's `reproducible`, from the request, the `.config` and the store's record
/// of the last `kforge repro` on this identity.
fn reproducibility(ctx: &KernelRun, release: &str) -> super::repro::Reproducibility {
    let config = fs_err::read_to_string(ctx.config_path()).unwrap_or_default();
    let recorded = match (ctx.store(), release.parse()) {
        (Ok(store), Ok(release)) => super::repro::recorded(&store, &release),
        _ => None,
    };
    super::repro::assess(&ctx.plan.request, &config, recorded.as_ref(), release)
}

impl Step<KernelRun> for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }

    fn run(&self, ctx: &mut KernelRun, _reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let manifest = manifest_of(ctx)?;
        if ctx.state.reused.is_none() {
            record_destdir(ctx, &manifest)?;
        }
        keep(ctx, manifest)?;
        Ok(Outcome::Ran)
    }
}

/// Writes the manifest beside the slot (`kforge run` and `boot` take the slot's last one)
/// and keeps it as the run's result.
pub fn keep(ctx: &mut KernelRun, manifest: Manifest) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    text.push('\n');
    let path = manifest_path(&ctx.plan.slot);
    fs_err::create_dir_all(path.parent().expect("beside the slot"))?;
    write_atomic(&path, text.as_bytes())?;
    ctx.state.manifest = Some(manifest);
    Ok(())
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
