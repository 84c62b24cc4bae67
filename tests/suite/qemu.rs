//! The QEMU flow for real: Debian's QEMU source package (imported by
//! `scripts/fixture-qemu.sh`) built by `kforge qemu build` (the suite's QEMU fixture),
//! answered from the store on a second request, repaired when damaged, and booting a
//! kforge-built kernel through the guest layer and through a defined guest's unit.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::fixtures::{self, qemu_build};
use crate::support::git::git;
use crate::support::procs::LockHolder;
use crate::support::systemd::assert_units_verify;
use crate::support::tools::ToolLog;
use crate::support::{
    BootReport, GcReport, LayerRecord, QemuManifest, StoreLs, TestContext, fs, qemu_mirror,
    run_windmill_flow,
};

#[test]
#[ignore = "builds QEMU and boots a kernel with it: scripts/test.sh"]
fn qemu_from_debian_source_builds_is_reused_and_boots_a_kforge_kernel() {
    let ctx = TestContext::new("qemu").with_qemu_mirror();
    let mirror = qemu_mirror();
    let commit = git(mirror, &["rev-parse", "refs/heads/debian/latest"]);
    let version = git(
        mirror,
        &["cat-file", "blob", "refs/heads/debian/latest:VERSION"],
    );

    // A ref the mirror does not have is refused before anything is made.
    ctx.kforge(["qemu", "build", "no/such/ref"])
        .run()
        .code(2)
        .stderr_has("tags include: v7");
    assert!(!ctx.workers().exists());
    // So is a target this QEMU does not have.
    ctx.kforge([
        "qemu",
        "build",
        "debian/latest",
        "--target-list",
        "nope64-softmmu",
    ])
    .run()
    .code(2)
    .stderr_has("x86_64-softmmu");
    assert!(!ctx.workers().exists());

    // First request (the suite's QEMU fixture, in its own home): configured, compiled,
    // installed, published.
    let f = fixtures::qemu();
    let first = f.manifest.clone();
    assert_eq!(first.commit, commit);
    assert_eq!(first.version, version);
    assert_eq!(first.git_ref, "debian/latest");
    assert_eq!(first.ref_kind, "branch");
    assert_eq!(first.release, format!("{version}-{}", first.digest));
    assert_eq!(first.identity, format!("qemu-{}", first.release));
    assert!(
        first.digest.len() == 12 && first.digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{}",
        first.digest
    );
    assert_eq!(first.reused, None);
    assert_eq!(first.target_list, ["x86_64-softmmu", "aarch64-softmmu"]);
    assert_eq!(first.features, "minimal");
    assert_eq!(first.compiler, "gcc");
    assert_eq!(first.schema_version, 1);
    assert_eq!(first.worker_index, f.slot);
    assert!(first.series.is_none());
    assert_eq!(
        first.programs,
        [
            "usr/local/bin/qemu-system-aarch64",
            "usr/local/bin/qemu-system-x86_64"
        ]
    );
    for arg in [
        "--target-list=x86_64-softmmu,aarch64-softmmu",
        // aarch64's minimal device set (the virt machine), which the tree has; x86_64 has none
        "--with-devices-aarch64=minimal",
        "--cc=ccache gcc",
        "--without-default-features",
        "--enable-vhost-user",
        "--enable-seccomp",
        "--disable-debug-info",
    ] {
        assert!(first.configure_args.iter().any(|a| a == arg), "{arg}");
    }
    // The fixture's own options, in the order given.
    let options = &first.inputs.configure_options;
    assert!(
        options
            .windows(fixtures::QEMU_OPTIONS.len())
            .any(|w| w == fixtures::QEMU_OPTIONS),
        "{options:?}"
    );
    assert!(
        first
            .configure_args
            .contains(&format!("--with-pkgversion=kforge-{}", first.identity))
    );
    // The digest's inputs hold neither the slot's path nor the ccache wrapper.
    let inputs = format!("{:?}", first.inputs);
    assert!(
        !inputs.contains(f.home.workers().to_str().unwrap()),
        "{inputs}"
    );
    assert!(!inputs.contains("ccache"), "{inputs}");
    assert_eq!(first.inputs.tree.len(), 40);

    // The binary is the store's copy, and says which identity it is.
    let entry = f.home.store().join("run").join(&first.identity);
    assert_eq!(first.store_entry.as_deref(), Some(entry.to_str().unwrap()));
    let binary = PathBuf::from(first.qemu_binary.clone().unwrap());
    assert_eq!(binary, entry.join("usr/local/bin/qemu-system-x86_64"));
    let out = Command::new(&binary).arg("--version").output().unwrap();
    let said = String::from_utf8(out.stdout).unwrap();
    let line = said.lines().next().unwrap().to_owned();
    assert_eq!(
        line,
        format!(
            "QEMU emulator version {version} (kforge-{})",
            first.identity
        )
    );
    assert_eq!(first.qemu_version.as_deref(), Some(line.as_str()));
    // Byte for byte what install put into destdir/, and recorded with that hash.
    let installed = Path::new(&first.destdir).join("usr/local/bin/qemu-system-x86_64");
    assert_eq!(fs::sha256(&installed), fs::sha256(&binary));
    let record: LayerRecord<QemuManifest> =
        serde_json::from_slice(&fs::read(entry.join("kforge-layer.json"))).unwrap();
    let recorded = record
        .files
        .iter()
        .find(|f| f.path == "usr/local/bin/qemu-system-x86_64")
        .unwrap();
    assert_eq!(recorded.sha256, fs::sha256(&binary));
    assert!(recorded.executable);
    assert_eq!(record.manifest.identity, first.identity);
    // The slot keeps the manifest beside it.
    let kept: QemuManifest =
        serde_json::from_slice(&fs::read(f.home.qemu_slot_manifest(f.slot))).unwrap();
    assert_eq!(kept, first);

    // In the home and warm slot that built it (held for this test alone meanwhile):
    // the second request is answered from the store, and a damaged store copy is repaired.
    f.exclusive(|f| {
        // Second request, while another process holds the slot: the store answers without
        // the slot; meson and ninja are asked their versions only. A request that needs the
        // slot is refused meanwhile (busy).
        let lock = f
            .home
            .qemu_slot(f.slot)
            .parent()
            .unwrap()
            .join(".kforge/qemu/lock");
        let holder = LockHolder::hold(&lock, "-x");
        let tools = ToolLog::new(ctx.path(), &["meson", "ninja"]);
        let r = f
            .kforge(qemu_build())
            .path_prepend(tools.bin())
            .run()
            .success()
            .stderr_has("is in the store: answered without the slot");
        f.kforge(qemu_build())
            .arg("--wipe-build")
            .run()
            .code(4)
            .stderr_has("busy");
        drop(holder);
        let second: QemuManifest = r.json();
        for tool in ["meson", "ninja"] {
            let calls = tools.calls(tool);
            assert!(
                calls.iter().all(|l| l == "--version"),
                "the reused build ran {tool}: {calls:?}"
            );
        }
        assert_eq!(second.reused.as_deref(), Some("store"));
        let mut same = second.clone();
        same.reused = None;
        assert_eq!(
            same, first,
            "a reused build's manifest differs but for `reused`"
        );

        // A damaged store copy is found by verify, and the next request rebuilds and
        // replaces it (the warm build/ has nothing to compile).
        let trace = entry.join("usr/local/share/qemu/trace-events-all");
        fs::flip_byte(&trace, 0, 0x20);
        f.kforge(["store", "verify", &first.identity])
            .run()
            .code(1)
            .stdout_has("usr/local/share/qemu/trace-events-all: sha256 differs from the record");
        let r = f
            .kforge(qemu_build())
            .run()
            .success()
            .stderr_has("is damaged, rebuilding")
            .stderr_has("replaced the damaged copy of");
        let repaired: QemuManifest = r.json();
        assert_eq!(repaired.reused, None);
        assert_eq!(repaired.identity, first.identity);
        f.kforge(["store", "verify", &first.identity])
            .run()
            .success();
        // The committed Windmill flow, module by module in the same slot (`kforge qemu
        // step`, reuse off: it compiles, which here is nothing), gives the same manifest.
        let node = run_windmill_flow(
            f.kforge_env(),
            "windmill/f/qemu/build.flow/flow.yaml",
            &serde_json::json!({
                "git_ref": "debian/latest",
                "configure_options": fixtures::QEMU_OPTIONS,
                "target_list": ["x86_64-softmmu", "aarch64-softmmu"],
                "reuse": false,
                "b4_series": "",
            })
            .to_string(),
        )
        .success()
        .stderr_has("[run-local] configure done")
        .stderr_has("==> compile");
        let stepwise: QemuManifest = node.json();
        assert_eq!(stepwise, first, "step by step differs from kforge qemu build");
        // A run whose compile fails (a ninja that fails but for --version, which the
        // identity reads) is resumed from compile with the recorded results before it.
        let real = Command::new("sh")
            .args(["-c", "command -v ninja"])
            .output()
            .unwrap();
        let real = String::from_utf8(real.stdout).unwrap().trim().to_owned();
        let broken = ctx.path().join("broken-bin");
        fs::write_executable(
            broken.join("ninja"),
            &format!(
                "#!/bin/sh\n[ \"$1\" = --version ] && exec '{real}' \"$@\"\necho 'ninja: broken on purpose' >&2\nexit 1\n"
            ),
        );
        f.kforge(qemu_build())
            .arg("--reuse=false")
            .path_prepend(&broken)
            .run()
            .code(1)
            .stderr_has("step compile failed")
            .stderr_has("broken on purpose");
        let r = f.kforge(["qemu", "resume"]).run().success();
        let r = r.stderr_has("resuming at compile");
        assert!(!r.stderr.contains("==> prepare_worktree"), "{}", r.stderr);
        let resumed: QemuManifest = r.json();
        assert_eq!(resumed, first, "a resumed build's manifest differs");
        f.kforge(["qemu", "resume"])
            .run()
            .refused("nothing to resume");
        let listed: StoreLs = f.kforge(["store", "ls"]).run().success().json();
        assert!(
            listed
                .entries
                .iter()
                .any(|e| e.identity == first.identity
                    && e.commit.as_deref() == Some(commit.as_str())),
            "{listed:?}"
        );
    });

    // The rest, in this test's home with a copy of the entry: the request is answered
    // from it (and the slot's manifest names this store's binary).
    ctx.adopt_qemu(f);
    let own_entry = ctx.store().join("run").join(&first.identity);
    let own_binary = own_entry.join("usr/local/bin/qemu-system-x86_64");
    assert_eq!(fs::sha256(&own_binary), fs::sha256(&binary));
    let here: QemuManifest = ctx.kforge(qemu_build()).run().success().json();
    assert_eq!(here.reused.as_deref(), Some("store"));
    assert_eq!(here.qemu_binary.as_deref(), own_binary.to_str());

    // A kernel, booted with this QEMU by identity: the guest check passes, and the
    // command line kforge ran names the store's binary.
    let kernel = ctx.adopt(fixtures::tiny_gcc());
    let kernel_manifest = ctx.manifest_file(&kernel.entry());
    let r = ctx
        .kforge(["-v", "boot", "--check", &kernel.entry(), "--accel", "tcg"])
        .args(["--qemu", &first.identity])
        .run()
        .success()
        // (under its own seccomp sandbox: the minimal build has it)
        .stderr_has(&format!(
            "$ {} -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny -name kforge-guest:",
            own_binary.display()
        ));
    let report: BootReport = r.json();
    assert!(report.passed, "{report:?}");
    assert_eq!(
        report.guest_release.as_deref(),
        Some(kernel.uts_release.as_str())
    );

    // A defined guest given the QEMU manifest: its unit's ExecStart names the built
    // binary, the units verify, and the guest runs (in the foreground here) and checks out.
    let units = ctx.path().join("units");
    let u = units.to_str().unwrap();
    let slot_manifest = ctx.qemu_slot_manifest(0);
    ctx.kforge(["vm", "--unit-dir", u, "define", "q1", "--oneshot"])
        .args(["--manifest", &kernel.entry(), "--qemu"])
        .arg(&slot_manifest)
        .run()
        .success();
    let dropin = fs::read_string(units.join("qemu-system@q1.service.d/kforge.conf"));
    assert!(
        dropin.contains(&format!("\nExecStart=\"{}\" ", own_binary.display())),
        "{dropin}"
    );
    assert_units_verify(
        &units,
        &["qemu-system@q1.service", "kforge-virtiofsd@q1.service"],
    );
    ctx.kforge(["vm", "--unit-dir", u, "run", "q1", "--timeout", "60"])
        .run()
        .success()
        .stdout_has(&format!("KFORGE-UNAME {}", kernel.uts_release));

    // The entry a defined guest runs is not removed under it, by rm nor by gc; a pinned
    // one is kept by gc; else gc takes QEMU entries as it takes kernels.
    ctx.kforge(["store", "rm", &first.identity])
        .run()
        .code(2)
        .stderr_has("used by a defined guest");
    let gc: GcReport = ctx
        .kforge(["store", "gc", "--older-than", "0s", "--dry-run"])
        .run()
        .success()
        .json();
    let mut in_use = gc.kept_in_use.clone();
    in_use.sort_unstable();
    assert_eq!(in_use, [kernel.uts_release.clone(), first.identity.clone()]);
    ctx.kforge(["vm", "--unit-dir", u, "rm", "q1"])
        .run()
        .success();
    ctx.kforge(["store", "pin", &first.identity])
        .run()
        .success();
    let gc: GcReport = ctx
        .kforge(["store", "gc", "--older-than", "0s", "--dry-run"])
        .run()
        .success()
        .json();
    assert_eq!(gc.kept_pinned, [first.identity.as_str()]);
    assert!(own_entry.exists());
    ctx.kforge(["store", "unpin", &first.identity])
        .run()
        .success();
    let gc: GcReport = ctx
        .kforge(["store", "gc", "--older-than", "0s"])
        .run()
        .success()
        .json();
    assert!(gc.removed.contains(&first.identity), "{gc:?}");
    assert!(!own_entry.exists());
    ctx.kforge(["store", "rm", &first.identity])
        .run()
        .code(2)
        .stderr_has("no store entry");

    // What --qemu is not: a missing file, a manifest of something else, an unknown identity.
    for (arg, says) in [
        ("/nonexistent/qemu-system-x86_64", "neither a file nor"),
        (kernel_manifest.to_str().unwrap(), "is not a QEMU manifest"),
        ("qemu-7.2.22-000000000000", "is not in the store"),
    ] {
        ctx.kforge(["boot", "--check"])
            .arg(&kernel_manifest)
            .args(["--qemu", arg])
            .run()
            .code(2)
            .stderr_has(says);
    }
}
