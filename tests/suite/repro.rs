//! `kforge repro`: an identity rebuilt in another slot with what must not matter varied,
//! its run layer compared with the store's byte by byte; and the manifest's `reproducible`.
//! On the suite's tiny gcc kernel, the rebuild through the suite's ccache (`--ccache`).

use crate::support::{Manifest, ReproReport, TINY, TestContext, fixtures, fs, tag};

#[test]
#[ignore = "builds kernels: scripts/test.sh"]
fn repro_proves_a_tiny_kernel_reproducible_and_names_what_a_non_reproducible_one_changes() {
    let ctx = TestContext::new("repro");
    let a = ctx.adopt(fixtures::tiny_gcc());

    // Before anything was checked the manifest says unknown, and how to check.
    let request = ctx.path().join("tiny.json");
    fs::write(
        &request,
        format!(
            r#"{{"git_ref": "{}", "preset": "tiny_guest_defconfig"}}"#,
            tag()
        ),
    );
    let before: Manifest = ctx
        .kforge(["build", "--request", request.to_str().unwrap()])
        .run()
        .success()
        .json();
    assert_eq!(before.uts_release, a.uts_release);
    assert_eq!(before.reused.as_deref(), Some("store"));
    let unknown = before.reproducible.expect("reproducible is said");
    assert_eq!(unknown.verdict, "unknown");
    assert!(
        unknown
            .reason
            .contains(&format!("kforge repro {}", a.entry())),
        "{}",
        unknown.reason
    );

    // The request rebuilt in slot 1 (the original's is 0): every file the same.
    let r = ctx
        .kforge(["repro", request.to_str().unwrap(), "--ccache"])
        .run()
        .success();
    let report: ReproReport = r.json();
    assert_eq!(report.identity, a.entry());
    assert_eq!(report.verdict, "true", "{report:?}");
    assert_eq!((report.original_slot, report.rebuild_slot), (0, 1));
    assert!(report.differing.is_empty(), "{:?}", report.differing);
    assert!(report.only_in_original.is_empty() && report.only_in_rebuild.is_empty());
    let rel = &a.uts_release;
    for file in [
        format!("boot/vmlinuz-{rel}"),
        format!("boot/System.map-{rel}"),
        format!("boot/config-{rel}"),
        format!("lib/modules/{rel}/modules.dep"),
        format!("lib/modules/{rel}/kernel/fs/nls/nls_utf8.ko"),
    ] {
        assert!(report.compared.contains(&file), "{file} not compared");
    }
    // Every file of the store's run layer was compared.
    let layer: serde_json::Value = serde_json::from_slice(&fs::read(
        ctx.store()
            .join("run")
            .join(a.entry())
            .join("kforge-layer.json"),
    ))
    .unwrap();
    assert_eq!(
        report.compared.len(),
        layer["files"].as_array().unwrap().len()
    );
    // The rebuild really ran in another slot, from its own checkout, as another user.
    let rebuilt: Manifest = serde_json::from_slice(&fs::read(&report.rebuild_manifest)).unwrap();
    assert_eq!(rebuilt.worker_index, 1);
    assert_eq!(rebuilt.uts_release, a.uts_release);
    assert_eq!(rebuilt.reused, None, "the rebuild compiled");
    assert!(rebuilt.destdir.starts_with(&*ctx.slot(1).to_string_lossy()));
    let varied: Vec<&str> = report.variations.iter().map(|v| v.what.as_str()).collect();
    for what in ["slot", "umask", "user", "time", "host name"] {
        assert!(varied.contains(&what), "{what} not in {varied:?}");
    }
    assert!(r.stderr.contains("rebuilding"), "{}", r.stderr);
    // The same identity through the same ccache: the compressed kernel's piggy.S has the same
    // text, so ccache answers it, but it cannot see what `.incbin` embeds; the compile step
    // compiled it again (and the boot image still matched, above).
    let said = r
        .stderr
        .lines()
        .find(|l| l.contains("cannot check what `.incbin` embeds there: compiled again"));
    assert!(
        said.is_some_and(|l| l.contains("arch/x86/boot/compressed/piggy.S")),
        "{}",
        r.stderr
    );
    // From now on the manifest carries the verdict.
    let after: Manifest = ctx
        .kforge(["build", "--request", request.to_str().unwrap()])
        .run()
        .success()
        .json();
    let said = after.reproducible.expect("reproducible is said");
    assert_eq!(said.verdict, "true");
    assert!(
        said.reason.starts_with("kforge repro: all "),
        "{}",
        said.reason
    );

    // reproducible=false: said before the build, and a rebuild names what moved (the
    // kernel's own build time, user and host are in the image). Built in slot 1, where the
    // rebuild above left its objects (so only what names the build's time recompiles), and
    // rebuilt by repro in slot 0.
    let r = ctx
        .kforge(["build", tag(), "--reproducible=false"])
        .args(TINY)
        .worker(1)
        .run()
        .success();
    assert!(
        r.stderr
            .contains("this build is not reproducible: reproducible is off"),
        "{}",
        r.stderr
    );
    let loose: Manifest = r.json();
    assert_ne!(loose.digest, a.digest);
    let said = loose.reproducible.clone().expect("reproducible is said");
    assert_eq!(said.verdict, "false");
    assert!(
        said.reason.contains("reproducible is off"),
        "{}",
        said.reason
    );
    // By identity: the request comes from the run record.
    let r = ctx
        .kforge(["repro", &loose.entry(), "--ccache"])
        .run()
        .code(1);
    let report: ReproReport = r.json();
    assert_eq!(report.verdict, "false");
    assert_eq!((report.original_slot, report.rebuild_slot), (1, 0));
    let image = format!("boot/vmlinuz-{}", loose.uts_release);
    let d = report
        .differing
        .iter()
        .find(|d| d.path == image)
        .unwrap_or_else(|| panic!("{image} not named: {:?}", report.differing));
    assert_ne!(d.original_sha256, d.rebuild_sha256);
    assert!(
        d.first_difference.contains("first differing byte"),
        "{}",
        d.first_difference
    );
    assert!(report.reason.contains(&image), "{}", report.reason);
    // diffoscope (installed by the project's scripts) says what it sees in the image.
    let said = d
        .diffoscope
        .as_deref()
        .expect("diffoscope's report on the image");
    assert!(said.contains(&image), "{said}");
    // The modules do not carry the build's time or host: they stay the same.
    let ko = format!(
        "lib/modules/{}/kernel/fs/nls/nls_utf8.ko",
        loose.uts_release
    );
    assert!(report.compared.contains(&ko));
    assert!(
        !report.differing.iter().any(|d| d.path == ko),
        "{ko} differs"
    );

    // An identity the store lacks is refused before anything is built.
    ctx.kforge(["repro", "kernel-6.12.118-vanilla-000000000000"])
        .run()
        .code(2)
        .stderr_has("not in the store");
}
