//! File helpers whose panics name the path.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

#[track_caller]
pub fn read(p: impl AsRef<Path>) -> Vec<u8> {
    let p = p.as_ref();
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[track_caller]
pub fn read_string(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[track_caller]
pub fn write(p: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
    let p = p.as_ref();
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

/// Writes a script (or any file) and makes it executable.
#[track_caller]
pub fn write_executable(p: impl AsRef<Path>, text: &str) {
    let p = p.as_ref();
    write(p, text);
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[track_caller]
pub fn mtime(p: impl AsRef<Path>) -> SystemTime {
    let p = p.as_ref();
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .modified()
        .unwrap()
}

/// `cp -a FROM TO`: a real copy (never hard links: tests damage their copies).
#[track_caller]
pub fn copy_tree(from: &Path, to: &Path) {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// The names in a directory (none when it does not exist), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// sha256 of a file, in hex.
#[track_caller]
pub fn sha256(p: &Path) -> String {
    kforge::store::hash_file(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .0
}

/// Flips the bits of `mask` in the byte at `at` (in place: the file's inode, size, mode and
/// mtime are kept, as damage on a disk would keep them; only its ctime moves).
#[track_caller]
pub fn flip_byte(p: &Path, at: usize, mask: u8) {
    let mut bytes = read(p);
    bytes[at] ^= mask;
    // In place, and then as it was but for its bytes: same size, mode and mtime.
    let meta = std::fs::metadata(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(p, &bytes).unwrap();
    std::fs::File::open(p)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    std::fs::set_permissions(p, meta.permissions()).unwrap();
}

/// `chmod -R u+w DIR`: the store seals its layers read-only; a test that damages one on
/// purpose, or removes its home, makes them writable first (root needs not, others do).
pub fn make_writable(dir: &Path) {
    let _ = Command::new("chmod").arg("-R").arg("u+w").arg(dir).status();
}

/// The permission bits of a path (not following a symlink).
#[track_caller]
pub fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}
