//! A real systemd for the tests: PID 1 of its own PID, mount and UTS namespace, isolated as
//! the project's notes describe (private /run, /tmp and /var/tmp, read-only /sys,
//! basic.target only), so it starts nothing of the host's and cleans none of its files.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The isolation, plus: the paths the test needs (the script's arguments: the repository,
/// the binary, the test's directory, the mirror), which may live under /tmp or /var/tmp,
/// are bound back over the fresh tmpfs, and systemd-tmpfiles is masked for this runtime so
/// it cleans nothing.
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

/// A running systemd; powered off (and killed with its namespace if it lingers) on drop.
pub struct Systemd {
    unshare: Child,
    pid: u32,
}

impl Systemd {
    /// Starts one, with `keep` visible inside; returns when it is running.
    pub fn start(dir: &Path, keep: &[&Path]) -> Self {
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

    /// A command run inside its namespaces.
    pub fn nsenter(&self, args: &[&str]) -> Command {
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

/// `systemd-analyze verify UNITS` with `unit_dir` first on the unit path; asserts it passes.
#[track_caller]
pub fn assert_units_verify(unit_dir: &Path, units: &[&str]) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify {units:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `systemd-analyze security --offline=true` of an instance of a template with its kforge
/// drop-in (`qemu-system@t1.service`), merged into one unit file as the offline analysis
/// needs (one `ExecStart=`, `%i` filled in): the overall exposure, 0.0 (safe) to 10.0.
pub fn exposure(unit_dir: &Path, instance: &str) -> f64 {
    let (prefix, rest) = instance
        .split_once('@')
        .expect("an instance: name@i.service");
    let name = rest.strip_suffix(".service").expect("a service");
    let template = std::fs::read_to_string(unit_dir.join(format!("{prefix}@.service"))).unwrap();
    let dropin =
        std::fs::read_to_string(unit_dir.join(format!("{instance}.d/kforge.conf"))).unwrap();
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in template.lines().chain(dropin.lines()) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if !sections.iter().any(|(n, _)| n == s) {
                sections.push((s.to_owned(), Vec::new()));
            }
            let i = sections.iter().position(|(n, _)| n == s).unwrap();
            let last = sections.remove(i);
            sections.push(last);
            continue;
        }
        let body = &mut sections.last_mut().expect("a section first").1;
        if line.starts_with("ExecStart=") {
            body.retain(|l| !l.starts_with("ExecStart="));
            if line == "ExecStart=" {
                continue;
            }
        }
        body.push(line.to_owned());
    }
    let mut text = String::new();
    for (n, body) in &sections {
        text.push('[');
        text.push_str(n);
        text.push_str("]\n");
        text.push_str(&body.join("\n"));
        text.push_str("\n\n");
    }
    let text = text.replace("%i", name);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{prefix}-{name}.service"));
    std::fs::write(&file, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    said.lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure for {instance}:\n{said}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}
