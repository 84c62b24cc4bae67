//! The generic pipeline runner: steps run in order on one worker, each seeing the previous
//! steps' results; every step reports start, end, elapsed time and whether it ran or was
//! skipped (and why). Flows (kernel, QEMU) supply the steps and their context.
//!
//! The runner never prints: it emits events that the binary renders.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod checkout;
pub mod lifecycle;
pub mod record;

use crate::error::{Error, FlowError};

/// What happened, for the user interface.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    StepStarted {
        step: &'a str,
    },
    StepFinished {
        step: &'a str,
        elapsed: Duration,
        outcome: &'a Outcome,
    },
    /// A line a tool printed (make's `CC kernel/fork.o`, ...).
    Output {
        step: &'a str,
        line: &'a str,
    },
    /// A note worth showing (what a step decided, and why).
    Info {
        step: &'a str,
        message: &'a str,
    },
    Warn {
        step: &'a str,
        message: &'a str,
    },
    /// A command about to run (shown with `-v`).
    Command {
        step: &'a str,
        command: &'a str,
    },
}

/// Receives events; implemented by the binary (terminal or plain lines) and by tests.
pub trait Reporter: Sync {
    fn event(&self, event: &Event<'_>);
}

/// A reporter that drops everything.
pub struct Silent;
impl Reporter for Silent {
    fn event(&self, _: &Event<'_>) {}
}

/// Whether a step did its work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    Ran,
    Skipped(String),
}

/// Why fetch_identity does not ask the peers, when the request says it must not.
pub fn peers_off(use_peers: bool, reuse: bool) -> Option<Outcome> {
    if !use_peers {
        return Some(Outcome::Skipped("use_peers is off".into()));
    }
    (!reuse).then(|| Outcome::Skipped("use_peers needs reuse on".into()))
}

/// fetch_identity for any flow: ask the registered peers for the run layer of `release`,
/// reporting each answer. `Ok(record)`: a peer's verified copy is in the store now;
/// `Err(outcome)`: what the step came to without one.
pub fn fetch_from_peers<M>(
    store: &crate::store::Store,
    system_dir: &std::path::Path,
    release: &crate::store::Release,
    digest: &str,
    step: &str,
    reporter: &dyn Reporter,
) -> Result<Result<crate::store::LayerRecord<M>, Outcome>, Error>
where
    M: serde::de::DeserializeOwned + Serialize + crate::store::peers::OfRelease,
{
    use crate::store::peers::{Asked, Heard, ask};
    let entry = store.entry_name(release);
    let asked = ask::<M>(store, system_dir, release, digest, &mut |heard| {
        let message = format!("{entry}: {heard}");
        match heard {
            Heard::Refused { .. } => reporter.event(&Event::Warn {
                step,
                message: &message,
            }),
            _ => reporter.event(&Event::Info {
                step,
                message: &message,
            }),
        }
    })?;
    Ok(match asked {
        Asked::Fetched(record) => Ok(*record),
        Asked::NoPeers => Err(Outcome::Skipped(
            "no peers are registered (kforge peers add NAME URL)".into(),
        )),
        Asked::AlreadyHere => Err(Outcome::Skipped(format!(
            "{entry} is already in this host's store"
        ))),
        Asked::NoneHad => {
            reporter.event(&Event::Info {
                step,
                message: "no peer had it: building here",
            });
            Err(Outcome::Ran)
        }
    })
}

/// Where a reused build came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reused {
    /// This host's store.
    Store,
    /// The slot's own `destdir/`, from its previous build.
    Destdir,
    /// A registered peer's store (fetched, verified, then added to this host's).
    Peer,
}

impl Reused {
    pub fn as_str(self) -> &'static str {
        match self {
            Reused::Store => "store",
            Reused::Destdir => "destdir",
            Reused::Peer => "peer",
        }
    }
}

/// One step's record in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub elapsed_ms: u64,
}

/// A step of a flow over context `C`.
pub trait Step<C> {
    fn name(&self) -> &'static str;
    /// Does the step's work, or returns `Outcome::Skipped` with the reason.
    fn run(&self, ctx: &mut C, reporter: &dyn Reporter) -> Result<Outcome, Error>;
}

/// A context whose state can leave the process as JSON and come back: what lets an engine
/// run one step per process (`kforge step`), and a failed run resume from its failed step.
///
/// The state is a struct that serializes to a flat JSON object (every field optional, so
/// that a step's result can carry only the fields the step changed).
pub trait Stateful {
    type State: Serialize + serde::de::DeserializeOwned + schemars::JsonSchema;
    fn state(&self) -> &Self::State;
    fn state_mut(&mut self) -> &mut Self::State;
    /// Called after a state from another process (or an earlier run) was laid over this one.
    fn restored(&mut self) {}
}

fn state_map<C: Stateful>(ctx: &C) -> Map<String, Value> {
    match serde_json::to_value(ctx.state()) {
        Ok(Value::Object(m)) => m,
        other => unreachable!("a flow's state serializes to an object, not {other:?}"),
    }
}

/// What one step did: its outcome and the state fields it set, which the next steps (in this
/// process or another) start from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub step: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default)]
    pub elapsed_ms: u64,
    #[serde(default)]
    pub state: Map<String, Value>,
}

/// The shape of a [`StepResult`] of a flow whose state is `S`, for `kforge schema`: `state`
/// holds the fields of `S` that the step changed.
#[derive(schemars::JsonSchema)]
pub struct StepResultOf<S> {
    pub step: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub elapsed_ms: u64,
    pub state: S,
}

impl StepResult {
    pub fn record(&self) -> StepRecord {
        StepRecord {
            step: self.step.clone(),
            outcome: self.outcome.clone(),
            elapsed_ms: self.elapsed_ms,
        }
    }
}

/// Lays earlier steps' results over a context's state, in the order given.
pub fn apply<C: Stateful>(ctx: &mut C, results: &[StepResult]) -> Result<(), Error> {
    let mut state = state_map(ctx);
    for r in results {
        for (k, v) in &r.state {
            if !state.contains_key(k) {
                return Err(FlowError::UnknownField {
                    step: r.step.clone(),
                    field: k.clone(),
                }
                .into());
            }
            state.insert(k.clone(), v.clone());
        }
    }
    *ctx.state_mut() = serde_json::from_value(Value::Object(state)).map_err(FlowError::BadState)?;
    ctx.restored();
    Ok(())
}

/// Runs one step and reports it; the result holds the state fields it changed.
pub fn run_one<C: Stateful>(
    step: &dyn Step<C>,
    ctx: &mut C,
    reporter: &dyn Reporter,
) -> Result<StepResult, Error> {
    let name = step.name();
    let before = state_map(ctx);
    reporter.event(&Event::StepStarted { step: name });
    let start = Instant::now();
    let outcome = step.run(ctx, reporter).map_err(|e| Error::Step {
        step: name.to_owned(),
        source: Box::new(e),
    })?;
    let elapsed = start.elapsed();
    reporter.event(&Event::StepFinished {
        step: name,
        elapsed,
        outcome: &outcome,
    });
    let state = state_map(ctx)
        .into_iter()
        .filter(|(k, v)| before.get(k) != Some(v))
        .collect();
    Ok(StepResult {
        step: name.to_owned(),
        outcome,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        state,
    })
}

/// Where a run is, for whoever keeps a record of it.
#[derive(Debug)]
pub enum Progress<'a> {
    Started(&'a str),
    Finished(&'a StepResult),
}

/// Runs `steps` in order, telling `progress` as each starts and lands (a run record can be
/// kept current that way, one that survives a killed process); stops at the first failure,
/// naming the step.
pub fn run_stateful<C: Stateful>(
    steps: &[&dyn Step<C>],
    ctx: &mut C,
    reporter: &dyn Reporter,
    progress: &mut dyn FnMut(Progress<'_>) -> Result<(), Error>,
) -> Result<Vec<StepRecord>, Error> {
    let mut records = Vec::with_capacity(steps.len());
    for step in steps {
        progress(Progress::Started(step.name()))?;
        let result = run_one(*step, ctx, reporter)?;
        progress(Progress::Finished(&result))?;
        records.push(result.record());
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Log(Mutex<Vec<String>>);
    impl Reporter for Log {
        fn event(&self, e: &Event<'_>) {
            let s = match e {
                Event::StepStarted { step } => format!("start {step}"),
                Event::StepFinished { step, outcome, .. } => format!("end {step} {outcome:?}"),
                _ => return,
            };
            self.0.lock().unwrap().push(s);
        }
    }

    #[derive(Default)]
    struct Ctx(State);
    #[derive(Default, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct State {
        pushed: Vec<String>,
    }
    impl Stateful for Ctx {
        type State = State;
        fn state(&self) -> &State {
            &self.0
        }
        fn state_mut(&mut self) -> &mut State {
            &mut self.0
        }
    }

    struct Push(&'static str, bool);
    impl Step<Ctx> for Push {
        fn name(&self) -> &'static str {
            self.0
        }
        fn run(&self, ctx: &mut Ctx, _: &dyn Reporter) -> Result<Outcome, Error> {
            if !self.1 {
                return Err(crate::error::FlowError::RecordChanged.into());
            }
            ctx.0.pushed.push(self.0.to_owned());
            Ok(if ctx.0.pushed.len() > 1 {
                Outcome::Skipped("second".into())
            } else {
                Outcome::Ran
            })
        }
    }

    fn run(steps: &[&dyn Step<Ctx>], ctx: &mut Ctx, log: &Log) -> Result<Vec<StepResult>, Error> {
        let mut results = Vec::new();
        run_stateful(steps, ctx, log, &mut |p| {
            if let Progress::Finished(r) = p {
                results.push(r.clone());
            }
            Ok(())
        })?;
        Ok(results)
    }

    #[test]
    fn steps_run_in_order_and_stop_at_failure() {
        let log = Log(Mutex::new(vec![]));
        let mut ctx = Ctx::default();
        let recs = run(&[&Push("a", true), &Push("b", true)], &mut ctx, &log).unwrap();
        assert_eq!(ctx.0.pushed, vec!["a", "b"]);
        assert_eq!(recs[1].outcome, Outcome::Skipped("second".into()));
        let mut ctx = Ctx::default();
        let e = run(
            &[&Push("a", true), &Push("c", false), &Push("d", true)],
            &mut ctx,
            &log,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("step c failed"), "{e}");
        assert_eq!(ctx.0.pushed, vec!["a"]);
    }

    #[test]
    fn a_result_carries_what_the_step_changed_and_replays_elsewhere() {
        let log = Log(Mutex::new(vec![]));
        let mut ctx = Ctx::default();
        let first = run(&[&Push("a", true)], &mut ctx, &log).unwrap();
        assert_eq!(first[0].state["pushed"], serde_json::json!(["a"]));
        // Another process: starts empty, takes a's result, runs b.
        let mut other = Ctx::default();
        apply(&mut other, &first).unwrap();
        let second = run(&[&Push("b", true)], &mut other, &log).unwrap();
        assert_eq!(other.0.pushed, vec!["a", "b"]);
        // A step that changes nothing reports no state.
        let unchanged = run_one(&Noop, &mut other, &log).unwrap();
        assert!(unchanged.state.is_empty());
        assert_eq!(second[0].state["pushed"], serde_json::json!(["a", "b"]));
        // Unknown fields are refused, not dropped.
        let mut bad = first[0].clone();
        bad.state.insert("nope".into(), Value::Null);
        assert!(apply(&mut Ctx::default(), &[bad]).is_err());
    }

    struct Noop;
    impl Step<Ctx> for Noop {
        fn name(&self) -> &'static str {
            "noop"
        }
        fn run(&self, _: &mut Ctx, _: &dyn Reporter) -> Result<Outcome, Error> {
            Ok(Outcome::Ran)
        }
    }
}
