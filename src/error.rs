//! kforge's error type, classified so the binary can exit with a meaningful code:
//! 2 for bad input (nothing was touched), 1 for a build that failed, 3 for the machine
//! (a missing tool, I/O), 4 for a busy slot.

use std::path::PathBuf;

use crate::library::LibraryError;
use crate::process::RunError;
use crate::series::SeriesError;
use crate::slot::mirror::MirrorError;
use crate::slot::worktree::SlotError;
use crate::store::StoreError;
use crate::store::name::EntryName;

/// A request that failed its checks; each line is one problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid request:\n  - {}", .0.join("\n  - "))]
pub struct InvalidRequest(pub Vec<String>);

impl InvalidRequest {
    /// A request with one problem.
    pub fn one(problem: impl std::fmt::Display) -> Self {
        Self(vec![problem.to_string()])
    }
}

/// What the flow lifecycle (`flow`) refuses: a resume, a step or a step result that does not fit the
/// flow or the slot's record. Nothing has been touched when one is returned. It lives here,
/// not in `flow`, because `flow`'s steps return [`Error`] (a module below both would do too).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{}: unreadable run record: {source}", .path.display())]
    UnreadableRecord {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("nothing to resume: {0}")]
    NothingToResume(String),
    #[error("{}: the recorded results do not lead up to step {step}; build again instead", .path.display())]
    RecordDoesNotLead {
        path: std::path::PathBuf,
        step: String,
    },
    #[error("the slot's run record changed while waiting for the slot; run resume again")]
    RecordChanged,
    #[error("unknown step `{name}`; the steps are: {known}")]
    UnknownStep { name: String, known: String },
    /// An engine's alias of a step that does not fit the request (a configure branch for
    /// another config method).
    #[error("{0}")]
    WrongBranch(String),
    #[error("step {step} needs the results of the steps before it; missing: {}", .missing.join(", "))]
    MissingResults { step: String, missing: Vec<String> },
    #[error("the result of step {step} sets `{field}`, which this flow does not know")]
    UnknownField { step: String, field: String },
    #[error("a step result does not fit this flow: {0}")]
    BadState(#[source] serde_json::Error),
    #[error("step input: {0}")]
    BadStepInput(#[source] serde_json::Error),
}

/// What the guest layer (`guest`: boot, vm) refuses or runs into. Here rather than in
/// `guest` for the reason [`FlowError`] is.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// A bad `--init`, `--rootfs`, `--ready`, guest name or manifest: nothing was started.
    #[error("{0}")]
    Refused(String),
    #[error("no guest `{0}`: define it with kforge vm define {0}")]
    NoGuest(String),
    #[error("{}: {source}", .path.display())]
    BadDefinition {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    /// A program the guest needs is not on this host (exit 3, as for any missing tool).
    #[error("{0} was not found: install it ({1})")]
    Missing(&'static str, &'static str),
    #[error("virtiofsd exited ({status}) before serving {}: {tail}", .dir.display())]
    VirtiofsdExited {
        status: String,
        dir: std::path::PathBuf,
        tail: String,
    },
    #[error("virtiofsd did not serve {} within 10 s", .0.display())]
    VirtiofsdSilent(std::path::PathBuf),
    /// `kforge run`: the guest kernel panicked before the command reported its status.
    #[error("the guest kernel panicked: {text}\n--- guest console (last {} lines) ---\n{}", .console_tail.len(), .console_tail.join("\n"))]
    Panicked {
        text: String,
        console_tail: Vec<String>,
    },
    /// `kforge run`: the guest stopped (or could not set up) before the command's status.
    #[error("{why}\n--- guest console (last {} lines) ---\n{}", .console_tail.len(), .console_tail.join("\n"))]
    Died {
        why: String,
        console_tail: Vec<String>,
    },
    /// `kforge run`: no status before the deadline; the guest was stopped.
    #[error("the guest did not finish within {} s ({}); it was stopped\n--- guest console (last {} lines) ---\n{}", .after.as_secs(), if *.started { "the command was running" } else { "the command had not started" }, .console_tail.len(), .console_tail.join("\n"))]
    TimedOut {
        after: std::time::Duration,
        started: bool,
        console_tail: Vec<String>,
    },
    /// The guest booted (or not) but the check did not pass (exit 1).
    #[error("boot check failed: {failure}\n--- guest console (last {} lines) ---\n{}", .console_tail.len(), .console_tail.join("\n"))]
    BootFailed {
        failure: String,
        console_tail: Vec<String>,
    },
}

/// What the results database (`verdict::db`) runs into. Here rather than in `verdict` for
/// the reason [`FlowError`] is.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the results database {path}: {source}")]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no test run {0} in the results database (see `kforge results ls`)")]
    NoRun(String),
    #[error(
        "the results database {path} is at schema version {found}, newer than this kforge's {known}: use a newer kforge"
    )]
    Newer {
        path: PathBuf,
        found: i64,
        known: usize,
    },
}

/// What planning refuses: the request does not fit the mirror, the tree or the store.
/// Nothing has been touched when one is returned (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no QEMU mirror at {}: import a release tarball with `kforge mirror --project qemu import-tarball FILE --tag vX.Y.Z` (Debian's: apt-get source --download-only qemu), or clone one with `kforge mirror --project qemu init --from URL`, or point --qemu-mirror / KFORGE_QEMU_MIRROR at one", .0.display())]
    NoQemuMirror(PathBuf),
    #[error("{git_ref} ({commit:.12}) has no top-level {missing}: not a QEMU tree")]
    NotAQemuTree {
        git_ref: String,
        commit: String,
        missing: &'static str,
    },
    #[error("target `{target}` is not in {git_ref}; its targets: {}", .known.join(", "))]
    UnknownTarget {
        target: String,
        git_ref: String,
        known: Vec<String>,
    },
    #[error("unknown config goal `{goal}` at {commit:.12}; known goals: {}", .known.join(", "))]
    UnknownGoal {
        goal: String,
        commit: String,
        known: Vec<String>,
    },
    #[error(
        "{0} has no devel layer in the store (a peer fetch brings only the run layer); build it here with reuse off to make one"
    )]
    NoDevelLayer(EntryName),
    #[error("developer worktree {}: {why}; nothing was changed", .path.display())]
    WorktreeInTheWay { path: PathBuf, why: String },
}

/// A step ran to its end, but what it made is not what it must be (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    #[error("{step} did not produce {}", .path.display())]
    NotProduced { step: &'static str, path: PathBuf },
    /// What the build baked in is not the identity configure computed.
    #[error("{what} says `{found}`, but the identity is `{want}`")]
    NotTheIdentity {
        what: String,
        found: String,
        want: String,
    },
    #[error("{name} is missing from {}/include/generated (did the build run?)", .build.display())]
    MissingHeader { name: String, build: PathBuf },
    #[error("{what}: {source}")]
    NotJson {
        what: String,
        source: serde_json::Error,
    },
    /// A file or a tool's output that the step reads says something it cannot use.
    #[error("{what}: {problem}")]
    Unusable { what: String, problem: String },
    /// `kforge repro`'s rebuild did not end with a manifest (its own output says why).
    #[error("the rebuild failed: {status}")]
    Rebuild { status: String },
}

/// An argument that names a build (a manifest file, an identity in the store, a QEMU
/// binary) but names nothing usable (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    #[error("reading the manifest: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("{} is not {what}: {source}", .path.display())]
    NotAManifest {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("`{arg}` is neither {what}")]
    Neither { arg: String, what: &'static str },
    #[error("`{arg}` is not a file, and {name} is not in the store ({}); {hint}", .store.display())]
    NotInStore {
        arg: String,
        name: EntryName,
        store: PathBuf,
        hint: &'static str,
    },
    #[error("the QEMU manifest {} has no qemu_binary (no softmmu target was built)", .0.display())]
    NoQemuBinary(PathBuf),
    #[error("{0} has no system emulator")]
    NoEmulator(EntryName),
    #[error("the QEMU binary {} is not an executable file", .0.display())]
    NotExecutable(PathBuf),
    #[error("the QEMU binary {} is missing", .0.display())]
    NoSuchBinary(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Pick(#[from] PickError),
    #[error(transparent)]
    Dirs(#[from] crate::dirs::DirsError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Series(#[from] SeriesError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Label(#[from] crate::identity::LabelError),
    #[error(transparent)]
    Product(#[from] ProductError),
    #[error("step {step} failed: {source}")]
    Step { step: String, source: Box<Error> },
    #[error(transparent)]
    Results(#[from] DbError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Exit codes.
pub mod exit {
    pub const BUILD_FAILED: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const INFRASTRUCTURE: i32 = 3;
    pub const BUSY: i32 = 4;
    /// `kforge run`: the guest kernel panicked or the guest died before the command's end.
    pub const GUEST_CRASHED: i32 = 120;
    /// `kforge run`: the command did not finish in time (as timeout(1) exits).
    pub const GUEST_TIMEOUT: i32 = 124;
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_)
            | Error::Plan(_)
            | Error::Pick(_)
            | Error::Dirs(_)
            | Error::Library(_)
            | Error::Flow(_)
            | Error::Label(_)
            | Error::Guest(
                GuestError::Refused(_) | GuestError::NoGuest(_) | GuestError::BadDefinition { .. },
            )
            | Error::Series(SeriesError::BadMessageId(..) | SeriesError::BadMbox(_)) => {
                exit::BAD_INPUT
            }
            Error::Mirror(m) => match m {
                MirrorError::UnknownRef { .. }
                | MirrorError::NoTags(_)
                | MirrorError::Missing(_)
                | MirrorError::NotBare(_)
                | MirrorError::Exists(_)
                | MirrorError::TagClash { .. }
                | MirrorError::Tarball(_)
                | MirrorError::NotAWorktree { .. }
                | MirrorError::Unfetchable { .. } => exit::BAD_INPUT,
                MirrorError::Run(_) | MirrorError::Io(_) => exit::INFRASTRUCTURE,
            },
            Error::Slot(SlotError::Busy { .. }) => exit::BUSY,
            Error::Run(RunError::Failed(_))
            | Error::Product(_)
            | Error::Guest(
                GuestError::BootFailed { .. }
                | GuestError::VirtiofsdExited { .. }
                | GuestError::VirtiofsdSilent(_),
            ) => exit::BUILD_FAILED,
            // A failed push of an applied series (the slot has moved) is the machine's (a
            // mirror it cannot write), never "bad input, nothing touched".
            Error::Slot(_)
            | Error::Guest(GuestError::Missing(..))
            | Error::Io(_)
            | Error::Run(_)
            | Error::Series(
                SeriesError::Run(RunError::NotFound { .. })
                | SeriesError::Io(_)
                | SeriesError::Publish { .. },
            ) => exit::INFRASTRUCTURE,
            Error::Series(_) => exit::BUILD_FAILED,
            Error::Store(s) => match s {
                StoreError::BadRelease(_)
                | StoreError::Missing(..)
                | StoreError::InUse(..)
                | StoreError::BadInput(_) => exit::BAD_INPUT,
                StoreError::Io(_) => exit::INFRASTRUCTURE,
                StoreError::Damaged { .. } | StoreError::Refused(_) => exit::BUILD_FAILED,
            },
            Error::Step { source, .. } => source.exit_code(),
            Error::Results(DbError::NoRun(_)) => exit::BAD_INPUT,
            Error::Results(_) => exit::INFRASTRUCTURE,
            Error::Guest(GuestError::Panicked { .. } | GuestError::Died { .. }) => {
                exit::GUEST_CRASHED
            }
            Error::Guest(GuestError::TimedOut { .. }) => exit::GUEST_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_classes_come_from_the_error_types() {
        let failed_push = RunError::Spawn {
            command: "git push".into(),
            source: std::io::Error::other("read-only mirror"),
        };
        let publish = Error::Series(SeriesError::Publish {
            branch: "b4/x".into(),
            source: failed_push,
        });
        assert_eq!(publish.exit_code(), exit::INFRASTRUCTURE, "{publish}");
        let goal = PlanError::UnknownGoal {
            goal: "nope_defconfig".into(),
            commit: "0123456789abcdef".into(),
            known: vec!["defconfig".into()],
        };
        assert_eq!(
            goal.to_string(),
            "unknown config goal `nope_defconfig` at 0123456789ab; known goals: defconfig"
        );
        assert_eq!(Error::from(goal).exit_code(), exit::BAD_INPUT);
        let made = ProductError::NotProduced {
            step: "make install",
            path: "/slot/destdir/boot/vmlinuz-x".into(),
        };
        assert_eq!(Error::from(made).exit_code(), exit::BUILD_FAILED);
        let missing = StoreError::Missing("qemu-7.2.22-0123456789ab".parse().unwrap(), "run");
        assert_eq!(Error::Store(missing).exit_code(), exit::BAD_INPUT);
        // The lifecycle's refusals touch nothing; a guest's failures are the build's or
        // the machine's.
        assert_eq!(
            Error::from(FlowError::RecordChanged).exit_code(),
            exit::BAD_INPUT
        );
        let silent = GuestError::VirtiofsdSilent("/share".into());
        assert_eq!(Error::from(silent).exit_code(), exit::BUILD_FAILED);
        let missing = GuestError::Missing("virtiofsd", "cargo install virtiofsd");
        assert_eq!(Error::from(missing).exit_code(), exit::INFRASTRUCTURE);
        // Wrapped in a step, the class is the step's error's.
        let step = Error::Step {
            step: "install_modules".into(),
            source: Box::new(Error::Run(RunError::NotFound {
                program: "depmod".into(),
                package: "kmod".into(),
            })),
        };
        assert_eq!(step.exit_code(), exit::INFRASTRUCTURE);
    }
}
