//! Guests as systemd services, for real: a systemd running as PID 1 of its own PID, mount
//! and UTS namespace (isolated as the project notes describe: private /run, /tmp and
//! /var/tmp, read-only /sys, basic.target only) starts qemu-system@<vm>.service for a
//! kernel kforge built, and stops it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, ManifestContract, Run, TestContext};

/// Isolation as the project notes describe (private /run, /tmp and /var/tmp, read-only /sys,
/// basic.target), plus: the paths the test needs (its arguments: the repository, the
/// binary, the fixture mirror), which may live under /tmp or /var/tmp, are bound back over
/// the fresh tmpfs, and systemd-tmpfiles is masked for this runtime so it cleans nothing.
const START_SH: &str = r#"#!/bin/sh
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/kforge-keep
i=0
for p in "$@"; do mkdir -p /run/kforge-keep/$i; mount --bind "$p" /run/kforge-keep/$i; i=$((i+1)); done
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
i=0
for p in "$@"; do mkdir -p "$p"; mount --bind /run/kforge-keep/$i "$p"; i=$((i+1)); done
mkdir -p /run/systemd/system
for u in systemd-tmpfiles-setup.service systemd-tmpfiles-clean.service systemd-tmpfiles-clean.timer; do
  ln -sf /dev/null /run/systemd/system/$u
done
mount -o remount,ro,bind /sys 2>/dev/null || mount -t sysfs -o ro sysfs /sys
mount --bind /proc/sys /proc/sys && mount -o remount,ro,bind /proc/sys
export container=kforge-test
exec /lib/systemd/systemd --system --unit=basic.target
"#;

/// A systemd in its own namespaces; killed (with everything in its PID namespace) on drop.
struct Systemd {
    unshare: Child,
    pid: u32,
}

impl Systemd {
    fn start(dir: &Path, keep: &[&Path]) -> Self {
        let script = dir.join("start.sh");
        std::fs::write(&script, START_SH).unwrap();
        // Parents before children, so a kept subtree is bound inside its kept parent.
        let mut keep: Vec<&Path> = keep.to_vec();
        keep.sort_by_key(|p| p.as_os_str().len());
        keep.dedup();
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--uts", "--mount-proc", "sh"])
            .arg(&script)
            .args(keep)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "systemd did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        let sd = Self { unshare, pid };
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let state = sd
                .nsenter(&["systemctl", "is-system-running"])
                .output()
                .unwrap();
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(Instant::now() < deadline, "systemd is {state:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        sd
    }

    fn nsenter(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-m", "-p", "-u"])
            .args(args);
        c
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let _ = self.nsenter(&["systemctl", "poweroff"]).output();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.unshare.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: PID 1 of the namespace; its death takes the whole namespace with it.
        unsafe { libc::kill(i32::try_from(self.pid).unwrap(), libc::SIGKILL) };
        let _ = self.unshare.wait();
    }
}

/// QEMU or virtiofsd processes whose command line mentions `dir`.
fn guests(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle) && (c.contains("qemu-system") || c.contains("virtiofsd")))
        .collect()
}

#[test]
fn a_real_systemd_runs_the_guest_as_qemu_system_at_vm_service() {
    let ctx = TestContext::new("vm");
    let m: ManifestContract = ctx
        .run(&["build", "--preset", "tiny_guest_defconfig"])
        .ok()
        .json();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let sd = Systemd::start(
        ctx.dir.path(),
        &[&common::repo_root(), bin_dir, ctx.dir.path(), &ctx.mirror],
    );
    // kforge runs inside the namespace (its units go to that systemd's private /run).
    let kf = |args: &[&str]| -> Run {
        let mut c = sd.nsenter(&[BIN]);
        let base = ctx.command();
        for (k, v) in base.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.args(["vm", "--unit-dir", "/run/systemd/system"])
            .args(args);
        Run::from(c.output().unwrap())
    };
    let def: serde_json::Value = kf(&["define", "g1"]).ok().json();
    assert_eq!(def["uts_release"], m.uts_release.as_str());
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
    kf(&["start", "g1"]).ok();
    // The guest's console shows the identity and the module load from virtiofs.
    let deadline = Instant::now() + Duration::from_secs(90);
    let console = loop {
        let c = kf(&["console", "g1"]).ok().stdout;
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
        console.contains("KFORGE-MODULE-LOADED vsock_loopback"),
        "{console}"
    );
    let status: serde_json::Value = kf(&["status", "g1"]).ok().json();
    assert_eq!(status["active_state"], "active");
    assert_eq!(status["virtiofsd_state"], "active");
    assert!(status["main_pid"].as_u64().unwrap() > 0);
    assert_eq!(
        guests(ctx.dir.path()).len(),
        2,
        "{:?}",
        guests(ctx.dir.path())
    );
    // systemctl stop ends QEMU and virtiofsd.
    kf(&["stop", "g1"]).ok();
    let status: serde_json::Value = kf(&["status", "g1"]).ok().json();
    assert_eq!(status["active_state"], "inactive");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !guests(ctx.dir.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            guests(ctx.dir.path())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    kf(&["rm", "g1"]).ok();
    let r = kf(&["status", "g1"]);
    assert_eq!(r.code, 2);
    drop(sd);
}

#[test]
fn units_verify_and_vm_run_needs_no_systemd() {
    let ctx = TestContext::new("units");
    ctx.run(&["build", "--preset", "tiny_guest_defconfig"]).ok();
    let units = ctx.dir.path().join("units");
    let u = units.to_str().unwrap();
    let def: serde_json::Value = ctx
        .run(&["vm", "--unit-dir", u, "define", "t1", "--oneshot"])
        .ok()
        .json();
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "qemu-system@t1.service",
            "kforge-virtiofsd@t1.service",
        ])
        .env("SYSTEMD_UNIT_PATH", format!("{u}:"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without systemd as init here, start refuses and points at vm run.
    if !Path::new("/run/systemd/system").exists() {
        let r = ctx.run(&["vm", "--unit-dir", u, "start", "t1"]);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains("kforge vm run t1"), "{}", r.stderr);
    }
    // The same command line in the foreground; a oneshot guest ends by itself.
    let r = ctx
        .run(&["vm", "--unit-dir", u, "run", "t1", "--timeout", "60"])
        .ok();
    assert!(
        r.stdout.contains(&format!(
            "KFORGE-UNAME {}",
            def["uts_release"].as_str().unwrap()
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("KFORGE-MODULE-LOADED vsock_loopback"),
        "{}",
        r.stdout
    );
    assert!(guests(ctx.dir.path()).is_empty());

    // A guest on a root directory share: a third unit, bound to the guest, that verifies;
    // in the foreground the guest switches into the directory.
    let root = ctx.dir.path().join("rootfs");
    for d in ["bin", "sbin", "proc", "sys", "dev", "lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(
        root.join("sbin/init"),
        "#!/bin/busybox sh\necho \"ROOTFS-UP $(/bin/busybox uname -r)\"\n/bin/busybox reboot -f\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(root.join("sbin/init"))
        .status()
        .unwrap();
    ctx.run(&[
        "vm",
        "--unit-dir",
        u,
        "define",
        "t2",
        "--oneshot",
        "--rootfs",
        root.to_str().unwrap(),
    ])
    .ok();
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "qemu-system@t2.service",
            "kforge-virtiofsd@t2.service",
            "kforge-virtiofsd-rootfs@t2.service",
        ])
        .env("SYSTEMD_UNIT_PATH", format!("{u}:"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dropin =
        std::fs::read_to_string(units.join("qemu-system@t2.service.d/kforge.conf")).unwrap();
    assert!(
        dropin.contains("BindsTo=kforge-virtiofsd-rootfs@%i.service"),
        "{dropin}"
    );
    let r = ctx
        .run(&["vm", "--unit-dir", u, "run", "t2", "--timeout", "60"])
        .ok();
    assert!(
        r.stdout.contains(&format!(
            "ROOTFS-UP {}",
            def["uts_release"].as_str().unwrap()
        )),
        "{}",
        r.stdout
    );
    assert!(guests(ctx.dir.path()).is_empty());
    ctx.run(&["vm", "--unit-dir", u, "rm", "t2"]).ok();
    assert!(!units.join("kforge-virtiofsd-rootfs@t2.service.d").exists());

    for bad in ["A", "../x", "a b", "-x"] {
        let r = ctx.run(&["vm", "--unit-dir", u, "define", bad]);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
    }
}
