//! The default guest root: a tiny initramfs kforge writes itself (newc cpio, fixed owners
//! and times, so equal inputs give equal bytes) around a static busybox. Its /init mounts
//! the modules share at `/lib/modules/$(uname -r)`, reports what the check needs on the
//! serial console, runs an optional command, and reboots (with QEMU's -no-reboot, that
//! ends QEMU: tiny configs have no ACPI, so poweroff would only halt).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::arch::Arch;

/// Lines /init prints, parsed by the check.
pub const MARK_UNAME: &str = "KFORGE-UNAME ";
pub const MARK_MOUNT: &str = "KFORGE-MODULES-MOUNTED ";
pub const MARK_MODULE: &str = "KFORGE-MODULE-LOADED ";
pub const MARK_DONE: &str = "KFORGE-DONE";
pub const MARK_ROOTFS: &str = "KFORGE-ROOTFS-MOUNTED";
pub const MARK_ROOTFS_FAILED: &str = "KFORGE-ROOTFS-FAILED";

/// An init path for `switch_root`: absolute, plain characters only (it goes into /init).
pub fn validate_init(init: &str) -> Result<(), String> {
    if init.starts_with('/')
        && init.len() < 256
        && !init.contains("..")
        && init
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "init `{init}`: give an absolute path of letters, digits, `/`, `.`, `_`, `-`"
        ))
    }
}

/// The /init script; `module` is loaded with modprobe from the share. With `stay`, the
/// guest keeps running after its report (a service guest) instead of rebooting.
pub fn init_script(
    module: &str,
    command: Option<&str>,
    stay: bool,
    switch_to: Option<&str>,
) -> String {
    let run = command.map_or(String::new(), |c| {
        format!(
            "echo 'KFORGE-COMMAND {c}'\n/bin/sh -c '{}'\necho \"KFORGE-COMMAND-EXIT $?\"\n",
            c.replace('\'', r"'\''")
        )
    });
    format!(
        r#"#!/bin/busybox sh
# kforge's guest init: mount the modules share, report, run, reboot.
/bin/busybox --install -s /bin
mkdir -p /sbin && ln -sf /bin/modprobe /sbin/modprobe
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
release=$(uname -r)
echo "{MARK_UNAME}$release"
mkdir -p "/lib/modules/$release"
if mount -t virtiofs modules "/lib/modules/$release"; then
  echo "{MARK_MOUNT}$release"
  if modprobe {module}; then
    grep -q '^{module} ' /proc/modules && echo "{MARK_MODULE}{module}"
  fi
fi
{run}{end}
"#,
        end = match switch_to {
            // The root directory share becomes /, with the modules share moved along.
            Some(init) => format!(
                r#"mkdir -p /newroot
if mount -t virtiofs rootfs /newroot; then
  echo "{MARK_ROOTFS}"
  mkdir -p "/newroot/lib/modules/$release"
  mount --move "/lib/modules/$release" "/newroot/lib/modules/$release"
  [ -d /newroot/dev ] && mount --move /dev /newroot/dev
  umount /proc /sys
  exec switch_root /newroot {init}
fi
echo "{MARK_ROOTFS_FAILED}"
reboot -f"#
            ),
            None if stay => format!("echo \"{MARK_DONE}\"\nwhile :; do sleep 3600; done"),
            None => format!("echo \"{MARK_DONE}\"\nreboot -f"),
        }
    )
}

/// One cpio "newc" entry.
fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let namesize = u32::try_from(name.len() + 1).expect("short name");
    let filesize = u32::try_from(data.len()).expect("file under 4 GiB");
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{filesize:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, 0, 1, 0, 0, 0, 0, 0, 0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The archive: directories, /bin/busybox, /init.
pub fn build_cpio(busybox: &[u8], init: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(busybox.len() + 4096);
    let mut ino = 1;
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "lib",
        "lib/modules",
        "sbin",
        "tmp",
    ] {
        entry(&mut out, ino, dir, 0o040_755, &[]);
        ino += 1;
    }
    entry(&mut out, ino, "bin/busybox", 0o100_755, busybox);
    entry(&mut out, ino + 1, "init", 0o100_755, init.as_bytes());
    entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

/// True for an ELF executable without a program interpreter (statically linked).
pub fn is_static_elf(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        bytes
            .get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != 3) // PT_INTERP
    })
}

/// Where the project's install script puts another arch's static busybox
/// (`<dir>/busybox-<debian arch>`, from Debian's busybox-static for that arch).
pub const FOREIGN_BUSYBOX_DIRS: &[&str] = &["/usr/local/lib/kforge", "/usr/lib/kforge"];

/// Finds a static busybox of `arch`: the host's own (Debian's busybox-static installs
/// /bin/busybox) or, for another arch, `busybox-<debian arch>` in [`FOREIGN_BUSYBOX_DIRS`].
/// Each candidate must be a static ELF executable of that arch.
pub fn find_static_busybox(arch: Arch) -> Result<PathBuf, crate::error::GuestError> {
    let mut candidates = Vec::new();
    if Arch::host() == Some(arch) {
        if let Ok(p) = crate::process::find_program("busybox") {
            candidates.push(p);
        }
        candidates.extend(["/bin/busybox", "/usr/bin/busybox"].map(PathBuf::from));
    } else {
        candidates.extend(
            FOREIGN_BUSYBOX_DIRS
                .iter()
                .map(|d| Path::new(d).join(format!("busybox-{}", arch.debian()))),
        );
    }
    for c in candidates {
        if let Ok(bytes) = std::fs::read(&c)
            && is_static_elf(&bytes)
            && elf_machine(&bytes) == Some(arch.elf_machine())
        {
            return Ok(c);
        }
    }
    Err(crate::error::GuestError::Missing(
        match arch {
            Arch::X86_64 => "a static busybox",
            Arch::Arm64 => "a static arm64 busybox",
            Arch::Riscv64 => "a static riscv64 busybox",
        },
        match arch {
            Arch::X86_64 => "apt-get install busybox-static",
            Arch::Arm64 | Arch::Riscv64 => {
                "the project's scripts/install-deps.sh fetches Debian's busybox-static of that arch into /usr/local/lib/kforge"
            }
        },
    ))
}

/// `e_machine` of a 64-bit little-endian ELF file.
pub fn elf_machine(bytes: &[u8]) -> Option<u16> {
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    Some(u16::from_le_bytes(bytes.get(18..20)?.try_into().ok()?))
}

/// Writes the initramfs to `path` (atomically).
pub fn write(
    path: &Path,
    busybox: &Path,
    module: &str,
    command: Option<&str>,
    stay: bool,
    switch_to: Option<&str>,
) -> std::io::Result<()> {
    write_with(
        path,
        busybox,
        &init_script(module, command, stay, switch_to),
    )
}

/// Writes an initramfs around `init` to `path` (atomically).
pub fn write_with(path: &Path, busybox: &Path, init: &str) -> std::io::Result<()> {
    let bb = fs_err::read(busybox)?;
    let cpio = build_cpio(&bb, init);
    let tmp = path.with_extension("tmp");
    let mut f = fs_err::File::create(&tmp)?;
    f.write_all(&cpio)?;
    f.sync_all()?;
    fs_err::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_is_newc_and_deterministic() {
        let a = build_cpio(
            b"\x7fELFbusybox",
            &init_script("vsock_loopback", None, false, None),
        );
        let b = build_cpio(
            b"\x7fELFbusybox",
            &init_script("vsock_loopback", None, false, None),
        );
        assert_eq!(a, b);
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("bin/busybox") && text.contains("TRAILER!!!"));
    }

    #[test]
    fn a_busybox_must_be_a_static_executable_of_the_guests_arch() {
        // The host's own: /bin/busybox from busybox-static, an x86_64 static executable.
        #[cfg(target_arch = "x86_64")]
        if let Ok(p) = find_static_busybox(Arch::X86_64) {
            assert_eq!(elf_machine(&std::fs::read(p).unwrap()), Some(62));
        }
        let mut header = vec![0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(elf_machine(&header), Some(Arch::Arm64.elf_machine()));
        header[5] = 2; // big-endian: not a guest of ours
        assert_eq!(elf_machine(&header), None);
        assert_eq!(elf_machine(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn init_reports_and_quotes_the_command() {
        let s = init_script("vsock_loopback", Some("echo 'hi'"), false, None);
        assert!(s.contains("modprobe vsock_loopback"));
        assert!(s.contains("mount -t virtiofs modules \"/lib/modules/$release\""));
        assert!(s.contains(r"/bin/sh -c 'echo '\''hi'\'''"));
        assert!(s.trim_end().ends_with("reboot -f"));
        let stay = init_script("vsock_loopback", None, true, None);
        assert!(stay.trim_end().ends_with("while :; do sleep 3600; done"));
    }

    #[test]
    fn static_elf_detection() {
        if let Ok(bytes) = std::fs::read("/bin/sh") {
            assert!(!is_static_elf(&bytes), "/bin/sh is dynamic on Debian");
        }
        assert!(!is_static_elf(b"#!/bin/sh"));
    }

    #[test]
    fn a_root_share_is_switched_to() {
        let s = init_script("vsock_loopback", None, false, Some("/sbin/init"));
        assert!(s.contains("mount -t virtiofs rootfs /newroot"), "{s}");
        assert!(
            s.contains(r#"mount --move "/lib/modules/$release" "/newroot/lib/modules/$release""#)
        );
        assert!(s.contains("exec switch_root /newroot /sbin/init"));
        assert!(!s.contains(MARK_DONE));
        for bad in [
            "sbin/init",
            "/sbin/init; rm -rf /",
            "/a b",
            "/x/../y",
            "/$(x)",
        ] {
            assert!(validate_init(bad).is_err(), "{bad}");
        }
        assert!(validate_init("/lib/systemd/systemd").is_ok());
    }
}
