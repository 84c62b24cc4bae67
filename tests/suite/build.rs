//! Real kernel builds of the library's smallest guest preset: gcc and clang, two slots,
//! incremental re-syncs, a failing and a killed build. Assertions are on the bytes the
//! build produced (manifest fields, kernel.release, the bzImage's version string, modules).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::git::git;
use crate::support::kernel::{assert_release_format, bzimage_version_string, vermagic};
use crate::support::{
    Home, Manifest, TINY, TestContext, VmDefinition, fixtures, fs, kernel_mirror, tag, version,
};

fn build(ctx: &TestContext, extra: &[&str]) -> Manifest {
    ctx.kforge(["build"])
        .args(TINY)
        .args(extra)
        .run()
        .success()
        .json()
}

/// Checks one built kernel against its manifest, file by file, in the home that built it.
fn check_built(m: &Manifest, home: &Home, slot: u32, compiler: &str) {
    let src = home.slot(slot);
    assert_eq!(m.worker_index, slot);
    assert_eq!(PathBuf::from(&m.build_dir), src.join("build"));
    assert_eq!(PathBuf::from(&m.destdir), src.join("destdir"));
    assert_eq!(m.config, src.join("build/.config").display().to_string());
    assert_eq!(m.config_method, "preset");
    assert_eq!(m.uts_machine, "x86_64");
    assert_eq!(m.linux_compile_by, "kforge");
    assert_eq!(m.linux_compile_host, "kforge");
    assert_eq!(m.compiler, compiler);
    assert!(m.linux_compiler.contains(compiler), "{}", m.linux_compiler);
    assert!(
        m.uts_version.contains("Thu Jan  1 00:00:00 UTC 1970"),
        "{}",
        m.uts_version
    );
    assert_eq!(m.identity.toolchain.compiler, compiler);
    // The release Kbuild baked is the identity.
    let release = fs::read_string(src.join("build/include/config/kernel.release"));
    assert_eq!(release.trim(), m.uts_release);
    // The boot image, named with the release, says so in its own header. It was installed
    // into destdir and published to the store, where the manifest points.
    assert_eq!(m.schema_version, 2);
    let entry = home.store().join("run").join(m.entry());
    assert_eq!(
        m.store_entry.as_deref(),
        Some(&*entry.display().to_string())
    );
    let image = PathBuf::from(m.bz_image.as_ref().expect("bzImage"));
    assert_eq!(image, entry.join(format!("boot/vmlinuz-{}", m.uts_release)));
    let installed = src.join(format!("destdir/boot/vmlinuz-{}", m.uts_release));
    assert!(
        fs::read(&image) == fs::read(&installed),
        "the store's boot image differs from the installed one"
    );
    let banner = bzimage_version_string(&image);
    assert!(
        banner.starts_with(&format!("{} (kforge@kforge) #1 ", m.uts_release)),
        "{banner}"
    );
    assert!(
        src.join(format!("destdir/boot/System.map-{}", m.uts_release))
            .is_file()
    );
    assert!(
        src.join(format!("destdir/boot/config-{}", m.uts_release))
            .is_file()
    );
    // Modules: installed under the release, depmod ran, and their vermagic is the release.
    let mods = PathBuf::from(m.modules_dir.as_ref().expect("modules_dir"));
    assert_eq!(mods, entry.join(format!("lib/modules/{}", m.uts_release)));
    assert!(
        src.join(format!("destdir/lib/modules/{}/modules.dep", m.uts_release))
            .is_file()
    );
    let dep = fs::read_string(mods.join("modules.dep"));
    // The boot check's module, with the dependency modprobe must resolve from the share.
    assert!(
        dep.contains("kernel/fs/nls/nls_utf8.ko: kernel/fs/nls/nls_base.ko"),
        "{dep}"
    );
    let magic = vermagic(&mods.join("kernel/fs/nls/nls_utf8.ko"));
    assert!(magic.starts_with(&format!("{} ", m.uts_release)), "{magic}");
    // The manifest file beside the slot is the one printed.
    let beside: Manifest = serde_json::from_slice(&fs::read(home.slot_manifest(slot))).unwrap();
    assert_eq!(&beside, m);
}

#[test]
#[ignore = "builds kernels: scripts/test.sh"]
fn gcc_builds_are_reproducible_across_slots_and_incremental_within_one() {
    // The suite's gcc kernel is the first build: compiled once, checked here in its home.
    let fixture = fixtures::tiny_gcc();
    let a = &fixture.manifest;
    assert_release_format(&a.uts_release, version(), "vanilla");
    assert_eq!(
        a.commit,
        git(
            kernel_mirror(),
            &["rev-parse", &format!("{}^{{commit}}", tag())]
        )
    );
    assert_eq!(a.git_ref, tag());
    assert_eq!(a.ref_kind, "tag");
    check_built(a, &fixture.home, fixture.slot, "gcc");
    assert_eq!(a.reused, None);

    // Same inputs in another home and slot, compiled again (reuse off): same identity,
    // byte-identical outputs. Booted right after its build (`build --boot`): the guest
    // reports the identity.
    let ctx = TestContext::new("gcc");
    let r = ctx
        .kforge(["build"])
        .args(TINY)
        .args([
            tag(),
            "--worker-index",
            "1",
            "--source-symlink",
            "--reuse=false",
        ])
        .args(["--boot", "--accel", "tcg"])
        .run()
        .success();
    let b: Manifest = r.json();
    assert!(
        r.stderr.contains(&format!(
            "uname -r in the guest: {}; nls_utf8 loaded",
            b.uts_release
        )),
        "{}",
        r.stderr
    );
    assert_eq!(b.reused, None);
    assert_eq!(b.uts_release, a.uts_release);
    assert_eq!(b.identity, a.identity);
    check_built(&b, &ctx, 1, "gcc");
    let installed = |home: &Home, slot: u32, m: &Manifest, file: &str| {
        fs::read(
            home.slot(slot)
                .join("destdir")
                .join(file.replace("REL", &m.uts_release)),
        )
    };
    assert!(
        installed(&fixture.home, fixture.slot, a, "boot/vmlinuz-REL")
            == installed(&ctx, 1, &b, "boot/vmlinuz-REL"),
        "bzImage differs between slots"
    );
    let ko = "lib/modules/REL/kernel/fs/nls/nls_utf8.ko";
    assert!(
        installed(&fixture.home, fixture.slot, a, ko) == installed(&ctx, 1, &b, ko),
        "nls_utf8.ko differs between slots"
    );
    let source = ctx
        .slot(1)
        .join(format!("destdir/lib/modules/{}/source", b.uts_release));
    assert_eq!(std::fs::read_link(&source).unwrap(), ctx.slot(1));
    // The slot's last build is what `vm define` takes when no manifest is named.
    let def: VmDefinition = ctx
        .kforge(["vm", "--unit-dir"])
        .arg(ctx.path().join("units"))
        .args(["define", "d1"])
        .worker(1)
        .run()
        .success()
        .json();
    assert_eq!(def.manifest, ctx.slot_manifest(1).display().to_string());
    assert_eq!(def.uts_release, b.uts_release);

    // Re-sync the warm slot to a branch that changes one file: only that file is rewritten
    // and only what depends on it is rebuilt.
    let src = ctx.slot(1);
    let fork_c = fs::mtime(src.join("kernel/fork.c"));
    let fork_o = fs::mtime(src.join("build/kernel/fork.o"));
    let version_o = fs::mtime(src.join("build/init/version.o"));
    let c = build(&ctx, &["test/comment", "--worker-index", "1"]);
    assert_eq!(c.label, "test-comment");
    assert_eq!(c.ref_kind, "branch");
    assert_ne!(c.digest, a.digest);
    assert_eq!(c.commit, git(&ctx.mirror(), &["rev-parse", "test/comment"]));
    check_built(&c, &ctx, 1, "gcc");
    assert_eq!(
        fs::mtime(src.join("kernel/fork.c")),
        fork_c,
        "an unchanged source file was rewritten"
    );
    assert_eq!(
        fs::mtime(src.join("build/kernel/fork.o")),
        fork_o,
        "an unchanged object was rebuilt"
    );
    assert!(
        fs::mtime(src.join("build/init/version.o")) > version_o,
        "the changed file was not rebuilt"
    );
    // Both identities stay installed side by side in destdir.
    let b_installed = src.join(format!("destdir/boot/vmlinuz-{}", b.uts_release));
    assert!(b_installed.is_file());

    // wipe_build removes build/; recreate_build_worktree lays a fresh tree and destdir.
    ctx.kforge(["identity"])
        .args(TINY)
        .arg("--wipe-build")
        .worker(1)
        .run()
        .success();
    assert!(
        !src.join("build/kernel/fork.o").exists(),
        "wipe_build kept objects"
    );
    assert!(src.join("build/.config").is_file());
    fs::write(src.join("destdir/marker"), "x");
    ctx.kforge(["identity"])
        .args(TINY)
        .arg("--recreate-build-worktree")
        .worker(1)
        .run()
        .success();
    assert!(
        !src.join("destdir/marker").exists(),
        "recreate kept destdir"
    );
    assert!(!b_installed.exists());
    // This test was the fixture slot's only reader.
    fixture.drop_slot();
}

#[test]
#[ignore = "builds kernels: scripts/test.sh"]
fn clang_build_uses_llvm_and_has_its_own_identity() {
    // The suite's clang kernel is this build: compiled once, checked here in its own home.
    let f = fixtures::tiny_clang();
    let m = &f.manifest;
    assert_eq!(m.reused, None, "the fixture's build compiled");
    assert_release_format(&m.uts_release, version(), "vanilla");
    check_built(m, &f.home, f.slot, "clang");
    assert!(m.linux_compiler.contains("LLD"), "{}", m.linux_compiler);
    let config = fs::read_string(&m.config);
    assert!(config.contains("CONFIG_CC_IS_CLANG=y"));
    // gcc's identity of the same request (the suite's gcc kernel) differs.
    let gcc = &fixtures::tiny_gcc().manifest;
    assert_ne!(gcc.digest, m.digest);
    assert_eq!(gcc.identity.tree, m.identity.tree);
    // This test was the fixture slot's only reader.
    f.drop_slot();
}

#[test]
#[ignore = "builds kernels: scripts/test.sh"]
fn a_failed_or_killed_build_leaves_the_slot_usable() {
    fixtures::tiny_gcc();
    let ctx = TestContext::new("faults");
    // A compile error: exit 1, make's failing output shown, nothing claimed.
    let r = ctx
        .kforge(["build", "test/broken"])
        .args(TINY)
        .args([
            "--target",
            "init/version.o",
            "--install=false",
            "--modules-install=false",
        ])
        .run()
        .code(1)
        .stderr_has("step compile failed")
        .stderr_has("init/version.c")
        .stderr_has("exit status 2");
    assert!(r.stdout.is_empty());
    assert!(!ctx.slot_manifest(0).exists());
    // Its record: failed in compile, with make's output.
    let last = |ctx: &TestContext| -> serde_json::Value {
        let log: serde_json::Value = ctx.kforge(["log", "1"]).run().success().json();
        log["runs"][0].clone()
    };
    let failed = last(&ctx);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failed_step"], "compile", "{failed}");
    assert!(
        failed["failed_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("init/version.c")),
        "{failed}"
    );
    assert_eq!(failed["steps"].as_array().unwrap().len(), 5, "{failed}");

    // Warnings are counted, and this build's ccache figures are its own: the same compile
    // with an empty cache, then again with the cache warm. (Narrowed to one object, the run
    // stops at collect, which finds no kernel; the compile's figures are in its record.)
    let narrowed = [
        "--target",
        "init/version.o",
        "--install=false",
        "--modules-install=false",
        "--wipe-build",
    ];
    let cold_cache = ctx.path().join("cold-ccache");
    for _ in 0..2 {
        ctx.kforge(["build", "test/warning"])
            .args(TINY)
            .args(narrowed)
            .env("KFORGE_CCACHE_DIR", &cold_cache)
            .run()
            .code(1)
            .stderr_has("1 compiler warnings (-Wunused-variable 1)")
            .stderr_has("step collect failed");
    }
    let log: serde_json::Value = ctx.kforge(["log", "2"]).run().success().json();
    let (warm, cold) = (&log["runs"][0], &log["runs"][1]);
    for run in [warm, cold] {
        let w = &run["figures"]["warnings"];
        assert_eq!(w["total"], 1, "{run}");
        assert_eq!(w["by_kind"]["-Wunused-variable"], 1, "{run}");
        assert_eq!(w["by_file"]["init/version.c"], 1, "{run}");
        assert!(
            run["figures"]["sizes"]["boot_image"].is_null(),
            "narrowed: {run}"
        );
    }
    let (cold_c, warm_c) = (&cold["figures"]["ccache"], &warm["figures"]["ccache"]);
    assert!(cold_c["misses"].as_u64().unwrap() > 0, "{cold_c}");
    assert!(
        warm_c["hits"].as_u64().unwrap() > cold_c["hits"].as_u64().unwrap()
            && warm_c["misses"].as_u64().unwrap() < cold_c["misses"].as_u64().unwrap(),
        "cold {cold_c}, warm {warm_c}"
    );
    let moved: serde_json::Value = ctx
        .kforge(["log", "--compare"])
        .args([cold["id"].as_str().unwrap(), warm["id"].as_str().unwrap()])
        .run()
        .success()
        .json();
    assert_eq!(moved["warnings"]["delta"], 0, "{moved}");
    assert!(
        moved["ccache_hits"]["delta"].as_i64().unwrap() > 0,
        "{moved}"
    );

    // A build killed in the middle of compiling.
    let mut child = ctx
        .kforge(["build"])
        .args(TINY)
        .args(["--wipe-build", "-v"])
        .spawn();
    drop(child.stdout.take());
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("  CC ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_mins(5))
        .expect("the build reached compile");
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGKILL) };
    child.wait().unwrap();
    // Its record still says which step it was in; its process is gone.
    let killed = last(&ctx);
    assert_eq!(
        (killed["status"].as_str(), killed["current"].as_str()),
        (Some("died"), Some("compile")),
        "{killed}"
    );

    // The next build in that slot (waiting for the orphaned make to go) succeeds.
    let start = Instant::now();
    let m = build(&ctx, &["--wait"]);
    check_built(&m, &ctx, 0, "gcc");
    // A whole build's figures: sizes of what it made, its ccache calls.
    let done = last(&ctx);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["release"], m.uts_release.as_str(), "{done}");
    let sizes = &done["figures"]["sizes"];
    let image = std::fs::metadata(m.bz_image.as_deref().unwrap())
        .unwrap()
        .len();
    assert_eq!(sizes["boot_image"].as_u64(), Some(image), "{done}");
    for s in ["vmlinux_text", "vmlinux_data", "vmlinux_bss", "modules"] {
        assert!(sizes[s].as_u64().unwrap() > 0, "{s}: {done}");
    }
    assert!(
        done["figures"]["ccache"]["hits"].as_u64().unwrap() > 0,
        "{done}"
    );
    assert_release_format(&m.uts_release, version(), "vanilla");
    eprintln!("rebuild after kill took {:?}", start.elapsed());
}
