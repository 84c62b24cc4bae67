//! Verdicts for real: the suite's tiny kernel (KUnit and a few suites as modules) runs its
//! KUnit suites in a guest under TCG, and every case lands in the results database (read
//! here with SQLite itself, beside the raw console log); a guest that panics mid-suite keeps
//! the cases before the crash; a suite that says nothing is stopped; a build of the fixture
//! branch that breaks one KUnit case shows as exactly that regression. A kselftest target is
//! built against the kernel, kept in its store entry, run on the host's root and reported.

use crate::support::tools::ToolLog;
use crate::support::{
    Manifest, ResultsDiff, ResultsLs, TINY, TestContext, TestRun, fixtures, fs, run_windmill_flow,
};

#[test]
#[ignore = "builds a kernel and boots guests: scripts/test.sh"]
fn kunit_runs_in_a_guest_every_case_is_recorded_and_a_broken_case_is_a_regression() {
    let ctx = TestContext::new("kunit");
    let gcc = ctx.adopt(fixtures::tiny_gcc());
    let entry = gcc.entry();
    let kunit = |target: &str, extra: &[&str]| {
        ctx.kforge(["test", "kunit", target, "--accel", "tcg"])
            .args(extra)
            .run()
    };

    // A crash mid-suite: oops=panic turns the fault test's deliberate oops into a panic. The
    // cases before it are kept, the case under way is a crash with the oops, the modules
    // after it were not run.
    let crashed: TestRun = kunit(&entry, &["--append", "oops=panic"]).code(1).json();
    assert_eq!(crashed.run.outcome, "crashed");
    assert!(
        crashed
            .run
            .outcome_detail
            .as_deref()
            .is_some_and(|d| d.starts_with("the guest kernel panicked: Kernel panic")),
        "{:?}",
        crashed.run
    );
    assert_eq!(
        crashed
            .case(&[
                "kunit-try-catch-test",
                "kunit_test_try_catch_successful_try_no_catch"
            ])
            .status,
        "pass"
    );
    let crash: Vec<_> = crashed
        .results
        .iter()
        .filter(|c| c.status == "crash")
        .collect();
    assert!(
        crash.iter().all(|c| c.path[0] == "kunit_fault") && !crash.is_empty(),
        "{crash:?}"
    );
    assert!(
        crash[0]
            .diagnostics
            .iter()
            .any(|l| l.contains("BUG: kernel NULL pointer dereference")),
        "{:?}",
        crash[0]
    );
    assert_eq!(crashed.case(&["(module list-test)"]).status, "not_run");
    assert!(crashed.run.counts.pass > 5 && crashed.run.counts.crash >= 1);

    // A suite that prints nothing for too long (0 s here: at once) is stopped as timed out.
    let hung: TestRun = kunit(&entry, &["--suite-timeout", "0"]).code(1).json();
    assert_eq!(hung.run.outcome, "timed_out");
    assert_eq!(hung.case(&["(module kunit-test)"]).status, "timeout");
    assert_eq!(hung.case(&["(module list-test)"]).status, "not_run");

    // Every suite: each case with its status, skip reasons and failure lines.
    let all: TestRun = kunit(&entry, &[]).success().json();
    assert_eq!(
        (
            all.run.identity.as_str(),
            all.run.outcome.as_str(),
            all.run.kind.as_str()
        ),
        (gcc.uts_release.as_str(), "completed", "kunit")
    );
    let c = &all.run.counts;
    assert!(
        c.pass > 100 && c.fail == 0 && c.crash == 0 && c.skip > 0,
        "{c:?}"
    );
    assert_eq!(
        (c.pass + c.fail + c.skip + c.crash + c.timeout + c.not_run) as usize,
        all.results.len()
    );
    let init = all.case(&["list-kunit-test", "list_test_list_init"]);
    assert_eq!(init.status, "pass");
    assert!(init.duration_ms.is_some());
    let skipped = all.case(&["example", "example_skip_test"]);
    assert_eq!(skipped.status, "skip");
    assert_eq!(skipped.diagnostics[0], "# SKIP this test should be skipped");
    assert!(
        skipped
            .diagnostics
            .contains(&"    # example_skip_test: You should not see a line below.".to_owned()),
        "{skipped:?}"
    );
    assert_eq!(
        all.case(&["example", "example_params_test", "example value 0"])
            .status,
        "skip"
    );
    assert_eq!(
        all.case(&["kunit_fault", "kunit_test_fault_null_dereference"])
            .status,
        "pass"
    );
    // The database itself holds every case, and the raw console is beside it.
    let db = rusqlite::Connection::open(ctx.system().join("results/results.sqlite")).unwrap();
    let rows: i64 = db
        .query_row(
            "SELECT count(*) FROM results WHERE run_id = ?1",
            [all.run.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(usize::try_from(rows).unwrap(), all.results.len());
    let status: String = db
        .query_row(
            "SELECT status FROM results WHERE run_id = ?1 AND path = ?2",
            rusqlite::params![all.run.id, r#"["list-kunit-test","list_test_list_init"]"#],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "pass");
    let (identity, host): (String, String) = db
        .query_row(
            "SELECT identity, host FROM runs WHERE id = ?1",
            [all.run.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(identity, gcc.uts_release);
    assert!(!host.is_empty());
    let console = fs::read_string(&all.run.console_log);
    assert!(
        console.contains("# Subtest: list-kunit-test")
            && console.contains("ok 1 list_test_list_init"),
        "{}",
        all.run.console_log
    );

    // A selection: only the list suite's cases.
    let list: TestRun = kunit(&entry, &["--suite", "list*"]).success().json();
    assert_eq!(list.run.filter, "list*");
    assert!(
        list.results.iter().all(|c| c.path[0] == "list-kunit-test"),
        "{:?}",
        list.results
    );
    assert_eq!(
        list.results.len(),
        all.results
            .iter()
            .filter(|c| c.path[0] == "list-kunit-test")
            .count()
    );
    let runs: ResultsLs = ctx.kforge(["results", "ls", &entry]).run().success().json();
    assert_eq!(
        runs.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [crashed.run.id, hung.run.id, all.run.id, list.run.id]
    );
    let shown: TestRun = ctx
        .kforge(["results", "show", &list.run.id.to_string()])
        .run()
        .success()
        .json();
    assert_eq!(shown, list);

    // The committed Windmill test flow, module by module: a manifest in, the run out (with
    // its verdict inside: it exits 0 whatever the tests say).
    let manifest = fs::read_string(ctx.manifest_file(&entry));
    let flowed: TestRun = run_windmill_flow(
        ctx.kforge_env(),
        "windmill/f/kernel/test.flow/flow.yaml",
        &format!(r#"{{"manifest": {manifest}, "suite": "list*"}}"#),
    )
    .success()
    .stderr_has("[run-local] kunit done")
    .json();
    assert_eq!(flowed.run.filter, "list*");
    let verdicts = |r: &TestRun| {
        r.results
            .iter()
            .map(|c| (c.path.clone(), c.status.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(verdicts(&flowed), verdicts(&list));

    // The branch that breaks one KUnit case: its build fails exactly that case, and the diff
    // against the base says so (by identities: their latest runs).
    let broken: Manifest = ctx
        .kforge(["build", "test/kunit-broken"])
        .args(TINY)
        .run()
        .success()
        .json();
    let b: TestRun = kunit(&broken.entry(), &[]).code(1).json();
    let failed = b.case(&["list-kunit-test", "list_test_list_init"]);
    assert_eq!(failed.status, "fail");
    assert!(
        failed
            .diagnostics
            .iter()
            .any(|l| l.contains("EXPECTATION FAILED at lib/list-test.c")),
        "{failed:?}"
    );
    assert_eq!(
        b.run.counts.fail, 2,
        "the case and its suite: {:?}",
        b.run.counts
    );
    let diff: ResultsDiff = ctx
        .kforge(["results", "diff", &all.run.id.to_string(), &broken.entry()])
        .run()
        .success()
        .json();
    let paths = |v: &[crate::support::Change]| -> Vec<Vec<String>> {
        v.iter().map(|c| c.path.clone()).collect()
    };
    assert_eq!(
        paths(&diff.regressions),
        [
            vec!["list-kunit-test".to_owned()],
            vec![
                "list-kunit-test".to_owned(),
                "list_test_list_init".to_owned()
            ]
        ]
    );
    assert!(diff.fixes.is_empty() && diff.new.is_empty() && diff.gone.is_empty());
    assert_eq!(diff.unchanged, all.results.len() - 2);
    assert_eq!(
        (diff.a.id, diff.b.id),
        (all.run.id, b.run.id),
        "an identity stands for its latest run"
    );
    ctx.kforge([
        "results",
        "diff",
        &all.run.id.to_string(),
        &b.run.id.to_string(),
        "--exit-code",
    ])
    .run()
    .code(1);

    // Built, booted and tested in one command, against a baseline: the broken branch fails
    // on its regression (the manifest still on stdout), the base passes against itself.
    let r = ctx
        .kforge(["build", "test/kunit-broken"])
        .args(TINY)
        .args([
            "--boot",
            "--accel",
            "tcg",
            "--test",
            "kunit:list*",
            "--baseline",
            &entry,
        ])
        .run()
        .code(1)
        .stderr_has(&format!(
            "regression against {}: list-kunit-test / list_test_list_init (pass -> fail)",
            gcc.uts_release
        ));
    let chained: Manifest = r.json();
    assert_eq!(chained.uts_release, broken.uts_release);
    ctx.kforge(["build", crate::support::tag()])
        .args(TINY)
        .args(["--test", "kunit:list*", "--baseline", &entry])
        .run()
        .success()
        .stderr_has("0 regressions");
    ctx.kforge(["build", "--test", "kselftest"])
        .run()
        .refused("say kunit (every suite) or kunit:GLOB");

    // Bad input: a run that is not there; a kernel without KUnit.
    ctx.kforge(["results", "show", "999"])
        .run()
        .refused("no test run 999");
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(ctx.manifest_file(&entry))).unwrap();
    let empty = ctx
        .path()
        .join(format!("empty/lib/modules/{}", gcc.uts_release));
    fs::write(empty.join("modules.dep"), "kernel/fs/nls/nls_base.ko:\n");
    m["modules_dir"] = empty.display().to_string().into();
    let no_kunit = ctx.path().join("no-kunit.json");
    fs::write(&no_kunit, m.to_string());
    kunit(no_kunit.to_str().unwrap(), &[]).refused("has no KUnit test modules");
}

#[test]
#[ignore = "builds selftests and boots guests: scripts/test.sh"]
fn a_kselftest_target_is_built_once_kept_in_the_store_and_run() {
    let ctx = TestContext::new("kselftest");
    let gcc = ctx.adopt(fixtures::tiny_gcc());
    let entry = gcc.entry();
    let make = ToolLog::new(ctx.path(), &["make"]);
    let ks = |extra: &[&str]| {
        ctx.kforge(["test", "kselftest", entry.as_str(), "--accel", "tcg"])
            .path_prepend(make.bin())
            .args(extra)
            .run()
    };
    // Built against the identity's tree and headers, stored, run by the kernel's runner on
    // the host's root, every result recorded.
    let first: TestRun = ks(&["--target", "size"]).success().json();
    assert_eq!(
        (
            first.run.kind.as_str(),
            first.run.filter.as_str(),
            first.run.outcome.as_str()
        ),
        ("kselftest", "size", "completed")
    );
    assert_eq!(first.results.len(), 1, "{:?}", first.results);
    assert_eq!(first.case(&["selftests: size: get_size"]).status, "pass");
    let calls = make.calls("make");
    assert!(calls.iter().any(|l| l.contains("headers")), "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|l| l.contains("TARGETS=size") && l.contains("install")),
        "{calls:?}"
    );
    let layer = ctx.store().join("kselftest").join(&entry);
    let binary = layer.join("size/size/get_size");
    assert!(binary.is_file() && layer.join("size/run_kselftest.sh").is_file());
    let verified: Vec<crate::support::Verified> = ctx
        .kforge(["store", "verify", &entry])
        .run()
        .success()
        .json();
    assert!(
        verified.iter().any(|v| v.layer == "kselftest" && v.ok),
        "{verified:?}"
    );
    // Again: from the store, make never runs.
    make.reset();
    let again: TestRun = ks(&["--target", "size"])
        .success()
        .stderr_has("are in the store: not building")
        .json();
    assert!(make.not_called("make"), "make ran for a stored target");
    assert_eq!(again.case(&["selftests: size: get_size"]).status, "pass");
    assert_ne!(again.run.id, first.run.id);
    // A damaged layer is built again, and the run still reports.
    fs::flip_byte(&binary, 100, 0x01);
    let repaired: TestRun = ks(&["--target", "size"])
        .success()
        .stderr_has("is damaged: building it again")
        .json();
    assert_eq!(repaired.case(&["selftests: size: get_size"]).status, "pass");
    ctx.kforge(["store", "verify", &entry]).run().success();
    // Bad targets: refused before anything is built.
    ks(&["--target", "../etc"]).refused("is not a kselftest target");
    ks(&["--target", "no_such_target"]).refused("has no tools/testing/selftests/no_such_target");
}
