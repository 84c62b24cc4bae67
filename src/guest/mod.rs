//! The guest layer: boot a built kernel in QEMU with its `/lib/modules` tree shared over
//! virtiofs, and check it (`uname -r` is the identity, a module loads from the share).
//!
//! It reads manifests and runs QEMU and virtiofsd; it never builds. Every process it starts
//! is killed with its process group when the check ends, also on timeout or Ctrl-C.

pub mod initramfs;
pub mod qemu;
pub mod units;
pub mod vm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::flow::{Event, Reporter};
use crate::manifest::Manifest;
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
    pub fn check(&self) -> Result<(), Error> {
        initramfs::validate_init(&self.init).map_err(Error::Input)?;
        if !self.dir.is_dir() {
            return Err(Error::Input(format!(
                "the root directory {} does not exist",
                self.dir.display()
            )));
        }
        let init = self.dir.join(self.init.trim_start_matches('/'));
        if init.symlink_metadata().is_err() {
            return Err(Error::Input(format!(
                "{} has no {} to start",
                self.dir.display(),
                self.init
            )));
        }
        if self.ready.trim().is_empty() {
            return Err(Error::Input("--ready must not be empty".into()));
        }
        Ok(())
    }
}

/// The check's result, printed as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
pub fn find_virtiofsd() -> Result<PathBuf, Error> {
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
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::Input("virtiofsd was not found: install it (cargo install virtiofsd; it needs libcap-ng-dev and libseccomp-dev)".into())
    })
}

/// Checks a manifest before booting: the image exists and the modules tree is this
/// release's.
pub fn precheck(m: &Manifest) -> Result<(PathBuf, PathBuf), Error> {
    let image =
        m.bz_image.as_ref().map(PathBuf::from).ok_or_else(|| {
            Error::Input(format!("the manifest of {} has no bzImage", m.uts_release))
        })?;
    if !image.is_file() {
        return Err(Error::Input(format!(
            "the boot image {} is missing",
            image.display()
        )));
    }
    let modules = m.modules_dir.as_ref().map(PathBuf::from).ok_or_else(|| {
        Error::Input(format!(
            "the manifest of {} has no modules tree (modules_install was off?)",
            m.uts_release
        ))
    })?;
    if !modules.join("modules.dep").is_file() {
        return Err(Error::Input(format!(
            "the modules tree {} is missing (no modules.dep)",
            modules.display()
        )));
    }
    let release = modules
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if release != m.uts_release {
        return Err(Error::Input(format!(
            "the modules tree {} belongs to release {release}, not {}",
            modules.display(),
            m.uts_release
        )));
    }
    Ok((image, modules))
}

/// Starts virtiofsd serving `dir` and waits for its socket.
fn serve(
    virtiofsd: &Path,
    args: Vec<std::ffi::OsString>,
    socket: &Path,
    dir: &Path,
    reporter: &dyn Reporter,
) -> Result<crate::process::Background, Error> {
    let _ = fs_err::remove_file(socket);
    let cmd = Cmd::new(virtiofsd.as_os_str()).args(args);
    reporter.event(&Event::Command {
        step: "boot",
        command: &cmd.display(),
    });
    let start = Instant::now();
    let mut vfs = cmd.spawn_background()?;
    while !socket.exists() {
        if let Some(status) = vfs.try_wait() {
            let tail: Vec<String> =
                std::iter::from_fn(|| vfs.next_line(Duration::from_millis(10)).ok()).collect();
            return Err(Error::Build(format!(
                "virtiofsd exited ({}) before serving {}: {}",
                crate::process::describe_status(status),
                dir.display(),
                tail.join("\n")
            )));
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(Error::Build(
                "virtiofsd did not create its socket within 10 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(vfs)
}

/// Boots the manifest's kernel and checks it.
pub fn boot_check(
    m: &Manifest,
    opts: &BootOptions,
    reporter: &dyn Reporter,
) -> Result<BootReport, Error> {
    const STEP: &str = "boot";
    let (image, modules) = precheck(m)?;
    let qemu = match &opts.qemu {
        Some(q) => q.clone(),
        None => find_program("qemu-system-x86_64")?,
    };
    let virtiofsd = find_virtiofsd()?;
    let busybox = initramfs::find_static_busybox().map_err(Error::Input)?;
    fs_err::create_dir_all(&opts.workdir)?;
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
    let accel = qemu::probe_accel(opts.accel);

    let start = Instant::now();
    let mut vfs = serve(
        &virtiofsd,
        qemu::virtiofsd_args(&socket, &modules),
        &socket,
        &modules,
        reporter,
    )?;
    let rootfs_socket = opts.workdir.join("rootfs.sock");
    let mut root_vfs = match &opts.rootfs {
        Some(r) => Some(serve(
            &virtiofsd,
            qemu::virtiofsd_rootfs_args(&rootfs_socket, &r.dir),
            &rootfs_socket,
            &r.dir,
            reporter,
        )?),
        None => None,
    };
    let spec = qemu::GuestSpec {
        kernel: image,
        initrd,
        modules_socket: socket,
        rootfs_socket: opts.rootfs.as_ref().map(|_| rootfs_socket.clone()),
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        accel,
        append: vec!["quiet".into()],
    };
    let qemu_cmd = Cmd::new(qemu.as_os_str()).args(qemu::qemu_args(&spec));
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
    let deadline = start + opts.timeout;
    let mut console: Vec<String> = Vec::new();
    let mut report = BootReport {
        passed: false,
        expected_release: m.uts_release.clone(),
        guest_release: None,
        modules_mounted: false,
        module: opts.module.clone(),
        module_loaded: false,
        accel,
        seconds: 0.0,
        failure: None,
        console_tail: Vec::new(),
        rootfs: opts.rootfs.as_ref().map(|r| r.dir.clone()),
        rootfs_mounted: false,
        ready_seen: false,
    };
    let mut done = false;
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match vm.next_line(deadline - now) {
            Ok(line) => {
                reporter.event(&Event::Output {
                    step: STEP,
                    line: &line,
                });
                let clean = line.trim_end_matches('\r');
                if let Some(r) = clean.strip_prefix(initramfs::MARK_UNAME) {
                    report.guest_release = Some(r.trim().to_owned());
                } else if clean.starts_with(initramfs::MARK_MOUNT) {
                    report.modules_mounted = true;
                } else if clean
                    .strip_prefix(initramfs::MARK_MODULE)
                    .is_some_and(|m| m.trim() == opts.module)
                {
                    report.module_loaded = true;
                } else if clean == initramfs::MARK_DONE && opts.rootfs.is_none() {
                    done = true;
                } else if clean == initramfs::MARK_ROOTFS {
                    report.rootfs_mounted = true;
                } else if clean == initramfs::MARK_ROOTFS_FAILED {
                    console.push(clean.to_owned());
                    break;
                } else if let Some(r) = &opts.rootfs
                    && report.rootfs_mounted
                    && clean.contains(&r.ready)
                {
                    report.ready_seen = true;
                    console.push(clean.to_owned());
                    break;
                }
                console.push(clean.to_owned());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if done {
        // /init rebooted: with -no-reboot QEMU exits; give it a moment, then make sure.
        let until = Instant::now() + Duration::from_secs(5);
        while vm.try_wait().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    vm.kill();
    vfs.kill();
    if let Some(v) = root_vfs.as_mut() {
        v.kill();
    }
    report.seconds = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    report.console_tail = console.iter().rev().take(30).rev().cloned().collect();
    let rootfs_failure = opts.rootfs.as_ref().and_then(|r| {
        if !report.rootfs_mounted {
            Some(format!(
                "the guest could not mount the root directory {} over virtiofs",
                r.dir.display()
            ))
        } else if !report.ready_seen {
            Some(format!(
                "the guest switched to the root directory but `{}` did not appear within {} s",
                r.ready,
                opts.timeout.as_secs()
            ))
        } else {
            None
        }
    });
    let ended = done || report.ready_seen;
    report.failure = if timed_out && !ended && opts.rootfs.is_none() {
        Some(format!(
            "the guest did not finish within {} s",
            opts.timeout.as_secs()
        ))
    } else if report.guest_release.as_deref() != Some(m.uts_release.as_str()) {
        Some(format!(
            "uname -r in the guest is {:?}, expected {}",
            report.guest_release.as_deref().unwrap_or("(not printed)"),
            m.uts_release
        ))
    } else if !report.modules_mounted {
        Some("the guest could not mount the modules share over virtiofs".to_owned())
    } else if !report.module_loaded {
        Some(format!(
            "module {} did not load from the modules share",
            opts.module
        ))
    } else {
        rootfs_failure
    };
    report.passed = report.failure.is_none();
    Ok(report)
}
