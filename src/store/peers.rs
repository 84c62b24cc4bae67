//! Peers: other hosts' stores, exported to a static layout that any web server, bucket or
//! shared directory can serve, and fetched from in the order they were registered.
//!
//! ```text
//! DEST/kforge-cache.json                 {"schema": "kforge-cache/1", "identities": [...]}
//! DEST/<kind>-<release>/run.json         the signed index of the run layer
//! DEST/<kind>-<release>/run.tar.gz       its files
//! DEST/<kind>-<release>/devel.json, devel.tar.gz
//! ```
//!
//! An index names the identity, the layer, the archive's sha256 and size, and the layer's
//! record (every file's sha256 and size, and the manifest of the build that made it); an
//! ed25519 signature covers all of it. A fetched layer becomes visible in the local store
//! only after the signature (by a trusted key), the archive's hash, a safe unpacking and
//! every file's hash have been checked.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{EntryName, Layer, LayerRecord, Release, Store, StoreError, archive, sign};
use crate::fsutil::write_atomic;

pub const INDEX_SCHEMA: &str = "kforge-index/1";
const SIGNED_PREFIX: &[u8] = b"kforge-index-signature/1\n";

/// What the signature covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub schema: String,
    pub uts_release: String,
    pub layer: Layer,
    pub archive: String,
    pub archive_sha256: String,
    pub archive_size: u64,
    /// The layer's record, with the manifest of the flow that made it.
    pub record: LayerRecord<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key: String,
    pub sig: String,
}

/// `<layer>.json` in an exported store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    #[serde(flatten)]
    pub signed: Signed,
    pub signature: Option<Signature>,
}

impl Signed {
    /// The bytes the signature is made over.
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = SIGNED_PREFIX.to_vec();
        v.extend(serde_json::to_vec(self).expect("index serializes"));
        v
    }
}

/// Signs an index with this host's key.
pub fn sign_index(signed: Signed, key: &sign::Key) -> Index {
    let sig = key.sign(&signed.bytes());
    Index {
        signed,
        signature: Some(Signature {
            key: key.name.clone(),
            sig,
        }),
    }
}

/// Writes the layers of `releases` (all of the store's kind when empty) to `dest` in the
/// static layout, beside what is there already; the entries written.
pub fn export(
    store: &Store,
    dest: &Path,
    releases: &[Release],
    key: &sign::Key,
) -> Result<Vec<EntryName>, StoreError> {
    let releases = if releases.is_empty() {
        store.releases()?
    } else {
        releases.to_vec()
    };
    fs_err::create_dir_all(dest)?;
    let mut done = Vec::new();
    for release in &releases {
        let mut any = false;
        for layer in Layer::ALL {
            let Some(record) = store.record::<serde_json::Value>(layer, release)? else {
                continue;
            };
            let problems = store.verify(layer, release)?;
            if !problems.is_empty() {
                return Err(StoreError::Damaged {
                    path: store.layer_dir(layer, release),
                    problems,
                });
            }
            let dir = dest.join(store.entry_name(release));
            fs_err::create_dir_all(&dir)?;
            let name = format!("{}.tar.gz", layer.as_str());
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            archive::pack(&store.layer_dir(layer, release), &record, &tmp)?;
            let (archive_sha256, archive_size) = super::hash_file(&tmp)?;
            fs_err::rename(&tmp, dir.join(&name))?;
            let index = sign_index(
                Signed {
                    schema: INDEX_SCHEMA.to_owned(),
                    uts_release: release.to_string(),
                    layer,
                    archive: name,
                    archive_sha256,
                    archive_size,
                    record,
                },
                key,
            );
            let mut text = serde_json::to_vec_pretty(&index).expect("index serializes");
            text.push(b'\n');
            write_atomic(&dir.join(format!("{}.json", layer.as_str())), &text)?;
            any = true;
        }
        if !any {
            return Err(StoreError::Missing(store.entry(release), "any"));
        }
        done.push(store.entry(release));
    }
    let mut listed: Vec<String> = fs_err::read_dir(dest)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<EntryName>().is_ok_and(|e| e.to_string() == *n))
        .collect();
    listed.sort();
    let top = serde_json::json!({ "schema": "kforge-cache/1", "identities": listed });
    write_atomic(
        &dest.join("kforge-cache.json"),
        serde_json::to_string_pretty(&top)
            .expect("serializes")
            .as_bytes(),
    )?;
    Ok(done)
}

/// A registered peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    /// `http://`, `https://`, `file://` or an absolute directory.
    pub url: String,
}

fn registry(system_dir: &Path) -> PathBuf {
    system_dir.join("peers.json")
}

pub fn validate_peer(name: &str, url: &str) -> Result<(), StoreError> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
        || name.starts_with('-')
    {
        return Err(StoreError::BadInput(format!(
            "peer name `{name}`: use 1-32 of a-z, 0-9, `_`, `-`"
        )));
    }
    let ok_url = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > 8
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    let ok_path = url.starts_with('/') || url.starts_with("file:///");
    if !(ok_url || ok_path) {
        return Err(StoreError::BadInput(format!(
            "peer `{url}`: give an http(s):// URL, a file:/// URL or an absolute directory"
        )));
    }
    Ok(())
}

pub fn list(system_dir: &Path) -> Result<Vec<Peer>, StoreError> {
    match fs_err::read(registry(system_dir)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            StoreError::BadInput(format!(
                "{} does not parse: {e}",
                registry(system_dir).display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn save(system_dir: &Path, peers: &[Peer]) -> Result<(), StoreError> {
    fs_err::create_dir_all(system_dir)?;
    let text = serde_json::to_vec_pretty(peers).expect("serializes");
    write_atomic(&registry(system_dir), &text)?;
    Ok(())
}

pub fn add(system_dir: &Path, name: &str, url: &str) -> Result<(), StoreError> {
    validate_peer(name, url)?;
    let mut peers = list(system_dir)?;
    if peers.iter().any(|p| p.name == name) {
        return Err(StoreError::BadInput(format!(
            "peer `{name}` exists; `kforge peers rm {name}` first"
        )));
    }
    peers.push(Peer {
        name: name.to_owned(),
        url: url.trim_end_matches('/').to_owned(),
    });
    save(system_dir, &peers)
}

pub fn remove(system_dir: &Path, name: &str) -> Result<(), StoreError> {
    let mut peers = list(system_dir)?;
    let before = peers.len();
    peers.retain(|p| p.name != name);
    if peers.len() == before {
        return Err(StoreError::BadInput(format!("no peer `{name}`")));
    }
    save(system_dir, &peers)
}

/// Reads `<peer>/<rel>`: `Ok(None)` when the peer does not have it.
fn get(peer: &Peer, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, String> {
    if let Some(dir) = peer
        .url
        .strip_prefix("file://")
        .or_else(|| peer.url.starts_with('/').then_some(peer.url.as_str()))
    {
        let p = Path::new(dir).join(rel);
        return match fs_err::File::open(&p) {
            Ok(f) => {
                let mut v = Vec::new();
                f.take(limit + 1)
                    .read_to_end(&mut v)
                    .map_err(|e| e.to_string())?;
                Ok(Some(v))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        };
    }
    let url = format!("{}/{rel}", peer.url);
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_mins(5)))
        .timeout_connect(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
    match resp.status().as_u16() {
        200 => {}
        404 | 410 => return Ok(None),
        s => return Err(format!("{url}: HTTP {s}")),
    }
    let mut v = Vec::new();
    resp.into_body()
        .into_reader()
        .take(limit + 1)
        .read_to_end(&mut v)
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(Some(v))
}

/// What asking the registered peers for an identity came to.
#[derive(Debug)]
pub enum Asked<M> {
    /// No peer is registered.
    NoPeers,
    /// The local store already holds the identity, intact: nothing was asked.
    AlreadyHere,
    /// A peer had it; its record is in the local store now.
    Fetched(Box<LayerRecord<M>>),
    /// Every peer was asked; none had it (or every copy was refused).
    NoneHad,
}

/// How a peer's answer is reported while the peers are asked in turn.
pub enum Heard<'a> {
    Fetched { peer: &'a Peer, files: usize },
    NotThere { peer: &'a Peer },
    Refused { peer: &'a Peer, why: &'a str },
}

impl std::fmt::Display for Heard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Heard::Fetched { peer, files } => write!(
                f,
                "fetched from peer {} ({files} files, signature and hashes verified)",
                peer.name
            ),
            Heard::NotThere { peer } => write!(f, "peer {} does not have it", peer.name),
            Heard::Refused { peer, why } => {
                write!(f, "peer {} ({}) refused: {why}", peer.name, peer.url)
            }
        }
    }
}

/// Asks each peer registered under `system_dir`, in order, for the run layer of `release`
/// (with `digest`), unless the store already holds it intact; the first verified copy enters
/// the store. Each answer goes to `heard` as it comes. The same for every kind of entry.
pub fn ask<M: serde::de::DeserializeOwned + Serialize + OfRelease>(
    store: &Store,
    system_dir: &Path,
    release: &Release,
    digest: &str,
    heard: &mut dyn FnMut(&Heard<'_>),
) -> Result<Asked<M>, StoreError> {
    let list = list(system_dir)?;
    if list.is_empty() {
        return Ok(Asked::NoPeers);
    }
    if store
        .record::<M>(Layer::Run, release)
        .ok()
        .flatten()
        .is_some()
        && store.verify(Layer::Run, release)?.is_empty()
    {
        return Ok(Asked::AlreadyHere);
    }
    let trusted = sign::trusted(system_dir)?;
    for peer in &list {
        match fetch_run_layer::<M>(store, peer, &trusted, release, digest) {
            Attempt::Fetched(record) => {
                heard(&Heard::Fetched {
                    peer,
                    files: record.files.len(),
                });
                return Ok(Asked::Fetched(record));
            }
            Attempt::NotThere => heard(&Heard::NotThere { peer }),
            Attempt::Refused(why) => heard(&Heard::Refused { peer, why: &why }),
        }
    }
    Ok(Asked::NoneHad)
}

/// What a fetch attempt at one peer came to.
#[derive(Debug)]
pub enum Attempt<M> {
    Fetched(Box<LayerRecord<M>>),
    NotThere,
    Refused(String),
}

/// What the store checks of a flow's manifest on a fetched record: whose release it is.
pub trait OfRelease {
    fn release(&self) -> &str;
}

/// Fetches the run layer of `release` (whose digest must be `digest`) from one peer into
/// the store; nothing becomes visible unless every check passes.
pub fn fetch_run_layer<M: serde::de::DeserializeOwned + Serialize + OfRelease>(
    store: &Store,
    peer: &Peer,
    trusted: &[(String, ed25519_dalek::VerifyingKey)],
    release: &Release,
    digest: &str,
) -> Attempt<M> {
    match fetch_inner(store, peer, trusted, release, digest) {
        Ok(Some(r)) => Attempt::Fetched(Box::new(r)),
        Ok(None) => Attempt::NotThere,
        Err(e) => Attempt::Refused(e),
    }
}

fn fetch_inner<M: serde::de::DeserializeOwned + Serialize + OfRelease>(
    store: &Store,
    peer: &Peer,
    trusted: &[(String, ed25519_dalek::VerifyingKey)],
    release: &Release,
    digest: &str,
) -> Result<Option<LayerRecord<M>>, String> {
    let base = store.entry_name(release);
    let Some(bytes) = get(peer, &format!("{base}/run.json"), 64 << 20)? else {
        return Ok(None);
    };
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|e| format!("the index does not parse: {e}"))?;
    let Some(signature) = &index.signature else {
        return Err("the index is unsigned".into());
    };
    sign::verify(
        trusted,
        &signature.key,
        &index.signed.bytes(),
        &signature.sig,
    )?;
    let s = &index.signed;
    let manifest: M = serde_json::from_value(s.record.manifest.clone()).map_err(|e| {
        format!(
            "the signed record's manifest is not a {}'s: {e}",
            store.kind
        )
    })?;
    if s.schema != INDEX_SCHEMA
        || s.uts_release != release.as_str()
        || s.layer != Layer::Run
        || s.record.uts_release != release.as_str()
        || s.record.layer != Layer::Run
        || s.record.digest != digest
        || manifest.release() != release.as_str()
        || s.archive != "run.tar.gz"
    {
        return Err(format!(
            "the signed index is not the run layer of {base} with digest {digest}"
        ));
    }
    let announced: u64 = s.record.files.iter().map(|f| f.size).sum();
    let archive = get(peer, &format!("{base}/{}", s.archive), s.archive_size)?
        .ok_or_else(|| format!("{base}/{} is missing", s.archive))?;
    if archive.len() as u64 != s.archive_size
        || hex::encode(Sha256::digest(&archive)) != s.archive_sha256
    {
        return Err(format!(
            "{base}/{} does not match its signed hash and size",
            s.archive
        ));
    }
    let record = LayerRecord {
        schema: s.record.schema.clone(),
        layer: s.record.layer,
        uts_release: s.record.uts_release.clone(),
        digest: s.record.digest.clone(),
        created_unix: s.record.created_unix,
        origin: format!("peer {} ({})", peer.name, peer.url),
        files: s.record.files.clone(),
        manifest,
    };
    store
        .import(Layer::Run, &record, |dir| {
            archive::unpack(&archive[..], dir, announced)
        })
        .map_err(|e| e.to_string())?;
    Ok(Some(record))
}
