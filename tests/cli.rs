//! The command line without kernel builds: help, schema, library, mirror commands, and
//! every kind of bad input refused before anything is touched.

mod common;

use std::path::Path;

use common::{Run, TestContext, git};

#[test]
fn build_help_groups_inputs_with_summaries() {
    let ctx = TestContext::with_mirror("help", "/nonexistent".into());
    let help = ctx.run(&["build", "--help"]).ok().stdout;
    for heading in [
        "Worktree: which source is built",
        "Configuration: how .config is produced",
        "Build: compiler, make goals and flags",
        "Reuse: when an identity that already exists is not rebuilt",
        "Installation: what goes into destdir/",
    ] {
        assert!(
            help.contains(heading),
            "missing heading {heading:?} in:\n{help}"
        );
    }
    for flag in [
        "--git-ref",
        "--label",
        "--custom-label",
        "--recreate-build-worktree",
        "--wipe-build",
        "--config-method",
        "--preset",
        "--defconfig",
        "--fragment",
        "--allnoconfig-base",
        "--target",
        "--compiler",
        "--make-flag",
        "--reproducible",
        "--timestamp-from-commit",
        "--reuse",
        "--use-peers",
        "--ccache",
        "--ccache-max-size",
        "--install",
        "--modules-install",
        "--source-symlink",
        "--request",
    ] {
        assert!(help.contains(flag), "missing {flag}");
    }
    // Each group's flags sit under its heading.
    let worktree = help.find("Worktree:").unwrap();
    let config = help.find("Configuration:").unwrap();
    let label = help.find("--label").unwrap();
    assert!(worktree < label && label < config);
}

#[test]
fn schema_is_2020_12_with_groups() {
    let ctx = TestContext::with_mirror("schema", "/nonexistent".into());
    let s: serde_json::Value = ctx.run(&["schema"]).ok().json();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["properties"]["compiler"]["default"], "gcc");
    assert_eq!(s["properties"]["config_method"]["x-group"], "Configuration");
    assert_eq!(s["properties"]["wipe_build"]["title"], "Wipe build/");
    let groups: Vec<&str> = s["x-groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        [
            "Worktree",
            "Configuration",
            "Build",
            "Reuse",
            "Installation"
        ]
    );
}

#[test]
fn library_lists_presets_and_fragments() {
    let ctx = TestContext::with_mirror("library", "/nonexistent".into());
    let l: serde_json::Value = ctx.run(&["library"]).ok().json();
    let presets: Vec<&str> = l["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(presets.contains(&"imageless_defconfig") && presets.contains(&"tiny_guest_defconfig"));
    assert!(
        l["fragments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "debug/kasan")
    );
    // Another library directory replaces the built-in one.
    let other = ctx.dir.path().join("lib");
    std::fs::create_dir_all(other.join("defconfigs")).unwrap();
    std::fs::create_dir_all(other.join("fragments/core")).unwrap();
    std::fs::write(other.join("defconfigs/mine_defconfig"), "CONFIG_64BIT=y\n").unwrap();
    std::fs::write(other.join("fragments/core/x.config"), "CONFIG_64BIT=y\n").unwrap();
    let l: serde_json::Value = ctx
        .run(&["--library", other.to_str().unwrap(), "library"])
        .ok()
        .json();
    assert_eq!(l["presets"], serde_json::json!(["mine_defconfig"]));
    assert_eq!(l["fragments"], serde_json::json!(["core/x"]));
}

/// Asserts a refused request: exit 2, the message, and no slot created.
#[track_caller]
fn refused(ctx: &TestContext, args: &[&str], needle: &str) {
    let r: Run = ctx.run(args);
    assert_eq!(
        r.code, 2,
        "{args:?} should be refused as bad input:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(needle),
        "{args:?}: expected {needle:?} in:\n{}",
        r.stderr
    );
    assert!(!ctx.workers().exists(), "{args:?} touched the workers dir");
    assert!(r.stdout.is_empty());
}

#[test]
fn bad_input_is_refused_before_anything_is_touched() {
    let ctx = TestContext::new("badinput");
    refused(&ctx, &["build", "no-such-ref"], "not in the mirror");
    refused(
        &ctx,
        &["build", "--git-ref=--upload-pack=touch /tmp/kforge-pwned"],
        "like an option",
    );
    refused(&ctx, &["build", "--git-ref=-x"], "like an option");
    refused(&ctx, &["build", "--git-ref", "v1..v2"], "`..`");
    refused(&ctx, &["build", "--label", "a/b"], "may only hold");
    refused(&ctx, &["build", "--label", "../x"], "may only hold");
    refused(&ctx, &["build", "--label", "has space"], "may only hold");
    refused(&ctx, &["build", "--label=--upload-pack=x"], "may only hold");
    refused(
        &ctx,
        &["build", "--label", &"a".repeat(41)],
        "longer than 40",
    );
    refused(
        &ctx,
        &["build", "--preset", "nope_defconfig"],
        "unknown preset `nope_defconfig`",
    );
    refused(
        &ctx,
        &["build", "--preset", "nope_defconfig"],
        "tiny_guest_defconfig",
    );
    refused(
        &ctx,
        &["build", "--fragment", "debug/nope"],
        "unknown fragment `debug/nope`",
    );
    refused(&ctx, &["build", "--fragment", "debug/nope"], "debug/kasan");
    refused(
        &ctx,
        &["build", "--defconfig", "nope_defconfig"],
        "unknown config goal `nope_defconfig`",
    );
    refused(
        &ctx,
        &["build", "--defconfig", "nope_defconfig"],
        "x86_64_defconfig",
    );
    refused(&ctx, &["build", "--defconfig", "menuconfig"], "interactive");
    for flag in [
        "-f",
        "-C/tmp",
        "O=/tmp/out",
        "--eval=all:",
        "-E",
        "KBUILD_OUTPUT=/x",
        "-j64",
        "INSTALL_MOD_PATH=/",
    ] {
        refused(&ctx, &["build", &format!("--make-flag={flag}")], "refused");
    }
    refused(&ctx, &["build", "--make-flag", "notaflag"], "not VAR=VALUE");
    refused(&ctx, &["build", "--target", "install"], "refused");
    refused(&ctx, &["build", "--ccache-max-size", "lots"], "not a size");
    // The developer worktree's group, name and place.
    refused(
        &ctx,
        &["build", "--worktree-group", "a/b"],
        "not a plain name",
    );
    refused(
        &ctx,
        &["build", "--worktree-group", ".."],
        "not a plain name",
    );
    refused(&ctx, &["build", "--worktree-group=--x"], "not a plain name");
    refused(
        &ctx,
        &[
            "build",
            "--worktree-group",
            "g",
            "--deploy-name",
            "../../etc",
        ],
        "not a plain name",
    );
    let lone = ctx.dir.path().join("lone.json");
    std::fs::write(&lone, r#"{"deploy_name": "x"}"#).unwrap();
    refused(
        &ctx,
        &["build", "--request", &lone.display().to_string()],
        "worktree_group is not",
    );
    let rel = ctx.dir.path().join("rel.json");
    std::fs::write(&rel, r#"{"worktree_group": "g", "deploy_dir": "dev"}"#).unwrap();
    refused(
        &ctx,
        &["build", "--request", &rel.display().to_string()],
        "not an absolute path",
    );
    // One step on its own: a known name, the results of every step before it, the
    // configure branch that the request chose.
    refused(
        &ctx,
        &["step", "nope", "{\"request\": {}}"],
        "unknown step `nope`",
    );
    refused(
        &ctx,
        &["step", "compile", "{\"request\": {}}"],
        "missing: prepare_worktree, build_flags, configure, fetch_identity, reuse_check",
    );
    refused(
        &ctx,
        &["step", "configure_make", "{\"request\": {}}"],
        "config_method is preset",
    );
    refused(
        &ctx,
        &["step", "build_flags", "{\"request\": {\"nope\": 1}}"],
        "unknown field",
    );
    refused(&ctx, &["resume"], "nothing to resume");
    // All problems of a request file are reported at once.
    let req = ctx.dir.path().join("bad.json");
    std::fs::write(
        &req,
        r#"{"git_ref":"-x","custom_label":true,"label":"a b","make_flags":["-f"]}"#,
    )
    .unwrap();
    let r = ctx.run(&["build", "--request", req.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    for needle in ["like an option", "may only hold", "`-f` is refused"] {
        assert!(r.stderr.contains(needle), "{needle}: {}", r.stderr);
    }
    // Unknown keys in a request file are an error, not ignored.
    std::fs::write(&req, r#"{"gitref":"v6.12.117"}"#).unwrap();
    let r = ctx.run(&["build", "--request", req.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown field `gitref`"), "{}", r.stderr);
    assert!(!ctx.workers().exists());
    assert!(!Path::new("/tmp/kforge-pwned").exists());
}

#[test]
fn missing_mirror_says_how_to_make_one() {
    let ctx = TestContext::with_mirror("nomirror", "/nonexistent/mirror.git".into());
    let r = ctx.run(&["build"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("kforge mirror import-tarball"),
        "{}",
        r.stderr
    );
}

#[test]
fn qemu_requests_are_checked_before_anything_is_touched() {
    let ctx = TestContext::new("qemubad");
    // No QEMU mirror yet: the hint names the commands that make one.
    refused(
        &ctx,
        &["qemu", "build"],
        "kforge mirror --project qemu import-tarball",
    );
    refused(
        &ctx,
        &["qemu", "build", "--configure-option=--prefix=/opt"],
        "is set by kforge itself",
    );
    refused(
        &ctx,
        &["qemu", "build", "--configure-option=--cc=tcc"],
        "use compiler",
    );
    refused(
        &ctx,
        &["qemu", "build", "--configure-option=enable-slirp"],
        "does not start with `--`",
    );
    refused(
        &ctx,
        &[
            "qemu",
            "build",
            "--configure-option=--extra-cflags=-O1\n--evil",
        ],
        "control characters",
    );
    refused(
        &ctx,
        &["qemu", "build", "--target-list", "x86_64-softmmu;id"],
        "not a QEMU target name",
    );
    refused(
        &ctx,
        &[
            "qemu",
            "build",
            "--target-list",
            "x86_64-softmmu,x86_64-softmmu",
        ],
        "listed twice",
    );
    refused(
        &ctx,
        &["qemu", "build", "--git-ref=--upload-pack=/tmp/x"],
        "like an option",
    );
    let file = ctx.dir.path().join("q.json");
    std::fs::write(&file, r#"{"target": "x86_64-softmmu"}"#).unwrap();
    refused(
        &ctx,
        &["qemu", "build", "--request", file.to_str().unwrap()],
        "unknown field `target`",
    );
    // The schema names every input.
    let schema: serde_json::Value = ctx.run(&["qemu", "schema"]).ok().json();
    for field in [
        "git_ref",
        "target_list",
        "features",
        "configure_options",
        "compiler",
    ] {
        assert!(
            schema["properties"].get(field).is_some(),
            "{field}: {schema}"
        );
    }
}

#[test]
fn import_tarball_makes_an_annotated_tag_and_cuts_the_debian_block() {
    let ctx = TestContext::with_mirror("import", "/unused".into());
    let src = ctx.dir.path().join("linux-source-9.9");
    std::fs::create_dir_all(src.join("kernel")).unwrap();
    std::fs::write(
        src.join("Makefile"),
        "VERSION = 9\nPATCHLEVEL = 9\nSUBLEVEL = 0\nEXTRAVERSION =\n",
    )
    .unwrap();
    std::fs::write(src.join("kernel/fork.c"), "int x;\n").unwrap();
    std::fs::write(src.join("vmlinux.lds"), "tracked though ignored\n").unwrap();
    std::fs::write(
        src.join(".gitignore"),
        "*.lds\n\n#\n# Debian packaging: ignore everything at the top level\n#\n/*\n!/debian/\n",
    )
    .unwrap();
    let tarball = ctx.dir.path().join("linux-source-9.9.tar.xz");
    let st = std::process::Command::new("tar")
        .arg("-cJf")
        .arg(&tarball)
        .arg("-C")
        .arg(ctx.dir.path())
        .arg("linux-source-9.9")
        .status()
        .unwrap();
    assert!(st.success());
    let mirror = ctx.dir.path().join("m.git");
    let run = |tag: &str| {
        ctx.run(&[
            "--mirror",
            mirror.to_str().unwrap(),
            "mirror",
            "import-tarball",
            tarball.to_str().unwrap(),
            "--tag",
            tag,
            "--branch",
            "master",
        ])
    };
    let out: serde_json::Value = run("v9.9").ok().json();
    let commit = out["commit"].as_str().unwrap();
    assert_eq!(
        git(&mirror, &["cat-file", "-t", "v9.9"]),
        "tag",
        "tag is not annotated"
    );
    assert_eq!(git(&mirror, &["rev-parse", "v9.9^{commit}"]), commit);
    assert_eq!(git(&mirror, &["rev-parse", "master"]), commit);
    let files = git(&mirror, &["ls-tree", "-r", "--name-only", commit]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        [".gitignore", "Makefile", "kernel/fork.c", "vmlinux.lds"]
    );
    assert_eq!(
        git(&mirror, &["show", &format!("{commit}:.gitignore")]),
        "*.lds"
    );
    // Importing again is idempotent: same commit, tag untouched.
    let again: serde_json::Value = run("v9.9").ok().json();
    assert_eq!(again["commit"], out["commit"]);
    // A tag or branch shaped like an option is refused.
    let r = ctx.run(&[
        "--mirror",
        mirror.to_str().unwrap(),
        "mirror",
        "import-tarball",
        tarball.to_str().unwrap(),
        "--tag=--x",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // mirror init --from clones it; show lists it.
    let clone = ctx.dir.path().join("clone.git");
    ctx.run(&[
        "--mirror",
        clone.to_str().unwrap(),
        "mirror",
        "init",
        "--from",
        mirror.to_str().unwrap(),
    ])
    .ok();
    let shown: serde_json::Value = ctx
        .run(&["--mirror", clone.to_str().unwrap(), "mirror", "show"])
        .ok()
        .json();
    assert_eq!(shown["tags"], serde_json::json!(["v9.9"]));
    assert_eq!(shown["branches"], serde_json::json!(["master"]));
    let r = ctx.run(&[
        "--mirror",
        clone.to_str().unwrap(),
        "mirror",
        "init",
        "--from",
        mirror.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "init over an existing mirror must be refused");
}

#[test]
fn a_busy_slot_fails_clearly_and_is_not_touched() {
    let ctx = TestContext::new("busy");
    let state = ctx.workers().join("0/main/.kforge/linux");
    std::fs::create_dir_all(&state).unwrap();
    let mut lock = kforge::fsutil::FileLock::try_acquire(&state.join("lock"))
        .unwrap()
        .unwrap();
    lock.describe_holder("held by the test\n");
    let r = ctx.run(&["identity", "--preset", "tiny_guest_defconfig"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("is busy") && r.stderr.contains("held by the test"),
        "{}",
        r.stderr
    );
    assert!(!ctx.slot(0).exists(), "a busy slot was touched");
    drop(lock);
}

#[test]
fn config_file_env_and_flags_set_the_directories_in_that_order() {
    let ctx = TestContext::new("dirs");
    let cfg = ctx.dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("mirror = \"{}\"\nworker_index = 7\n", ctx.mirror.display()),
    )
    .unwrap();
    let show = |cmd: &mut std::process::Command| -> Run { Run::from(cmd.output().unwrap()) };
    // From the config file alone.
    let r = show(
        ctx.command()
            .env_remove("KFORGE_MIRROR")
            .env("KFORGE_CONFIG", &cfg)
            .args(["mirror", "show"]),
    )
    .ok();
    let v: serde_json::Value = r.json();
    assert_eq!(v["mirror"], ctx.mirror.display().to_string());
    assert!(
        v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "v6.12.117")
    );
    // The environment beats the file, a flag beats both.
    let r = show(
        ctx.command()
            .env("KFORGE_MIRROR", "/nonexistent/env.git")
            .env("KFORGE_CONFIG", &cfg)
            .args(["mirror", "show"]),
    );
    assert!(r.stderr.contains("/nonexistent/env.git"), "{}", r.stderr);
    let r = show(
        ctx.command()
            .env("KFORGE_MIRROR", "/nonexistent/env.git")
            .env("KFORGE_CONFIG", &cfg)
            .args(["--mirror", "/nonexistent/flag.git", "mirror", "show"]),
    );
    assert!(r.stderr.contains("/nonexistent/flag.git"), "{}", r.stderr);
    // A broken config file is reported with its path.
    std::fs::write(&cfg, "workers_dir = [").unwrap();
    let r = show(
        ctx.command()
            .env("KFORGE_CONFIG", &cfg)
            .args(["mirror", "show"]),
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("config.toml"), "{}", r.stderr);
}
