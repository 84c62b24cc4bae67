//! QEMU and virtiofsd command lines, as pure functions (unit-tested; logged in full with -v).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::arch::Arch;

/// Hardware acceleration.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when it really works here, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// What a guest is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// The guest's architecture: its machine, CPU, firmware and console.
    pub arch: Arch,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The virtiofs shares, each a tag and its virtiofsd's socket: the modules share
    /// first, then a root directory's, a command's working directory's, ...
    pub shares: Vec<(&'static str, PathBuf)>,
    /// Connected sockets QEMU inherits, one per share in order, instead of the paths (see
    /// [`super::sandbox::qemu_command`]); empty: QEMU connects to the paths.
    pub socket_fds: Vec<i32>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub append: Vec<String>,
}

/// The virtiofs tag the guest mounts at `/lib/modules/$(uname -r)`.
pub const MODULES_TAG: &str = "modules";
/// The virtiofs tag of the optional root directory share.
pub const ROOTFS_TAG: &str = "rootfs";

/// The shares of a guest: the modules share and, with a root directory, its share.
pub fn shares(modules: PathBuf, rootfs: Option<PathBuf>) -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![(MODULES_TAG, modules)];
    v.extend(rootfs.map(|s| (ROOTFS_TAG, s)));
    v
}

pub fn qemu_args(g: &GuestSpec) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    let mut push = |s: &str| v.push(s.into());
    push("-nodefaults");
    push("-no-user-config");
    push("-display");
    push("none");
    push("-no-reboot");
    push("-accel");
    push(match g.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg | Accel::Auto => "tcg",
    });
    if g.accel == Accel::Kvm {
        push("-cpu");
        push("host");
    }
    // x86_64 keeps QEMU's default PC machine; the others boot the generic `virt` board
    // (PCIe for virtio, the device tree from QEMU).
    match g.arch {
        Arch::X86_64 => {}
        Arch::Arm64 => {
            push("-M");
            push("virt");
            if g.accel != Accel::Kvm {
                // A plain ARMv8.0 core: TCG emulates it faster than `max` (no pointer
                // authentication to emulate), and the kernel needs nothing newer.
                push("-cpu");
                push("cortex-a57");
            }
        }
        Arch::Riscv64 => {
            push("-M");
            push("virt");
            // OpenSBI, as QEMU ships it (Debian: the opensbi package).
            push("-bios");
            push("default");
        }
    }
    push("-smp");
    push(&g.cpus.to_string());
    push("-m");
    push(&format!("{}M", g.memory_mib));
    // vhost-user devices need guest memory the daemon can map: a shared memfd.
    push("-object");
    push(&format!(
        "memory-backend-memfd,id=mem,size={}M,share=on",
        g.memory_mib
    ));
    push("-numa");
    push("node,memdev=mem");
    push("-serial");
    push("stdio");
    for (i, (tag, socket)) in g.shares.iter().enumerate() {
        v.push("-chardev".into());
        v.push(if let Some(fd) = g.socket_fds.get(i) {
            format!("socket,id={tag},fd={fd}").into()
        } else {
            let mut chardev = OsString::from(format!("socket,id={tag},path="));
            chardev.push(socket);
            chardev
        });
        v.push("-device".into());
        v.push(format!("vhost-user-fs-pci,chardev={tag},tag={tag}").into());
    }
    v.push("-kernel".into());
    v.push(g.kernel.clone().into());
    v.push("-initrd".into());
    v.push(g.initrd.clone().into());
    v.push("-append".into());
    let mut append = vec![
        format!("console={}", g.arch.console()),
        "panic=-1".to_owned(),
        "rdinit=/init".to_owned(),
    ];
    if g.arch == Arch::X86_64 {
        // PCI interrupts from the BIOS's routing table, not ACPI's link devices: evaluating
        // their AML costs about 100 ms per virtio device under TCG (a third of a boot with
        // three shares); the devices use MSI-X anyway.
        append.push("pci=noacpi".to_owned());
    }
    append.extend(g.append.iter().cloned());
    v.push(append.join(" ").into());
    v
}

/// The same guest with its serial console on this terminal for a person: QEMU's stdio mux
/// (Ctrl-A x quits, Ctrl-A c the monitor) without signals, so Ctrl-C reaches the guest.
pub fn on_terminal(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        if a == "-serial" && it.peek().is_some_and(|n| n == "stdio") {
            it.next();
            for x in [
                "-chardev",
                "stdio,id=con,mux=on,signal=off",
                "-serial",
                "chardev:con",
                "-mon",
                "chardev=con,mode=readline",
            ] {
                out.push(x.into());
            }
        } else {
            out.push(a);
        }
    }
    out
}

/// How virtiofsd confines itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfsSandbox {
    /// Its own mount, PID and network namespaces, the shared directory its root: what it
    /// does as root.
    Namespace,
    /// None of its own: an unprivileged virtiofsd (an unprivileged kforge, or a unit that
    /// confines it as an unprivileged user) cannot make namespaces.
    None,
}

impl VfsSandbox {
    /// What virtiofsd started by this process can do.
    pub fn here() -> Self {
        if super::sandbox::is_root() {
            VfsSandbox::Namespace
        } else {
            VfsSandbox::None
        }
    }
    fn arg(self) -> &'static str {
        match self {
            VfsSandbox::Namespace => "--sandbox=namespace",
            VfsSandbox::None => "--sandbox=none",
        }
    }
}

/// The socket, directory and sandbox arguments every virtiofsd here starts with.
fn virtiofsd_base(
    socket: &std::path::Path,
    dir: &std::path::Path,
    sandbox: VfsSandbox,
) -> Vec<OsString> {
    let mut s = OsString::from("--socket-path=");
    s.push(socket);
    let mut d = OsString::from("--shared-dir=");
    d.push(dir);
    vec![s, d, sandbox.arg().into()]
}

/// virtiofsd serving `dir` read-only on `socket`.
pub fn virtiofsd_readonly(
    socket: &std::path::Path,
    dir: &std::path::Path,
    sandbox: VfsSandbox,
) -> Vec<OsString> {
    let mut v = virtiofsd_base(socket, dir, sandbox);
    v.extend(["--readonly".into(), "--cache=auto".into()]);
    v
}

/// virtiofsd serving `dir` writable (a root directory, a working directory): extended
/// attributes on (systemd and package managers use them).
pub fn virtiofsd_writable(
    socket: &std::path::Path,
    dir: &std::path::Path,
    sandbox: VfsSandbox,
) -> Vec<OsString> {
    let mut v = virtiofsd_base(socket, dir, sandbox);
    v.extend(["--cache=auto".into(), "--xattr".into()]);
    v
}

/// [`virtiofsd_readonly`] started by this process.
pub fn virtiofsd_args(socket: &std::path::Path, dir: &std::path::Path) -> Vec<OsString> {
    virtiofsd_readonly(socket, dir, VfsSandbox::here())
}

/// [`virtiofsd_writable`] started by this process.
pub fn virtiofsd_rootfs_args(socket: &std::path::Path, dir: &std::path::Path) -> Vec<OsString> {
    virtiofsd_writable(socket, dir, VfsSandbox::here())
}

/// Decides the accelerator for a guest of `arch`: KVM only for the host's own arch, and
/// only when `/dev/kvm` opens and the CPU has vmx or svm (a /dev/kvm without them hangs the
/// guest at "Booting from ROM", see the notes); KVM asked for another arch is refused.
pub fn accel_for(requested: Accel, arch: Arch) -> Result<Accel, super::GuestError> {
    if Arch::host() == Some(arch) {
        return Ok(probe_accel(requested));
    }
    match requested {
        Accel::Kvm => Err(super::GuestError::Refused(format!(
            "KVM runs guests of this host's own architecture only; boot the {arch} kernel under TCG (--accel tcg or auto)"
        ))),
        Accel::Auto | Accel::Tcg => Ok(Accel::Tcg),
    }
}

/// Decides the accelerator for a guest of the host's arch (see [`accel_for`]).
pub fn probe_accel(requested: Accel) -> Accel {
    if requested != Accel::Auto {
        return requested;
    }
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpu_virt = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    });
    if kvm_opens && cpu_virt {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(accel: Accel) -> GuestSpec {
        GuestSpec {
            arch: Arch::X86_64,
            kernel: "/d/boot/vmlinuz-6.12-x-0123456789ab".into(),
            initrd: "/s/initramfs.cpio".into(),
            shares: shares("/s/modules.sock".into(), None),
            socket_fds: Vec::new(),
            memory_mib: 512,
            cpus: 2,
            accel,
            append: vec!["quiet".into()],
        }
    }

    #[test]
    fn tcg_guest_line() {
        let a: Vec<String> = qemu_args(&spec(Accel::Tcg))
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let joined = a.join(" ");
        assert!(joined.contains("-accel tcg -smp 2 -m 512M"));
        assert!(
            joined.contains("memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem")
        );
        assert!(joined.contains("-chardev socket,id=modules,path=/s/modules.sock -device vhost-user-fs-pci,chardev=modules,tag=modules"));
        assert!(
            joined
                .contains("-kernel /d/boot/vmlinuz-6.12-x-0123456789ab -initrd /s/initramfs.cpio")
        );
        assert_eq!(
            a.last().unwrap(),
            "console=ttyS0 panic=-1 rdinit=/init pci=noacpi quiet"
        );
        assert!(a.contains(&"-no-reboot".to_owned()));
        assert!(!a.contains(&"host".to_owned()));
    }

    #[test]
    fn other_arches_boot_the_virt_machine_with_their_console() {
        let line = |arch: Arch| {
            let g = GuestSpec {
                arch,
                ..spec(Accel::Tcg)
            };
            let a: Vec<String> = qemu_args(&g)
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            a.join(" ")
        };
        let arm = line(Arch::Arm64);
        assert!(
            arm.contains("-accel tcg -M virt -cpu cortex-a57 -smp 2"),
            "{arm}"
        );
        assert!(
            arm.ends_with("console=ttyAMA0 panic=-1 rdinit=/init quiet"),
            "{arm}"
        );
        assert!(arm.contains("vhost-user-fs-pci,chardev=modules,tag=modules"));
        let rv = line(Arch::Riscv64);
        assert!(
            rv.contains("-accel tcg -M virt -bios default -smp 2"),
            "{rv}"
        );
        assert!(
            rv.ends_with("console=ttyS0 panic=-1 rdinit=/init quiet"),
            "{rv}"
        );
        let x86 = line(Arch::X86_64);
        assert!(!x86.contains("-M ") && !x86.contains("-bios"), "{x86}");
    }

    #[test]
    fn kvm_is_for_the_hosts_own_arch_only() {
        assert_eq!(accel_for(Accel::Tcg, Arch::Arm64).unwrap(), Accel::Tcg);
        assert_eq!(accel_for(Accel::Auto, Arch::Riscv64).unwrap(), Accel::Tcg);
        let e = accel_for(Accel::Kvm, Arch::Arm64).unwrap_err().to_string();
        assert!(
            e.contains("KVM runs guests of this host's own architecture only"),
            "{e}"
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(accel_for(Accel::Kvm, Arch::X86_64).unwrap(), Accel::Kvm);
    }

    #[test]
    fn a_person_gets_the_console_without_signals() {
        let a: Vec<String> = on_terminal(qemu_args(&spec(Accel::Tcg)))
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let joined = a.join(" ");
        assert!(joined.contains("-chardev stdio,id=con,mux=on,signal=off -serial chardev:con -mon chardev=con,mode=readline"), "{joined}");
        assert!(!joined.contains("-serial stdio"));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let a: Vec<String> = qemu_args(&spec(Accel::Kvm))
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert!(a.join(" ").contains("-accel kvm -cpu host"));
    }

    #[test]
    fn virtiofsd_line() {
        let a = virtiofsd_readonly(
            "/s/m.sock".as_ref(),
            "/d/lib/modules/r".as_ref(),
            VfsSandbox::Namespace,
        );
        assert_eq!(
            a,
            vec![
                "--socket-path=/s/m.sock",
                "--shared-dir=/d/lib/modules/r",
                "--sandbox=namespace",
                "--readonly",
                "--cache=auto"
            ]
        );
        let here = virtiofsd_args("/s/m.sock".as_ref(), "/d".as_ref());
        assert!(here.contains(&VfsSandbox::here().arg().into()));
        assert_eq!(probe_accel(Accel::Tcg), Accel::Tcg);
        let r = virtiofsd_rootfs_args("/s/r.sock".as_ref(), "/srv/root".as_ref());
        assert!(
            !r.contains(&"--readonly".into()),
            "the root share is writable"
        );
        assert!(r.contains(&"--xattr".into()));
    }

    #[test]
    fn a_root_directory_is_a_second_share() {
        let mut g = spec(Accel::Tcg);
        g.shares = shares("/s/modules.sock".into(), Some("/s/rootfs.sock".into()));
        let joined: String = qemu_args(&g)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("-chardev socket,id=rootfs,path=/s/rootfs.sock -device vhost-user-fs-pci,chardev=rootfs,tag=rootfs"), "{joined}");
        assert!(joined.contains("tag=modules"));
        // Handed over: the sockets as inherited descriptors.
        g.socket_fds = vec![7, 8];
        let joined: String = qemu_args(&g)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            joined.contains("-chardev socket,id=modules,fd=7 "),
            "{joined}"
        );
        assert!(
            joined.contains("-chardev socket,id=rootfs,fd=8 "),
            "{joined}"
        );
        assert!(!joined.contains("path="), "{joined}");
    }
}
