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

/// A declared toolchain environment in its canonical form: `oci:<name>@sha256:<64 hex>` (a
/// bare `<name>@sha256:<hex>` is taken as an image) or `nix:/nix/store/<32 chars>-<name>`.
/// An image named by tag alone is refused: a tag moves, and the identity must not.
pub fn parse_env(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "toolchain_env `{text}`: {why} (expected oci:NAME@sha256:<64 hex digits> or nix:/nix/store/<hash>-<name>)"
        ))
    };
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) || text.len() > 512 {
        return bad("no spaces or control characters, at most 512 bytes");
    }
    if let Some(path) = text.strip_prefix("nix:") {
        let Some(rest) = path.strip_prefix("/nix/store/") else {
            return bad("a Nix environment is a store path");
        };
        let (hash, name) = rest.split_once('-').unwrap_or((rest, ""));
        let base32 =
            |c: char| c.is_ascii_digit() || (c.is_ascii_lowercase() && !"eotu".contains(c));
        if hash.len() != 32 || !hash.chars().all(base32) || name.is_empty() || name.contains('/') {
            return bad("not a store path's hash and name");
        }
        return Ok(text.to_owned());
    }
    let image = text.strip_prefix("oci:").unwrap_or(text);
    let Some((name, digest)) = image.split_once("@sha256:") else {
        return bad("an image must be pinned by digest, not by tag");
    };
    let name_ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c));
    if !name_ok {
        return bad("not an image name");
    }
    if digest.len() != 64
        || !digest
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return bad("the digest is not 64 lowercase hex digits");
    }
    Ok(format!("oci:{image}"))
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

#[cfg(test)]
mod tests {
    use super::parse_env;

    #[test]
    fn declared_environments_are_pinned_images_or_store_paths() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            parse_env(&format!("debian@sha256:{hex}")).unwrap(),
            format!("oci:debian@sha256:{hex}")
        );
        let full = format!("oci:ghcr.io/org/kbuild:12@sha256:{hex}");
        assert_eq!(parse_env(&full).unwrap(), full);
        let nix = "nix:/nix/store/0c0i8gsz4nk3bxkbaw0zp5hxkzqh3g8d-kernel-devshell";
        assert_eq!(parse_env(nix).unwrap(), nix);
        for (bad, why) in [
            ("debian:bookworm", "pinned by digest"),
            ("oci:debian@sha256:abc", "64 lowercase hex"),
            (&*format!("Debian@sha256:{hex}"), "not an image name"),
            (&*format!("-x@sha256:{hex}"), "not an image name"),
            ("nix:/tmp/x", "store path"),
            ("nix:/nix/store/short-x", "hash and name"),
            (
                "nix:/nix/store/0c0i8gsz4nk3bxkbaw0zp5hxkzqh3g8d",
                "hash and name",
            ),
            ("a b@sha256:x", "no spaces"),
        ] {
            let e = parse_env(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
