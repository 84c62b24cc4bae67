//! A slot's run record, for every flow: the request, each finished step's result, and the
//! step that failed (or was running when the process died), rewritten after every step so
//! that it survives a killed process. A resume continues from it.

use std::path::PathBuf;

use serde::{Serialize, de::DeserializeOwned};

use super::{Progress, Reporter, Stateful, Step, StepRecord, StepResult, run_stateful};
use crate::error::{Error, FlowError};
use crate::slot::Slot;

/// The record of a slot's last run of one flow (`R` is the flow's request).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRecord<R> {
    pub request: R,
    pub results: Vec<StepResult>,
    /// The step that started and has not finished: the one running, or the one a killed
    /// process was in.
    pub current: Option<String>,
    pub failed: Option<FailedStep>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FailedStep {
    pub step: String,
    pub error: String,
}

impl<R> RunRecord<R> {
    /// A record of a run that has not started.
    pub fn new(request: R) -> Self {
        Self {
            request,
            results: Vec::new(),
            current: None,
            failed: None,
        }
    }
}

/// Where a slot keeps its run record (the slot's state directory is per project).
pub fn path(slot: &Slot) -> PathBuf {
    slot.state.join("run.json")
}

/// Reads the slot's record; `None` when it has none.
pub fn read<R: DeserializeOwned>(slot: &Slot) -> Result<Option<RunRecord<R>>, Error> {
    let path = path(slot);
    let text = match fs_err::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| FlowError::UnreadableRecord { path, source }.into())
}

fn write<R: Serialize>(slot: &Slot, record: &RunRecord<R>) -> Result<(), Error> {
    fs_err::create_dir_all(&slot.state)?;
    let text = serde_json::to_string_pretty(record).expect("serializes");
    crate::fsutil::write_atomic(&path(slot), text.as_bytes())?;
    Ok(())
}

/// Runs `steps` on `ctx`, keeping the slot's run record current; a failure is recorded
/// with its step before it is returned.
pub fn run_recorded<C: Stateful, R: Serialize>(
    slot: &Slot,
    ctx: &mut C,
    steps: &[&dyn Step<C>],
    mut record: RunRecord<R>,
    reporter: &dyn Reporter,
) -> Result<Vec<StepRecord>, Error> {
    record.failed = None;
    record.current = None;
    write(slot, &record)?;
    let outcome = run_stateful(steps, ctx, reporter, &mut |progress| {
        match progress {
            Progress::Started(step) => record.current = Some(step.to_owned()),
            Progress::Finished(result) => {
                record.current = None;
                record.results.push(result.clone());
            }
        }
        write(slot, &record)
    });
    if let Err(Error::Step { step, source }) = &outcome {
        record.current = None;
        record.failed = Some(FailedStep {
            step: step.clone(),
            error: source.to_string(),
        });
        // The run's own error matters more than a failure to note it.
        let _ = write(slot, &record);
    }
    outcome
}

/// Which step a resume of `record` starts at: the failed or interrupted one, provided the
/// recorded results lead exactly up to it.
pub fn resume_point<R, C>(
    slot: &Slot,
    record: &RunRecord<R>,
    steps: &[&dyn Step<C>],
) -> Result<usize, Error> {
    let path = path(slot);
    let Some(step) = record
        .failed
        .as_ref()
        .map(|f| f.step.clone())
        .or_else(|| record.current.clone())
    else {
        return Err(FlowError::NothingToResume(format!(
            "the last run in {} finished ({} steps)",
            slot.src.display(),
            record.results.len()
        ))
        .into());
    };
    let Some(at) = steps.iter().position(|s| s.name() == step) else {
        return Err(FlowError::UnknownStep {
            known: steps
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
            name: step,
        }
        .into());
    };
    let leads = record.results.len() == at
        && record
            .results
            .iter()
            .zip(steps)
            .all(|(r, s)| r.step == s.name());
    if !leads {
        return Err(FlowError::RecordDoesNotLead { path, step }.into());
    }
    Ok(at)
}
