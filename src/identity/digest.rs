//! The digest: 12 hex of a SHA-256 over the inputs that fix a build's bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::toolchain::ToolchainIdentity;

/// Hex digits of the digest in the release string.
pub const DIGEST_LEN: usize = 12;

/// Everything the digest is computed over, in one serializable struct: `kforge identity`
/// prints it, so a user can see why two builds differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityInputs {
    /// Version of this hashing scheme; bumping it changes every digest.
    pub scheme: String,
    /// SHA-256 of the `.config` with its `CONFIG_LOCALVERSION=` line removed.
    pub config_sha256: String,
    /// Compiler, linker and make that build the kernel.
    pub toolchain: ToolchainIdentity,
    /// The make flags, with the ccache wrapper, job count and host-specific prefix-map
    /// values removed (they do not change the output bytes).
    pub make_flags: Vec<String>,
    /// The git tree object of the source (HEAD^{tree}): equal content, equal tree.
    pub tree: String,
}

impl IdentityInputs {
    /// 2: the toolchain's files' hashes (`toolchain.tools`) joined the inputs.
    pub const SCHEME: &'static str = "kforge-identity/2";

    /// The first 12 hex digits of SHA-256 over the canonical JSON of the inputs.
    pub fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("identity inputs serialize");
        let mut hex = hex::encode(Sha256::digest(&canonical));
        hex.truncate(DIGEST_LEN);
        hex
    }
}

/// The `.config` text that enters the digest: every line but `CONFIG_LOCALVERSION=...`
/// (which carries the identity itself).
pub fn config_for_digest(config: &str) -> String {
    let mut out = String::with_capacity(config.len());
    for line in config.lines() {
        if line.starts_with("CONFIG_LOCALVERSION=") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Rewrites one make flag into its identity form: the values of `-fdebug-prefix-map=`,
/// `-ffile-prefix-map=` and `-fmacro-prefix-map=` are host paths and are dropped, and a
/// `ccache` wrapper in `CC=`/`HOSTCC=` is removed, since neither changes the output.
pub fn normalize_flag_for_identity(flag: &str) -> String {
    const MAPS: [&str; 3] = [
        "-fdebug-prefix-map=",
        "-ffile-prefix-map=",
        "-fmacro-prefix-map=",
    ];
    let Some((var, value)) = flag.split_once('=') else {
        return flag.to_owned();
    };
    let is_cc = matches!(var, "CC" | "HOSTCC");
    if !is_cc && !MAPS.iter().any(|m| value.contains(m)) {
        return flag.to_owned();
    }
    let words: Vec<&str> = value
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| {
            MAPS.iter()
                .find(|m| w.starts_with(**m))
                .copied()
                .unwrap_or(w)
        })
        .collect();
    let words: Vec<&str> = if is_cc && words.len() > 1 {
        words.into_iter().filter(|w| *w != "ccache").collect()
    } else {
        words
    };
    format!("{var}={}", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> IdentityInputs {
        IdentityInputs {
            scheme: IdentityInputs::SCHEME.to_owned(),
            config_sha256: "a".repeat(64),
            toolchain: ToolchainIdentity {
                compiler: "gcc".into(),
                cc: "gcc (Debian 12.2.0-14) 12.2.0".into(),
                linker: "GNU ld (GNU Binutils for Debian) 2.40".into(),
                make: "GNU Make 4.3".into(),
                env: None,
                tools: [("cc1".to_owned(), "sha256:00".to_owned())].into(),
            },
            make_flags: vec!["KBUILD_BUILD_USER=kforge".into()],
            tree: "b".repeat(40),
        }
    }

    #[test]
    fn digest_is_twelve_hex_and_stable() {
        let d = inputs().digest();
        assert_eq!(d.len(), 12);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(d, inputs().digest());
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = inputs().digest();
        let mut changed: Vec<IdentityInputs> = Vec::new();
        let mut i = inputs();
        i.scheme.push('x');
        changed.push(i);
        let mut i = inputs();
        i.config_sha256 = "c".repeat(64);
        changed.push(i);
        let mut i = inputs();
        i.toolchain.compiler = "clang".into();
        changed.push(i);
        let mut i = inputs();
        i.toolchain.cc = "gcc 13".into();
        changed.push(i);
        let mut i = inputs();
        i.toolchain.linker = "LLD 14".into();
        changed.push(i);
        let mut i = inputs();
        i.toolchain.make = "GNU Make 4.4".into();
        changed.push(i);
        let mut i = inputs();
        i.toolchain.tools.insert("cc1".into(), "sha256:01".into());
        changed.push(i);
        let mut i = inputs();
        i.toolchain.env = Some("/nix/store/x-devshell".into());
        changed.push(i);
        let mut i = inputs();
        i.make_flags.push("W=1".into());
        changed.push(i);
        let mut i = inputs();
        i.tree = "d".repeat(40);
        changed.push(i);
        for c in changed {
            assert_ne!(c.digest(), base, "{c:?}");
        }
    }

    #[test]
    fn localversion_line_is_not_hashed() {
        let a =
            "CONFIG_A=y\nCONFIG_LOCALVERSION=\"-x-0123\"\n# CONFIG_LOCALVERSION_AUTO is not set\n";
        let b = "CONFIG_A=y\nCONFIG_LOCALVERSION=\"\"\n# CONFIG_LOCALVERSION_AUTO is not set\n";
        assert_eq!(config_for_digest(a), config_for_digest(b));
        assert!(config_for_digest(a).contains("LOCALVERSION_AUTO"));
        assert_ne!(config_for_digest(a), config_for_digest("CONFIG_A=m\n"));
    }

    #[test]
    fn host_specific_flag_values_are_stripped() {
        for (flag, want) in [
            (
                "KCFLAGS=-fdebug-prefix-map=/w/0/main/linux=.",
                "KCFLAGS=-fdebug-prefix-map=",
            ),
            (
                "KCFLAGS=-O2 -fdebug-prefix-map=/x=. -Wall",
                "KCFLAGS=-O2 -fdebug-prefix-map= -Wall",
            ),
            ("CC=ccache gcc", "CC=gcc"),
            ("CC=ccache clang", "CC=clang"),
            ("W=1", "W=1"),
            (
                "KBUILD_BUILD_TIMESTAMP=Thu Jan  1",
                "KBUILD_BUILD_TIMESTAMP=Thu Jan  1",
            ),
            ("-k", "-k"),
        ] {
            assert_eq!(normalize_flag_for_identity(flag), want, "{flag}");
        }
        assert_eq!(
            normalize_flag_for_identity("KCFLAGS=-fdebug-prefix-map=/a=."),
            normalize_flag_for_identity("KCFLAGS=-fdebug-prefix-map=/b/c=.")
        );
    }
}
