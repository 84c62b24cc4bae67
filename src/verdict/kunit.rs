//! `kforge test kunit`: the build's KUnit suites in a guest. Suites built as modules are run
//! by loading their modules from the virtiofs modules share (one kernel, many runs, any
//! selection), with `kunit`'s `filter_glob` choosing suites; suites built in run at boot with
//! `kunit.filter_glob` on the command line. Their KTAP is read from the serial console (what
//! survives a crash), every case is recorded in the results database with the raw console.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::db::{Db, NewRun, Shown};
use super::ktap::Ktap;
use super::{CaseResult, Status};
use crate::error::{Error, GuestError};
use crate::flow::{Event, Reporter};
use crate::guest::module_name;
use crate::guest::run::{self, Root, RunOptions, Watch};
use crate::kernel::manifest::Manifest;
use crate::process::shell_quote;

/// The module that is KUnit itself, as modules.dep and modules.builtin name it.
const KUNIT_MODULE: &str = "kernel/lib/kunit/kunit.ko";
/// What the guest's script writes to the kernel log between module loads.
const MARK: &str = "kforge-kunit: ";

/// How to run.
#[derive(Debug, Clone)]
pub struct KunitOptions {
    /// Suites (or `suite.case`) to run, as KUnit's `filter_glob` takes them.
    pub suite: String,
    /// A suite with no new KTAP line for this long is stopped as timed out.
    pub suite_timeout: Duration,
    /// The guest as `kforge run` takes it (its command is made here).
    pub guest: RunOptions,
}

/// The KUnit of a build: built in, or as a module, and the test modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KunitModules {
    pub builtin: bool,
    /// Test modules (names as modprobe takes them), in modules.dep order.
    pub tests: Vec<String>,
}

/// Reads a build's modules.dep and modules.builtin: which modules are KUnit tests (those that
/// need `kunit.ko`, or, with KUnit built in, those carrying a `.kunit_test_suites` section).
pub fn find_modules(modules_dir: &Path) -> Result<KunitModules, Error> {
    let read = |name: &str| fs_err::read_to_string(modules_dir.join(name)).unwrap_or_default();
    let builtin = read("modules.builtin")
        .lines()
        .any(|l| l.trim() == KUNIT_MODULE);
    let mut tests = Vec::new();
    for line in read("modules.dep").lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        let is_test = if builtin {
            fs_err::read(modules_dir.join(module))
                .is_ok_and(|b| b.windows(18).any(|w| w == b".kunit_test_suites"))
        } else {
            deps.split_whitespace().any(|d| d == KUNIT_MODULE)
        };
        if is_test {
            tests.push(module_name(module));
        }
    }
    if !builtin && tests.is_empty() {
        return Err(GuestError::Refused(format!(
            "{} has no KUnit test modules: build with a config that has them (the library's tiny_guest_defconfig, or the debug/kunit fragment)",
            modules_dir.display()
        ))
        .into());
    }
    Ok(KunitModules { builtin, tests })
}

/// The guest's script: console messages at info level (KTAP is printed there), KUnit with
/// the filter, then each test module, with a mark in the kernel log before each.
pub fn script(modules: &KunitModules, suite: &str) -> String {
    use std::fmt::Write as _;
    let mut s =
        format!("echo 7 > /proc/sys/kernel/printk\nnote() {{ echo \"{MARK}$*\" > /dev/kmsg; }}\n");
    if !modules.builtin {
        let _ = writeln!(
            s,
            "modprobe kunit filter_glob={} || {{ note \"kunit did not load\"; exit 3; }}",
            shell_quote(std::ffi::OsStr::new(suite))
        );
    }
    for m in &modules.tests {
        let _ = writeln!(
            s,
            "note \"loading {m}\"\nmodprobe {m} || note \"{m} did not load\""
        );
    }
    s.push_str("note done\n");
    s
}

/// Reads the console for the run: the raw log, the KTAP, the module being loaded, and when
/// a suite has said nothing for too long.
struct Reader {
    ktap: Ktap,
    console: Vec<u8>,
    loading: Option<String>,
    loaded: Vec<String>,
    /// Whether the module being loaded has printed a KTAP header yet.
    said_ktap: bool,
    last_progress: Duration,
    suite_timeout: Duration,
    stopped: Option<String>,
}

impl Reader {
    fn new(suite_timeout: Duration) -> Self {
        Self {
            ktap: Ktap::new(),
            console: Vec::new(),
            loading: None,
            loaded: Vec::new(),
            said_ktap: false,
            last_progress: Duration::ZERO,
            suite_timeout,
            stopped: None,
        }
    }
}

impl Watch for Reader {
    fn line(&mut self, line: &str, at: Duration) {
        self.console.extend_from_slice(line.as_bytes());
        self.console.push(b'\n');
        let before = (self.ktap.results().len(), self.ktap.in_progress());
        self.ktap.feed(line, at);
        if let Some(i) = line.find(MARK) {
            let said = &line[i + MARK.len()..];
            self.loading = said.strip_prefix("loading ").map(str::to_owned);
            if let Some(m) = &self.loading {
                self.loaded.push(m.clone());
            }
            self.said_ktap = false;
            self.last_progress = at;
        } else if (self.ktap.results().len(), self.ktap.in_progress()) != before
            || line.contains("KTAP version")
        {
            self.said_ktap = true;
            self.last_progress = at;
        }
    }

    fn stop(&mut self, at: Duration) -> Option<String> {
        let busy = self.ktap.in_progress() || self.loading.is_some();
        if busy && at.saturating_sub(self.last_progress) > self.suite_timeout {
            let why = format!(
                "no KTAP result for {} s{}",
                self.suite_timeout.as_secs(),
                self.loading
                    .as_ref()
                    .map(|m| format!(" (module {m})"))
                    .unwrap_or_default()
            );
            self.stopped = Some(why.clone());
            return Some(why);
        }
        None
    }
}

/// This host's name, for the record.
pub fn hostname() -> String {
    fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".into(), |h| h.trim().to_owned())
}

/// Runs the suites, records every case in `db`; the run as recorded, with its results.
pub fn run(
    m: &Manifest,
    opts: &KunitOptions,
    db: &mut Db,
    worker: u32,
    reporter: &dyn Reporter,
) -> Result<Shown, Error> {
    let modules_dir: PathBuf = m.modules_dir.as_deref().map(PathBuf::from).ok_or_else(|| {
        GuestError::Refused(format!(
            "{} has no modules tree: KUnit's suites are loaded from it",
            m.uts_release
        ))
    })?;
    let modules = find_modules(&modules_dir)?;
    let mut guest = opts.guest.clone();
    guest.root = Root::Initramfs;
    guest.command = vec!["sh".into(), "-c".into(), script(&modules, &opts.suite)];
    if modules.builtin {
        // Built-in suites run at boot, before any script: the filter and the console level
        // go on the command line.
        guest
            .append
            .push(format!("kunit.filter_glob={}", opts.suite));
        guest.append.push("loglevel=7".into());
    }
    let mut reader = Reader::new(opts.suite_timeout);
    reporter.event(&Event::Info {
        step: "kunit",
        message: &format!(
            "{}: suites `{}` from {} test module{}{}",
            m.uts_release,
            opts.suite,
            modules.tests.len(),
            if modules.tests.len() == 1 { "" } else { "s" },
            if modules.builtin {
                " and the built-in ones"
            } else {
                ""
            }
        ),
    });
    let started_unix = i64::try_from(crate::store::now_unix()).unwrap_or(i64::MAX);
    let start = Instant::now();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ran = run::run_watched(m, &guest, &mut out, &mut err, &mut reader, reporter);
    let at = start.elapsed();
    let super::Ending {
        outcome,
        detail,
        end,
    } = super::ending(ran, reader.stopped.clone(), "the guest's script", &err)?;
    let _ = fs_err::remove_dir_all(&guest.workdir);
    let mut results: Vec<CaseResult> = reader
        .ktap
        .finish(end.as_ref().map(|(s, why)| (*s, why.as_str())), at);
    if let Some((status, why)) = &end {
        // A module that crashed or hung in its loading, before any KTAP of its own.
        if let Some(m) = reader.loading.as_ref().filter(|_| !reader.said_ktap) {
            results.push(CaseResult {
                path: vec![format!("(module {m})")],
                status: *status,
                duration_ms: None,
                diagnostics: vec![format!("# {why}")],
            });
        }
        // Modules the crash or the timeout kept from loading: nothing of theirs ran.
        let reached = reader.loaded.len();
        results.extend(modules.tests.iter().skip(reached).map(|m| CaseResult {
            path: vec![format!("(module {m})")],
            status: Status::NotRun,
            duration_ms: None,
            diagnostics: Vec::new(),
        }));
    }
    let run = db.record(
        &NewRun {
            kind: "kunit",
            identity: &m.uts_release,
            filter: &opts.suite,
            outcome,
            outcome_detail: detail,
            started_unix,
            seconds: (at.as_secs_f64() * 10.0).round() / 10.0,
            host: hostname(),
            worker,
            console: &reader.console,
        },
        &results,
    )?;
    Ok(Shown { run, results })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_modules_are_those_that_need_kunit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/lib/kunit/kunit.ko:\nkernel/lib/list-test.ko: kernel/lib/kunit/kunit.ko\n\
             kernel/net/vmw_vsock/vsock.ko:\nkernel/lib/kunit/kunit-example-test.ko: kernel/lib/kunit/kunit.ko\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/ext4/ext4.ko\n",
        )
        .unwrap();
        let found = find_modules(dir.path()).unwrap();
        assert_eq!(
            found,
            KunitModules {
                builtin: false,
                tests: vec!["list-test".into(), "kunit-example-test".into()],
            }
        );
        let s = script(&found, "list*");
        assert!(s.contains("modprobe kunit filter_glob='list*' ||"), "{s}");
        assert!(
            s.contains("note \"loading list-test\"\nmodprobe list-test ||"),
            "{s}"
        );
        // Without KUnit at all: refused, with what to build.
        std::fs::write(dir.path().join("modules.dep"), "kernel/x.ko:\n").unwrap();
        let e = find_modules(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no KUnit test modules"), "{e}");
        // Built in: a module is a test by its section.
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/lib/kunit/kunit.ko\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("kernel")).unwrap();
        std::fs::write(
            dir.path().join("kernel/x.ko"),
            b"\x7fELF...\0.kunit_test_suites\0",
        )
        .unwrap();
        let found = find_modules(dir.path()).unwrap();
        assert!(found.builtin);
        assert_eq!(found.tests, ["x"]);
        assert!(!script(&found, "*").contains("modprobe kunit "));
    }

    #[test]
    fn the_reader_stops_a_suite_that_says_nothing() {
        let mut r = Reader::new(Duration::from_secs(10));
        let at = Duration::from_secs;
        assert_eq!(r.stop(at(100)), None, "nothing under way: not a hang");
        r.line("[    1.0] kforge-kunit: loading list-test", at(1));
        r.line("KTAP version 1", at(2));
        r.line("1..1", at(2));
        r.line("    KTAP version 1", at(3));
        r.line("    # Subtest: list-kernel-test", at(3));
        r.line("    1..2", at(3));
        r.line("    ok 1 a", at(5));
        r.line("some kernel chatter", at(12));
        assert_eq!(r.stop(at(14)), None);
        let why = r.stop(at(16)).unwrap();
        assert_eq!(why, "no KTAP result for 10 s (module list-test)");
        assert_eq!(r.loaded, ["list-test"]);
        assert!(
            String::from_utf8(r.console)
                .unwrap()
                .contains("some kernel chatter\n")
        );
    }
}
