//! The build store: one entry per finished identity, `<kind>-<release>` (an [`EntryName`]),
//! made of layers that can be fetched apart: `run` (what a guest needs: a kernel's boot image
//! and `lib/modules/<release>`, a QEMU's installed tree), `devel` (what an out-of-tree
//! module build or an editor needs) and `kselftest` (a kernel's selftests, built against it,
//! a directory per target). The store knows entries, layers and files; what a flow
//! puts into them, and the manifest type on their records, are the flow's.
//!
//! Layout under the store root:
//!
//! ```text
//! run/<kind>-<release>/     kforge-layer.json and the layer's files
//! devel/<kind>-<release>/   kforge-layer.json and the layer's files
//! kselftest/<kind>-<release>/   the same, a directory per selftest target
//! tmp/                      layers being written, named <what>.<writer pid>.<nanos>
//! pins/<kind>-<release>     gc never removes a pinned identity
//! locks/<kind>-<release>    shared while a build or command uses the identity
//! verified/<layer>-<kind>-<release>.json   what the files looked like when last re-hashed
//! ```
//!
//! A layer is immutable once visible. It is written under `tmp/`, every file and directory
//! fsynced and sealed read-only, then renamed into place; a killed writer leaves only `tmp/`
//! leftovers, which the next writer sweeps (their writer is gone). `kforge-layer.json`
//! records the sha256, size and mode of every file, and the manifest of the build that made
//! the layer.

pub mod archive;
pub mod gc;
pub mod name;
pub mod ops;
pub mod peers;
pub mod sign;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil::{FileLock, write_atomic};

pub use name::{EntryName, Kind, Release};

/// The record's name inside each layer directory.
pub const RECORD: &str = "kforge-layer.json";
pub const RECORD_SCHEMA: &str = "kforge-layer/1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "`{0}` is not a release kforge could have made (letters, digits, . _ - and +, at most 64)"
    )]
    BadRelease(String),
    #[error("no store entry {0} ({1} layer)")]
    Missing(EntryName, &'static str),
    #[error("{0} is {1}")]
    InUse(EntryName, &'static str),
    #[error("store entry {path} is damaged:\n  - {}", .problems.join("\n  - "))]
    Damaged {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    BadInput(String),
}

/// Which part of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Run,
    Devel,
    Kselftest,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::Run, Layer::Devel, Layer::Kselftest];
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Run => "run",
            Layer::Devel => "devel",
            Layer::Kselftest => "kselftest",
        }
    }
}

/// One file of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Relative, `/`-separated, never `..` nor absolute.
    pub path: String,
    pub size: u64,
    /// sha256 of the bytes; for a symlink, of its target text.
    pub sha256: String,
    #[serde(default)]
    pub executable: bool,
    /// A relative symlink that stays inside the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// `kforge-layer.json`. `M` is the manifest of the flow that made the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRecord<M> {
    pub schema: String,
    pub layer: Layer,
    pub uts_release: String,
    pub digest: String,
    pub created_unix: u64,
    /// `local`, or the peer it was fetched from.
    pub origin: String,
    pub files: Vec<FileRecord>,
    /// The manifest of the build that made the layer (paths as they were on that build).
    pub manifest: M,
}

impl<M> LayerRecord<M> {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What `publish` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Published {
    Added,
    /// Another build (or a peer fetch) had already published the identity, intact.
    AlreadyPresent,
    /// A damaged layer was found in its place and replaced.
    Replaced,
}

/// A file to put into a layer: its place in the layer, and where it is now.
#[derive(Debug, Clone)]
pub struct Source {
    pub dest: String,
    pub from: PathBuf,
}

/// The store at `root`, seen as the entries of one kind.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
    pub kind: Kind,
}

/// A relative path that cannot leave the directory it is joined to.
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Whether a symlink at `at` (relative path) pointing at `target` stays inside the layer.
pub(crate) fn link_stays_inside(at: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = i64::try_from(at.split('/').count()).unwrap_or(i64::MAX) - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Test hooks at exact places of a publish, from `KFORGE_FAULT_INJECT`:
/// - `POINT`: SIGKILL this process there (what a killed writer leaves behind);
/// - `POINT@wait:FILE`: create `FILE.<pid>`, then wait there until `FILE` exists (a barrier
///   that holds two writers at the same place, to race them for real).
pub(crate) fn fault_point(point: &str) {
    let Ok(v) = std::env::var("KFORGE_FAULT_INJECT") else {
        return;
    };
    if v == point {
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    } else if let Some(file) = v
        .strip_prefix(point)
        .and_then(|rest| rest.strip_prefix("@wait:"))
    {
        let _ = fs_err::write(format!("{file}.{}", std::process::id()), b"");
        while !Path::new(file).exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Reads `src` to its end, hashing it and writing it to `copy` when given: sha256, size.
fn hash_stream(
    mut src: impl std::io::Read,
    mut copy: Option<&mut dyn std::io::Write>,
) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if let Some(w) = copy.as_mut() {
            w.write_all(&buf[..n])?;
        }
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

/// sha256 and size of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    hash_stream(fs_err::File::open(path)?, None)
}

/// Copies `from` to `to` (a new file), returning its sha256 and size; fsyncs it.
fn copy_hashing(from: &Path, to: &Path, executable: bool) -> std::io::Result<(String, u64)> {
    let mut dst = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let hashed = hash_stream(fs_err::File::open(from)?, Some(&mut dst))?;
    dst.set_permissions(std::fs::Permissions::from_mode(if executable {
        0o755
    } else {
        0o644
    }))?;
    dst.sync_all()?;
    Ok(hashed)
}

fn fsync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Every file under `dir` (recursively) as sources placed under `prefix`; symlinks are kept
/// as symlinks (and later dropped when they point out of the layer).
pub fn sources_under(dir: &Path, prefix: &str) -> std::io::Result<Vec<Source>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), prefix.trim_end_matches('/').to_owned())];
    while let Some((d, p)) = stack.pop() {
        let mut entries: Vec<_> = fs_err::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(fs_err::DirEntry::file_name);
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let dest = if p.is_empty() {
                name
            } else {
                format!("{p}/{name}")
            };
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push((e.path(), dest));
            } else if ft.is_file() || ft.is_symlink() {
                out.push(Source {
                    dest,
                    from: e.path(),
                });
            }
        }
    }
    Ok(out)
}

/// The record of a symlink at `dest` whose target is `text` (hashed as its text).
fn link_record(dest: &str, text: String) -> FileRecord {
    FileRecord {
        path: dest.to_owned(),
        size: 0,
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        executable: false,
        link: Some(text),
    }
}

/// The records `publish` would write for `sources`, without copying anything: what a
/// rebuild's files would be as a layer (symlinks that leave the layer dropped, as publish
/// drops them), for comparing with a published layer's record.
pub fn describe(sources: &[Source]) -> std::io::Result<Vec<FileRecord>> {
    let mut files = Vec::with_capacity(sources.len());
    for s in sources {
        let meta = fs_err::symlink_metadata(&s.from)?;
        if meta.file_type().is_symlink() {
            let text = fs_err::read_link(&s.from)?.to_string_lossy().into_owned();
            if link_stays_inside(&s.dest, &text) {
                files.push(link_record(&s.dest, text));
            }
        } else {
            let (sha256, size) = hash_file(&s.from)?;
            files.push(FileRecord {
                path: s.dest.clone(),
                size,
                sha256,
                executable: meta.permissions().mode() & 0o111 != 0,
                link: None,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A layer being written under `tmp/` (named with the writer's pid); dropped unfinished,
/// it removes itself, and a killed writer's is removed by the next sweep.
struct Staging {
    dir: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// Makes a layer read-only, the same on every host whatever the writer's umask: files
/// 0444 (0555 when executable), directories 0555. The layer's own directory is sealed after
/// it is renamed into place (moving a directory needs write access to it).
fn seal(dir: &Path) -> std::io::Result<()> {
    for e in fs_err::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        let path = e.path();
        if ft.is_dir() {
            seal(&path)?;
            fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o555))?;
        } else if ft.is_file() {
            let exec = e.metadata()?.permissions().mode() & 0o111 != 0;
            let mode = if exec { 0o555 } else { 0o444 };
            fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Gives a sealed tree's directories back their write bit, so that it can be moved and
/// removed by a user who is not root.
fn unseal(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                unseal(&e.path());
            }
        }
    }
}

/// Removes a (possibly sealed) tree; what cannot be removed stays for the next sweep.
fn remove_tree(dir: &Path) {
    unseal(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether a process with this pid exists (EPERM: it does, as another user's).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Store {
    /// Opens (creating) the store at `root`, for its entries of `kind`.
    pub fn open(root: &Path, kind: Kind) -> Result<Self, StoreError> {
        for sub in [
            "run",
            "devel",
            "kselftest",
            "tmp",
            "pins",
            "locks",
            "verified",
        ] {
            fs_err::create_dir_all(root.join(sub))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            kind,
        })
    }

    /// The entry of this store's kind: `<kind>-<release>`, its name in every directory of
    /// the store.
    pub fn entry(&self, release: &Release) -> EntryName {
        EntryName::new(self.kind, release.clone())
    }

    /// [`Store::entry`], as the name of a file or directory.
    pub fn entry_name(&self, release: &Release) -> String {
        self.entry(release).to_string()
    }

    pub fn layer_dir(&self, layer: Layer, release: &Release) -> PathBuf {
        self.root
            .join(layer.as_str())
            .join(self.entry_name(release))
    }

    /// The record of a visible layer, with the manifest type of this store's kind.
    pub fn record<M: serde::de::DeserializeOwned>(
        &self,
        layer: Layer,
        release: &Release,
    ) -> Result<Option<LayerRecord<M>>, StoreError> {
        let path = self.layer_dir(layer, release).join(RECORD);
        match fs_err::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Damaged {
                        path: path.clone(),
                        problems: vec![format!("{RECORD} does not parse: {e}")],
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Holds the identity as in use (a shared lock) so that gc leaves it alone.
    pub fn hold(&self, release: &Release) -> Result<FileLock, StoreError> {
        Ok(FileLock::shared(
            &self.root.join("locks").join(self.entry_name(release)),
        )?)
    }

    /// Re-reads every file of a layer against its record; the problems found (none: intact).
    pub fn verify(&self, layer: Layer, release: &Release) -> Result<Vec<String>, StoreError> {
        let dir = self.layer_dir(layer, release);
        let record = match self.record::<serde_json::Value>(layer, release) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(StoreError::Missing(self.entry(release), layer.as_str())),
            Err(StoreError::Damaged { problems, .. }) => return Ok(problems),
            Err(e) => return Err(e),
        };
        Ok(verify_dir(&dir, &record, true))
    }

    /// [`Store::verify`], answered from the layer's verified marker when nothing about its
    /// entries changed since the last full re-hash (the record's bytes, and every entry's
    /// inode, size, mode, mtime and ctime, as git's index keeps them: rewriting a file moves
    /// its ctime even when its size and mtime are put back); else a full re-hash, which
    /// renews the marker when the layer is intact.
    pub fn verify_cached(
        &self,
        layer: Layer,
        release: &Release,
    ) -> Result<Vec<String>, StoreError> {
        // A change within the file system's timestamp granularity of the hashing would not
        // move the ctime: entries changed in the last seconds are re-hashed next time instead
        // of being trusted from the marker (git's "racily clean" rule).
        self.verify_cached_settled(layer, release, now_unix().saturating_sub(2))
    }

    /// [`Store::verify_cached`], trusting in the marker only entries whose ctime is before
    /// `settled` (seconds since the epoch).
    fn verify_cached_settled(
        &self,
        layer: Layer,
        release: &Release,
        settled: u64,
    ) -> Result<Vec<String>, StoreError> {
        let dir = self.layer_dir(layer, release);
        let marker = self.marker_path(layer, release);
        let record = match fs_err::read(dir.join(RECORD)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(self.entry(release), layer.as_str()));
            }
            Err(e) => return Err(e.into()),
        };
        let now = Marker {
            record_sha256: hex::encode(Sha256::digest(&record)),
            stamps: stamps(&dir)?,
        };
        if fs_err::read(&marker)
            .ok()
            .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
            .is_some_and(|m| m == now)
        {
            return Ok(Vec::new());
        }
        let problems = self.verify(layer, release)?;
        let racy = now
            .stamps
            .iter()
            .any(|s| u64::try_from(s.ctime.0).unwrap_or(u64::MAX) >= settled);
        if problems.is_empty() && !racy {
            let bytes = serde_json::to_vec(&now).expect("marker serializes");
            // Only a cache: failing to write it costs a re-hash next time.
            let _ = write_atomic(&marker, &bytes);
        }
        Ok(problems)
    }

    fn marker_path(&self, layer: Layer, release: &Release) -> PathBuf {
        self.root.join("verified").join(format!(
            "{}-{}.json",
            layer.as_str(),
            self.entry_name(release)
        ))
    }

    /// Removes what killed writers left in `tmp/`: entries are named
    /// `<what>.<pid>.<nanos>`, and one whose writer is no longer alive is a leftover.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        let tmp = self.root.join("tmp");
        let mut swept = 0;
        let names: Vec<String> = fs_err::read_dir(&tmp)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for name in names {
            let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(process_alive) {
                continue;
            }
            let p = tmp.join(&name);
            let r = if p.is_dir() && !p.is_symlink() {
                unseal(&p);
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => swept += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("removing the leftover {}: {e}", p.display()),
                    )
                    .into());
                }
            }
        }
        Ok(swept)
    }

    fn stage(&self, what: &str) -> Result<Staging, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = self
            .root
            .join("tmp")
            .join(format!("{what}.{}.{nanos}", std::process::id()));
        fs_err::create_dir(&dir)?;
        Ok(Staging { dir })
    }

    /// Adds a layer made of `sources`, with `manifest` (the flow's) on its record. Already
    /// there and intact: nothing is written. Two writers of one identity at once: one rename
    /// wins, the other finds it and stops.
    pub fn publish<M: Serialize + Clone>(
        &self,
        layer: Layer,
        release: &Release,
        digest: &str,
        manifest: &M,
        sources: &[Source],
        origin: &str,
    ) -> Result<(Published, PathBuf), StoreError> {
        self.publish_as(layer, release, digest, manifest, sources, origin, false)
    }

    /// [`Store::publish`] of a layer that supersedes the one there, intact or not (a
    /// kselftest layer with more targets): it is replaced at once, by a rename, as a
    /// damaged one is.
    pub fn supersede<M: Serialize + Clone>(
        &self,
        layer: Layer,
        release: &Release,
        digest: &str,
        manifest: &M,
        sources: &[Source],
        origin: &str,
    ) -> Result<(Published, PathBuf), StoreError> {
        self.publish_as(layer, release, digest, manifest, sources, origin, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn publish_as<M: Serialize + Clone>(
        &self,
        layer: Layer,
        release: &Release,
        digest: &str,
        manifest: &M,
        sources: &[Source],
        origin: &str,
        supersede: bool,
    ) -> Result<(Published, PathBuf), StoreError> {
        self.sweep()?;
        let target = self.layer_dir(layer, release);
        let mut damaged = false;
        if target.exists() {
            if !supersede && self.verify(layer, release)?.is_empty() {
                return Ok((Published::AlreadyPresent, target));
            }
            damaged = true;
        }
        let staging = self.stage(&format!("{}-{}", layer.as_str(), self.entry_name(release)))?;
        let mut files = Vec::with_capacity(sources.len());
        let mut dirs = vec![staging.dir.clone()];
        for (i, s) in sources.iter().enumerate() {
            if !safe_relative(&s.dest) || s.dest == RECORD {
                return Err(StoreError::Refused(format!(
                    "`{}` cannot be a path inside a layer",
                    s.dest
                )));
            }
            let to = staging.dir.join(&s.dest);
            let parent = to.parent().expect("joined path has a parent");
            if !parent.exists() {
                fs_err::create_dir_all(parent)?;
                let mut p = parent.to_path_buf();
                while p != staging.dir && !dirs.contains(&p) {
                    dirs.push(p.clone());
                    p.pop();
                }
            }
            let meta = fs_err::symlink_metadata(&s.from)?;
            if meta.file_type().is_symlink() {
                let target = fs_err::read_link(&s.from)?;
                let text = target.to_string_lossy().into_owned();
                if !link_stays_inside(&s.dest, &text) {
                    // Host paths (lib/modules/<release>/build, source) mean nothing elsewhere.
                    continue;
                }
                std::os::unix::fs::symlink(&target, &to)?;
                files.push(link_record(&s.dest, text));
            } else {
                let executable = meta.permissions().mode() & 0o111 != 0;
                let (sha256, size) = copy_hashing(&s.from, &to, executable)?;
                files.push(FileRecord {
                    path: s.dest.clone(),
                    size,
                    sha256,
                    executable,
                    link: None,
                });
            }
            if i == 0 {
                fault_point("publish:first-file");
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let record = LayerRecord {
            schema: RECORD_SCHEMA.to_owned(),
            layer,
            uts_release: release.to_string(),
            digest: digest.to_owned(),
            created_unix: now_unix(),
            origin: origin.to_owned(),
            files,
            manifest: manifest.clone(),
        };
        self.finish(layer, release, &staging, &record, &dirs, damaged)
    }

    /// Writes the record into a staged layer, fsyncs it and renames it into place.
    fn finish<M: Serialize>(
        &self,
        layer: Layer,
        release: &Release,
        staging: &Staging,
        record: &LayerRecord<M>,
        dirs: &[PathBuf],
        damaged: bool,
    ) -> Result<(Published, PathBuf), StoreError> {
        let mut text = serde_json::to_vec_pretty(record).expect("record serializes");
        text.push(b'\n');
        write_atomic(&staging.dir.join(RECORD), &text)?;
        seal(&staging.dir)?;
        for d in dirs.iter().rev() {
            fsync_dir(d);
        }
        fault_point("publish:before-rename");
        let target = self.layer_dir(layer, release);
        if damaged && target.exists() {
            let trash = self.stage(&format!(
                "damaged-{}-{}",
                layer.as_str(),
                self.entry_name(release)
            ))?;
            fs_err::remove_dir(&trash.dir)?;
            unseal(&target);
            fs_err::rename(&target, &trash.dir)?;
        }
        match std::fs::rename(&staging.dir, &target) {
            Ok(()) => {}
            Err(e)
                if target.exists()
                    && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) =>
            {
                // Another writer won the race; theirs must be intact.
                let problems = self.verify(layer, release)?;
                if problems.is_empty() {
                    return Ok((Published::AlreadyPresent, target));
                }
                return Err(StoreError::Damaged {
                    path: target,
                    problems,
                });
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "renaming {} to {}: {e}",
                        staging.dir.display(),
                        target.display()
                    ),
                )
                .into());
            }
        }
        fs_err::set_permissions(&target, std::fs::Permissions::from_mode(0o555))?;
        fsync_dir(target.parent().expect("layer dir has a parent"));
        Ok((
            if damaged {
                Published::Replaced
            } else {
                Published::Added
            },
            target,
        ))
    }

    /// Adds a layer that `fill` writes into an empty directory (a peer's archive), once
    /// every file checks out against `record`.
    pub fn import<M: Serialize>(
        &self,
        layer: Layer,
        record: &LayerRecord<M>,
        fill: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<(Published, PathBuf), StoreError> {
        let release: Release = record.uts_release.parse()?;
        let release = &release;
        self.sweep()?;
        let target = self.layer_dir(layer, release);
        let damaged = target.exists();
        if damaged && self.verify(layer, release)?.is_empty() {
            return Ok((Published::AlreadyPresent, target));
        }
        let staging = self.stage(&format!(
            "import-{}-{}",
            layer.as_str(),
            self.entry_name(release)
        ))?;
        fill(&staging.dir)?;
        let problems = verify_dir(&staging.dir, record, true);
        if !problems.is_empty() {
            return Err(StoreError::Refused(format!(
                "the files do not match their signed record: {}",
                problems.join("; ")
            )));
        }
        let mut dirs = vec![staging.dir.clone()];
        for f in &record.files {
            let mut p = staging.dir.join(&f.path);
            while p.pop() && p != staging.dir {
                if !dirs.contains(&p) {
                    dirs.push(p.clone());
                }
            }
        }
        self.finish(layer, release, &staging, record, &dirs, damaged)
    }

    /// Every identity with at least one layer, sorted.
    pub fn releases(&self) -> Result<Vec<Release>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        for layer in Layer::ALL {
            let dir = self.root.join(layer.as_str());
            if !dir.exists() {
                continue;
            }
            for e in fs_err::read_dir(&dir)? {
                let name = e?.file_name().to_string_lossy().into_owned();
                if let Some(r) = name
                    .strip_prefix(self.kind.as_str())
                    .and_then(|n| n.strip_prefix('-'))
                    .and_then(|r| r.parse::<Release>().ok())
                {
                    out.insert(r);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    pub fn is_pinned(&self, release: &Release) -> bool {
        self.root
            .join("pins")
            .join(self.entry_name(release))
            .exists()
    }

    pub fn pin(&self, release: &Release, pinned: bool) -> Result<(), StoreError> {
        let p = self.root.join("pins").join(self.entry_name(release));
        if pinned {
            if self.releases()?.iter().all(|r| r != release) {
                return Err(StoreError::Missing(self.entry(release), "any"));
            }
            write_atomic(&p, b"")?;
        } else if p.exists() {
            fs_err::remove_file(&p)?;
        }
        Ok(())
    }

    /// Marks the identity as just used (gc removes the least recently used first).
    pub fn touch(&self, release: &Release) {
        let p = self.layer_dir(Layer::Run, release);
        let now = std::fs::FileTimes::new().set_modified(std::time::SystemTime::now());
        if let Ok(f) = std::fs::File::open(&p) {
            let _ = f.set_times(now);
        }
    }

    /// Seconds since the identity was published or last used.
    pub fn last_used(&self, release: &Release) -> Option<std::time::SystemTime> {
        Layer::ALL
            .iter()
            .filter_map(|l| fs_err::metadata(self.layer_dir(*l, release)).ok())
            .filter_map(|m| m.modified().ok())
            .max()
    }

    /// Disk use of an identity's layers, from their records.
    pub fn size_of(&self, release: &Release) -> u64 {
        Layer::ALL
            .iter()
            .filter_map(|l| self.record::<serde_json::Value>(*l, release).ok().flatten())
            .map(|r| r.total_size())
            .sum()
    }

    /// Takes an identity out of the store: each layer disappears at once (a rename into
    /// `tmp/`), then is deleted.
    pub fn remove(&self, release: &Release) -> Result<(), StoreError> {
        for layer in Layer::ALL {
            let dir = self.layer_dir(layer, release);
            if dir.exists() {
                let trash = self.stage(&format!(
                    "removed-{}-{}",
                    layer.as_str(),
                    self.entry_name(release)
                ))?;
                fs_err::remove_dir(&trash.dir)?;
                unseal(&dir);
                fs_err::rename(&dir, &trash.dir)?;
                drop(trash);
            }
            let _ = fs_err::remove_file(self.marker_path(layer, release));
        }
        let _ = fs_err::remove_file(self.root.join("pins").join(self.entry_name(release)));
        Ok(())
    }
}

/// What [`Store::verify_cached`] compares: a layer's record and the state of its entries.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    record_sha256: String,
    stamps: Vec<Stamp>,
}

/// One entry of a layer as the file system describes it (not its bytes).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    path: String,
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamps of `dir` and everything under it, in path order.
fn stamps(dir: &Path) -> std::io::Result<Vec<Stamp>> {
    use std::os::unix::fs::MetadataExt as _;
    // A directory's times move when gc's clock (`Store::touch`) marks the entry used; what
    // it holds is told by the entries' own paths and stamps, so its times are left out.
    let stamp = |path: String, m: &std::fs::Metadata| {
        let times = |t: (i64, i64)| if m.is_dir() { (0, 0) } else { t };
        Stamp {
            path,
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: if m.is_dir() { 0 } else { m.size() },
            mtime: times((m.mtime(), m.mtime_nsec())),
            ctime: times((m.ctime(), m.ctime_nsec())),
        }
    };
    let mut out = vec![stamp(String::new(), &fs_err::symlink_metadata(dir)?)];
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for e in fs_err::read_dir(&d)? {
            let e = e?;
            let path = format!("{prefix}/{}", e.file_name().to_string_lossy());
            let m = fs_err::symlink_metadata(e.path())?;
            if m.is_dir() {
                stack.push((e.path(), path.clone()));
            }
            out.push(stamp(path, &m));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Compares a directory with a record: every recorded file present with its bytes, and with
/// `strict`, nothing else there.
pub fn verify_dir<M>(dir: &Path, record: &LayerRecord<M>, strict: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for f in &record.files {
        if !safe_relative(&f.path) {
            problems.push(format!("{}: not a path inside the layer", f.path));
            continue;
        }
        expected.insert(f.path.clone());
        let p = dir.join(&f.path);
        match &f.link {
            Some(target) => match fs_err::read_link(&p) {
                Ok(t) if t.to_string_lossy() == target.as_str() => {}
                Ok(t) => problems.push(format!(
                    "{}: links to {} instead of {target}",
                    f.path,
                    t.display()
                )),
                Err(_) => problems.push(format!("{}: missing (a symlink)", f.path)),
            },
            None => match fs_err::symlink_metadata(&p) {
                Ok(m) if m.is_file() => match hash_file(&p) {
                    Ok((sha, size)) if sha == f.sha256 && size == f.size => {}
                    Ok((_, size)) if size != f.size => {
                        problems.push(format!("{}: {size} bytes, recorded {}", f.path, f.size));
                    }
                    Ok(_) => problems.push(format!("{}: sha256 differs from the record", f.path)),
                    Err(e) => problems.push(format!("{}: {e}", f.path)),
                },
                Ok(_) => problems.push(format!("{}: not a regular file", f.path)),
                Err(_) => problems.push(format!("{}: missing", f.path)),
            },
        }
    }
    if strict && let Ok(found) = sources_under(dir, "") {
        for s in found {
            if s.dest != RECORD && !expected.contains(&s.dest) {
                problems.push(format!("{}: not in the record", s.dest));
            }
        }
    }
    problems
}

impl Store {
    /// Where `kforge repro` keeps its last verdict on an entry (beside the layers, not in
    /// one: a layer's bytes and record never change once published).
    pub fn repro_verdict_path(&self, release: &Release) -> PathBuf {
        self.root
            .join("repro")
            .join(format!("{}.json", self.entry_name(release)))
    }

    /// Copies a layer out of the store into `dest` (a directory that must not exist yet),
    /// checking every file's bytes against the layer's record on the way: a damaged entry
    /// fails here instead of handing out wrong files. The copies are the caller's to change.
    pub fn materialize<M: serde::de::DeserializeOwned>(
        &self,
        layer: Layer,
        release: &Release,
        dest: &Path,
    ) -> Result<LayerRecord<M>, StoreError> {
        let record = self
            .record(layer, release)?
            .ok_or_else(|| StoreError::Missing(self.entry(release), layer.as_str()))?;
        let dir = self.layer_dir(layer, release);
        fs_err::create_dir(dest)?;
        let mut problems = Vec::new();
        for f in &record.files {
            if !safe_relative(&f.path) {
                problems.push(format!("{}: unsafe path", f.path));
                continue;
            }
            let to = dest.join(&f.path);
            if let Some(parent) = to.parent() {
                fs_err::create_dir_all(parent)?;
            }
            if let Some(target) = &f.link {
                std::os::unix::fs::symlink(target, &to)?;
                continue;
            }
            let mut out = fs_err::File::create(&to)?;
            let (sha, size) = hash_stream(fs_err::File::open(dir.join(&f.path))?, Some(&mut out))?;
            out.set_permissions(std::fs::Permissions::from_mode(if f.executable {
                0o755
            } else {
                0o644
            }))?;
            if sha != f.sha256 || size != f.size {
                problems.push(format!("{}: bytes differ from the record", f.path));
            }
        }
        if problems.is_empty() {
            Ok(record)
        } else {
            Err(StoreError::Damaged {
                path: dir,
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_has_the_hash_of_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        std::fs::write(&from, b"kforge").unwrap();
        let to = dir.path().join("b");
        let copied = copy_hashing(&from, &to, true).unwrap();
        assert_eq!(copied, hash_file(&from).unwrap());
        assert_eq!(copied.1, 6);
        assert_eq!(std::fs::read(&to).unwrap(), b"kforge");
        assert!(
            copy_hashing(&from, &to, false).is_err(),
            "an existing file is not replaced"
        );
    }

    #[test]
    fn kinds_share_a_root_but_not_their_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("qemu-system-x86_64");
        std::fs::write(&file, b"\x7fELF").unwrap();
        std::fs::set_permissions(
            &file,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .unwrap();
        let sources = [Source {
            dest: "usr/local/bin/qemu-system-x86_64".into(),
            from: file,
        }];
        let qemu = Store::open(&dir.path().join("store"), Kind::Qemu).unwrap();
        let kernels = Store::open(&dir.path().join("store"), Kind::Kernel).unwrap();
        let manifest = serde_json::json!({ "identity": "qemu-7.2.22-0123456789ab" });
        let r: Release = "7.2.22-0123456789ab".parse().unwrap();
        let (published, path) = qemu
            .publish(Layer::Run, &r, "0123456789ab", &manifest, &sources, "local")
            .unwrap();
        assert_eq!(published, Published::Added);
        assert!(path.ends_with("run/qemu-7.2.22-0123456789ab"));
        assert_eq!(qemu.releases().unwrap(), vec![r.clone()]);
        assert!(
            kernels.releases().unwrap().is_empty(),
            "a kernel store sees no QEMU"
        );
        assert!(qemu.verify(Layer::Run, &r).unwrap().is_empty());
        let record = qemu
            .record::<serde_json::Value>(Layer::Run, &r)
            .unwrap()
            .unwrap();
        assert_eq!(record.manifest, manifest);
        assert!(record.files[0].executable);
        qemu.pin(&r, true).unwrap();
        assert!(
            dir.path()
                .join("store/pins/qemu-7.2.22-0123456789ab")
                .exists()
        );
        assert!(!kernels.is_pinned(&r));
        qemu.remove(&r).unwrap();
        assert!(qemu.releases().unwrap().is_empty());
    }

    #[test]
    fn a_verified_marker_stands_until_a_file_changes_even_with_its_mtime_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vmlinuz");
        std::fs::write(&file, b"kernel bytes").unwrap();
        let store = Store::open(&dir.path().join("store"), Kind::Kernel).unwrap();
        let r: Release = "6.12.118-t-0123456789ab".parse().unwrap();
        let sources = [Source {
            dest: "boot/vmlinuz".into(),
            from: file,
        }];
        store
            .publish(Layer::Run, &r, "0123456789ab", &0, &sources, "local")
            .unwrap();
        let marker = store.marker_path(Layer::Run, &r);
        // Entries changed in the last seconds are not trusted to a marker.
        assert!(
            store
                .verify_cached_settled(Layer::Run, &r, 0)
                .unwrap()
                .is_empty()
        );
        assert!(!marker.exists());
        assert!(
            store
                .verify_cached_settled(Layer::Run, &r, u64::MAX)
                .unwrap()
                .is_empty()
        );
        assert!(marker.exists());
        assert!(
            store
                .verify_cached_settled(Layer::Run, &r, u64::MAX)
                .unwrap()
                .is_empty()
        );
        // gc's use mark moves the entry directory's times, not what the marker vouches for.
        store.touch(&r);
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let stamped = ino(&marker);
        assert!(
            store
                .verify_cached_settled(Layer::Run, &r, u64::MAX)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            ino(&marker),
            stamped,
            "trusted, not re-hashed and re-written"
        );
        // Same size, mtime restored: the ctime moved, so the layer is re-hashed.
        let image = store.layer_dir(Layer::Run, &r).join("boot/vmlinuz");
        let mtime = std::fs::metadata(&image).unwrap().modified().unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&image, b"kernel BYTES").unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::File::open(&image)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let problems = store
            .verify_cached_settled(Layer::Run, &r, u64::MAX)
            .unwrap();
        assert_eq!(
            problems,
            ["boot/vmlinuz: sha256 differs from the record"],
            "{problems:?}"
        );
        store.remove(&r).unwrap();
        assert!(!marker.exists());
    }

    #[test]
    fn paths_are_checked() {
        assert!(safe_relative("lib/modules/x/modules.dep"));
        for bad in ["", "/etc/passwd", "a/../../b", "./x", "a/./b/.."] {
            assert!(!safe_relative(bad), "{bad}");
        }
        assert!(link_stays_inside("lib/modules/r/a", "kernel/x.ko"));
        assert!(link_stays_inside("a/b/c", "../../d"));
        assert!(!link_stays_inside("a/b", "../../d"));
        assert!(!link_stays_inside("a", "/usr/src/linux"));
    }
}
