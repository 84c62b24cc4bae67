//! kforge's integration tests, one binary with a module per area and one harness
//! (`support`) they all share.
//!
//! Two tiers. The tests not marked `#[ignore]` need no root, no kernel tree and no build
//! (the command line and its refusals on a mirror of a few files, the store's mechanics on
//! synthetic entries, the committed Windmill flow): `cargo test` runs them. The ignored
//! ones drive real builds, guests, systemd and servers on the real kernel tree;
//! `scripts/test.sh` runs every test with cargo-nextest (`--run-ignored all`), grouped by
//! `.config/nextest.toml` so that kernel compiles do not oversubscribe the machine.

mod support;

mod arch;
mod bisect;
mod build;
mod cli;
mod devel;
mod devloop;
mod guest;
mod identity;
mod layout;
mod peers;
mod qemu;
mod remote_cache;
mod repro;
mod series;
mod store;
mod verdict;
mod vm;
mod windmill;
