//! Logging wrappers for the tools kforge runs (make, meson, ninja): first on PATH, they
//! append their arguments to a log and exec the real tool. Reading a log that does not
//! exist fails the test: a wrapper that never ran proves nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct ToolLog {
    bin: PathBuf,
    logs: PathBuf,
}

impl ToolLog {
    /// Wrappers for `tools` in `dir/logging-bin`, logging to `dir/tool-logs/<tool>.log`.
    pub fn new(dir: &Path, tools: &[&str]) -> Self {
        let bin = dir.join("logging-bin");
        let logs = dir.join("tool-logs");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        for tool in tools {
            let real = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap();
            let real = String::from_utf8(real.stdout).unwrap().trim().to_owned();
            assert!(!real.is_empty(), "{tool} is not installed");
            super::fs::write_executable(
                bin.join(tool),
                &format!(
                    "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
                    logs.join(format!("{tool}.log")).display()
                ),
            );
        }
        Self { bin, logs }
    }

    /// The directory to put first on PATH.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Forgets what was logged so far.
    pub fn reset(&self) {
        for e in std::fs::read_dir(&self.logs).unwrap().flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }

    /// Whether `tool` was not called at all since the last reset.
    pub fn not_called(&self, tool: &str) -> bool {
        !self.logs.join(format!("{tool}.log")).exists()
    }

    /// The argument lines `tool` was called with since the last reset; fails when it was
    /// never called (the wrapper was not on PATH, or the tool did not run at all).
    #[track_caller]
    pub fn calls(&self, tool: &str) -> Vec<String> {
        let log = self.logs.join(format!("{tool}.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_else(|_| {
            panic!(
                "{tool} was never called through its logging wrapper ({} is missing)",
                log.display()
            )
        });
        let calls: Vec<String> = text.lines().map(str::to_owned).collect();
        assert!(!calls.is_empty(), "{} is empty", log.display());
        calls
    }
}
