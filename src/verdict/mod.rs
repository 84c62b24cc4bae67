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
