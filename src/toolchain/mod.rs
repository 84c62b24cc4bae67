//! Toolchains: which compiler, linker and make build a tree, and their identity.
//!
//! Shared by every flow (kernel, QEMU). The identity holds versions, not paths, so the same
//! toolchain on two hosts gives the same digest. It runs the tools only to ask versions.

pub mod bytes;
pub mod ccache;

use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::process::{Cmd, RunError, find_program};

/// The compiler family a build uses.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    /// GNU gcc with binutils.
    #[default]
    Gcc,
    /// clang with the LLVM tools (`LLVM=1`: ld.lld, llvm-ar, ...).
    Clang,
}

impl Compiler {
    pub fn as_str(self) -> &'static str {
        match self {
            Compiler::Gcc => "gcc",
            Compiler::Clang => "clang",
        }
    }
    /// The C compiler program for the host.
    pub fn cc(self) -> &'static str {
        self.as_str()
    }
    /// The C compiler program building for `arch`: Debian's cross gcc
    /// (`aarch64-linux-gnu-gcc`), or clang, which targets every arch itself.
    pub fn cc_for(self, arch: Arch) -> String {
        match (self, arch.cross_prefix()) {
            (Compiler::Gcc, Some(prefix)) => format!("{prefix}gcc"),
            _ => self.cc().to_owned(),
        }
    }
    /// The linker the kernel's build uses with this compiler for `arch`.
    pub fn linker_for(self, arch: Arch) -> String {
        match (self, arch.cross_prefix()) {
            (Compiler::Gcc, Some(prefix)) => format!("{prefix}ld"),
            (Compiler::Gcc, None) => "ld".to_owned(),
            (Compiler::Clang, _) => "ld.lld".to_owned(),
        }
    }
}

impl std::fmt::Display for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies a toolchain in a build identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolchainIdentity {
    /// `gcc` or `clang`.
    pub compiler: String,
    /// First line of `<cc> --version`.
    pub cc: String,
    /// First line of `<linker> --version`.
    pub linker: String,
    /// First line of `make --version`.
    pub make: String,
    /// A declared toolchain environment (e.g. a Nix devShell's store path), when one is used.
    pub env: Option<String>,
    /// `sha256:<hex>` of each program whose work lands in the output, by role (`cc`, `cc1`,
    /// `as`, `ld`, and `pahole`, `openssl`, `python3` when installed): an update
    /// may keep the version strings above and still changes these.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tools: std::collections::BTreeMap<String, String>,
}

fn first_line_of_version(program: &str) -> Result<String, RunError> {
    find_program(program)?;
    let out = Cmd::new(program).arg("--version").output()?;
    Ok(out.lines().next().unwrap_or_default().trim().to_owned())
}

/// Where the hashes of the toolchain's files are remembered, under the system dir.
pub fn hash_cache(system_dir: &std::path::Path) -> std::path::PathBuf {
    system_dir.join("toolchain-hashes.json")
}

/// Resolves the host's tools for `compiler` building for the host, and reads their versions
/// and hashes (`cache`: see [`bytes::hashes`]).
pub fn resolve(
    compiler: Compiler,
    cache: Option<&std::path::Path>,
) -> Result<ToolchainIdentity, RunError> {
    resolve_for(compiler, Arch::host().unwrap_or_default(), cache)
}

/// Resolves the tools for `compiler` building for `arch` (a cross gcc's versions are its
/// own) and reads their versions and hashes; a missing cross compiler names its Debian
/// package.
pub fn resolve_for(
    compiler: Compiler,
    arch: Arch,
    cache: Option<&std::path::Path>,
) -> Result<ToolchainIdentity, RunError> {
    Ok(ToolchainIdentity {
        compiler: compiler.as_str().to_owned(),
        cc: first_line_of_version(&compiler.cc_for(arch))?,
        linker: first_line_of_version(&compiler.linker_for(arch))?,
        make: first_line_of_version("make")?,
        env: None,
        tools: bytes::hashes(&bytes::programs(compiler, arch), cache),
    })
}
