//! The developer's loop for real: a Linux worktree with uncommitted edits is built as it is
//! (a snapshot through a temporary index), the guest shows the edit, the worktree is left
//! as it was, and reverting the edit answers the earlier identity from the store.

use std::path::Path;

use crate::support::git::git;
use crate::support::{Manifest, TestContext, fixtures, fs};

/// What `git status` and the index say of a worktree: unchanged by a build.
fn worktree_state(dir: &Path) -> (String, String, Vec<u8>) {
    let index = git(dir, &["rev-parse", "--git-path", "index"]);
    let index = if Path::new(&index).is_absolute() {
        index.into()
    } else {
        dir.join(index)
    };
    (
        git(dir, &["status", "--porcelain", "--untracked-files=all"]),
        git(dir, &["rev-parse", "HEAD"]),
        fs::read(index),
    )
}

/// The files Kconfig's syncconfig writes from a build directory's `.config`.
fn kconfig_derived(build: &Path) -> Vec<String> {
    [
        "include/config/auto.conf",
        "include/config/auto.conf.cmd",
        "include/generated/autoconf.h",
        "include/generated/rustc_cfg",
    ]
    .iter()
    .map(|name| fs::read_string(build.join(name)))
    .collect()
}

#[test]
#[ignore = "builds kernels: scripts/test.sh"]
fn a_worktree_builds_as_it_is_and_the_guest_runs_the_edit() {
    // The same config as the gcc fixture: compiled after it, from the ccache it warmed (in
    // parallel with it, it was a third cold compile).
    fixtures::tiny_gcc();
    let ctx = TestContext::with_private_mirror("devloop");
    let dev = ctx.path().join("dev");
    let dev_s = dev.to_str().unwrap();
    git(
        &ctx.mirror(),
        &[
            "worktree",
            "add",
            "--quiet",
            "-b",
            "dev-loop",
            dev_s,
            "v6.12.118",
        ],
    );
    let base = git(&dev, &["rev-parse", "HEAD"]);
    let build = || {
        ctx.kforge(["build", "--preset", "tiny_guest_defconfig"])
            .cwd(&dev)
            .run()
    };
    // Inside the worktree, without a ref: its files are built, labelled by its branch.
    let clean: Manifest = build().success().stderr_has("building the worktree").json();
    assert_eq!(clean.ref_kind, "worktree");
    assert_eq!(clean.label, "dev-loop");
    let w = clean
        .worktree
        .clone()
        .expect("the manifest names the worktree");
    assert_eq!(w.path, dev_s);
    assert_eq!(w.branch.as_deref(), Some("dev-loop"));
    assert_eq!(w.base_commit, base);
    assert!(!w.local_changes && w.changed_paths.is_empty(), "{w:?}");
    assert_eq!(clean.commit, w.commit);
    // A new identity of the fixture's configuration, in a fresh slot: ccache answers its
    // objects in direct mode (it hashes the configuration without the identity), instead of
    // preprocessing every file again to find them.
    let log: serde_json::Value = ctx.kforge(["log", "1"]).run().success().json();
    let c = &log["runs"][0]["figures"]["ccache"];
    let (direct, misses) = (
        c["direct_hits"].as_u64().unwrap(),
        c["misses"].as_u64().unwrap(),
    );
    assert!(
        direct > 500 && direct > 20 * misses && c["hits"].as_u64().unwrap() - direct < 20,
        "{c}"
    );

    // Edit a file the guest shows, add a new source file, leave an ignored one.
    let version_c = dev.join("init/version.c");
    let original = fs::read_string(&version_c);
    fs::write(
        &version_c,
        original.replacen("\"%s version %s\"", "\"%s version %s kforge-edit\"", 1),
    );
    fs::write(dev.join("init/kforge_note.txt"), "new and untracked\n");
    fs::write(dev.join("init/ignored.o"), "ignored by .gitignore\n");
    let before = worktree_state(&dev);
    let clean_config = fs::read_string(&clean.config);
    let out = build().success();
    // Kconfig reads nothing the edit changed: the base .config of the clean tree serves,
    // and the new identity is all that changed in the slot's synced configuration.
    for said in ["what Kconfig reads is unchanged", "make runs no syncconfig"] {
        assert!(out.stderr.contains(said), "{}", out.stderr);
    }
    let dirty: Manifest = out.json();
    let without_localversion = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with("CONFIG_LOCALVERSION="))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        without_localversion(&fs::read_string(&dirty.config)),
        without_localversion(&clean_config)
    );
    assert_eq!(
        worktree_state(&dev),
        before,
        "the build left the worktree's status, HEAD and index as they were"
    );
    // The new identity reached make without Kconfig: the files syncconfig writes from the
    // .config were brought along (and are compared with Kconfig's own below).
    let build_dir = Path::new(&dirty.build_dir);
    let synced = kconfig_derived(build_dir);
    let localversion = &dirty.uts_release[dirty.version.len()..];
    assert!(
        synced[0].contains(&format!("\nCONFIG_LOCALVERSION={localversion}\n")),
        "{}",
        synced[0]
    );
    let modified = |name: &str| fs::mtime(build_dir.join(name));
    assert!(modified("include/config/auto.conf") >= modified(".config"));
    assert_eq!(dirty.label, "dev-loop-dirty");
    assert_ne!(dirty.digest, clean.digest);
    assert!(dirty.reused.is_none(), "the edit was compiled");
    let w = dirty.worktree.clone().unwrap();
    assert!(w.local_changes);
    assert_eq!(w.base_commit, base);
    assert_eq!(
        w.changed_paths,
        vec![
            "init/kforge_note.txt".to_owned(),
            "init/version.c".to_owned()
        ]
    );
    // The guest runs the edited kernel (the slot's last build).
    let r = ctx
        .kforge(["run", "--accel", "tcg", "--", "cat", "/proc/version"])
        .cwd(&dev)
        .run()
        .success();
    assert!(
        r.stdout.starts_with(&format!(
            "Linux version {} kforge-edit (",
            dirty.uts_release
        )),
        "{}",
        r.stdout
    );
    // The same files again: the same identity, not compiled again.
    let again: Manifest = build().success().json();
    assert_eq!(again.uts_release, dirty.uts_release);
    assert!(again.reused.is_some(), "{again:?}");

    // Built again from Kconfig on (no memory, no store), the same identity's build
    // directory holds byte for byte what kforge wrote in Kconfig's place.
    let rebuilt: Manifest = ctx
        .kforge(["build", "--preset", "tiny_guest_defconfig", "--reuse=false"])
        .cwd(&dev)
        .run()
        .success()
        .json();
    assert_eq!(rebuilt.uts_release, dirty.uts_release);
    assert!(rebuilt.reused.is_none(), "{rebuilt:?}");
    assert_eq!(kconfig_derived(Path::new(&rebuilt.build_dir)), synced);

    // Revert the edits: the earlier identity, answered without compiling.
    fs::write(&version_c, &original);
    std::fs::remove_file(dev.join("init/kforge_note.txt")).unwrap();
    let reverted: Manifest = build().success().json();
    assert_eq!(reverted.uts_release, clean.uts_release);
    assert!(reverted.reused.is_some(), "{reverted:?}");

    // What cannot be built as a worktree is refused before anything is touched.
    let plain = ctx.path().join("not-git");
    std::fs::create_dir_all(&plain).unwrap();
    ctx.kforge(["build", "--worktree"])
        .arg(&plain)
        .run()
        .refused("cannot be built as a worktree");
    ctx.kforge(["build", "--worktree", dev_s, "--git-ref", "v6.12.118"])
        .run()
        .code(2)
        .stderr_has("cannot be used with");
}
