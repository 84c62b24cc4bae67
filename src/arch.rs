//! Architectures: what kforge builds and boots for x86_64, arm64 and riscv64, from an x86_64
//! host. One table of facts per architecture (Kbuild's `ARCH`, Debian's cross compiler, the
//! boot image, QEMU's machine and console, the ELF machine a guest's busybox must have), so
//! that the kernel flow and the guest layer read the same answers.

use serde::{Deserialize, Serialize};

/// The architecture a kernel is built for (and its guest boots as).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit x86 (the host's own: no cross compiler, KVM when the host has it).
    #[default]
    #[value(name = "x86_64")]
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit ARM (`ARCH=arm64`, gcc-aarch64-linux-gnu, QEMU's `virt` machine).
    Arm64,
    /// 64-bit RISC-V (`ARCH=riscv`, gcc-riscv64-linux-gnu, QEMU's `virt` machine with
    /// OpenSBI).
    Riscv64,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Arm64, Arch::Riscv64];

    /// The name users write (`--arch`, the request's `arch`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// Kbuild's `ARCH=`.
    pub fn kbuild(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
            Arch::Riscv64 => "riscv",
        }
    }

    /// The directory under `arch/` (`SRCARCH`).
    pub fn srcarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86",
            Arch::Arm64 => "arm64",
            Arch::Riscv64 => "riscv",
        }
    }

    /// What `uname -m` prints in the guest (the manifest's `uts_machine`).
    pub fn uts_machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The architecture a manifest's `uts_machine` names.
    pub fn from_uts_machine(m: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.uts_machine() == m)
    }

    /// The architecture of the machine kforge runs on.
    pub fn host() -> Option<Arch> {
        Arch::from_uts_machine(std::env::consts::ARCH)
    }

    /// `CROSS_COMPILE=` for gcc: Debian's cross toolchain prefix; `None` on the host's own.
    pub fn cross_prefix(self) -> Option<&'static str> {
        if Arch::host() == Some(self) {
            return None;
        }
        Some(match self {
            Arch::X86_64 => "x86_64-linux-gnu-",
            Arch::Arm64 => "aarch64-linux-gnu-",
            Arch::Riscv64 => "riscv64-linux-gnu-",
        })
    }

    /// The boot image make builds by default, relative to the build directory.
    pub fn boot_image(self) -> &'static str {
        match self {
            Arch::X86_64 => "arch/x86/boot/bzImage",
            Arch::Arm64 => "arch/arm64/boot/Image",
            Arch::Riscv64 => "arch/riscv/boot/Image",
        }
    }

    /// The QEMU system emulator, and the Debian package that has it.
    pub fn qemu_system(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Arch::Arm64 => ("qemu-system-aarch64", "qemu-system-arm"),
            Arch::Riscv64 => ("qemu-system-riscv64", "qemu-system-misc"),
        }
    }

    /// QEMU's configure target for this system emulator.
    pub fn qemu_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-softmmu",
            Arch::Arm64 => "aarch64-softmmu",
            Arch::Riscv64 => "riscv64-softmmu",
        }
    }

    /// The serial console the kernel writes to under QEMU.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 | Arch::Riscv64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    /// `e_machine` of this architecture's ELF files.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
            Arch::Riscv64 => 243,
        }
    }

    /// Debian's name of the architecture (`dpkg --print-architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Riscv64 => "riscv64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_differ() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_uts_machine(a.uts_machine()), Some(a));
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
            assert_eq!(serde_json::from_str::<Arch>(&json).unwrap(), a);
            assert!(
                a.boot_image()
                    .starts_with(&format!("arch/{}/", a.srcarch()))
            );
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Arch::X86_64.cross_prefix(), None);
        assert_eq!(Arch::Arm64.cross_prefix(), Some("aarch64-linux-gnu-"));
        assert!(serde_json::from_str::<Arch>("\"aarch64\"").is_err());
    }
}
