//! A slot's run record, for every flow: the request, each finished step's result (with its
//! duration and the state it set), the step that failed with the end of its output (or the
//! one running when the process died), how the run ended, kforge's version, the host and a
//! reproducer. Written when the run starts and rewritten after every step and on Ctrl-C or
//! SIGTERM, so that even a SIGKILL leaves a record naming the step that was running. A
//! resume continues from it. Every run's record is also kept in the system dir's history
//! (`SYSTEM_DIR/runs/`, the last [`HISTORY`] runs), which `kforge log` reads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Serialize, de::DeserializeOwned};

use super::{Progress, Reporter, Stateful, Step, StepRecord, StepResult, run_stateful};
use crate::error::{Error, FlowError};
use crate::slot::Slot;

/// How many runs the history keeps.
pub const HISTORY: usize = 100;

/// How a run ended (`running` while it runs, and after a SIGKILL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
    /// Answered from what exists (the store) without running a step.
    Reused,
}

/// The host a run ran on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Host {
    pub name: String,
    /// `uname -r`.
    pub kernel: String,
    pub cpus: usize,
    pub memory_mib: u64,
}

impl Host {
    pub fn this() -> Self {
        let read = |p: &str| fs_err::read_to_string(p).unwrap_or_default();
        let memory_kib: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Self {
            name: read("/proc/sys/kernel/hostname").trim().to_owned(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_mib: memory_kib / 1024,
        }
    }
}

/// The record of a slot's last run of one flow (`R` is the flow's request).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRecord<R> {
    /// The flow ("kernel", "QEMU").
    #[serde(default)]
    pub flow: String,
    /// The run's name in the history: `<started>-<pid>-<flow>` of the process that began
    /// it (a resume goes on with the same record).
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub status: Option<RunStatus>,
    /// The process that ran it (a `running` record whose process is gone was killed).
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub started_unix: i64,
    #[serde(default)]
    pub finished_unix: Option<i64>,
    #[serde(default)]
    pub kforge_version: String,
    #[serde(default)]
    pub host: Option<Host>,
    /// The request as given.
    pub request: R,
    pub results: Vec<StepResult>,
    /// The step that started and has not finished: the one running, or the one a killed
    /// process was in.
    pub current: Option<String>,
    pub failed: Option<FailedStep>,
    /// The command that runs this request again elsewhere: the request file kept beside
    /// the history's record, with the ref pinned to the commit this run resolved.
    #[serde(default)]
    pub reproducer: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FailedStep {
    pub step: String,
    pub error: String,
}

impl<R> RunRecord<R> {
    /// A record of a run that has not started.
    pub fn new(flow: &str, request: R) -> Self {
        let started = unix_now();
        Self {
            flow: flow.to_owned(),
            id: format!("{started}-{}-{}", std::process::id(), flow.to_lowercase()),
            status: Some(RunStatus::Running),
            pid: std::process::id(),
            started_unix: started,
            finished_unix: None,
            kforge_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: Some(Host::this()),
            request,
            results: Vec::new(),
            current: None,
            failed: None,
            reproducer: None,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Where a run's record goes besides the slot: its file in the history and the command
/// that builds a request file (`kforge build`, `kforge qemu build`).
#[derive(Debug, Clone)]
pub struct History {
    pub dir: PathBuf,
    pub build_command: &'static str,
}

impl History {
    /// This run's record in the history (`<started>-<pid>-<flow>.json`) and its request
    /// file beside it.
    fn files<R>(&self, record: &RunRecord<R>) -> (PathBuf, PathBuf) {
        let stem = if record.id.is_empty() {
            // A record written before runs had names.
            format!(
                "{}-{}-{}",
                record.started_unix,
                record.pid,
                record.flow.to_lowercase()
            )
        } else {
            record.id.clone()
        };
        (
            self.dir.join(format!("{stem}.json")),
            self.dir.join(format!("{stem}.request.json")),
        )
    }
}

/// The records being written by this process, for [`mark_interrupted`].
static ACTIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Marks the runs of this process `interrupted` (Ctrl-C, SIGTERM), in the slot and in the
/// history; called from the signal handler before the process exits.
pub fn mark_interrupted() {
    let Ok(active) = ACTIVE.lock() else { return };
    for path in active.iter() {
        let Ok(text) = fs_err::read_to_string(path) else {
            continue;
        };
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        v["status"] = "interrupted".into();
        v["finished_unix"] = unix_now().into();
        let text = serde_json::to_string_pretty(&v).expect("serializes");
        let _ = crate::fsutil::write_atomic(path, text.as_bytes());
    }
}

/// Keeps the history to its last [`HISTORY`] runs (records and request files).
fn trim_history(dir: &Path) {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return;
    };
    let mut records: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.to_string_lossy().ends_with(".request.json")
        })
        .collect();
    if records.len() <= HISTORY {
        return;
    }
    records.sort_by_key(|p| history_order(p));
    for old in &records[..records.len() - HISTORY] {
        let _ = fs_err::remove_file(old);
        let _ = fs_err::remove_file(old.with_extension("request.json"));
    }
}

/// A history file's start time and pid, for ordering (older first).
pub fn history_order(p: &Path) -> (i64, u32) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = name.splitn(3, '-');
    let started = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let pid = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (started, pid)
}

/// Writes the history's copy of a run that no step ran for (answered from the store).
pub fn record_reused<R: Serialize>(history: &History, mut record: RunRecord<R>) {
    record.status = Some(RunStatus::Reused);
    record.finished_unix = Some(unix_now());
    let _ = write_history(history, &mut record);
}

fn write_history<R: Serialize>(history: &History, record: &mut RunRecord<R>) -> Result<(), Error> {
    fs_err::create_dir_all(&history.dir)?;
    let (file, request) = history.files(record);
    if !request.exists() {
        let text = serde_json::to_string_pretty(&record.request).expect("serializes");
        crate::fsutil::write_atomic(&request, text.as_bytes())?;
        trim_history(&history.dir);
    }
    let pinned = record.results.iter().find_map(|r| {
        r.state
            .get("pinned")?
            .get("commit")?
            .as_str()
            .map(str::to_owned)
    });
    record.reproducer = Some(format!(
        "{} --request {}{}",
        history.build_command,
        crate::process::shell_quote(request.as_os_str()),
        pinned
            .map(|c| format!(" --git-ref {c}"))
            .unwrap_or_default()
    ));
    let text = serde_json::to_string_pretty(record).expect("serializes");
    crate::fsutil::write_atomic(&file, text.as_bytes())?;
    Ok(())
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

fn write<R: Serialize>(
    slot: &Slot,
    history: &History,
    record: &mut RunRecord<R>,
) -> Result<(), Error> {
    write_history(history, record)?;
    fs_err::create_dir_all(&slot.state)?;
    let text = serde_json::to_string_pretty(record).expect("serializes");
    crate::fsutil::write_atomic(&path(slot), text.as_bytes())?;
    Ok(())
}

/// Runs `steps` on `ctx`, keeping the slot's run record current; a failure is recorded
/// with its step before it is returned.
pub fn run_recorded<C: Stateful, R: Serialize>(
    slot: &Slot,
    history: &History,
    ctx: &mut C,
    steps: &[&dyn Step<C>],
    mut record: RunRecord<R>,
    reporter: &dyn Reporter,
) -> Result<Vec<StepRecord>, Error> {
    record.failed = None;
    record.current = None;
    record.status = Some(RunStatus::Running);
    record.finished_unix = None;
    record.pid = std::process::id();
    write(slot, history, &mut record)?;
    let active = [path(slot), history.files(&record).0];
    if let Ok(mut a) = ACTIVE.lock() {
        a.extend(active.iter().cloned());
    }
    let outcome = run_stateful(steps, ctx, reporter, &mut |progress| {
        match progress {
            Progress::Started(step) => record.current = Some(step.to_owned()),
            Progress::Finished(result) => {
                record.current = None;
                record.results.push(result.clone());
            }
        }
        write(slot, history, &mut record)
    });
    if let Ok(mut a) = ACTIVE.lock() {
        a.retain(|p| !active.contains(p));
    }
    record.finished_unix = Some(unix_now());
    match &outcome {
        Ok(_) => record.status = Some(RunStatus::Succeeded),
        Err(e) => {
            record.status = Some(RunStatus::Failed);
            if let Error::Step { step, source } = e {
                record.current = None;
                record.failed = Some(FailedStep {
                    step: step.clone(),
                    error: source.to_string(),
                });
            } else if let Some(step) = record.current.take() {
                record.failed = Some(FailedStep {
                    step,
                    error: e.to_string(),
                });
            }
        }
    }
    // The run's own error matters more than a failure to note it.
    let written = write(slot, history, &mut record);
    match outcome {
        Ok(steps) => written.map(|()| steps),
        Err(e) => Err(e),
    }
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
