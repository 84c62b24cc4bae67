//! The kconfig library: whole-kernel presets (`defconfigs/<name>`) and fragments by category
//! (`fragments/<category>/<name>.config`). kforge ships one (built into the binary from the
//! repo's `kconfig-library/`); a user can point `--library` at another directory.

use std::path::PathBuf;

use include_dir::{Dir, include_dir};

use crate::arch::Arch;

static BUILTIN: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/kconfig-library");

/// Category order for merging: general first, debug late, `builtin` (=y overrides) last;
/// categories not named here merge between `debug` and `builtin`, alphabetically.
pub const CATEGORY_ORDER: &[&str] = &[
    "core", "arch", "virtio", "block", "fs", "net", "security", "debug",
];

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("unknown preset `{name}`; the library ({origin}) has: {}", .available.join(", "))]
    UnknownPreset {
        name: String,
        origin: String,
        available: Vec<String>,
    },
    #[error("unknown fragment `{name}`; the library ({origin}) has: {}", .available.join(", "))]
    UnknownFragment {
        name: String,
        origin: String,
        available: Vec<String>,
    },
    #[error("the {what} `{name}` is for {its}, and this build is for {wanted}{hint}")]
    OtherArch {
        what: &'static str,
        name: String,
        its: Arch,
        wanted: Arch,
        /// What the library has for `wanted`, when there is something to say.
        hint: String,
    },
    #[error("reading the library: {0}")]
    Io(#[from] std::io::Error),
}

/// Where presets and fragments come from.
#[derive(Debug, Clone)]
pub enum Library {
    Builtin,
    Dir(PathBuf),
}

/// What `kforge library` prints.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Listing {
    /// Whole-kernel configs (`defconfigs/<name>`).
    pub presets: Vec<String>,
    /// Fragments as `<category>/<name>`.
    pub fragments: Vec<String>,
}

impl Library {
    pub fn new(dir: Option<PathBuf>) -> Self {
        dir.map_or(Library::Builtin, Library::Dir)
    }

    fn origin(&self) -> String {
        match self {
            Library::Builtin => "built in".to_owned(),
            Library::Dir(d) => d.display().to_string(),
        }
    }

    fn list(&self, sub: &str) -> Result<Vec<String>, LibraryError> {
        let mut out = Vec::new();
        match self {
            Library::Builtin => {
                if let Some(d) = BUILTIN.get_dir(sub) {
                    for f in d.files() {
                        out.push(
                            f.path()
                                .strip_prefix(sub)
                                .unwrap_or(f.path())
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                    for sd in d.dirs() {
                        for f in sd.files() {
                            out.push(
                                f.path()
                                    .strip_prefix(sub)
                                    .unwrap_or(f.path())
                                    .to_string_lossy()
                                    .into_owned(),
                            );
                        }
                    }
                }
            }
            Library::Dir(root) => {
                let base = root.join(sub);
                if base.is_dir() {
                    for e in fs_err::read_dir(&base)? {
                        let e = e?;
                        if e.file_type()?.is_dir() {
                            for f in fs_err::read_dir(e.path())? {
                                let f = f?;
                                out.push(format!(
                                    "{}/{}",
                                    e.file_name().to_string_lossy(),
                                    f.file_name().to_string_lossy()
                                ));
                            }
                        } else {
                            out.push(e.file_name().to_string_lossy().into_owned());
                        }
                    }
                }
            }
        }
        out.retain(|n| !n.ends_with(".md") && !n.starts_with('.'));
        out.sort();
        Ok(out)
    }

    fn read(&self, rel: &str) -> Result<Option<String>, LibraryError> {
        match self {
            Library::Builtin => Ok(BUILTIN
                .get_file(rel)
                .map(|f| String::from_utf8_lossy(f.contents()).into_owned())),
            Library::Dir(root) => {
                let p = root.join(rel);
                if p.is_file() {
                    Ok(Some(fs_err::read_to_string(p)?))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// `kforge library`: every preset and fragment.
    pub fn listing(&self) -> Result<Listing, LibraryError> {
        Ok(Listing {
            presets: self.presets()?,
            fragments: self.fragments()?,
        })
    }

    pub fn presets(&self) -> Result<Vec<String>, LibraryError> {
        self.list("defconfigs")
    }

    /// The fragments as `<category>/<name>` (without `.config`).
    pub fn fragments(&self) -> Result<Vec<String>, LibraryError> {
        Ok(self
            .list("fragments")?
            .into_iter()
            .filter(|n| n.contains('/'))
            .map(|n| n.trim_end_matches(".config").to_owned())
            .collect())
    }

    /// A preset's text.
    pub fn preset(&self, name: &str) -> Result<String, LibraryError> {
        self.read(&format!("defconfigs/{name}"))?
            .ok_or_else(|| LibraryError::UnknownPreset {
                name: name.to_owned(),
                origin: self.origin(),
                available: self.presets().unwrap_or_default(),
            })
    }

    /// Where `arch`'s presets live: x86_64's directly in `defconfigs/`, another arch's in
    /// `defconfigs/<arch>/`.
    fn preset_dir(arch: Arch) -> String {
        match arch {
            Arch::X86_64 => String::new(),
            a => format!("{a}/"),
        }
    }

    /// `arch`'s presets, by the names a request gives them (`tiny_guest_defconfig`).
    pub fn presets_for(&self, arch: Arch) -> Result<Vec<String>, LibraryError> {
        let dir = Self::preset_dir(arch);
        Ok(self
            .presets()?
            .into_iter()
            .filter_map(|p| match p.strip_prefix(&dir) {
                Some(n) if !n.contains('/') => Some(n.to_owned()),
                _ => None,
            })
            .collect())
    }

    /// The preset `name` of `arch` (`tiny_guest_defconfig` builds the arch's own tiny guest;
    /// `arm64/tiny_guest_defconfig` is accepted for arm64). A preset of another arch is
    /// refused, naming this arch's.
    pub fn preset_for(&self, name: &str, arch: Arch) -> Result<String, LibraryError> {
        let other = |its: Arch| LibraryError::OtherArch {
            what: "preset",
            name: name.to_owned(),
            its,
            wanted: arch,
            hint: format!(
                "; its presets: {}",
                self.presets_for(arch).unwrap_or_default().join(", ")
            ),
        };
        let qualified = name
            .split_once('/')
            .and_then(|(a, n)| Some((Arch::ALL.into_iter().find(|x| x.as_str() == a)?, n)));
        let base = match qualified {
            Some((its, _)) if its != arch => return Err(other(its)),
            Some((_, n)) => n,
            None => name,
        };
        let path = |a: Arch| format!("defconfigs/{}{base}", Self::preset_dir(a));
        if let Some(text) = self.read(&path(arch))? {
            return Ok(text);
        }
        for its in Arch::ALL {
            if its != arch && self.read(&path(its))?.is_some() {
                return Err(other(its));
            }
        }
        Err(LibraryError::UnknownPreset {
            name: name.to_owned(),
            origin: self.origin(),
            available: self.presets_for(arch).unwrap_or_default(),
        })
    }

    /// Refuses a fragment of another arch (`arch/arm64` in an x86_64 build); the other
    /// categories hold options every arch has.
    pub fn check_fragment_arch(id: &str, arch: Arch) -> Result<(), LibraryError> {
        let id = id.trim_end_matches(".config");
        if let Some(name) = id.strip_prefix("arch/")
            && let Some(its) = Arch::ALL.into_iter().find(|a| a.as_str() == name)
            && its != arch
        {
            return Err(LibraryError::OtherArch {
                what: "fragment",
                name: id.to_owned(),
                its,
                wanted: arch,
                hint: format!("; use arch/{arch}"),
            });
        }
        Ok(())
    }

    /// A fragment's text, by `<category>/<name>` (a trailing `.config` is accepted).
    pub fn fragment(&self, id: &str) -> Result<String, LibraryError> {
        let id = id.trim_end_matches(".config");
        self.read(&format!("fragments/{id}.config"))?
            .ok_or_else(|| LibraryError::UnknownFragment {
                name: id.to_owned(),
                origin: self.origin(),
                available: self.fragments().unwrap_or_default(),
            })
    }
}

fn category_rank(category: &str) -> (usize, String) {
    if category == "builtin" {
        return (usize::MAX, String::new());
    }
    match CATEGORY_ORDER.iter().position(|c| *c == category) {
        Some(i) => (i, String::new()),
        None => (CATEGORY_ORDER.len(), category.to_owned()),
    }
}

/// The canonical merge order of fragment ids: by category rank, then by name; duplicates
/// removed. The result does not depend on the order the user gave.
pub fn canonical_order(ids: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ids
        .iter()
        .map(|s| s.trim_end_matches(".config").to_owned())
        .collect();
    v.sort_by(|a, b| {
        let (ca, na) = a.split_once('/').unwrap_or(("", a));
        let (cb, nb) = b.split_once('/').unwrap_or(("", b));
        category_rank(ca).cmp(&category_rank(cb)).then(na.cmp(nb))
    });
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_canonical_whatever_the_input() {
        let a = canonical_order(&[
            "builtin/virtio".into(),
            "debug/kasan".into(),
            "core/base".into(),
            "zz/extra".into(),
            "virtio/virtiofs".into(),
            "arch/x86_64".into(),
            "debug/kasan".into(),
        ]);
        assert_eq!(
            a,
            vec![
                "core/base",
                "arch/x86_64",
                "virtio/virtiofs",
                "debug/kasan",
                "zz/extra",
                "builtin/virtio"
            ]
        );
        let mut rev: Vec<String> = a.iter().rev().cloned().collect();
        rev.push("core/base".into());
        assert_eq!(canonical_order(&rev), a);
    }

    #[test]
    fn builtin_library_has_the_promised_parts() {
        let l = Library::Builtin;
        let presets = l.presets().unwrap();
        assert!(
            presets.contains(&"imageless_defconfig".to_owned()),
            "{presets:?}"
        );
        assert!(
            presets.contains(&"tiny_guest_defconfig".to_owned()),
            "{presets:?}"
        );
        let frags = l.fragments().unwrap();
        for cat in [
            "core/", "arch/", "virtio/", "fs/", "net/", "debug/", "builtin/",
        ] {
            assert!(
                frags.iter().any(|f| f.starts_with(cat)),
                "no {cat} in {frags:?}"
            );
        }
        for f in ["debug/kasan", "debug/lockdep", "debug/kmemleak"] {
            assert!(frags.contains(&f.to_owned()), "{f}");
        }
        let e = l.preset("nope").unwrap_err().to_string();
        assert!(e.contains("imageless_defconfig"), "{e}");
        let e = l.fragment("debug/nope").unwrap_err().to_string();
        assert!(e.contains("debug/kasan"), "{e}");
    }

    #[test]
    fn each_arch_has_its_presets_by_the_same_names() {
        let l = Library::Builtin;
        for arch in Arch::ALL {
            let names = l.presets_for(arch).unwrap();
            assert_eq!(
                names,
                ["imageless_defconfig", "tiny_guest_defconfig"],
                "{arch}"
            );
            for n in &names {
                let text = l.preset_for(n, arch).unwrap();
                let own = match arch {
                    Arch::X86_64 => "x86_64",
                    Arch::Arm64 => "for arm64",
                    Arch::Riscv64 => "for riscv64",
                };
                assert!(text.lines().next().unwrap().contains(own), "{arch} {n}");
            }
        }
        // Qualified names: the arch's own, or refused for another.
        assert_eq!(
            l.preset_for("arm64/tiny_guest_defconfig", Arch::Arm64)
                .unwrap(),
            l.preset_for("tiny_guest_defconfig", Arch::Arm64).unwrap()
        );
        let e = l
            .preset_for("riscv64/imageless_defconfig", Arch::X86_64)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is for riscv64, and this build is for x86_64"),
            "{e}"
        );
        let e = l.preset_for("nope", Arch::Arm64).unwrap_err().to_string();
        assert!(e.contains("unknown preset `nope`"), "{e}");
        assert!(Library::check_fragment_arch("arch/arm64", Arch::Arm64).is_ok());
        assert!(Library::check_fragment_arch("core/base", Arch::Riscv64).is_ok());
        let e = Library::check_fragment_arch("arch/riscv64.config", Arch::Arm64).unwrap_err();
        assert!(e.to_string().contains("use arch/arm64"), "{e}");
    }
}
