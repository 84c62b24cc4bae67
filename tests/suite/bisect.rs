//! Bisect for real, on the fixture mirror's `test/bisect` history (16 commits on the base:
//! step 9 touches only Documentation/, step 10 does not build and step 11 mends it, step 12
//! breaks KUnit's list_test_list_init). The first run builds each candidate through the
//! flow and checks it in a guest; the second answers from the store and the results
//! database without compiling; a culprit that changes nothing the build reads is flagged;
//! an interrupted bisect resumes without redoing what it decided.

use serde::Deserialize;

use crate::support::git::git;
use crate::support::{ResultsLs, TINY, TestContext, fixtures, fs, kernel_mirror, tag};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    good: Vec<String>,
    bad: String,
    check: String,
    first_bad: Option<Culprit>,
    first_bad_among: Vec<String>,
    commits_in_range: usize,
    candidates: usize,
    compiles: usize,
    steps: Vec<Step>,
    #[allow(dead_code)]
    seconds: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Culprit {
    commit: String,
    subject: String,
    identity: Option<String>,
    changes_kernel: Option<bool>,
    files: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    commit: String,
    subject: String,
    identity: Option<String>,
    how: String,
    same_kernel_as: Option<String>,
    verdict: String,
    reason: String,
    #[allow(dead_code)]
    seconds: f64,
}

impl Report {
    /// (step number of the fixture, how, verdict) for each candidate, in order.
    fn log(&self) -> Vec<(u32, &str, &str)> {
        self.steps
            .iter()
            .map(|s| {
                let n = s
                    .subject
                    .strip_prefix("bisect fixture: step ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("not a fixture step: {s:?}"));
                (n, s.how.as_str(), s.verdict.as_str())
            })
            .collect()
    }
    fn step(&self, n: u32) -> &Step {
        let subject = format!("bisect fixture: step {n}");
        self.steps
            .iter()
            .find(|s| s.subject == subject)
            .unwrap_or_else(|| panic!("step {n} was not a candidate: {:?}", self.steps))
    }
}

#[test]
#[ignore = "builds kernels and boots guests: scripts/test.sh"]
fn bisect_finds_the_first_bad_commit_and_never_builds_an_identity_twice() {
    // The suite's tiny kernel warms the compiler cache for this config first.
    let _ = fixtures::tiny_gcc();
    let ctx = TestContext::new("bisect");
    let mirror = kernel_mirror();
    let commit = |rev: &str| git(mirror, &["rev-parse", &format!("{rev}^{{commit}}")]);
    // test/bisect~k is step 16-k.
    let step = |n: u32| commit(&format!("test/bisect~{}", 16 - n));
    let base = commit(tag());
    let bisect_cmd = |extra: &[&str]| {
        ctx.kforge(["bisect", "--accel", "tcg"])
            .args(TINY)
            .args(extra)
    };
    let bisect = |extra: &[&str]| bisect_cmd(extra).run();
    let kunit_range = [
        "--good",
        tag(),
        "--bad",
        "test/bisect",
        "--check",
        "kunit:list*",
    ];

    // Refused before anything is touched.
    ctx.kforge(["bisect", "resume"])
        .run()
        .refused("no bisect to resume on this worker");
    bisect(&["--good", "test/bisect", "--bad", tag(), "--check", "boot"])
        .refused("is not an ancestor of --bad");
    bisect(&["--good", tag(), "--bad", tag(), "--check", "boot"]).refused("are the same commit");
    bisect(&["--good", tag(), "--bad", "test/bisect", "--check", "make"])
        .refused("is not a check: say boot, kunit[:GLOB]");
    bisect_cmd(&kunit_range)
        .args(["--git-ref", tag()])
        .run()
        .refused("a ref to build does not apply");
    assert!(
        !ctx.slot(0).exists(),
        "nothing was built for a refused bisect"
    );

    // The first run: each candidate built and its KUnit list suite run in a guest.
    let first: Report = bisect(&kunit_range).success().json();
    assert_eq!(
        (first.good.clone(), first.bad.as_str()),
        (vec![base.clone()], step(16).as_str())
    );
    assert_eq!(first.check, "kunit:list*");
    assert_eq!(first.commits_in_range, 16);
    // git's split: step 8 (good), 12 (bad), 10 (does not build: skipped), 9 (changes only
    // Documentation/: the kernel of step 8, its verdict), 11 (good).
    assert_eq!(
        first.log(),
        [
            (8, "compiled", "good"),
            (12, "compiled", "bad"),
            (10, "build_failed", "skip"),
            (9, "same_kernel", "good"),
            (11, "compiled", "good"),
        ]
    );
    assert_eq!((first.candidates, first.compiles), (5, 4));
    let culprit = first.first_bad.as_ref().expect("one first bad commit");
    assert_eq!(culprit.commit, step(12));
    assert_eq!(culprit.subject, "bisect fixture: step 12");
    assert_eq!(culprit.files, ["lib/list-test.c"]);
    assert_eq!(culprit.changes_kernel, Some(true));
    assert!(first.first_bad_among.is_empty());
    let bad = first.step(12);
    assert_eq!(culprit.identity, bad.identity);
    assert!(
        bad.reason
            .contains("first: list-kunit-test / list_test_list_init"),
        "{bad:?}"
    );
    let broken = first.step(10);
    assert!(
        broken.reason.contains("compile failed")
            && broken
                .reason
                .contains("init/version.c:66:1: error: unknown type name 'this'"),
        "{broken:?}"
    );
    let same = first.step(9);
    assert_eq!(same.same_kernel_as.as_deref(), Some(step(8).as_str()));
    assert_eq!(same.identity, None);
    // Every built candidate is a kernel of that commit in the store, labelled by it.
    let ids: Vec<String> = [8, 11, 12]
        .iter()
        .map(|n| first.step(*n).identity.clone().expect("built"))
        .collect();
    for (n, id) in [8, 11, 12].iter().zip(&ids) {
        assert!(
            id.starts_with(&format!("6.12.118-{}-", &step(*n)[..12])),
            "{id}"
        );
        assert!(
            ctx.store()
                .join("run")
                .join(format!("kernel-{id}"))
                .is_dir(),
            "{id}"
        );
        assert_eq!(first.step(*n).commit, step(*n));
    }
    // Every verdict is a run in the results database: the bad one's failing case, the
    // failed build.
    let runs: ResultsLs = ctx.kforge(["results", "ls"]).run().success().json();
    let kinds: Vec<(&str, &str, u32)> = runs
        .runs
        .iter()
        .map(|r| (r.kind.as_str(), r.identity.as_str(), r.counts.fail))
        .collect();
    assert_eq!(
        kinds,
        [
            ("kunit", ids[0].as_str(), 0),
            ("kunit", ids[2].as_str(), 2),
            (
                "build",
                broken.identity.as_deref().expect("its identity"),
                1
            ),
            ("kunit", ids[1].as_str(), 0),
        ]
    );

    // The same bisect again: nothing built, nothing booted; the same answer.
    let out = bisect(&kunit_range).success();
    assert!(!out.stderr.contains("==> compile"), "{}", out.stderr);
    assert!(!out.stderr.contains("[kunit] run"), "{}", out.stderr);
    let again: Report = out.json();
    assert_eq!(
        again.log(),
        [
            (8, "recorded", "good"),
            (12, "recorded", "bad"),
            (10, "failed_before", "skip"),
            (9, "same_kernel", "good"),
            (11, "recorded", "good"),
        ]
    );
    assert_eq!(again.compiles, 0);
    assert_eq!(
        again.first_bad.as_ref().map(|c| c.commit.as_str()),
        Some(step(12).as_str())
    );

    // A culprit that changes no file the build reads (step 9, between a good step 8 and a
    // "bad" step 9): flagged.
    let flagged = bisect(&[
        "--good",
        &step(8),
        "--bad",
        &step(9),
        "--check",
        "kunit:list*",
    ])
    .success()
    .stderr_has("it changes no file this config's build reads");
    let flagged: Report = flagged.json();
    let c = flagged.first_bad.expect("one first bad commit");
    assert_eq!(
        (c.commit.as_str(), c.changes_kernel),
        (step(9).as_str(), Some(false))
    );
    assert_eq!(c.files, ["Documentation/process/changes.rst"]);
    assert_eq!((flagged.candidates, flagged.compiles), (0, 0));

    // Interrupted and resumed: a host script check (bad from step 12 on) that stops kforge
    // the first time it sees step 12. Resumed, what was decided is not decided again.
    let marker = ctx.path().join("interrupted");
    let bad_from_12: Vec<String> = (12..=16).map(step).collect();
    let script = ctx.path().join("is-good.sh");
    fs::write_executable(
        &script,
        &format!(
            "#!/bin/sh\n\
             test -f \"$1\" && test \"$(jq -r .uts_release \"$1\")\" = \"$KFORGE_RELEASE\" || exit 200\n\
             if [ \"$KFORGE_COMMIT\" = {s12} ] && [ ! -e {marker} ]; then\n\
               touch {marker}; kill -TERM $PPID; sleep 30; exit 200\n\
             fi\n\
             case \"$KFORGE_COMMIT\" in {bad}) echo \"bad: $KFORGE_COMMIT\"; exit 1;; esac\n\
             exit 0\n",
            s12 = step(12),
            marker = marker.display(),
            bad = bad_from_12.join("|"),
        ),
    );
    let check = format!("script:{}", script.display());
    let script_range = ["--good", tag(), "--bad", "test/bisect", "--check", &check];
    // (stopped by the signal, or by the end of the script the signal's handler killed)
    let stopped = bisect(&script_range);
    assert!([130, 2].contains(&stopped.code), "{}", stopped.stderr);
    assert!(stopped.stdout.is_empty(), "{}", stopped.stdout);
    assert!(marker.exists());
    let resumed: Report = ctx.kforge(["bisect", "resume"]).run().success().json();
    assert_eq!(
        resumed.log(),
        [
            (8, "recorded", "good"),
            (12, "reused", "bad"),
            (10, "failed_before", "skip"),
            (9, "same_kernel", "good"),
            (11, "reused", "good"),
        ]
    );
    assert_eq!(resumed.check, check);
    assert_eq!(resumed.compiles, 0);
    assert_eq!(
        resumed.first_bad.map(|c| c.commit),
        Some(step(12)),
        "{:?}",
        resumed.steps
    );
    // The script's verdicts are runs too, one per identity it judged.
    let runs: ResultsLs = ctx.kforge(["results", "ls"]).run().success().json();
    let scripts: Vec<(&str, u32, u32)> = runs
        .runs
        .iter()
        .filter(|r| r.kind == "script")
        .map(|r| (r.identity.as_str(), r.counts.pass, r.counts.fail))
        .collect();
    assert_eq!(
        scripts,
        [
            (ids[0].as_str(), 1, 0),
            (ids[2].as_str(), 0, 1),
            (ids[1].as_str(), 1, 0)
        ]
    );
}
