//! The lifecycle every flow shares, written once: check a request into a plan, take the
//! flow's slot, run its steps with the slot's run record kept current, resume a failed or
//! interrupted run from the step it stopped at, and run one step in its own process for an
//! engine. A flow (the kernel's, QEMU's) brings its request, plan, run state and steps by
//! implementing [`Flow`]; nothing here knows what a flow builds.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::record::{self, RunRecord};
use super::{Event, Reporter, Stateful, Step, StepRecord, StepResult};
use crate::dirs::Dirs;
use crate::error::{Error, FlowError};
use crate::slot::Slot;

/// A build flow, as the lifecycle sees it.
pub trait Flow: 'static {
    /// The project of the flow's slots: `WORKERS_DIR/<index>/main/<PROJECT>`.
    const PROJECT: &'static str;
    /// What the flow makes, in messages ("kernel", "QEMU").
    const WHAT: &'static str;
    /// The command that builds a request file of this flow (`kforge build`): a run
    /// record's reproducer.
    const BUILD_COMMAND: &'static str;
    /// What a user or an engine asks for (a request file, the flags).
    type Request: Clone + Serialize + DeserializeOwned;
    /// A request checked against the mirror and the host, before anything is touched.
    type Plan;
    /// The state the steps share; what crosses processes is its [`Stateful`] part.
    type Run: Stateful;
    /// The flow's result.
    type Manifest: Serialize;

    /// Every check that needs no change on disk.
    fn plan(request: Self::Request, dirs: &Dirs) -> Result<Self::Plan, Error>;
    fn request(plan: &Self::Plan) -> &Self::Request;
    fn dirs(plan: &Self::Plan) -> &Dirs;
    fn slot(plan: &Self::Plan) -> &Slot;
    /// A run that has done nothing yet.
    fn start(plan: Self::Plan) -> Self::Run;
    /// The steps, in order.
    fn steps() -> &'static [&'static dyn Step<Self::Run>];
    /// The manifest, once the last step made it.
    fn manifest(run: &Self::Run) -> Option<&Self::Manifest>;

    /// Answers a run without its slot when everything it would produce through `until` (a
    /// step's name, or the end) is known already: for a build, an identity the request
    /// alone determines and the store holds, verified. `true`: the run holds its result and
    /// no step runs; `false` (the default): the steps run in the slot as usual.
    fn known(
        run: &mut Self::Run,
        until: Option<&str>,
        reporter: &dyn Reporter,
    ) -> Result<bool, Error> {
        let _ = (run, until, reporter);
        Ok(false)
    }

    /// Another name an engine may run a step by, for this request (the kernel's
    /// `configure_<method>`): the step's own name, or an error when the name does not fit
    /// the request; `None` when `name` is no alias.
    fn alias(name: &str, request: &Self::Request) -> Result<Option<&'static str>, Error> {
        let _ = (name, request);
        Ok(None)
    }
    /// The aliases, for messages listing the steps.
    fn alias_names() -> &'static [&'static str] {
        &[]
    }
}

/// What a run did.
pub struct Finished<F: Flow> {
    pub run: F::Run,
    pub steps: Vec<StepRecord>,
}

impl<F: Flow> std::fmt::Debug for Finished<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished")
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// The slot of the flow at this worker index.
pub fn slot_of<F: Flow>(dirs: &Dirs) -> Slot {
    Slot::new(&dirs.workers_dir, dirs.worker_index, F::PROJECT)
}

/// The names of the flow's steps, in order.
pub fn step_names<F: Flow>() -> Vec<&'static str> {
    F::steps().iter().map(|s| s.name()).collect()
}

fn lock(
    slot: &Slot,
    first: &str,
    wait: bool,
    reporter: &dyn Reporter,
) -> Result<crate::slot::SlotGuard, Error> {
    Ok(slot.lock(wait, &mut |msg| {
        reporter.event(&Event::Info {
            step: first,
            message: msg,
        });
    })?)
}

/// Takes the plan's slot and runs the flow's steps, through `until` (a step's name) or to
/// the end, keeping the slot's run record.
pub fn run<F: Flow>(
    plan: F::Plan,
    until: Option<&str>,
    wait: bool,
    reporter: &dyn Reporter,
) -> Result<Finished<F>, Error> {
    let all = F::steps();
    let end = match until {
        Some(name) => all.iter().position(|s| s.name() == name).map_or_else(
            || unreachable!("`{name}` is a step of the {} flow", F::WHAT),
            |i| i + 1,
        ),
        None => all.len(),
    };
    let slot = F::slot(&plan).clone();
    let history = history::<F>(F::dirs(&plan));
    let rec = RunRecord::new(F::WHAT, F::request(&plan).clone());
    let first = all[0].name();
    let mut run = F::start(plan);
    // Before the slot: a known answer needs neither its lock nor its tree, so it comes at
    // once even while another build holds the slot.
    if F::known(&mut run, until, reporter)? {
        if until.is_none() {
            record::record_reused(&history, rec);
        }
        return Ok(Finished {
            run,
            steps: Vec::new(),
        });
    }
    let _guard = lock(&slot, first, wait, reporter)?;
    let steps = record::run_recorded(&slot, &history, &mut run, &all[..end], rec, reporter)?;
    Ok(Finished { run, steps })
}

/// Where a flow's run records are kept beside the slot: `SYSTEM_DIR/runs`.
pub fn history<F: Flow>(dirs: &Dirs) -> record::History {
    record::History {
        dir: dirs.system_dir.join("runs"),
        build_command: F::BUILD_COMMAND,
    }
}

/// The slot's run record and the step a resume starts at.
pub fn resumable<F: Flow>(slot: &Slot) -> Result<(RunRecord<F::Request>, usize), Error> {
    let Some(rec) = record::read::<F::Request>(slot)? else {
        return Err(FlowError::NothingToResume(format!(
            "slot {} has no recorded {} run",
            slot.src.display(),
            F::WHAT
        ))
        .into());
    };
    let at = record::resume_point(slot, &rec, F::steps())?;
    Ok((rec, at))
}

/// Continues the slot's failed or interrupted run from the step it stopped at, with the
/// request and the earlier steps' results as recorded; nothing before it runs again.
pub fn resume<F: Flow>(
    dirs: &Dirs,
    wait: bool,
    reporter: &dyn Reporter,
) -> Result<Finished<F>, Error> {
    let slot = slot_of::<F>(dirs);
    let (rec, at) = resumable::<F>(&slot)?;
    let steps = F::steps();
    let plan = F::plan(rec.request.clone(), dirs)?;
    let _guard = lock(F::slot(&plan), steps[at].name(), wait, reporter)?;
    // Read again under the lock: another run may have finished in between.
    let (again, at_again) = resumable::<F>(&slot)?;
    if at_again != at || again.results.len() != rec.results.len() {
        return Err(FlowError::RecordChanged.into());
    }
    let mut run = F::start(plan);
    super::apply(&mut run, &rec.results)?;
    reporter.event(&Event::Info {
        step: steps[at].name(),
        message: &format!(
            "resuming at {} (steps before it as recorded)",
            steps[at].name()
        ),
    });
    let mut done: Vec<StepRecord> = rec.results.iter().map(StepResult::record).collect();
    done.extend(record::run_recorded(
        &slot,
        &history::<F>(dirs),
        &mut run,
        &steps[at..],
        rec,
        reporter,
    )?);
    Ok(Finished { run, steps: done })
}

/// The step an engine's `name` stands for, checked against the request.
pub fn find_step<F: Flow>(name: &str, request: &F::Request) -> Result<usize, Error> {
    let base = F::alias(name, request)?.unwrap_or(name);
    F::steps()
        .iter()
        .position(|s| s.name() == base)
        .ok_or_else(|| {
            let aliases = F::alias_names();
            FlowError::UnknownStep {
                name: name.to_owned(),
                known: format!(
                    "{}{}",
                    step_names::<F>().join(", "),
                    if aliases.is_empty() {
                        String::new()
                    } else {
                        format!(" (and {})", aliases.join(", "))
                    }
                ),
            }
            .into()
        })
}

/// Runs one step in its own process: the earlier steps' results (keyed by step name, or by
/// the alias the engine ran the step by) are laid over a fresh run first, and every earlier
/// step must have one. The result is named as the engine named the step.
pub fn run_step<F: Flow>(
    plan: F::Plan,
    name: &str,
    results: &BTreeMap<String, StepResult>,
    wait: bool,
    reporter: &dyn Reporter,
) -> Result<(StepResult, F::Run), Error> {
    let steps = F::steps();
    let at = find_step::<F>(name, F::request(&plan))?;
    let mut earlier = Vec::with_capacity(at);
    let mut missing = Vec::new();
    for step in &steps[..at] {
        let found = results.get(step.name()).or_else(|| {
            results.iter().find_map(|(key, r)| {
                (F::alias(key, F::request(&plan)).ok().flatten() == Some(step.name())).then_some(r)
            })
        });
        match found {
            Some(r) => earlier.push(r.clone()),
            None => missing.push(step.name()),
        }
    }
    if !missing.is_empty() {
        return Err(FlowError::MissingResults {
            step: name.to_owned(),
            missing: missing.into_iter().map(str::to_owned).collect(),
        }
        .into());
    }
    let _guard = lock(F::slot(&plan), steps[at].name(), wait, reporter)?;
    let mut run = F::start(plan);
    super::apply(&mut run, &earlier)?;
    let mut result = super::run_one(steps[at], &mut run, reporter)?;
    name.clone_into(&mut result.step);
    Ok((result, run))
}
