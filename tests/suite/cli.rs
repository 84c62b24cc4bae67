//! The command line without kernel builds: help, schema, library, mirror commands, and
//! every kind of bad input refused before anything is touched. Tier 1: a mirror of a few
//! files made by kforge itself stands in for the kernel's, as none of this reads a source
//! file (`cargo test` runs these without root or a kernel tree).

use std::path::Path;

use crate::support::git::git;
use crate::support::{
    Imported, LibraryList, MINI_VERSION, MirrorInit, MirrorShow, TestContext, fs,
    mini_kernel_tarball, refused,
};

#[test]
fn build_help_groups_inputs_under_the_schemas_headings() {
    let ctx = TestContext::without_mirror("help");
    let help = ctx.kforge(["build", "--help"]).run().success().stdout;
    let schema: serde_json::Value = ctx.kforge(["schema"]).run().success().json();
    // Every group of the schema is a heading (with its summary), in the schema's order, and
    // every input sits under its group's heading: derived from the schema, not listed here.
    let groups = schema["x-groups"].as_array().unwrap();
    let mut at = Vec::new();
    for g in groups {
        let heading = format!(
            "{}: {}",
            g["name"].as_str().unwrap(),
            g["summary"].as_str().unwrap()
        );
        let pos = help
            .find(&format!("\n{heading}:\n"))
            .unwrap_or_else(|| panic!("missing heading {heading:?} in:\n{help}"));
        at.push((g["name"].as_str().unwrap().to_owned(), pos));
    }
    assert!(at.windows(2).all(|w| w[0].1 < w[1].1), "{at:?}");
    let span = |group: &str| {
        let i = at.iter().position(|(g, _)| g == group).unwrap();
        let end = at.get(i + 1).map_or(help.len(), |(_, p)| *p);
        &help[at[i].1..end]
    };
    let props = schema["properties"].as_object().unwrap();
    assert!(props.len() > 20, "{}", props.len());
    for (name, prop) in props {
        let group = prop["x-group"].as_str().unwrap();
        let flag = format!("--{}", name.replace('_', "-"));
        let singular = flag.strip_suffix('s').unwrap_or(&flag).to_owned();
        let text = span(group);
        assert!(
            has_flag(text, &flag) || has_flag(text, &singular),
            "{flag} is not under the {group} heading:\n{text}"
        );
    }
}

/// Whether `--help` text lists `flag` (followed by its value, `[=BOOL]` or the line's end).
fn has_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        help[i + flag.len()..]
            .chars()
            .next()
            .is_some_and(|c| matches!(c, ' ' | '[' | '\n'))
    })
}

#[test]
fn schema_is_2020_12_with_groups() {
    let ctx = TestContext::without_mirror("schema");
    let s: serde_json::Value = ctx.kforge(["schema"]).run().success().json();
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
fn every_printed_document_has_a_schema_that_names_its_fields() {
    use clap::ValueEnum as _;
    let ctx = TestContext::without_mirror("schemas");
    let help = ctx.kforge(["schema", "--help"]).run().success().stdout;
    for output in kforge::schemas::Output::value_variants() {
        let name = output.to_possible_value().unwrap().get_name().to_owned();
        assert!(help.contains(&name), "{name} is not in the help:\n{help}");
        let schema: serde_json::Value = ctx
            .kforge(["schema", "--output", &name])
            .run()
            .success()
            .json();
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        assert!(
            schema["properties"]
                .as_object()
                .is_some_and(|p| !p.is_empty()),
            "{name}: {schema}"
        );
    }
    // The default is the build request's, as before.
    let plain: serde_json::Value = ctx.kforge(["schema"]).run().success().json();
    let request: serde_json::Value = ctx
        .kforge(["schema", "--output", "request"])
        .run()
        .success()
        .json();
    assert_eq!(plain, request);
    // A real document has exactly the fields its schema names.
    let ls: serde_json::Value = ctx.kforge(["store", "ls"]).run().success().json();
    let schema: serde_json::Value = ctx
        .kforge(["schema", "--output", "store-ls"])
        .run()
        .success()
        .json();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ls), keys(&schema["properties"]));
    let manifest: serde_json::Value = ctx
        .kforge(["schema", "--output", "manifest"])
        .run()
        .success()
        .json();
    assert!(
        manifest["properties"]["uts_release"].is_object(),
        "{manifest}"
    );
    ctx.kforge(["schema", "--output", "nonsense"]).run().code(2);
}

#[test]
fn library_lists_presets_and_fragments() {
    let ctx = TestContext::without_mirror("library");
    let l: LibraryList = ctx.kforge(["library"]).run().success().json();
    assert!(
        l.presets.iter().any(|p| p == "imageless_defconfig")
            && l.presets.iter().any(|p| p == "tiny_guest_defconfig")
    );
    assert!(l.fragments.iter().any(|f| f == "debug/kasan"));
    // Another library directory replaces the built-in one.
    let other = ctx.path().join("lib");
    fs::write(other.join("defconfigs/mine_defconfig"), "CONFIG_64BIT=y\n");
    fs::write(other.join("fragments/core/x.config"), "CONFIG_64BIT=y\n");
    let l: LibraryList = ctx
        .kforge(["--library", other.to_str().unwrap(), "library"])
        .run()
        .success()
        .json();
    assert_eq!(l.presets, ["mine_defconfig"]);
    assert_eq!(l.fragments, ["core/x"]);
}

#[test]
fn bad_input_is_refused_before_anything_is_touched() {
    let ctx = TestContext::with_mini_mirror("badinput");
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
    // A declared toolchain environment must be pinned: an image by digest, not a tag.
    refused(
        &ctx,
        &["build", "--toolchain-env", "debian:bookworm"],
        "pinned by digest",
    );
    refused(
        &ctx,
        &["identity", "--toolchain-env", "nix:/tmp/shell"],
        "store path",
    );
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
    let lone = ctx.path().join("lone.json");
    fs::write(&lone, r#"{"deploy_name": "x"}"#);
    refused(
        &ctx,
        &["build", "--request", &lone.display().to_string()],
        "worktree_group is not",
    );
    let rel = ctx.path().join("rel.json");
    fs::write(&rel, r#"{"worktree_group": "g", "deploy_dir": "dev"}"#);
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
    let req = ctx.path().join("bad.json");
    fs::write(
        &req,
        r#"{"git_ref":"-x","custom_label":true,"label":"a b","make_flags":["-f"]}"#,
    );
    let r = ctx
        .kforge(["build", "--request", req.to_str().unwrap()])
        .run()
        .code(2);
    for needle in ["like an option", "may only hold", "`-f` is refused"] {
        assert!(r.stderr.contains(needle), "{needle}: {}", r.stderr);
    }
    // Unknown keys in a request file are an error, not ignored.
    fs::write(&req, r#"{"gitref":"v6.12.117"}"#);
    ctx.kforge(["build", "--request", req.to_str().unwrap()])
        .run()
        .refused("unknown field `gitref`");
    assert!(!ctx.workers().exists());
    assert!(!Path::new("/tmp/kforge-pwned").exists());
}

#[test]
fn missing_mirror_says_how_to_make_one() {
    let ctx = TestContext::with_mirror("nomirror", "/nonexistent/mirror.git");
    ctx.kforge(["build"])
        .run()
        .refused("kforge mirror import-tarball");
}

#[test]
fn qemu_requests_are_checked_before_anything_is_touched() {
    let ctx = TestContext::without_mirror("qemubad");
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
    let file = ctx.path().join("q.json");
    fs::write(&file, r#"{"target": "x86_64-softmmu"}"#);
    refused(
        &ctx,
        &["qemu", "build", "--request", file.to_str().unwrap()],
        "unknown field `target`",
    );
    // The schema names every input of the request, and `qemu build` has a flag for each.
    let schema: serde_json::Value = ctx.kforge(["qemu", "schema"]).run().success().json();
    let help = ctx
        .kforge(["qemu", "build", "--help"])
        .run()
        .success()
        .stdout;
    let props = schema["properties"].as_object().unwrap();
    for field in [
        "git_ref",
        "target_list",
        "features",
        "configure_options",
        "compiler",
    ] {
        assert!(props.contains_key(field), "{field}: {schema}");
    }
    for name in props.keys() {
        let flag = format!("--{}", name.replace('_', "-"));
        let singular = flag.strip_suffix('s').unwrap_or(&flag).to_owned();
        assert!(
            has_flag(&help, &flag) || has_flag(&help, &singular),
            "{flag}:\n{help}"
        );
    }
}

#[test]
fn import_tarball_makes_an_annotated_tag_and_cuts_the_debian_block() {
    let ctx = TestContext::with_mirror("import", "/unused");
    let tarball = mini_kernel_tarball(
        ctx.path(),
        "9.9",
        &[
            ("vmlinux.lds", "tracked though ignored\n"),
            (
                ".gitignore",
                "*.lds\n\n#\n# Debian packaging: ignore everything at the top level\n#\n/*\n!/debian/\n",
            ),
        ],
    );
    let mirror = ctx.path().join("m.git");
    let run = |tag: &str| {
        ctx.kforge([
            "--mirror",
            mirror.to_str().unwrap(),
            "mirror",
            "import-tarball",
        ])
        .arg(&tarball)
        .args(["--tag", tag, "--branch", "master"])
        .run()
    };
    let out: Imported = run("v9.9").success().json();
    let commit = out.commit.as_str();
    assert_eq!(out.tag, "v9.9");
    assert_eq!(out.branch.as_deref(), Some("master"));
    assert_eq!(
        git(&mirror, &["cat-file", "-t", "v9.9"]),
        "tag",
        "tag is not annotated"
    );
    assert_eq!(git(&mirror, &["rev-parse", "v9.9^{commit}"]), commit);
    assert_eq!(git(&mirror, &["rev-parse", "v9.9^{tree}"]), out.tree);
    assert_eq!(git(&mirror, &["rev-parse", "master"]), commit);
    let files = git(&mirror, &["ls-tree", "-r", "--name-only", commit]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        [
            ".gitignore",
            "Makefile",
            "arch/x86/configs/x86_64_defconfig",
            "init/version.c",
            "kernel/configs/kvm_guest.config",
            "vmlinux.lds"
        ]
    );
    assert_eq!(
        git(&mirror, &["show", &format!("{commit}:.gitignore")]),
        "*.lds"
    );
    // Importing again is idempotent: same commit, tag untouched.
    let again: Imported = run("v9.9").success().json();
    assert_eq!(again.commit, out.commit);
    // A tag or branch shaped like an option is refused.
    ctx.kforge([
        "--mirror",
        mirror.to_str().unwrap(),
        "mirror",
        "import-tarball",
    ])
    .arg(&tarball)
    .arg("--tag=--x")
    .run()
    .code(2);
    // mirror init --from clones it; show lists it.
    let clone = ctx.path().join("clone.git");
    let init = || {
        ctx.kforge([
            "--mirror",
            clone.to_str().unwrap(),
            "mirror",
            "init",
            "--from",
        ])
        .arg(&mirror)
        .run()
    };
    let made: MirrorInit = init().success().json();
    assert_eq!(made.tags, ["v9.9"]);
    let shown: MirrorShow = ctx
        .kforge(["--mirror", clone.to_str().unwrap(), "mirror", "show"])
        .run()
        .success()
        .json();
    assert_eq!(shown.tags, ["v9.9"]);
    assert_eq!(shown.branches, ["master"]);
    assert_eq!(shown.mirror, made.mirror);
    init().code(2); // init over an existing mirror is refused
}

#[test]
fn a_busy_slot_fails_clearly_and_is_not_touched() {
    let ctx = TestContext::with_mini_mirror("busy");
    let state = ctx.workers().join("0/main/.kforge/linux");
    std::fs::create_dir_all(&state).unwrap();
    let mut lock = kforge::fsutil::FileLock::try_acquire(&state.join("lock"))
        .unwrap()
        .unwrap();
    lock.describe_holder("held by the test\n");
    ctx.kforge(["identity", "--preset", "tiny_guest_defconfig"])
        .run()
        .code(4)
        .stderr_has("is busy")
        .stderr_has("held by the test");
    assert!(!ctx.slot(0).exists(), "a busy slot was touched");
    drop(lock);
}

#[test]
fn config_file_env_and_flags_set_the_directories_in_that_order() {
    let ctx = TestContext::with_mini_mirror("dirs");
    let mirror = ctx.mirror();
    let cfg = ctx.path().join("config.toml");
    fs::write(
        &cfg,
        format!("mirror = \"{}\"\nworker_index = 7\n", mirror.display()),
    );
    // From the config file alone.
    let v: MirrorShow = ctx
        .kforge(["mirror", "show"])
        .env_remove("KFORGE_MIRROR")
        .env("KFORGE_CONFIG", &cfg)
        .run()
        .success()
        .json();
    assert_eq!(v.mirror, mirror.display().to_string());
    assert!(v.tags.contains(&format!("v{MINI_VERSION}")), "{v:?}");
    // The environment beats the file, a flag beats both.
    ctx.kforge(["mirror", "show"])
        .env("KFORGE_MIRROR", "/nonexistent/env.git")
        .env("KFORGE_CONFIG", &cfg)
        .run()
        .stderr_has("/nonexistent/env.git");
    ctx.kforge(["--mirror", "/nonexistent/flag.git", "mirror", "show"])
        .env("KFORGE_MIRROR", "/nonexistent/env.git")
        .env("KFORGE_CONFIG", &cfg)
        .run()
        .stderr_has("/nonexistent/flag.git");
    // A broken config file is reported with its path.
    fs::write(&cfg, "workers_dir = [");
    ctx.kforge(["mirror", "show"])
        .env("KFORGE_CONFIG", &cfg)
        .run()
        .code(2)
        .stderr_has("config.toml");
}
