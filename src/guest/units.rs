//! systemd units for guests, rendered as text by pure functions.
//!
//! `qemu-system@.service` is the template every guest is an instance of; per guest, a
//! drop-in (`qemu-system@<vm>.service.d/kforge.conf`) sets ExecStart to the QEMU binary with
//! the guest's full command line (systemd does not allow the program itself to come from an
//! environment variable), and the console log. virtiofsd runs as
//! `kforge-virtiofsd@<vm>.service`, bound to the guest's lifecycle.
//!
//! Every unit runs with the least it needs (`systemd-analyze security` rates each at or below
//! 3.0): QEMU as the unprivileged `kforge-guest` with no capabilities, no network, its seccomp
//! filters, and only the guest's files bound in; virtiofsd as root (it serves files of any
//! owner) in its own namespace sandbox with just the capabilities that takes, its share the
//! only path it may write.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

pub const QEMU_TEMPLATE: &str = "qemu-system@.service";
pub const VIRTIOFSD_TEMPLATE: &str = "kforge-virtiofsd@.service";
pub const VIRTIOFSD_ROOTFS_TEMPLATE: &str = "kforge-virtiofsd-rootfs@.service";

pub fn qemu_unit(vm: &str) -> String {
    format!("qemu-system@{vm}.service")
}
pub fn virtiofsd_unit(vm: &str) -> String {
    format!("kforge-virtiofsd@{vm}.service")
}
pub fn virtiofsd_rootfs_unit(vm: &str) -> String {
    format!("kforge-virtiofsd-rootfs@{vm}.service")
}

/// Settings every kforge unit has: no new privileges, the system read-only, no home, no
/// network, no kernel-facing knobs, local sockets only, the system calls a service makes.
const CONFINED: &str = "NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=tmpfs
PrivateTmp=yes
PrivateNetwork=yes
PrivateIPC=yes
IPAddressDeny=any
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
KeyringMode=private
SystemCallArchitectures=native
UMask=0077
";

/// What a virtiofsd unit may do beyond [`CONFINED`]: root's file capabilities (it creates
/// files of every owner in a writable share), making its namespace sandbox and dropping its
/// own capabilities there (SETPCAP), and its own seccomp filter (the `seccomp` call); its
/// devices none (by the device policy: PrivateDevices= would take CAP_MKNOD, which virtiofsd
/// asks for), its share the only path it writes (in the guest's drop-in). It logs to its
/// stderr, which the journal keeps: told of the journal's stream, it would open the
/// journal's socket, which its own filter forbids.
const VIRTIOFSD_CONFINED: &str = "CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_SETGID CAP_SETUID CAP_MKNOD CAP_SETFCAP CAP_SETPCAP CAP_SYS_ADMIN
AmbientCapabilities=
UnsetEnvironment=JOURNAL_STREAM
DevicePolicy=closed
MemoryDenyWriteExecute=yes
RestrictNamespaces=~user ipc cgroup uts
SystemCallFilter=@system-service @mount seccomp
SystemCallErrorNumber=EPERM
";

/// A virtiofsd template, for the share `what` serves.
fn virtiofsd_template_for(what: &str) -> String {
    format!(
        "# Written by kforge: {what} of guest %i, over vhost-user.\n\
         [Unit]\n\
         Description=kforge virtiofsd for {what} of guest %i\n\
         StopWhenUnneeded=yes\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart=/bin/sh -c 'echo \"guest %i has no kforge definition: run kforge vm define %i\" >&2; exit 1'\n\
         KillMode=control-group\n\
         {CONFINED}{VIRTIOFSD_CONFINED}"
    )
}

/// The template of a guest's root directory share (only guests defined with a rootfs).
pub fn virtiofsd_rootfs_template() -> String {
    virtiofsd_template_for("the root directory")
}

/// Quotes one ExecStart word for systemd: double quotes, with `\`, `"`, `$` (as `$$`) and
/// `%` (as `%%`) escaped.
pub fn quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn exec_line(program: &Path, args: &[OsString]) -> String {
    let mut line = quote(&program.to_string_lossy());
    for a in args {
        line.push(' ');
        line.push_str(&quote(&a.to_string_lossy()));
    }
    line
}

/// The template every guest is an instance of: QEMU as the unprivileged guest user, with no
/// capabilities and QEMU's own system calls (TCG writes code it runs: no W^X rule).
pub fn qemu_template() -> String {
    format!(
        "# Written by kforge. Each guest is an instance: qemu-system@<vm>.service; its drop-in\n\
         # qemu-system@<vm>.service.d/kforge.conf sets the QEMU command line (kforge vm define).\n\
         [Unit]\n\
         Description=kforge guest %i (QEMU)\n\
         BindsTo=kforge-virtiofsd@%i.service\n\
         After=kforge-virtiofsd@%i.service\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart=/bin/sh -c 'echo \"guest %i has no kforge definition: run kforge vm define %i\" >&2; exit 1'\n\
         KillMode=control-group\n\
         TimeoutStopSec=15\n\
         User={user}\n\
         Group={user}\n\
         CapabilityBoundingSet=\n\
         AmbientCapabilities=\n\
         DevicePolicy=closed\n\
         PrivateUsers=yes\n\
         ProcSubset=pid\n\
         RestrictNamespaces=yes\n\
         SystemCallFilter=@system-service\n\
         SystemCallFilter=~@privileged @resources\n\
         SystemCallErrorNumber=EPERM\n\
         {CONFINED}\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        user = super::sandbox::GUEST_USER
    )
}

/// The virtiofsd template (one instance per guest, serving its modules tree).
pub fn virtiofsd_template() -> String {
    virtiofsd_template_for("the /lib/modules share")
}

/// What a guest's QEMU unit reads: bound into its otherwise empty view of home directories,
/// and, with KVM, the device and its group.
#[derive(Debug, Clone, Default)]
pub struct QemuAccess {
    /// Directories and files QEMU opens (the guest's directory, the kernel's store entry, a
    /// QEMU built by kforge), each read-only.
    pub read: Vec<std::path::PathBuf>,
    /// The group of `/dev/kvm`, when the guest uses KVM.
    pub kvm_group: Option<String>,
}

/// The guest's QEMU drop-in.
pub fn qemu_dropin(
    qemu: &Path,
    args: &[OsString],
    sockets: &[std::path::PathBuf],
    console_log: &Path,
    rootfs: bool,
    access: &QemuAccess,
) -> String {
    let mut s = String::from("# Written by kforge vm define; rewritten on every define.\n");
    if rootfs {
        s.push_str(
            "[Unit]\nBindsTo=kforge-virtiofsd-rootfs@%i.service\nAfter=kforge-virtiofsd-rootfs@%i.service\n",
        );
    }
    s.push_str("[Service]\n");
    for p in &access.read {
        let _ = writeln!(s, "BindReadOnlyPaths={}", quote_path(p));
    }
    if let Some(g) = &access.kvm_group {
        let _ = writeln!(s, "SupplementaryGroups={g}\nDeviceAllow=/dev/kvm rw");
    }
    // Wait for virtiofsd's sockets: they appear a moment after virtiofsd starts.
    for socket in sockets {
        let _ = writeln!(
            s,
            "ExecStartPre=/bin/sh -c 'i=0; while [ ! -S \"$$1\" ]; do i=$$((i+1)); [ $$i -gt 100 ] && {{ echo \"no virtiofsd socket $$1\" >&2; exit 1; }}; sleep 0.1; done' wait-for-virtiofsd {}",
            quote(&socket.to_string_lossy())
        );
    }
    s.push_str("ExecStart=\n");
    let _ = writeln!(s, "ExecStart={}", exec_line(qemu, args));
    let _ = writeln!(s, "StandardOutput=append:{}", console_log.display());
    s.push_str("StandardError=inherit\n");
    s
}

/// The guest's virtiofsd drop-in: `writes` are the paths it may write (its socket's
/// directory, a writable share), `reads` those it serves read-only (bound in, for shares under
/// home directories).
pub fn virtiofsd_dropin(
    virtiofsd: &Path,
    args: &[OsString],
    writes: &[std::path::PathBuf],
    reads: &[std::path::PathBuf],
) -> String {
    let mut s = String::from(
        "# Written by kforge vm define; rewritten on every define.\n[Service]\nExecStart=\n",
    );
    let _ = writeln!(s, "ExecStart={}", exec_line(virtiofsd, args));
    for p in writes {
        let _ = writeln!(s, "BindPaths={}", quote_path(p));
    }
    for p in reads {
        let _ = writeln!(s, "BindReadOnlyPaths={}", quote_path(p));
    }
    s
}

/// A path in a path-list setting (`BindPaths=`): spaces and specials escaped as systemd
/// unescapes them, `%` doubled.
fn quote_path(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%%"),
            '\\' => out.push_str("\\\\"),
            ' ' => out.push_str("\\x20"),
            ':' => out.push_str("\\x3a"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("$HOME"), "\"$$HOME\"");
        assert_eq!(quote("100%"), "\"100%%\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn dropin_names_the_qemu_binary() {
        let d = qemu_dropin(
            Path::new("/usr/bin/qemu-system-x86_64"),
            &["-kernel".into(), "/d/boot/vmlinuz-x".into()],
            &["/s/m.sock".into()],
            Path::new("/s/console.log"),
            false,
            &QemuAccess {
                read: vec!["/home/dev/kforge/vms/g1".into()],
                kvm_group: None,
            },
        );
        assert!(d.contains("\nExecStart=\nExecStart=\"/usr/bin/qemu-system-x86_64\" \"-kernel\" \"/d/boot/vmlinuz-x\"\n"), "{d}");
        assert!(
            d.contains("\nBindReadOnlyPaths=/home/dev/kforge/vms/g1\n"),
            "{d}"
        );
        assert!(!d.contains("/dev/kvm"), "{d}");
        assert!(d.contains("StandardOutput=append:/s/console.log"));
        assert!(d.contains("wait-for-virtiofsd \"/s/m.sock\""));
        assert!(qemu_template().contains("BindsTo=kforge-virtiofsd@%i.service"));
        assert!(!d.contains("rootfs"));
        let r = qemu_dropin(
            Path::new("/usr/bin/qemu-system-x86_64"),
            &[],
            &["/s/m.sock".into(), "/s/r.sock".into()],
            Path::new("/s/console.log"),
            true,
            &QemuAccess {
                read: Vec::new(),
                kvm_group: Some("kvm".into()),
            },
        );
        assert!(
            r.contains("SupplementaryGroups=kvm\nDeviceAllow=/dev/kvm rw"),
            "{r}"
        );
        assert!(
            r.contains("BindsTo=kforge-virtiofsd-rootfs@%i.service"),
            "{r}"
        );
        assert!(r.contains("wait-for-virtiofsd \"/s/r.sock\""), "{r}");
    }
}
