//! kforge: build a Linux kernel from source, reproducibly, at a pinned ref, with a
//! content-addressed identity that the booted kernel reports in `uname -r`.
//!
//! The library emits events and returns typed results; the `kforge` binary renders them.

pub mod arch;
pub mod bisect;
pub mod dirs;
pub mod error;
pub mod flow;
pub mod fsutil;
pub mod guest;
pub mod identity;
pub mod kernel;
pub mod library;
pub mod process;
pub mod qemu;
pub mod runlog;
pub mod schemas;
pub mod series;
pub mod slot;
pub mod store;
pub mod toolchain;
pub mod verdict;
pub mod windmill;

pub use error::Error;
