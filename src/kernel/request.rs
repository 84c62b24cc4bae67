//! The kernel build request: every input of the spec's schema, its defaults, its checks
//! that need nothing but the request itself, and its JSON Schema (with input groups).
//!
//! Checks that need the mirror or the library (does the ref, preset or goal exist?) run in
//! the flow's planning phase, still before anything is touched.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::kbuild;
use crate::arch::Arch;
use crate::error::InvalidRequest;
use crate::identity::validate_custom_label;
use crate::slot::git::validate_ref;
use crate::toolchain::{Compiler, ccache};

/// A string or a list of strings (`"defconfig"` or `["defconfig", "kvm_guest.config"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The words: a single string is split on white space.
    pub fn words(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s.split_whitespace().map(str::to_owned).collect(),
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

/// How `.config` is produced.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ConfigMethod {
    /// A whole-kernel config from the library, via `make KCONFIG_ALLCONFIG=<file> alldefconfig`.
    #[default]
    Preset,
    /// One or more in-tree config goals (`defconfig`, `tinyconfig`, `kvm_guest.config`, ...).
    Make,
    /// Library fragments merged with `scripts/kconfig/merge_config.sh` in canonical order.
    Fragments,
}

impl ConfigMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigMethod::Preset => "preset",
            ConfigMethod::Make => "make",
            ConfigMethod::Fragments => "fragments",
        }
    }
}

/// Declares the input groups once: their names (each input's `x-group`), their summaries
/// (the schema's `x-groups`) and the `--help` headings made of both.
macro_rules! input_groups {
    ($($konst:ident => $name:literal, $summary:literal;)*) => {
        /// The input groups, in form order, with their one-line summaries.
        pub const GROUPS: &[(&str, &str)] = &[$(($name, $summary)),*];
        /// The `--help` heading of each input group: `<group>: <summary>`.
        pub mod heading {
            $(pub const $konst: &str = concat!($name, ": ", $summary);)*
        }
    };
}

input_groups! {
    WORKTREE => "Worktree", "which source is built, its label, the slot's tree";
    CONFIGURATION => "Configuration", "how .config is produced";
    BUILD => "Build", "architecture, compiler, make goals and flags, reproducibility, ccache";
    REUSE => "Reuse", "when an identity that already exists is not rebuilt";
    INSTALLATION => "Installation", "what goes into destdir/";
}

fn default_preset() -> String {
    "imageless_defconfig".to_owned()
}
fn default_defconfig() -> OneOrMany {
    OneOrMany::Many(vec!["defconfig".to_owned()])
}
fn default_ccache_max_size() -> String {
    "10G".to_owned()
}
const fn yes() -> bool {
    true
}

/// A kernel build request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "kforge kernel build",
    description = "Build a Linux kernel at a pinned ref, reproducibly, with a content-addressed identity that `uname -r` reports."
)]
pub struct KernelRequest {
    // ---- Worktree
    /// Git ref
    ///
    /// The tag, branch or commit to build, from the mirror. Resolved as a tag, then a mirror
    /// branch (`mirror/<ref>`), then the literal ref. Empty: the newest release tag (`v*`).
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub git_ref: Option<String>,

    /// Developer worktree
    ///
    /// Build the files of this git worktree as they are, uncommitted edits and new untracked
    /// files included (ignored files left out), instead of a ref: kforge snapshots them
    /// through a temporary index (the worktree's index, HEAD and files stay as they are),
    /// brings the snapshot into the mirror and builds it. The same files give the same
    /// identity. `kforge build` run inside a Linux worktree without a ref picks it up.
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub worktree: Option<std::path::PathBuf>,

    /// b4 series
    ///
    /// A mailed patch series to apply on top of `git_ref`: a message-id (with or without
    /// `<>`) or a lore-style URL. b4 downloads it (`b4 am`), `git am` applies it, and it is
    /// published to the mirror as `refs/heads/b4/<slug>`.
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub b4_series: Option<String>,

    /// b4 local mbox
    ///
    /// With `b4_series`: a local mbox file or maildir holding the thread, handed to
    /// `b4 am --use-local-mbox` instead of fetching from the list archive (offline machines).
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub b4_mbox: Option<std::path::PathBuf>,

    /// Custom label
    ///
    /// Name the build yourself: `label` replaces the inferred `vanilla` / branch name.
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub custom_label: bool,

    /// Label
    ///
    /// With `custom_label`: the label in `<version>-<label>-<digest>`; at most 40 characters
    /// of letters, digits, `.`, `_` and `-`; truncated further if the release would exceed 64.
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"), length(max = 40))]
    pub label: Option<String>,

    /// Recreate the build worktree
    ///
    /// Lay a fresh checkout instead of re-syncing the warm tree, discarding build/ and destdir/.
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub recreate_build_worktree: bool,

    /// Wipe build/
    ///
    /// Remove and recreate build/ before configuring, forcing a clean build.
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub wipe_build: bool,

    /// Developer worktree group
    ///
    /// Lay a developer worktree of the built commit (series included) at
    /// `<deploy_dir>/<worktree_group>/<deploy_name>`, for a human to open in an editor, with the
    /// build's devel layer in its `build/` and a `compile_commands.json` for its own paths.
    /// Empty: no developer worktree.
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub worktree_group: Option<String>,

    /// Deploy directory
    ///
    /// With `worktree_group`: the absolute directory that holds the worktree groups
    /// (default `SYSTEM_DIR/worktrees`).
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub deploy_dir: Option<std::path::PathBuf>,

    /// Deploy name
    ///
    /// With `worktree_group`: the developer worktree's name in its group (default: the
    /// build's label, e.g. `vanilla` or the series' slug).
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub deploy_name: Option<String>,

    /// Replace the developer worktree
    ///
    /// With `worktree_group`: move an existing developer worktree of that name to this build's
    /// commit. One with uncommitted changes, untracked files or commits of its own is never
    /// replaced; the run stops and says so.
    #[serde(default)]
    #[schemars(extend("x-group" = "Worktree"))]
    pub deploy_replace: bool,

    // ---- Configuration
    /// Config method
    ///
    /// How .config is produced: `preset` (a library config), `make` (in-tree goals) or
    /// `fragments` (library fragments, merged in canonical order).
    #[serde(default)]
    #[schemars(extend("x-group" = "Configuration"))]
    pub config_method: ConfigMethod,

    /// Preset
    ///
    /// For `config_method: preset`: the library's whole-kernel config (`defconfigs/<name>`).
    #[serde(default = "default_preset")]
    #[schemars(extend("x-group" = "Configuration"))]
    pub preset: String,

    /// Make config goals
    ///
    /// For `config_method: make`: the config goal or goals, e.g. `defconfig` or
    /// `["defconfig", "kvm_guest.config"]`.
    #[serde(default = "default_defconfig")]
    #[schemars(extend("x-group" = "Configuration"))]
    pub defconfig: OneOrMany,

    /// Fragments
    ///
    /// For `config_method: fragments`: library fragments as `<category>/<name>`
    /// (e.g. `virtio/virtiofs`, `debug/kasan`); merged in canonical category order.
    #[serde(default)]
    #[schemars(extend("x-group" = "Configuration"))]
    pub fragments: Vec<String>,

    /// allnoconfig base
    ///
    /// For `config_method: fragments`: unset symbols default to `n` (allnoconfig) instead of
    /// their Kconfig defaults (alldefconfig), for a minimal, explicit config.
    #[serde(default = "yes")]
    #[schemars(extend("x-group" = "Configuration"))]
    pub allnoconfig_base: bool,

    // ---- Build
    /// Make targets
    ///
    /// Extra make goals to narrow the build; empty builds vmlinux, the boot image and modules.
    #[serde(default)]
    #[schemars(extend("x-group" = "Build"))]
    pub targets: Vec<String>,

    /// Architecture
    ///
    /// What the kernel is built for: `x86_64` (the host's), `arm64` or `riscv64`. With gcc a
    /// foreign arch uses Debian's cross compiler (`CROSS_COMPILE=aarch64-linux-gnu-`, package
    /// gcc-aarch64-linux-gnu); clang targets it with `LLVM=1`. Part of the identity: two
    /// arches never share a digest. Presets and fragments must be this arch's.
    #[serde(default)]
    #[schemars(extend("x-group" = "Build"))]
    pub arch: Arch,

    /// Compiler
    ///
    /// `gcc`, or `clang` (with `LLVM=1`: clang, ld.lld and the LLVM binutils).
    #[serde(default)]
    #[schemars(extend("x-group" = "Build"))]
    pub compiler: Compiler,

    /// Toolchain environment
    ///
    /// The environment the build runs in, declared: a container image pinned by digest
    /// (`oci:debian@sha256:<64 hex>`) or a Nix store path (`nix:/nix/store/<hash>-<name>`,
    /// e.g. a devShell's). It joins the identity beside the tools' own hashes; kforge does not
    /// enter it (run kforge inside it).
    #[serde(default)]
    #[schemars(extend("x-group" = "Build"))]
    pub toolchain_env: Option<String>,

    /// Extra make flags
    ///
    /// Extra make variables and switches, e.g. `W=1` or `["KCFLAGS=-O2", "-k"]`, passed as
    /// separate arguments (never through a shell). Flags that would redirect make are refused.
    #[serde(default)]
    #[schemars(extend("x-group" = "Build"))]
    pub make_flags: OneOrMany,

    /// Reproducible
    ///
    /// Pin KBUILD_BUILD_TIMESTAMP/USER/HOST/VERSION so equal inputs give equal bytes.
    #[serde(default = "yes")]
    #[schemars(extend("x-group" = "Build"))]
    pub reproducible: bool,

    /// Timestamp from commit
    ///
    /// Take the reproducible timestamp from the commit's date instead of the Unix epoch.
    #[serde(default)]
    #[schemars(extend("x-group" = "Build"))]
    pub timestamp_from_commit: bool,

    /// ccache
    ///
    /// Compile through ccache with kforge's managed config (a cache shared by all slots).
    #[serde(default = "yes")]
    #[schemars(extend("x-group" = "Build"))]
    pub ccache: bool,

    /// ccache max size
    ///
    /// The shared cache's size limit, as ccache reads it (`10G`, `500M`).
    #[serde(default = "default_ccache_max_size")]
    #[schemars(extend("x-group" = "Build"))]
    pub ccache_max_size: String,

    /// Developer tools
    ///
    /// Generate `compile_commands.json` for the build (the kernel's own
    /// `gen_compile_commands.py`); it goes into the devel layer for editors and clangd.
    #[serde(default = "yes")]
    #[schemars(extend("x-group" = "Build"))]
    pub devtools: bool,

    // ---- Reuse
    /// Reuse
    ///
    /// Skip compile, install and publish when this build identity already exists in the
    /// slot's destdir/ or this host's store (verified file by file); the manifest then points
    /// at that copy and says where it came from. Off forces a rebuild.
    #[serde(default = "yes")]
    #[schemars(extend("x-group" = "Reuse"))]
    pub reuse: bool,

    /// Use peers
    ///
    /// Before building, fetch this identity's run layer from a registered peer's store
    /// (`kforge peers add`) when one published it; verified against a trusted signing key
    /// before it enters the local store. Takes effect only with `reuse` on.
    #[serde(default)]
    #[schemars(extend("x-group" = "Reuse"))]
    pub use_peers: bool,

    // ---- Installation
    /// make install
    ///
    /// Install the boot image (as `boot/vmlinuz-<release>`, with System.map and config) into destdir/.
    #[serde(default = "yes")]
    #[schemars(extend("x-group" = "Installation"))]
    pub install: bool,

    /// make modules_install
    ///
    /// Install the modules into destdir/lib/modules/<release> and run depmod.
    #[serde(default = "yes")]
    #[schemars(extend("x-group" = "Installation"))]
    pub modules_install: bool,

    /// source symlink
    ///
    /// Add the `/lib/modules/<release>/source` symlink to the source tree after modules_install.
    #[serde(default)]
    #[schemars(extend("x-group" = "Installation"))]
    pub source_symlink: bool,
}

impl Default for KernelRequest {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

impl KernelRequest {
    /// Parses a request file: JSON, or TOML when the name ends in `.toml`.
    pub fn from_file_text(name: &str, text: &str) -> Result<Self, String> {
        if name.ends_with(".toml") {
            toml::from_str(text).map_err(|e| format!("{name}: {e}"))
        } else {
            serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))
        }
    }

    /// The make config goals as words.
    pub fn config_goals(&self) -> Vec<String> {
        self.defconfig.words()
    }

    /// The extra make flags as words.
    pub fn extra_make_flags(&self) -> Vec<String> {
        self.make_flags.words()
    }

    /// Every check that needs only the request. Problems are collected, not stopped at.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        let mut errs = Vec::new();
        if let Some(r) = &self.git_ref
            && let Err(e) = validate_ref(r)
        {
            errs.push(e);
        }
        if let Some(s) = &self.b4_series
            && let Err(e) = crate::series::parse_message_id(s)
        {
            errs.push(e.to_string());
        }
        if let Some(w) = &self.worktree {
            if !w.is_absolute() {
                errs.push(format!("worktree {} must be an absolute path", w.display()));
            }
            if self.git_ref.is_some() || self.b4_series.is_some() {
                errs.push(
                    "worktree builds the worktree's files: give no git_ref and no b4_series with it"
                        .to_owned(),
                );
            }
        }
        if let Some(env) = &self.toolchain_env
            && let Err(e) = crate::toolchain::parse_env(env)
        {
            errs.push(e);
        }
        if self.b4_mbox.is_some() && self.b4_series.is_none() {
            errs.push("b4_mbox is given without b4_series (which message-id?)".to_owned());
        }
        match (&self.label, self.custom_label) {
            (Some(l), true) => {
                if let Err(e) = validate_custom_label(l) {
                    errs.push(e.to_string());
                }
            }
            (None, true) => errs.push("custom_label is on but no label is given".to_owned()),
            (Some(l), false) => errs.push(format!(
                "label `{l}` is given but custom_label is off; turn custom_label on to use it"
            )),
            (None, false) => {}
        }
        // A plain file name, or one qualified by its arch (`arm64/tiny_guest_defconfig`).
        let preset = match self.preset.split_once('/') {
            Some((a, n)) if Arch::ALL.iter().any(|x| x.as_str() == a) => n,
            _ => self.preset.as_str(),
        };
        if !is_plain_name(preset) {
            errs.push(format!("preset `{}` is not a plain file name", self.preset));
        }
        for f in &self.fragments {
            if !f.split('/').all(is_plain_name) || f.split('/').count() != 2 {
                errs.push(format!(
                    "fragment `{f}` is not of the form <category>/<name> (e.g. debug/kasan)"
                ));
            }
        }
        if self.config_method == ConfigMethod::Make {
            let goals = self.config_goals();
            if goals.is_empty() {
                errs.push("config_method make needs at least one defconfig goal".to_owned());
            }
            for g in goals {
                if let Err(e) = kbuild::validate_config_goal(&g) {
                    errs.push(e);
                }
            }
        }
        if self.config_method == ConfigMethod::Fragments && self.fragments.is_empty() {
            errs.push("config_method fragments needs at least one fragment".to_owned());
        }
        for t in &self.targets {
            if let Err(e) = kbuild::validate_target(t) {
                errs.push(e);
            }
        }
        for f in self.extra_make_flags() {
            if let Err(e) = kbuild::validate_make_flag(&f, self.reproducible) {
                errs.push(e);
            }
        }
        if let Err(e) = ccache::validate_max_size(&self.ccache_max_size) {
            errs.push(e);
        }
        match &self.worktree_group {
            Some(g) => {
                if !is_plain_name(g) || g.len() > 64 {
                    errs.push(format!(
                        "worktree_group `{g}` is not a plain name (at most 64 of A-Z a-z 0-9 . _ - +, not starting with . or -)"
                    ));
                }
                if let Some(n) = &self.deploy_name
                    && (!is_plain_name(n) || n.len() > 64)
                {
                    errs.push(format!(
                        "deploy_name `{n}` is not a plain name (at most 64 of A-Z a-z 0-9 . _ - +, not starting with . or -)"
                    ));
                }
                if let Some(d) = &self.deploy_dir
                    && !d.is_absolute()
                {
                    errs.push(format!(
                        "deploy_dir `{}` is not an absolute path",
                        d.display()
                    ));
                }
            }
            None => {
                for (set, name) in [
                    (self.deploy_dir.is_some(), "deploy_dir"),
                    (self.deploy_name.is_some(), "deploy_name"),
                    (self.deploy_replace, "deploy_replace"),
                ] {
                    if set {
                        errs.push(format!(
                            "{name} is given but worktree_group is not (which group?)"
                        ));
                    }
                }
            }
        }
        if self.timestamp_from_commit && !self.reproducible {
            errs.push("timestamp_from_commit needs reproducible".to_owned());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(InvalidRequest(errs))
        }
    }
}

/// A single path component of safe characters (library names).
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
}

/// The JSON Schema (2020-12) of the request.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(KernelRequest);
    let mut value = serde_json::to_value(schema).expect("schema serializes");
    let groups: Vec<serde_json::Value> = GROUPS
        .iter()
        .map(|(name, summary)| serde_json::json!({"name": name, "summary": summary}))
        .collect();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("x-groups".into(), groups.into());
    }
    if let Some(props) = value
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        for prop in props.values_mut() {
            split_title(prop);
        }
    }
    value
}

/// A field's doc comment is "Title\n\nDescription": move the title into `title` and
/// re-flow the description's wrapped lines, as a form generator expects.
fn split_title(prop: &mut serde_json::Value) {
    let Some(desc) = prop.get("description").and_then(|d| d.as_str()) else {
        return;
    };
    let (title, rest) = desc.split_once("\n\n").unwrap_or(("", desc));
    let rest = rest
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n");
    let title = title.trim().to_owned();
    if let Some(obj) = prop.as_object_mut() {
        if !title.is_empty() {
            obj.insert("title".into(), title.into());
        }
        obj.insert("description".into(), rest.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let r = KernelRequest::default();
        assert_eq!(r.config_method, ConfigMethod::Preset);
        assert_eq!(r.preset, "imageless_defconfig");
        assert_eq!(r.compiler, Compiler::Gcc);
        assert!(r.reproducible && r.ccache && r.install && r.modules_install);
        assert!(r.allnoconfig_base);
        assert!(!r.source_symlink && !r.custom_label && !r.wipe_build);
        assert_eq!(r.ccache_max_size, "10G");
        assert_eq!(r.config_goals(), vec!["defconfig"]);
        r.validate().unwrap();
    }

    #[test]
    fn files_parse_as_json_and_toml() {
        let j = KernelRequest::from_file_text(
            "r.json",
            r#"{"git_ref":"v6.12","defconfig":["defconfig","kvm_guest.config"],"config_method":"make","compiler":"clang"}"#,
        )
        .unwrap();
        assert_eq!(j.config_goals(), vec!["defconfig", "kvm_guest.config"]);
        assert_eq!(j.compiler, Compiler::Clang);
        let t = KernelRequest::from_file_text(
            "r.toml",
            "git_ref = \"v6.12\"\nmake_flags = \"W=1 KCFLAGS=-O2\"\n",
        )
        .unwrap();
        assert_eq!(t.extra_make_flags(), vec!["W=1", "KCFLAGS=-O2"]);
        assert!(KernelRequest::from_file_text("r.json", r#"{"gitref":"x"}"#).is_err());
    }

    #[test]
    fn bad_inputs_are_all_reported() {
        let mut r = KernelRequest {
            git_ref: Some("--upload-pack=touch /tmp/pwned".into()),
            custom_label: true,
            label: Some("../etc".into()),
            preset: "../../etc/passwd".into(),
            fragments: vec!["debug".into()],
            targets: vec!["install".into()],
            make_flags: OneOrMany::Many(vec!["O=/tmp".into(), "-f".into(), "--eval=x".into()]),
            ccache_max_size: "lots".into(),
            ..KernelRequest::default()
        };
        let e = r.validate().unwrap_err();
        assert!(e.0.len() >= 8, "{e}");
        r = KernelRequest {
            label: Some("x".into()),
            ..KernelRequest::default()
        };
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("custom_label is off")
        );
    }

    #[test]
    fn schema_has_groups_defaults_and_enums() {
        let s = schema();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        let props = &s["properties"];
        assert_eq!(props["preset"]["default"], "imageless_defconfig");
        assert_eq!(props["reproducible"]["default"], true);
        assert_eq!(props["git_ref"]["x-group"], "Worktree");
        assert_eq!(props["install"]["x-group"], "Installation");
        assert_eq!(props["git_ref"]["title"], "Git ref");
        assert!(
            props["git_ref"]["description"]
                .as_str()
                .unwrap()
                .contains("tag")
        );
        assert_eq!(s["x-groups"].as_array().unwrap().len(), GROUPS.len());
        let text = s.to_string();
        assert!(
            text.contains("\"clang\"") && text.contains("\"fragments\""),
            "{text}"
        );
        // Every field of the request is in the schema (serde's names, from a serialized
        // default), with a group that exists, a title and a description.
        let fields = serde_json::to_value(KernelRequest::default()).unwrap();
        let fields = fields.as_object().unwrap();
        assert_eq!(props.as_object().unwrap().len(), fields.len());
        let groups: Vec<&str> = GROUPS.iter().map(|(g, _)| *g).collect();
        for name in fields.keys() {
            let p = &props[name];
            let group = p["x-group"].as_str().unwrap_or_default();
            assert!(groups.contains(&group), "{name}: group {group:?}");
            assert!(p["title"].is_string(), "{name} has no title");
            assert!(p["description"].is_string(), "{name} has no description");
        }
    }
}
