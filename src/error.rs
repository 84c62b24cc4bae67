//! kforge's error type, classified so the binary can exit with a meaningful code:
//! 2 for bad input (nothing was touched), 1 for a build that failed, 3 for the machine
//! (a missing tool, I/O), 4 for a busy slot.

use crate::library::LibraryError;
use crate::process::RunError;
use crate::series::SeriesError;
use crate::slot::mirror::MirrorError;
use crate::slot::worktree::SlotError;
use crate::store::StoreError;

/// A request that failed its checks; each line is one problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid request:\n  - {}", .0.join("\n  - "))]
pub struct InvalidRequest(pub Vec<String>);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("{0}")]
    Input(String),
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
    #[error("{0}")]
    Build(String),
    #[error("step {step} failed: {source}")]
    Step { step: String, source: Box<Error> },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Exit codes.
pub mod exit {
    pub const BUILD_FAILED: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const INFRASTRUCTURE: i32 = 3;
    pub const BUSY: i32 = 4;
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) | Error::Input(_) | Error::Library(_) => exit::BAD_INPUT,
            Error::Mirror(m) => match m {
                MirrorError::UnknownRef { .. }
                | MirrorError::NoTags(_)
                | MirrorError::Missing(_)
                | MirrorError::NotBare(_)
                | MirrorError::Exists(_)
                | MirrorError::TagClash { .. }
                | MirrorError::Tarball(_) => exit::BAD_INPUT,
                MirrorError::Run(_) | MirrorError::Io(_) => exit::INFRASTRUCTURE,
            },
            Error::Slot(SlotError::Busy { .. }) => exit::BUSY,
            Error::Run(RunError::Failed(_)) | Error::Build(_) => exit::BUILD_FAILED,
            Error::Series(SeriesError::BadMessageId(..) | SeriesError::BadMbox(_)) => {
                exit::BAD_INPUT
            }
            // A failed push of an applied series (the slot has moved) is the machine's (a
            // mirror it cannot write), never "bad input, nothing touched".
            Error::Slot(_)
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
        assert_eq!(Error::Input("x".into()).exit_code(), exit::BAD_INPUT);
        let missing = StoreError::Missing("qemu-7.2.22-0123456789ab".parse().unwrap(), "run");
        assert_eq!(Error::Store(missing).exit_code(), exit::BAD_INPUT);
    }
}
