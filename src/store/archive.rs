//! Layer archives for exported stores: a gzip'd tar of a layer's files in record order,
//! with fixed owners and times (the same layer packs to the same bytes).
//!
//! Unpacking trusts nothing in the archive: every entry must be a relative path that stays
//! inside the destination, a regular file, directory or a symlink that stays inside;
//! absolute paths, `..`, links out, hard links, device nodes, FIFOs and setuid, setgid or
//! sticky bits are refused, and so is anything over the size the signed index announced.

use std::io::{Read, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::{LayerRecord, StoreError, link_stays_inside, safe_relative};

fn refused(msg: String) -> StoreError {
    StoreError::Refused(msg)
}

/// Packs the files of `record` from `dir` into `out` (tar + gzip).
pub fn pack<M>(dir: &Path, record: &LayerRecord<M>, out: &Path) -> Result<(), StoreError> {
    let file = fs_err::File::create(out)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for f in &record.files {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if let Some(target) = &f.link {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            tar.append_link(&mut h, &f.path, target)?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(f.size);
            h.set_mode(if f.executable { 0o755 } else { 0o644 });
            let src = fs_err::File::open(dir.join(&f.path))?;
            tar.append_data(&mut h, &f.path, src)?;
        }
    }
    let gz = tar.into_inner()?;
    let mut file = gz.finish()?;
    file.flush()?;
    file.sync_all()?;
    Ok(())
}

/// Unpacks `archive` into the empty directory `dest`, refusing anything unsafe, and at
/// most `max_bytes` of file content in all.
pub fn unpack(archive: impl Read, dest: &Path, max_bytes: u64) -> Result<(), StoreError> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut total = 0u64;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8(raw)
            .map_err(|_| refused("an archive entry's path is not UTF-8".into()))?;
        let path = path.trim_end_matches('/').to_owned();
        if !safe_relative(&path) {
            return Err(refused(format!(
                "archive entry `{path}` is absolute or leaves the layer"
            )));
        }
        let mode = entry.header().mode()?;
        if mode & 0o7000 != 0 {
            return Err(refused(format!(
                "archive entry `{path}` has setuid, setgid or sticky bits ({mode:o})"
            )));
        }
        let to = dest.join(&path);
        let ty = entry.header().entry_type();
        if ty.is_dir() {
            fs_err::create_dir_all(&to)?;
            continue;
        }
        if let Some(parent) = to.parent() {
            // A parent that is a symlink would let a later entry write through it.
            let mut p = parent.to_path_buf();
            while p.starts_with(dest) && p != dest {
                if p.is_symlink() {
                    return Err(refused(format!(
                        "archive entry `{path}` goes through a symlink"
                    )));
                }
                p.pop();
            }
            fs_err::create_dir_all(parent)?;
        }
        if to.symlink_metadata().is_ok() {
            return Err(refused(format!("archive entry `{path}` appears twice")));
        }
        if ty.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if !link_stays_inside(&path, &target) {
                return Err(refused(format!(
                    "archive entry `{path}` links out of the layer (to `{target}`)"
                )));
            }
            std::os::unix::fs::symlink(&target, &to)?;
        } else if ty.is_file() {
            let size = entry.header().size()?;
            total = total.saturating_add(size);
            if total > max_bytes {
                return Err(refused(format!(
                    "the archive holds more than the {max_bytes} bytes its index announced"
                )));
            }
            let mut out = fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&to)?;
            let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)?;
            if copied != size {
                return Err(refused(format!("archive entry `{path}` is truncated")));
            }
            out.set_permissions(std::fs::Permissions::from_mode(if mode & 0o111 != 0 {
                0o755
            } else {
                0o644
            }))?;
            out.sync_all()?;
        } else {
            return Err(refused(format!(
                "archive entry `{path}` is a {ty:?}, not a file, directory or symlink"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar.gz with one raw entry (the tar crate's safe setters are bypassed on purpose).
    fn hostile(name: &[u8], ty: tar::EntryType, mode: u32, link: Option<&[u8]>) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_size(if ty.is_file() { 3 } else { 0 });
        h.set_cksum();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let data: &[u8] = if ty.is_file() { b"abc" } else { b"" };
        b.append(&h, data).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn hostile_entries_are_refused() {
        use tar::EntryType as T;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                hostile(b"../escape", T::Regular, 0o644, None),
                "leaves the layer",
            ),
            (hostile(b"/etc/evil", T::Regular, 0o644, None), "absolute"),
            (
                hostile(b"boot/x", T::Symlink, 0o777, Some(b"/etc/passwd")),
                "links out",
            ),
            (
                hostile(b"a/x", T::Symlink, 0o777, Some(b"../../x")),
                "links out",
            ),
            (hostile(b"suid", T::Regular, 0o4755, None), "setuid"),
            (hostile(b"dev", T::Char, 0o644, None), "not a file"),
            (
                hostile(b"hard", T::Link, 0o644, Some(b"suid")),
                "not a file",
            ),
            (hostile(b"fifo", T::Fifo, 0o644, None), "not a file"),
        ];
        for (bytes, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let err = unpack(&bytes[..], dir.path(), 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // Over the announced size.
        let dir = tempfile::tempdir().unwrap();
        let ok = hostile(b"file", T::Regular, 0o644, None);
        let err = unpack(&ok[..], dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        unpack(&ok[..], dir.path(), 3).unwrap();
        assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"abc");
    }
}
