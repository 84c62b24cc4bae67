//! Verdicts: what a kernel's tests say about a build. Tests run in a guest (KUnit suites from
//! the modules share; kselftest targets built against the identity), their KTAP is read from
//! the console or the command's output, and every case lands in the results database keyed by
//! the build identity, beside the run's raw console log.
//!
//! This module owns the results' types, the KTAP reader, the runners and the database; the
//! guest layer boots, the store keeps kselftest layers.

pub mod db;
pub mod kselftest;
pub mod ktap;
pub mod kunit;

use serde::{Deserialize, Serialize};

/// What became of one test.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    Skip,
    /// Under way when the guest kernel crashed (its oops or panic text is the diagnostics).
    Crash,
    /// Under way when its time ran out.
    Timeout,
    /// Planned, but never reached (after a crash or a timeout).
    NotRun,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pass,
        Status::Fail,
        Status::Skip,
        Status::Crash,
        Status::Timeout,
        Status::NotRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Crash => "crash",
            Status::Timeout => "timeout",
            Status::NotRun => "not_run",
        }
    }

    /// A result that makes a build bad.
    pub fn is_bad(self) -> bool {
        matches!(self, Status::Fail | Status::Crash | Status::Timeout)
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a test status"))
    }
}

/// One test's result: its path (suite, case, parameter ...), status, duration and the lines
/// the log held for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseResult {
    pub path: Vec<String>,
    pub status: Status,
    /// Milliseconds between its start (the previous result at its level) and its result,
    /// by the kernel's clock when the console carries it, else by the host's.
    pub duration_ms: Option<u64>,
    pub diagnostics: Vec<String>,
}

/// How a test run's guest ended, as the run is recorded: its outcome, why it did not
/// complete, and the status (with the reason) the test under way gets.
pub(crate) struct Ending {
    pub outcome: db::Outcome,
    pub detail: Option<String>,
    pub end: Option<(Status, String)>,
}

/// Reads a guest run's result for a test run: a command that ended (with its status) is a
/// completed run; a panic, a dead guest or a timeout (`stopped`: the runner's own reason)
/// are the run's outcome, not kforge's failure. Any other error is.
pub(crate) fn ending(
    ran: Result<crate::guest::run::RunOutcome, crate::error::Error>,
    stopped: Option<String>,
    what_exited: &str,
    stderr: &[u8],
) -> Result<Ending, crate::error::Error> {
    use crate::error::{Error, GuestError};
    use db::Outcome;
    let ended = |outcome, why: String, status| Ending {
        outcome,
        detail: Some(why.clone()),
        end: Some((status, why)),
    };
    Ok(match ran {
        Ok(r) if r.status == 0 => Ending {
            outcome: Outcome::Completed,
            detail: None,
            end: None,
        },
        Ok(r) => Ending {
            outcome: Outcome::Completed,
            detail: Some(
                format!(
                    "{what_exited} exited {}: {}",
                    r.status,
                    String::from_utf8_lossy(stderr).trim()
                )
                .trim_end_matches([' ', ':'])
                .to_owned(),
            ),
            end: None,
        },
        Err(Error::Guest(GuestError::Panicked { text, .. })) => ended(
            Outcome::Crashed,
            format!("the guest kernel panicked: {text}"),
            Status::Crash,
        ),
        Err(Error::Guest(GuestError::Died { why, .. })) => {
            ended(Outcome::Crashed, why, Status::Crash)
        }
        Err(Error::Guest(GuestError::TimedOut { after, .. })) => ended(
            Outcome::TimedOut,
            stopped
                .unwrap_or_else(|| format!("the run did not finish within {} s", after.as_secs())),
            Status::Timeout,
        ),
        Err(e) => return Err(e),
    })
}
