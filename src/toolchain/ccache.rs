//! The managed ccache configuration, one helper for every flow (kernel and QEMU).
//!
//! kforge writes the whole config file and points ccache at it with `CCACHE_CONFIGPATH`,
//! so no user or system ccache.conf changes what a build does. `base_dir` is the workers
//! dir and `hash_dir` is off, so two slots compiling the same file hit the same entry.
//! `depend_mode` is on: a miss compiles once, with the dependency file the build asks for
//! anyway (Kbuild's `-Wp,-MMD`, meson's `-MD`), instead of running the preprocessor first
//! (a cold compile of the tiny guest: 172 s without it, 125 s with it, 119 s without ccache,
//! on 2 cores). What it gives up is the preprocessed fallback, a hit for a file whose
//! includes changed but whose preprocessed text did not; the one case where that mattered,
//! a new identity of the same configuration, the kernel's compile keys without the identity
//! (see [`kconfig_key`]). It also gives up ccache's refusal of inputs that `.incbin` another
//! file, which the kernel's compile makes up for (see [`embedding_hits`]).

use std::path::{Path, PathBuf};

use crate::fsutil::write_atomic;

/// The settings kforge manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcacheSettings {
    /// The shared cache directory.
    pub cache_dir: PathBuf,
    /// `max_size`, as ccache reads it (`10G`, `500M`).
    pub max_size: String,
    /// Paths below this are rewritten to relative ones before hashing.
    pub base_dir: PathBuf,
    /// A shared cache behind the local one (`remote_storage`): every worker's misses are
    /// looked up there, and every result (local hits too, `reshare`) is stored there.
    pub remote: Option<String>,
}

/// Checks a remote storage URL before it reaches ccache's config: one of the schemes this
/// ccache supports, no white space or control characters (which would end or split the
/// config line). ccache's own `|attribute=value` suffixes are allowed.
pub fn validate_remote(url: &str) -> Result<(), String> {
    let scheme_ok = ["redis://", "redis+unix:", "http://", "https://", "file:"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err(format!(
            "ccache remote `{url}` is not a redis://, redis+unix:, http(s):// or file: URL"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "ccache remote `{}` holds white space or control characters",
            url.escape_debug()
        ));
    }
    Ok(())
}

/// Checks a size the way ccache reads `max_size`: a number with an optional
/// k/M/G/T (decimal) or Ki/Mi/Gi/Ti (binary) suffix.
pub fn validate_max_size(size: &str) -> Result<(), String> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &size[digits.len()..];
    let number_ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.parse::<f64>().is_ok();
    let suffix_ok = matches!(
        suffix,
        "" | "k" | "K" | "M" | "G" | "T" | "Ki" | "Mi" | "Gi" | "Ti" | "KB" | "MB" | "GB" | "TB"
    );
    if number_ok && suffix_ok {
        Ok(())
    } else {
        Err(format!(
            "ccache_max_size `{size}` is not a size such as 10G, 500M or 2Ti"
        ))
    }
}

/// The text of the managed config file.
pub fn render(settings: &CcacheSettings) -> String {
    let mut text = format!(
        "# Written by kforge on every build; edits here are overwritten.\n\
         cache_dir = {}\n\
         max_size = {}\n\
         base_dir = {}\n\
         hash_dir = false\n\
         sloppiness = include_file_ctime,include_file_mtime\n\
         compiler_check = mtime\n\
         depend_mode = true\n",
        settings.cache_dir.display(),
        settings.max_size,
        settings.base_dir.display(),
    );
    if let Some(url) = &settings.remote {
        text.push_str("remote_storage = ");
        text.push_str(url);
        // ccache gives up on connecting to Redis after 100 ms by default and then skips the
        // lookup or the write without a word; a host that make keeps busy on every core can
        // take longer than that. A second is the default here unless the URL says otherwise.
        if url.starts_with("redis") && !url.contains("connect-timeout=") {
            text.push_str("|connect-timeout=1000");
        }
        text.push_str("\nreshare = true\n");
    }
    text
}

/// Writes the managed config (atomically) and returns its path, for `CCACHE_CONFIGPATH`.
///
/// The file is named by its content: ccache reads it again at every compile, so builds that
/// share the cache but not the settings (another `ccache_max_size`, a remote set for one of
/// them) must not rewrite each other's file in the middle of a build.
pub fn write_ccache_conf(settings: &CcacheSettings) -> std::io::Result<PathBuf> {
    use sha2::Digest as _;
    fs_err::create_dir_all(&settings.cache_dir)?;
    let text = render(settings);
    let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let path = settings
        .cache_dir
        .join(format!("kforge-ccache-{}.conf", &digest[..12]));
    if fs_err::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        write_atomic(&path, text.as_bytes())?;
    }
    Ok(path)
}

/// `autoconf.h` as the compiler finds it from a kernel build directory (`O=`).
pub const KCONFIG_HEADER: &str = "include/generated/autoconf.h";

/// What a kernel compile hashes in place of `autoconf.h`: the `.config` without its
/// `CONFIG_LOCALVERSION` line.
///
/// The identity is baked into `CONFIG_LOCALVERSION`, so it is in `autoconf.h`, which every
/// object includes: left to itself, ccache would miss in direct mode on every object of a new
/// identity, even one with the same configuration and sources (a fresh slot's compile of the
/// tiny guest took 95 s finding them by their preprocessed text, 23 s for direct hits, and in
/// `depend_mode` there is no preprocessed fallback). The compile tells ccache to leave
/// `autoconf.h` out of its manifests (`ignore_headers_in_manifest`) and to hash this text
/// instead (`extra_files_to_hash`).
/// That is exact because `autoconf.h` is Kconfig's rewriting of a `.config` that the configure
/// step left consistent with the tree (olddefconfig), and no kernel source reads
/// `CONFIG_LOCALVERSION` (the release reaches the code through `utsrelease.h`, which ccache
/// still hashes); the compile step checks afterwards that make's syncconfig left the rest of
/// `.config` as it was.
pub fn kconfig_key(config: &str) -> String {
    config
        .lines()
        .filter(|l| !l.starts_with("CONFIG_LOCALVERSION="))
        .flat_map(|l| [l, "\n"])
        .collect()
}

/// The calls a ccache stats log (`CCACHE_STATSLOG`) records: the input file as the compiler
/// was given it, and the counters the call moved (`direct_cache_hit`, `cache_miss`, ...).
pub fn stats_calls(log: &str) -> Vec<(&str, Vec<&str>)> {
    let mut calls: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in log.lines() {
        if let Some(input) = line.strip_prefix("# ") {
            calls.push((input, Vec::new()));
        } else if let Some((_, counters)) = calls.last_mut() {
            counters.push(line.trim());
        }
    }
    calls
}

/// Inputs of a stats log that ccache answered from the cache although they embed another
/// file with the assembler's `.incbin`, resolved against the compile's directory `cwd`.
///
/// ccache cannot see what `.incbin` reads and refuses such inputs, but it finds the directive
/// only in preprocessed text, which `depend_mode` never makes (fixed upstream in 2026, after
/// the ccache Debian 12 ships). So a kernel object that embeds a generated file (x86's
/// compressed kernel in `piggy.o`, `/proc/config.gz` in `configs.o`, a vDSO, the built-in
/// initramfs) can come back from the cache holding another build's bytes when its source text
/// is the same: seen as a bisect candidate booting its neighbour's kernel, both compressed
/// kernels being of one size. The compile step compiles these again.
pub fn embedding_hits(log: &str, cwd: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for (input, counters) in stats_calls(log) {
        let hit = counters
            .iter()
            .any(|c| matches!(*c, "direct_cache_hit" | "preprocessed_cache_hit"));
        let path = cwd.join(input);
        if hit
            && !found.contains(&path)
            && fs_err::read(&path).is_ok_and(|b| b.windows(7).any(|w| w == b".incbin"))
        {
            found.push(path);
        }
    }
    found
}

/// The environment a ccache-wrapped build needs.
pub fn env_for(conf: &Path) -> Vec<(String, String)> {
    vec![(
        "CCACHE_CONFIGPATH".to_owned(),
        conf.to_string_lossy().into_owned(),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kconfig_key_differs_by_configuration_not_by_identity() {
        let a = "CONFIG_X=y\nCONFIG_LOCALVERSION=\"-a-1\"\n# CONFIG_LOCALVERSION_AUTO is not set\n";
        let b = a.replace("-a-1", "-b-2");
        assert_eq!(kconfig_key(a), kconfig_key(&b));
        assert_eq!(
            kconfig_key(a),
            "CONFIG_X=y\n# CONFIG_LOCALVERSION_AUTO is not set\n"
        );
        assert_ne!(kconfig_key(a), kconfig_key(&a.replace("X=y", "X=m")));
    }

    #[test]
    fn stats_log_calls_and_hits_that_embed_a_file() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("piggy.S"), ".incbin \"vmlinux.bin.gz\"\n").unwrap();
        fs_err::write(dir.path().join("a.c"), "int a;\n").unwrap();
        let log = "# piggy.S\ndirect_cache_hit\nlocal_storage_hit\n# a.c\ndirect_cache_hit\n\
                   # /dev/null\ndirect_cache_hit\n# piggy.S\ndirect_cache_hit\n";
        let calls = stats_calls(log);
        assert_eq!(calls.len(), 4);
        assert_eq!(
            calls[0],
            ("piggy.S", vec!["direct_cache_hit", "local_storage_hit"])
        );
        assert_eq!(
            embedding_hits(log, dir.path()),
            vec![dir.path().join("piggy.S")]
        );
        // A miss is compiled, whatever it embeds.
        assert!(embedding_hits("# piggy.S\ncache_miss\n", dir.path()).is_empty());
    }

    /// The ccache this project installs, in the mode kforge runs it: an assembler file that
    /// embeds another comes back from the cache after the embedded file changed (same size,
    /// so the same source text), and [`embedding_hits`] names it.
    #[test]
    fn depend_mode_serves_a_stale_incbin_and_it_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let conf = write_ccache_conf(&CcacheSettings {
            cache_dir: d.join("cache"),
            max_size: "100M".into(),
            base_dir: d.to_owned(),
            remote: None,
        })
        .unwrap();
        fs_err::write(d.join("x.S"), ".section .rodata\n.incbin \"blob.bin\"\n").unwrap();
        let compile = |blob: &[u8]| {
            fs_err::write(d.join("blob.bin"), blob).unwrap();
            let _ = fs_err::remove_file(d.join("x.o"));
            let st = std::process::Command::new("ccache")
                .args(["gcc", "-Wp,-MMD,x.d", "-c", "x.S", "-o", "x.o"])
                .current_dir(d)
                .env("CCACHE_CONFIGPATH", &conf)
                .env("CCACHE_STATSLOG", d.join("stats.log"))
                .status()
                .expect("ccache and gcc are installed (scripts/install-deps.sh)");
            assert!(st.success());
            fs_err::read(d.join("x.o")).unwrap()
        };
        let first = compile(b"kernel-one");
        let second = compile(b"kernel-two");
        let log = fs_err::read_to_string(d.join("stats.log")).unwrap();
        let calls = stats_calls(&log);
        assert!(calls[1].1.contains(&"direct_cache_hit"), "{log}");
        assert_eq!(
            first, second,
            "ccache served the first object for the second blob"
        );
        assert_eq!(embedding_hits(&log, d), vec![d.join("x.S")]);
    }

    #[test]
    fn sizes() {
        for ok in ["10G", "500M", "2Ti", "1.5G", "0"] {
            assert!(validate_max_size(ok).is_ok(), "{ok}");
        }
        for bad in ["", "G", "ten", "10 G", "10X", "-1G", "10G;rm"] {
            assert!(validate_max_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_shares_entries_across_slots() {
        let s = CcacheSettings {
            cache_dir: "/c".into(),
            max_size: "10G".into(),
            base_dir: "/w".into(),
            remote: None,
        };
        let text = render(&s);
        assert!(text.contains("base_dir = /w\n"));
        assert!(text.contains("hash_dir = false\n"));
        assert!(text.contains("depend_mode = true\n"));
        assert!(text.contains("max_size = 10G\n"));
        assert!(!text.contains("remote_storage"));
        let shared = render(&CcacheSettings {
            remote: Some("redis://10.0.0.1:6379".into()),
            ..s
        });
        assert!(shared.contains(
            "remote_storage = redis://10.0.0.1:6379|connect-timeout=1000\nreshare = true\n"
        ));
        let own = render(&CcacheSettings {
            remote: Some("redis://h|connect-timeout=50".into()),
            ..shared_settings()
        });
        assert!(own.contains("remote_storage = redis://h|connect-timeout=50\n"));
    }

    fn shared_settings() -> CcacheSettings {
        CcacheSettings {
            cache_dir: "/c".into(),
            max_size: "10G".into(),
            base_dir: "/w".into(),
            remote: None,
        }
    }

    #[test]
    fn remote_urls() {
        for ok in [
            "redis://127.0.0.1:6379",
            "redis+unix:/run/redis.sock",
            "https://cache.example.org/ccache|layout=bazel",
            "file:/srv/ccache",
        ] {
            assert!(validate_remote(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1:6379",
            "ftp://x",
            "redis://a b",
            "redis://a\nmax_size = 1",
            "-redis://x",
        ] {
            assert!(validate_remote(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn written_atomically_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CcacheSettings {
            cache_dir: dir.path().join("cache"),
            max_size: "1G".into(),
            base_dir: dir.path().into(),
            remote: None,
        };
        let p = write_ccache_conf(&s).unwrap();
        assert_eq!(
            write_ccache_conf(&s).unwrap(),
            p,
            "same settings, same file"
        );
        s.max_size = "2G".into();
        let q = write_ccache_conf(&s).unwrap();
        assert_ne!(
            q, p,
            "other settings, another file: a running build keeps its own"
        );
        assert!(
            fs_err::read_to_string(&p)
                .unwrap()
                .contains("max_size = 1G")
        );
        assert!(
            fs_err::read_to_string(&q)
                .unwrap()
                .contains("max_size = 2G")
        );
    }
}
