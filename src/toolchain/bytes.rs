//! What pins a toolchain's bytes: a version string can stay the same while the program does
//! not (a rebuilt package, a patched binutils that still says "2.40"), so the identity also
//! holds the SHA-256 of each program whose work lands in the output: the
//! compiler driver and the compiler proper, the assembler and linker, and the host tools a
//! kernel build runs on its way to the image when they are installed (pahole for BTF, openssl
//! for module signing keys, python3 for generated sources). make is not among them: it only
//! orders the work (its version string stays in the identity), and a logging wrapper around it
//! is the same build.
//!
//! Hashing cc1 (tens of MB) on every request would cost the fast path its speed, so hashes are
//! remembered per file by (path, size, mtime, inode), as ccache's `compiler_check=mtime` does.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::Compiler;
use crate::arch::Arch;
use crate::process::{Cmd, find_program};

/// Host tools hashed when present (absent, they are left out: a build that needs one fails).
const OPTIONAL: [&str; 3] = ["pahole", "openssl", "python3"];

/// The programs a kernel build with `compiler` for `arch` runs, by role (`cc`, `cc1`, `as`,
/// `ld`, ...), resolved to their real files.
pub fn programs(compiler: Compiler, arch: Arch) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut add = |role: &str, program: &str| {
        if let Ok(p) = find_program(program) {
            out.push((role.to_owned(), fs_err::canonicalize(&p).unwrap_or(p)));
        }
    };
    let cc = compiler.cc_for(arch);
    add("cc", &cc);
    if compiler == Compiler::Gcc {
        // The driver runs cc1 and the cross binutils' as; ask it which.
        for (role, prog) in [("cc1", "cc1"), ("as", "as")] {
            if let Ok(out) = Cmd::new(&cc)
                .arg(format!("-print-prog-name={prog}"))
                .output()
            {
                let named = out.trim();
                if named.contains('/') {
                    add(role, named);
                } else {
                    let prefixed = format!("{}{named}", arch.cross_prefix().unwrap_or(""));
                    add(role, &prefixed);
                }
            }
        }
    }
    add("ld", &compiler.linker_for(arch));
    for tool in OPTIONAL {
        add(tool, tool);
    }
    out
}

/// A remembered hash and the file state it was taken of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Seen {
    len: u64,
    mtime_ns: i128,
    ino: u64,
    sha256: String,
}

fn state_of(path: &Path) -> Option<(u64, i128, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.len(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        m.ino(),
    ))
}

fn sha256_file(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf).ok()? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Some(hex::encode(h.finalize()))
}

/// The SHA-256 of each program, by role; remembered in `cache` (a JSON file, rewritten
/// atomically when something new was hashed; a damaged or missing one is hashed anew).
pub fn hashes(programs: &[(String, PathBuf)], cache: Option<&Path>) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<PathBuf, Seen> = cache
        .and_then(|c| std::fs::read(c).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut changed = false;
    let mut out = BTreeMap::new();
    for (role, path) in programs {
        let Some((len, mtime_ns, ino)) = state_of(path) else {
            continue;
        };
        let sha = match seen.get(path) {
            Some(s) if (s.len, s.mtime_ns, s.ino) == (len, mtime_ns, ino) => s.sha256.clone(),
            _ => {
                let Some(sha) = sha256_file(path) else {
                    continue;
                };
                seen.insert(
                    path.clone(),
                    Seen {
                        len,
                        mtime_ns,
                        ino,
                        sha256: sha.clone(),
                    },
                );
                changed = true;
                sha
            }
        };
        out.insert(role.clone(), format!("sha256:{sha}"));
    }
    if changed && let Some(c) = cache {
        let _ = c.parent().map(fs_err::create_dir_all);
        let bytes = serde_json::to_vec_pretty(&seen).expect("serializes");
        // Best effort: a cache that cannot be written only costs the next request a re-hash.
        let _ = crate::fsutil::write_atomic(c, &bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_hashed_again_an_unchanged_one_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("cc1");
        std::fs::write(&tool, b"compiler one").unwrap();
        let cache = dir.path().join("cache/hashes.json");
        let progs = vec![("cc1".to_owned(), tool.clone())];
        let a = hashes(&progs, Some(&cache));
        assert_eq!(
            a["cc1"],
            format!("sha256:{}", hex::encode(Sha256::digest(b"compiler one")))
        );
        assert!(cache.is_file());
        // Remembered: a cache entry that lies about the bytes is believed while the file's
        // state is unchanged (that is what the cache is for) ...
        let mut seen: BTreeMap<PathBuf, Seen> =
            serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        seen.get_mut(&tool).unwrap().sha256 = "remembered".into();
        std::fs::write(&cache, serde_json::to_vec(&seen).unwrap()).unwrap();
        assert_eq!(hashes(&progs, Some(&cache))["cc1"], "sha256:remembered");
        // ... and a new file (another inode, size) is hashed anew: an upgrade moves it.
        std::fs::remove_file(&tool).unwrap();
        std::fs::write(&tool, b"compiler two, same version string").unwrap();
        let b = hashes(&progs, Some(&cache));
        assert_ne!(a["cc1"], b["cc1"]);
        assert_ne!(b["cc1"], "sha256:remembered");
        // A damaged cache is hashed anew; a missing program is left out.
        std::fs::write(&cache, b"{not json").unwrap();
        let missing = vec![("pahole".to_owned(), dir.path().join("nope"))];
        assert!(hashes(&missing, Some(&cache)).is_empty());
        assert_eq!(hashes(&progs, None), b);
    }

    #[test]
    fn gcc_names_its_compiler_proper_assembler_and_linker() {
        let Ok(_) = find_program("gcc") else {
            return;
        };
        let host = Arch::host().unwrap_or_default();
        let roles: Vec<String> = programs(Compiler::Gcc, host)
            .into_iter()
            .map(|(r, p)| {
                assert!(p.is_absolute() && p.is_file(), "{r}: {}", p.display());
                r
            })
            .collect();
        for r in ["cc", "cc1", "as", "ld"] {
            assert!(roles.contains(&r.to_owned()), "{r} missing from {roles:?}");
        }
    }
}
