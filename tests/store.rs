//! The store with real builds: a repeated request answered from it without make, an
//! A -> B -> A switch, a damaged entry rebuilt, gc with pins and holders, two slots
//! publishing one identity at once, and publishes killed part-way.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use common::{ManifestContract, Run, TestContext};

/// A `make` first on PATH that logs every call, then runs the real one.
fn make_logger(ctx: &TestContext) -> (String, PathBuf) {
    let bin = ctx.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = ctx.dir.path().join("make.log");
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v make"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = bin.join("make");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec {} \"$@\"\n",
            log.display(),
            real.trim()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, log)
}

/// The repo's library with a second preset: the tiny guest plus one symbol.
fn library_with_variant(ctx: &TestContext) -> PathBuf {
    let lib = ctx.dir.path().join("library");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(common::repo_root().join("kconfig-library"))
        .arg(&lib)
        .status()
        .unwrap();
    assert!(st.success());
    let tiny = std::fs::read_to_string(lib.join("defconfigs/tiny_guest_defconfig")).unwrap();
    std::fs::write(
        lib.join("defconfigs/tiny_b_defconfig"),
        format!("{tiny}CONFIG_PRINTK_TIME=y\n"),
    )
    .unwrap();
    lib
}

fn kf(ctx: &TestContext, path: &str, lib: &Path, args: &[&str]) -> Run {
    let out = ctx
        .command()
        .env("PATH", path)
        .env("KFORGE_LIBRARY", lib)
        .args(args)
        .output()
        .unwrap();
    Run::from(out)
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

#[test]
fn a_repeated_request_is_answered_from_the_store_without_make() {
    let ctx = TestContext::new("reuse");
    let (path, log) = make_logger(&ctx);
    let lib = library_with_variant(&ctx);
    let build = |preset: &str| -> (ManifestContract, String) {
        let r = kf(&ctx, &path, &lib, &["build", "--preset", preset]).ok();
        (r.json(), r.stderr)
    };

    // A, compiled and published: run layer and devel layer.
    let (a, _) = build("tiny_guest_defconfig");
    assert_eq!(a.reused, None);
    let entry = ctx.store().join(format!("run/kernel-{}", a.uts_release));
    let devel = ctx.store().join(format!("devel/kernel-{}", a.uts_release));
    assert_eq!(
        a.store_entry.as_deref(),
        Some(&*entry.display().to_string())
    );
    assert_eq!(
        a.store_devel.as_deref(),
        Some(&*devel.display().to_string())
    );
    let a_config = read(&a.config);
    assert!(read(devel.join(".config")) == a_config);
    assert!(devel.join("Module.symvers").is_file());
    assert!(devel.join("scripts/mod/modpost").is_file());
    let uts = String::from_utf8(read(devel.join("include/generated/utsrelease.h"))).unwrap();
    assert!(uts.contains(&a.uts_release), "{uts}");
    let ls: serde_json::Value = ctx.run(&["store", "ls"]).ok().json();
    assert_eq!(ls["entries"].as_array().unwrap().len(), 1, "{ls}");
    assert_eq!(
        ls["entries"][0]["layers"],
        serde_json::json!(["run", "devel"])
    );

    // B: another config, another identity.
    let (b, _) = build("tiny_b_defconfig");
    assert_ne!(b.digest, a.digest);
    assert_eq!(b.reused, None);
    assert!(read(&b.config) != a_config);

    // A again: from the store, no make at all (not even Kconfig), the same manifest but
    // for the reuse marker, and A's .config back in build/.
    std::fs::remove_file(&log).unwrap();
    let start = Instant::now();
    let (a2, stderr) = build("tiny_guest_defconfig");
    eprintln!("A again answered in {:?}", start.elapsed());
    assert_eq!(a2.reused.as_deref(), Some("store"));
    // (`make --version` is the toolchain's identity, read before anything else.)
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(calls.lines().all(|l| l == "--version"), "make ran: {calls}");
    assert!(stderr.contains("remembered"), "{stderr}");
    assert!(stderr.contains("compile skipped"), "{stderr}");
    let mut same = a2.clone();
    same.reused = None;
    assert_eq!(same, a);
    assert!(read(&a2.config) == a_config);

    // A changed library text is a change: Kconfig runs again (and finds the same config).
    let b_preset = lib.join("defconfigs/tiny_b_defconfig");
    let mut text = std::fs::read_to_string(&b_preset).unwrap();
    text.push_str("# a comment changes the input, not the config\n");
    std::fs::write(&b_preset, text).unwrap();
    let r = kf(
        &ctx,
        &path,
        &lib,
        &["identity", "--preset", "tiny_b_defconfig"],
    )
    .ok();
    assert!(!r.stderr.contains("remembered"), "{}", r.stderr);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("alldefconfig"),
        "Kconfig did not run: {calls}"
    );
    let id: common::IdentityContract = r.json();
    assert_eq!(id.digest, b.digest);

    // A flipped byte: verify names the file; the next request rebuilds and replaces it.
    let image = entry.join(format!("boot/vmlinuz-{}", a.uts_release));
    let mut bytes = read(&image);
    bytes[1000] ^= 0xff;
    std::fs::set_permissions(&image, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&image, &bytes).unwrap();
    let r = ctx.run(&["store", "verify", &format!("kernel-{}", a.uts_release)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "boot/vmlinuz-{}: sha256 differs from the record",
            a.uts_release
        )),
        "{}",
        r.stdout
    );
    std::fs::remove_file(&log).unwrap();
    let (a3, stderr) = build("tiny_guest_defconfig");
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert_eq!(a3.reused, None);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("O=build") && !l.contains("config") && !l.contains("install")),
        "the damaged entry was not rebuilt: {calls}"
    );
    assert!(stderr.contains("replaced the damaged"), "{stderr}");
    ctx.run(&["store", "verify"]).ok();
    assert!(
        read(&image)
            == read(
                ctx.slot(0)
                    .join(format!("destdir/boot/vmlinuz-{}", a.uts_release))
            )
    );

    // gc: a pinned identity stays, as does one a process holds; the rest goes.
    let a_id = format!("kernel-{}", a.uts_release);
    let b_id = format!("kernel-{}", b.uts_release);
    ctx.run(&["store", "pin", &a_id]).ok();
    let gc: serde_json::Value = ctx.run(&["store", "gc", "--max-size", "0"]).ok().json();
    assert_eq!(gc["removed"], serde_json::json!([b.uts_release]), "{gc}");
    assert_eq!(
        gc["kept_pinned"],
        serde_json::json!([a.uts_release]),
        "{gc}"
    );
    assert!(!ctx.store().join(format!("run/{b_id}")).exists());
    ctx.run(&["store", "unpin", &a_id]).ok();
    // (-o: the lock stays with flock itself, not with the sleep it starts.)
    let mut holder = std::process::Command::new("flock")
        .args(["-s", "-o"])
        .arg(ctx.store().join("locks").join(&a_id))
        .args(["sleep", "120"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let gc: serde_json::Value = ctx.run(&["store", "gc", "--max-size", "0"]).ok().json();
    assert_eq!(
        gc["kept_in_use"],
        serde_json::json!([a.uts_release]),
        "{gc}"
    );
    assert!(entry.exists());
    holder.kill().unwrap();
    holder.wait().unwrap();
    let gc: serde_json::Value = ctx.run(&["store", "gc", "--older-than", "0s"]).ok().json();
    assert_eq!(gc["removed"], serde_json::json!([a.uts_release]), "{gc}");
    assert!(!entry.exists() && !devel.exists());

    // Bad names are refused before any path is made of them.
    for bad in ["../etc", "kernel-a/b", "-x"] {
        let r = ctx.run(&["store", "show", bad]);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
    }
    let r = ctx.run(&["store", "gc"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = ctx.run(&["boot", "--check", "kernel-6.12.117-nope-000000000000"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not in the store"), "{}", r.stderr);
}

#[test]
fn publishes_are_atomic_when_killed_or_racing() {
    let ctx = TestContext::new("publish");
    let tiny = ["build", "--preset", "tiny_guest_defconfig"];
    let run_dir = ctx.store().join("run");
    let entries = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Killed while copying, then just before the rename: nothing visible, leftovers only
    // in tmp/.
    for point in ["publish:first-file", "publish:before-rename"] {
        let out = ctx
            .command()
            .env("KFORGE_FAULT_INJECT", point)
            .args(tiny)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            entries(&run_dir).is_empty(),
            "{point}: {:?}",
            entries(&run_dir)
        );
        assert!(!entries(&ctx.store().join("tmp")).is_empty(), "{point}");
        let r = ctx.run(&["store", "ls"]).ok();
        let ls: serde_json::Value = r.json();
        assert_eq!(ls["entries"], serde_json::json!([]), "{point}");
    }
    // The next run sweeps the leftovers and publishes.
    let m: ManifestContract = ctx.run(&tiny).ok().json();
    assert_eq!(m.reused, None);
    assert!(entries(&ctx.store().join("tmp")).is_empty());
    assert_eq!(entries(&run_dir), vec![format!("kernel-{}", m.uts_release)]);
    ctx.run(&["store", "verify"]).ok();

    // Two slots build one identity at once: one entry, the same bytes for both.
    let spawn = |slot: &str| {
        ctx.command()
            .args(tiny)
            .args(["--label", "race", "--worker-index", slot])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (c1, c2) = (spawn("1"), spawn("2"));
    let r1 = Run::from(c1.wait_with_output().unwrap()).ok();
    let r2 = Run::from(c2.wait_with_output().unwrap()).ok();
    let (m1, m2): (ManifestContract, ManifestContract) = (r1.json(), r2.json());
    assert_eq!(m1.uts_release, m2.uts_release);
    assert_eq!(m1.store_entry, m2.store_entry);
    assert_eq!(m1.reused, None, "{}", r1.stderr);
    assert_eq!(m2.reused, None, "{}", r2.stderr);
    let added = [&r1.stderr, &r2.stderr]
        .iter()
        .filter(|s| s.contains("[publish] added"))
        .count();
    assert_eq!(added, 1, "{}\n---\n{}", r1.stderr, r2.stderr);
    let race: Vec<String> = entries(&run_dir)
        .into_iter()
        .filter(|e| e.contains("-race-"))
        .collect();
    assert_eq!(race.len(), 1, "{race:?}");
    let stored = read(m1.bz_image.as_ref().unwrap());
    for slot in [1, 2] {
        assert!(
            stored
                == read(
                    ctx.slot(slot)
                        .join(format!("destdir/boot/vmlinuz-{}", m1.uts_release))
                ),
            "slot {slot} built other bytes"
        );
    }
    ctx.run(&["store", "verify"]).ok();
    assert!(entries(&ctx.store().join("tmp")).is_empty());
}
