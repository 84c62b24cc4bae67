//! Named guests: `kforge vm define|start|stop|status|console|rm|run`. A definition lives in
//! `SYSTEM_DIR/vms/<name>/` (vm.json, the initramfs, the console log, the virtiofsd socket)
//! and as systemd units; `run` is the very same command line in the foreground, for hosts
//! where systemd is not running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{initramfs, qemu, units};
use crate::error::{Error, GuestError};
use crate::fsutil::write_atomic;
use crate::kernel::manifest::Manifest;
use crate::process::Cmd;

/// A guest's definition (vm.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDef {
    pub name: String,
    pub uts_release: String,
    pub manifest: PathBuf,
    pub kernel: PathBuf,
    pub modules_dir: PathBuf,
    pub initrd: PathBuf,
    pub socket: PathBuf,
    pub console_log: PathBuf,
    pub qemu: PathBuf,
    pub virtiofsd: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: qemu::Accel,
    /// The guest's architecture (`x86_64` in definitions written before there was a choice).
    #[serde(default)]
    pub arch: crate::arch::Arch,
    pub module: String,
    pub command: Option<String>,
    /// The guest reboots (and so ends) after its command instead of staying up.
    pub oneshot: bool,
    /// A root directory the guest switches to (shared over virtiofs by a second virtiofsd).
    #[serde(default)]
    pub rootfs: Option<super::RootFs>,
    #[serde(default)]
    pub rootfs_socket: Option<PathBuf>,
}

impl VmDef {
    pub fn spec(&self) -> qemu::GuestSpec {
        qemu::GuestSpec {
            arch: self.arch,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            shares: qemu::shares(self.socket.clone(), self.rootfs_socket.clone()),
            socket_fds: Vec::new(),
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            accel: self.accel,
            append: vec!["quiet".into()],
        }
    }
}

/// Guest names become unit instance names and directory names.
pub fn validate_name(name: &str) -> Result<(), GuestError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(GuestError::Refused(format!(
            "guest name `{name}` must be 1-32 of [a-z0-9_-], starting with a letter or digit"
        )))
    }
}

/// Where guests and units live.
#[derive(Debug, Clone)]
pub struct VmHome {
    pub vms_dir: PathBuf,
    pub unit_dir: PathBuf,
}

impl VmHome {
    pub fn dir(&self, name: &str) -> PathBuf {
        self.vms_dir.join(name)
    }

    pub fn load(&self, name: &str) -> Result<VmDef, Error> {
        validate_name(name)?;
        let p = self.dir(name).join("vm.json");
        let text = fs_err::read_to_string(&p).map_err(|_| GuestError::NoGuest(name.to_owned()))?;
        Ok(serde_json::from_str(&text)
            .map_err(|source| GuestError::BadDefinition { path: p, source })?)
    }
}

/// True when systemd runs as the init system here (sd_booted(3)).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<String, Error> {
    Ok(Cmd::new("systemctl").args(args).output()?)
}

/// What a definition needs besides the manifest.
#[derive(Debug, Clone)]
pub struct DefineOptions {
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: qemu::Accel,
    pub module: String,
    pub command: Option<String>,
    pub oneshot: bool,
    pub qemu: Option<PathBuf>,
    pub rootfs: Option<super::RootFs>,
}

/// Defines (or redefines) a guest from a manifest: its files and its units.
pub fn define(
    home: &VmHome,
    name: &str,
    manifest: &Manifest,
    manifest_path: &Path,
    o: &DefineOptions,
) -> Result<VmDef, Error> {
    validate_name(name)?;
    let (kernel, modules_dir) = super::precheck(manifest)?;
    super::sandbox::guest_user_exists()?;
    if let Some(r) = &o.rootfs {
        r.check()?;
    }
    let given = o.qemu.as_deref().map(crate::dirs::absolute);
    let qemu_bin = super::qemu_for(manifest.arch, given.as_deref())?;
    let accel = qemu::accel_for(o.accel, manifest.arch)?;
    let virtiofsd = super::find_virtiofsd()?;
    let busybox = initramfs::find_static_busybox(manifest.arch)?;
    let dir = home.dir(name);
    super::sandbox::guest_dir(&dir, &dir.join("console.log"))?;
    let def = VmDef {
        name: name.to_owned(),
        uts_release: manifest.uts_release.clone(),
        manifest: crate::dirs::absolute(manifest_path),
        kernel,
        modules_dir,
        initrd: dir.join("initramfs.cpio"),
        socket: dir.join("modules.sock"),
        console_log: dir.join("console.log"),
        qemu: qemu_bin,
        virtiofsd,
        memory_mib: o.memory_mib,
        cpus: o.cpus,
        accel,
        arch: manifest.arch,
        module: o.module.clone(),
        command: o.command.clone(),
        oneshot: o.oneshot,
        rootfs_socket: o.rootfs.as_ref().map(|_| dir.join("rootfs.sock")),
        rootfs: o.rootfs.clone(),
    };
    initramfs::write(
        &def.initrd,
        &busybox,
        &def.module,
        def.command.as_deref(),
        !def.oneshot,
        def.rootfs.as_ref().map(|r| r.init.as_str()),
    )?;
    let mut json = serde_json::to_string_pretty(&def).expect("serializes");
    json.push('\n');
    write_atomic(&dir.join("vm.json"), json.as_bytes())?;
    write_units(home, &def)?;
    if systemd_running() {
        systemctl(&["daemon-reload"])?;
    }
    Ok(def)
}

/// A unit's virtiofsd: its socket for the guest user's group (the guest's QEMU runs as it).
fn unit_virtiofsd(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.push(format!("--socket-group={}", super::sandbox::GUEST_USER).into());
    args
}

/// Writes the two templates and the guest's drop-ins into the unit directory.
pub fn write_units(home: &VmHome, def: &VmDef) -> Result<(), Error> {
    fs_err::create_dir_all(&home.unit_dir)?;
    write_atomic(
        &home.unit_dir.join(units::QEMU_TEMPLATE),
        units::qemu_template().as_bytes(),
    )?;
    write_atomic(
        &home.unit_dir.join(units::VIRTIOFSD_TEMPLATE),
        units::virtiofsd_template().as_bytes(),
    )?;
    let q = home
        .unit_dir
        .join(format!("{}.d", units::qemu_unit(&def.name)));
    fs_err::create_dir_all(&q)?;
    let args = qemu::qemu_args(&def.spec());
    let mut sockets = vec![def.socket.clone()];
    sockets.extend(def.rootfs_socket.clone());
    let parent = |p: &Path| p.parent().map_or_else(|| p.to_owned(), Path::to_owned);
    let vm_dir = parent(&def.initrd);
    let mut read = vec![vm_dir.clone(), parent(&def.kernel)];
    if !def.qemu.starts_with("/usr") {
        // A QEMU kforge built: its installed tree (a store entry's bin/ and share/).
        read.push(parent(&parent(&parent(&def.qemu))));
    }
    read.dedup();
    let access = units::QemuAccess {
        read,
        kvm_group: (def.accel == qemu::Accel::Kvm)
            .then(super::sandbox::kvm_group)
            .flatten(),
    };
    write_atomic(
        &q.join("kforge.conf"),
        units::qemu_dropin(
            &def.qemu,
            &args,
            &sockets,
            &def.console_log,
            def.rootfs.is_some(),
            &access,
        )
        .as_bytes(),
    )?;
    let v = home
        .unit_dir
        .join(format!("{}.d", units::virtiofsd_unit(&def.name)));
    fs_err::create_dir_all(&v)?;
    let vargs = unit_virtiofsd(qemu::virtiofsd_readonly(
        &def.socket,
        &def.modules_dir,
        qemu::VfsSandbox::Namespace,
    ));
    write_atomic(
        &v.join("kforge.conf"),
        units::virtiofsd_dropin(
            &def.virtiofsd,
            &vargs,
            std::slice::from_ref(&vm_dir),
            &[def.modules_dir.clone(), def.virtiofsd.clone()],
        )
        .as_bytes(),
    )?;
    let r = home
        .unit_dir
        .join(format!("{}.d", units::virtiofsd_rootfs_unit(&def.name)));
    match (&def.rootfs, &def.rootfs_socket) {
        (Some(root), Some(sock)) => {
            write_atomic(
                &home.unit_dir.join(units::VIRTIOFSD_ROOTFS_TEMPLATE),
                units::virtiofsd_rootfs_template().as_bytes(),
            )?;
            fs_err::create_dir_all(&r)?;
            let rargs = unit_virtiofsd(qemu::virtiofsd_writable(
                sock,
                &root.dir,
                qemu::VfsSandbox::Namespace,
            ));
            write_atomic(
                &r.join("kforge.conf"),
                units::virtiofsd_dropin(
                    &def.virtiofsd,
                    &rargs,
                    &[vm_dir.clone(), root.dir.clone()],
                    std::slice::from_ref(&def.virtiofsd),
                )
                .as_bytes(),
            )?;
        }
        _ => {
            if r.exists() {
                fs_err::remove_dir_all(&r)?;
            }
        }
    }
    Ok(())
}

fn need_systemd(what: &str, name: &str) -> Result<(), GuestError> {
    if systemd_running() {
        Ok(())
    } else {
        Err(GuestError::Refused(format!(
            "systemd is not running here, so `vm {what}` cannot manage qemu-system@{name}.service; run the guest in the foreground with kforge vm run {name}"
        )))
    }
}

pub fn start(home: &VmHome, name: &str) -> Result<(), Error> {
    let def = home.load(name)?;
    need_systemd("start", name)?;
    let _ = fs_err::remove_file(&def.socket);
    systemctl(&["start", &units::qemu_unit(name)])?;
    Ok(())
}

pub fn stop(home: &VmHome, name: &str) -> Result<(), Error> {
    home.load(name)?;
    need_systemd("stop", name)?;
    systemctl(&[
        "stop",
        &units::qemu_unit(name),
        &units::virtiofsd_unit(name),
    ])?;
    Ok(())
}

/// A guest's state, as systemd sees it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct VmStatus {
    pub name: String,
    pub uts_release: String,
    pub qemu_unit: String,
    pub active_state: String,
    pub main_pid: u32,
    pub virtiofsd_state: String,
    pub console_log: PathBuf,
}

pub fn status(home: &VmHome, name: &str) -> Result<VmStatus, Error> {
    let def = home.load(name)?;
    need_systemd("status", name)?;
    let show = |unit: &str| -> Result<(String, u32), Error> {
        let out = systemctl(&["show", "--property=ActiveState,MainPID", unit])?;
        let mut state = String::new();
        let mut pid = 0;
        for line in out.lines() {
            if let Some(v) = line.strip_prefix("ActiveState=") {
                v.clone_into(&mut state);
            } else if let Some(v) = line.strip_prefix("MainPID=") {
                pid = v.parse().unwrap_or(0);
            }
        }
        Ok((state, pid))
    };
    let (active_state, main_pid) = show(&units::qemu_unit(name))?;
    let (virtiofsd_state, _) = show(&units::virtiofsd_unit(name))?;
    Ok(VmStatus {
        name: name.to_owned(),
        uts_release: def.uts_release,
        qemu_unit: units::qemu_unit(name),
        active_state,
        main_pid,
        virtiofsd_state,
        console_log: def.console_log,
    })
}

pub fn console(home: &VmHome, name: &str) -> Result<String, Error> {
    let def = home.load(name)?;
    Ok(fs_err::read_to_string(&def.console_log).unwrap_or_default())
}

pub fn remove(home: &VmHome, name: &str) -> Result<(), Error> {
    home.load(name)?;
    if systemd_running() {
        let _ = systemctl(&[
            "stop",
            &units::qemu_unit(name),
            &units::virtiofsd_unit(name),
            &units::virtiofsd_rootfs_unit(name),
        ]);
    }
    for unit in [
        units::qemu_unit(name),
        units::virtiofsd_unit(name),
        units::virtiofsd_rootfs_unit(name),
    ] {
        let d = home.unit_dir.join(format!("{unit}.d"));
        if d.exists() {
            fs_err::remove_dir_all(&d)?;
        }
    }
    fs_err::remove_dir_all(home.dir(name))?;
    if systemd_running() {
        systemctl(&["daemon-reload"])?;
    }
    Ok(())
}

/// The guest in the foreground: virtiofsd and QEMU with the units' command lines; the
/// serial console goes to `on_line`. Returns when QEMU exits (or `timeout` passes).
pub fn run(
    def: &VmDef,
    timeout: Option<Duration>,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let quiet = crate::flow::Silent;
    let mut shares = vec![super::Share {
        args: qemu::virtiofsd_args(&def.socket, &def.modules_dir),
        socket: def.socket.clone(),
        dir: def.modules_dir.clone(),
    }];
    if let (Some(root), Some(sock)) = (&def.rootfs, &def.rootfs_socket) {
        shares.push(super::Share {
            args: qemu::virtiofsd_rootfs_args(sock, &root.dir),
            socket: sock.clone(),
            dir: root.dir.clone(),
        });
    }
    let mut daemons = super::serve_all(&def.virtiofsd, &shares, &quiet)?;
    let start = Instant::now();
    let (qemu_cmd, handed) = super::sandbox::qemu_command(&def.qemu, &def.spec(), |a| a)?;
    let mut vm = qemu_cmd.spawn_background()?;
    drop(handed);
    loop {
        let wait = timeout.map_or(Duration::from_hours(1), |t| {
            t.saturating_sub(start.elapsed())
        });
        if wait.is_zero() {
            break;
        }
        match vm.next_line(wait) {
            Ok(line) => on_line(line.trim_end_matches('\r')),
            Err(_) => break,
        }
    }
    crate::process::kill_together(std::iter::once(&mut vm).chain(&mut daemons));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["vm1", "guest-a", "a_b", "0"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "A",
            "a/b",
            "a b",
            "a.b",
            "a@b",
            "../x",
            &"a".repeat(33),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
