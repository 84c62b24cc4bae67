//! fetch_identity: with `use_peers` (and `reuse`), fetch this identity's run layer from the
//! first registered peer that published it, verified before it enters the local store. An
//! unreachable or bad peer is reported and the next one tried; none: a local build.

use super::KernelRun;
use super::reuse_check::store_hit;
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::manifest::Reused;
use crate::store::Layer;
use crate::store::peers::{self, Attempt};

pub struct FetchIdentity;

impl Step<KernelRun> for FetchIdentity {
    fn name(&self) -> &'static str {
        "fetch_identity"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let step = self.name();
        let req = &ctx.plan.request;
        if !req.use_peers {
            return Ok(Outcome::Skipped("use_peers is off".into()));
        }
        if !req.reuse {
            return Ok(Outcome::Skipped("use_peers needs reuse on".into()));
        }
        let system_dir = ctx.plan.dirs.system_dir.clone();
        let list = peers::list(&system_dir)?;
        if list.is_empty() {
            return Ok(Outcome::Skipped(
                "no peers are registered (kforge peers add NAME URL)".into(),
            ));
        }
        let c = ctx.configured();
        let (release, digest) = (ctx.release(), c.digest.clone());
        let store = ctx.store()?;
        if ctx.hold.is_none() {
            ctx.hold = Some(store.hold(&release)?);
        }
        if store
            .record::<crate::manifest::Manifest>(Layer::Run, &release)
            .ok()
            .flatten()
            .is_some()
            && store.verify(Layer::Run, &release)?.is_empty()
        {
            return Ok(Outcome::Skipped(format!(
                "kernel-{release} is already in this host's store"
            )));
        }
        let trusted = crate::store::sign::trusted(&system_dir)?;
        for peer in &list {
            match peers::fetch_run_layer(&store, peer, &trusted, &release, &digest) {
                Attempt::Fetched(record) => {
                    reporter.event(&Event::Info {
                        step,
                        message: &format!(
                            "fetched kernel-{release} from peer {} ({} files, signature and hashes verified)",
                            peer.name,
                            record.files.len()
                        ),
                    });
                    ctx.reused = Some(store_hit(&store, &record, Reused::Peer));
                    return Ok(Outcome::Ran);
                }
                Attempt::NotThere => reporter.event(&Event::Info {
                    step,
                    message: &format!("peer {} does not have kernel-{release}", peer.name),
                }),
                Attempt::Refused(why) => reporter.event(&Event::Warn {
                    step,
                    message: &format!("peer {} ({}) refused: {why}", peer.name, peer.url),
                }),
            }
        }
        reporter.event(&Event::Info {
            step,
            message: "no peer had it: building here",
        });
        Ok(Outcome::Ran)
    }
}
