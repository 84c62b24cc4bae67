//! Real kernel builds of the library's smallest guest preset: gcc and clang, two slots,
//! incremental re-syncs, a failing and a killed build. Assertions are on the bytes the
//! build produced (manifest fields, kernel.release, the bzImage's version string, modules).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::{ManifestContract, TestContext, assert_release_format, bzimage_version_string};

const TINY: [&str; 2] = ["--preset", "tiny_guest_defconfig"];

fn build(ctx: &TestContext, extra: &[&str]) -> ManifestContract {
    let mut a = vec!["build"];
    a.extend_from_slice(&TINY);
    a.extend_from_slice(extra);
    ctx.run(&a).ok().json()
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .modified()
        .unwrap()
}

fn git_rev(mirror: &Path, rev: &str) -> String {
    let o = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(mirror)
        .args(["rev-parse", rev])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// Checks one built kernel against its manifest, file by file.
fn check_built(m: &ManifestContract, ctx: &TestContext, slot: u32, compiler: &str) {
    let src = ctx.slot(slot);
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
    assert_eq!(m.identity["toolchain"]["compiler"], compiler);
    // The release Kbuild baked is the identity.
    let release = std::fs::read_to_string(src.join("build/include/config/kernel.release")).unwrap();
    assert_eq!(release.trim(), m.uts_release);
    // The boot image, named with the release, says so in its own header. It was installed
    // into destdir and published to the store, where the manifest points.
    assert_eq!(m.schema_version, 2);
    let entry = ctx.store().join(format!("run/kernel-{}", m.uts_release));
    assert_eq!(
        m.store_entry.as_deref(),
        Some(&*entry.display().to_string())
    );
    let image = PathBuf::from(m.bz_image.as_ref().expect("bzImage"));
    assert_eq!(image, entry.join(format!("boot/vmlinuz-{}", m.uts_release)));
    let installed = src.join(format!("destdir/boot/vmlinuz-{}", m.uts_release));
    assert!(
        std::fs::read(&image).unwrap() == std::fs::read(&installed).unwrap(),
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
    let dep = std::fs::read_to_string(mods.join("modules.dep")).unwrap();
    assert!(dep.contains("vsock_loopback.ko"), "{dep}");
    let ko = mods.join("kernel/net/vmw_vsock/vsock_loopback.ko");
    let modinfo = std::process::Command::new("/sbin/modinfo")
        .args(["-F", "vermagic"])
        .arg(&ko)
        .output()
        .unwrap();
    let vermagic = String::from_utf8(modinfo.stdout).unwrap();
    assert!(
        vermagic.starts_with(&format!("{} ", m.uts_release)),
        "{vermagic}"
    );
    // The manifest file beside the slot is the one printed.
    let beside: ManifestContract = serde_json::from_str(
        &std::fs::read_to_string(
            ctx.workers()
                .join(format!("{slot}/main/linux.manifest.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(&beside, m);
}

#[test]
fn gcc_builds_are_reproducible_across_slots_and_incremental_within_one() {
    let ctx = TestContext::new("gcc");
    let a = build(&ctx, &["v6.12.117"]);
    assert_release_format(&a.uts_release, "6.12.117", "vanilla");
    assert_eq!(a.commit, git_rev(&ctx.mirror, "v6.12.117^{commit}"));
    assert_eq!(a.git_ref, "v6.12.117");
    assert_eq!(a.ref_kind, "tag");
    check_built(&a, &ctx, 0, "gcc");

    assert_eq!(a.reused, None);

    // Same inputs in another slot, compiled again (reuse off): same identity,
    // byte-identical outputs; the store already had it and keeps the one entry.
    let b = build(
        &ctx,
        &[
            "v6.12.117",
            "--worker-index",
            "1",
            "--source-symlink",
            "--reuse=false",
        ],
    );
    assert_eq!(b.reused, None);
    assert_eq!(b.uts_release, a.uts_release);
    assert_eq!(b.identity, a.identity);
    check_built(&b, &ctx, 1, "gcc");
    let installed = |slot: u32, m: &ManifestContract, file: &str| {
        std::fs::read(
            ctx.slot(slot)
                .join("destdir")
                .join(file.replace("REL", &m.uts_release)),
        )
        .unwrap()
    };
    assert!(
        installed(0, &a, "boot/vmlinuz-REL") == installed(1, &b, "boot/vmlinuz-REL"),
        "bzImage differs between slots"
    );
    let ko = "lib/modules/REL/kernel/net/vmw_vsock/vsock_loopback.ko";
    assert!(
        installed(0, &a, ko) == installed(1, &b, ko),
        "vsock_loopback.ko differs between slots"
    );
    let source = ctx
        .slot(1)
        .join(format!("destdir/lib/modules/{}/source", b.uts_release));
    assert_eq!(std::fs::read_link(&source).unwrap(), ctx.slot(1));

    // Re-sync the warm slot to a branch that changes one file: only that file is rewritten
    // and only what depends on it is rebuilt.
    let src = ctx.slot(0);
    let fork_c = mtime(&src.join("kernel/fork.c"));
    let fork_o = mtime(&src.join("build/kernel/fork.o"));
    let version_o = mtime(&src.join("build/init/version.o"));
    let c = build(&ctx, &["test/comment"]);
    assert_eq!(c.label, "test-comment");
    assert_eq!(c.ref_kind, "branch");
    assert_ne!(c.digest, a.digest);
    assert_eq!(c.commit, git_rev(&ctx.mirror, "test/comment"));
    check_built(&c, &ctx, 0, "gcc");
    assert_eq!(
        mtime(&src.join("kernel/fork.c")),
        fork_c,
        "an unchanged source file was rewritten"
    );
    assert_eq!(
        mtime(&src.join("build/kernel/fork.o")),
        fork_o,
        "an unchanged object was rebuilt"
    );
    assert!(
        mtime(&src.join("build/init/version.o")) > version_o,
        "the changed file was not rebuilt"
    );
    // Both identities stay installed side by side in destdir.
    let a_installed = src.join(format!("destdir/boot/vmlinuz-{}", a.uts_release));
    assert!(a_installed.is_file());

    // wipe_build removes build/; recreate_build_worktree lays a fresh tree and destdir.
    ctx.run(&[
        "identity",
        "--preset",
        "tiny_guest_defconfig",
        "--wipe-build",
    ])
    .ok();
    assert!(
        !src.join("build/kernel/fork.o").exists(),
        "wipe_build kept objects"
    );
    assert!(src.join("build/.config").is_file());
    std::fs::write(src.join("destdir/marker"), "x").unwrap();
    ctx.run(&[
        "identity",
        "--preset",
        "tiny_guest_defconfig",
        "--recreate-build-worktree",
    ])
    .ok();
    assert!(
        !src.join("destdir/marker").exists(),
        "recreate kept destdir"
    );
    assert!(!a_installed.exists());
}

#[test]
fn clang_build_uses_llvm_and_has_its_own_identity() {
    let ctx = TestContext::new("clang");
    let m = build(&ctx, &["--compiler", "clang"]);
    assert_release_format(&m.uts_release, "6.12.117", "vanilla");
    check_built(&m, &ctx, 0, "clang");
    assert!(m.linux_compiler.contains("LLD"), "{}", m.linux_compiler);
    let gcc = ctx
        .run(&[
            "identity",
            "--preset",
            "tiny_guest_defconfig",
            "--worker-index",
            "1",
        ])
        .ok();
    let gcc: common::IdentityContract = gcc.json();
    assert_ne!(gcc.digest, m.digest);
    let config = std::fs::read_to_string(&m.config).unwrap();
    assert!(config.contains("CONFIG_CC_IS_CLANG=y"));
}

#[test]
fn a_failed_or_killed_build_leaves_the_slot_usable() {
    let ctx = TestContext::new("faults");
    // A compile error: exit 1, make's failing output shown, nothing claimed.
    let r = ctx.run(&[
        "build",
        "test/broken",
        "--preset",
        "tiny_guest_defconfig",
        "--target",
        "init/version.o",
        "--install=false",
        "--modules-install=false",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("step compile failed"), "{}", r.stderr);
    assert!(r.stderr.contains("init/version.c"), "{}", r.stderr);
    assert!(r.stderr.contains("exit status 2"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(!ctx.workers().join("0/main/linux.manifest.json").exists());

    // A build killed in the middle of compiling.
    let mut child = ctx
        .command()
        .args([
            "build",
            "--preset",
            "tiny_guest_defconfig",
            "--wipe-build",
            "-v",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
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

    // The next build in that slot (waiting for the orphaned make to go) succeeds.
    let start = Instant::now();
    let m = build(&ctx, &["--wait"]);
    check_built(&m, &ctx, 0, "gcc");
    assert_release_format(&m.uts_release, "6.12.117", "vanilla");
    eprintln!("rebuild after kill took {:?}", start.elapsed());
}
