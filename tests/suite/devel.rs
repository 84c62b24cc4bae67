//! The developer tail and the engines, for real: a build interrupted in compile and resumed;
//! the developer worktree (devtools, deploy_worktree, fetch_devel) for a fresh build and for
//! a reused one, an out-of-tree module built against it, its compilation database checked
//! path by path; a dirty developer worktree never overwritten; and the committed Windmill
//! flow run module by module (`kforge step`), giving the manifest `kforge build` gives.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::git::git;
use crate::support::{
    Manifest, RunRecord, TINY, TestContext, fixtures, fs, run_windmill_flow, tag,
};

/// Every file and forced include the database names exists, and nothing points outside
/// the developer worktree.
fn check_database(worktree: &Path) -> usize {
    let db: Vec<serde_json::Value> =
        serde_json::from_slice(&fs::read(worktree.join("compile_commands.json"))).unwrap();
    assert!(db.len() > 100, "only {} entries", db.len());
    let build = worktree.join("build");
    for e in &db {
        let dir = Path::new(e["directory"].as_str().unwrap());
        assert_eq!(dir, build, "{e}");
        let file = Path::new(e["file"].as_str().unwrap());
        assert!(file.starts_with(worktree), "{} is outside", file.display());
        assert!(file.is_file(), "{} is missing", file.display());
        let words: Vec<&str> = e["command"].as_str().unwrap().split_whitespace().collect();
        for w in words.windows(2).filter(|w| w[0] == "-include") {
            let inc = dir.join(w[1]);
            assert!(inc.is_file(), "{} (-include) is missing", inc.display());
        }
        let command = e["command"].as_str().unwrap();
        assert!(
            !command.contains("/workers/"),
            "a slot path is left: {command}"
        );
    }
    db.len()
}

/// `make -C <worktree>/build M=<dir>` builds a module whose vermagic is the identity.
fn build_module(ctx: &TestContext, worktree: &Path, release: &str) {
    let dir = ctx.path().join(format!(
        "hello-{}",
        worktree.file_name().unwrap().to_string_lossy()
    ));
    fs::write(
        dir.join("hello.c"),
        "#include <linux/module.h>\n#include <linux/init.h>\nstatic int __init hello_init(void) { pr_info(\"hello\\n\"); return 0; }\nstatic void __exit hello_exit(void) { }\nmodule_init(hello_init);\nmodule_exit(hello_exit);\nMODULE_LICENSE(\"GPL\");\n",
    );
    fs::write(dir.join("Kbuild"), "obj-m := hello.o\n");
    let out = Command::new("make")
        .arg("-C")
        .arg(worktree.join("build"))
        .arg(format!("M={}", dir.display()))
        .arg("modules")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "out-of-tree module build failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ko = fs::read(dir.join("hello.ko"));
    let needle = format!("vermagic={release} ");
    assert!(
        ko.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "hello.ko does not carry {needle}"
    );
}

fn status(worktree: &Path) -> String {
    git(
        worktree,
        &["status", "--porcelain=v1", "--untracked-files=normal"],
    )
}

#[test]
#[ignore = "builds kernels: scripts/test.sh"]
fn developer_worktrees_resume_and_step_by_step_runs() {
    fixtures::tiny_gcc();
    // This test adds worktrees and a branch to its mirror.
    let ctx = TestContext::with_private_mirror("devel");
    let mirror = ctx.mirror();
    let deploy = ctx.path().join("dev");
    let deploy_s = deploy.display().to_string();
    let build_in = |slot: u32, git_ref: &str, name: &str, extra: &[&str]| {
        ctx.kforge(["build", git_ref])
            .args(TINY)
            .args(["--worktree-group", "g", "--deploy-dir", &deploy_s])
            .args(["--deploy-name", name])
            .args(extra)
            .worker(slot)
    };

    // 1. A build interrupted in compile (as Ctrl-C would), then resumed from there.
    let mut child = build_in(1, tag(), "fresh", &[]).command();
    let log = ctx.path().join("interrupted.log");
    let mut child = child
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let record = ctx.run_record(1);
    let objects = ctx.slot(1).join("build/init/main.o");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        if text.contains("\"current\": \"compile\"") && objects.exists() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before compile was under way:\n{}",
            fs::read_string(&log)
        );
        assert!(
            start.elapsed() < Duration::from_mins(10),
            "compile never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT) };
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130), "an interrupted build exits 130");
    let rec: RunRecord = serde_json::from_slice(&fs::read(&record)).unwrap();
    assert_eq!(rec.current.as_deref(), Some("compile"), "{rec:?}");
    assert_eq!(rec.results.len(), 5, "{rec:?}");
    // The record says how the run ended, what ran it, where, and how to run it again.
    assert_eq!(rec.status.as_deref(), Some("interrupted"), "{rec:?}");
    assert!(rec.finished_unix.is_some_and(|f| f >= rec.started_unix));
    assert_eq!(rec.flow, "kernel");
    assert_eq!(rec.kforge_version, env!("CARGO_PKG_VERSION"));
    let host = rec.host.as_ref().expect("the host");
    assert!(
        host.cpus > 0 && host.memory_mib > 0 && !host.kernel.is_empty(),
        "{host:?}"
    );
    let pinned = rec.results[0].state["pinned"]["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    let reproducer = rec.reproducer.clone().expect("a reproducer");
    assert!(
        reproducer.starts_with("kforge build --request ")
            && reproducer.ends_with(&format!(" --git-ref {pinned}")),
        "{reproducer}"
    );
    // The same record is in the history, and `kforge log` shows it first.
    let log: serde_json::Value = ctx.kforge(["log", "1"]).run().success().json();
    assert_eq!(log["runs"][0]["id"], rec.id.as_str(), "{log}");
    assert_eq!(log["runs"][0]["status"], "interrupted", "{log}");
    assert_eq!(log["runs"][0]["current"], "compile", "{log}");
    // Every field a step result carries is one its schema names.
    let schema: serde_json::Value = ctx
        .kforge(["schema", "--output", "step-result"])
        .run()
        .success()
        .json();
    let state_ref = schema["properties"]["state"]["$ref"].as_str().unwrap();
    let state = &schema["$defs"][state_ref.trim_start_matches("#/$defs/")]["properties"];
    for r in &rec.results {
        for key in r.state.keys() {
            assert!(
                state[key].is_object(),
                "{}: {key} is not in {state}",
                r.step
            );
        }
    }
    assert!(rec.results[0].state.contains_key("pinned"), "{rec:?}");

    let resumed = ctx
        .kforge(["resume"])
        .worker(1)
        .run()
        .success()
        .stderr_has("resuming at compile")
        .stderr_has("==> devtools");
    assert!(
        !resumed.stderr.contains("==> prepare_worktree"),
        "resume re-ran earlier steps:\n{}",
        resumed.stderr
    );
    let fresh: Manifest = resumed.json();
    assert_eq!(fresh.reused, None);
    ctx.kforge(["resume"])
        .worker(1)
        .run()
        .refused("nothing to resume");

    // 2. Its developer worktree: at the built commit, clean, database for its own paths,
    //    an out-of-tree module builds against it.
    let wt_fresh = deploy.join("g/fresh");
    assert_eq!(
        fresh.dev_worktree.as_deref(),
        Some(&*wt_fresh.display().to_string())
    );
    assert_eq!(git(&wt_fresh, &["rev-parse", "HEAD"]), fresh.commit);
    assert_eq!(
        status(&wt_fresh),
        "",
        "kforge's files must not show as changes"
    );
    let n = check_database(&wt_fresh);
    let slot_db = fs::read_string(ctx.slot(1).join("build/compile_commands.json"));
    assert_eq!(
        slot_db.matches("\"file\"").count(),
        n,
        "same translation units as the slot's"
    );
    assert_eq!(
        fs::read(wt_fresh.join("build/.config")),
        fs::read(&fresh.config)
    );
    build_module(&ctx, &wt_fresh, &fresh.uts_release);

    // 3. The committed Windmill flow, module by module on slot 2 (reuse off: it compiles),
    //    gives kforge build's manifest but for where it ran.
    let node = run_windmill_flow(
        ctx.kforge_env()
            .into_iter()
            .chain([("KFORGE_WORKER_INDEX".into(), "2".into())]),
        "windmill/f/kernel/build.flow/flow.yaml",
        &serde_json::json!({"git_ref": tag(), "config_method": "preset", "preset": "tiny_guest_defconfig", "reuse": false, "worktree_group": "", "label": null}).to_string(),
    )
    .success()
    .stderr_has("[run-local] configure_preset done")
    .stderr_has("==> compile");
    let stepwise: Manifest = node.json();
    assert_eq!(stepwise.reused, None, "reuse was off: it compiled");
    assert_eq!(stepwise.worker_index, 2);
    let here = |m: &Manifest| {
        let mut m = m.clone();
        m.build_dir.clear();
        m.config.clear();
        m.destdir.clear();
        m.worker_index = 0;
        m.dev_worktree = None;
        m
    };
    assert_eq!(
        here(&stepwise),
        here(&fresh),
        "step by step differs from kforge build"
    );
    assert_eq!(
        fs::read(
            ctx.slot(2)
                .join(format!("destdir/boot/vmlinuz-{}", fresh.uts_release))
        ),
        fs::read(
            ctx.slot(1)
                .join(format!("destdir/boot/vmlinuz-{}", fresh.uts_release))
        ),
        "the same boot image, byte for byte"
    );
    // Slots 1 and 2 are not read again: dropped (1.7 GB each) before slot 3 checks out, so
    // what follows also shows the store alone serves a reused identity's worktree.
    ctx.drop_kernel_slot(1);
    ctx.drop_kernel_slot(2);

    // 4. A reused identity (from the store) gets a developer worktree too.
    let reused: Manifest = build_in(3, tag(), "reused", &[]).run().success().json();
    assert_eq!(reused.reused.as_deref(), Some("store"));
    let wt_reused = deploy.join("g/reused");
    assert_eq!(status(&wt_reused), "");
    check_database(&wt_reused);
    assert_eq!(
        fs::read(wt_reused.join("build/Module.symvers")),
        fs::read(wt_fresh.join("build/Module.symvers"))
    );

    // 5. A developer worktree with work in it is never moved. Another commit with the same
    //    tree (same identity, so no compile) asks to move `fresh`.
    let tree = git(&mirror, &["rev-parse", &format!("{}^{{tree}}", tag())]);
    let other = git(
        &mirror,
        &[
            "commit-tree",
            &tree,
            "-p",
            &format!("{}^{{commit}}", tag()),
            "-m",
            "same tree, other commit",
        ],
    );
    git(&mirror, &["branch", "same-tree", &other]);
    let move_fresh = |replace: bool| {
        let extra: &[&str] = if replace {
            &["--label", "vanilla", "--deploy-replace"]
        } else {
            &["--label", "vanilla"]
        };
        build_in(3, "same-tree", "fresh", extra).run()
    };
    move_fresh(false).refused("deploy_replace");
    let edited = wt_fresh.join("init/main.c");
    let mut text = fs::read_string(&edited);
    text.push_str("/* work in progress */\n");
    fs::write(&edited, &text);
    fs::write(wt_fresh.join("notes.txt"), "mine\n");
    move_fresh(true).refused("uncommitted work");
    assert_eq!(fs::read_string(&edited), text, "the edit survives");
    assert_eq!(git(&wt_fresh, &["rev-parse", "HEAD"]), fresh.commit);
    // The slot is usable after the refusal, and a clean worktree moves.
    git(&wt_fresh, &["checkout", "--", "init/main.c"]);
    std::fs::remove_file(wt_fresh.join("notes.txt")).unwrap();
    let moved: Manifest = move_fresh(true).success().json();
    assert_eq!(
        moved.uts_release, fresh.uts_release,
        "same tree, same identity"
    );
    assert_eq!(moved.commit, other);
    assert_eq!(git(&wt_fresh, &["rev-parse", "HEAD"]), other);
    check_database(&wt_fresh);
    // Commits of the developer's own are not thrown away either.
    git(
        &wt_fresh,
        &["commit", "--quiet", "--allow-empty", "-m", "mine"],
    );
    let mine = git(&wt_fresh, &["rev-parse", "HEAD"]);
    build_in(3, tag(), "fresh", &["--deploy-replace"])
        .run()
        .refused("commits of yours");
    assert_eq!(git(&wt_fresh, &["rev-parse", "HEAD"]), mine);
}
