//! The guest layer: boot a built kernel in QEMU with its `/lib/modules` tree shared over
//! virtiofs, and check it (`uname -r` is the identity, a module loads from the share).
//!
//! It reads manifests and runs QEMU and virtiofsd; it never builds. Every process it starts
//! is killed with its process group when the check ends, also on timeout or Ctrl-C.

pub mod console;
pub mod initramfs;
pub mod qemu;
pub mod run;
pub mod sandbox;
pub mod units;
pub mod vm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::error::{Error, GuestError};
use crate::flow::{Event, Reporter};
use crate::kernel::manifest::Manifest;
use crate::process::{Cmd, find_program};
pub use qemu::Accel;

/// How to boot and what to check.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub accel: Accel,
    pub timeout: Duration,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The module that must load from the share.
    pub module: String,
    /// A command the guest runs before it reboots.
    pub command: Option<String>,
    /// Where the initramfs and sockets go.
    pub workdir: PathBuf,
    /// The QEMU binary (the system's `qemu-system-x86_64` by default).
    pub qemu: Option<PathBuf>,
    /// A root directory to boot from, shared over virtiofs (e.g. made with debootstrap).
    pub rootfs: Option<RootFs>,
}

/// A directory the guest boots as its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootFs {
    pub dir: PathBuf,
    /// What `switch_root` runs (`/sbin/init`: systemd on a distro).
    pub init: String,
    /// The console text that means the guest is up (a getty's `login:`).
    pub ready: String,
}

impl RootFs {
    /// Checks the directory and init before anything starts.
    pub fn check(&self) -> Result<(), GuestError> {
        initramfs::validate_init(&self.init).map_err(GuestError::Refused)?;
        if !self.dir.is_dir() {
            return Err(GuestError::Refused(format!(
                "the root directory {} does not exist",
                self.dir.display()
            )));
        }
        let init = self.dir.join(self.init.trim_start_matches('/'));
        if init.symlink_metadata().is_err() {
            return Err(GuestError::Refused(format!(
                "{} has no {} to start",
                self.dir.display(),
                self.init
            )));
        }
        if self.ready.trim().is_empty() {
            return Err(GuestError::Refused("--ready must not be empty".to_owned()));
        }
        Ok(())
    }
}

/// The check's result, printed as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootReport {
    pub passed: bool,
    pub expected_release: String,
    /// What `uname -r` printed in the guest.
    pub guest_release: Option<String>,
    pub modules_mounted: bool,
    pub module: String,
    pub module_loaded: bool,
    pub accel: Accel,
    pub seconds: f64,
    /// Why the check failed.
    pub failure: Option<String>,
    /// The last lines of the serial console.
    pub console_tail: Vec<String>,
    /// With a root directory: whether the guest mounted it, and saw the ready text on it.
    pub rootfs: Option<PathBuf>,
    pub rootfs_mounted: bool,
    pub ready_seen: bool,
}

/// virtiofsd: on PATH, where `cargo install` puts it, or where distributions do.
pub fn find_virtiofsd() -> Result<PathBuf, GuestError> {
    if let Ok(p) = find_program("virtiofsd") {
        return Ok(p);
    }
    let mut candidates: Vec<PathBuf> = vec![
        "/usr/libexec/virtiofsd".into(),
        "/usr/lib/qemu/virtiofsd".into(),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.insert(0, Path::new(&home).join(".cargo/bin/virtiofsd"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(GuestError::Missing(
            "virtiofsd",
            "cargo install virtiofsd; it needs libcap-ng-dev and libseccomp-dev",
        ))
}

/// The QEMU system emulator that boots `arch`'s guests: with `given` (a path, or what
/// `--qemu` resolved), its `qemu-system-<arch>` (a QEMU built for several targets installs
/// one per target side by side); else the arch's emulator on PATH, or the package to install.
pub fn qemu_for(arch: Arch, given: Option<&Path>) -> Result<PathBuf, Error> {
    let (program, _) = arch.qemu_system();
    let Some(given) = given else {
        return Ok(find_program(program)?);
    };
    let name = given.file_name().map(|n| n.to_string_lossy().into_owned());
    match name.as_deref() {
        Some(n) if n.starts_with("qemu-system-") && n != program => {
            let sibling = given.with_file_name(program);
            if sibling.is_file() {
                Ok(sibling)
            } else {
                Err(GuestError::Refused(format!(
                    "{} boots {} guests, not {arch}, and {} is not beside it (a kforge-built QEMU needs {} in its --target-list)",
                    given.display(),
                    n.trim_start_matches("qemu-system-"),
                    program,
                    arch.qemu_target()
                ))
                .into())
            }
        }
        _ => Ok(given.to_owned()),
    }
}

/// Fails before anything is built or touched when a guest of `arch` cannot boot here: its
/// QEMU, virtiofsd and a static busybox of that arch.
pub fn preflight(arch: Arch, given_qemu: Option<&Path>) -> Result<(), Error> {
    qemu_for(arch, given_qemu)?;
    find_virtiofsd()?;
    initramfs::find_static_busybox(arch)?;
    Ok(())
}

/// The name modprobe takes for a module file of modules.dep (`kernel/fs/nls/nls_utf8.ko.xz`:
/// `nls_utf8`): the file's name up to its first dot.
pub fn module_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|f| f.to_string_lossy())
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The modules a boot check loads when none is named, in order: `nls_utf8` (kforge's presets
/// build it; modprobe resolves its dependency `nls_base`), else `vsock_loopback` (what the
/// presets had before they dropped networking).
pub const DEFAULT_MODULES: [&str; 2] = ["nls_utf8", "vsock_loopback"];

/// The module a boot check of the modules tree `modules_dir` loads when none is named: the
/// first of [`DEFAULT_MODULES`] its `modules.dep` lists, else the first.
pub fn default_module(modules_dir: Option<&Path>) -> &'static str {
    let dep = modules_dir
        .and_then(|d| fs_err::read_to_string(d.join("modules.dep")).ok())
        .unwrap_or_default();
    let names: Vec<String> = dep
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(module_name)
        .collect();
    DEFAULT_MODULES
        .into_iter()
        .find(|m| names.iter().any(|n| n == m))
        .unwrap_or(DEFAULT_MODULES[0])
}

/// Checks a manifest before booting: the image exists and the modules tree is this
/// release's.
pub fn precheck(m: &Manifest) -> Result<(PathBuf, PathBuf), GuestError> {
    let image = m.bz_image.as_ref().map(PathBuf::from).ok_or_else(|| {
        GuestError::Refused(format!("the manifest of {} has no bzImage", m.uts_release))
    })?;
    if !image.is_file() {
        return Err(GuestError::Refused(format!(
            "the boot image {} is missing",
            image.display()
        )));
    }
    let modules = m.modules_dir.as_ref().map(PathBuf::from).ok_or_else(|| {
        GuestError::Refused(format!(
            "the manifest of {} has no modules tree (modules_install was off?)",
            m.uts_release
        ))
    })?;
    if !modules.join("modules.dep").is_file() {
        return Err(GuestError::Refused(format!(
            "the modules tree {} is missing (no modules.dep)",
            modules.display()
        )));
    }
    let release = modules
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if release != m.uts_release {
        return Err(GuestError::Refused(format!(
            "the modules tree {} belongs to release {release}, not {}",
            modules.display(),
            m.uts_release
        )));
    }
    Ok((image, modules))
}

/// One directory to share with a guest: virtiofsd's arguments, the socket it serves on, and
/// the directory (named in errors).
pub struct Share {
    pub args: Vec<std::ffi::OsString>,
    pub socket: PathBuf,
    pub dir: PathBuf,
}

/// Starts one virtiofsd per share, all at once, and waits until every one serves (its socket
/// exists); the one place that waits for virtiofsd, for checks and foreground guests alike.
/// Started together, the daemons' start-up times overlap instead of adding up. A virtiofsd
/// that exits first is reported with its status and output; the others are then stopped.
pub fn serve_all(
    virtiofsd: &Path,
    shares: &[Share],
    reporter: &dyn Reporter,
) -> Result<Vec<crate::process::Background>, Error> {
    let mut daemons = Vec::with_capacity(shares.len());
    for share in shares {
        let _ = fs_err::remove_file(&share.socket);
        let cmd = Cmd::new(virtiofsd.as_os_str()).args(share.args.iter().cloned());
        reporter.event(&Event::Command {
            step: "boot",
            command: &cmd.display(),
        });
        daemons.push(cmd.spawn_background()?);
    }
    let start = Instant::now();
    for (share, vfs) in shares.iter().zip(&mut daemons) {
        while !share.socket.exists() {
            if let Some(status) = vfs.try_wait() {
                let tail: Vec<String> =
                    std::iter::from_fn(|| vfs.next_line(Duration::from_millis(10)).ok()).collect();
                return Err(GuestError::VirtiofsdExited {
                    status: crate::process::describe_status(status),
                    dir: share.dir.clone(),
                    tail: tail.join("\n"),
                }
                .into());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(GuestError::VirtiofsdSilent(share.dir.clone()).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(daemons)
}

/// Boots the manifest's kernel and checks it.
pub fn boot_check(
    m: &Manifest,
    opts: &BootOptions,
    reporter: &dyn Reporter,
) -> Result<BootReport, Error> {
    const STEP: &str = "boot";
    let (image, modules) = precheck(m)?;
    let qemu = qemu_for(m.arch, opts.qemu.as_deref())?;
    let accel = qemu::accel_for(opts.accel, m.arch)?;
    let virtiofsd = find_virtiofsd()?;
    let busybox = initramfs::find_static_busybox(m.arch)?;
    sandbox::private_dir(&opts.workdir)?;
    let initrd = opts.workdir.join("initramfs.cpio");
    if let Some(r) = &opts.rootfs {
        r.check()?;
    }
    initramfs::write(
        &initrd,
        &busybox,
        &opts.module,
        opts.command.as_deref(),
        false,
        opts.rootfs.as_ref().map(|r| r.init.as_str()),
    )?;
    let socket = opts.workdir.join("modules.sock");

    let start = Instant::now();
    let rootfs_socket = opts.workdir.join("rootfs.sock");
    let mut shares = vec![Share {
        args: qemu::virtiofsd_args(&socket, &modules),
        socket: socket.clone(),
        dir: modules.clone(),
    }];
    if let Some(r) = &opts.rootfs {
        shares.push(Share {
            args: qemu::virtiofsd_rootfs_args(&rootfs_socket, &r.dir),
            socket: rootfs_socket.clone(),
            dir: r.dir.clone(),
        });
    }
    let mut daemons = serve_all(&virtiofsd, &shares, reporter)?;
    let spec = qemu::GuestSpec {
        arch: m.arch,
        kernel: image,
        initrd,
        shares: qemu::shares(socket, opts.rootfs.as_ref().map(|_| rootfs_socket.clone())),
        socket_fds: Vec::new(),
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        accel,
        append: vec!["quiet".into()],
    };
    let (qemu_cmd, handed) = sandbox::qemu_command(&qemu, &spec, |a| a)?;
    reporter.event(&Event::Command {
        step: STEP,
        command: &qemu_cmd.display(),
    });
    reporter.event(&Event::Info {
        step: STEP,
        message: &format!(
            "booting {} under {}",
            m.uts_release,
            if accel == Accel::Kvm { "KVM" } else { "TCG" }
        ),
    });
    let mut vm = qemu_cmd.spawn_background()?;
    drop(handed);
    let deadline = start + opts.timeout;
    let mut console = console::Console::new(console::Expect {
        release: m.uts_release.clone(),
        module: opts.module.clone(),
        ready: opts.rootfs.as_ref().map(|r| r.ready.clone()),
    });
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break console::End::TimedOut(opts.timeout);
        }
        match vm.next_line(left) {
            Ok(line) => {
                reporter.event(&Event::Output {
                    step: STEP,
                    line: &line,
                });
                match console.feed(&line) {
                    console::Feed::More => {}
                    console::Feed::Done | console::Feed::Failed => break console::End::Stopped,
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                break console::End::TimedOut(opts.timeout);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break console::End::Exited,
        }
    };
    // The verdict is whole once the console said so; what the guest does next (its reboot)
    // cannot change it, so QEMU is stopped now rather than waited for.
    crate::process::kill_together(std::iter::once(&mut vm).chain(&mut daemons));
    let failure = console.failure(end);
    let report = BootReport {
        passed: failure.is_none(),
        expected_release: m.uts_release.clone(),
        guest_release: console.guest_release.clone(),
        modules_mounted: console.modules_mounted,
        module: opts.module.clone(),
        module_loaded: console.module_loaded,
        accel,
        seconds: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        failure,
        console_tail: console.tail(),
        rootfs: opts.rootfs.as_ref().map(|r| r.dir.clone()),
        rootfs_mounted: console.rootfs_mounted,
        ready_seen: console.ready_seen,
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_module_is_one_the_kernel_has() {
        let dir = tempfile::tempdir().unwrap();
        let dep = dir.path().join("modules.dep");
        let module = || default_module(Some(dir.path()));
        assert_eq!(default_module(None), "nls_utf8");
        assert_eq!(module(), "nls_utf8", "no modules.dep");
        fs_err::write(&dep, "kernel/net/vmw_vsock/vsock_loopback.ko: kernel/net/vmw_vsock/vsock.ko\nkernel/net/vmw_vsock/vsock.ko:\n").unwrap();
        assert_eq!(module(), "vsock_loopback", "a kernel built before nls_utf8");
        fs_err::write(&dep, "kernel/fs/nls/nls_base.ko.xz:\nkernel/fs/nls/nls_utf8.ko.xz: kernel/fs/nls/nls_base.ko.xz\nkernel/net/vmw_vsock/vsock_loopback.ko:\n").unwrap();
        assert_eq!(module(), "nls_utf8", "compressed modules count");
        fs_err::write(&dep, "kernel/lib/crc-ccitt.ko:\n").unwrap();
        assert_eq!(
            module(),
            "nls_utf8",
            "none of them: the first, which the check then names"
        );
    }

    #[test]
    fn a_given_qemu_boots_another_arch_with_its_sibling_emulator() {
        let dir = tempfile::tempdir().unwrap();
        let x86 = dir.path().join("qemu-system-x86_64");
        std::fs::write(&x86, "").unwrap();
        // The arch's own binary, or any other file, is used as given.
        assert_eq!(qemu_for(Arch::X86_64, Some(&x86)).unwrap(), x86);
        let wrapper = dir.path().join("my-qemu");
        assert_eq!(qemu_for(Arch::Arm64, Some(&wrapper)).unwrap(), wrapper);
        // Another arch's emulator: its sibling, or a refusal naming the target to build.
        let e = qemu_for(Arch::Arm64, Some(&x86)).unwrap_err().to_string();
        assert!(e.contains("boots x86_64 guests, not arm64"), "{e}");
        assert!(e.contains("aarch64-softmmu"), "{e}");
        let arm = dir.path().join("qemu-system-aarch64");
        std::fs::write(&arm, "").unwrap();
        assert_eq!(qemu_for(Arch::Arm64, Some(&x86)).unwrap(), arm);
    }
}
