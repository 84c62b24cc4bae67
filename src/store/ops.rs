//! What the `kforge store` commands do, over entries of every kind, and their answers as
//! typed documents (the binary only prints them). Which entries defined guests use is the
//! caller's knowledge: it comes in as a set of [`EntryName`]s, so the store never reads guests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;

use super::{EntryName, Kind, Layer, LayerRecord, Store, StoreError, gc, sign};
use crate::fsutil::FileLock;

/// `kforge store ls`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Listing {
    pub store: PathBuf,
    pub entries: Vec<Listed>,
}

/// One entry of `kforge store ls`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Listed {
    /// `<kind>-<release>`.
    #[schemars(with = "String")]
    #[serde(serialize_with = "as_text")]
    pub identity: EntryName,
    pub layers: Vec<Layer>,
    /// Bytes of every layer's files, from their records.
    pub size: u64,
    pub pinned: bool,
    /// `local`, or the peer the run layer came from.
    pub origin: Option<String>,
    /// The commit the entry was built from.
    pub commit: Option<String>,
    pub created_unix: Option<u64>,
    /// The run layer's directory.
    pub path: PathBuf,
}

/// `kforge store show IDENTITY`: the records of the entry's layers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Shown {
    #[schemars(with = "Option<serde_json::Value>")]
    pub run: Option<LayerRecord<serde_json::Value>>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub devel: Option<LayerRecord<serde_json::Value>>,
    /// A kernel's selftests (`kforge test kselftest`), a directory per target.
    #[schemars(with = "Option<serde_json::Value>")]
    pub kselftest: Option<LayerRecord<serde_json::Value>>,
}

/// One line of `kforge store verify`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Verified {
    #[schemars(with = "String")]
    #[serde(serialize_with = "as_text")]
    pub identity: EntryName,
    pub layer: Layer,
    pub ok: bool,
    pub problems: Vec<String>,
}

/// `kforge store export`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Exported {
    pub dest: PathBuf,
    #[schemars(with = "Vec<String>")]
    #[serde(serialize_with = "all_as_text")]
    pub exported: Vec<EntryName>,
    /// The name of the key that signed the indexes.
    pub key: String,
}

/// `kforge store trust`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Trusted {
    pub trusted: String,
}

/// `kforge store keys`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Keys {
    /// This host's public signing key, when it has one.
    pub signing: Option<String>,
    /// The names of the trusted keys.
    pub trusted: Vec<String>,
}

fn as_text<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn all_as_text<S: serde::Serializer>(v: &[EntryName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

/// The store at `root`, one view per kind of entry.
pub struct Stores {
    pub root: PathBuf,
    views: Vec<Store>,
}

impl Stores {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let views = Kind::ALL
            .iter()
            .map(|k| Store::open(root, *k))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            root: root.to_path_buf(),
            views,
        })
    }

    /// The view of one kind.
    pub fn of(&self, kind: Kind) -> &Store {
        self.views
            .iter()
            .find(|s| s.kind == kind)
            .expect("a view per kind")
    }

    /// Every entry, kernels first, each kind sorted by release.
    pub fn entries(&self) -> Result<Vec<EntryName>, StoreError> {
        let mut out = Vec::new();
        for s in &self.views {
            out.extend(s.releases()?.into_iter().map(|r| s.entry(&r)));
        }
        Ok(out)
    }

    /// The entry, when it has at least one layer.
    fn existing(&self, name: &EntryName) -> Result<&Store, StoreError> {
        let store = self.of(name.kind);
        if Layer::ALL
            .iter()
            .any(|l| store.layer_dir(*l, &name.release).is_dir())
        {
            Ok(store)
        } else {
            Err(StoreError::Missing(name.clone(), "any"))
        }
    }

    pub fn ls(&self) -> Result<Listing, StoreError> {
        let mut entries = Vec::new();
        for name in self.entries()? {
            let store = self.of(name.kind);
            let r = &name.release;
            let rec = store
                .record::<serde_json::Value>(Layer::Run, r)
                .ok()
                .flatten();
            entries.push(Listed {
                layers: Layer::ALL
                    .into_iter()
                    .filter(|l| store.layer_dir(*l, r).is_dir())
                    .collect(),
                size: store.size_of(r),
                pinned: store.is_pinned(r),
                origin: rec.as_ref().map(|r| r.origin.clone()),
                // Every flow's manifest says which commit it built.
                commit: rec.as_ref().and_then(|r| {
                    r.manifest
                        .get("commit")
                        .and_then(|c| c.as_str())
                        .map(str::to_owned)
                }),
                created_unix: rec.as_ref().map(|r| r.created_unix),
                path: store.layer_dir(Layer::Run, r),
                identity: name,
            });
        }
        Ok(Listing {
            store: self.root.clone(),
            entries,
        })
    }

    pub fn show(&self, name: &EntryName) -> Result<Shown, StoreError> {
        let store = self.existing(name)?;
        Ok(Shown {
            run: store.record(Layer::Run, &name.release)?,
            devel: store.record(Layer::Devel, &name.release)?,
            kselftest: store.record(Layer::Kselftest, &name.release)?,
        })
    }

    /// Re-reads the layers of one entry (or of all) against their records.
    pub fn verify(&self, name: Option<&EntryName>) -> Result<Vec<Verified>, StoreError> {
        let names = match name {
            Some(n) => {
                self.existing(n)?;
                vec![n.clone()]
            }
            None => self.entries()?,
        };
        let mut report = Vec::new();
        for name in names {
            let store = self.of(name.kind);
            for layer in Layer::ALL {
                if !store.layer_dir(layer, &name.release).exists() {
                    continue;
                }
                let problems = store.verify(layer, &name.release)?;
                report.push(Verified {
                    identity: name.clone(),
                    layer,
                    ok: problems.is_empty(),
                    problems,
                });
            }
        }
        Ok(report)
    }

    pub fn pin(&self, name: &EntryName, pinned: bool) -> Result<(), StoreError> {
        self.of(name.kind).pin(&name.release, pinned)
    }

    /// Removes an entry unless a defined guest uses it (`used`) or a build holds it.
    pub fn remove(&self, name: &EntryName, used: &BTreeSet<EntryName>) -> Result<(), StoreError> {
        if used.contains(name) {
            return Err(StoreError::InUse(
                name.clone(),
                "used by a defined guest; `kforge vm rm` it first",
            ));
        }
        let store = self.of(name.kind);
        let Some(_lock) = FileLock::try_acquire(&self.root.join("locks").join(name.to_string()))?
        else {
            return Err(StoreError::InUse(name.clone(), "in use by a running build"));
        };
        self.existing(name)?;
        store.remove(&name.release)
    }

    /// gc over every kind against one policy; `used` entries are kept.
    pub fn gc(
        &self,
        used: &BTreeSet<EntryName>,
        policy: &gc::Policy,
    ) -> Result<gc::Report, StoreError> {
        let views: Vec<&Store> = self.views.iter().collect();
        gc::run(&views, used, policy)
    }

    /// Signs and writes entries (all when none is named) to `dest`, kind by kind.
    pub fn export(
        &self,
        dest: &Path,
        names: &[EntryName],
        key: &sign::Key,
    ) -> Result<Exported, StoreError> {
        let mut exported = Vec::new();
        for store in &self.views {
            let mine: Vec<super::Release> = names
                .iter()
                .filter(|n| n.kind == store.kind)
                .map(|n| n.release.clone())
                .collect();
            if names.is_empty() || !mine.is_empty() {
                exported.extend(super::peers::export(store, dest, &mine, key)?);
            }
        }
        Ok(Exported {
            dest: dest.to_path_buf(),
            exported,
            key: key.name.clone(),
        })
    }
}

/// This host's keys: its own public key (when it has one) and the trusted ones' names.
pub fn keys(system_dir: &Path) -> Result<Keys, StoreError> {
    Ok(Keys {
        signing: sign::load(system_dir).ok().map(|k| k.public()),
        trusted: sign::trusted(system_dir)?
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_small(store: &Store, release: &str) -> EntryName {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs_err::write(&file, release).unwrap();
        let r: super::super::Release = release.parse().unwrap();
        let manifest = serde_json::json!({ "commit": "c0ffee" });
        store
            .publish(
                Layer::Run,
                &r,
                "000000000000",
                &manifest,
                &[super::super::Source {
                    dest: "f".into(),
                    from: file,
                }],
                "local",
            )
            .unwrap();
        store.entry(&r)
    }

    #[test]
    fn one_listing_over_both_kinds_and_errors_name_the_kind() {
        let root = tempfile::tempdir().unwrap();
        let stores = Stores::open(root.path()).unwrap();
        let k = publish_small(stores.of(Kind::Kernel), "6.12.117-x-0123456789ab");
        let q = publish_small(stores.of(Kind::Qemu), "7.2.22-0123456789ab");
        let ls = stores.ls().unwrap();
        let names: Vec<String> = ls.entries.iter().map(|e| e.identity.to_string()).collect();
        assert_eq!(names, [k.to_string(), q.to_string()]);
        assert_eq!(ls.entries[1].commit.as_deref(), Some("c0ffee"));
        assert_eq!(ls.entries[1].layers, [Layer::Run]);
        let json = serde_json::to_value(&ls).unwrap();
        assert_eq!(json["entries"][1]["identity"], "qemu-7.2.22-0123456789ab");
        assert_eq!(json["entries"][1]["layers"], serde_json::json!(["run"]));

        let v = stores.verify(None).unwrap();
        assert!(v.iter().all(|v| v.ok), "{v:?}");
        let missing: EntryName = "qemu-7.2.22-ffffffffffff".parse().unwrap();
        let e = stores.show(&missing).unwrap_err().to_string();
        assert!(e.contains("no store entry qemu-7.2.22-ffffffffffff"), "{e}");
        let e = stores.verify(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("qemu-7.2.22-ffffffffffff"), "{e}");

        let used = BTreeSet::from([q.clone()]);
        let e = stores.remove(&q, &used).unwrap_err().to_string();
        assert!(e.contains("used by a defined guest"), "{e}");
        stores.remove(&q, &BTreeSet::new()).unwrap();
        assert_eq!(stores.entries().unwrap(), [k]);
    }
}
