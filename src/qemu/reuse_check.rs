//! reuse_check: is `qemu-<release>` in this host's store, intact? Then configure ..
//! publish are skipped.

use super::{Hit, QemuManifest, QemuRun, info};
use crate::error::Error;
use crate::flow::Reused;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::store::Layer;

/// reuse_check: is `qemu-<release>` in this host's store, intact?
pub struct ReuseCheck;

impl Step<QemuRun> for ReuseCheck {
    fn name(&self) -> &'static str {
        "reuse_check"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if !ctx.plan.request.reuse {
            return Ok(Outcome::Skipped("reuse is off: building anew".into()));
        }
        if ctx.state.reused.is_some() {
            return Ok(Outcome::Skipped(
                "fetch_identity brought it from a peer".into(),
            ));
        }
        let release = ctx.configured().release.clone();
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&release)?);
        }
        let record = match store.record::<QemuManifest>(Layer::Run, &release) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(Outcome::Ran),
            Err(e) => {
                reporter.event(&Event::Warn {
                    step: self.name(),
                    message: &format!("qemu-{release} in the store is damaged, rebuilding: {e}"),
                });
                return Ok(Outcome::Ran);
            }
        };
        let problems = store.verify_cached(Layer::Run, &release)?;
        if !problems.is_empty() {
            reporter.event(&Event::Warn {
                step: self.name(),
                message: &format!(
                    "qemu-{release} in the store is damaged, rebuilding: {}",
                    problems.join("; ")
                ),
            });
            return Ok(Outcome::Ran);
        }
        store.touch(&release);
        let entry = store.layer_dir(Layer::Run, &release);
        info(
            reporter,
            self.name(),
            &format!(
                "qemu-{release} is in the store ({}): not rebuilding",
                entry.display()
            ),
        );
        ctx.state.reused = Some(Hit {
            how: Reused::Store,
            entry,
            manifest: record.manifest,
        });
        Ok(Outcome::Ran)
    }
}
