//! Processes a test may leave behind.

use std::path::Path;

/// QEMU or virtiofsd processes whose command line mentions `dir`: a guest of this test's
/// that is still running.
pub fn guest_processes(dir: &Path) -> Vec<String> {
    guest_pids(dir).into_iter().map(|(_, c)| c).collect()
}

/// The same, with their pids.
pub fn guest_pids(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&c).replace('\0', " ")))
        })
        .filter(|(_, c)| {
            c.contains(&needle) && (c.contains("qemu-system") || c.contains("virtiofsd"))
        })
        .collect()
}

/// A field of `/proc/<pid>/status` (`Uid`, `Seccomp`, `NSpid`), as its words.
pub fn status_field(pid: u32, field: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Asserts no guest of `dir` runs.
#[track_caller]
pub fn assert_no_guests(dir: &Path) {
    let left = guest_processes(dir);
    assert!(left.is_empty(), "left running: {left:?}");
}

/// A lock file held by another process (flock(1)), as a running kforge would hold it:
/// shared (`-s`) or exclusive (`-x`). Released when dropped; the holder and what it started
/// go with their process group, and none of them keeps the test's output open.
pub struct LockHolder {
    child: std::process::Child,
}

impl LockHolder {
    pub fn hold(lock: &Path, mode: &str) -> Self {
        use std::os::unix::process::CommandExt as _;
        let child = std::process::Command::new("flock")
            .arg(mode)
            .arg(lock)
            .args(["sleep", "600"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("flock (util-linux) runs");
        // Held once flock has it: wait until a non-blocking attempt of our own fails.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::process::Command::new("flock")
            .args(["-n", "-x"])
            .arg(lock)
            .arg("true")
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "flock never took {}",
                lock.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child }
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group flock leads.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}
