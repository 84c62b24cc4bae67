//! fetch_identity: with `use_peers` (and `reuse`), fetch this identity's run layer from the
//! first registered peer that published it, verified before it enters the local store. An
//! unreachable or bad peer is reported and the next one tried; none: a local build.

use super::KernelRun;
use super::reuse_check::store_hit;
use crate::error::Error;
use crate::flow::Reused;
use crate::flow::{Outcome, Reporter, Step, fetch_from_peers, peers_off};
use crate::kernel::manifest::Manifest;

pub struct FetchIdentity;

impl Step<KernelRun> for FetchIdentity {
    fn name(&self) -> &'static str {
        "fetch_identity"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let req = &ctx.plan.request;
        if let Some(skipped) = peers_off(req.use_peers, req.reuse) {
            return Ok(skipped);
        }
        let (release, digest) = (ctx.release(), ctx.configured().digest.clone());
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&release)?);
        }
        let system_dir = &ctx.plan.dirs.system_dir;
        match fetch_from_peers::<Manifest>(
            &store,
            system_dir,
            &release,
            &digest,
            self.name(),
            reporter,
        )? {
            Ok(record) => {
                ctx.state.reused = Some(store_hit(&store, &record, Reused::Peer));
                Ok(Outcome::Ran)
            }
            Err(outcome) => Ok(outcome),
        }
    }
}
