//! KTAP (and TAP, which kselftest prints) read from a console, one line at a time: a pure
//! state machine, unit-tested on recorded consoles. It keeps what real consoles do to a test
//! log: kernel messages between the test lines, `[ time]` prefixes, several documents in a
//! row (one per test module), nested subtests (suites, cases, parameters), bytes that are
//! not UTF-8, and an end that comes too early (a crash, a hang), after which the test under
//! way is recorded as crashed or timed out with what the console said, and the rest of the
//! plan as not run.
//!
//! Format: Documentation/dev-tools/ktap.rst in the kernel tree.

use std::time::Duration;

use super::{CaseResult, Status};

/// At most this many diagnostic lines are kept per result (a flood of kernel messages
/// cannot make a result unbounded).
pub const MAX_DIAGNOSTICS: usize = 200;
/// And at most this many characters per line.
pub const MAX_LINE: usize = 512;

/// One level of nesting: a document, or a subtest's own results.
#[derive(Debug, Clone)]
struct Frame {
    /// Leading spaces of its lines.
    indent: usize,
    /// `# Subtest: NAME`, when given.
    name: Option<String>,
    /// `1..N`, when given.
    plan: Option<usize>,
    /// The number of its last result line (`ok N ...`).
    last: usize,
    /// Lines seen since its last result: the next result's diagnostics.
    log: Vec<String>,
    /// When its last result (or the frame itself) came.
    mark: Duration,
}

impl Frame {
    fn new(indent: usize, at: Duration) -> Self {
        Self {
            indent,
            name: None,
            plan: None,
            last: 0,
            log: Vec::new(),
            mark: at,
        }
    }
}

/// A parsed result line.
struct ResultLine<'a> {
    ok: bool,
    number: Option<usize>,
    name: &'a str,
    directive: Option<&'a str>,
}

/// The console's reader. Feed it every line with the time it came; [`Ktap::results`] holds
/// every result so far, [`Ktap::finish`] closes what an early end left open.
#[derive(Debug, Clone, Default)]
pub struct Ktap {
    stack: Vec<Frame>,
    /// The kernel's clock, once a line carried its `[ time]` prefix: from then on every
    /// duration is measured by it (a line without the prefix counts at the last time seen),
    /// never by a mix of the kernel's clock and the host's.
    kernel_clock: Option<Duration>,
    results: Vec<CaseResult>,
    /// Whether any KTAP or TAP header was seen.
    seen_header: bool,
}

/// Strips a printk time prefix (`[    1.234567] `) and trailing CR; `Some(seconds)` when the
/// prefix was there.
fn strip_time(line: &str) -> (&str, Option<f64>) {
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(rest) = line.strip_prefix('[')
        && let Some((stamp, after)) = rest.split_once(']')
        && let Ok(secs) = stamp.trim().parse::<f64>()
    {
        return (after.strip_prefix(' ').unwrap_or(after), Some(secs));
    }
    (line, None)
}

fn parse_result(text: &str) -> Option<ResultLine<'_>> {
    let (ok, rest) = if let Some(r) = text.strip_prefix("not ok") {
        (false, r)
    } else if let Some(r) = text.strip_prefix("ok") {
        (true, r)
    } else {
        return None;
    };
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = rest.trim_start();
    let (number, rest) = match rest.split_once(' ') {
        Some((n, r)) if n.parse::<usize>().is_ok() => (n.parse().ok(), r),
        None if rest.parse::<usize>().is_ok() => (rest.parse().ok(), ""),
        _ => (None, rest),
    };
    // TAP allows "ok 1 - name"; KTAP writes "ok 1 name".
    let rest = rest.strip_prefix("- ").unwrap_or(rest);
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n, Some(d)),
        None => match rest.strip_prefix("# ") {
            Some(d) => ("", Some(d)),
            None => (rest, None),
        },
    };
    Some(ResultLine {
        ok,
        number,
        name: name.trim(),
        directive,
    })
}

fn clip(line: &str) -> String {
    line.chars().take(MAX_LINE).collect()
}

impl Ktap {
    pub fn new() -> Self {
        Self::default()
    }

    /// The results so far, in the order they came.
    pub fn results(&self) -> &[CaseResult] {
        &self.results
    }

    /// Whether a KTAP or TAP document has started.
    pub fn started(&self) -> bool {
        self.seen_header
    }

    /// Whether a test is under way: an open document whose plan is not complete.
    pub fn in_progress(&self) -> bool {
        self.stack
            .iter()
            .any(|f| f.plan.is_some_and(|p| f.last < p))
    }

    /// The frame whose lines have this indentation: the innermost one at or above it.
    fn frame_at(&self, indent: usize) -> Option<usize> {
        self.stack.iter().rposition(|f| f.indent <= indent)
    }

    /// The names above a result of frame `i`: its ancestors' and its own subtest names.
    fn path_to(&self, i: usize) -> Vec<String> {
        self.stack[..=i]
            .iter()
            .filter_map(|f| f.name.clone())
            .collect()
    }

    fn note(&mut self, i: usize, line: &str) {
        let log = &mut self.stack[i].log;
        if log.len() < MAX_DIAGNOSTICS {
            log.push(clip(line));
        }
    }

    /// Feeds one console line that came `at` after the run started.
    pub fn feed(&mut self, raw: &str, at: Duration) {
        let (line, stamp) = strip_time(raw);
        if let Some(secs) = stamp {
            self.kernel_clock = Some(Duration::from_secs_f64(secs.max(0.0)));
        }
        let at = self.kernel_clock.unwrap_or(at);
        let text = line.trim_start_matches(' ');
        let indent = line.len() - text.len();
        if text.starts_with("KTAP version ") || text.starts_with("TAP version ") {
            self.seen_header = true;
            if indent == 0 {
                // A new document (each test module prints its own): what the last one left
                // open will not be finished.
                self.close_open(Status::NotRun, "a new KTAP document began", at);
                self.stack.clear();
            } else {
                let keep = self.frame_at(indent.saturating_sub(1)).map_or(0, |i| i + 1);
                self.stack.truncate(keep);
            }
            self.stack.push(Frame::new(indent, at));
            return;
        }
        if self.stack.is_empty() {
            // Before any document: not a test's line.
            return;
        }
        if let Some(name) = text.strip_prefix("# Subtest: ") {
            let name = clip(name.trim());
            match self.stack.iter().rposition(|f| f.indent == indent) {
                Some(i) if self.stack[i].name.is_none() => self.stack[i].name = Some(name),
                _ => {
                    // A subtest header without its own version line (older KUnit).
                    let keep = self.frame_at(indent.saturating_sub(1)).map_or(0, |i| i + 1);
                    self.stack.truncate(keep);
                    let mut f = Frame::new(indent, at);
                    f.name = Some(name);
                    self.stack.push(f);
                }
            }
            return;
        }
        if text.starts_with("# module: ") {
            // KUnit's note of the module a suite comes from: the suite's, not a diagnostic.
            return;
        }
        if let Some(plan) = text.strip_prefix("1..")
            && let Ok(n) = plan.trim().parse::<usize>()
        {
            if let Some(i) = self.frame_at(indent) {
                self.stack[i].plan = Some(n);
            }
            return;
        }
        if let Some(r) = parse_result(text)
            && let Some(i) = self.frame_at(indent)
            && self.stack[i].indent == indent
        {
            self.record(i, &r, at);
            return;
        }
        // Anything else (a diagnostic, a kernel message): the log of the test under way,
        // the innermost one.
        self.note(self.stack.len() - 1, line.trim_end());
    }

    fn record(&mut self, i: usize, r: &ResultLine<'_>, at: Duration) {
        // A subtest's own frame (deeper than this result line) ends with it: its lines that
        // no result of its own took are this result's too.
        let mut diagnostics = Vec::new();
        for f in self.stack.drain(i + 1..) {
            diagnostics.extend(f.log);
        }
        let frame = &mut self.stack[i];
        let mut own = std::mem::take(&mut frame.log);
        own.append(&mut diagnostics);
        own.truncate(MAX_DIAGNOSTICS);
        let duration = at.saturating_sub(frame.mark);
        frame.mark = at;
        frame.last = r.number.unwrap_or(frame.last + 1);
        let number = frame.last;
        let directive = r.directive.unwrap_or_default();
        let upper = directive.to_ascii_uppercase();
        let status = if upper.starts_with("SKIP") {
            Status::Skip
        } else if upper.starts_with("TODO") || r.ok {
            Status::Pass
        } else {
            Status::Fail
        };
        if !directive.is_empty() && status == Status::Skip {
            own.insert(0, format!("# {directive}"));
        }
        let mut path = self.path_to(i);
        path.push(if r.name.is_empty() {
            format!("(test {number})")
        } else {
            clip(r.name)
        });
        self.results.push(CaseResult {
            path,
            status,
            duration_ms: Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
            diagnostics: own,
        });
    }

    /// Records the test under way in every open frame as `status` (the innermost one with
    /// `why` and what the console said meanwhile), and the rest of each plan as not run.
    fn close_open(&mut self, status: Status, why: &str, at: Duration) {
        let mut said = Some(vec![format!("# {why}")]);
        // The subtest just closed: the name of its parent's test under way.
        let mut child: Option<String> = None;
        while let Some(frame) = self.stack.pop() {
            if let Some(log) = said.as_mut() {
                log.extend(frame.log.iter().cloned());
            }
            let path = self.path_to_popped(&frame);
            for n in frame.last + 1..=frame.plan.unwrap_or(0) {
                let under_way = n == frame.last + 1;
                let name = match child.take() {
                    Some(c) if under_way => c,
                    _ => format!("(test {n})"),
                };
                let mut p = path.clone();
                p.push(name);
                let (status, mut diagnostics, duration) = if under_way {
                    (
                        status,
                        said.take().unwrap_or_default(),
                        Some(at.saturating_sub(frame.mark)),
                    )
                } else {
                    (Status::NotRun, Vec::new(), None)
                };
                diagnostics.truncate(MAX_DIAGNOSTICS);
                self.results.push(CaseResult {
                    path: p,
                    status,
                    duration_ms: duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    diagnostics,
                });
            }
            child = frame.name;
        }
    }

    fn path_to_popped(&self, frame: &Frame) -> Vec<String> {
        self.stack
            .iter()
            .filter_map(|f| f.name.clone())
            .chain(frame.name.clone())
            .collect()
    }

    /// Ends the reading. `end` says how the console ended: `None` when it ended as planned
    /// (what is still open was cut short anyway and is recorded as not run); a crash or a
    /// timeout marks the test under way with its text.
    pub fn finish(mut self, end: Option<(Status, &str)>, at: Duration) -> Vec<CaseResult> {
        let (status, why) = end.unwrap_or((Status::NotRun, "the log ended before its plan did"));
        self.close_open(status, why, at);
        self.results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(console: &str) -> Ktap {
        let mut k = Ktap::new();
        for (i, line) in console.lines().enumerate() {
            k.feed(line, Duration::from_millis(10 * i as u64));
        }
        k
    }

    fn summary(results: &[CaseResult]) -> Vec<(String, Status)> {
        results
            .iter()
            .map(|r| (r.path.join(" / "), r.status))
            .collect()
    }

    /// What `modprobe list_test` and `modprobe kunit_example_test` print on a console: two
    /// documents, a failing case with its expectation, a skip, parameterised cases, and
    /// kernel messages in between.
    const TWO_MODULES: &str = "\
[    1.100000] virtio_blk virtio1: 1/0/0 default/read/poll queues
KTAP version 1
1..1
    KTAP version 1
    # Subtest: list-kernel-test
    # module: list_test
    1..3
    ok 1 list_test_list_init
[    1.200000] random: crng init done
    # list_test_list_add: EXPECTATION FAILED at lib/list-test.c:58
    Expected list.next == &b, but
        list.next == ffff8880 (a)
    not ok 2 list_test_list_add
    ok 3 list_test_list_del
    # list-kernel-test: pass:2 fail:1 skip:0 total:3
    # Totals: pass:2 fail:1 skip:0 total:3
not ok 1 list-kernel-test
KTAP version 1
1..1
    KTAP version 1
    # Subtest: example
    # module: kunit_example_test
    1..3
    ok 1 example_simple_test
    ok 2 example_skip_test # SKIP this test should be skipped
        KTAP version 1
        # Subtest: example_params_test
        ok 1 example value 3
        # example_params_test: pass:1 fail:0 skip:0 total:1
    ok 3 example_params_test
ok 1 example
";

    #[test]
    fn documents_suites_cases_and_parameters() {
        let k = read(TWO_MODULES);
        assert!(!k.in_progress());
        let results = k.finish(None, Duration::from_secs(9));
        assert_eq!(
            summary(&results),
            [
                (
                    "list-kernel-test / list_test_list_init".into(),
                    Status::Pass
                ),
                ("list-kernel-test / list_test_list_add".into(), Status::Fail),
                ("list-kernel-test / list_test_list_del".into(), Status::Pass),
                ("list-kernel-test".into(), Status::Fail),
                ("example / example_simple_test".into(), Status::Pass),
                ("example / example_skip_test".into(), Status::Skip),
                (
                    "example / example_params_test / example value 3".into(),
                    Status::Pass
                ),
                ("example / example_params_test".into(), Status::Pass),
                ("example".into(), Status::Pass),
            ]
        );
        let failed = &results[1];
        assert_eq!(
            failed.diagnostics,
            [
                "random: crng init done",
                "    # list_test_list_add: EXPECTATION FAILED at lib/list-test.c:58",
                "    Expected list.next == &b, but",
                "        list.next == ffff8880 (a)",
            ]
        );
        assert_eq!(
            results[5].diagnostics,
            ["# SKIP this test should be skipped"]
        );
    }

    #[test]
    fn durations_come_from_the_kernels_clock_when_lines_carry_it() {
        let console = "\
[    1.000000] KTAP version 1
[    1.000000] 1..2
[    1.250000] ok 1 quick
[    1.250000] slow_test: still going
[    3.750000] ok 2 slow
";
        let results = read(console).finish(None, Duration::ZERO);
        let ms: Vec<Option<u64>> = results.iter().map(|r| r.duration_ms).collect();
        assert_eq!(ms, [Some(250), Some(2500)]);
        // Without the prefix, by the arrival times the reader was given (10 ms a line).
        let results = read("KTAP version 1\n1..1\nx\nok 1 a\n").finish(None, Duration::ZERO);
        assert_eq!(results[0].duration_ms, Some(30));
    }

    #[test]
    fn a_crash_marks_the_test_under_way_and_the_rest_not_run() {
        let console = "\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: kunit-try-catch-test
    1..4
    ok 1 kunit_test_try_catch_successful_try_no_catch
BUG: kernel NULL pointer dereference, address: 0000000000000000
Oops: 0002 [#1] NOPTI
RIP: 0010:kunit_test_null_dereference+0x5/0x10 [kunit_test]
Kernel panic - not syncing: Fatal exception
";
        let k = read(console);
        assert!(k.in_progress());
        let results = k.finish(
            Some((Status::Crash, "the guest kernel panicked: Fatal exception")),
            Duration::from_secs(3),
        );
        assert_eq!(
            summary(&results),
            [
                (
                    "kunit-try-catch-test / kunit_test_try_catch_successful_try_no_catch".into(),
                    Status::Pass
                ),
                ("kunit-try-catch-test / (test 2)".into(), Status::Crash),
                ("kunit-try-catch-test / (test 3)".into(), Status::NotRun),
                ("kunit-try-catch-test / (test 4)".into(), Status::NotRun),
                ("kunit-try-catch-test".into(), Status::Crash),
            ]
        );
        let crashed = &results[1].diagnostics;
        assert_eq!(crashed[0], "# the guest kernel panicked: Fatal exception");
        assert!(
            crashed.iter().any(|l| l.starts_with("Oops: 0002")),
            "{crashed:?}"
        );
    }

    #[test]
    fn a_hang_times_out_the_test_under_way() {
        let console = "TAP version 13\n1..2\n# selftests: size: get_size\nok 1 selftests: size: get_size\n# selftests: timers: nsleep\n";
        let results = read(console).finish(
            Some((Status::Timeout, "no result within 120 s")),
            Duration::from_secs(200),
        );
        assert_eq!(
            summary(&results),
            [
                ("selftests: size: get_size".into(), Status::Pass),
                ("(test 2)".into(), Status::Timeout),
            ]
        );
        assert_eq!(
            results[1].diagnostics,
            ["# no result within 120 s", "# selftests: timers: nsleep"]
        );
    }

    #[test]
    fn garbage_and_broken_bytes_are_not_results() {
        let console = "\u{1b}[0m\u{fffd}\u{fffd}ok\nok 1 before any header\nKTAP version 1\n1..1\nokay then\nnot ok\u{fffd} 1 x\n    ok 1 deeper than any frame\nok 1 \u{fffd}name\u{fffd}\n";
        let k = read(console);
        let results = k.finish(None, Duration::ZERO);
        assert_eq!(
            summary(&results),
            [("\u{fffd}name\u{fffd}".into(), Status::Pass)]
        );
        assert!(
            results[0]
                .diagnostics
                .iter()
                .any(|l| l.contains("deeper than any frame")),
            "{results:?}"
        );
        // A line longer than MAX_LINE is clipped; a flood of lines is capped.
        let mut k = Ktap::new();
        k.feed("KTAP version 1", Duration::ZERO);
        k.feed("1..1", Duration::ZERO);
        for _ in 0..10 * MAX_DIAGNOSTICS {
            k.feed(&"x".repeat(10 * MAX_LINE), Duration::ZERO);
        }
        k.feed("ok 1 flooded", Duration::ZERO);
        let r = &k.results()[0];
        assert_eq!(r.diagnostics.len(), MAX_DIAGNOSTICS);
        assert!(r.diagnostics.iter().all(|l| l.chars().count() <= MAX_LINE));
    }

    #[test]
    fn result_lines_in_their_forms() {
        let r = parse_result("ok 12 - some name # SKIP not here").unwrap();
        assert!(r.ok);
        assert_eq!(
            (r.number, r.name, r.directive),
            (Some(12), "some name", Some("SKIP not here"))
        );
        let r = parse_result("not ok 3 x").unwrap();
        assert!(!r.ok);
        assert_eq!((r.number, r.name), (Some(3), "x"));
        assert!(parse_result("okay").is_none());
        assert!(parse_result("ok").is_some());
        assert_eq!(strip_time("[   12.5] x").0, "x");
        assert_eq!(strip_time("[   12.5] x").1, Some(12.5));
        assert_eq!(strip_time("[nope] x").0, "[nope] x");
    }
}
