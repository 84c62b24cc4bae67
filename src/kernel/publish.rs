//! publish and publish_devel: add a fresh build's run layer (boot image, System.map, config,
//! `lib/modules/<release>`) and devel layer (what an out-of-tree module build or an editor
//! needs from build/) to the store. The manifest then points at the store's copy.

use std::path::{Path, PathBuf};

use super::{KernelRun, collect};
use crate::error::Error;
use crate::flow::Reused;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::kernel::manifest::Manifest;
use crate::store::{Layer, Published, Release, Source, Store, sources_under};

pub struct Publish;

/// The files of an identity's run layer: the boot image, System.map and config as installed
/// in `destdir/boot` (else, with `build`, as the build left them) and the modules tree.
/// `kforge repro` lists a rebuild's files with it, so both sides are the same list.
pub fn run_sources(
    release: &str,
    image: std::path::PathBuf,
    destdir: &Path,
    build: Option<&Path>,
    modules_dir: Option<&Path>,
) -> std::io::Result<Vec<Source>> {
    let boot = destdir.join("boot");
    let mut sources = vec![Source {
        dest: format!("boot/vmlinuz-{release}"),
        from: image,
    }];
    for (name, built) in [("System.map", "System.map"), ("config", ".config")] {
        let installed = boot.join(format!("{name}-{release}"));
        let from = match build {
            _ if installed.is_file() => installed,
            Some(build) => build.join(built),
            None => continue,
        };
        sources.push(Source {
            dest: format!("boot/{name}-{release}"),
            from,
        });
    }
    if let Some(modules) = modules_dir {
        sources.extend(sources_under(modules, &format!("lib/modules/{release}"))?);
    }
    Ok(sources)
}

impl Step<KernelRun> for Publish {
    fn name(&self) -> &'static str {
        "publish"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(hit) = &ctx.state.reused {
            if hit.how == Reused::Destdir {
                return publish_from_destdir(ctx, reporter);
            }
            return Ok(Outcome::Skipped(format!(
                "reused from {}",
                hit.how.as_str()
            )));
        }
        let Some(image) = ctx.state.bz_image.clone() else {
            return Ok(Outcome::Skipped("no boot image was built".into()));
        };
        let release = ctx.release();
        let slot = ctx.plan.slot.clone();
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&release)?);
        }
        let sources = run_sources(
            release.as_str(),
            image,
            &slot.destdir,
            Some(&slot.build),
            ctx.state.modules_dir.as_deref(),
        )?;
        let modules = ctx.state.modules_dir.is_some();
        let manifest = collect::manifest_of(ctx)?;
        let (path, message) = publish_run(&store, &release, manifest, modules, &sources)?;
        reporter.event(&Event::Info {
            step: self.name(),
            message: &message,
        });
        ctx.state.bz_image = Some(path.join(format!("boot/vmlinuz-{release}")));
        if ctx.state.modules_dir.is_some() {
            ctx.state.modules_dir = Some(path.join("lib/modules").join(&release));
        }
        ctx.state.store_entry = Some(path);
        Ok(Outcome::Ran)
    }
}

/// An identity answered from the slot's destdir still belongs in the store (a new store, a
/// gc since): its run layer is published from what destdir holds, verified against the
/// slot's record of it, and the manifest then points at the store's copy. (The devel layer
/// is not: build/ may hold another identity's objects by now.)
fn publish_from_destdir(ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
    let hit = ctx.state.reused.clone().expect("a destdir hit");
    let release: Release = hit.manifest.uts_release.parse()?;
    let store = ctx.store()?;
    if store.record::<Manifest>(Layer::Run, &release)?.is_some()
        && store.verify(Layer::Run, &release)?.is_empty()
    {
        return Ok(Outcome::Skipped(format!(
            "kernel-{release} is in the store already"
        )));
    }
    let sources = run_sources(
        release.as_str(),
        hit.bz_image.clone(),
        &ctx.plan.slot.destdir,
        None,
        hit.modules_dir.as_deref(),
    )?;
    let mut manifest = hit.manifest.clone();
    manifest.store_devel = None;
    manifest.reused = None;
    let modules = hit.modules_dir.is_some();
    let (path, message) = publish_run(&store, &release, manifest, modules, &sources)?;
    reporter.event(&Event::Info {
        step: "publish",
        message: &format!("{message} from this slot's destdir"),
    });
    let mut hit = hit;
    hit.bz_image = path.join(format!("boot/vmlinuz-{release}"));
    hit.modules_dir = hit
        .modules_dir
        .map(|_| path.join("lib/modules").join(&release));
    hit.entry = Some(path.clone());
    ctx.state.reused = Some(hit);
    ctx.state.store_entry = Some(path);
    Ok(Outcome::Ran)
}

/// Publishes an identity's run layer from `sources`, with `manifest` pointed at the store's
/// copy on its record: the entry, and what happened, said for the user.
fn publish_run(
    store: &Store,
    release: &Release,
    mut manifest: Manifest,
    modules: bool,
    sources: &[Source],
) -> Result<(PathBuf, String), Error> {
    let entry = store.layer_dir(Layer::Run, release);
    let shown = |p: PathBuf| Some(p.display().to_string());
    manifest.bz_image = shown(entry.join(format!("boot/vmlinuz-{release}")));
    manifest.modules_dir = modules
        .then(|| shown(entry.join("lib/modules").join(release.as_str())))
        .flatten();
    manifest.store_entry = shown(entry);
    let digest = manifest.digest.clone();
    let (what, path) = store.publish(Layer::Run, release, &digest, &manifest, sources, "local")?;
    let message = match what {
        Published::Added => format!("added {}", path.display()),
        Published::AlreadyPresent => format!("{} was already published (intact)", path.display()),
        Published::Replaced => format!("replaced the damaged {}", path.display()),
    };
    Ok((path, message))
}

/// The parts of build/ that an out-of-tree module build (with the source tree at the same
/// commit) or an editor needs: generated headers and config, the host tools Kbuild built,
/// the symbol tables, vmlinux, and `compile_commands.json` when there is one.
pub fn devel_sources(build: &Path) -> std::io::Result<Vec<Source>> {
    let mut out = Vec::new();
    for file in [
        ".config",
        "System.map",
        "Module.symvers",
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
        "vmlinux",
        "compile_commands.json",
        "include/config/auto.conf",
        "include/config/kernel.release",
        "scripts/module.lds",
        "tools/objtool/objtool",
    ] {
        let p = build.join(file);
        if p.is_file() {
            out.push(Source {
                dest: file.to_owned(),
                from: p,
            });
        }
    }
    // The build's own arch is the one with generated headers under arch/.
    let mut generated = vec!["include/generated".to_owned()];
    generated.extend(
        crate::arch::Arch::ALL
            .iter()
            .map(|a| format!("arch/{}/include/generated", a.srcarch())),
    );
    for dir in &generated {
        let dir = dir.as_str();
        let p = build.join(dir);
        if p.is_dir() {
            out.extend(
                sources_under(&p, dir)?
                    .into_iter()
                    .filter(|s| !is_kbuild_temp(&s.dest)),
            );
        }
    }
    // Sources and forced includes the build generated (lib/oid_registry_data.c,
    // init/utsversion-tmp.h, ...) that the compilation database names: an editor opening
    // the database finds them too.
    let database = build.join("compile_commands.json");
    if database.is_file()
        && let Ok(text) = fs_err::read_to_string(&database)
        && let Ok(entries) = serde_json::from_str::<Vec<super::devtools::Entry>>(&text)
    {
        for e in &entries {
            let dir = Path::new(&e.directory);
            let words: Vec<&str> = e.command.split_whitespace().collect();
            let forced = words
                .windows(2)
                .filter(|w| w[0] == "-include")
                .map(|w| dir.join(w[1]));
            for named in std::iter::once(Path::new(&e.file).to_owned()).chain(forced) {
                let named = crate::dirs::normalize(&named);
                if let Ok(rel) = named.strip_prefix(build) {
                    let dest = rel.to_string_lossy().into_owned();
                    if named.is_file() && !out.iter().any(|s: &Source| s.dest == dest) {
                        out.push(Source { dest, from: named });
                    }
                }
            }
        }
    }
    // Host programs (fixdep, modpost, genksyms, ...): the executables under scripts/.
    let scripts = build.join("scripts");
    if scripts.is_dir() {
        for s in sources_under(&scripts, "scripts")? {
            let exec = fs_err::symlink_metadata(&s.from).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt as _;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            });
            if exec && !is_kbuild_temp(&s.dest) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Kbuild's own bookkeeping (`.*.cmd`, `.tmp_*`, objects) is not part of a layer.
fn is_kbuild_temp(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with('.') || name.ends_with(".o")
}

pub struct PublishDevel;

impl Step<KernelRun> for PublishDevel {
    fn name(&self) -> &'static str {
        "publish_devel"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(hit) = &ctx.state.reused {
            return Ok(Outcome::Skipped(format!(
                "reused from {}",
                hit.how.as_str()
            )));
        }
        if ctx.state.store_entry.is_none() {
            return Ok(Outcome::Skipped("the run layer was not published".into()));
        }
        let store = ctx.store()?;
        let release = ctx.release();
        let sources = devel_sources(&ctx.plan.slot.build)?;
        let mut manifest = collect::manifest_of(ctx)?;
        manifest.store_devel = Some(
            store
                .layer_dir(Layer::Devel, &release)
                .display()
                .to_string(),
        );
        let (what, path) = store.publish(
            Layer::Devel,
            &release,
            &manifest.digest,
            &manifest,
            &sources,
            "local",
        )?;
        reporter.event(&Event::Info {
            step: self.name(),
            message: &format!(
                "{} {} ({} files)",
                if what == Published::AlreadyPresent {
                    "already had"
                } else {
                    "added"
                },
                path.display(),
                sources.len()
            ),
        });
        ctx.state.store_devel = Some(path);
        Ok(Outcome::Ran)
    }
}
