//! publish: the installed tree becomes the store entry `run/qemu-<release>`.

use super::collect::manifest_of;
use super::{QemuRun, info};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::store::{Layer, Published, sources_under};

pub struct Publish;

impl Step<QemuRun> for Publish {
    fn name(&self) -> &'static str {
        "publish"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let c = ctx.configured().clone();
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&c.release)?);
        }
        let entry = store.layer_dir(Layer::Run, &c.release);
        let sources = sources_under(&ctx.plan.slot.destdir, "")?;
        ctx.state.store_entry = Some(entry.clone());
        let manifest = manifest_of(ctx);
        let (published, path) = store.publish(
            Layer::Run,
            &c.release,
            &c.digest,
            &manifest,
            &sources,
            "local",
        )?;
        let what = match published {
            Published::Added => "added",
            Published::AlreadyPresent => "already there (another build published it)",
            Published::Replaced => "replaced the damaged copy of",
        };
        info(
            reporter,
            self.name(),
            &format!(
                "{what} qemu-{} ({} files) at {}",
                c.release,
                sources.len(),
                path.display()
            ),
        );
        Ok(Outcome::Ran)
    }
}
