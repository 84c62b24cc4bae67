//! Guests as systemd services, for real: a systemd running as PID 1 of its own namespaces
//! (see `support::systemd`) starts qemu-system@<vm>.service for a kernel kforge built, and
//! stops it; the units verify, and `vm run` runs the same guest without systemd.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::procs::{assert_no_guests, guest_pids, guest_processes, status_field};
use crate::support::systemd::{Systemd, assert_units_verify, exposure};
use crate::support::{BIN, Outcome, TestContext, VmDefinition, VmStatus, fixtures, fs, repo_root};

#[test]
#[ignore = "runs a real systemd as root and boots a kernel: scripts/test.sh"]
fn a_real_systemd_runs_the_guest_as_qemu_system_at_vm_service() {
    let ctx = TestContext::new("vm");
    let m = ctx.adopt(fixtures::tiny_gcc());
    let bin_dir = Path::new(BIN).parent().unwrap();
    let mirror = ctx.mirror();
    let sd = Systemd::start(ctx.path(), &[&repo_root(), bin_dir, ctx.path(), &mirror]);
    // kforge runs inside the namespace (its units go to that systemd's private /run).
    let kf = |args: &[&str]| -> Outcome {
        let mut c = sd.nsenter(&[BIN]);
        c.env_clear().envs(ctx.kforge_env());
        c.args(["vm", "--unit-dir", "/run/systemd/system"])
            .args(args);
        Outcome::new(format!("kforge vm {}", args.join(" ")), c.output().unwrap())
    };
    let def: VmDefinition = kf(&["define", "g1", "--manifest", &m.entry()])
        .success()
        .json();
    assert_eq!(def.uts_release, m.uts_release);
    assert_eq!(
        (def.arch.as_str(), def.qemu.ends_with("/qemu-system-x86_64")),
        ("x86_64", true)
    );
    // The unit is an instance of the template, its ExecStart the QEMU binary with this kernel.
    let cat = sd
        .nsenter(&["systemctl", "cat", "qemu-system@g1.service"])
        .output()
        .unwrap();
    let cat = String::from_utf8_lossy(&cat.stdout);
    assert!(
        cat.contains("/run/systemd/system/qemu-system@.service"),
        "{cat}"
    );
    assert!(
        cat.contains("ExecStart=\"/usr/bin/qemu-system-x86_64\""),
        "{cat}"
    );
    assert!(cat.contains(m.bz_image.as_ref().unwrap()), "{cat}");
    kf(&["start", "g1"]).success();
    // The guest's console shows the identity and the module load from virtiofs.
    let deadline = Instant::now() + Duration::from_secs(90);
    let console = loop {
        let c = kf(&["console", "g1"]).success().stdout;
        if c.contains("KFORGE-DONE") {
            break c;
        }
        assert!(Instant::now() < deadline, "guest console so far:\n{c}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        console.contains(&format!("KFORGE-UNAME {}", m.uts_release)),
        "{console}"
    );
    assert!(
        console.contains("KFORGE-MODULE-LOADED nls_utf8"),
        "{console}"
    );
    let status: VmStatus = kf(&["status", "g1"]).success().json();
    assert_eq!(status.active_state, "active");
    assert_eq!(status.virtiofsd_state, "active");
    assert_eq!(status.qemu_unit, "qemu-system@g1.service");
    assert!(status.main_pid > 0);
    // (virtiofsd in its namespace sandbox is two processes: a parent and the sandboxed one)
    let running = guest_processes(ctx.path());
    assert_eq!(
        running.iter().filter(|c| c.contains("qemu-system")).count(),
        1,
        "{running:?}"
    );
    assert!(
        running.iter().any(|c| c.contains("virtiofsd")),
        "{running:?}"
    );
    // QEMU runs as the unprivileged guest user, under seccomp filters (its pid on this side
    // of the namespace).
    let qemu = guest_pids(ctx.path())
        .into_iter()
        .find(|(_, c)| c.contains("qemu-system"))
        .map(|(p, _)| p)
        .unwrap();
    let uid = status_field(qemu, "Uid");
    assert!(
        !uid.is_empty() && uid.iter().all(|u| u != "0"),
        "QEMU runs as {uid:?}"
    );
    assert_eq!(status_field(qemu, "Seccomp"), ["2"]);
    // systemctl stop ends QEMU and virtiofsd.
    kf(&["stop", "g1"]).success();
    let status: VmStatus = kf(&["status", "g1"]).success().json();
    assert_eq!(status.active_state, "inactive");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !guest_processes(ctx.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            guest_processes(ctx.path())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    kf(&["rm", "g1"]).success();
    kf(&["status", "g1"]).code(2);

    // A guest on a root directory, under the same hardened units: its root share's
    // virtiofsd (root, in its namespace sandbox, the directory its only writable path) serves
    // the guest's init, which writes into the directory.
    let root = ctx.path().join("rootfs");
    for d in ["bin", "sbin", "proc", "sys", "dev", "lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    fs::write_executable(
        root.join("sbin/init"),
        "#!/bin/busybox sh\necho \"ROOTFS-UP $(/bin/busybox uname -r)\"\necho written > /by-the-guest\n/bin/busybox sync\necho 'guest login:'\n/bin/busybox sleep 300\n",
    );
    kf(&[
        "define",
        "g2",
        "--manifest",
        &m.entry(),
        "--rootfs",
        root.to_str().unwrap(),
    ])
    .success();
    kf(&["start", "g2"]).success();
    let deadline = Instant::now() + Duration::from_secs(90);
    let console = loop {
        let c = kf(&["console", "g2"]).success().stdout;
        if c.contains("guest login:") {
            break c;
        }
        assert!(Instant::now() < deadline, "guest console so far:\n{c}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        console.contains(&format!("ROOTFS-UP {}", m.uts_release)),
        "{console}"
    );
    assert_eq!(fs::read_string(root.join("by-the-guest")), "written\n");
    kf(&["stop", "g2"]).success();
    kf(&["rm", "g2"]).success();
    drop(sd);
}

#[test]
#[ignore = "boots kernels in QEMU: scripts/test.sh"]
fn units_verify_and_vm_run_needs_no_systemd() {
    let ctx = TestContext::new("units");
    let built = ctx.adopt(fixtures::tiny_gcc());
    let units = ctx.path().join("units");
    let u = units.to_str().unwrap();
    let def: VmDefinition = ctx
        .kforge(["vm", "--unit-dir", u, "define", "t1", "--oneshot"])
        .args(["--manifest", &built.entry()])
        .run()
        .success()
        .json();
    assert_eq!(def.uts_release, built.uts_release);
    assert_eq!(Some(def.kernel), built.bz_image);
    assert!(def.oneshot);
    assert_units_verify(
        &units,
        &["qemu-system@t1.service", "kforge-virtiofsd@t1.service"],
    );
    // The guest's files are not for everyone: its directory for kforge and the guest user's
    // group, its console log for root.
    let vm_dir = ctx.system().join("vms/t1");
    assert_eq!(fs::mode(&vm_dir) & 0o007, 0, "{:o}", fs::mode(&vm_dir));
    assert_eq!(fs::mode(&vm_dir.join("console.log")), 0o600);
    // Without systemd as init here, start refuses and points at vm run.
    if !Path::new("/run/systemd/system").exists() {
        ctx.kforge(["vm", "--unit-dir", u, "start", "t1"])
            .run()
            .code(2)
            .stderr_has("kforge vm run t1");
    }
    // The same command line in the foreground; a oneshot guest ends by itself.
    ctx.kforge(["vm", "--unit-dir", u, "run", "t1", "--timeout", "60"])
        .run()
        .success()
        .stdout_has(&format!("KFORGE-UNAME {}", def.uts_release))
        .stdout_has("KFORGE-MODULE-LOADED nls_utf8");
    assert_no_guests(ctx.path());

    // A guest on a root directory share: a third unit, bound to the guest, that verifies;
    // in the foreground the guest switches into the directory.
    let root = ctx.path().join("rootfs");
    for d in ["bin", "sbin", "proc", "sys", "dev", "lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    fs::write_executable(
        root.join("sbin/init"),
        "#!/bin/busybox sh\necho \"ROOTFS-UP $(/bin/busybox uname -r)\"\n/bin/busybox reboot -f\n",
    );
    let def2: VmDefinition = ctx
        .kforge([
            "vm",
            "--unit-dir",
            u,
            "define",
            "t2",
            "--oneshot",
            "--rootfs",
        ])
        .arg(&root)
        .args(["--manifest", &built.entry()])
        .run()
        .success()
        .json();
    assert_eq!(def2.rootfs.as_ref().map(|r| r.dir.as_str()), root.to_str());
    assert_units_verify(
        &units,
        &[
            "qemu-system@t2.service",
            "kforge-virtiofsd@t2.service",
            "kforge-virtiofsd-rootfs@t2.service",
        ],
    );
    let dropin = fs::read_string(units.join("qemu-system@t2.service.d/kforge.conf"));
    assert!(
        dropin.contains("BindsTo=kforge-virtiofsd-rootfs@%i.service"),
        "{dropin}"
    );
    // Every unit runs with the least it needs: `systemd-analyze security` rates each at or
    // below 3.0 (OK), QEMU's as not root.
    for unit in [
        "qemu-system@t2.service",
        "kforge-virtiofsd@t2.service",
        "kforge-virtiofsd-rootfs@t2.service",
    ] {
        let e = exposure(&units, unit);
        eprintln!("{unit}: exposure {e}");
        assert!(e <= 3.0, "{unit}: exposure {e} is over 3.0");
    }
    assert!(fs::read_string(units.join("qemu-system@.service")).contains("\nUser=kforge-guest\n"));
    ctx.kforge(["vm", "--unit-dir", u, "run", "t2", "--timeout", "60"])
        .run()
        .success()
        .stdout_has(&format!("ROOTFS-UP {}", def.uts_release));
    assert_no_guests(ctx.path());
    ctx.kforge(["vm", "--unit-dir", u, "rm", "t2"])
        .run()
        .success();
    assert!(!units.join("kforge-virtiofsd-rootfs@t2.service.d").exists());

    for bad in ["A", "../x", "a b", "-x"] {
        ctx.kforge(["vm", "--unit-dir", u, "define", bad])
            .run()
            .code(2);
    }
}
