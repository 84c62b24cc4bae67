//! What a CI maintainer reads after a build, kept in its run record (the compile step's
//! state): the compiler's warnings by kind and by file (read from make's output as it
//! comes), this build's own ccache hits and misses (from a stats log of this build's
//! compilations, not the cache's global counters), and the sizes of what it made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The figures of one build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BuildFigures {
    pub warnings: Warnings,
    /// `null` when the build did not compile through ccache.
    pub ccache: Option<CcacheFigures>,
    pub sizes: Sizes,
}

/// Compiler warnings, each line make printed counted once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Warnings {
    pub total: u32,
    /// By the flag that names the warning (`-Wunused-variable`; `other` without one).
    pub by_kind: BTreeMap<String, u32>,
    /// By source file, relative to the tree.
    pub by_file: BTreeMap<String, u32>,
}

impl Warnings {
    /// Counts `line` when it is a compiler warning.
    pub fn see(&mut self, line: &str) {
        if let Some((file, kind)) = warning_of(line) {
            self.total += 1;
            *self.by_kind.entry(kind).or_default() += 1;
            *self.by_file.entry(file).or_default() += 1;
        }
    }
}

/// A gcc or clang warning line: `../init/version.c:12:5: warning: ... [-Wunused-variable]`
/// gives (`init/version.c`, `-Wunused-variable`).
pub fn warning_of(line: &str) -> Option<(String, String)> {
    let (location, rest) = line.split_once(": warning: ")?;
    let mut parts = location.split(':');
    let file = parts.next()?.trim();
    // `file:line[:column]`: make's own warnings (`make[2]: warning: ...`) have no line.
    let line_no = parts.next()?;
    if file.is_empty() || file.contains(' ') || line_no.parse::<u32>().is_err() {
        return None;
    }
    let file = file.trim_start_matches("./").trim_start_matches("../");
    let kind = rest
        .trim_end()
        .strip_suffix(']')
        .and_then(|r| r.rsplit_once(" [").map(|(_, k)| k))
        .filter(|k| k.starts_with("-W"))
        .map_or("other", |k| k.split('=').next().unwrap_or(k));
    Some((file.to_owned(), kind.to_owned()))
}

/// This build's compilations by what ccache made of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CcacheFigures {
    /// Answered from the cache (direct or preprocessed).
    pub hits: u32,
    /// Of the hits, those answered in direct mode, without running the preprocessor.
    pub direct_hits: u32,
    /// Compiled, then stored.
    pub misses: u32,
    /// Calls ccache passed to the compiler (links, preprocessor-only runs, ...).
    pub uncacheable: u32,
}

/// Reads a ccache stats log (`CCACHE_STATSLOG`): one `# <file>` line per call (relative to
/// `cwd`), then the counters it moved. A call on an input in `recompiled` (a hit the compile
/// step compiled again) counts as a miss.
pub fn ccache_of(log: &str, cwd: &Path, recompiled: &[PathBuf]) -> CcacheFigures {
    let mut f = CcacheFigures::default();
    for (input, c) in crate::toolchain::ccache::stats_calls(log) {
        if recompiled.contains(&cwd.join(input)) {
            f.misses += 1;
        } else if c.contains(&"direct_cache_hit") {
            f.hits += 1;
            f.direct_hits += 1;
        } else if c.contains(&"preprocessed_cache_hit") {
            f.hits += 1;
        } else if c.contains(&"cache_miss") {
            f.misses += 1;
        } else {
            f.uncacheable += 1;
        }
    }
    f
}

/// Sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Sizes {
    pub boot_image: Option<u64>,
    /// vmlinux's sections as `size` counts them.
    pub vmlinux_text: Option<u64>,
    pub vmlinux_data: Option<u64>,
    pub vmlinux_bss: Option<u64>,
    /// The installed modules tree.
    pub modules: Option<u64>,
}

/// `size`'s text, data and bss of an ELF file (Berkeley format).
pub fn elf_sizes(file: &Path) -> Option<(u64, u64, u64)> {
    let out = crate::process::Cmd::new("size").arg(file).output().ok()?;
    let line = out.lines().nth(1)?;
    let mut n = line.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some((n.next()??, n.next()??, n.next()??))
}

/// The bytes of the regular files under `dir`.
pub fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_counted_by_kind_and_file() {
        let mut w = Warnings::default();
        for line in [
            "../init/version.c:66:12: warning: 'kforge_unused' defined but not used [-Wunused-variable]",
            "../init/version.c:70:1: warning: no previous prototype for 'f' [-Wmissing-prototypes]",
            "../lib/x.c:3:1: warning: format '%d' expects ... [-Wformat=]",
            "drivers/y.c:1:1: warning: something without a flag",
            "  CC      init/version.o",
            "../init/version.c:66:12: note: in expansion of macro",
            "make[2]: warning: jobserver unavailable",
        ] {
            w.see(line);
        }
        assert_eq!(w.total, 4);
        assert_eq!(
            w.by_kind.into_iter().collect::<Vec<_>>(),
            [
                ("-Wformat".to_owned(), 1),
                ("-Wmissing-prototypes".to_owned(), 1),
                ("-Wunused-variable".to_owned(), 1),
                ("other".to_owned(), 1)
            ]
        );
        assert_eq!(w.by_file.get("init/version.c"), Some(&2));
        assert_eq!(w.by_file.get("drivers/y.c"), Some(&1));
    }

    #[test]
    fn the_stats_log_counts_this_builds_calls() {
        let log = "# a.c\ncache_miss\ndirect_cache_miss\nlocal_storage_write\n\
                   # a.c\ndirect_cache_hit\nlocal_storage_hit\n\
                   # b.c\npreprocessed_cache_hit\n\
                   # vmlinux\ncalled_for_link\n";
        let cwd = Path::new("/b");
        assert_eq!(
            ccache_of(log, cwd, &[]),
            CcacheFigures {
                hits: 2,
                direct_hits: 1,
                misses: 1,
                uncacheable: 1
            }
        );
        // b.c was compiled again after its hit: a miss, not a hit.
        assert_eq!(
            ccache_of(log, cwd, &[PathBuf::from("/b/b.c")]),
            CcacheFigures {
                hits: 1,
                direct_hits: 1,
                misses: 2,
                uncacheable: 1
            }
        );
        assert_eq!(ccache_of("", cwd, &[]), CcacheFigures::default());
    }
}
