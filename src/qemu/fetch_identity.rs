//! fetch_identity: with `use_peers` (and `reuse`), fetch `qemu-<release>` from the first
//! registered peer that published it, verified before it enters the local store (as the
//! kernel flow's step does, through the same code); none: a local build.

use super::{Hit, QemuManifest, QemuRun};
use crate::error::Error;
use crate::flow::Reused;
use crate::flow::{Outcome, Reporter, Step, fetch_from_peers, peers_off};
use crate::store::Layer;

pub struct FetchIdentity;

impl Step<QemuRun> for FetchIdentity {
    fn name(&self) -> &'static str {
        "fetch_identity"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let req = &ctx.plan.request;
        if let Some(skipped) = peers_off(req.use_peers, req.reuse) {
            return Ok(skipped);
        }
        let c = ctx.configured();
        let (release, digest) = (c.release.clone(), c.digest.clone());
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&release)?);
        }
        let system_dir = &ctx.plan.dirs.system_dir;
        match fetch_from_peers::<QemuManifest>(
            &store,
            system_dir,
            &release,
            &digest,
            self.name(),
            reporter,
        )? {
            Ok(record) => {
                ctx.state.reused = Some(Hit {
                    how: Reused::Peer,
                    entry: store.layer_dir(Layer::Run, &release),
                    manifest: record.manifest,
                });
                Ok(Outcome::Ran)
            }
            Err(outcome) => Ok(outcome),
        }
    }
}
