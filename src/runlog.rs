//! `kforge log`: the recent runs of every flow on this host, read from the run records the
//! lifecycle keeps in `SYSTEM_DIR/runs` (see [`crate::flow::record`]), and what moved
//! between two builds (sizes, warnings, ccache).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, InvalidRequest};
use crate::flow::record::history_order;
use crate::kernel::figures::BuildFigures;

/// One run, as `kforge log` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    pub flow: String,
    /// `running`, `succeeded`, `failed`, `interrupted`, `reused`; `died` for a run recorded
    /// as running whose process is gone (killed).
    pub status: String,
    pub started_unix: i64,
    pub seconds: Option<i64>,
    /// The step under way when the run stopped (or now, when it runs).
    pub current: Option<String>,
    pub failed_step: Option<String>,
    /// The end of the failed step's error (make's last lines for a compile).
    pub failed_tail: Vec<String>,
    /// Each step that ran, with its milliseconds.
    pub steps: Vec<StepTime>,
    /// The identity, once configure made it.
    pub release: Option<String>,
    pub figures: Option<BuildFigures>,
    pub reproducer: Option<String>,
    /// The whole record.
    pub record: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepTime {
    pub step: String,
    pub status: String,
    pub elapsed_ms: u64,
}

/// `kforge log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// Newest first.
    pub runs: Vec<Entry>,
}

fn records(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = fs_err::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && !p.to_string_lossy().ends_with(".request.json")
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort_by_key(|p| std::cmp::Reverse(history_order(p)));
    all
}

fn alive(pid: u64) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Reads one record of the history as a log entry.
pub fn entry(path: &Path) -> Result<Entry, Error> {
    let v: Value = serde_json::from_slice(&fs_err::read(path)?)
        .map_err(|e| InvalidRequest::one(format!("{} is not a run record: {e}", path.display())))?;
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    let mut status = s("status").unwrap_or_else(|| "running".into());
    if status == "running" && !alive(v["pid"].as_u64().unwrap_or(0)) {
        status = "died".into();
    }
    let results = v["results"].as_array().cloned().unwrap_or_default();
    let state = |field: &str| {
        results
            .iter()
            .rev()
            .find_map(|r| r["state"].get(field).filter(|x| !x.is_null()).cloned())
    };
    let error = v["failed"]["error"].as_str().unwrap_or_default();
    let lines: Vec<&str> = error.lines().collect();
    Ok(Entry {
        id: s("id").unwrap_or_default(),
        flow: s("flow").unwrap_or_default(),
        status,
        started_unix: v["started_unix"].as_i64().unwrap_or(0),
        seconds: v["finished_unix"]
            .as_i64()
            .map(|f| f - v["started_unix"].as_i64().unwrap_or(f)),
        current: s("current"),
        failed_step: v["failed"]["step"].as_str().map(str::to_owned),
        failed_tail: lines[lines.len().saturating_sub(20)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect(),
        steps: results
            .iter()
            .map(|r| StepTime {
                step: r["step"].as_str().unwrap_or_default().to_owned(),
                status: r["status"].as_str().unwrap_or_default().to_owned(),
                elapsed_ms: r["elapsed_ms"].as_u64().unwrap_or(0),
            })
            .collect(),
        release: state("configured").and_then(|c| c["uts_release"].as_str().map(str::to_owned)),
        figures: state("figures").and_then(|f| serde_json::from_value(f).ok()),
        reproducer: s("reproducer"),
        record: path.display().to_string(),
    })
}

/// The last `n` runs, newest first.
pub fn log(dir: &Path, n: usize) -> Result<Log, Error> {
    let mut runs = Vec::new();
    for p in records(dir).into_iter().take(n) {
        // A record being rewritten this instant is skipped, not an error.
        if let Ok(e) = entry(&p) {
            runs.push(e);
        }
    }
    Ok(Log { runs })
}

/// A run by its id (or an unambiguous start of it), or the latest run whose identity is
/// `what` (a `kernel-` prefix allowed) and that has figures.
pub fn find(dir: &Path, what: &str) -> Result<Entry, Error> {
    let release = what.strip_prefix("kernel-").unwrap_or(what);
    let all = records(dir);
    let by_id: Vec<&PathBuf> = all
        .iter()
        .filter(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().starts_with(what))
        })
        .collect();
    match by_id.as_slice() {
        [one] => return entry(one),
        [] => {}
        many => {
            return Err(InvalidRequest::one(format!(
                "`{what}` names {} runs; give more of the id",
                many.len()
            ))
            .into());
        }
    }
    for p in &all {
        if let Ok(e) = entry(p)
            && e.release.as_deref() == Some(release)
            && e.figures.is_some()
        {
            return Ok(e);
        }
    }
    Err(InvalidRequest::one(format!(
        "no run `{what}` in {} (see `kforge log`)",
        dir.display()
    ))
    .into())
}

/// The request file of the newest recorded run that made (or answered) `release`: what
/// `kforge repro` rebuilds from when it is given an identity.
pub fn request_of(dir: &Path, release: &str) -> Option<PathBuf> {
    records(dir).into_iter().find_map(|p| {
        let e = entry(&p).ok()?;
        let request = p.with_extension("request.json");
        (e.release.as_deref() == Some(release)
            && matches!(e.status.as_str(), "succeeded" | "reused")
            && request.is_file())
        .then_some(request)
    })
}

/// A figure in two builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    pub a: Option<i64>,
    pub b: Option<i64>,
    /// b - a, when both are known.
    pub delta: Option<i64>,
}

impl Delta {
    fn of(a: Option<u64>, b: Option<u64>) -> Self {
        let a = a.and_then(|x| i64::try_from(x).ok());
        let b = b.and_then(|x| i64::try_from(x).ok());
        Self {
            a,
            b,
            delta: a.zip(b).map(|(a, b)| b - a),
        }
    }
}

/// `kforge log --compare A B`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compared {
    pub a: String,
    pub b: String,
    pub a_release: Option<String>,
    pub b_release: Option<String>,
    /// boot_image, vmlinux_text, vmlinux_data, vmlinux_bss, modules (bytes).
    pub sizes: BTreeMap<String, Delta>,
    pub warnings: Delta,
    /// Warning kinds and files with more warnings in B than in A, by how many more.
    pub warnings_added: BTreeMap<String, i64>,
    pub ccache_hits: Delta,
    pub ccache_misses: Delta,
}

/// What moved from run `a` to run `b`.
pub fn compare(a: &Entry, b: &Entry) -> Result<Compared, Error> {
    let fig = |e: &Entry| {
        e.figures.clone().ok_or_else(|| {
            Error::from(InvalidRequest::one(format!(
                "run {} has no build figures (it compiled nothing)",
                e.id
            )))
        })
    };
    let (fa, fb) = (fig(a)?, fig(b)?);
    let mut sizes = BTreeMap::new();
    for (name, x, y) in [
        ("boot_image", fa.sizes.boot_image, fb.sizes.boot_image),
        ("vmlinux_text", fa.sizes.vmlinux_text, fb.sizes.vmlinux_text),
        ("vmlinux_data", fa.sizes.vmlinux_data, fb.sizes.vmlinux_data),
        ("vmlinux_bss", fa.sizes.vmlinux_bss, fb.sizes.vmlinux_bss),
        ("modules", fa.sizes.modules, fb.sizes.modules),
    ] {
        sizes.insert(name.to_owned(), Delta::of(x, y));
    }
    let mut added = BTreeMap::new();
    for (prefix, ma, mb) in [
        ("kind ", &fa.warnings.by_kind, &fb.warnings.by_kind),
        ("file ", &fa.warnings.by_file, &fb.warnings.by_file),
    ] {
        for (k, n) in mb {
            let more = i64::from(*n) - i64::from(ma.get(k).copied().unwrap_or(0));
            if more > 0 {
                added.insert(format!("{prefix}{k}"), more);
            }
        }
    }
    let cc = |f: &BuildFigures| f.ccache.clone().unwrap_or_default();
    Ok(Compared {
        a: a.id.clone(),
        b: b.id.clone(),
        a_release: a.release.clone(),
        b_release: b.release.clone(),
        sizes,
        warnings: Delta::of(
            Some(u64::from(fa.warnings.total)),
            Some(u64::from(fb.warnings.total)),
        ),
        warnings_added: added,
        ccache_hits: Delta::of(
            fa.ccache.as_ref().map(|_| u64::from(cc(&fa).hits)),
            fb.ccache.as_ref().map(|_| u64::from(cc(&fb).hits)),
        ),
        ccache_misses: Delta::of(
            fa.ccache.as_ref().map(|_| u64::from(cc(&fa).misses)),
            fb.ccache.as_ref().map(|_| u64::from(cc(&fb).misses)),
        ),
    })
}
