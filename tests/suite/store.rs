//! The store. With a real kernel, where the kernel matters: a repeated request answered
//! without make, an A -> B -> A switch, a damaged entry rebuilt, gc with pins and holders.
//! On synthetic entries of a few small files, in seconds (tier 1): publishes killed
//! part-way, two writers racing for one entry, verify naming what is damaged, repair, gc.

use std::path::PathBuf;
use std::time::Instant;

use crate::support::procs::LockHolder;
use crate::support::synthetic::{self, spawn_writer};
use crate::support::tools::ToolLog;
use crate::support::{
    BootReport, GcReport, Identity, Manifest, Outcome, StoreLs, TestContext, Verified, fixtures,
    fs, repo_root,
};

/// The repo's library with a second preset: the tiny guest plus one symbol.
fn library_with_variant(ctx: &TestContext) -> PathBuf {
    let lib = ctx.path().join("library");
    fs::copy_tree(&repo_root().join("kconfig-library"), &lib);
    let tiny = fs::read_string(lib.join("defconfigs/tiny_guest_defconfig"));
    fs::write(
        lib.join("defconfigs/tiny_b_defconfig"),
        format!("{tiny}CONFIG_PRINTK_TIME=y\n"),
    );
    lib
}

#[test]
#[ignore = "builds kernels: scripts/test.sh"]
fn a_repeated_request_is_answered_from_the_store_without_make() {
    fixtures::tiny_gcc();
    let ctx = TestContext::new("reuse");
    let make = ToolLog::new(ctx.path(), &["make"]);
    let lib = library_with_variant(&ctx);
    let kf = |args: &[&str]| {
        ctx.kforge(args)
            .path_prepend(make.bin())
            .env("KFORGE_LIBRARY", &lib)
            .run()
    };
    let build = |preset: &str| -> (Manifest, String) {
        let r = kf(&["build", "--preset", preset]).success();
        (r.json(), r.stderr)
    };

    // A, compiled and published: run layer and devel layer.
    let (a, _) = build("tiny_guest_defconfig");
    assert_eq!(a.reused, None);
    let entry = ctx.store().join("run").join(a.entry());
    let devel = ctx.store().join("devel").join(a.entry());
    assert_eq!(
        a.store_entry.as_deref(),
        Some(&*entry.display().to_string())
    );
    assert_eq!(
        a.store_devel.as_deref(),
        Some(&*devel.display().to_string())
    );
    let a_config = fs::read(&a.config);
    assert!(fs::read(devel.join(".config")) == a_config);
    assert!(devel.join("Module.symvers").is_file());
    assert!(devel.join("scripts/mod/modpost").is_file());
    let uts = fs::read_string(devel.join("include/generated/utsrelease.h"));
    assert!(uts.contains(&a.uts_release), "{uts}");
    let ls: StoreLs = ctx.kforge(["store", "ls"]).run().success().json();
    assert_eq!(ls.entries.len(), 1, "{ls:?}");
    assert_eq!(ls.entries[0].layers, ["run", "devel"]);
    assert_eq!(ls.entries[0].identity, a.entry());

    // B: another config, another identity.
    let (b, _) = build("tiny_b_defconfig");
    assert_ne!(b.digest, a.digest);
    assert_eq!(b.reused, None);
    assert!(fs::read(&b.config) != a_config);

    // A again: answered from the store without the slot (the configure memory knows these
    // inputs), no make at all (not even Kconfig), the same manifest but for the reuse
    // marker and the .config, which is the memory's copy of A's (the slot keeps B's).
    make.reset();
    let start = Instant::now();
    let (a2, stderr) = build("tiny_guest_defconfig");
    eprintln!("A again answered in {:?}", start.elapsed());
    assert_eq!(a2.reused.as_deref(), Some("store"));
    // (`make --version` is the toolchain's identity, read before anything else.)
    let calls = make.calls("make");
    assert!(
        calls.iter().all(|l| l == "--version"),
        "make ran: {calls:?}"
    );
    assert!(stderr.contains("answered without the slot"), "{stderr}");
    assert!(!stderr.contains("==> prepare_worktree"), "{stderr}");
    let mut same = a2.clone();
    same.reused = None;
    same.config.clone_from(&a.config);
    assert_eq!(same, a);
    assert_ne!(a2.config, a.config);
    assert!(fs::read(&a2.config) == a_config);
    assert!(fs::read(ctx.slot(0).join("build/.config")) == fs::read(&b.config));
    let kept: Manifest = serde_json::from_slice(&fs::read(ctx.slot_manifest(0))).unwrap();
    assert_eq!(kept, a2, "the slot's last manifest is the answer's");
    // `kforge identity` is answered the same way.
    let r = kf(&["identity", "--preset", "tiny_guest_defconfig"]).success();
    assert!(r.stderr.contains("the slot was not used"), "{}", r.stderr);
    let id: Identity = r.json();
    assert_eq!(
        (id.uts_release.as_str(), id.config.as_str()),
        (a.uts_release.as_str(), a2.config.as_str())
    );

    // While a build of B holds slot 0 (a clean rebuild: it compiles), a request for A on
    // slot 0 is answered at once, and B's build goes on undisturbed.
    let mut b_build = ctx
        .kforge([
            "build",
            "--preset",
            "tiny_b_defconfig",
            "--reuse=false",
            "--wipe-build",
        ])
        .env("KFORGE_LIBRARY", &lib)
        .spawn();
    let mut b_err = std::io::BufReader::new(b_build.stderr.take().unwrap());
    let mut b_said = String::new();
    while !b_said.contains("==> compile") {
        assert!(
            std::io::BufRead::read_line(&mut b_err, &mut b_said).unwrap() > 0,
            "B never reached compile:\n{b_said}"
        );
    }
    let start = Instant::now();
    let (a3, stderr) = build("tiny_guest_defconfig");
    let took = start.elapsed();
    assert!(stderr.contains("answered without the slot"), "{stderr}");
    assert_eq!(a3, a2);
    assert!(
        b_build.try_wait().unwrap().is_none(),
        "B's build ended before A was answered ({took:?}): nothing was held"
    );
    // The slot is B's: a request that needs it is refused meanwhile (busy, exit 4).
    kf(&["build", "--preset", "tiny_guest_defconfig", "--wipe-build"])
        .code(4)
        .stderr_has("busy");
    std::io::Read::read_to_string(&mut b_err, &mut b_said).unwrap();
    let b_rebuilt = crate::support::Outcome::wait(b_build).success();
    let b2: Manifest = b_rebuilt.json();
    assert_eq!(
        (b2.uts_release.as_str(), b2.reused.as_deref()),
        (b.uts_release.as_str(), None)
    );
    assert!(b_said.contains("ok  compile"), "{b_said}");

    // A changed library text is a change: Kconfig runs again (and finds the same config).
    let b_preset = lib.join("defconfigs/tiny_b_defconfig");
    let mut text = fs::read_string(&b_preset);
    text.push_str("# a comment changes the input, not the config\n");
    fs::write(&b_preset, text);
    make.reset();
    let r = kf(&["identity", "--preset", "tiny_b_defconfig"]).success();
    assert!(!r.stderr.contains("remembered"), "{}", r.stderr);
    let calls = make.calls("make");
    assert!(
        calls.iter().any(|l| l.contains("alldefconfig")),
        "Kconfig did not run: {calls:?}"
    );
    let id: Identity = r.json();
    assert_eq!(id.digest, b.digest);

    // A flipped byte (size, mode and mtime as they were): verify names the file; the fast
    // path's cheap check sees the file changed and declines, and the next request rebuilds
    // and replaces it.
    let image = entry.join(format!("boot/vmlinuz-{}", a.uts_release));
    fs::flip_byte(&image, 1000, 0xff);
    let r = ctx
        .kforge(["store", "verify", &a.entry()])
        .run()
        .code(1)
        .stdout_has(&format!(
            "boot/vmlinuz-{}: sha256 differs from the record",
            a.uts_release
        ));
    let verified: Vec<Verified> = r.json();
    assert!(
        verified.iter().any(|v| !v.ok && v.layer == "run"),
        "{verified:?}"
    );
    make.reset();
    let (a4, stderr) = build("tiny_guest_defconfig");
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(!stderr.contains("answered without the slot"), "{stderr}");
    assert_eq!(a4.reused, None);
    let calls = make.calls("make");
    assert!(
        calls
            .iter()
            .any(|l| l.starts_with("O=build") && !l.contains("config") && !l.contains("install")),
        "the damaged entry was not rebuilt: {calls:?}"
    );
    assert!(stderr.contains("replaced the damaged"), "{stderr}");
    ctx.kforge(["store", "verify"]).run().success();
    assert!(
        fs::read(&image)
            == fs::read(
                ctx.slot(0)
                    .join(format!("destdir/boot/vmlinuz-{}", a.uts_release))
            )
    );

    // gc: a pinned identity stays, as does one a process holds; the rest goes.
    let a_id = a.entry();
    ctx.kforge(["store", "pin", &a_id]).run().success();
    let gc: GcReport = ctx
        .kforge(["store", "gc", "--max-size", "0"])
        .run()
        .success()
        .json();
    assert_eq!(gc.removed, [b.uts_release.as_str()], "{gc:?}");
    assert_eq!(gc.kept_pinned, [a.uts_release.as_str()], "{gc:?}");
    assert!(!ctx.store().join("run").join(b.entry()).exists());
    ctx.kforge(["store", "unpin", &a_id]).run().success();
    let holder = LockHolder::hold(&ctx.store().join("locks").join(&a_id), "-s");
    let gc: GcReport = ctx
        .kforge(["store", "gc", "--max-size", "0"])
        .run()
        .success()
        .json();
    assert_eq!(gc.kept_in_use, [a.uts_release.as_str()], "{gc:?}");
    assert!(entry.exists());
    drop(holder);
    let gc: GcReport = ctx
        .kforge(["store", "gc", "--older-than", "0s"])
        .run()
        .success()
        .json();
    assert_eq!(gc.removed, [a.uts_release.as_str()], "{gc:?}");
    assert!(!entry.exists() && !devel.exists());

    // A store without the identity receives it from the slot's destdir when a request is
    // answered from there, and it then boots by identity.
    make.reset();
    let (a5, stderr) = build("tiny_guest_defconfig");
    assert_eq!(a5.reused.as_deref(), Some("destdir"), "{stderr}");
    assert!(stderr.contains("from this slot's destdir"), "{stderr}");
    assert!(make.calls("make").iter().all(|l| l == "--version"));
    assert_eq!(
        a5.store_entry.as_deref(),
        Some(&*entry.display().to_string())
    );
    assert!(
        fs::read(&image)
            == fs::read(
                ctx.slot(0)
                    .join(format!("destdir/boot/vmlinuz-{}", a.uts_release))
            )
    );
    ctx.kforge(["store", "verify", &a.entry()]).run().success();
    let report: BootReport = ctx
        .kforge(["boot", "--check", &a.entry(), "--accel", "tcg"])
        .run()
        .success()
        .json();
    assert_eq!(
        report.guest_release.as_deref(),
        Some(a.uts_release.as_str())
    );

    // Bad names are refused before any path is made of them.
    for bad in ["../etc", "kernel-a/b", "-x"] {
        ctx.kforge(["store", "show", bad]).run().code(2);
    }
    ctx.kforge(["store", "gc"]).run().code(2);
    ctx.kforge(["boot", "--check", "kernel-6.12.117-nope-000000000000"])
        .run()
        .code(2)
        .stderr_has("not in the store");
}

/// Not a test of its own: the body of the writer processes the store tests below start
/// (`support::synthetic::spawn_writer`); started without their environment, it returns.
#[test]
fn synthetic_writer() {
    synthetic::writer_main();
}

fn writer_said(out: &Outcome) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("KFORGE-WRITER "))
        .unwrap_or_else(|| panic!("the writer said nothing:\n{}\n{}", out.stdout, out.stderr))
        .trim_matches('"')
        .to_owned()
}

#[test]
fn publishes_are_atomic_when_killed_or_racing() {
    let ctx = TestContext::without_mirror("publish");
    let root = ctx.store();
    let run_dir = root.join("run");
    let release = synthetic::release(1);
    // Killed while copying, then just before the rename: nothing visible, leftovers only
    // in tmp/.
    for point in ["publish:first-file", "publish:before-rename"] {
        let out = Outcome::wait(spawn_writer(&root, ctx.path(), &release, Some(point)));
        assert_eq!(out.signal(), Some(libc::SIGKILL), "{point}: {}", out.stderr);
        assert!(
            fs::names(&run_dir).is_empty(),
            "{point}: {:?}",
            fs::names(&run_dir)
        );
        assert!(!fs::names(&root.join("tmp")).is_empty(), "{point}");
        let ls: StoreLs = ctx.kforge(["store", "ls"]).run().success().json();
        assert!(ls.entries.is_empty(), "{point}: {ls:?}");
    }
    // The next writer sweeps the leftovers and publishes.
    let out = Outcome::wait(spawn_writer(&root, ctx.path(), &release, None)).success();
    assert_eq!(writer_said(&out), "added");
    assert!(fs::names(&root.join("tmp")).is_empty());
    assert_eq!(fs::names(&run_dir), [format!("kernel-{release}")]);
    let verified: Vec<Verified> = ctx.kforge(["store", "verify"]).run().success().json();
    assert_eq!(verified.len(), 1);
    assert!(
        verified[0].ok && verified[0].problems.is_empty(),
        "{verified:?}"
    );

    // Two writers of one new entry, held at the rename until both are there: one rename
    // wins, the other finds the winner's entry intact; one entry, nothing left in tmp/.
    let raced = synthetic::release(2);
    let go = ctx.path().join("go");
    let fault = format!("publish:before-rename@wait:{}", go.display());
    let w1 = spawn_writer(&root, ctx.path(), &raced, Some(&fault));
    let w2 = spawn_writer(&root, ctx.path(), &raced, Some(&fault));
    let start = Instant::now();
    while fs::names(ctx.path())
        .iter()
        .filter(|n| n.starts_with("go."))
        .count()
        < 2
    {
        assert!(
            start.elapsed().as_secs() < 60,
            "the writers did not both arrive"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fs::write(&go, "");
    let mut said = vec![
        writer_said(&Outcome::wait(w1).success()),
        writer_said(&Outcome::wait(w2).success()),
    ];
    said.sort();
    assert_eq!(said, ["added", "already_present"]);
    assert_eq!(
        fs::names(&run_dir),
        [format!("kernel-{release}"), format!("kernel-{raced}")]
    );
    assert!(fs::names(&root.join("tmp")).is_empty());
    ctx.kforge(["store", "verify"]).run().success();
}

#[test]
fn verify_names_the_damage_and_a_publish_repairs_it() {
    let ctx = TestContext::without_mirror("damage");
    let root = ctx.store();
    let release = synthetic::release(3);
    assert_eq!(
        synthetic::publish(&root, ctx.path(), &release),
        kforge::store::Published::Added
    );
    let entry = root.join("run").join(format!("kernel-{release}"));
    let id = format!("kernel-{release}");
    // A flipped byte, a file gone, a file added: each named, exit 1.
    fs::make_writable(&entry);
    fs::flip_byte(&entry.join(format!("boot/vmlinuz-{release}")), 10, 0x01);
    std::fs::remove_file(entry.join(format!("lib/modules/{release}/modules.dep"))).unwrap();
    fs::write(entry.join("intruder"), "x");
    let r = ctx.kforge(["store", "verify", &id]).run().code(1);
    let v: Vec<Verified> = r.json();
    assert_eq!(v.len(), 1);
    assert!(!v[0].ok);
    let mut problems = v[0].problems.clone();
    problems.sort();
    assert_eq!(
        problems,
        [
            format!("boot/vmlinuz-{release}: sha256 differs from the record"),
            "intruder: not in the record".to_owned(),
            format!("lib/modules/{release}/modules.dep: missing"),
        ]
    );
    // The same files published again replace the damaged layer.
    assert_eq!(
        synthetic::publish(&root, ctx.path(), &release),
        kforge::store::Published::Replaced
    );
    ctx.kforge(["store", "verify", &id]).run().success();
    assert!(!entry.join("intruder").exists());
    // An intact entry is not written again.
    assert_eq!(
        synthetic::publish(&root, ctx.path(), &release),
        kforge::store::Published::AlreadyPresent
    );
}

#[test]
fn gc_keeps_pinned_held_and_recent_entries() {
    let ctx = TestContext::without_mirror("gc");
    let root = ctx.store();
    let (old, pinned, held) = (
        synthetic::release(4),
        synthetic::release(5),
        synthetic::release(6),
    );
    for r in [&old, &pinned, &held] {
        synthetic::publish(&root, ctx.path(), r);
    }
    ctx.kforge(["store", "pin", &format!("kernel-{pinned}")])
        .run()
        .success();
    let ls: StoreLs = ctx.kforge(["store", "ls"]).run().success().json();
    assert_eq!(ls.entries.len(), 3);
    assert!(
        ls.entries.iter().all(|e| e.size == 3000 + 11 + 13),
        "{ls:?}"
    );
    assert_eq!(
        ls.entries
            .iter()
            .filter(|e| e.pinned)
            .map(|e| &e.identity)
            .collect::<Vec<_>>(),
        [&format!("kernel-{pinned}")]
    );
    let _holder =
        kforge::fsutil::FileLock::shared(&root.join("locks").join(format!("kernel-{held}")))
            .unwrap();
    // Nothing is old yet; a size budget of 0 takes what it may.
    let gc: GcReport = ctx
        .kforge(["store", "gc", "--older-than", "1d"])
        .run()
        .success()
        .json();
    assert!(gc.removed.is_empty(), "{gc:?}");
    let dry: GcReport = ctx
        .kforge(["store", "gc", "--max-size", "0", "--dry-run"])
        .run()
        .success()
        .json();
    assert_eq!(dry.removed, [old.as_str()]);
    assert_eq!(
        fs::names(&root.join("run")).len(),
        3,
        "a dry run removed something"
    );
    let gc: GcReport = ctx
        .kforge(["store", "gc", "--max-size", "0"])
        .run()
        .success()
        .json();
    assert_eq!(gc.removed, [old.as_str()]);
    assert_eq!(gc.kept_pinned, [pinned.as_str()]);
    assert_eq!(gc.kept_in_use, [held.as_str()]);
    assert_eq!(gc.freed_bytes, 3000 + 11 + 13);
    assert_eq!(gc.remaining_bytes, 2 * (3000 + 11 + 13));
    assert_eq!(
        fs::names(&root.join("run")),
        [format!("kernel-{pinned}"), format!("kernel-{held}")]
    );
    // rm refuses a held entry and an unknown one; takes a free one.
    ctx.kforge(["store", "rm", &format!("kernel-{held}")])
        .run()
        .code(2)
        .stderr_has("in use");
    ctx.kforge(["store", "rm", &format!("kernel-{old}")])
        .run()
        .code(2)
        .stderr_has("no store entry");
    ctx.kforge(["store", "rm", &format!("kernel-{pinned}")])
        .run()
        .success();
    assert_eq!(fs::names(&root.join("run")), [format!("kernel-{held}")]);
}

#[test]
fn layers_are_sealed_read_only_whatever_the_writers_umask() {
    let ctx = TestContext::without_mirror("modes");
    let root = ctx.store();
    let release = synthetic::release(7);
    let dir = ctx.path().join("files");
    // The writer runs under umask 077 (its directories would be 0700, its files 0600).
    let out = Outcome::wait(synthetic::spawn_writer_with_umask(
        &root, &dir, &release, None, 0o077,
    ))
    .success();
    assert_eq!(writer_said(&out), "added");
    let entry = root.join("run").join(format!("kernel-{release}"));
    assert_eq!(fs::mode(&entry), 0o555);
    assert_eq!(fs::mode(&entry.join("boot")), 0o555);
    assert_eq!(
        fs::mode(&entry.join(format!("lib/modules/{release}/kernel"))),
        0o555
    );
    assert_eq!(
        fs::mode(&entry.join(format!("boot/vmlinuz-{release}"))),
        0o444
    );
    assert_eq!(fs::mode(&entry.join("kforge-layer.json")), 0o444);
    assert_eq!(
        fs::mode(&entry.join(format!("lib/modules/{release}/modules.dep"))),
        0o444
    );
    // A sealed entry is still removed whole.
    ctx.kforge(["store", "rm", &format!("kernel-{release}")])
        .run()
        .success();
    assert!(fs::names(&root.join("run")).is_empty());
    assert!(fs::names(&root.join("tmp")).is_empty());
}
