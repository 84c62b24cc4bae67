//! Reading a guest's serial console, as a pure state machine: fed one line at a time, it
//! says whether to read on, whether the guest finished its report, or whether it failed; at
//! the end it gives the verdict. It never touches QEMU: the loop that runs the guest only
//! feeds it, so every verdict is unit-tested on recorded consoles.

use std::collections::VecDeque;
use std::time::Duration;

use super::initramfs::{
    MARK_DONE, MARK_MODULE, MARK_MOUNT, MARK_ROOTFS, MARK_ROOTFS_FAILED, MARK_UNAME,
};

/// Lines of the console kept for the report.
pub const TAIL_LINES: usize = 30;
/// Characters of one line kept (a guest printing garbage without newlines stays bounded).
const LINE_CHARS: usize = 512;

/// What a passing boot shows.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The build identity: the guest's `uname -r`.
    pub release: String,
    /// The module that must load from the modules share.
    pub module: String,
    /// With a root directory: the text that says its init is up (`login:`).
    pub ready: Option<String>,
}

/// What the last line meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Read on.
    More,
    /// The guest finished (its report is complete, or the root directory's init is up).
    Done,
    /// The guest failed in a way no later line can mend (a panic, a failed root mount).
    Failed,
}

/// How the console ended, as the loop saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The checker said Done or Failed.
    Stopped,
    /// QEMU exited (its output closed) before that.
    Exited,
    /// The deadline passed first.
    TimedOut(Duration),
}

/// The console as read so far.
#[derive(Debug, Clone)]
pub struct Console {
    expect: Expect,
    pub guest_release: Option<String>,
    pub modules_mounted: bool,
    pub module_loaded: bool,
    pub rootfs_mounted: bool,
    pub ready_seen: bool,
    done: bool,
    rootfs_failed: bool,
    panic: Option<String>,
    tail: VecDeque<String>,
}

impl Console {
    pub fn new(expect: Expect) -> Self {
        Self {
            expect,
            guest_release: None,
            modules_mounted: false,
            module_loaded: false,
            rootfs_mounted: false,
            ready_seen: false,
            done: false,
            rootfs_failed: false,
            panic: None,
            tail: VecDeque::new(),
        }
    }

    /// Takes one console line (without its newline).
    pub fn feed(&mut self, line: &str) -> Feed {
        let clean = line.trim_end_matches('\r');
        self.remember(clean);
        if let Some(r) = clean.strip_prefix(MARK_UNAME) {
            self.guest_release = Some(r.trim().to_owned());
        } else if clean.starts_with(MARK_MOUNT) {
            self.modules_mounted = true;
        } else if clean
            .strip_prefix(MARK_MODULE)
            .is_some_and(|m| m.trim() == self.expect.module)
        {
            self.module_loaded = true;
        } else if clean == MARK_DONE && self.expect.ready.is_none() {
            self.done = true;
            return Feed::Done;
        } else if clean == MARK_ROOTFS {
            self.rootfs_mounted = true;
        } else if clean == MARK_ROOTFS_FAILED {
            self.rootfs_failed = true;
            return Feed::Failed;
        } else if let Some(text) = panic_text(clean) {
            self.panic = Some(text.to_owned());
            return Feed::Failed;
        } else if let Some(ready) = &self.expect.ready
            && self.rootfs_mounted
            && clean.contains(ready.as_str())
        {
            self.ready_seen = true;
            return Feed::Done;
        }
        Feed::More
    }

    fn remember(&mut self, line: &str) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        let kept = line
            .char_indices()
            .nth(LINE_CHARS)
            .map_or(line, |(i, _)| &line[..i]);
        self.tail.push_back(kept.to_owned());
    }

    /// The last lines read, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// Why the boot failed, once the console has ended; `None` when it passed.
    pub fn failure(&self, end: End) -> Option<String> {
        if let Some(p) = &self.panic {
            return Some(format!("the guest kernel panicked: {p}"));
        }
        let finished = self.done || self.ready_seen;
        if let End::TimedOut(after) = end
            && !finished
            && self.expect.ready.is_none()
        {
            return Some(format!(
                "the guest did not finish within {} s",
                after.as_secs()
            ));
        }
        if self.guest_release.as_deref() != Some(self.expect.release.as_str()) {
            return Some(format!(
                "uname -r in the guest is {:?}, expected {}",
                self.guest_release.as_deref().unwrap_or("(not printed)"),
                self.expect.release
            ));
        }
        if !self.modules_mounted {
            return Some("the guest could not mount the modules share over virtiofs".to_owned());
        }
        if !self.module_loaded {
            return Some(format!(
                "module {} did not load from the modules share",
                self.expect.module
            ));
        }
        let ready = self.expect.ready.as_ref()?;
        if !self.rootfs_mounted || self.rootfs_failed {
            return Some("the guest could not mount the root directory over virtiofs".to_owned());
        }
        if !self.ready_seen {
            let within = match end {
                End::TimedOut(after) => format!(" within {} s", after.as_secs()),
                End::Exited | End::Stopped => " before the guest stopped".to_owned(),
            };
            return Some(format!(
                "the guest switched to the root directory but `{ready}` did not appear{within}"
            ));
        }
        None
    }
}

/// The kernel's panic line (`Kernel panic - not syncing: ...`), wherever the console's
/// timestamps put it.
pub(super) fn panic_text(line: &str) -> Option<&str> {
    line.find("Kernel panic - not syncing").map(|i| &line[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "6.12.118-vanilla-0123456789ab";

    fn expect(ready: Option<&str>) -> Expect {
        Expect {
            release: RELEASE.into(),
            module: "vsock_loopback".into(),
            ready: ready.map(str::to_owned),
        }
    }

    /// Feeds a recorded console until the checker stops; how it ended.
    fn play(console: &mut Console, text: &str, end_of_text: End) -> End {
        for line in text.lines() {
            if console.feed(line) != Feed::More {
                return End::Stopped;
            }
        }
        end_of_text
    }

    /// A passing boot of the tiny guest under TCG, as kforge's initramfs prints it.
    const PASSED: &str = "\
SeaBIOS (version 1.16.2-debian-1.16.2-1)\r
Booting from ROM..\r
KFORGE-UNAME 6.12.118-vanilla-0123456789ab\r
KFORGE-MODULES-MOUNTED 6.12.118-vanilla-0123456789ab\r
KFORGE-MODULE-LOADED vsock_loopback\r
KFORGE-DONE\r
reboot: Restarting system\r
";

    #[test]
    fn a_finished_report_passes() {
        let mut c = Console::new(expect(None));
        let end = play(&mut c, PASSED, End::Exited);
        assert_eq!(end, End::Stopped);
        assert_eq!(c.failure(end), None);
        assert_eq!(c.guest_release.as_deref(), Some(RELEASE));
        assert_eq!(c.tail().last().map(String::as_str), Some("KFORGE-DONE"));
    }

    #[test]
    fn a_panic_fails_at_once_with_its_line() {
        let console = "\
Booting from ROM..\r
[    1.234567] VFS: Cannot open root device \"(null)\" or unknown-block(0,0): error -6\r
[    1.234890] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r
[    1.235000] CPU: 0 UID: 0 PID: 1 Comm: swapper Not tainted 6.12.118 #1\r
";
        let mut c = Console::new(expect(None));
        let end = play(&mut c, console, End::TimedOut(Duration::from_secs(45)));
        assert_eq!(
            end,
            End::Stopped,
            "stopped at the panic, not at the deadline"
        );
        let why = c.failure(end).unwrap();
        assert!(
            why.starts_with("the guest kernel panicked: Kernel panic - not syncing: VFS"),
            "{why}"
        );
    }

    #[test]
    fn a_hung_guest_fails_on_the_deadline() {
        let console = "SeaBIOS (version 1.16.2)\r\nBooting from ROM..\r\n";
        let mut c = Console::new(expect(None));
        let end = play(&mut c, console, End::TimedOut(Duration::from_secs(20)));
        assert_eq!(
            c.failure(end).as_deref(),
            Some("the guest did not finish within 20 s")
        );
    }

    #[test]
    fn a_module_that_did_not_load_is_named() {
        let console = PASSED.replace("KFORGE-MODULE-LOADED vsock_loopback\r\n", "");
        let mut c = Console::new(expect(None));
        let end = play(&mut c, &console, End::Exited);
        assert_eq!(
            c.failure(end).as_deref(),
            Some("module vsock_loopback did not load from the modules share")
        );
        // Another module's line does not count for it.
        let other = PASSED.replace("LOADED vsock_loopback", "LOADED vsock");
        let mut c = Console::new(expect(None));
        let end = play(&mut c, &other, End::Exited);
        assert!(c.failure(end).unwrap().contains("did not load"));
    }

    #[test]
    fn another_kernel_or_no_share_is_reported() {
        let console = PASSED.replace(RELEASE, "6.1.0-13-amd64");
        let mut c = Console::new(expect(None));
        let end = play(&mut c, &console, End::Exited);
        assert!(
            c.failure(end)
                .unwrap()
                .contains("\"6.1.0-13-amd64\", expected"),
            "{:?}",
            c.failure(end)
        );
        let console = PASSED.replace("KFORGE-MODULES-MOUNTED", "something else");
        let mut c = Console::new(expect(None));
        let end = play(&mut c, &console, End::Exited);
        assert!(c.failure(end).unwrap().contains("modules share"));
        // QEMU gone before the report: the missing line is what is reported.
        let mut c = Console::new(expect(None));
        let end = play(&mut c, "Booting from ROM..\r\n", End::Exited);
        assert!(c.failure(end).unwrap().contains("(not printed)"));
    }

    #[test]
    fn a_root_directory_passes_on_its_ready_text_and_fails_without() {
        let booted = "\
KFORGE-UNAME 6.12.118-vanilla-0123456789ab\r
KFORGE-MODULES-MOUNTED 6.12.118-vanilla-0123456789ab\r
KFORGE-MODULE-LOADED vsock_loopback\r
KFORGE-ROOTFS-MOUNTED\r
Welcome to Debian GNU/Linux 12 (bookworm)!\r
Debian GNU/Linux 12 deb-guest ttyS0\r
deb-guest login: ";
        let mut c = Console::new(expect(Some("login:")));
        let end = play(&mut c, booted, End::TimedOut(Duration::from_secs(45)));
        assert_eq!(end, End::Stopped);
        assert_eq!(c.failure(end), None);

        let mut c = Console::new(expect(Some("never-printed")));
        let end = play(&mut c, booted, End::TimedOut(Duration::from_secs(20)));
        let why = c.failure(end).unwrap();
        assert!(
            why.contains("`never-printed` did not appear within 20 s"),
            "{why}"
        );

        let failed = booted.replace("KFORGE-ROOTFS-MOUNTED", "KFORGE-ROOTFS-FAILED");
        let mut c = Console::new(expect(Some("login:")));
        let end = play(&mut c, &failed, End::Exited);
        assert_eq!(end, End::Stopped);
        assert!(
            c.failure(end)
                .unwrap()
                .contains("could not mount the root directory")
        );
    }

    #[test]
    fn garbage_is_kept_bounded_and_never_passes() {
        let mut c = Console::new(expect(None));
        let junk = "\u{fffd}\x1b[2J".repeat(10_000);
        for _ in 0..1000 {
            assert_eq!(c.feed(&junk), Feed::More);
        }
        assert_eq!(c.tail().len(), TAIL_LINES);
        assert!(c.tail().iter().all(|l| l.chars().count() <= LINE_CHARS));
        let end = End::TimedOut(Duration::from_secs(5));
        assert_eq!(
            c.failure(end).as_deref(),
            Some("the guest did not finish within 5 s")
        );
    }
}
