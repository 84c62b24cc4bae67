//! The results database: one SQLite file, `SYSTEM_DIR/results/results.sqlite`, with every
//! test run's cases keyed by the build identity, and each run's raw console log beside it
//! (`SYSTEM_DIR/results/consoles/<run>.log`). A run is written in one transaction after its
//! log is on disk, so a reader sees a whole run or none; the schema is migrated forward from
//! its first version by `PRAGMA user_version`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use super::{CaseResult, Status};
pub use crate::error::DbError;
use crate::fsutil::write_atomic;

/// The schema, one migration per version; a database at version N runs those after N.
const MIGRATIONS: &[&str] = &[
    // 1: runs and their results.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        identity TEXT NOT NULL,
        filter TEXT NOT NULL,
        outcome TEXT NOT NULL,
        outcome_detail TEXT,
        started_unix INTEGER NOT NULL,
        seconds REAL NOT NULL,
        host TEXT NOT NULL,
        worker INTEGER NOT NULL,
        kforge_version TEXT NOT NULL,
        console_log TEXT NOT NULL
    );
    CREATE INDEX runs_by_identity ON runs(identity, kind, id);
    CREATE TABLE results (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        ord INTEGER NOT NULL,
        path TEXT NOT NULL,
        status TEXT NOT NULL,
        duration_ms INTEGER,
        diagnostics TEXT NOT NULL,
        PRIMARY KEY (run_id, ord)
    );",
];

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The tests ran to their end (whatever they said).
    Completed,
    /// The guest kernel crashed (panic, or the guest died) part-way.
    Crashed,
    /// A suite, or the whole run, ran out of time.
    TimedOut,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Crashed => "crashed",
            Outcome::TimedOut => "timed_out",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "crashed" => Outcome::Crashed,
            "timed_out" => Outcome::TimedOut,
            _ => Outcome::Completed,
        }
    }
}

/// A run, as it is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub id: i64,
    /// `kunit` or `kselftest`.
    pub kind: String,
    /// The build identity tested (`uname -r`).
    pub identity: String,
    /// What was selected: the suite glob, or the kselftest targets.
    pub filter: String,
    pub outcome: Outcome,
    /// The panic, the timeout or the guest's end, when the run did not complete.
    pub outcome_detail: Option<String>,
    pub started_unix: i64,
    pub seconds: f64,
    pub host: String,
    pub worker: u32,
    pub kforge_version: String,
    /// The guest's console as it came, beside the database.
    pub console_log: String,
    /// How many results of each status.
    pub counts: Counts,
}

/// Results by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub pass: u32,
    pub fail: u32,
    pub skip: u32,
    pub crash: u32,
    pub timeout: u32,
    pub not_run: u32,
}

impl Counts {
    pub fn of<'a>(statuses: impl IntoIterator<Item = &'a Status>) -> Self {
        let mut c = Counts::default();
        for s in statuses {
            *match s {
                Status::Pass => &mut c.pass,
                Status::Fail => &mut c.fail,
                Status::Skip => &mut c.skip,
                Status::Crash => &mut c.crash,
                Status::Timeout => &mut c.timeout,
                Status::NotRun => &mut c.not_run,
            } += 1;
        }
        c
    }
    /// Failed, crashed or timed out.
    pub fn bad(&self) -> u32 {
        self.fail + self.crash + self.timeout
    }
}

/// `kforge results ls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    /// Oldest first.
    pub runs: Vec<Run>,
}

/// What a runner hands over to be recorded.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub kind: &'a str,
    pub identity: &'a str,
    pub filter: &'a str,
    pub outcome: Outcome,
    pub outcome_detail: Option<String>,
    pub started_unix: i64,
    pub seconds: f64,
    pub host: String,
    pub worker: u32,
    pub console: &'a [u8],
}

/// A run with its results: `kforge results show`, and what a test command prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shown {
    pub run: Run,
    pub results: Vec<CaseResult>,
}

/// One test whose status differs between two runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub path: Vec<String>,
    /// Its status in A (`null`: not there).
    pub a: Option<Status>,
    pub b: Option<Status>,
}

/// `kforge results diff A B`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Diff {
    pub a: Run,
    pub b: Run,
    /// Good (pass, skip) or absent in A, bad (fail, crash, timeout) in B; absent-in-A ones
    /// are in `new` too.
    pub regressions: Vec<Change>,
    /// Bad in A, good in B.
    pub fixes: Vec<Change>,
    /// In B only.
    pub new: Vec<Change>,
    /// In A only.
    pub gone: Vec<Change>,
    /// Any other change of status (pass to skip, a case not run, ...).
    pub changed: Vec<Change>,
    /// How many tests kept their status.
    pub unchanged: usize,
}

/// Compares two runs' results by test path.
pub fn diff(a: Shown, b: Shown) -> Diff {
    use std::collections::BTreeMap;
    let index = |s: &Shown| -> BTreeMap<Vec<String>, Status> {
        s.results
            .iter()
            .map(|r| (r.path.clone(), r.status))
            .collect()
    };
    let (ia, ib) = (index(&a), index(&b));
    let mut d = Diff {
        a: a.run,
        b: b.run,
        regressions: Vec::new(),
        fixes: Vec::new(),
        new: Vec::new(),
        gone: Vec::new(),
        changed: Vec::new(),
        unchanged: 0,
    };
    for (path, &sb) in &ib {
        let sa = ia.get(path).copied();
        let change = Change {
            path: path.clone(),
            a: sa,
            b: Some(sb),
        };
        match sa {
            None => {
                if sb.is_bad() {
                    d.regressions.push(change.clone());
                }
                d.new.push(change);
            }
            Some(sa) if sa == sb => d.unchanged += 1,
            Some(sa) if !sa.is_bad() && sb.is_bad() && sa != Status::NotRun => {
                d.regressions.push(change);
            }
            Some(sa) if sa.is_bad() && !sb.is_bad() && sb != Status::NotRun => {
                d.fixes.push(change);
            }
            Some(_) => d.changed.push(change),
        }
    }
    for (path, &sa) in &ia {
        if !ib.contains_key(path) {
            d.gone.push(Change {
                path: path.clone(),
                a: Some(sa),
                b: None,
            });
        }
    }
    d
}

/// The results database of a system dir.
pub struct Db {
    conn: Connection,
    path: PathBuf,
    consoles: PathBuf,
}

impl Db {
    /// Opens (creating, migrating) `SYSTEM_DIR/results/results.sqlite`.
    pub fn open(system_dir: &Path) -> Result<Self, DbError> {
        let dir = system_dir.join("results");
        let consoles = dir.join("consoles");
        fs_err::create_dir_all(&consoles)?;
        let path = dir.join("results.sqlite");
        let sql = |source| DbError::Sql {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sql)?;
        // Several kforge processes (slots, engines) write here at once.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        let known = MIGRATIONS.len();
        if usize::try_from(version).unwrap_or(usize::MAX) > known {
            return Err(DbError::Newer {
                path,
                found: version,
                known,
            });
        }
        let tx = conn.transaction().map_err(sql)?;
        for (i, m) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            tx.execute_batch(m).map_err(sql)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(i + 1).unwrap_or(i64::MAX),
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(Self {
            conn,
            path,
            consoles,
        })
    }

    fn sql(&self, source: rusqlite::Error) -> DbError {
        DbError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Records a run: its console log first (atomically), then the run and its results in one
    /// transaction. Returns the run as recorded.
    pub fn record(&mut self, run: &NewRun<'_>, results: &[CaseResult]) -> Result<Run, DbError> {
        // Named before the run has an id: by time and process, unique on this host.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let log = self
            .consoles
            .join(format!("{}-{nanos}-{}.log", run.kind, std::process::id()));
        write_atomic(&log, run.console)?;
        let log_text = log.display().to_string();
        let path = self.path.clone();
        let sql = |source| DbError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute(
            "INSERT INTO runs (kind, identity, filter, outcome, outcome_detail, started_unix,
                seconds, host, worker, kforge_version, console_log)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                run.kind,
                run.identity,
                run.filter,
                run.outcome.as_str(),
                run.outcome_detail,
                run.started_unix,
                run.seconds,
                run.host,
                run.worker,
                env!("CARGO_PKG_VERSION"),
                log_text,
            ],
        )
        .map_err(sql)?;
        let id = tx.last_insert_rowid();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO results (run_id, ord, path, status, duration_ms, diagnostics)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for (i, r) in results.iter().enumerate() {
                insert
                    .execute(params![
                        id,
                        i64::try_from(i).unwrap_or(i64::MAX),
                        serde_json::to_string(&r.path).expect("a path serializes"),
                        r.status.as_str(),
                        r.duration_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
                        r.diagnostics.join("\n"),
                    ])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)?;
        self.run(id)
    }

    fn run(&self, id: i64) -> Result<Run, DbError> {
        self.runs_where("WHERE id = ?1", params![id])?
            .pop()
            .ok_or_else(|| DbError::NoRun(id.to_string()))
    }

    fn runs_where(&self, clause: &str, args: impl rusqlite::Params) -> Result<Vec<Run>, DbError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, kind, identity, filter, outcome, outcome_detail, started_unix, seconds,
                    host, worker, kforge_version, console_log,
                    (SELECT group_concat(status, ',') FROM results WHERE run_id = runs.id)
                 FROM runs {clause} ORDER BY id"
            ))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(args, |r| {
                let statuses: Option<String> = r.get(12)?;
                let statuses: Vec<Status> = statuses
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect();
                Ok(Run {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    identity: r.get(2)?,
                    filter: r.get(3)?,
                    outcome: Outcome::parse(&r.get::<_, String>(4)?),
                    outcome_detail: r.get(5)?,
                    started_unix: r.get(6)?,
                    seconds: r.get(7)?,
                    host: r.get(8)?,
                    worker: r.get(9)?,
                    kforge_version: r.get(10)?,
                    console_log: r.get(11)?,
                    counts: Counts::of(&statuses),
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Every run, or an identity's, oldest first.
    pub fn runs(&self, identity: Option<&str>) -> Result<Vec<Run>, DbError> {
        match identity {
            Some(i) => self.runs_where("WHERE identity = ?1", params![i]),
            None => self.runs_where("", params![]),
        }
    }

    /// A run by its id, or the latest run of an identity (`kernel-` prefix allowed), of
    /// `kind` when given.
    pub fn find(&self, what: &str, kind: Option<&str>) -> Result<Shown, DbError> {
        let id = if let Ok(id) = what.parse::<i64>() {
            Some(id)
        } else {
            let identity = what.strip_prefix("kernel-").unwrap_or(what);
            self.conn
                .query_row(
                    "SELECT max(id) FROM runs WHERE identity = ?1 AND (?2 IS NULL OR kind = ?2)",
                    params![identity, kind],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()
                .map_err(|e| self.sql(e))?
                .flatten()
        };
        let id = id.ok_or_else(|| DbError::NoRun(what.to_owned()))?;
        let run = self.run(id)?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, status, duration_ms, diagnostics FROM results
                 WHERE run_id = ?1 ORDER BY ord",
            )
            .map_err(|e| self.sql(e))?;
        let results = stmt
            .query_map(params![id], |r| {
                let path: String = r.get(0)?;
                let status: String = r.get(1)?;
                let diagnostics: String = r.get(3)?;
                Ok(CaseResult {
                    path: serde_json::from_str(&path).unwrap_or_else(|_| vec![path]),
                    status: status.parse().unwrap_or(Status::Fail),
                    duration_ms: r
                        .get::<_, Option<i64>>(2)?
                        .and_then(|d| u64::try_from(d).ok()),
                    diagnostics: if diagnostics.is_empty() {
                        Vec::new()
                    } else {
                        diagnostics.lines().map(str::to_owned).collect()
                    },
                })
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(Shown { run, results })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(path: &[&str], status: Status) -> CaseResult {
        CaseResult {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            status,
            duration_ms: Some(3),
            diagnostics: vec!["# a line".into(), "another".into()],
        }
    }

    fn new_run<'a>(identity: &'a str, console: &'a [u8]) -> NewRun<'a> {
        NewRun {
            kind: "kunit",
            identity,
            filter: "*",
            outcome: Outcome::Completed,
            outcome_detail: None,
            started_unix: 1_700_000_000,
            seconds: 1.5,
            host: "h".into(),
            worker: 0,
            console,
        }
    }

    #[test]
    fn runs_are_recorded_whole_and_compared_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        let a = db
            .record(
                &new_run("6.12.118-a-000000000001", b"console A\n"),
                &[
                    case(&["list", "init"], Status::Pass),
                    case(&["list", "add"], Status::Pass),
                    case(&["list", "del"], Status::Fail),
                    case(&["list", "old"], Status::Pass),
                    case(&["list", "skipped"], Status::Skip),
                ],
            )
            .unwrap();
        assert_eq!(a.counts.pass, 3);
        assert_eq!(
            std::fs::read(&a.console_log).unwrap(),
            b"console A\n",
            "the console log is beside the database"
        );
        let b = db
            .record(
                &new_run("6.12.118-b-000000000002", b"console B\n"),
                &[
                    case(&["list", "init"], Status::Pass),
                    case(&["list", "add"], Status::Fail),
                    case(&["list", "del"], Status::Pass),
                    case(&["list", "skipped"], Status::NotRun),
                    case(&["list", "brand new"], Status::Crash),
                ],
            )
            .unwrap();
        // Reopened (as another process would): the same runs, migrations not run twice.
        drop(db);
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.runs(None).unwrap(), [a.clone(), b.clone()]);
        assert_eq!(
            db.runs(Some(&b.identity)).unwrap(),
            std::slice::from_ref(&b)
        );
        let shown_a = db.find(&a.id.to_string(), None).unwrap();
        assert_eq!(shown_a.results[2], case(&["list", "del"], Status::Fail));
        let shown_b = db
            .find("kernel-6.12.118-b-000000000002", Some("kunit"))
            .unwrap();
        assert_eq!(shown_b.run, b);
        let d = diff(shown_a, shown_b);
        let paths = |v: &[Change]| v.iter().map(|c| c.path.join(".")).collect::<Vec<_>>();
        assert_eq!(paths(&d.regressions), ["list.add", "list.brand new"]);
        assert_eq!(paths(&d.fixes), ["list.del"]);
        assert_eq!(paths(&d.new), ["list.brand new"]);
        assert_eq!(paths(&d.gone), ["list.old"]);
        assert_eq!(paths(&d.changed), ["list.skipped"]);
        assert_eq!(d.unchanged, 1);
        assert!(matches!(db.find("999", None), Err(DbError::NoRun(_))));
        assert!(matches!(db.find("nope", None), Err(DbError::NoRun(_))));
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Db::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("results/results.sqlite")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Db::open(dir.path()),
            Err(DbError::Newer { found: 99, .. })
        ));
    }
}
