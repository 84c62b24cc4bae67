//! kforge's error type, classified so the binary can exit with a meaningful code:
//! 2 for bad input (nothing was touched), 1 for a build that failed, 3 for the machine
//! (a missing tool, I/O), 4 for a busy slot.

use crate::library::LibraryError;
use crate::process::RunError;
use crate::request::InvalidRequest;
use crate::series::SeriesError;
use crate::slot::mirror::MirrorError;
use crate::slot::worktree::SlotError;
use crate::store::StoreError;

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
            Error::Slot(_) | Error::Io(_) | Error::Run(_) => exit::INFRASTRUCTURE,
            Error::Series(SeriesError::BadMessageId(..) | SeriesError::BadMbox(_)) => {
                exit::BAD_INPUT
            }
            Error::Series(SeriesError::Run(RunError::NotFound { .. }) | SeriesError::Io(_)) => {
                exit::INFRASTRUCTURE
            }
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
