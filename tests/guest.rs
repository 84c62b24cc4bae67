//! The guest layer for real: kforge-built kernels booted in QEMU (TCG here) with their
//! modules shared over virtiofsd, checked from what the guest prints on its serial console.

mod common;

use std::path::Path;

use common::{ManifestContract, Run, TestContext};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BootReport {
    passed: bool,
    expected_release: String,
    guest_release: Option<String>,
    modules_mounted: bool,
    module: String,
    module_loaded: bool,
    accel: String,
    seconds: f64,
    failure: Option<String>,
    console_tail: Vec<String>,
    rootfs: Option<String>,
    rootfs_mounted: bool,
    ready_seen: bool,
}

/// QEMU or virtiofsd processes whose command line mentions `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) && (cmd.contains("qemu-system") || cmd.contains("virtiofsd")) {
                found.push(cmd);
            }
        }
    }
    found
}

fn boot(ctx: &TestContext, manifest: &Path, extra: &[&str]) -> Run {
    let mut a = vec![
        "boot",
        "--check",
        manifest.to_str().unwrap(),
        "--accel",
        "tcg",
    ];
    a.extend_from_slice(extra);
    ctx.run(&a)
}

#[test]
fn built_kernels_boot_with_their_identity_and_modules() {
    let ctx = TestContext::new("guest");
    // Build and boot in one command (gcc).
    let r = ctx
        .run(&[
            "build",
            "--preset",
            "tiny_guest_defconfig",
            "--boot",
            "--accel",
            "tcg",
        ])
        .ok();
    let gcc: ManifestContract = r.json();
    assert!(
        r.stderr.contains(&format!(
            "uname -r in the guest: {}; vsock_loopback loaded",
            gcc.uts_release
        )),
        "{}",
        r.stderr
    );
    // boot --check on the slot's manifest: the guest reports the identity and loads a
    // module from the virtiofs share.
    let manifest = ctx.workers().join("0/main/linux.manifest.json");
    let report: BootReport = boot(&ctx, &manifest, &[]).ok().json();
    assert!(report.passed, "{report:?}");
    assert_eq!(
        report.guest_release.as_deref(),
        Some(gcc.uts_release.as_str())
    );
    assert_eq!(report.expected_release, gcc.uts_release);
    assert!(report.modules_mounted && report.module_loaded);
    assert_eq!(report.module, "vsock_loopback");
    assert_eq!(report.accel, "tcg");
    assert!(report.seconds > 0.0);
    assert!(
        report
            .console_tail
            .iter()
            .any(|l| l == &format!("KFORGE-UNAME {}", gcc.uts_release))
    );
    assert!(
        leftovers(ctx.dir.path()).is_empty(),
        "{:?}",
        leftovers(ctx.dir.path())
    );

    // A root directory shared over virtiofs: the guest switches into it, with its modules
    // share moved to /lib/modules/$(uname -r), and writes into it.
    let root = ctx.dir.path().join("rootfs");
    for d in ["bin", "sbin", "proc", "sys", "dev", "etc", "lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("etc/hostname"), "from-the-share\n").unwrap();
    let init = root.join("sbin/init");
    std::fs::write(
        &init,
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nr=$(uname -r)\n\
         echo \"ROOTFS-INIT $r $(cat /etc/hostname)\"\n\
         [ -f /lib/modules/$r/modules.dep ] && echo ROOTFS-MODULES-VISIBLE\n\
         echo $r > /booted-release; sync\necho 'guest login:'\nsleep 60\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&init)
        .status()
        .unwrap();
    let r = boot(&ctx, &manifest, &["--rootfs", root.to_str().unwrap()]).ok();
    let report: BootReport = r.json();
    assert!(
        report.passed && report.rootfs_mounted && report.ready_seen,
        "{report:?}"
    );
    assert_eq!(report.rootfs.as_deref(), Some(root.to_str().unwrap()));
    let tail = report.console_tail.join("\n");
    assert!(
        tail.contains(&format!("ROOTFS-INIT {} from-the-share", gcc.uts_release)),
        "{tail}"
    );
    assert!(tail.contains("ROOTFS-MODULES-VISIBLE"), "{tail}");
    assert_eq!(
        std::fs::read_to_string(root.join("booted-release")).unwrap(),
        format!("{}\n", gcc.uts_release)
    );
    // A root directory whose init never says it is up: fails with the reason; one without
    // the init: refused before booting.
    let r = boot(
        &ctx,
        &manifest,
        &[
            "--rootfs",
            root.to_str().unwrap(),
            "--ready",
            "never-printed",
            "--timeout",
            "20",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("`never-printed` did not appear"),
        "{}",
        r.stderr
    );
    let r = boot(
        &ctx,
        &manifest,
        &["--rootfs", root.to_str().unwrap(), "--init", "/sbin/nope"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("has no /sbin/nope"), "{}", r.stderr);
    assert!(
        leftovers(ctx.dir.path()).is_empty(),
        "{:?}",
        leftovers(ctx.dir.path())
    );

    // A clang build in another slot boots too.
    let clang: ManifestContract = ctx
        .run(&[
            "build",
            "--preset",
            "tiny_guest_defconfig",
            "--compiler",
            "clang",
            "--worker-index",
            "1",
        ])
        .ok()
        .json();
    let clang_manifest = ctx.workers().join("1/main/linux.manifest.json");
    let report: BootReport = boot(&ctx, &clang_manifest, &[]).ok().json();
    assert!(report.passed, "{report:?}");
    assert_eq!(
        report.guest_release.as_deref(),
        Some(clang.uts_release.as_str())
    );

    // A manifest whose modules tree is missing: refused before booting.
    let edited = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        f(&mut v);
        let p = ctx.dir.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let missing = edited("missing.json", &|v| {
        v["modules_dir"] = "/nonexistent/lib/modules/x".into();
    });
    let r = boot(&ctx, &missing, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is missing"), "{}", r.stderr);
    // One that names another release's tree: refused too.
    let other = edited("other.json", &|v| {
        v["modules_dir"] = clang.modules_dir.clone().unwrap().into();
    });
    let r = boot(&ctx, &other, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("belongs to release {}", clang.uts_release)),
        "{}",
        r.stderr
    );
    // Another release's modules under this release's name: the guest boots, the module
    // does not load (wrong vermagic), and the check fails with the console's end.
    let fake = ctx
        .dir
        .path()
        .join("fake/lib/modules")
        .join(&gcc.uts_release);
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(clang.modules_dir.as_ref().unwrap())
        .arg(&fake)
        .status()
        .unwrap();
    assert!(st.success());
    let wrong = edited("wrong.json", &|v| {
        v["modules_dir"] = fake.display().to_string().into();
    });
    let r = boot(&ctx, &wrong, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("module vsock_loopback did not load"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--- guest console"), "{}", r.stderr);
    let report: BootReport = r.json();
    assert!(!report.passed && report.modules_mounted && !report.module_loaded);
    assert_eq!(
        report.failure.as_deref(),
        Some("module vsock_loopback did not load from the modules share")
    );
    // A guest that does not finish in time is stopped, and nothing is left running.
    let r = boot(&ctx, &manifest, &["--timeout", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("did not finish within 1 s"),
        "{}",
        r.stderr
    );
    assert!(
        leftovers(ctx.dir.path()).is_empty(),
        "{:?}",
        leftovers(ctx.dir.path())
    );
}
