//! `kforge run`: boot a built kernel, run one command in it, and hand back the command's
//! stdout, stderr and exit status as if it had run on the host.
//!
//! The host's working directory is shared into the guest (virtiofs, read-only unless asked)
//! at the same path and the command runs there. Its stdout and stderr go to files on a
//! results share that the host reads while the guest runs, so the two streams arrive apart
//! and nothing of the kernel's console mixes into them. The console is only watched: for
//! the command's end, a panic, an oops, or a guest that never gets there.

use std::collections::VecDeque;
use std::io::{Read as _, Seek as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::initramfs;
use super::qemu::{self, Accel};
use crate::error::{Error, GuestError};
use crate::flow::{Event, Reporter};
use crate::kernel::manifest::Manifest;
use crate::process::shell_quote;

/// Lines the run's /init prints, read by [`RunConsole`].
pub const MARK_START: &str = "KFORGE-RUN-START";
pub const MARK_EXIT: &str = "KFORGE-RUN-EXIT ";
pub const MARK_FAILED: &str = "KFORGE-RUN-FAILED ";
/// Something the user should know that does not stop the run.
pub const MARK_NOTE: &str = "KFORGE-RUN-NOTE ";

/// The virtiofs tags of a run's shares besides the modules share.
const CWD_TAG: &str = "cwd";
const RESULTS_TAG: &str = "results";

/// The root filesystem the command sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// kforge's busybox initramfs.
    Initramfs,
    /// A directory shared writable (e.g. made with debootstrap); the command is chroot'ed
    /// into it.
    Dir(PathBuf),
    /// The host's own root, read-only, with fresh tmpfs on /tmp, /run and /var/tmp.
    Host,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub accel: Accel,
    pub timeout: Duration,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The QEMU binary (the system's `qemu-system-x86_64` by default).
    pub qemu: Option<PathBuf>,
    /// Where the initramfs, the sockets and the results go.
    pub workdir: PathBuf,
    /// The host directory shared into the guest at the same path; the command runs there.
    pub cwd: PathBuf,
    /// Share `cwd` writable.
    pub writable: bool,
    pub root: Root,
    /// More kernel command line parameters.
    pub append: Vec<String>,
    /// QEMU's gdbstub on this port of 127.0.0.1, the kernel held until gdb attaches.
    pub gdb: Option<u16>,
    /// The command and its arguments (argv: never joined into one shell string); empty
    /// for `kforge shell`, whose guest runs an interactive shell on the terminal instead.
    pub command: Vec<String>,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The command's exit status.
    pub status: i32,
    /// Oops and BUG lines the kernel printed while the command ran.
    pub oopses: Vec<String>,
}

/// `kforge run --json`: one run as an engine's step reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    /// The kernel that ran the command (its `uname -r`).
    pub release: String,
    pub command: Vec<String>,
    /// The command's exit status; `null` when the guest ended first (see `failure`).
    pub status: Option<i32>,
    /// Why there is no status: the panic, the guest's end, or the timeout, with the
    /// console's last lines.
    pub failure: Option<String>,
    /// What the command printed (invalid UTF-8 replaced).
    pub stdout: String,
    pub stderr: String,
    /// Oops, BUG and WARNING lines the kernel printed meanwhile.
    pub oopses: Vec<String>,
    pub seconds: f64,
}

/// The most a script on `kforge shell`'s stdin may hold: it becomes one argument of the
/// guest's shell, and Linux caps one argument at 128 KiB (MAX_ARG_STRLEN).
pub const MAX_SCRIPT: usize = 64 * 1024;

/// Reads the script `kforge shell` runs when its stdin is not a terminal.
pub fn read_script(from: &mut dyn std::io::Read) -> Result<String, Error> {
    let mut bytes = Vec::new();
    from.take(MAX_SCRIPT as u64 + 1).read_to_end(&mut bytes)?;
    let refuse = |why: &str| Err(GuestError::Refused(format!("the script on stdin {why}")).into());
    if bytes.len() > MAX_SCRIPT {
        return refuse(&format!(
            "is over {} KiB: put it in a file in this directory (shared into the guest) and run that",
            MAX_SCRIPT / 1024
        ));
    }
    if bytes.contains(&0) {
        return refuse("holds a NUL byte");
    }
    String::from_utf8(bytes).or_else(|_| refuse("is not UTF-8"))
}

/// The command that runs a script the way an interactive shell would run what was typed.
pub fn shell_script_command(script: String) -> Vec<String> {
    vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        script,
        "kforge-shell".to_owned(),
    ]
}

/// Checks the options before anything starts.
pub fn check(opts: &RunOptions, shell: bool) -> Result<(), GuestError> {
    let refuse = |why: String| Err(GuestError::Refused(why));
    if opts.command.is_empty() && !shell {
        return refuse("say what to run: kforge run -- CMD [ARGS...]".into());
    }
    if !opts.cwd.is_absolute() || opts.cwd.to_str().is_none() || !opts.cwd.is_dir() {
        return refuse(format!(
            "the working directory {} cannot be shared (it must be an existing directory with a UTF-8 path)",
            opts.cwd.display()
        ));
    }
    if let Some(bad) = opts
        .append
        .iter()
        .find(|a| a.is_empty() || a.chars().any(char::is_control))
    {
        return refuse(format!(
            "--append `{}`: give kernel parameters without control characters",
            bad.escape_debug()
        ));
    }
    if let Root::Dir(dir) = &opts.root {
        if !dir.is_dir() {
            return refuse(format!(
                "the root directory {} does not exist",
                dir.display()
            ));
        }
        if dir.join("bin/sh").symlink_metadata().is_err() {
            return refuse(format!(
                "{} has no /bin/sh to run the command with",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// The run's /init: mount the shares, run the command in the working directory with its
/// output on the results share (or, without a command, an interactive shell on the
/// console), report the status, reboot (which ends QEMU).
pub fn init_script(command: Option<&[String]>, cwd: &Path, root: &Root) -> String {
    let run = match command {
        Some(command) => {
            let argv: Vec<String> = command
                .iter()
                .map(|a| shell_quote(std::ffi::OsStr::new(a)))
                .collect();
            let argv = argv.join(" ");
            format!(
                r#"if [ -n "$root" ]; then
  chroot "$root" /bin/sh -c 'cd "$1" || exit 126; shift; exec "$@"' kforge-run "$cwd" {argv} </dev/null >/kforge/results/stdout 2>/kforge/results/stderr
else
  (cd "$cwd" && exec {argv}) </dev/null >/kforge/results/stdout 2>/kforge/results/stderr
fi"#
            )
        }
        // cttyhack makes the console the shell's controlling terminal (job control, ^C).
        None => r#"echo "kforge shell: $release in $cwd; leave with exit (or Ctrl-A x)"
if [ -n "$root" ]; then
  setsid cttyhack chroot "$root" /bin/sh -c 'cd "$1"; exec /bin/sh -i' kforge-shell "$cwd"
else
  (cd "$cwd" && exec setsid cttyhack /bin/sh -i)
fi"#
        .to_owned(),
    };
    let cwd = shell_quote(cwd.as_os_str());
    let mount_root = |ro: &str, tmpfs: &str| {
        format!(
            r#"root=/newroot
mkdir -p /newroot
mount -t virtiofs {ro}rootfs /newroot || fail "the root share did not mount"
mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/lib/modules 2>/dev/null
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
{tmpfs}if mount -t tmpfs kforge /newroot/lib/modules; then
  mkdir -p "/newroot/lib/modules/$release"
  mount --bind "/lib/modules/$release" "/newroot/lib/modules/$release"
else
  echo "{MARK_NOTE}the root has no /lib/modules to show this kernel's modules at"
fi
"#
        )
    };
    let root_block = match root {
        Root::Initramfs => "root=\n".to_owned(),
        Root::Dir(_) => mount_root("", ""),
        Root::Host => mount_root(
            "-o ro ",
            "for d in /tmp /run /var/tmp; do [ -d \"/newroot$d\" ] && mount -t tmpfs kforge \"/newroot$d\"; done\n",
        ),
    };
    format!(
        r#"#!/bin/busybox sh
# kforge's run init: mount the shares, run one command, report its status, reboot.
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
release=$(uname -r)
fail() {{ echo "{MARK_FAILED}$*"; reboot -f; }}
mkdir -p /kforge/results "/lib/modules/$release"
mount -t virtiofs {RESULTS_TAG} /kforge/results || fail "the results share did not mount"
mount -t virtiofs modules "/lib/modules/$release" || fail "the modules share did not mount"
mkdir -p /sbin && ln -sf /bin/modprobe /sbin/modprobe
{root_block}cwd={cwd}
mkdir -p "$root$cwd" 2>/dev/null
mount -t virtiofs {CWD_TAG} "$root$cwd" || fail "the working directory share did not mount"
echo "{MARK_START}"
{run}
status=$?
echo "$status" >/kforge/results/status
sync
echo "{MARK_EXIT}$status"
reboot -f
"#
    )
}

/// What the last console line meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    More,
    /// The command ended with this status.
    Exited(i32),
    /// The guest cannot get further: a panic, or a share that did not mount.
    Failed,
}

/// A run's console, as a pure state machine fed one line at a time.
#[derive(Debug, Clone, Default)]
pub struct RunConsole {
    pub started: bool,
    pub panic: Option<String>,
    pub setup_failed: Option<String>,
    pub oopses: Vec<String>,
    pub notes: Vec<String>,
    tail: VecDeque<String>,
}

impl RunConsole {
    pub fn feed(&mut self, line: &str) -> Feed {
        let clean = line.trim_end_matches('\r');
        if self.tail.len() == super::console::TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail
            .push_back(clean.chars().take(512).collect::<String>());
        if clean == MARK_START {
            self.started = true;
        } else if let Some(status) = clean.strip_prefix(MARK_EXIT) {
            if let Ok(s) = status.trim().parse() {
                return Feed::Exited(s);
            }
        } else if let Some(why) = clean.strip_prefix(MARK_FAILED) {
            self.setup_failed = Some(why.to_owned());
            return Feed::Failed;
        } else if let Some(note) = clean.strip_prefix(MARK_NOTE) {
            self.notes.push(note.to_owned());
        } else if let Some(text) = super::console::panic_text(clean) {
            self.panic = Some(text.to_owned());
            return Feed::Failed;
        } else if let Some(i) = ["Oops:", "BUG:", "WARNING:"]
            .iter()
            .find_map(|m| clean.find(m))
        {
            self.oopses.push(clean[i..].to_owned());
        }
        Feed::More
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// The error for a run that did not report a status.
    pub fn failure(&self, timed_out: Option<Duration>) -> GuestError {
        let console_tail = self.tail();
        if let Some(text) = &self.panic {
            return GuestError::Panicked {
                text: text.clone(),
                console_tail,
            };
        }
        if let Some(after) = timed_out {
            return GuestError::TimedOut {
                after,
                started: self.started,
                console_tail,
            };
        }
        GuestError::Died {
            why: self.setup_failed.clone().unwrap_or_else(|| {
                "the guest stopped before the command reported its status".into()
            }),
            console_tail,
        }
    }
}

/// A file on the results share, copied to the host's stream as it grows.
struct Follow<'a> {
    path: PathBuf,
    offset: u64,
    to: &'a mut dyn Write,
}

impl Follow<'_> {
    fn drain(&mut self) -> std::io::Result<()> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Ok(());
        };
        f.seek(std::io::SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if !buf.is_empty() {
            self.offset += buf.len() as u64;
            self.to.write_all(&buf)?;
            self.to.flush()?;
        }
        Ok(())
    }
}

/// How to attach: the gdb command line, with the build's vmlinux (the devel layer's, else
/// the slot's build directory's) when there is one.
fn gdb_hint(m: &Manifest, port: u16) -> String {
    let vmlinux = m
        .store_devel
        .iter()
        .chain(std::iter::once(&m.build_dir))
        .map(|d| Path::new(d).join("vmlinux"))
        .find(|p| p.is_file());
    let target = format!("-ex 'target remote 127.0.0.1:{port}'");
    match vmlinux {
        Some(v) => format!(
            "the kernel waits for gdb: gdb {} {target}",
            shell_quote(v.as_os_str())
        ),
        None => format!(
            "the kernel waits for gdb: gdb {target} (no vmlinux kept for {}: build with the devel layer for symbols)",
            m.uts_release
        ),
    }
}

/// A guest ready to start: its virtiofsd daemons serving, its QEMU command line made.
struct Prepared {
    daemons: Vec<crate::process::Background>,
    qemu: crate::process::Cmd,
    /// What QEMU is handed (kept open until it has started).
    handed: Vec<std::os::fd::OwnedFd>,
    results: PathBuf,
    accel: Accel,
    start: Instant,
}

impl Prepared {
    /// Stops the guest's QEMU (if still running) and the daemons, all at once; the
    /// command's status from the results share.
    fn finish(&mut self, vm: Option<&mut crate::process::Background>) -> Option<i32> {
        crate::process::kill_together(vm.into_iter().chain(&mut self.daemons));
        fs_err::read_to_string(self.results.join("status"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

fn prepare(
    m: &Manifest,
    opts: &RunOptions,
    shell: bool,
    reporter: &dyn Reporter,
) -> Result<Prepared, Error> {
    check(opts, shell)?;
    let (image, modules) = super::precheck(m)?;
    let qemu_bin = super::qemu_for(m.arch, opts.qemu.as_deref())?;
    let accel = qemu::accel_for(opts.accel, m.arch)?;
    let virtiofsd = super::find_virtiofsd()?;
    let busybox = initramfs::find_static_busybox(m.arch)?;
    let results = opts.workdir.join("results");
    super::sandbox::private_dir(&opts.workdir)?;
    fs_err::create_dir_all(&results)?;
    let initrd = opts.workdir.join("initramfs.cpio");
    initramfs::write_with(
        &initrd,
        &busybox,
        &init_script(
            (!shell).then_some(opts.command.as_slice()),
            &opts.cwd,
            &opts.root,
        ),
    )?;

    let start = Instant::now();
    let mut shares = Vec::new();
    let mut served = Vec::new();
    let mut share = |tag: &'static str, dir: &Path, args: fn(&Path, &Path) -> _| {
        let socket = opts.workdir.join(format!("{tag}.sock"));
        served.push(super::Share {
            args: args(&socket, dir),
            socket: socket.clone(),
            dir: dir.to_owned(),
        });
        shares.push((tag, socket));
    };
    share(qemu::MODULES_TAG, &modules, qemu::virtiofsd_args);
    share(RESULTS_TAG, &results, qemu::virtiofsd_rootfs_args);
    let cwd_args = if opts.writable {
        qemu::virtiofsd_rootfs_args
    } else {
        qemu::virtiofsd_args
    };
    share(CWD_TAG, &opts.cwd, cwd_args);
    match &opts.root {
        Root::Initramfs => {}
        Root::Dir(dir) => share(qemu::ROOTFS_TAG, dir, qemu::virtiofsd_rootfs_args),
        Root::Host => share(qemu::ROOTFS_TAG, Path::new("/"), qemu::virtiofsd_args),
    }
    let daemons = super::serve_all(&virtiofsd, &served, reporter)?;
    let mut append = vec!["quiet".to_owned()];
    if opts.gdb.is_some() {
        // Symbols at the addresses vmlinux says.
        append.push("nokaslr".to_owned());
    }
    append.extend(opts.append.iter().cloned());
    let spec = qemu::GuestSpec {
        arch: m.arch,
        kernel: image,
        initrd,
        shares,
        socket_fds: Vec::new(),
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        accel,
        append,
    };
    if let Some(port) = opts.gdb {
        reporter.event(&Event::Info {
            step: if shell { "shell" } else { "run" },
            message: &gdb_hint(m, port),
        });
    }
    let (qemu, handed) = super::sandbox::qemu_command(&qemu_bin, &spec, |mut args| {
        if let Some(port) = opts.gdb {
            args.extend([
                "-gdb".into(),
                format!("tcp:127.0.0.1:{port}").into(),
                "-S".into(),
            ]);
        }
        if shell { qemu::on_terminal(args) } else { args }
    })?;
    reporter.event(&Event::Command {
        step: if shell { "shell" } else { "run" },
        command: &qemu.display(),
    });
    Ok(Prepared {
        daemons,
        qemu,
        handed,
        results,
        accel,
        start,
    })
}

/// What else reads a run's console: a test runner's KTAP reader, with deadlines of its own.
pub trait Watch {
    /// A console line, `at` after the guest started.
    fn line(&mut self, line: &str, at: Duration);
    /// Asked between lines: a reason to stop the guest now (the run then ends as timed
    /// out), or `None`.
    fn stop(&mut self, at: Duration) -> Option<String> {
        let _ = at;
        None
    }
}

/// Nobody else reads the console.
struct Unwatched;

impl Watch for Unwatched {
    fn line(&mut self, _line: &str, _at: Duration) {}
}

/// Boots the manifest's kernel, runs the command, streams its output to `out` and `err`.
pub fn run(
    m: &Manifest,
    opts: &RunOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    reporter: &dyn Reporter,
) -> Result<RunOutcome, Error> {
    run_watched(m, opts, out, err, &mut Unwatched, reporter)
}

/// [`run`], with every console line also given to `watch`, which may stop the guest.
pub fn run_watched(
    m: &Manifest,
    opts: &RunOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    watch: &mut dyn Watch,
    reporter: &dyn Reporter,
) -> Result<RunOutcome, Error> {
    const STEP: &str = "run";
    let mut guest = prepare(m, opts, false, reporter)?;
    let (results, accel, start) = (guest.results.clone(), guest.accel, guest.start);
    let mut vm = guest.qemu.spawn_background()?;
    guest.handed.clear();
    let mut console = RunConsole::default();
    let mut follow = [
        Follow {
            path: results.join("stdout"),
            offset: 0,
            to: out,
        },
        Follow {
            path: results.join("stderr"),
            offset: 0,
            to: err,
        },
    ];
    // Waiting for gdb (and a person stepping) is no hang.
    let deadline = start
        + if opts.gdb.is_some() {
            Duration::from_secs(u64::from(u32::MAX))
        } else {
            opts.timeout
        };
    let mut timed_out = None;
    let mut status = None;
    loop {
        for f in &mut follow {
            f.drain()?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = Some(opts.timeout);
            break;
        }
        if watch.stop(start.elapsed()).is_some() {
            timed_out = Some(start.elapsed());
            break;
        }
        match vm.next_line(left.min(Duration::from_millis(50))) {
            Ok(line) => {
                reporter.event(&Event::Output {
                    step: STEP,
                    line: &line,
                });
                watch.line(&line, start.elapsed());
                match console.feed(&line) {
                    Feed::More => {}
                    Feed::Exited(s) => {
                        status = Some(s);
                        break;
                    }
                    Feed::Failed => break,
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // With a status, /init has synced the shares before printing it: what the guest does
    // next (its reboot) changes nothing on the host, so QEMU is stopped now, not awaited.
    // The status file is the command's own word; the console line only its echo.
    let status = guest.finish(Some(&mut vm)).or(status);
    for f in &mut follow {
        f.drain()?;
    }
    reporter.event(&Event::Info {
        step: STEP,
        message: &format!(
            "{} under {} in {:.1} s",
            m.uts_release,
            if accel == Accel::Kvm { "KVM" } else { "TCG" },
            start.elapsed().as_secs_f64()
        ),
    });
    match status {
        Some(status) => {
            for n in &console.notes {
                reporter.event(&Event::Warn {
                    step: STEP,
                    message: n,
                });
            }
            for o in &console.oopses {
                reporter.event(&Event::Warn {
                    step: STEP,
                    message: &format!("the guest kernel printed: {o}"),
                });
            }
            Ok(RunOutcome {
                status,
                oopses: console.oopses,
            })
        }
        None => Err(console.failure(timed_out).into()),
    }
}

/// The terminal's settings before `kforge shell` started QEMU (which makes it raw), for
/// every way out: the end of the shell, an error, or the signal handler.
static SAVED_TERMINAL: std::sync::Mutex<Option<libc::termios>> = std::sync::Mutex::new(None);

/// Puts the terminal back as `kforge shell` found it (a no-op when it changed nothing).
pub fn restore_terminal() {
    if let Ok(saved) = SAVED_TERMINAL.lock()
        && let Some(t) = saved.as_ref()
    {
        // SAFETY: tcsetattr(2) on stdin with a termios tcgetattr filled in.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t);
        }
    }
}

/// Restores the terminal when dropped.
struct TerminalGuard;

impl TerminalGuard {
    fn save() -> Self {
        // SAFETY: an all-zero termios is a valid value for tcgetattr(2) to fill.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: isatty/tcgetattr on stdin, writing only into `t`.
        let ok = unsafe {
            libc::isatty(libc::STDIN_FILENO) == 1
                && libc::tcgetattr(libc::STDIN_FILENO, &raw mut t) == 0
        };
        if ok && let Ok(mut saved) = SAVED_TERMINAL.lock() {
            *saved = Some(t);
        }
        Self
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
        if let Ok(mut saved) = SAVED_TERMINAL.lock() {
            *saved = None;
        }
    }
}

/// `kforge shell`: boots the kernel with an interactive shell on this terminal; the shell's
/// exit status. Ctrl-A x leaves at once (QEMU's console escape); the terminal is restored on
/// every way out.
pub fn shell(m: &Manifest, opts: &RunOptions, reporter: &dyn Reporter) -> Result<i32, Error> {
    let mut guest = prepare(m, opts, true, reporter)?;
    let ended = {
        let _terminal = TerminalGuard::save();
        guest.qemu.run_on_terminal()
    };
    let status = guest.finish(None);
    ended?;
    status.ok_or_else(|| {
        GuestError::Died {
            why: "the guest stopped before the shell ended (Ctrl-A x, a panic or a reboot)".into(),
            console_tail: Vec::new(),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(c: &mut RunConsole, text: &str) -> Feed {
        for line in text.lines() {
            let f = c.feed(line);
            if f != Feed::More {
                return f;
            }
        }
        Feed::More
    }

    #[test]
    fn the_command_status_ends_the_console() {
        let mut c = RunConsole::default();
        let f = feed_all(
            &mut c,
            "[    0.5] virtiofs ok\r\nKFORGE-RUN-START\r\n[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1\r\nKFORGE-RUN-EXIT 7\r\nlater\n",
        );
        assert_eq!(f, Feed::Exited(7));
        assert!(c.started);
        assert_eq!(c.oopses, vec!["WARNING: CPU: 0 PID: 1 at x.c:1"]);
    }

    #[test]
    fn a_panic_or_a_failed_share_fails_with_its_text() {
        let mut c = RunConsole::default();
        let f = feed_all(
            &mut c,
            "[ 0.9] Kernel panic - not syncing: No working init found.\r\n",
        );
        assert_eq!(f, Feed::Failed);
        let e = c.failure(None);
        assert!(
            e.to_string()
                .starts_with("the guest kernel panicked: Kernel panic - not syncing: No working"),
            "{e}"
        );
        let mut c = RunConsole::default();
        assert_eq!(
            c.feed("KFORGE-RUN-FAILED the root share did not mount"),
            Feed::Failed
        );
        assert!(
            matches!(c.failure(None), GuestError::Died { why, .. } if why == "the root share did not mount")
        );
        // Garbage and a hang: the deadline's error, with what was seen.
        let mut c = RunConsole::default();
        assert_eq!(
            feed_all(&mut c, "\u{1b}[0m\u{fffd}KFORGE-RUN-EXIT x\n"),
            Feed::More
        );
        let e = c.failure(Some(Duration::from_secs(3)));
        assert!(
            matches!(e, GuestError::TimedOut { started: false, .. }),
            "{e}"
        );
    }

    #[test]
    fn a_script_on_stdin_is_read_whole_or_refused() {
        let script = read_script(&mut "echo a\nexit 4\n".as_bytes()).unwrap();
        assert_eq!(
            shell_script_command(script),
            ["/bin/sh", "-c", "echo a\nexit 4\n", "kforge-shell"]
        );
        let big = vec![b'#'; MAX_SCRIPT + 1];
        let e = read_script(&mut big.as_slice()).unwrap_err().to_string();
        assert!(e.contains("is over 64 KiB"), "{e}");
        assert!(read_script(&mut vec![b'#'; MAX_SCRIPT].as_slice()).is_ok());
        let e = read_script(&mut b"echo \0".as_slice())
            .unwrap_err()
            .to_string();
        assert!(e.contains("NUL byte"), "{e}");
        let e = read_script(&mut b"echo \xff".as_slice())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn the_command_is_argv_quoted_and_runs_in_the_shared_directory() {
        let cmd = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "echo 'a b'; exit 7".to_owned(),
        ];
        let s = init_script(
            Some(&cmd),
            Path::new("/home/dev/linux tree"),
            &Root::Initramfs,
        );
        assert!(
            s.contains(r#"(cd "$cwd" && exec sh -c 'echo '\''a b'\''; exit 7')"#),
            "{s}"
        );
        assert!(s.contains("cwd='/home/dev/linux tree'"), "{s}");
        assert!(s.contains("mount -t virtiofs cwd \"$root$cwd\""));
        assert!(
            s.contains("root=\n"),
            "no root share: the command runs in the initramfs"
        );
        let host = init_script(Some(&cmd), Path::new("/src"), &Root::Host);
        assert!(
            host.contains("mount -t virtiofs -o ro rootfs /newroot"),
            "{host}"
        );
        assert!(host.contains("mount -t tmpfs kforge \"/newroot$d\""));
        let dir = init_script(
            Some(&cmd),
            Path::new("/src"),
            &Root::Dir("/srv/root".into()),
        );
        assert!(dir.contains("mount -t virtiofs rootfs /newroot"));
        assert!(!dir.contains("/var/tmp"));
        let shell = init_script(None, Path::new("/src"), &Root::Initramfs);
        assert!(shell.contains("exec setsid cttyhack /bin/sh -i"), "{shell}");
        assert!(!shell.contains("/kforge/results/stdout"));
    }
}
