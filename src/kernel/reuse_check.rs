//! reuse_check: is `kernel-<uts_release>` already here, in this host's store or the slot's
//! destdir/? Found and verified file by file, the steps that make it (compile .. publish_devel)
//! are skipped and collect points the manifest at the existing copy. A damaged copy is a
//! miss: it is reported, and the rebuild replaces it.

use std::path::PathBuf;

use super::{KernelRecord, KernelRun};
use crate::error::Error;
use crate::flow::Reused;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::kernel::manifest::Manifest;
use crate::store::{Layer, Release, Store, verify_dir};

/// An existing copy of the identity.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Hit {
    pub how: Reused,
    /// The manifest of the build that made it.
    pub manifest: Manifest,
    pub bz_image: PathBuf,
    pub modules_dir: Option<PathBuf>,
    /// The store's run layer, when the copy is there.
    pub entry: Option<PathBuf>,
    pub devel: Option<PathBuf>,
}

/// The record of what the slot's destdir holds for its last build, kept beside the slot.
pub fn destdir_record_path(ctx: &KernelRun) -> PathBuf {
    ctx.plan.slot.state.join("destdir.json")
}

/// The hit for a store entry whose run layer is intact.
pub fn store_hit(store: &Store, record: &KernelRecord, how: Reused) -> Hit {
    let release: Release = record
        .uts_release
        .parse()
        .expect("a record's release names its directory");
    let entry = store.layer_dir(Layer::Run, &release);
    let modules = entry.join("lib/modules").join(release.as_str());
    let devel = store.layer_dir(Layer::Devel, &release);
    Hit {
        how,
        manifest: record.manifest.clone(),
        bz_image: entry.join("boot").join(format!("vmlinuz-{release}")),
        modules_dir: modules.is_dir().then_some(modules),
        devel: devel.is_dir().then_some(devel),
        entry: Some(entry),
    }
}

pub struct ReuseCheck;

impl Step<KernelRun> for ReuseCheck {
    fn name(&self) -> &'static str {
        "reuse_check"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let step = self.name();
        if !ctx.plan.request.reuse {
            return Ok(Outcome::Skipped("reuse is off: building anew".into()));
        }
        if ctx.state.reused.is_some() {
            return Ok(Outcome::Skipped(
                "fetch_identity brought it from a peer".into(),
            ));
        }
        let release = ctx.release();
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&release)?);
        }
        match store.record::<Manifest>(Layer::Run, &release) {
            Ok(Some(record)) => {
                let problems = store.verify_cached(Layer::Run, &release)?;
                if problems.is_empty() {
                    store.touch(&release);
                    let hit = store_hit(&store, &record, Reused::Store);
                    reporter.event(&Event::Info {
                        step,
                        message: &format!(
                            "kernel-{release} is in the store ({}): not rebuilding",
                            hit.entry.as_ref().expect("store hit").display()
                        ),
                    });
                    ctx.state.reused = Some(hit);
                    return Ok(Outcome::Ran);
                }
                warn_damaged(
                    reporter,
                    step,
                    &store.layer_dir(Layer::Run, &release),
                    &problems,
                );
            }
            Ok(None) => {}
            Err(crate::store::StoreError::Damaged { path, problems }) => {
                warn_damaged(reporter, step, &path, &problems);
            }
            Err(e) => return Err(e.into()),
        }
        // The slot's own destdir, from its previous build of this very identity.
        let path = destdir_record_path(ctx);
        if let Ok(bytes) = fs_err::read(&path)
            && let Ok(record) = serde_json::from_slice::<KernelRecord>(&bytes)
            && record.uts_release == release.as_str()
        {
            let destdir = &ctx.plan.slot.destdir;
            let problems: Vec<String> = verify_dir(destdir, &record, false);
            if problems.is_empty() {
                let modules = destdir.join("lib/modules").join(&release);
                reporter.event(&Event::Info {
                    step,
                    message: &format!(
                        "kernel-{release} is installed in this slot's destdir: not rebuilding"
                    ),
                });
                ctx.state.reused = Some(Hit {
                    how: Reused::Destdir,
                    manifest: record.manifest.clone(),
                    bz_image: destdir.join("boot").join(format!("vmlinuz-{release}")),
                    modules_dir: modules.join("modules.dep").is_file().then_some(modules),
                    entry: None,
                    devel: None,
                });
                return Ok(Outcome::Ran);
            }
            warn_damaged(reporter, step, destdir, &problems);
        }
        reporter.event(&Event::Info {
            step,
            message: &format!("kernel-{release} is not built yet"),
        });
        Ok(Outcome::Ran)
    }
}

fn warn_damaged(reporter: &dyn Reporter, step: &str, path: &std::path::Path, problems: &[String]) {
    let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
    reporter.event(&Event::Warn {
        step,
        message: &format!(
            "{} is damaged, treating it as absent and rebuilding: {}{}",
            path.display(),
            shown.join("; "),
            if problems.len() > 5 { "; ..." } else { "" }
        ),
    });
}
