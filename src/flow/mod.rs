//! The generic pipeline runner: steps run in order on one worker, each seeing the previous
//! steps' results; every step reports start, end, elapsed time and whether it ran or was
//! skipped (and why). Flows (kernel, QEMU) supply the steps and their context.
//!
//! The runner never prints: it emits events that the binary renders.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Error;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    Ran,
    Skipped(String),
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

/// Runs `steps` in order; stops at the first failure, naming the step.
pub fn run<C>(
    steps: &[&dyn Step<C>],
    ctx: &mut C,
    reporter: &dyn Reporter,
) -> Result<Vec<StepRecord>, Error> {
    let mut records = Vec::with_capacity(steps.len());
    for step in steps {
        let name = step.name();
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
        records.push(StepRecord {
            step: name.to_owned(),
            outcome,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        });
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

    struct Push(&'static str, bool);
    impl Step<Vec<&'static str>> for Push {
        fn name(&self) -> &'static str {
            self.0
        }
        fn run(&self, ctx: &mut Vec<&'static str>, _: &dyn Reporter) -> Result<Outcome, Error> {
            if !self.1 {
                return Err(Error::Input("boom".into()));
            }
            ctx.push(self.0);
            Ok(if ctx.len() > 1 {
                Outcome::Skipped("second".into())
            } else {
                Outcome::Ran
            })
        }
    }

    #[test]
    fn steps_run_in_order_and_stop_at_failure() {
        let log = Log(Mutex::new(vec![]));
        let mut ctx = vec![];
        let recs = run(&[&Push("a", true), &Push("b", true)], &mut ctx, &log).unwrap();
        assert_eq!(ctx, vec!["a", "b"]);
        assert_eq!(recs[1].outcome, Outcome::Skipped("second".into()));
        let mut ctx = vec![];
        let e = run(
            &[&Push("a", true), &Push("c", false), &Push("d", true)],
            &mut ctx,
            &log,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("step c failed"), "{e}");
        assert_eq!(ctx, vec!["a"]);
    }
}
