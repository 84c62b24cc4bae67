//! Toolchains: which compiler, linker and make build a tree, and their identity.
//!
//! Shared by every flow (kernel, QEMU). The identity holds versions, not paths, so the same
//! toolchain on two hosts gives the same digest. It runs the tools only to ask versions.

pub mod ccache;

use serde::{Deserialize, Serialize};

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
    /// The C compiler program.
    pub fn cc(self) -> &'static str {
        self.as_str()
    }
    /// The linker the kernel's build uses with this compiler.
    pub fn linker(self) -> &'static str {
        match self {
            Compiler::Gcc => "ld",
            Compiler::Clang => "ld.lld",
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
}

fn first_line_of_version(program: &str) -> Result<String, RunError> {
    find_program(program)?;
    let out = Cmd::new(program).arg("--version").output()?;
    Ok(out.lines().next().unwrap_or_default().trim().to_owned())
}

/// Resolves the host's tools for `compiler` and reads their versions.
pub fn resolve(compiler: Compiler) -> Result<ToolchainIdentity, RunError> {
    Ok(ToolchainIdentity {
        compiler: compiler.as_str().to_owned(),
        cc: first_line_of_version(compiler.cc())?,
        linker: first_line_of_version(compiler.linker())?,
        make: first_line_of_version("make")?,
        env: None,
    })
}
