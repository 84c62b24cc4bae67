//! The QEMU build request: which tree (ref, optional series), which targets and configure
//! options, which compiler; its defaults and the checks that need nothing but the request.
//!
//! Configure options reach `configure` as argv words, never through a shell; the options
//! kforge sets itself (prefix, target list, compilers, package version) are refused here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::slot::git::validate_ref;
use crate::toolchain::{Compiler, ccache};

/// What QEMU is built with before the request's own configure options.
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
pub enum Features {
    /// What kforge's guests need and nothing else: `--without-default-features` with TCG,
    /// KVM, vhost-user (virtiofs) and seccomp on, and QEMU's minimal device set for a target
    /// that has one (aarch64: the virt machine). Builds in minutes; the same on every host.
    #[default]
    Minimal,
    /// configure's own defaults: every feature whose library this host has.
    Default,
}

impl Features {
    pub fn as_str(self) -> &'static str {
        match self {
            Features::Minimal => "minimal",
            Features::Default => "default",
        }
    }

    /// The configure options the feature set stands for.
    pub fn options(self) -> &'static [&'static str] {
        match self {
            Features::Minimal => &[
                "--without-default-features",
                "--enable-tcg",
                "--enable-kvm",
                "--enable-vhost-user",
                // kforge runs its guests under QEMU's seccomp sandbox (-sandbox on).
                "--enable-seccomp",
            ],
            Features::Default => &[],
        }
    }
}

/// The default target list.
pub const DEFAULT_TARGET: &str = "x86_64-softmmu";

/// Where QEMU looks for firmware (SeaBIOS, option ROMs) unless the request says otherwise:
/// Debian's packages (`qemu-system-data`, `seabios`, `ipxe-qemu`). Debian's QEMU source has
/// the prebuilt firmware removed, and a tree that installs its own still finds it after these.
pub const DEFAULT_FIRMWARE_PATH: &str = "/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu";

/// Options kforge sets itself, refused in `configure_options`.
pub const OWNED_OPTIONS: &[&str] = &[
    "--prefix",
    "--target-list",
    "--cc",
    "--cxx",
    "--objcc",
    "--host-cc",
    "--cross-prefix",
    "--with-pkgversion",
    "--meson",
    "--ninja",
    "--help",
    "--without-default-features",
];

fn default_targets() -> Vec<String> {
    vec![DEFAULT_TARGET.to_owned()]
}
fn default_ccache_max_size() -> String {
    "10G".to_owned()
}
const fn yes() -> bool {
    true
}

/// A QEMU build request (`kforge qemu build`, or a JSON/TOML file with these fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QemuRequest {
    /// Tag, branch or commit of the QEMU mirror [default: its newest v* tag].
    #[serde(default)]
    pub git_ref: Option<String>,
    /// A mailed series applied on top of git_ref (a message-id or lore URL).
    #[serde(default)]
    pub b4_series: Option<String>,
    /// A local copy of the series' thread (mbox or maildir), for machines without lore.
    #[serde(default)]
    pub b4_mbox: Option<PathBuf>,
    /// configure's --target-list.
    #[serde(default = "default_targets")]
    pub target_list: Vec<String>,
    /// The feature set configure starts from.
    #[serde(default)]
    pub features: Features,
    /// More configure options, each one word (`--enable-slirp`, `--disable-werror`).
    #[serde(default)]
    pub configure_options: Vec<String>,
    #[serde(default)]
    pub compiler: Compiler,
    /// Compile through ccache (the same managed cache as the kernel's).
    #[serde(default = "yes")]
    pub ccache: bool,
    #[serde(default = "default_ccache_max_size")]
    pub ccache_max_size: String,
    /// Map the slot's path out of debug info and set SOURCE_DATE_EPOCH from the commit.
    #[serde(default = "yes")]
    pub reproducible: bool,
    /// Take an identity that is already in the store instead of building it again.
    #[serde(default = "yes")]
    pub reuse: bool,
    /// Before building, fetch this identity from a registered peer's store (`kforge peers
    /// add`), verified against a trusted signing key; only with `reuse` on.
    #[serde(default)]
    pub use_peers: bool,
    /// Remove build/ first (a cold build).
    #[serde(default)]
    pub wipe_build: bool,
    /// Clone the slot's worktree anew.
    #[serde(default)]
    pub recreate_build_worktree: bool,
}

impl Default for QemuRequest {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// Whether `t` is a QEMU target name (`x86_64-softmmu`, `aarch64-linux-user`).
fn is_target(t: &str) -> bool {
    let Some((arch, kind)) = t.rsplit_once('-').map(|(a, k)| {
        // linux-user and bsd-user hold a dash themselves.
        if k == "user" {
            let (a2, k2) = a.rsplit_once('-').unwrap_or((a, ""));
            (a2, if k2.is_empty() { "" } else { k2 })
        } else {
            (a, k)
        }
    }) else {
        return false;
    };
    let kind_ok = matches!(kind, "softmmu" | "linux" | "bsd");
    kind_ok
        && !arch.is_empty()
        && arch.len() <= 32
        && arch
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The option's name: `--enable-slirp` for `--enable-slirp`, `--firmwarepath` for
/// `--firmwarepath=/x`.
pub fn option_name(opt: &str) -> &str {
    opt.split_once('=').map_or(opt, |(n, _)| n)
}

impl QemuRequest {
    /// Every problem with the request, or none.
    pub fn problems(&self) -> Vec<String> {
        let mut bad = Vec::new();
        if let Some(r) = &self.git_ref
            && let Err(e) = validate_ref(r)
        {
            bad.push(e);
        }
        if self.b4_mbox.is_some() && self.b4_series.is_none() {
            bad.push("b4_mbox needs b4_series (the message-id to take from it)".into());
        }
        if self.target_list.is_empty() {
            bad.push("target_list is empty; name at least one target, e.g. x86_64-softmmu".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.target_list {
            if !is_target(t) {
                bad.push(format!(
                    "target `{}` is not a QEMU target name such as x86_64-softmmu or aarch64-linux-user",
                    t.escape_debug()
                ));
            } else if !seen.insert(t) {
                bad.push(format!("target `{t}` is listed twice"));
            }
        }
        for opt in &self.configure_options {
            if let Some(why) = bad_option(opt) {
                bad.push(format!("configure option `{}` {why}", opt.escape_debug()));
            }
        }
        if let Err(e) = ccache::validate_max_size(&self.ccache_max_size) {
            bad.push(e);
        }
        bad
    }

    /// The request's checks, as one error naming every problem.
    pub fn validate(&self) -> Result<(), crate::error::InvalidRequest> {
        let bad = self.problems();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(crate::error::InvalidRequest(bad))
        }
    }

    /// The firmware search path: the request's `--firmwarepath=`, else kforge's default.
    pub fn has_firmware_path(&self) -> bool {
        self.configure_options
            .iter()
            .any(|o| option_name(o) == "--firmwarepath")
    }

    /// Reads a request file: JSON, or TOML when the name ends in `.toml`.
    pub fn from_file_text(name: &str, text: &str) -> Result<Self, String> {
        if name.ends_with(".toml") {
            toml::from_str(text).map_err(|e| format!("{name}: {e}"))
        } else {
            serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))
        }
    }
}

/// Why a configure option is refused, if it is.
fn bad_option(opt: &str) -> Option<String> {
    let name = option_name(opt);
    if !opt.starts_with("--") {
        return Some("does not start with `--`".into());
    }
    if opt.chars().any(char::is_control) {
        return Some("holds control characters".into());
    }
    if name.len() < 3
        || !name[2..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Some("is not an option name (--enable-x, --disable-x, --name=value)".into());
    }
    if OWNED_OPTIONS.contains(&name) {
        return Some(format!(
            "is set by kforge itself (from target_list, compiler, features or the identity); {}",
            match name {
                "--target-list" => "use target_list",
                "--cc" | "--cxx" | "--objcc" | "--host-cc" => "use compiler",
                "--without-default-features" => "use features = \"minimal\"",
                _ => "it cannot be changed",
            }
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let r = QemuRequest::default();
        assert_eq!(r.target_list, vec!["x86_64-softmmu"]);
        assert_eq!(r.features, Features::Minimal);
        assert!(r.ccache && r.reuse && r.reproducible);
        assert!(r.validate().is_ok());
        assert!(!r.has_firmware_path());
    }

    #[test]
    fn targets() {
        for ok in [
            "x86_64-softmmu",
            "aarch64-linux-user",
            "i386-bsd-user",
            "riscv64-softmmu",
        ] {
            assert!(is_target(ok), "{ok}");
        }
        for bad in [
            "x86_64",
            "-softmmu",
            "X86-softmmu",
            "x86_64-softmmu;rm",
            "../x-softmmu",
            "a-user",
        ] {
            assert!(!is_target(bad), "{bad}");
        }
    }

    #[test]
    fn bad_inputs_are_all_reported() {
        let r = QemuRequest {
            git_ref: Some("--upload-pack=x".into()),
            target_list: vec![
                "x86_64-softmmu".into(),
                "x86_64-softmmu".into(),
                "nope".into(),
            ],
            configure_options: vec![
                "--enable-slirp".into(),
                "--firmwarepath=/opt/fw".into(),
                "enable-x".into(),
                "--prefix=/opt".into(),
                "--cc=tcc".into(),
                "--extra-cflags=-O1\n--evil".into(),
                "--Enable".into(),
            ],
            ccache_max_size: "lots".into(),
            b4_mbox: Some("/x".into()),
            ..QemuRequest::default()
        };
        let p = r.problems();
        assert_eq!(p.len(), 10, "{p:#?}");
        assert!(p.iter().any(|m| m.contains("listed twice")));
        assert!(
            p.iter()
                .any(|m| m.contains("`--prefix=/opt`") && m.contains("kforge itself"))
        );
        assert!(p.iter().any(|m| m.contains("use compiler")));
        assert!(p.iter().any(|m| m.contains("control characters")));
        assert!(r.has_firmware_path());
    }

    #[test]
    fn request_files() {
        let r = QemuRequest::from_file_text(
            "q.toml",
            "git_ref = \"v7.2.0\"\ntarget_list = [\"x86_64-softmmu\", \"aarch64-softmmu\"]\nconfigure_options = [\"--enable-slirp\"]\n",
        )
        .unwrap();
        assert_eq!(r.target_list.len(), 2);
        assert!(QemuRequest::from_file_text("q.json", "{\"target\": 1}").is_err());
    }
}
