//! The configure memory: which `.config` (and so which identity) a set of inputs produced
//! before, shared by every slot under the system dir. configure asks it before running
//! Kconfig; the fast path ([`super::known`]) asks it before taking a slot at all.
//!
//! One file per key (`SYSTEM_DIR/configure-memory/<key>.json`) and one copy of each
//! remembered `.config` by content (`configs/<sha256>.config`), each written atomically: two
//! slots remembering at once never corrupt it, and a copy that is missing or altered makes
//! a miss, never a wrong answer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Plan;
use super::configure::{Configured, label_source};
use crate::dirs::Dirs;
use crate::error::Error;
use crate::fsutil::write_atomic;
use crate::kernel::request::ConfigMethod;
use crate::toolchain::ToolchainIdentity;

/// Everything that decides what configure produces: the method and its inputs (library
/// texts in merge order, goals, base), the tree, the toolchain (Kconfig probes the
/// compiler), the make flags, and what the label comes from. Equal keys give the same
/// `.config` and identity.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInputs<'a> {
    pub scheme: &'static str,
    pub method: &'static str,
    /// (name, text) of the presets or fragments Kconfig is fed, in merge order.
    pub inputs: &'a [(String, String)],
    /// In-tree goals, for `config_method = make`.
    pub goals: Vec<String>,
    pub allnoconfig_base: bool,
    pub tree: &'a str,
    pub toolchain: &'a ToolchainIdentity,
    pub make_flags: &'a [String],
    pub label_source: String,
}

impl KeyInputs<'_> {
    pub const SCHEME: &'static str = "kforge-configure-memory/1";

    /// The key: sha256 of the inputs.
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(
            serde_json::to_vec(self).expect("key inputs serialize"),
        ))
    }
}

/// The memory's key for a plan, at `tree`, with these identity flags (and the series
/// applied, whose subject is the label's source).
pub fn key(
    plan: &Plan,
    tree: &str,
    identity_flags: &[String],
    series: Option<&crate::series::Applied>,
) -> String {
    let label = format!("{:?}", label_source(plan, series));
    key_inputs(plan, KeyInputs::SCHEME, tree, identity_flags, label).key()
}

/// The key of the second level: the same inputs, but of the tree only what Kconfig reads
/// ([`kconfig_inputs`]) and no label (the base `.config` has an empty LOCALVERSION).
pub fn base_key(plan: &Plan, kconfig_inputs: &str, identity_flags: &[String]) -> String {
    key_inputs(
        plan,
        "kforge-configure-base/1",
        kconfig_inputs,
        identity_flags,
        String::new(),
    )
    .key()
}

fn key_inputs<'a>(
    plan: &'a Plan,
    scheme: &'static str,
    tree: &'a str,
    identity_flags: &'a [String],
    label_source: String,
) -> KeyInputs<'a> {
    let req = &plan.request;
    KeyInputs {
        scheme,
        method: req.config_method.as_str(),
        inputs: &plan.config_inputs,
        goals: if req.config_method == ConfigMethod::Make {
            req.config_goals()
        } else {
            Vec::new()
        },
        allnoconfig_base: req.config_method == ConfigMethod::Fragments && req.allnoconfig_base,
        tree,
        toolchain: &plan.toolchain,
        make_flags: identity_flags,
        label_source,
    }
}

/// Whether Kconfig (or a config goal) reads `path` of the tree: every Kconfig file,
/// scripts/ (Kconfig.include, the probes it runs), the top and arch Makefiles (included for
/// config targets), and the config goals' directories (`arch/*/configs`, `kernel/configs`).
pub fn read_by_kconfig(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("Kconfig")
        || path.starts_with("scripts/")
        || path == "Makefile"
        || path.contains("/configs/")
        || path
            .strip_prefix("arch/")
            .and_then(|p| p.split_once('/'))
            .is_some_and(|(_, rest)| rest.starts_with("Makefile"))
}

/// A digest of what Kconfig reads of `tree` (in the git repository at `repo`): the object
/// ids of [`read_by_kconfig`]'s files. An edit to any other file leaves it unchanged.
pub fn kconfig_inputs(repo: &Path, tree: &str) -> Result<String, Error> {
    let listing = crate::slot::git::git(repo)
        .args(["ls-tree", "-r", "--full-tree", "--end-of-options", tree])
        .output()?;
    let mut h = Sha256::new();
    for line in listing.lines() {
        if let Some((_, path)) = line.split_once('\t')
            && read_by_kconfig(path)
        {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// A remembered base `.config`: what Kconfig made, before the identity is baked in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseEntry {
    pub key: String,
    pub text: String,
    pub warnings: Vec<String>,
}

/// A remembered configure result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub key: String,
    pub configured: Configured,
    /// sha256 of the whole `.config` configure left (identity baked in).
    pub config_sha256: String,
    pub warnings: Vec<String>,
}

/// An entry whose `.config` copy is there, intact.
#[derive(Debug, Clone)]
pub struct Recalled {
    pub entry: Entry,
    /// The memory's copy of the `.config`.
    pub config: PathBuf,
}

impl Recalled {
    /// Puts the recalled `.config` at `dest` (a slot's build/.config) unless it is there.
    pub fn restore(&self, dest: &Path) -> Result<(), Error> {
        if sha256_of(dest).as_deref() != Some(self.entry.config_sha256.as_str()) {
            let build = dest.parent().expect("a .config has a directory");
            super::config_file::write(build, &fs_err::read(&self.config)?)?;
        }
        Ok(())
    }
}

/// The configure memory under a system dir.
#[derive(Debug, Clone)]
pub struct Memory {
    dir: PathBuf,
}

fn sha256_of(path: &Path) -> Option<String> {
    fs_err::read(path)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

impl Memory {
    /// How many keys are kept; the least recently used go first.
    const KEEP: usize = 256;

    pub fn of(dirs: &Dirs) -> Self {
        Self {
            dir: dirs.system_dir.join("configure-memory"),
        }
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn base_path(&self, key: &str) -> PathBuf {
        self.dir.join("base").join(format!("{key}.json"))
    }

    /// The base `.config` remembered for `key`.
    pub fn recall_base(&self, key: &str) -> Option<BaseEntry> {
        let path = self.base_path(key);
        let entry: BaseEntry = serde_json::from_slice(&fs_err::read(&path).ok()?).ok()?;
        if entry.key != key {
            return None;
        }
        let _ = crate::fsutil::touch(&path, std::time::SystemTime::now());
        Some(entry)
    }

    /// Remembers the base `.config` `key`'s inputs produced.
    pub fn remember_base(&self, entry: &BaseEntry) -> Result<(), Error> {
        let path = self.base_path(&entry.key);
        fs_err::create_dir_all(path.parent().expect("base/ has a parent"))?;
        write_atomic(&path, &serde_json::to_vec(entry).expect("entry serializes"))?;
        // The least recently used go first.
        if let Ok(dir) = fs_err::read_dir(path.parent().expect("base/ has a parent")) {
            let mut all: Vec<(std::time::SystemTime, PathBuf)> = dir
                .flatten()
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            if all.len() > Self::KEEP {
                all.sort();
                for (_, p) in &all[..all.len() - Self::KEEP] {
                    let _ = fs_err::remove_file(p);
                }
            }
        }
        Ok(())
    }

    fn config_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("configs").join(format!("{sha256}.config"))
    }

    /// The result remembered for `key`, when its `.config` copy is intact.
    pub fn recall(&self, key: &str) -> Option<Recalled> {
        let path = self.entry_path(key);
        let entry: Entry = serde_json::from_slice(&fs_err::read(&path).ok()?).ok()?;
        let config = self.config_path(&entry.config_sha256);
        if entry.key != key || sha256_of(&config)? != entry.config_sha256 {
            return None;
        }
        // Recently used: the last to be forgotten.
        let _ = crate::fsutil::touch(&path, std::time::SystemTime::now());
        Some(Recalled { entry, config })
    }

    /// Remembers what `key`'s inputs produced.
    pub fn remember(
        &self,
        key: String,
        configured: &Configured,
        config: &[u8],
        warnings: Vec<String>,
    ) -> Result<(), Error> {
        let config_sha256 = hex::encode(Sha256::digest(config));
        let copy = self.config_path(&config_sha256);
        fs_err::create_dir_all(copy.parent().expect("configs/ has a parent"))?;
        if sha256_of(&copy).as_deref() != Some(config_sha256.as_str()) {
            write_atomic(&copy, config)?;
        }
        let path = self.entry_path(&key);
        let entry = Entry {
            key,
            configured: configured.clone(),
            config_sha256,
            warnings,
        };
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&entry).expect("entry serializes"),
        )?;
        self.forget_old();
        Ok(())
    }

    /// Keeps the [`Self::KEEP`] most recently used keys and the copies they name. Another
    /// slot may remember at the same moment: a copy removed under it makes its entry a miss.
    fn forget_old(&self) {
        let Ok(dir) = fs_err::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = dir
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if entries.len() <= Self::KEEP {
            return;
        }
        entries.sort();
        let drop = entries.len() - Self::KEEP;
        for (_, p) in &entries[..drop] {
            let _ = fs_err::remove_file(p);
        }
        let kept: std::collections::BTreeSet<String> = entries[drop..]
            .iter()
            .filter_map(|(_, p)| serde_json::from_slice::<Entry>(&fs_err::read(p).ok()?).ok())
            .map(|e| format!("{}.config", e.config_sha256))
            .collect();
        if let Ok(configs) = fs_err::read_dir(self.dir.join("configs")) {
            for c in configs.flatten() {
                if !kept.contains(&*c.file_name().to_string_lossy()) {
                    let _ = fs_err::remove_file(c.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kconfig_reads_its_files_scripts_makefiles_and_config_goals_only() {
        for (path, read) in [
            ("Kconfig", true),
            ("init/Kconfig", true),
            ("lib/Kconfig.debug", true),
            ("scripts/Kconfig.include", true),
            ("scripts/kconfig/conf.c", true),
            ("Makefile", true),
            ("arch/x86/Makefile", true),
            ("arch/x86/Makefile_32.cpu", true),
            ("arch/x86/configs/x86_64_defconfig", true),
            ("kernel/configs/kvm_guest.config", true),
            ("init/version.c", false),
            ("init/Makefile", false),
            ("include/linux/kconfig.h", false),
            ("arch/x86/kernel/Makefile", false),
            ("Documentation/kbuild/kconfig.rst", false),
        ] {
            assert_eq!(read_by_kconfig(path), read, "{path}");
        }
    }

    fn toolchain(cc: &str) -> ToolchainIdentity {
        ToolchainIdentity {
            compiler: "gcc".into(),
            cc: cc.into(),
            linker: "GNU ld 2.40".into(),
            make: "GNU Make 4.3".into(),
            env: None,
            tools: std::collections::BTreeMap::new(),
        }
    }

    /// Each input that shapes `.config` moves the key: a request that changed any of them is
    /// never answered from what another produced.
    #[test]
    fn every_input_that_shapes_the_config_moves_the_key() {
        let gcc = toolchain("gcc 12.2.0");
        let gcc13 = toolchain("gcc 13.1.0");
        let preset = vec![("tiny".to_owned(), "CONFIG_A=y\n".to_owned())];
        let edited = vec![("tiny".to_owned(), "CONFIG_A=y\n# a comment\n".to_owned())];
        let fragments = vec![
            ("core/base".to_owned(), "CONFIG_A=y\n".to_owned()),
            ("debug/kasan".to_owned(), "CONFIG_KASAN=y\n".to_owned()),
        ];
        let reordered = vec![fragments[1].clone(), fragments[0].clone()];
        let flags = vec!["ARCH=x86_64".to_owned(), "CC=gcc".to_owned()];
        let w1 = vec![
            "ARCH=x86_64".to_owned(),
            "CC=gcc".to_owned(),
            "W=1".to_owned(),
        ];
        let base = KeyInputs {
            scheme: KeyInputs::SCHEME,
            method: "preset",
            inputs: &preset,
            goals: Vec::new(),
            allnoconfig_base: false,
            tree: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            toolchain: &gcc,
            make_flags: &flags,
            label_source: "Tag".into(),
        };
        let variants = [
            (
                "library text",
                KeyInputs {
                    inputs: &edited,
                    ..base.clone()
                },
            ),
            (
                "method",
                KeyInputs {
                    method: "fragments",
                    ..base.clone()
                },
            ),
            (
                "fragments",
                KeyInputs {
                    method: "fragments",
                    inputs: &fragments,
                    ..base.clone()
                },
            ),
            (
                "fragment merge order",
                KeyInputs {
                    method: "fragments",
                    inputs: &reordered,
                    ..base.clone()
                },
            ),
            (
                "allnoconfig_base",
                KeyInputs {
                    allnoconfig_base: true,
                    ..base.clone()
                },
            ),
            (
                "a defconfig goal",
                KeyInputs {
                    method: "make",
                    goals: vec!["defconfig".into()],
                    ..base.clone()
                },
            ),
            (
                "another goal",
                KeyInputs {
                    method: "make",
                    goals: vec!["defconfig".into(), "kvm_guest.config".into()],
                    ..base.clone()
                },
            ),
            (
                "the tree",
                KeyInputs {
                    tree: "d75875396df0d4f353768b95933536e1c1699009",
                    ..base.clone()
                },
            ),
            (
                "the toolchain",
                KeyInputs {
                    toolchain: &gcc13,
                    ..base.clone()
                },
            ),
            (
                "make flags",
                KeyInputs {
                    make_flags: &w1,
                    ..base.clone()
                },
            ),
            (
                "the label's source",
                KeyInputs {
                    label_source: "Ref(\"master\")".into(),
                    ..base.clone()
                },
            ),
        ];
        let mut keys = std::collections::BTreeSet::from([base.key()]);
        for (what, v) in &variants {
            assert!(keys.insert(v.key()), "changing {what} did not move the key");
        }
        assert_eq!(base.key(), base.clone().key(), "the key is stable");
    }

    #[test]
    fn a_remembered_config_is_recalled_only_while_its_copy_is_intact() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Memory {
            dir: dir.path().join("configure-memory"),
        };
        let configured = Configured {
            uts_release: "6.12.118-vanilla-0123456789ab".into(),
            version: "6.12.118".into(),
            label: "vanilla".into(),
            digest: "0123456789ab".into(),
            inputs: crate::identity::IdentityInputs {
                scheme: crate::identity::IdentityInputs::SCHEME.into(),
                config_sha256: "00".into(),
                toolchain: toolchain("gcc"),
                make_flags: Vec::new(),
                tree: "t".into(),
            },
        };
        assert!(memory.recall("k").is_none());
        memory
            .remember("k".into(), &configured, b"CONFIG_A=y\n", vec!["w".into()])
            .unwrap();
        let found = memory.recall("k").unwrap();
        assert_eq!(found.entry.configured, configured);
        assert_eq!(found.entry.warnings, ["w"]);
        assert_eq!(fs_err::read(&found.config).unwrap(), b"CONFIG_A=y\n");
        let dest = dir.path().join("build/.config");
        found.restore(&dest).unwrap();
        assert_eq!(fs_err::read(&dest).unwrap(), b"CONFIG_A=y\n");
        assert!(memory.recall("other").is_none());
        // An altered copy is a miss, not a wrong answer.
        fs_err::write(&found.config, b"CONFIG_A=n\n").unwrap();
        assert!(memory.recall("k").is_none());
    }
}
