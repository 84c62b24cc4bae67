//! The output contract: the manifest `collect` writes, as the spec's "output contract"
//! defines it, plus kforge's own fields (schema version, identity, label, modules dir).

use serde::{Deserialize, Serialize};

use crate::flow::Reused;
use crate::identity::IdentityInputs;
use crate::kernel::request::ConfigMethod;
use crate::slot::mirror::RefKind;
use crate::toolchain::Compiler;

/// Bumped when a field changes meaning or disappears.
pub const MANIFEST_SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    /// The commit built (the resolved ref, with any series applied).
    pub commit: String,
    /// `<version>-<label>-<digest>`: what `uname -r` prints.
    pub uts_release: String,
    /// The boot image: `destdir/boot/vmlinuz-<release>` when installed, else the build's.
    #[serde(rename = "bzImage")]
    pub bz_image: Option<String>,
    pub build_dir: String,
    pub config: String,
    pub config_method: ConfigMethod,
    pub destdir: String,
    /// `LINUX_COMPILER` from the generated headers.
    pub linux_compiler: String,
    /// `UTS_VERSION` (what `uname -v` prints).
    pub uts_version: String,
    pub uts_machine: String,
    pub linux_compile_by: String,
    pub linux_compile_host: String,
    // kforge's additions
    pub git_ref: String,
    pub ref_kind: RefKind,
    pub version: String,
    pub label: String,
    pub digest: String,
    pub compiler: Compiler,
    /// The architecture built for (`x86_64` in manifests written before there was a choice).
    #[serde(default)]
    pub arch: crate::arch::Arch,
    /// `destdir/lib/modules/<release>` when modules were installed.
    pub modules_dir: Option<String>,
    pub worker_index: u32,
    /// The mailed series applied on top of `git_ref`, when one was.
    pub series: Option<crate::series::Applied>,
    /// Every input of the digest.
    pub identity: IdentityInputs,
    /// `null` when this run compiled the kernel; else where the existing copy was found.
    pub reused: Option<Reused>,
    /// The store's run layer of this identity (`STORE/run/kernel-<release>`), when it is
    /// in the store; `bzImage` and `modules_dir` then point into it.
    pub store_entry: Option<String>,
    /// The store's devel layer, when published.
    pub store_devel: Option<String>,
    /// The developer worktree deploy_worktree laid for this build (`worktree_group`), with
    /// the devel layer in its `build/` and its own `compile_commands.json`.
    #[serde(default)]
    pub dev_worktree: Option<String>,
    /// With a worktree build: the worktree, the commit its edits are on, whether it had
    /// local changes, and which paths differ from that commit.
    #[serde(default)]
    pub worktree: Option<crate::slot::snapshot::Snapshot>,
    /// Whether a rebuild elsewhere gives the same bytes: `false` when known before the
    /// build (with why), else the last `kforge repro` verdict, else `unknown`. Absent in
    /// manifests written before kforge said.
    #[serde(default)]
    pub reproducible: Option<crate::kernel::repro::Reproducibility>,
}

impl crate::store::peers::OfRelease for Manifest {
    fn release(&self) -> &str {
        &self.uts_release
    }
}
