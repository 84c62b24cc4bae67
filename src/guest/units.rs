//! systemd units for guests, rendered as text by pure functions.
//!
//! `qemu-system@.service` is the template every guest is an instance of; per guest, a
//! drop-in (`qemu-system@<vm>.service.d/kforge.conf`) sets ExecStart to the QEMU binary with
//! the guest's full command line (systemd does not allow the program itself to come from an
//! environment variable), and the console log. virtiofsd runs as
//! `kforge-virtiofsd@<vm>.service`, bound to the guest's lifecycle.

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

/// The template of a guest's root directory share (only guests defined with a rootfs).
pub fn virtiofsd_rootfs_template() -> String {
    "# Written by kforge: the root directory share of guest %i, over vhost-user.\n\
     [Unit]\n\
     Description=kforge virtiofsd for the root directory of guest %i\n\
     StopWhenUnneeded=yes\n\
     \n\
     [Service]\n\
     Type=simple\n\
     ExecStart=/bin/sh -c 'echo \"guest %i has no kforge definition: run kforge vm define %i\" >&2; exit 1'\n\
     KillMode=control-group\n"
        .to_owned()
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

/// The template every guest is an instance of.
pub fn qemu_template() -> String {
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
     \n\
     [Install]\n\
     WantedBy=multi-user.target\n"
        .to_owned()
}

/// The virtiofsd template (one instance per guest, serving its modules tree).
pub fn virtiofsd_template() -> String {
    "# Written by kforge: the /lib/modules share of guest %i, over vhost-user.\n\
     [Unit]\n\
     Description=kforge virtiofsd for guest %i\n\
     StopWhenUnneeded=yes\n\
     \n\
     [Service]\n\
     Type=simple\n\
     ExecStart=/bin/sh -c 'echo \"guest %i has no kforge definition: run kforge vm define %i\" >&2; exit 1'\n\
     KillMode=control-group\n"
        .to_owned()
}

/// The guest's QEMU drop-in.
pub fn qemu_dropin(
    qemu: &Path,
    args: &[OsString],
    sockets: &[std::path::PathBuf],
    console_log: &Path,
    rootfs: bool,
) -> String {
    let mut s = String::from("# Written by kforge vm define; rewritten on every define.\n");
    if rootfs {
        s.push_str(
            "[Unit]\nBindsTo=kforge-virtiofsd-rootfs@%i.service\nAfter=kforge-virtiofsd-rootfs@%i.service\n",
        );
    }
    s.push_str("[Service]\n");
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

/// The guest's virtiofsd drop-in.
pub fn virtiofsd_dropin(virtiofsd: &Path, args: &[OsString]) -> String {
    let mut s = String::from(
        "# Written by kforge vm define; rewritten on every define.\n[Service]\nExecStart=\n",
    );
    let _ = writeln!(s, "ExecStart={}", exec_line(virtiofsd, args));
    s
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
        );
        assert!(d.contains("\nExecStart=\nExecStart=\"/usr/bin/qemu-system-x86_64\" \"-kernel\" \"/d/boot/vmlinuz-x\"\n"), "{d}");
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
        );
        assert!(
            r.contains("BindsTo=kforge-virtiofsd-rootfs@%i.service"),
            "{r}"
        );
        assert!(r.contains("wait-for-virtiofsd \"/s/r.sock\""), "{r}");
    }
}
