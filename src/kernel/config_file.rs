//! The slot's `.config`, written so that a new identity of the same configuration costs
//! make no Kconfig run.
//!
//! Every edit of the developer's loop and every bisect step is a new identity, and the
//! identity lives in `CONFIG_LOCALVERSION`. Written as a plain file, the new `.config` is
//! newer than `include/config/auto.conf`, so make runs `syncconfig` (Kconfig again, with its
//! compiler probes) and then restarts itself: about 3 s of a 10 s incremental build here.
//! `CONFIG_LOCALVERSION` is a string no other symbol depends on, so what `syncconfig` would
//! write differs from the synced files in that one line; [`write`] makes that change itself.
//! Hand-written: Kconfig has no library, and this is the only part of its output kforge
//! writes. Anything else, or a build directory Kbuild has not synced, is left to Kbuild.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::fsutil::{touch, write_atomic};
use crate::identity::config_for_digest;

/// The files `syncconfig` derives from `.config` that carry `CONFIG_LOCALVERSION`, with the
/// line each holds for a value, in the order they are rewritten: `auto.conf` last, because
/// make reads it first, so an update cut short leaves it older than `.config` and Kbuild
/// then regenerates everything.
/// The line a derived file holds for a value of `CONFIG_LOCALVERSION`.
type LineFor = fn(&str) -> String;

const DERIVED: [(&str, LineFor); 3] = [
    ("include/generated/autoconf.h", |v| {
        format!("#define CONFIG_LOCALVERSION \"{v}\"")
    }),
    ("include/generated/rustc_cfg", |v| {
        format!("--cfg=CONFIG_LOCALVERSION=\"{v}\"")
    }),
    ("include/config/auto.conf", |v| {
        format!("CONFIG_LOCALVERSION={v}")
    }),
];
/// Rewritten by `syncconfig` with the same bytes: only made as new as the others.
const TOUCHED: [&str; 2] = [
    "include/config/auto.conf.cmd",
    "include/config/LOCALVERSION",
];

/// Writes `text` as `build/.config` (atomically; not at all when it is already that, so its
/// time stays and make has nothing to sync), and when only `CONFIG_LOCALVERSION` changed
/// in a synced build directory, brings the files `syncconfig` writes along: then `true`.
pub fn write(build: &Path, text: &[u8]) -> io::Result<bool> {
    let path = build.join(".config");
    let old = fs_err::read(&path).ok();
    if old.as_deref() == Some(text) {
        return Ok(false);
    }
    let derived = old.and_then(|old| derived_update(build, &old, text));
    fs_err::create_dir_all(build)?;
    write_atomic(&path, text)?;
    let brought = derived.is_some();
    if let Some(files) = derived {
        for name in TOUCHED {
            touch(&build.join(name), SystemTime::now())?;
        }
        for (name, bytes) in files {
            write_atomic(&build.join(name), bytes.as_bytes())?;
        }
    }
    Ok(brought)
}

/// The value of the one `CONFIG_LOCALVERSION="..."` line, when it is a release suffix that
/// every derived file writes unescaped.
fn localversion(config: &str) -> Option<&str> {
    let mut values = config
        .lines()
        .filter_map(|l| l.strip_prefix("CONFIG_LOCALVERSION="));
    let v = values.next()?.strip_prefix('"')?.strip_suffix('"')?;
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._+".contains(&b));
    (values.next().is_none() && plain).then_some(v)
}

/// The derived files' new texts, when `old` and `new` differ in `CONFIG_LOCALVERSION` alone
/// and the build directory is synced with `old` (each derived file at least as new as
/// `.config` and holding `old`'s value once).
fn derived_update(build: &Path, old: &[u8], new: &[u8]) -> Option<Vec<(&'static str, String)>> {
    let (old, new) = (
        std::str::from_utf8(old).ok()?,
        std::str::from_utf8(new).ok()?,
    );
    let (from, to) = (localversion(old)?, localversion(new)?);
    if config_for_digest(old) != config_for_digest(new) {
        return None;
    }
    let modified = |name: &str| fs_err::metadata(build.join(name)).ok()?.modified().ok();
    let config_time = modified(".config")?;
    let names = DERIVED.iter().map(|(n, _)| *n);
    if !names
        .chain(["include/config/auto.conf.cmd"])
        .all(|n| modified(n).is_some_and(|t| t >= config_time))
    {
        return None;
    }
    DERIVED
        .iter()
        .map(|(name, line)| {
            let text = fs_err::read_to_string(build.join(name)).ok()?;
            let (want, with) = (line(from), line(to));
            (text.lines().filter(|l| *l == want).count() == 1).then(|| {
                let mut out: String = text
                    .lines()
                    .map(|l| if l == want { with.as_str() } else { l })
                    .collect::<Vec<_>>()
                    .join("\n");
                if text.ends_with('\n') {
                    out.push('\n');
                }
                (*name, out)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OLD: &str =
        "CONFIG_A=y\nCONFIG_LOCALVERSION=\"-old-1\"\n# CONFIG_LOCALVERSION_AUTO is not set\n";
    const NEW: &str =
        "CONFIG_A=y\nCONFIG_LOCALVERSION=\"-new-2\"\n# CONFIG_LOCALVERSION_AUTO is not set\n";

    /// A build directory as `syncconfig` leaves it for `OLD`, `.config` an hour older.
    fn synced() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        fs_err::create_dir_all(b.join("include/generated")).unwrap();
        fs_err::create_dir_all(b.join("include/config")).unwrap();
        fs_err::write(b.join(".config"), OLD).unwrap();
        let files = [
            (
                "include/config/auto.conf",
                "CONFIG_A=y\nCONFIG_LOCALVERSION=-old-1\n",
            ),
            ("include/config/auto.conf.cmd", "deps := Kconfig\n"),
            (
                "include/generated/autoconf.h",
                "#define CONFIG_A 1\n#define CONFIG_LOCALVERSION \"-old-1\"\n",
            ),
            (
                "include/generated/rustc_cfg",
                "--cfg=CONFIG_A\n--cfg=CONFIG_LOCALVERSION=\"-old-1\"\n",
            ),
        ];
        for (name, text) in files {
            fs_err::write(b.join(name), text).unwrap();
        }
        let hour_ago = SystemTime::now() - Duration::from_hours(1);
        touch(&b.join(".config"), hour_ago).unwrap();
        dir
    }

    fn read(b: &Path, name: &str) -> String {
        fs_err::read_to_string(b.join(name)).unwrap()
    }

    fn newer_than_config(b: &Path, name: &str) -> bool {
        let t = |n: &str| fs_err::metadata(b.join(n)).unwrap().modified().unwrap();
        t(name) >= t(".config")
    }

    #[test]
    fn a_new_localversion_updates_what_syncconfig_writes() {
        let dir = synced();
        let b = dir.path();
        assert!(write(b, NEW.as_bytes()).unwrap());
        assert_eq!(read(b, ".config"), NEW);
        assert_eq!(
            read(b, "include/config/auto.conf"),
            "CONFIG_A=y\nCONFIG_LOCALVERSION=-new-2\n"
        );
        assert_eq!(
            read(b, "include/generated/autoconf.h"),
            "#define CONFIG_A 1\n#define CONFIG_LOCALVERSION \"-new-2\"\n"
        );
        assert_eq!(
            read(b, "include/generated/rustc_cfg"),
            "--cfg=CONFIG_A\n--cfg=CONFIG_LOCALVERSION=\"-new-2\"\n"
        );
        assert_eq!(read(b, "include/config/auto.conf.cmd"), "deps := Kconfig\n");
        for name in DERIVED.map(|(n, _)| n).into_iter().chain(TOUCHED) {
            assert!(newer_than_config(b, name), "{name} older than .config");
        }
    }

    #[test]
    fn any_other_change_is_left_to_kbuild() {
        for new in [
            NEW.replace("CONFIG_A=y", "CONFIG_A=m"),
            NEW.replace("-new-2", "-new 2"),
            NEW.replace("-new-2", ""),
            format!("{NEW}CONFIG_LOCALVERSION=\"-twice\"\n"),
        ] {
            let dir = synced();
            let b = dir.path();
            assert!(!write(b, new.as_bytes()).unwrap());
            assert_eq!(read(b, ".config"), new);
            assert!(
                read(b, "include/config/auto.conf").contains("-old-1"),
                "{new}"
            );
            assert!(!newer_than_config(b, "include/config/auto.conf"), "{new}");
        }
    }

    #[test]
    fn an_unsynced_build_directory_is_left_to_kbuild() {
        let dir = synced();
        let b = dir.path();
        // .config newer than auto.conf: make would sync it anyway, from the whole file.
        touch(
            &b.join(".config"),
            SystemTime::now() + Duration::from_mins(1),
        )
        .unwrap();
        assert!(!write(b, NEW.as_bytes()).unwrap());
        assert!(read(b, "include/config/auto.conf").contains("-old-1"));
        // auto.conf does not hold the old value: not synced with it.
        let dir = synced();
        let b = dir.path();
        fs_err::write(
            b.join("include/config/auto.conf"),
            "CONFIG_LOCALVERSION=-other\n",
        )
        .unwrap();
        write(b, NEW.as_bytes()).unwrap();
        assert_eq!(
            read(b, "include/config/auto.conf"),
            "CONFIG_LOCALVERSION=-other\n"
        );
    }

    #[test]
    fn the_same_config_is_not_written_again() {
        let dir = synced();
        let b = dir.path();
        let before = fs_err::metadata(b.join(".config"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(!write(b, OLD.as_bytes()).unwrap());
        let after = fs_err::metadata(b.join(".config"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }
}
