//! `kforge test kselftest`: a kernel's selftests, built against the identity's own tree and
//! headers (`make headers`, then `make -C tools/testing/selftests TARGETS=T install`), kept
//! with the identity in the store as its `kselftest` layer (a directory per target, verified
//! like the other layers, reused when present, superseded by one with more targets), and run
//! in a guest with the kernel's own runner (`run_kselftest.sh`), whose TAP is read from its
//! output as it comes.
//!
//! Selftests are host programs (linked against the host's libraries, often scripts for the
//! host's shell or Python): they run on the host's own root, read-only, or a `--rootfs`
//! directory that has what they need; a copy of the targets is shared writable as the
//! working directory.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::CaseResult;
use super::db::{Db, NewRun, Shown};
use super::ktap::Ktap;
use crate::dirs::Dirs;
use crate::error::{Error, GuestError};
use crate::flow::{Event, Reporter};
use crate::guest::run::{self, RunOptions, Watch};
use crate::kernel::manifest::Manifest;
use crate::process::Cmd;
use crate::slot::{Mirror, Slot};
use crate::store::{Kind, Layer, Release, Source, Store};
use crate::toolchain::Compiler;

/// How to run.
#[derive(Debug, Clone)]
pub struct KselftestOptions {
    /// The targets (directories of tools/testing/selftests), in the order given.
    pub targets: Vec<String>,
    /// The guest as `kforge run` takes it: its root (the host's, or a directory); its
    /// working directory and command are made here.
    pub guest: RunOptions,
    /// Wait for a busy slot when the selftests must be built.
    pub wait: bool,
}

/// A target name as the selftests' Makefile takes it (`size`, `net/forwarding`): letters,
/// digits, `_ - .` and `/` between names, never `..` nor an option.
pub fn check_target(t: &str) -> Result<(), GuestError> {
    let ok = !t.is_empty()
        && t.len() <= 64
        && !t.starts_with(['-', '/'])
        && !t.ends_with('/')
        && t.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(GuestError::Refused(format!(
            "`{}` is not a kselftest target (a directory of tools/testing/selftests, e.g. size or timers)",
            t.escape_debug()
        )))
    }
}

/// The targets the layer holds: its top-level directories.
fn targets_in(record: &crate::store::LayerRecord<serde_json::Value>) -> Vec<String> {
    let mut t: Vec<String> = record
        .files
        .iter()
        .filter_map(|f| f.path.split_once('/').map(|(d, _)| d.to_owned()))
        .collect();
    t.dedup();
    t
}

/// Makes sure the identity's kselftest layer holds `targets`, building what it lacks in the
/// kernel's slot; the layer's directory.
pub fn ensure_layer(
    m: &Manifest,
    targets: &[String],
    dirs: &Dirs,
    wait: bool,
    reporter: &dyn Reporter,
) -> Result<PathBuf, Error> {
    const STEP: &str = "kselftest";
    let release: Release = m.uts_release.parse()?;
    let store = Store::open(&dirs.store, Kind::Kernel)?;
    let record = store
        .record::<serde_json::Value>(Layer::Kselftest, &release)
        .ok()
        .flatten();
    let intact = record.is_some() && store.verify_cached(Layer::Kselftest, &release)?.is_empty();
    let have = match (&record, intact) {
        (Some(r), true) => targets_in(r),
        (Some(_), false) => {
            reporter.event(&Event::Warn {
                step: STEP,
                message: &format!(
                    "the kselftest layer of kernel-{release} is damaged: building it again"
                ),
            });
            Vec::new()
        }
        (None, _) => Vec::new(),
    };
    let missing: Vec<&String> = targets.iter().filter(|t| !have.contains(t)).collect();
    let layer = store.layer_dir(Layer::Kselftest, &release);
    if missing.is_empty() {
        reporter.event(&Event::Info {
            step: STEP,
            message: &format!(
                "kernel-{release}'s selftests ({}) are in the store: not building",
                targets.join(", ")
            ),
        });
        return Ok(layer);
    }
    // Built in the kernel's slot, at the identity's commit (a series' or a worktree's commit
    // is in the mirror too); the layer then has every target asked for now or before.
    let mirror = Mirror::open(&dirs.mirror)?;
    let known = mirror.list_dir(&m.commit, "tools/testing/selftests")?;
    for t in &missing {
        let top = t.split('/').next().unwrap_or_default();
        if !known.iter().any(|k| k == top) {
            return Err(GuestError::Refused(format!(
                "{} has no tools/testing/selftests/{t}",
                &m.commit[..12.min(m.commit.len())]
            ))
            .into());
        }
    }
    let slot = Slot::new(&dirs.workers_dir, dirs.worker_index, crate::kernel::PROJECT);
    let _guard = slot.lock(wait, &mut |msg| {
        reporter.event(&Event::Info {
            step: STEP,
            message: msg,
        });
    })?;
    slot.sync(&mirror, &m.commit, false)?;
    let work = slot.state.join("kselftest");
    if work.exists() {
        fs_err::remove_dir_all(&work)?;
    }
    let headers = work.join("headers");
    let forward = |line: &str| {
        reporter.event(&Event::Output { step: STEP, line });
    };
    let llvm: &[&str] = if m.compiler == Compiler::Clang {
        &["LLVM=1"]
    } else {
        &[]
    };
    let make = |args: &[std::ffi::OsString]| -> Result<(), Error> {
        let cmd = Cmd::new("make")
            .cwd(&slot.src)
            .arg(format!("--jobs={}", crate::kernel::jobs()))
            .args(llvm.iter().copied())
            .args(args.iter().cloned())
            .hints(crate::kernel::kbuild::build_hints);
        reporter.event(&Event::Command {
            step: STEP,
            command: &cmd.display(),
        });
        cmd.stream(&mut |l| forward(l))?;
        Ok(())
    };
    let mut o = std::ffi::OsString::from("O=");
    o.push(&headers);
    make(&[o, "ARCH=x86_64".into(), "headers".into()])?;
    let staged = work.join("install");
    for t in &missing {
        let mut out = std::ffi::OsString::from("O=");
        out.push(work.join("build").join(t.replace('/', "_")));
        let mut khdr = std::ffi::OsString::from("KHDR_INCLUDES=-isystem ");
        khdr.push(headers.join("usr/include"));
        let mut install = std::ffi::OsString::from("INSTALL_PATH=");
        install.push(staged.join(t));
        make(&[
            "-C".into(),
            "tools/testing/selftests".into(),
            out,
            format!("TARGETS={t}").into(),
            khdr,
            install,
            "install".into(),
        ])?;
    }
    // The new layer: the targets kept from the old one, and the new ones.
    let mut sources = Vec::new();
    if let Some(r) = &record
        && intact
    {
        for f in &r.files {
            sources.push(Source {
                dest: f.path.clone(),
                from: layer.join(&f.path),
            });
        }
    }
    for t in &missing {
        sources.extend(crate::store::sources_under(&staged.join(t), t)?);
    }
    let (_, dir) = store.supersede(Layer::Kselftest, &release, &m.digest, m, &sources, "local")?;
    let _ = fs_err::remove_dir_all(&work);
    reporter.event(&Event::Info {
        step: STEP,
        message: &format!(
            "built {} against kernel-{release}; the store's kselftest layer holds {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            have.iter()
                .chain(missing.iter().copied())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    Ok(dir)
}

/// The runner's output (the command's stdout), read as TAP while it comes.
struct TapOut {
    ktap: Ktap,
    partial: Vec<u8>,
    start: Instant,
    raw: Vec<u8>,
}

impl Write for TapOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.raw.extend_from_slice(buf);
        self.partial.extend_from_slice(buf);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.ktap.feed(&text, self.start.elapsed());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The console, kept for the record.
struct Console(Vec<u8>);

impl Watch for Console {
    fn line(&mut self, line: &str, _at: Duration) {
        self.0.extend_from_slice(line.as_bytes());
        self.0.push(b'\n');
    }
}

/// The guest's command: each target's runner in its directory, in order.
pub fn command(targets: &[String]) -> Vec<String> {
    use std::fmt::Write as _;
    let mut script = String::new();
    for t in targets {
        let _ = writeln!(
            script,
            "(cd {} && ./run_kselftest.sh)",
            crate::process::shell_quote(std::ffi::OsStr::new(t))
        );
    }
    vec!["sh".into(), "-c".into(), script]
}

/// Builds (when needed) and runs the targets; every result recorded in `db`.
pub fn run(
    m: &Manifest,
    opts: &KselftestOptions,
    dirs: &Dirs,
    db: &mut Db,
    reporter: &dyn Reporter,
) -> Result<Shown, Error> {
    for t in &opts.targets {
        check_target(t)?;
    }
    ensure_layer(m, &opts.targets, dirs, opts.wait, reporter)?;
    // A copy the tests may write into, checked against the layer's record on the way.
    let mut guest = opts.guest.clone();
    let tests = guest.workdir.join("tests");
    fs_err::create_dir_all(&guest.workdir)?;
    let release: Release = m.uts_release.parse()?;
    Store::open(&dirs.store, Kind::Kernel)?.materialize::<serde_json::Value>(
        Layer::Kselftest,
        &release,
        &tests,
    )?;
    guest.cwd.clone_from(&tests);
    guest.writable = true;
    guest.command = command(&opts.targets);
    let started_unix = i64::try_from(crate::store::now_unix()).unwrap_or(i64::MAX);
    let start = Instant::now();
    let mut out = TapOut {
        ktap: Ktap::new(),
        partial: Vec::new(),
        start,
        raw: Vec::new(),
    };
    let mut err = Vec::new();
    let mut console = Console(Vec::new());
    let ran = run::run_watched(m, &guest, &mut out, &mut err, &mut console, reporter);
    let at = start.elapsed();
    if !out.partial.is_empty() {
        let rest = String::from_utf8_lossy(&out.partial).into_owned();
        out.ktap.feed(&rest, at);
    }
    let super::Ending {
        outcome,
        detail,
        end,
    } = super::ending(ran, None, "the runner", &err)?;
    let _ = fs_err::remove_dir_all(&guest.workdir);
    let results: Vec<CaseResult> = out
        .ktap
        .finish(end.as_ref().map(|(s, why)| (*s, why.as_str())), at);
    // The record keeps the console and, after it, what the runner printed.
    let mut log = console.0;
    log.extend_from_slice(b"--- the runner's output ---\n");
    log.extend_from_slice(&out.raw);
    let run = db.record(
        &NewRun {
            kind: "kselftest",
            identity: &m.uts_release,
            filter: &opts.targets.join(","),
            outcome,
            outcome_detail: detail,
            started_unix,
            seconds: (at.as_secs_f64() * 10.0).round() / 10.0,
            host: super::kunit::hostname(),
            worker: dirs.worker_index,
            console: &log,
        },
        &results,
    )?;
    Ok(Shown { run, results })
}

/// Where a run's copy of the targets goes (for the guest's working directory).
pub fn workdir(dirs: &Dirs) -> PathBuf {
    dirs.system_dir
        .join("guests")
        .join(format!("kselftest-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_directory_names_never_paths_out() {
        for good in ["size", "net/forwarding", "timers", "kvm_x86-64.v2"] {
            assert!(check_target(good).is_ok(), "{good}");
        }
        for bad in [
            "", "../etc", "a/../b", "-x", "/abs", "a//b", "a/", "x y", "a;b", "$(x)",
        ] {
            assert!(check_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_runner_output_is_read_line_by_line_as_it_comes() {
        let mut out = TapOut {
            ktap: Ktap::new(),
            partial: Vec::new(),
            start: Instant::now(),
            raw: Vec::new(),
        };
        out.write_all(b"TAP version 13\n1..1\n# selftests: size: get_size\n# ok 1 get runtime ")
            .unwrap();
        assert!(out.ktap.results().is_empty());
        out.write_all(b"memory use\nok 1 selftests: size: get_size\n")
            .unwrap();
        let r = out.ktap.results();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].path, ["selftests: size: get_size"]);
        assert_eq!(r[0].status, crate::verdict::Status::Pass);
        assert!(
            r[0].diagnostics
                .contains(&"# ok 1 get runtime memory use".to_owned())
        );
        assert_eq!(
            command(&["size".into()])[2],
            "(cd size && ./run_kselftest.sh)\n"
        );
    }
}
