//! The developer tail and the engines, for real: a build interrupted in compile and resumed;
//! the developer worktree (devtools, deploy_worktree, fetch_devel) for a fresh build and for
//! a reused one, an out-of-tree module built against it, its compilation database checked
//! path by path; a dirty developer worktree never overwritten; and the committed Windmill
//! flow run module by module (`kforge step`), giving the manifest `kforge build` gives.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, ManifestContract, TestContext, git, repo_root};

const TINY: &[&str] = &["--preset", "tiny_guest_defconfig"];

/// A private bare mirror sharing the fixture's objects: this test adds worktrees and a
/// branch to it, which the other tests must not see.
fn private_mirror(ctx: &TestContext) -> PathBuf {
    let m = ctx.dir.path().join("linux.git");
    let out = Command::new("git")
        .args(["clone", "--quiet", "--bare", "--shared"])
        .arg(common::mirror())
        .arg(&m)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m
}

fn slot_cmd(ctx: &TestContext, index: u32, args: &[&str]) -> Command {
    let mut c = ctx.command();
    c.env("KFORGE_WORKER_INDEX", index.to_string()).args(args);
    c
}

fn run_in(ctx: &TestContext, index: u32, args: &[&str]) -> common::Run {
    common::Run::from(slot_cmd(ctx, index, args).output().unwrap())
}

/// Every file and forced include the database names exists, and nothing points outside
/// the developer worktree.
fn check_database(worktree: &Path) -> usize {
    let db: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(worktree.join("compile_commands.json")).unwrap())
            .unwrap();
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
    let dir = ctx.dir.path().join(format!(
        "hello-{}",
        worktree.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hello.c"),
        "#include <linux/module.h>\n#include <linux/init.h>\nstatic int __init hello_init(void) { pr_info(\"hello\\n\"); return 0; }\nstatic void __exit hello_exit(void) { }\nmodule_init(hello_init);\nmodule_exit(hello_exit);\nMODULE_LICENSE(\"GPL\");\n",
    )
    .unwrap();
    std::fs::write(dir.join("Kbuild"), "obj-m := hello.o\n").unwrap();
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
    let ko = std::fs::read(dir.join("hello.ko")).unwrap();
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
fn developer_worktrees_resume_and_step_by_step_runs() {
    let base = TestContext::new("devel");
    let ctx = TestContext::with_mirror("devel", private_mirror(&base));
    let deploy = ctx.dir.path().join("dev");
    let deploy_s = deploy.display().to_string();
    let with_tail = |name: &str| -> Vec<String> {
        let mut v: Vec<String> = TINY.iter().map(|s| (*s).to_owned()).collect();
        v.extend([
            "--worktree-group".into(),
            "g".into(),
            "--deploy-dir".into(),
            deploy_s.clone(),
            "--deploy-name".into(),
            name.into(),
        ]);
        v
    };

    // 1. A build interrupted in compile (as Ctrl-C would), then resumed from there.
    let mut args = vec!["build".to_owned(), "v6.12.117".to_owned()];
    args.extend(with_tail("fresh"));
    let mut child = slot_cmd(
        &ctx,
        1,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let record = ctx.workers().join("1/main/.kforge/linux/run.json");
    let objects = ctx.slot(1).join("build/init/main.o");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        if text.contains("\"current\": \"compile\"") && objects.exists() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before compile was under way"
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
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(rec["current"], "compile", "{rec}");
    assert_eq!(rec["results"].as_array().unwrap().len(), 5, "{rec}");

    let resumed = run_in(&ctx, 1, &["resume"]).ok();
    assert!(
        resumed.stderr.contains("resuming at compile"),
        "{}",
        resumed.stderr
    );
    assert!(
        !resumed.stderr.contains("==> prepare_worktree"),
        "resume re-ran earlier steps:\n{}",
        resumed.stderr
    );
    assert!(
        resumed.stderr.contains("==> devtools"),
        "{}",
        resumed.stderr
    );
    let fresh: ManifestContract = resumed.json();
    assert_eq!(fresh.reused, None);
    let again = run_in(&ctx, 1, &["resume"]);
    assert_eq!(again.code, 2, "nothing left to resume: {}", again.stderr);
    assert!(
        again.stderr.contains("nothing to resume"),
        "{}",
        again.stderr
    );

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
    let slot_db = std::fs::read_to_string(ctx.slot(1).join("build/compile_commands.json")).unwrap();
    assert_eq!(
        slot_db.matches("\"file\"").count(),
        n,
        "same translation units as the slot's"
    );
    assert_eq!(
        std::fs::read(wt_fresh.join("build/.config")).unwrap(),
        std::fs::read(&fresh.config).unwrap()
    );
    build_module(&ctx, &wt_fresh, &fresh.uts_release);

    // 3. The committed Windmill flow, module by module on slot 2 (reuse off: it compiles),
    //    gives kforge build's manifest but for where it ran.
    let flow = repo_root().join("windmill/f/kernel/build.flow/flow.yaml");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let node_out = Command::new("node")
        .env_clear()
        .envs(ctx.command().get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
        .env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()))
        .env("KFORGE_WORKER_INDEX", "2")
        .arg(repo_root().join("windmill/run-local.mjs"))
        .arg(&flow)
        .arg(r#"{"git_ref": "v6.12.117", "config_method": "preset", "preset": "tiny_guest_defconfig", "reuse": false, "worktree_group": "", "label": null}"#)
        .output()
        .expect("node (scripts/install-deps.sh installs it)");
    assert!(
        node_out.status.success(),
        "the flow failed:\n{}",
        String::from_utf8_lossy(&node_out.stderr)
    );
    let stepwise: ManifestContract = serde_json::from_slice(&node_out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&node_out.stderr);
    assert!(
        stderr.contains("[run-local] configure_preset done"),
        "{stderr}"
    );
    assert!(stderr.contains("==> compile"), "{stderr}");
    assert_eq!(stepwise.reused, None, "reuse was off: it compiled");
    assert_eq!(stepwise.worker_index, 2);
    let here = |m: &ManifestContract| {
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
        std::fs::read(
            ctx.slot(2)
                .join(format!("destdir/boot/vmlinuz-{}", fresh.uts_release))
        )
        .unwrap(),
        std::fs::read(
            ctx.slot(1)
                .join(format!("destdir/boot/vmlinuz-{}", fresh.uts_release))
        )
        .unwrap(),
        "the same boot image, byte for byte"
    );

    // 4. A reused identity (from the store) gets a developer worktree too.
    let mut args = vec!["build".to_owned(), "v6.12.117".to_owned()];
    args.extend(with_tail("reused"));
    let r = run_in(
        &ctx,
        3,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .ok();
    let reused: ManifestContract = r.json();
    assert_eq!(reused.reused.as_deref(), Some("store"));
    let wt_reused = deploy.join("g/reused");
    assert_eq!(status(&wt_reused), "");
    check_database(&wt_reused);
    assert_eq!(
        std::fs::read(wt_reused.join("build/Module.symvers")).unwrap(),
        std::fs::read(wt_fresh.join("build/Module.symvers")).unwrap()
    );

    // 5. A developer worktree with work in it is never moved. Another commit with the same
    //    tree (same identity, so no compile) asks to move `fresh`.
    let mirror = &ctx.mirror;
    let tree = git(mirror, &["rev-parse", "v6.12.117^{tree}"]);
    let other = git(
        mirror,
        &[
            "commit-tree",
            &tree,
            "-p",
            "v6.12.117^{commit}",
            "-m",
            "same tree, other commit",
        ],
    );
    git(mirror, &["branch", "same-tree", &other]);
    let move_fresh = |replace: bool| {
        let mut args = vec![
            "build".to_owned(),
            "same-tree".to_owned(),
            "--label".to_owned(),
            "vanilla".to_owned(),
        ];
        args.extend(with_tail("fresh"));
        if replace {
            args.push("--deploy-replace".into());
        }
        run_in(
            &ctx,
            3,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let no = move_fresh(false);
    assert_eq!(no.code, 2, "{}", no.stderr);
    assert!(no.stderr.contains("deploy_replace"), "{}", no.stderr);
    let edited = wt_fresh.join("init/main.c");
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text.push_str("/* work in progress */\n");
    std::fs::write(&edited, &text).unwrap();
    std::fs::write(wt_fresh.join("notes.txt"), "mine\n").unwrap();
    let no = move_fresh(true);
    assert_eq!(no.code, 2, "{}", no.stderr);
    assert!(no.stderr.contains("uncommitted work"), "{}", no.stderr);
    assert_eq!(
        std::fs::read_to_string(&edited).unwrap(),
        text,
        "the edit survives"
    );
    assert_eq!(git(&wt_fresh, &["rev-parse", "HEAD"]), fresh.commit);
    // The slot is usable after the refusal, and a clean worktree moves.
    git(&wt_fresh, &["checkout", "--", "init/main.c"]);
    std::fs::remove_file(wt_fresh.join("notes.txt")).unwrap();
    let moved: ManifestContract = move_fresh(true).ok().json();
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
    let mut args = vec!["build".to_owned(), "v6.12.117".to_owned()];
    args.extend(with_tail("fresh"));
    args.push("--deploy-replace".into());
    let no = run_in(
        &ctx,
        3,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(no.code, 2, "{}", no.stderr);
    assert!(no.stderr.contains("commits of yours"), "{}", no.stderr);
    assert_eq!(git(&wt_fresh, &["rev-parse", "HEAD"]), mine);
}
