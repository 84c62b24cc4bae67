//! What a guest's processes may do, the way libvirt runs QEMU: QEMU under its seccomp
//! sandbox and, when kforge is root, as an unprivileged user that is handed what it needs as
//! open descriptors (the kernel, the initramfs, a connected socket per share) instead of
//! reaching into kforge's directories; virtiofsd in its own namespace sandbox. A guest runs a
//! kernel somebody just patched: it must not reach the host beyond what is shared.
//!
//! The systemd units get the same from their own settings (see [`super::units`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::qemu::GuestSpec;
use crate::error::Error;
use crate::process::{Cmd, RunAs};

/// The system user guests run as (made by `scripts/install-deps.sh`); `nobody` where it is
/// missing.
pub const GUEST_USER: &str = "kforge-guest";

/// QEMU's seccomp sandbox: no obsolete system calls, no change of user, no new processes, no
/// change of scheduling or resource limits.
pub const QEMU_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// A user's uid and primary gid, from the user database.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r(3) writes into `pw` and `buf`, both ours and large enough; `out`
    // is null or points at `pw`.
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &raw mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

/// A group's gid, from the group database.
pub fn lookup_group(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as for getpwnam_r above.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &raw mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// A guest's working directory (its sockets, initramfs, results), for kforge alone: QEMU is
/// handed what it needs, nobody else reads the guest's output.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::create_dir_all(dir)?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A defined guest's directory and console log: the directory for kforge and the guest
/// user's group (its QEMU unit reads the initramfs and connects to the sockets there), the
/// console log for root (systemd appends to it).
pub fn guest_dir(dir: &Path, console_log: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::create_dir_all(dir)?;
    let group = if is_root() {
        lookup_group(GUEST_USER)
    } else {
        None
    };
    if let Some(gid) = group {
        std::os::unix::fs::chown(dir, None, Some(gid))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    fs_err::set_permissions(
        dir,
        std::fs::Permissions::from_mode(if group.is_some() { 0o750 } else { 0o700 }),
    )?;
    fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(console_log)?;
    fs_err::set_permissions(console_log, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The guest user the units run QEMU as must exist (systemd refuses a unit whose user does
/// not).
pub fn guest_user_exists() -> Result<(), crate::error::GuestError> {
    if lookup_user(GUEST_USER).is_some() {
        Ok(())
    } else {
        Err(crate::error::GuestError::Missing(
            "the system user kforge-guest",
            "scripts/install-deps.sh adds it: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin kforge-guest",
        ))
    }
}

/// The name of `/dev/kvm`'s group, when it has one that may use it.
pub fn kvm_group() -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata("/dev/kvm").ok()?;
    if m.mode() & 0o060 != 0o060 || m.gid() == 0 {
        return None;
    }
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrgid_r(3) writes into `gr` and `buf`, both ours and large enough.
    let rc = unsafe {
        libc::getgrgid_r(
            m.gid(),
            &raw mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut out,
        )
    };
    if rc != 0 || out.is_null() {
        return None;
    }
    // SAFETY: gr_name points into `buf`, NUL-terminated by getgrgid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(gr.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Who QEMU runs as: `kforge-guest` (else `nobody`) when kforge is root, with the group of
/// `/dev/kvm` when that group may use it; `None` (QEMU runs as kforge's own user) otherwise.
pub fn guest_user() -> Option<RunAs> {
    if !is_root() {
        return None;
    }
    let (uid, gid) = lookup_user(GUEST_USER).or_else(|| lookup_user("nobody"))?;
    let mut groups = vec![gid];
    if let Ok(m) = std::fs::metadata("/dev/kvm") {
        use std::os::unix::fs::MetadataExt as _;
        if m.mode() & 0o060 == 0o060 && m.gid() != 0 {
            groups.push(m.gid());
        }
    }
    Some(RunAs { uid, gid, groups })
}

/// QEMU's sandbox arguments, when the binary has seccomp (Debian's does; kforge's minimal
/// build enables it); asked once per binary.
pub fn qemu_sandbox_args(qemu: &Path) -> Vec<OsString> {
    static KNOWN: Mutex<Option<HashMap<PathBuf, bool>>> = Mutex::new(None);
    let mut known = KNOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let has = *known
        .get_or_insert_with(HashMap::new)
        .entry(qemu.to_owned())
        .or_insert_with(|| {
            Cmd::new(qemu.as_os_str())
                .args(["-sandbox", "on", "-version"])
                .succeeds()
                .unwrap_or(false)
        });
    if has {
        vec!["-sandbox".into(), QEMU_SANDBOX.into()]
    } else {
        Vec::new()
    }
}

/// An open file that any user may open again through `/proc/self/fd/N` (which skips the
/// directories above it, not the file's own mode): the file itself when others may read it,
/// else a copy in an anonymous memory file (a boot image a umask of 077 installed).
fn readable_by_anyone(path: &Path) -> Result<OwnedFd, Error> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let file = fs_err::File::open(path)?;
    if file.metadata()?.permissions().mode() & 0o004 != 0 {
        return Ok(file.into_parts().0.into());
    }
    let name = std::ffi::CString::new("kforge-guest-file").expect("no NUL");
    // SAFETY: memfd_create(2) with a valid name; the result is checked and owned below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `fd` was just created and nobody else owns it.
    let mut copy = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    copy.write_all(&fs_err::read(path)?)?;
    Ok(copy.into())
}

/// A guest's QEMU, contained: its seccomp sandbox, and, when kforge is root, an unprivileged
/// user handed the kernel, the initramfs and each share's socket as descriptors (QEMU opens
/// `/proc/self/fd/N` and takes `-chardev socket,fd=N`). `finish` turns the arguments into the
/// final ones (a gdb stub, the console on a terminal). The descriptors must stay open until
/// Connects to a virtiofsd's socket. The socket's file can appear a moment before the
/// daemon listens on it (bind, then listen): a refused connection is tried again for a few
/// seconds before it is reported (a daemon that died leaves it refused).
fn connect_socket(socket: &Path) -> Result<std::os::unix::net::UnixStream, std::io::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("connecting to {}: {e}", socket.display()),
                ));
            }
        }
    }
}

/// QEMU has started: keep the returned ones until then.
pub fn qemu_command(
    qemu: &Path,
    spec: &GuestSpec,
    finish: impl FnOnce(Vec<OsString>) -> Vec<OsString>,
) -> Result<(Cmd, Vec<OwnedFd>), Error> {
    let user = guest_user();
    // The guest's directory (its initramfs's) names the process, for `ps` and for cleaning
    // up: with its files handed over, nothing else on its command line says whose it is.
    // (QEMU's option syntax: a comma is written twice)
    let dir = spec.initrd.parent().unwrap_or(Path::new("/"));
    let name = OsString::from(format!(
        "kforge-guest:{}",
        dir.to_string_lossy().replace(',', ",,")
    ));
    let mut spec = spec.clone();
    let mut fds: Vec<OwnedFd> = Vec::new();
    if user.is_some() {
        for path in [&mut spec.kernel, &mut spec.initrd] {
            let f = readable_by_anyone(path)?;
            *path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
            fds.push(f);
        }
        for (_, socket) in &spec.shares {
            let s = connect_socket(socket)?;
            spec.socket_fds.push(s.as_raw_fd());
            fds.push(s.into());
        }
    }
    let mut args = qemu_sandbox_args(qemu);
    args.extend(["-name".into(), name]);
    args.extend(finish(super::qemu::qemu_args(&spec)));
    let keep: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    Ok((
        Cmd::new(qemu.as_os_str())
            .args(args)
            .run_as(user)
            .keep_fds(keep),
        fds,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_are_looked_up() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_group("root"), Some(0));
        assert_eq!(lookup_user("no-such-user-kforge"), None);
        if is_root() {
            let u = guest_user().expect("kforge-guest or nobody");
            assert_ne!(u.uid, 0, "never root");
            assert_eq!(u.groups[0], u.gid);
        } else {
            assert_eq!(guest_user(), None);
        }
    }
}
