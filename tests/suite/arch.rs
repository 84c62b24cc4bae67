//! Other architectures for real: the arm64 tiny guest cross-built with Debian's gcc and with
//! clang, the riscv64 one with gcc, each booted under TCG in its own QEMU with an initramfs of
//! that arch's busybox; and the inputs that must be refused before anything is touched.

use std::path::Path;

use crate::support::kernel::{assert_release_format, vermagic};
use crate::support::procs::assert_no_guests;
use crate::support::{
    BootReport, Manifest, TINY, TestContext, TestRun, VmDefinition, fixtures, fs, refused, version,
};

/// What every cross build must show: the arch in the manifest and the identity's flags, a
/// boot image of that arch (its header's magic, as `file` reads it), and modules whose
/// vermagic is the identity.
#[track_caller]
fn check_cross_build(m: &Manifest, arch: &str, machine: &str, magic: [u8; 4]) {
    assert_eq!(m.reused, None, "the fixture's build compiled");
    assert_release_format(&m.uts_release, version(), "vanilla");
    assert_eq!(m.arch, arch);
    assert_eq!(m.uts_machine, machine);
    let kbuild_arch = if arch == "riscv64" { "riscv" } else { arch };
    assert!(
        m.identity
            .make_flags
            .contains(&format!("ARCH={kbuild_arch}")),
        "{:?}",
        m.identity.make_flags
    );
    let image = m.bz_image.as_deref().expect("an installed boot image");
    assert!(
        image.ends_with(&format!("/boot/vmlinuz-{}", m.uts_release)),
        "{image}"
    );
    // arm64 and riscv64 Image headers carry their magic at offset 56 ("ARM\x64", "RSC\x05").
    let bytes = fs::read(image);
    assert_eq!(bytes[56..60], magic, "{image} is not an {arch} Image");
    let mods = Path::new(m.modules_dir.as_deref().expect("modules installed"));
    let ko = mods.join("kernel/fs/nls/nls_utf8.ko");
    let elf = fs::read(&ko);
    let want_machine: u16 = match arch {
        "arm64" => 183,
        _ => 243,
    };
    assert_eq!(
        u16::from_le_bytes([elf[18], elf[19]]),
        want_machine,
        "{} is not an {arch} object",
        ko.display()
    );
    assert!(
        vermagic(&ko).starts_with(&format!("{} ", m.uts_release)),
        "{}",
        vermagic(&ko)
    );
}

/// The `.config` a cross build installed beside its boot image in the store (the fixture's
/// slot, where `config` points, is dropped once built).
fn installed_config(m: &Manifest) -> String {
    let image = Path::new(m.bz_image.as_deref().expect("an installed boot image"));
    fs::read_string(image.with_file_name(format!("config-{}", m.uts_release)))
}

#[test]
#[ignore = "builds kernels: scripts/test.sh"]
fn arm64_kernels_cross_build_with_gcc_and_clang() {
    let gcc = &fixtures::tiny_arm64_gcc().manifest;
    check_cross_build(gcc, "arm64", "aarch64", *b"ARM\x64");
    assert_eq!(gcc.compiler, "gcc");
    assert!(
        gcc.identity
            .make_flags
            .contains(&"CROSS_COMPILE=aarch64-linux-gnu-".to_owned())
    );
    assert!(
        gcc.identity
            .toolchain
            .cc
            .starts_with("aarch64-linux-gnu-gcc "),
        "{}",
        gcc.identity.toolchain.cc
    );
    assert!(
        gcc.linux_compiler.starts_with("aarch64-linux-gnu-gcc"),
        "{}",
        gcc.linux_compiler
    );
    let config = installed_config(gcc);
    assert!(config.contains("\nCONFIG_ARM64=y\n"));
    assert!(config.contains("\nCONFIG_SERIAL_AMBA_PL011_CONSOLE=y\n"));

    let clang = &fixtures::tiny_arm64_clang().manifest;
    check_cross_build(clang, "arm64", "aarch64", *b"ARM\x64");
    assert!(clang.identity.make_flags.contains(&"LLVM=1".to_owned()));
    assert!(
        !clang
            .identity
            .make_flags
            .iter()
            .any(|f| f.starts_with("CROSS_COMPILE="))
    );
    assert!(
        clang.linux_compiler.contains("LLD"),
        "{}",
        clang.linux_compiler
    );
    assert!(installed_config(clang).contains("\nCONFIG_CC_IS_CLANG=y\n"));

    // The same ref and preset name: three identities, one per arch and compiler.
    let x86 = &fixtures::tiny_gcc().manifest;
    assert_eq!(x86.arch, "x86_64");
    assert_eq!(gcc.identity.tree, x86.identity.tree);
    assert_eq!(clang.identity.tree, x86.identity.tree);
    assert_ne!(gcc.digest, x86.digest);
    assert_ne!(gcc.digest, clang.digest);
    assert_ne!(clang.digest, fixtures::tiny_clang().manifest.digest);
}

/// `kforge boot --check` of an entry, under TCG.
fn boot(ctx: &TestContext, entry: &str) -> BootReport {
    ctx.kforge(["boot", "--check", entry, "--accel", "tcg"])
        .run()
        .success()
        .json()
}

#[test]
#[ignore = "boots kernels in QEMU: scripts/test.sh"]
fn arm64_kernels_boot_run_and_test_under_tcg() {
    let ctx = TestContext::new("arm64-guest");
    // The gcc kernel under Debian's qemu-system-aarch64, the clang one under the suite's
    // kforge-built QEMU (its aarch64 target with the minimal device set: the virt machine).
    let qemu = ctx.adopt_qemu(fixtures::qemu());
    let own_binary = ctx
        .store()
        .join("run")
        .join(&qemu)
        .join("usr/local/bin/qemu-system-aarch64");
    for (f, built_qemu) in [
        (fixtures::tiny_arm64_gcc(), false),
        (fixtures::tiny_arm64_clang(), true),
    ] {
        let m = ctx.adopt(f);
        let report = if built_qemu {
            let r = ctx
                .kforge(["-v", "boot", "--check", &m.entry(), "--accel", "tcg"])
                .args(["--qemu", &qemu])
                .run()
                .success()
                .stderr_has(&format!("$ {} -sandbox on", own_binary.display()));
            r.json::<BootReport>()
        } else {
            boot(&ctx, &m.entry())
        };
        assert!(report.passed, "{report:?}");
        assert_eq!(
            report.guest_release.as_deref(),
            Some(m.uts_release.as_str())
        );
        assert!(report.modules_mounted && report.module_loaded, "{report:?}");
        assert_eq!(report.accel, "tcg");
        assert_no_guests(ctx.path());
    }
    let m = ctx.adopt(fixtures::tiny_arm64_gcc());
    let entry = m.entry();
    // A command in it: the guest is an aarch64 machine running this identity.
    let r = ctx
        .kforge([
            "run",
            entry.as_str(),
            "--",
            "sh",
            "-c",
            "uname -m; uname -r; exit 3",
        ])
        .run()
        .code(3);
    assert_eq!(r.stdout, format!("aarch64\n{}\n", m.uts_release));
    // The shell's script mode.
    let r = ctx
        .kforge(["shell", entry.as_str()])
        .run_with_stdin(b"cat /proc/sys/kernel/osrelease; grep -c ^processor /proc/cpuinfo\n")
        .success();
    assert_eq!(r.stdout, format!("{}\n1\n", m.uts_release));
    // KUnit from the same kernel: the list suite loads and passes, case by case.
    let run: TestRun = ctx
        .kforge(["test", "kunit", entry.as_str(), "--suite", "list*"])
        .run()
        .success()
        .json();
    assert_eq!(run.run.outcome, "completed");
    assert_eq!(run.run.identity, m.uts_release);
    assert_eq!(
        run.case(&["list-kunit-test", "list_test_list_init"]).status,
        "pass"
    );
    let list: Vec<_> = run
        .results
        .iter()
        .filter(|c| c.path.len() == 2 && c.path[0] == "list-kunit-test")
        .collect();
    assert!(
        list.len() > 30 && list.iter().all(|c| c.status == "pass"),
        "{list:?}"
    );
    // A defined guest of it: its unit runs qemu-system-aarch64 on the virt machine.
    let units = ctx.path().join("units");
    let def: VmDefinition = ctx
        .kforge(["vm", "--unit-dir"])
        .arg(&units)
        .args(["define", "a1", "--manifest", entry.as_str()])
        .run()
        .success()
        .json();
    assert_eq!(def.arch, "arm64");
    assert!(def.qemu.ends_with("/qemu-system-aarch64"), "{}", def.qemu);
    let unit = fs::read_string(units.join("qemu-system@a1.service.d/kforge.conf"));
    assert!(unit.contains("qemu-system-aarch64"), "{unit}");
    assert!(
        unit.contains("\"-M\" \"virt\" \"-cpu\" \"cortex-a57\""),
        "{unit}"
    );
    assert!(unit.contains("console=ttyAMA0"), "{unit}");
    // KVM cannot run an arm64 guest on this host: refused, nothing started.
    ctx.kforge(["boot", "--check", entry.as_str(), "--accel", "kvm"])
        .run()
        .code(2)
        .stderr_has("KVM runs guests of this host's own architecture only");
    assert_no_guests(ctx.path());
}

#[test]
#[ignore = "builds and boots kernels: scripts/test.sh"]
fn riscv64_kernel_builds_and_boots_under_opensbi() {
    let ctx = TestContext::new("riscv64");
    let m = ctx.adopt(fixtures::tiny_riscv64_gcc());
    check_cross_build(&m, "riscv64", "riscv64", *b"RSC\x05");
    assert!(
        m.identity
            .make_flags
            .contains(&"CROSS_COMPILE=riscv64-linux-gnu-".to_owned())
    );
    assert_ne!(m.digest, fixtures::tiny_arm64_gcc().manifest.digest);
    let report = boot(&ctx, &m.entry());
    assert!(report.passed, "{report:?}");
    assert_eq!(
        report.guest_release.as_deref(),
        Some(m.uts_release.as_str())
    );
    assert!(report.module_loaded, "{report:?}");
    let r = ctx
        .kforge(["run", m.entry().as_str(), "--", "uname", "-m"])
        .run()
        .success();
    assert_eq!(r.stdout, "riscv64\n");
    assert_no_guests(ctx.path());
}

#[test]
fn a_wrong_arch_is_refused_before_anything_is_touched() {
    let ctx = TestContext::with_mini_mirror("arch-refusals");
    refused(
        &ctx,
        &["build", "--arch", "sparc"],
        "invalid value 'sparc' for '--arch <ARCH>'",
    );
    // A preset of another arch, named with its arch or found only there.
    refused(
        &ctx,
        &[
            "build",
            TINY[0],
            "arm64/tiny_guest_defconfig",
            "--arch",
            "riscv64",
        ],
        "the preset `arm64/tiny_guest_defconfig` is for arm64, and this build is for riscv64; its presets: imageless_defconfig, tiny_guest_defconfig",
    );
    let lib = ctx.path().join("lib");
    fs::write(
        lib.join("defconfigs/arm64/only_arm_defconfig"),
        "CONFIG_ARM64=y\n",
    );
    let lib_arg = lib.to_str().unwrap();
    refused(
        &ctx,
        &["build", "--library", lib_arg, TINY[0], "only_arm_defconfig"],
        "the preset `only_arm_defconfig` is for arm64, and this build is for x86_64",
    );
    // A fragment of another arch.
    refused(
        &ctx,
        &[
            "build",
            "--arch",
            "arm64",
            "--fragment",
            "core/base",
            "--fragment",
            "arch/x86_64",
        ],
        "the fragment `arch/x86_64` is for x86_64, and this build is for arm64; use arch/arm64",
    );
    // A request file's arch is checked as the flag is.
    let req = ctx.path().join("bad-arch.json");
    fs::write(&req, r#"{"arch": "aarch64"}"#);
    refused(
        &ctx,
        &["build", "--request", req.to_str().unwrap()],
        "aarch64",
    );
    // The cross compiler missing: exit 3 naming Debian's package (PATH holds git only).
    let bin = ctx.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(which("git"), bin.join("git")).unwrap();
    let r = ctx
        .kforge(["build", "--arch", "arm64"])
        .env("PATH", &bin)
        .run()
        .code(3)
        .stderr_has("aarch64-linux-gnu-gcc")
        .stderr_has("gcc-aarch64-linux-gnu");
    assert!(r.stdout.is_empty());
    assert!(!ctx.workers().exists());
}

/// Where `program` is on PATH.
fn which(program: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}
