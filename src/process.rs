//! The one wrapper through which kforge runs every external program.
//!
//! It owns how a child is started (argv only, a scrubbed environment, stdin closed, its own
//! process group, killed when kforge dies), how its output is streamed and kept, and how a
//! failure is reported. It must not know what the programs mean: callers do.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;

/// Lines of output kept for an error report.
const TAIL_LINES: usize = 40;

/// Environment variables passed through to children; everything else is dropped, so a
/// stray `ARCH`, `LLVM`, `CC`, `MAKEFLAGS` or `GIT_DIR` in the user's shell cannot change
/// a build behind the build identity's back.
const PASS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_NOSYSTEM",
    "SOURCE_DATE_EPOCH",
];

/// Process groups of running children, killed on Ctrl-C or termination.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Children that share kforge's process group to use the terminal (`kforge shell`'s QEMU):
/// killed by pid, never by group.
static ON_TERMINAL: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kills every registered child process group (used by the signal handler).
pub fn kill_all_children() {
    if let Ok(pids) = ON_TERMINAL.lock() {
        for &pid in pids.iter() {
            // SAFETY: kill(2) of our own child; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    if let Ok(groups) = CHILDREN.lock() {
        for &pgid in groups.iter() {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
        }
    }
}

/// Runs a user's program (a bisect's check script) as a child kforge stops with itself: its
/// environment is the user's (unlike [`Cmd`]'s), stdin closed, its stdout on kforge's
/// stderr (kforge's stdout carries the report). Its exit status.
pub fn run_user_program(c: &mut Command) -> Result<ExitStatus, RunError> {
    let command = c.get_program().display().to_string();
    c.stdin(Stdio::null())
        .stdout(std::io::stderr())
        .process_group(0);
    let mut child = c.spawn().map_err(|source| RunError::Spawn {
        command: command.clone(),
        source,
    })?;
    let _guard = ChildGuard::register(child.id());
    child
        .wait()
        .map_err(|source| RunError::Spawn { command, source })
}

/// A piped child's stdout and stderr, to be read on threads of their own.
fn outputs(child: &mut std::process::Child) -> impl Iterator<Item = Box<dyn Read + Send>> {
    let out = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    out.into_iter().chain(err)
}

/// Waits for a child spawned in a process group of its own (stdout piped, stdin closed),
/// stopping it with kforge: its status and everything it printed on stdout.
pub fn wait_capturing(mut child: std::process::Child) -> std::io::Result<(ExitStatus, Vec<u8>)> {
    let _guard = ChildGuard::register(child.id());
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut out)?;
    }
    Ok((child.wait()?, out))
}

/// A failed command: what ran, how it ended, and the end of what it printed.
#[derive(Debug, thiserror::Error)]
pub struct ProcessError {
    pub command: String,
    pub status: String,
    pub tail: Vec<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed: {}", self.command, self.status)?;
        if !self.tail.is_empty() {
            write!(f, "\n--- last {} lines of output ---", self.tail.len())?;
            for line in &self.tail {
                write!(f, "\n{line}")?;
            }
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// Errors from starting a program at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("`{program}` was not found in PATH: install it (apt-get install {package})")]
    NotFound { program: String, package: String },
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Failed(#[from] ProcessError),
}

/// The Debian package that provides a program, for "not found" messages.
fn package_of(program: &str) -> &str {
    match program {
        "gcc" | "cc" => "gcc",
        "clang" => "clang",
        "ld.lld" => "lld",
        "ld" => "binutils",
        "llvm-ar" | "llvm-nm" | "llvm-objcopy" => "llvm",
        "tar" => "tar",
        "xz" => "xz-utils",
        "flex" => "flex",
        "bison" => "bison",
        "bc" => "bc",
        "depmod" => "kmod",
        "aarch64-linux-gnu-gcc" | "aarch64-linux-gnu-ld" => "gcc-aarch64-linux-gnu",
        "riscv64-linux-gnu-gcc" | "riscv64-linux-gnu-ld" => "gcc-riscv64-linux-gnu",
        "x86_64-linux-gnu-gcc" | "x86_64-linux-gnu-ld" => "gcc-x86-64-linux-gnu",
        "qemu-system-x86_64" => "qemu-system-x86",
        "qemu-system-aarch64" => "qemu-system-arm",
        "qemu-system-riscv64" => "qemu-system-misc",
        other => other,
    }
}

/// Finds `program` in PATH (or accepts a path), turning absence into an install hint.
pub fn find_program(program: &str) -> Result<PathBuf, RunError> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(RunError::NotFound {
                program: program.to_owned(),
                package: package_of(program).to_owned(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(RunError::NotFound {
        program: program.to_owned(),
        package: package_of(program).to_owned(),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Quotes one word for display the way a POSIX shell would read it back.
pub fn shell_quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A command to run: built as argv, never through a shell.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    hints: fn(&[String]) -> Option<String>,
    user: Option<RunAs>,
    keep_fds: Vec<i32>,
}

/// Who a program runs as when kforge is root and hands it to an unprivileged user (a
/// guest's QEMU): the user, its group, and supplementary groups (`kvm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

fn no_hint(_: &[String]) -> Option<String> {
    None
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            hints: no_hint,
            user: None,
            keep_fds: Vec::new(),
        }
    }

    /// Runs the program as `user` (set in the child before it starts, groups first).
    #[must_use]
    pub fn run_as(mut self, user: Option<RunAs>) -> Self {
        self.user = user;
        self
    }

    /// Lets the program inherit these open files (kforge's are close-on-exec): what it
    /// cannot open itself, handed over (`-chardev socket,fd=N`, `/proc/self/fd/N`). The
    /// caller keeps them open until the program has started.
    #[must_use]
    pub fn keep_fds(mut self, fds: impl IntoIterator<Item = i32>) -> Self {
        self.keep_fds.extend(fds);
        self
    }

    #[must_use]
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    #[must_use]
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// A function that turns the tail of a failed run's output into a `hint:` line.
    #[must_use]
    pub fn hints(mut self, f: fn(&[String]) -> Option<String>) -> Self {
        self.hints = f;
        self
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The command line as a shell would show it (for logs and errors).
    pub fn display(&self) -> String {
        let mut out = String::new();
        if let Some(dir) = &self.cwd {
            out.push_str("(cd ");
            out.push_str(&shell_quote(dir.as_os_str()));
            out.push_str(" && ");
        }
        out.push_str(&shell_quote(&self.program));
        for a in &self.args {
            out.push(' ');
            out.push_str(&shell_quote(a));
        }
        if self.cwd.is_some() {
            out.push(')');
        }
        out
    }

    fn command(&self) -> Result<Command, RunError> {
        let program = find_program(&self.program.to_string_lossy())?;
        let mut c = Command::new(program);
        c.args(&self.args);
        c.env_clear();
        for k in PASS_ENV {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.env("LC_ALL", "C");
        c.env("GIT_TERMINAL_PROMPT", "0");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        c.stdin(Stdio::null());
        c.process_group(0);
        let user = self.user.clone();
        let keep = self.keep_fds.clone();
        // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid, fcntl, prctl) on
        // values moved in before the fork; no allocation.
        unsafe {
            c.pre_exec(move || {
                if let Some(u) = &user
                    && (libc::setgroups(u.groups.len(), u.groups.as_ptr()) != 0
                        || libc::setgid(u.gid) != 0
                        || libc::setuid(u.uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                for fd in &keep {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // After the change of user, which clears it: the child gets SIGTERM (make
                // then stops its jobs) if kforge dies.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        Ok(c)
    }

    /// The command started with stdout and stderr piped.
    fn spawn_piped(&self) -> Result<std::process::Child, RunError> {
        let mut c = self.command()?;
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().map_err(|source| self.spawn_error(source))
    }

    fn spawn_error(&self, source: std::io::Error) -> RunError {
        RunError::Spawn {
            command: self.display(),
            source,
        }
    }

    fn status_error(&self, status: ExitStatus, tail: Vec<String>) -> RunError {
        let hint = (self.hints)(&tail);
        RunError::Failed(ProcessError {
            command: self.display(),
            status: describe_status(status),
            tail,
            hint,
        })
    }

    /// Runs to completion, capturing stdout; fails on a non-zero exit with stderr's tail.
    pub fn output(&self) -> Result<String, RunError> {
        let child = self.spawn_piped()?;
        let _guard = ChildGuard::register(child.id());
        let out = child
            .wait_with_output()
            .map_err(|source| self.spawn_error(source))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
            if text.trim().is_empty() {
                text = String::from_utf8_lossy(&out.stdout).into_owned();
            }
            Err(self.status_error(out.status, tail_of(&text)))
        }
    }

    /// Runs with the terminal: stdin, stdout and stderr inherited, in kforge's own process
    /// group (a child in a group of its own could not read the terminal).
    pub fn run_on_terminal(&self) -> Result<ExitStatus, RunError> {
        let spawn_error = |source| RunError::Spawn {
            command: self.display(),
            source,
        };
        let mut c = self.command()?;
        c.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: getpgrp(2) cannot fail and touches no memory.
        c.process_group(unsafe { libc::getpgrp() });
        let mut child = c.spawn().map_err(spawn_error)?;
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        if let Ok(mut pids) = ON_TERMINAL.lock() {
            pids.push(pid);
        }
        let status = child.wait().map_err(spawn_error);
        if let Ok(mut pids) = ON_TERMINAL.lock() {
            pids.retain(|&p| p != pid);
        }
        status
    }

    /// Runs to completion and reports only whether it exited 0 (for probes like
    /// `git rev-parse --verify --quiet`); a program that cannot start is still an error.
    pub fn succeeds(&self) -> Result<bool, RunError> {
        match self.output() {
            Ok(_) => Ok(true),
            Err(RunError::Failed(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs to completion, handing every stdout/stderr line to `on_line` as it comes and
    /// keeping the last lines for the error report.
    pub fn stream(&self, on_line: &mut dyn FnMut(&str)) -> Result<(), RunError> {
        let mut child = self.spawn_piped()?;
        let guard = ChildGuard::register(child.id());
        let (tx, rx) = mpsc::channel::<String>();
        let readers: Vec<_> = outputs(&mut child)
            .map(|r| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(r);
                    let mut buf = Vec::new();
                    while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        if tx.send(line).is_err() {
                            break;
                        }
                        buf.clear();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        for line in rx {
            on_line(&line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(|source| self.spawn_error(source))?;
        guard.disarm();
        if status.success() {
            Ok(())
        } else {
            Err(self.status_error(status, tail.into_iter().collect()))
        }
    }
}

/// How long an unfinished line waits for its newline before it is handed on as it is.
const PARTIAL_LINE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A long-running child (QEMU, virtiofsd): its stdout and stderr lines arrive on a channel,
/// and its whole process group is killed when the handle is dropped, whatever the reason
/// (success, error, timeout, panic).
pub struct Background {
    child: std::process::Child,
    pgid: i32,
    lines: mpsc::Receiver<String>,
    pub command: String,
}

impl Background {
    /// The next output line, waiting at most `timeout`; `Err` when none came in time or the
    /// child closed its output.
    pub fn next_line(
        &self,
        timeout: std::time::Duration,
    ) -> Result<String, mpsc::RecvTimeoutError> {
        self.lines.recv_timeout(timeout)
    }

    /// The exit status, if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGKILL to the process group without waiting for it.
    fn signal(&self) {
        // SAFETY: signals the process group of our own child.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
    }

    /// Kills the process group, reaps the child and waits (at most 5 s) until no live
    /// process of the group is left: a namespaced virtiofsd's sandboxed worker is its
    /// grandchild, reaped by init, and may still be exiting when its parent is gone.
    pub fn kill(&mut self) {
        self.signal();
        let _ = self.child.wait();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while group_alive(self.pgid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Ok(mut groups) = CHILDREN.lock() {
            groups.retain(|&p| p != self.pgid);
        }
    }
}

/// Kills several children at once: every group is signalled before any is waited for, so
/// their exits overlap (a guest's QEMU and its virtiofsd daemons).
pub fn kill_together<'a>(all: impl IntoIterator<Item = &'a mut Background>) {
    let mut all: Vec<&mut Background> = all.into_iter().collect();
    for b in &all {
        b.signal();
    }
    for b in &mut all {
        b.kill();
    }
}

/// Whether a process of group `pgid` is still alive (not yet a zombie). procfs is the only
/// way to see a group's members: kill(2) with signal 0 also succeeds for zombies, which
/// nobody here may reap.
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let is_pid = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
                // After the command, in parentheses and possibly with spaces: state ppid pgrp.
                let Some((_, rest)) = stat.rsplit_once(") ") else {
                    return false;
                };
                let mut f = rest.split(' ');
                let state = f.next();
                let pgrp = f.nth(1).and_then(|g| g.parse::<i32>().ok());
                pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
            })
    })
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Cmd {
    /// Starts the command in the background (see [`Background`]).
    pub fn spawn_background(&self) -> Result<Background, RunError> {
        let mut child = self.spawn_piped()?;
        let pgid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        if let Ok(mut groups) = CHILDREN.lock() {
            groups.push(pgid);
        }
        let (tx, rx) = mpsc::channel::<String>();
        for r in outputs(&mut child) {
            let tx = tx.clone();
            // Raw chunks go to an assembler that cuts lines, and also hands on a partial line
            // that stays unfinished for a second: a login prompt never ends in a newline.
            let (ctx, crx) = mpsc::channel::<Vec<u8>>();
            std::thread::spawn(move || {
                let mut r = r;
                let mut chunk = vec![0u8; 8192];
                loop {
                    match r.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if ctx.send(chunk[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            std::thread::spawn(move || {
                let mut pending: Vec<u8> = Vec::new();
                let emit = |bytes: &[u8]| {
                    tx.send(String::from_utf8_lossy(bytes).trim_end().to_owned())
                        .is_ok()
                };
                loop {
                    match crx.recv_timeout(PARTIAL_LINE_AFTER) {
                        Ok(bytes) => {
                            pending.extend_from_slice(&bytes);
                            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = pending.drain(..=i).collect();
                                if !emit(&line) {
                                    return;
                                }
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if !pending.is_empty() && !emit(&std::mem::take(&mut pending)) {
                                return;
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            if !pending.is_empty() {
                                emit(&pending);
                            }
                            return;
                        }
                    }
                }
            });
        }
        Ok(Background {
            child,
            pgid,
            lines: rx,
            command: self.display(),
        })
    }
}

/// Keeps a child's process group registered for the signal handler while it runs, and
/// kills the group if the run is abandoned early.
struct ChildGuard {
    pgid: i32,
    armed: std::cell::Cell<bool>,
}

impl ChildGuard {
    fn register(child_id: u32) -> Self {
        let pgid = i32::try_from(child_id).unwrap_or(i32::MAX);
        if let Ok(mut groups) = CHILDREN.lock() {
            groups.push(pgid);
        }
        Self {
            pgid,
            armed: std::cell::Cell::new(true),
        }
    }
    fn disarm(&self) {
        self.armed.set(false);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(mut g) = CHILDREN.lock() {
            g.retain(|&p| p != self.pgid);
        }
        if self.armed.get() && std::thread::panicking() {
            // SAFETY: signals our own child's process group.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
    }
}

fn tail_of(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].iter().map(|s| (*s).to_owned()).collect()
}

/// "exit status 2" or "killed by signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGINT => "SIGINT",
            libc::SIGKILL => "SIGKILL",
            libc::SIGTERM => "SIGTERM",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            libc::SIGHUP => "SIGHUP",
            libc::SIGPIPE => "SIGPIPE",
            _ => "signal",
        };
        format!("killed by signal {sig} ({name})")
    } else {
        "unknown status".to_owned()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn background_lines_and_an_unfinished_prompt_arrive() {
        let bg = Cmd::new("sh")
            .args(["-c", "printf 'one\\ntwo\\nlogin: '; sleep 5"])
            .spawn_background()
            .unwrap();
        let t = std::time::Duration::from_secs(4);
        assert_eq!(bg.next_line(t).unwrap(), "one");
        assert_eq!(bg.next_line(t).unwrap(), "two");
        assert_eq!(bg.next_line(t).unwrap(), "login:");
    }

    use super::*;

    #[test]
    fn killing_a_background_child_leaves_none_of_its_group_alive() {
        // A grandchild in the group, whose parent does not wait for it: as a namespaced
        // virtiofsd's worker, it is nobody's child of ours once its parent is gone.
        let mut bg = Cmd::new("sh")
            .args(["-c", "sh -c 'echo $$; exec sleep 60' & sleep 60"])
            .spawn_background()
            .unwrap();
        let grandchild: i32 = bg
            .next_line(std::time::Duration::from_secs(5))
            .unwrap()
            .parse()
            .unwrap();
        assert!(group_alive(bg.pgid));
        bg.kill();
        assert!(!group_alive(bg.pgid));
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
        assert!(
            stat.as_deref().map_or(true, |s| s.contains(") Z ")),
            "{stat:?}"
        );
    }

    #[test]
    fn quoting_round_trips_through_a_shell_reading() {
        assert_eq!(shell_quote(OsStr::new("W=1")), "W=1");
        assert_eq!(shell_quote(OsStr::new("CC=ccache gcc")), "'CC=ccache gcc'");
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(shell_quote(OsStr::new("")), "''");
        assert_eq!(shell_quote(OsStr::new("$(rm -rf /)")), "'$(rm -rf /)'");
    }

    #[test]
    fn missing_program_names_its_package() {
        let e = find_program("ld.lld-does-not-exist").unwrap_err();
        assert!(e.to_string().contains("apt-get install"), "{e}");
    }

    #[test]
    fn failure_carries_status_and_tail() {
        let e = Cmd::new("sh")
            .args(["-c", "echo one; echo two >&2; exit 3"])
            .stream(&mut |_| {})
            .unwrap_err();
        let RunError::Failed(p) = e else {
            panic!("not a process failure")
        };
        assert_eq!(p.status, "exit status 3");
        assert_eq!(p.tail.len(), 2);
        assert!(p.tail.contains(&"two".to_owned()));
    }

    #[test]
    fn environment_is_scrubbed() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("MAKEFLAGS", "-j99") };
        let out = Cmd::new("sh")
            .args(["-c", "echo \"[$MAKEFLAGS][$LC_ALL]\""])
            .output()
            .unwrap();
        assert_eq!(out.trim(), "[][C]");
    }
}
