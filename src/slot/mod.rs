//! Mirrors and slots: the bare git mirror a flow builds from, and the warm worktrees
//! (`WORKERS_DIR/<index>/main/<project>`) it builds in, one build per slot at a time.
//!
//! Generic over the project (the kernel's `linux`, QEMU's `qemu`); it knows git, not make.

pub mod git;
pub mod mirror;
pub mod snapshot;
pub mod worktree;

pub use mirror::{Mirror, RefKind, ResolvedRef};
pub use worktree::{Slot, SlotGuard};
