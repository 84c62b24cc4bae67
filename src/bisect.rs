//! Bisect on the store: the first bad commit between good and bad refs of the mirror, each
//! candidate built through the kernel flow (so each is an identity in the store and each
//! verdict a run in the results database), no identity built or checked twice.
//!
//! Candidates come from git's own plumbing in the mirror (`git rev-list --bisect-all`, best
//! split first, skipped commits passed over as `git bisect skip` does), never from a
//! developer's tree. Before a candidate is built, kforge asks whether it already knows the
//! answer, cheapest first:
//! - **the same kernel as a tested neighbour**: the nearest good below it (or the bad above
//!   it) was built here, and its build read none of the files the commits in between change
//!   (its `.cmd` files name every source and header it compiled; Makefiles, Kconfig files
//!   and scripts always count): the candidate's kernel differs from it only in its release
//!   string, and the neighbour's verdict stands;
//! - **a recorded verdict**: the candidate's identity has a run of this check in the results
//!   database (an earlier bisect, a `kforge test`), or a failed build;
//! - else it is built (answered from the store when the identity is there) and checked.
//!
//! The driver here is the algorithm and its bookkeeping; building and checking are the
//! caller's ([`Candidates`]), so the binary wires them to its commands.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, InvalidRequest};
use crate::flow::{Event, Reporter};
use crate::fsutil::write_atomic;
use crate::kernel::manifest::Manifest;
use crate::kernel::request::KernelRequest;
use crate::slot::Mirror;
use crate::slot::git::git;
use crate::verdict::db::{Db, NewRun, Outcome, Run};
use crate::verdict::{CaseResult, Status};

/// What decides whether a candidate is good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The boot check passes (`kforge boot --check`).
    Boot,
    /// No failing, crashed or timed-out KUnit case among the suites matching the glob.
    Kunit(String),
    /// No failing kselftest of the target.
    Kselftest(String),
    /// The command (run by the guest's `/bin/sh -c`) exits 0; 125 skips the candidate.
    Run(String),
    /// A host script given the manifest's path: 0 good, 125 skip, 1-127 bad, as for
    /// `git bisect run`; anything else stops the bisect.
    Script(PathBuf),
}

impl std::str::FromStr for Check {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let nonempty = |what: &str| match arg {
            Some(a) if !a.trim().is_empty() => Ok(a.to_owned()),
            _ => Err(format!("`{kind}:` needs {what} after the colon")),
        };
        match kind {
            "boot" if arg.is_none() => Ok(Check::Boot),
            "kunit" => Ok(Check::Kunit(arg.unwrap_or("*").to_owned())),
            "kselftest" => {
                let t = nonempty("a target (e.g. kselftest:size)")?;
                if !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
                {
                    return Err(format!("`{t}` is not a kselftest target name"));
                }
                Ok(Check::Kselftest(t))
            }
            "run" => Ok(Check::Run(nonempty("a command")?)),
            "script" => Ok(Check::Script(PathBuf::from(nonempty("a path")?))),
            _ => Err(format!(
                "`{s}` is not a check: say boot, kunit[:GLOB], kselftest:TARGET, run:CMD or script:PATH"
            )),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Boot => f.write_str("boot"),
            Check::Kunit(g) => write!(f, "kunit:{g}"),
            Check::Kselftest(t) => write!(f, "kselftest:{t}"),
            Check::Run(c) => write!(f, "run:{c}"),
            Check::Script(p) => write!(f, "script:{}", p.display()),
        }
    }
}

impl Check {
    /// The results database's kind and filter of this check's runs. A script's filter holds
    /// its content's digest: an edited script is a different check.
    pub fn recorded_as(&self) -> Result<(&'static str, String), Error> {
        Ok(match self {
            Check::Boot => ("boot", "boot".into()),
            Check::Kunit(g) => ("kunit", g.clone()),
            Check::Kselftest(t) => ("kselftest", t.clone()),
            Check::Run(c) => ("run", c.clone()),
            Check::Script(p) => {
                use sha2::Digest as _;
                let bytes = fs_err::read(p)?;
                let mut h = hex::encode(sha2::Sha256::digest(&bytes));
                h.truncate(12);
                ("script", format!("{}@{h}", p.display()))
            }
        })
    }

    /// Whether running the check records its own run (the test commands do).
    fn records_itself(&self) -> bool {
        matches!(self, Check::Kunit(_) | Check::Kselftest(_))
    }
}

/// A candidate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Good,
    Bad,
    /// Not decidable (it did not build, or the check said skip): passed over.
    Skip,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::Skip => "skip",
        }
    }

    /// A recorded run's verdict: bad when a case failed, crashed or timed out or the guest
    /// did not complete; skip when nothing passed; else good.
    pub fn of_run(run: &Run) -> Self {
        if run.counts.bad() > 0 || run.outcome != Outcome::Completed {
            Verdict::Bad
        } else if run.counts.pass == 0 {
            Verdict::Skip
        } else {
            Verdict::Good
        }
    }
}

/// How a candidate's verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// Compiled now, then checked.
    Compiled,
    /// Its identity was in the store (or the slot): nothing compiled; checked.
    Reused,
    /// Its identity had a run of this check in the results database.
    Recorded,
    /// A tested neighbour's build read none of the files changed in between.
    SameKernel,
    /// Its build failed now: skipped.
    BuildFailed,
    /// A build of its identity failed before: skipped.
    FailedBefore,
}

/// One candidate of the bisect log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub commit: String,
    pub subject: String,
    /// The build identity (`uname -r`); `null` when it was not needed (same kernel) or
    /// could not be computed.
    pub identity: Option<String>,
    pub how: How,
    /// With `same_kernel`: the tested commit whose kernel this one is.
    pub same_kernel_as: Option<String>,
    pub verdict: Verdict,
    /// Why: the check's words, the failed build's last line, the results run.
    pub reason: String,
    pub seconds: f64,
}

/// The first bad commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Culprit {
    pub commit: String,
    pub subject: String,
    /// Its identity (`null` when its configuration fails).
    pub identity: Option<String>,
    /// Whether it changes a file this config's build reads (`null`: no build of it or of
    /// its parent to tell by). `false` means the verdict moved while the kernel did not:
    /// a flaky check, or a wrong good or bad.
    pub changes_kernel: Option<bool>,
    /// The files it changes.
    pub files: Vec<String>,
}

/// `kforge bisect`: what it found and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub good: Vec<String>,
    pub bad: String,
    pub check: String,
    /// The first bad commit, when the skipped ones leave one.
    pub first_bad: Option<Culprit>,
    /// When skipped commits hide it: the commits one of which is the first bad (oldest
    /// first).
    pub first_bad_among: Vec<String>,
    /// Commits between good and bad (bad included).
    pub commits_in_range: usize,
    /// Candidates decided.
    pub candidates: usize,
    /// Builds that ran the compiler (failed ones included).
    pub compiles: usize,
    pub steps: Vec<Step>,
    pub seconds: f64,
}

/// What a bisect was asked: kept in the system dir so `kforge bisect resume` can go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invocation {
    /// The build inputs every candidate is built with (its `git_ref` set per candidate).
    pub request: KernelRequest,
    /// Full commit ids.
    pub good: Vec<String>,
    pub bad: String,
    pub check: String,
    /// Check every candidate again, whatever the database recorded.
    pub recheck: bool,
}

impl Invocation {
    /// Where the invocation of this worker's bisect is kept.
    pub fn path(system_dir: &Path, worker: u32) -> PathBuf {
        system_dir
            .join("bisect")
            .join(format!("worker-{worker}.json"))
    }

    pub fn save(&self, path: &Path) -> Result<(), Error> {
        fs_err::create_dir_all(path.parent().expect("has a parent"))?;
        let mut bytes = serde_json::to_vec_pretty(self).expect("serializes");
        bytes.push(b'\n');
        Ok(write_atomic(path, &bytes)?)
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = match fs_err::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(InvalidRequest::one(
                    "no bisect to resume on this worker: start one with `kforge bisect --good REF --bad REF --check CHECK`",
                )
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_str(&text).map_err(|e| {
            InvalidRequest::one(format!("{} is not a bisect: {e}", path.display())).into()
        })
    }
}

/// Resolves the good and bad refs to commits and checks they make a range: every good an
/// ancestor of the bad, none equal to it.
pub fn resolve_range(
    mirror: &Mirror,
    good: &[String],
    bad: &str,
) -> Result<(Vec<String>, String), Error> {
    let bad_commit = mirror.resolve(bad)?.commit;
    let mut goods = Vec::new();
    for g in good {
        let c = mirror.resolve(g)?.commit;
        if c == bad_commit {
            return Err(InvalidRequest::one(format!(
                "--good {g} and --bad {bad} are the same commit"
            ))
            .into());
        }
        if !is_ancestor(mirror, &c, &bad_commit)? {
            return Err(InvalidRequest::one(format!(
                "--good {g} is not an ancestor of --bad {bad}: bisect looks for the first bad commit after a good one"
            ))
            .into());
        }
        goods.push(c);
    }
    Ok((goods, bad_commit))
}

fn is_ancestor(mirror: &Mirror, a: &str, b: &str) -> Result<bool, Error> {
    let status = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&mirror.path)
        .args(["merge-base", "--is-ancestor", "--end-of-options", a, b])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    Ok(status.success())
}

/// The commits between the goods and `bad` (bad included), best split first.
fn bisect_all(mirror: &Mirror, bad: &str, goods: &[String]) -> Result<Vec<String>, Error> {
    let out = git(&mirror.path)
        .args(["rev-list", "--bisect-all", "--end-of-options", bad])
        .args(goods.iter().map(|g| format!("^{g}")))
        .output()?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn subject(mirror: &Mirror, commit: &str) -> Result<String, Error> {
    Ok(git(&mirror.path)
        .args([
            "show",
            "--no-patch",
            "--format=%s",
            "--end-of-options",
            commit,
        ])
        .output()?
        .trim()
        .to_owned())
}

/// The paths that differ between two commits, each with whether it is new in `b`.
fn changed(mirror: &Mirror, a: &str, b: &str) -> Result<Vec<(String, bool)>, Error> {
    let out = git(&mirror.path)
        .args([
            "diff",
            "--name-status",
            "--no-renames",
            "--end-of-options",
            a,
            b,
        ])
        .output()?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(status, path)| (path.to_owned(), status == "A"))
        .collect())
}

/// The files a build read, by identity: `SYSTEM_DIR/bisect/inputs/<release>`, one path of
/// the source tree per line.
pub mod inputs {
    use super::{BTreeSet, Error, Path, PathBuf, write_atomic};

    fn file(dir: &Path, release: &str) -> PathBuf {
        dir.join(release)
    }

    /// The build's inputs, when known.
    pub fn load(dir: &Path, release: &str) -> Option<BTreeSet<String>> {
        let text = fs_err::read_to_string(file(dir, release)).ok()?;
        Some(text.lines().map(str::to_owned).collect())
    }

    /// Reads the inputs of the build in `build_dir` (an `O=` directory inside the source
    /// tree) and keeps them, when that build is `release`'s (its `kernel.release` says so).
    /// Whether they were kept.
    pub fn save_from_build(dir: &Path, build_dir: &Path, release: &str) -> Result<bool, Error> {
        let built = fs_err::read_to_string(build_dir.join("include/config/kernel.release"))
            .unwrap_or_default();
        if built.trim() != release {
            return Ok(false);
        }
        let mut set = BTreeSet::new();
        collect(build_dir, &mut set)?;
        if let Ok(text) = fs_err::read_to_string(build_dir.join("include/config/auto.conf.cmd")) {
            // Kconfig files, relative to the source tree already.
            set.extend(cmd_paths(&text, ""));
        }
        fs_err::create_dir_all(dir)?;
        let mut text = String::new();
        for p in &set {
            text.push_str(p);
            text.push('\n');
        }
        write_atomic(&file(dir, release), text.as_bytes())?;
        Ok(true)
    }

    /// Every `.*.cmd` file under `dir`, its source and dependency paths.
    fn collect(dir: &Path, set: &mut BTreeSet<String>) -> Result<(), Error> {
        // (A walk of our own: a dozen lines, where a crate would add a dependency for it.)
        for entry in fs_err::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                collect(&entry.path(), set)?;
            } else if kind.is_file() && name.starts_with('.') && name.ends_with(".cmd") {
                let text = String::from_utf8_lossy(&fs_err::read(entry.path())?).into_owned();
                set.extend(cmd_paths(&text, "../"));
            }
        }
        Ok(())
    }

    /// The source-tree paths of a `.cmd` file's `source_*` and `deps_*` variables: words
    /// starting with `prefix` (the source tree seen from the build directory), without
    /// it; generated files and `$(wildcard ...)` config dependencies left out.
    pub fn cmd_paths<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
        let mut in_deps = false;
        text.lines().flat_map(move |line| {
            let start = line.starts_with("source_") || line.starts_with("deps_");
            if start {
                in_deps = true;
            } else if !line.starts_with([' ', '\t']) {
                in_deps = false;
            }
            let words: Vec<String> = if in_deps {
                let body = if start {
                    line.split_once(":=").map_or("", |(_, v)| v)
                } else {
                    line
                };
                if body.trim_start().starts_with("$(wildcard") {
                    Vec::new()
                } else {
                    body.split_whitespace()
                        .filter(|w| *w != "\\")
                        .filter_map(|w| w.strip_prefix(prefix))
                        .filter(|w| !w.is_empty() && !w.starts_with('$') && !w.starts_with('/'))
                        .map(str::to_owned)
                        .collect()
                }
            } else {
                Vec::new()
            };
            if !line.trim_end().ends_with('\\') {
                in_deps = false;
            }
            words
        })
    }

    /// Whether a change to `path` (`new`: the file is added) can change a build that read
    /// `read`: when it read the file; when the file is one no `.cmd` file names but the
    /// build runs or parses anyway (Makefiles, Kbuild and Kconfig files, scripts, tools,
    /// the initramfs source, localversion files, top-level files); when it is a new header,
    /// which can shadow one the build read on the include path.
    pub fn affects(path: &str, new: bool, read: &BTreeSet<String>) -> bool {
        let base = path.rsplit('/').next().unwrap_or(path);
        read.contains(path)
            || (new && base.ends_with(".h"))
            || ["Makefile", "Kbuild", "Kconfig", "localversion"]
                .iter()
                .any(|p| base.starts_with(p))
            || ["scripts/", "tools/", "usr/"]
                .iter()
                .any(|p| path.starts_with(p))
            || !path.contains('/')
    }
}

/// What builds and checks a candidate: the binary's commands.
pub trait Candidates {
    /// The identity `commit` builds to, nothing compiled; `Err(why)` when its
    /// configuration fails (it is skipped).
    fn identity(&mut self, commit: &str) -> Result<Result<String, String>, Error>;
    /// Builds `commit` (or answers it from the store): its manifest, or `Err(why)` when
    /// it does not build.
    fn build(&mut self, commit: &str) -> Result<Result<Manifest, String>, Error>;
    /// Runs the check on a built kernel: the verdict and why.
    fn check(&mut self, manifest: &Manifest) -> Result<(Verdict, String), Error>;
}

/// Where the driver keeps what it learns.
pub struct Places<'a> {
    pub mirror: &'a Mirror,
    /// `SYSTEM_DIR/bisect/inputs`.
    pub inputs: PathBuf,
    pub worker: u32,
}

/// Bisects: the report.
pub fn bisect(
    inv: &Invocation,
    check: &Check,
    places: &Places<'_>,
    candidates: &mut dyn Candidates,
    db: &mut Db,
    ui: &dyn Reporter,
) -> Result<Report, Error> {
    let start = Instant::now();
    let mirror = places.mirror;
    let (kind, filter) = check.recorded_as()?;
    let mut goods = inv.good.clone();
    let mut bad = inv.bad.clone();
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    let mut steps: Vec<Step> = Vec::new();
    let commits_in_range = bisect_all(mirror, &bad, &goods)?.len();
    ui.event(&Event::Info {
        step: "bisect",
        message: &format!(
            "{commits_in_range} commit{} between good and bad (the bad included), about {} to decide; check {check}",
            if commits_in_range == 1 { "" } else { "s" },
            usize::BITS - commits_in_range.leading_zeros() - 1
        ),
    });
    loop {
        let range = bisect_all(mirror, &bad, &goods)?;
        let Some(commit) = range
            .iter()
            .find(|c| **c != bad && !skipped.contains(*c))
            .cloned()
        else {
            break;
        };
        let t = Instant::now();
        let (mut step, built) = decide(
            &commit,
            (kind, &filter, inv.recheck),
            &goods,
            &bad,
            &steps,
            places,
            candidates,
            db,
        )?;
        if let Some(manifest) = built {
            let (v, why) =
                check_and_record(check, (kind, &filter), &manifest, candidates, db, places)?;
            step.verdict = v;
            step.reason = why;
        }
        step.seconds = (t.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        ui.event(&Event::Info {
            step: "bisect",
            message: &format!(
                "{} {}: {} ({}{}) {:.1} s — {}",
                &commit[..12],
                step.subject,
                step.verdict.as_str(),
                how_words(step.how),
                step.same_kernel_as
                    .as_deref()
                    .map(|c| format!(" as {}", &c[..12]))
                    .unwrap_or_default(),
                step.seconds,
                step.reason
            ),
        });
        match step.verdict {
            Verdict::Good => goods.push(commit),
            Verdict::Bad => bad = commit,
            Verdict::Skip => {
                skipped.insert(commit);
            }
        }
        steps.push(step);
    }
    let mut left = bisect_all(mirror, &bad, &goods)?;
    left.reverse();
    let (first_bad, first_bad_among) = if left.len() == 1 {
        (Some(culprit(&bad, &steps, places, candidates)?), Vec::new())
    } else {
        // Oldest first, as `git log --reverse` lists them.
        let ordered = git(&mirror.path)
            .args([
                "rev-list",
                "--reverse",
                "--topo-order",
                "--end-of-options",
                &bad,
            ])
            .args(goods.iter().map(|g| format!("^{g}")))
            .output()?;
        (None, ordered.lines().map(str::to_owned).collect())
    };
    let compiles = steps
        .iter()
        .filter(|s| matches!(s.how, How::Compiled | How::BuildFailed))
        .count();
    Ok(Report {
        good: inv.good.clone(),
        bad: inv.bad.clone(),
        check: check.to_string(),
        first_bad,
        first_bad_among,
        commits_in_range,
        candidates: steps.len(),
        compiles,
        steps,
        seconds: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}

fn how_words(how: How) -> &'static str {
    match how {
        How::Compiled => "compiled",
        How::Reused => "from the store",
        How::Recorded => "verdict recorded",
        How::SameKernel => "the same kernel",
        How::BuildFailed => "does not build",
        How::FailedBefore => "did not build before",
    }
}

/// Decides what can be decided without a check: the same kernel as a neighbour, a recorded
/// verdict or failure, a failed build. Otherwise the step (`compiled`, `reused`) with the
/// built kernel's manifest, to be checked.
#[allow(clippy::too_many_arguments)]
fn decide(
    commit: &str,
    (kind, filter, recheck): (&str, &str, bool),
    goods: &[String],
    bad: &str,
    steps: &[Step],
    places: &Places<'_>,
    candidates: &mut dyn Candidates,
    db: &mut Db,
) -> Result<(Step, Option<Manifest>), Error> {
    let mirror = places.mirror;
    let mut step = Step {
        commit: commit.to_owned(),
        subject: subject(mirror, commit)?,
        identity: None,
        how: How::Compiled,
        same_kernel_as: None,
        verdict: Verdict::Skip,
        reason: String::new(),
        seconds: 0.0,
    };
    if let Some((n, verdict)) = same_kernel(commit, goods, bad, steps, places)? {
        step.how = How::SameKernel;
        step.reason = format!(
            "the files changed since {} are not read by its build",
            &n[..12]
        );
        step.same_kernel_as = Some(n);
        step.verdict = verdict;
        return Ok((step, None));
    }
    let release = match candidates.identity(commit)? {
        Ok(r) => r,
        Err(why) => {
            step.how = How::BuildFailed;
            step.reason = why;
            return Ok((step, None));
        }
    };
    step.identity = Some(release.clone());
    if !recheck {
        let runs = db.runs(Some(&release))?;
        if let Some(r) = runs.iter().rfind(|r| r.kind == kind && r.filter == filter) {
            step.how = How::Recorded;
            step.verdict = Verdict::of_run(r);
            step.reason = format!("results run {}", r.id);
            return Ok((step, None));
        }
        if let Some(r) = runs.iter().rfind(|r| r.kind == "build") {
            step.how = How::FailedBefore;
            step.reason = format!(
                "results run {}: {}",
                r.id,
                r.outcome_detail.as_deref().unwrap_or("the build failed")
            );
            return Ok((step, None));
        }
    }
    match candidates.build(commit)? {
        Ok(m) => {
            step.how = if m.reused.is_none() {
                How::Compiled
            } else {
                How::Reused
            };
            inputs::save_from_build(&places.inputs, Path::new(&m.build_dir), &m.uts_release)?;
            step.identity = Some(m.uts_release.clone());
            return Ok((step, Some(m)));
        }
        Err(why) => {
            step.how = How::BuildFailed;
            let now = unix_now();
            db.record(
                &NewRun {
                    kind: "build",
                    identity: &release,
                    filter: "",
                    outcome: Outcome::Completed,
                    outcome_detail: Some(why.clone()),
                    started_unix: now,
                    seconds: 0.0,
                    host: crate::verdict::kunit::hostname(),
                    worker: places.worker,
                    console: why.as_bytes(),
                },
                &[CaseResult {
                    path: vec!["build".into()],
                    status: Status::Fail,
                    duration_ms: None,
                    diagnostics: vec![why.clone()],
                }],
            )?;
            step.reason = why;
        }
    }
    Ok((step, None))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Runs the check on a built kernel and records it when the check does not record itself.
fn check_and_record(
    check: &Check,
    (kind, filter): (&str, &str),
    manifest: &Manifest,
    candidates: &mut dyn Candidates,
    db: &mut Db,
    places: &Places<'_>,
) -> Result<(Verdict, String), Error> {
    let release = manifest.uts_release.as_str();
    let t = Instant::now();
    let (verdict, why) = candidates.check(manifest)?;
    if !check.records_itself() {
        let status = match verdict {
            Verdict::Good => Status::Pass,
            Verdict::Bad => Status::Fail,
            Verdict::Skip => Status::Skip,
        };
        db.record(
            &NewRun {
                kind,
                identity: release,
                filter,
                outcome: Outcome::Completed,
                outcome_detail: (verdict != Verdict::Good).then(|| why.clone()),
                started_unix: unix_now(),
                seconds: t.elapsed().as_secs_f64(),
                host: crate::verdict::kunit::hostname(),
                worker: places.worker,
                console: why.as_bytes(),
            },
            &[CaseResult {
                path: vec![check.to_string()],
                status,
                duration_ms: u64::try_from(t.elapsed().as_millis()).ok(),
                diagnostics: vec![why.clone()],
            }],
        )?;
    }
    Ok((verdict, why))
}

/// A tested neighbour whose build read none of the files changed between it and `commit`:
/// the nearest good ancestors first, then the bad above.
fn same_kernel(
    commit: &str,
    goods: &[String],
    bad: &str,
    steps: &[Step],
    places: &Places<'_>,
) -> Result<Option<(String, Verdict)>, Error> {
    let tested = |c: &str| {
        steps
            .iter()
            .find(|s| s.commit == c && s.verdict != Verdict::Skip && s.identity.is_some())
    };
    // The goods newest first (the last pushed is the nearest), then the bad.
    let neighbours = goods.iter().rev().map(String::as_str).chain([bad]);
    for n in neighbours {
        let Some(s) = tested(n) else { continue };
        let Some(read) = inputs::load(&places.inputs, s.identity.as_deref().unwrap_or_default())
        else {
            continue;
        };
        let (a, b) = if n == bad { (commit, n) } else { (n, commit) };
        if n != bad && !is_ancestor(places.mirror, n, commit)? {
            continue;
        }
        let files = changed(places.mirror, a, b)?;
        if !files.iter().any(|(f, new)| inputs::affects(f, *new, &read)) {
            return Ok(Some((n.to_owned(), s.verdict)));
        }
    }
    Ok(None)
}

/// The first bad commit, and whether it changes a file its build (or its parent's) read.
fn culprit(
    commit: &str,
    steps: &[Step],
    places: &Places<'_>,
    candidates: &mut dyn Candidates,
) -> Result<Culprit, Error> {
    let mirror = places.mirror;
    let parent = git(&mirror.path)
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{commit}^"))
        .output()?
        .trim()
        .to_owned();
    let files = changed(mirror, &parent, commit)?;
    // Its identity and its parent's: from this bisect's log, else computed (nothing built).
    let mut identity_of = |c: &str| -> Result<Option<String>, Error> {
        match steps
            .iter()
            .find_map(|s| (s.commit == c).then(|| s.identity.clone())?)
        {
            Some(i) => Ok(Some(i)),
            None => Ok(candidates.identity(c)?.ok()),
        }
    };
    let identity = identity_of(commit)?;
    let mut read = identity
        .as_deref()
        .and_then(|r| inputs::load(&places.inputs, r));
    if read.is_none()
        && let Some(p) = identity_of(&parent)?
    {
        read = inputs::load(&places.inputs, &p);
    }
    Ok(Culprit {
        commit: commit.to_owned(),
        subject: subject(mirror, commit)?,
        identity,
        changes_kernel: read
            .map(|read| files.iter().any(|(f, new)| inputs::affects(f, *new, &read))),
        files: files.into_iter().map(|(f, _)| f).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::{
        BTreeSet, Candidates, Check, Error, Invocation, Manifest, Mirror, Places, Verdict, bisect,
        inputs,
    };
    use crate::verdict::db::Db;

    /// A linear history of `n` commits on a root in a new bare repository: the commits,
    /// root first.
    fn history(dir: &std::path::Path, n: usize) -> (Mirror, Vec<String>) {
        let repo = dir.join("linux.git");
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(&repo)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@t")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@t")
                .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
                .env("GIT_COMMITTER_DATE", "@1700000000 +0000")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        git(&["init", "--quiet", "--bare"]);
        let mut commits: Vec<String> = Vec::new();
        let git_in = |args: &[&str], input: String| {
            let mut c = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(&repo)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut c.stdin.take().unwrap(), input.as_bytes()).unwrap();
            String::from_utf8(c.wait_with_output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_owned()
        };
        for i in 0..=n {
            let blob = git_in(&["hash-object", "-w", "--stdin"], format!("{i}\n"));
            let tree = git_in(&["mktree"], format!("100644 blob {blob}\tversion.c\n"));
            let subject = format!("step {i}");
            let mut args = vec!["commit-tree", tree.as_str(), "-m", &subject];
            let parent;
            if let Some(p) = commits.last() {
                parent = p.clone();
                args.extend(["-p", &parent]);
            }
            commits.push(git(&args));
        }
        (Mirror { path: repo }, commits)
    }

    /// Candidates by their position in the history: bad from `bad_from`, `broken` ones do
    /// not build; counts what it was asked to do.
    struct Fake {
        commits: Vec<String>,
        bad_from: usize,
        broken: Vec<usize>,
        builds: usize,
        checks: usize,
    }

    impl Fake {
        fn index(&self, commit: &str) -> usize {
            self.commits.iter().position(|c| c == commit).unwrap()
        }
    }

    impl Candidates for Fake {
        fn identity(&mut self, commit: &str) -> Result<Result<String, String>, Error> {
            Ok(Ok(format!("6.12.0-{}-000000000000", &commit[..12])))
        }
        fn build(&mut self, commit: &str) -> Result<Result<Manifest, String>, Error> {
            self.builds += 1;
            if self.broken.contains(&self.index(commit)) {
                return Ok(Err("compile failed: init/version.c:1:1: error: x".into()));
            }
            let mut m: serde_json::Value = serde_json::from_str(MANIFEST).unwrap();
            m["commit"] = commit.into();
            m["uts_release"] = format!("6.12.0-{}-000000000000", &commit[..12]).into();
            Ok(Ok(serde_json::from_value(m).unwrap()))
        }
        fn check(&mut self, m: &Manifest) -> Result<(Verdict, String), Error> {
            self.checks += 1;
            Ok(if self.index(&m.commit) >= self.bad_from {
                (Verdict::Bad, "bad".into())
            } else {
                (Verdict::Good, "good".into())
            })
        }
    }

    const MANIFEST: &str = r##"{
        "schema_version": 2, "commit": "", "uts_release": "", "bzImage": null,
        "build_dir": "/nonexistent", "config": "/nonexistent/.config",
        "config_method": "preset", "destdir": "/nonexistent", "linux_compiler": "gcc",
        "uts_version": "#1", "uts_machine": "x86_64", "linux_compile_by": "kforge",
        "linux_compile_host": "kforge", "git_ref": "", "ref_kind": "commit",
        "version": "6.12.0", "label": "x", "digest": "000000000000", "compiler": "gcc",
        "modules_dir": null, "worker_index": 0, "series": null,
        "identity": {"scheme": "kforge-identity/1", "config_sha256": "",
            "toolchain": {"compiler": "gcc", "cc": "", "linker": "", "make": "", "env": null},
            "make_flags": [], "tree": ""},
        "reused": null, "store_entry": null, "store_devel": null
    }"##;

    /// A bisect of the whole history (its root good, its tip bad) with a boot check.
    fn invocation(commits: &[String]) -> Invocation {
        Invocation {
            request: crate::kernel::request::KernelRequest::default(),
            good: vec![commits[0].clone()],
            bad: commits[commits.len() - 1].clone(),
            check: "boot".into(),
            recheck: false,
        }
    }

    fn places<'a>(mirror: &'a Mirror, dir: &std::path::Path) -> Places<'a> {
        Places {
            mirror,
            inputs: dir.join("inputs"),
            worker: 0,
        }
    }

    #[test]
    fn bisect_finds_the_first_bad_and_answers_again_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (mirror, commits) = history(dir.path(), 16);
        let mut db = Db::open(dir.path()).unwrap();
        let inv = invocation(&commits);
        let places = places(&mirror, dir.path());
        let mut fake = Fake {
            commits: commits.clone(),
            bad_from: 11,
            broken: Vec::new(),
            builds: 0,
            checks: 0,
        };
        let silent = crate::flow::Silent;
        let r = bisect(&inv, &Check::Boot, &places, &mut fake, &mut db, &silent).unwrap();
        assert_eq!(
            r.first_bad.as_ref().map(|c| c.commit.as_str()),
            Some(commits[11].as_str())
        );
        assert_eq!(
            r.first_bad.as_ref().map(|c| c.subject.as_str()),
            Some("step 11")
        );
        assert_eq!((r.commits_in_range, r.candidates, r.compiles), (16, 4, 4));
        assert_eq!((fake.builds, fake.checks), (4, 4));
        // Again: every verdict from the database, nothing built or checked.
        let again = bisect(&inv, &Check::Boot, &places, &mut fake, &mut db, &silent).unwrap();
        assert_eq!(again.first_bad, r.first_bad);
        assert!(again.steps.iter().all(|s| s.how == super::How::Recorded));
        assert_eq!((fake.builds, fake.checks, again.compiles), (4, 4, 0));
    }

    #[test]
    fn skipped_commits_that_hide_the_first_bad_are_all_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mirror, commits) = history(dir.path(), 8);
        let mut db = Db::open(dir.path()).unwrap();
        let inv = invocation(&commits);
        let places = places(&mirror, dir.path());
        // Bad from 5; 4 and 5 do not build: the first bad is 4, 5 or 6.
        let mut fake = Fake {
            commits: commits.clone(),
            bad_from: 5,
            broken: vec![4, 5],
            builds: 0,
            checks: 0,
        };
        let r = bisect(
            &inv,
            &Check::Boot,
            &places,
            &mut fake,
            &mut db,
            &crate::flow::Silent,
        )
        .unwrap();
        assert_eq!(r.first_bad, None);
        assert_eq!(r.first_bad_among, commits[4..=6].to_vec());
        let skipped: Vec<&str> = r
            .steps
            .iter()
            .filter(|s| s.verdict == Verdict::Skip)
            .map(|s| s.subject.as_str())
            .collect();
        assert_eq!(skipped.len(), 2, "{:?}", r.steps);
        assert!(skipped.contains(&"step 4") && skipped.contains(&"step 5"));
        assert!(
            r.steps
                .iter()
                .filter(|s| s.verdict == Verdict::Skip)
                .all(|s| s.how == super::How::BuildFailed && s.reason.contains("error: x"))
        );
    }

    #[test]
    fn checks_parse_and_print_back() {
        for (text, check) in [
            ("boot", Check::Boot),
            ("kunit", Check::Kunit("*".into())),
            ("kunit:list*", Check::Kunit("list*".into())),
            ("kselftest:size", Check::Kselftest("size".into())),
            (
                "run:grep -q x /proc/version",
                Check::Run("grep -q x /proc/version".into()),
            ),
            ("script:./check.sh", Check::Script("./check.sh".into())),
        ] {
            assert_eq!(text.parse::<Check>().unwrap(), check, "{text}");
        }
        assert_eq!("kunit".parse::<Check>().unwrap().to_string(), "kunit:*");
        for bad in [
            "",
            "boot:x",
            "run:",
            "run: ",
            "script:",
            "kselftest:",
            "kselftest:a;b",
            "make",
        ] {
            assert!(bad.parse::<Check>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cmd_files_give_the_source_paths_a_build_read() {
        let cmd = "savedcmd_init/version.o := gcc -c ../init/version.c\n\
                   \n\
                   source_init/version.o := ../init/version.c\n\
                   \n\
                   deps_init/version.o := \\\n  \
                   ../include/linux/compiler-version.h \\\n    \
                   $(wildcard include/config/CC_VERSION_TEXT) \\\n  \
                   ../include/linux/kconfig.h \\\n  \
                   include/generated/utsrelease.h \\\n\
                   \n\
                   init/version.o: $(deps_init/version.o)\n\
                   \n\
                   $(deps_init/version.o):\n";
        let got: BTreeSet<String> = inputs::cmd_paths(cmd, "../").collect();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                "include/linux/compiler-version.h",
                "include/linux/kconfig.h",
                "init/version.c"
            ]
        );
        let conf = "deps_config := \\\n\tKconfig \\\n\tinit/Kconfig \\\n\tarch/x86/Kconfig\n\n$(autoconfig): $(deps_config)\n";
        let got: Vec<String> = inputs::cmd_paths(conf, "").collect();
        assert_eq!(got, ["Kconfig", "init/Kconfig", "arch/x86/Kconfig"]);
    }

    #[test]
    fn a_change_affects_a_build_when_it_read_the_file_or_runs_it() {
        let read: BTreeSet<String> = ["init/version.c", "include/linux/kconfig.h"]
            .map(str::to_owned)
            .into();
        for (path, affects) in [
            ("init/version.c", true),
            ("include/linux/kconfig.h", true),
            ("Documentation/process/changes.rst", false),
            ("drivers/gpu/drm/drm_drv.c", false),
            ("drivers/gpu/drm/Makefile", true),
            ("arch/x86/Kconfig.debug", true),
            ("lib/Kbuild", true),
            ("scripts/setlocalversion", true),
            ("tools/objtool/check.c", true),
            ("Makefile", true),
            ("localversion-next", true),
            ("MAINTAINERS", true),
        ] {
            assert_eq!(inputs::affects(path, false, &read), affects, "{path}");
        }
        // A new header can shadow one the build read; a new C file is built only when a
        // Makefile names it (which is a change of its own).
        assert!(inputs::affects(
            "arch/x86/include/asm/kconfig.h",
            true,
            &read
        ));
        assert!(!inputs::affects("drivers/misc/new.c", true, &read));
    }
}
