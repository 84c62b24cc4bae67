//! Processes a test may leave behind.

use std::path::Path;

/// QEMU or virtiofsd processes whose command line mentions `dir`: a guest of this test's
/// that is still running.
pub fn guest_processes(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle) && (c.contains("qemu-system") || c.contains("virtiofsd")))
        .collect()
}

/// Asserts no guest of `dir` runs.
#[track_caller]
pub fn assert_no_guests(dir: &Path) {
    let left = guest_processes(dir);
    assert!(left.is_empty(), "left running: {left:?}");
}
