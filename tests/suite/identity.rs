//! configure and the build identity, for real: Kconfig runs on the fixture kernel through
//! `kforge identity` (everything up to configure, no compile).

use crate::support::kernel::{assert_release_format, assert_symbols, symbols};
use crate::support::{Identity, TINY, TestContext, fs, tag, version};

fn identity(ctx: &TestContext, args: &[&str]) -> (Identity, String) {
    identity_with(ctx, args, None)
}

/// The same with `bin` first on PATH.
fn identity_with(
    ctx: &TestContext,
    args: &[&str],
    bin: Option<&std::path::Path>,
) -> (Identity, String) {
    let mut cmd = ctx.kforge(["identity"]).args(args);
    if let Some(b) = bin {
        cmd = cmd.path_prepend(b);
    }
    let id: Identity = cmd.run().success().json();
    let config = fs::read_string(&id.config);
    (id, config)
}

#[test]
#[ignore = "runs Kconfig on the real kernel tree: scripts/test.sh"]
fn the_three_config_methods_produce_their_symbols() {
    let ctx = TestContext::new("methods");
    // preset
    let (id, config) = identity(&ctx, &TINY);
    assert_release_format(&id.uts_release, version(), "vanilla");
    assert_eq!(id.git_ref, tag(), "the default ref is the newest v* tag");
    assert_symbols(
        &config,
        &[
            ("CONFIG_64BIT", "y"),
            ("CONFIG_VIRTIO_FS", "y"),
            ("CONFIG_NET", "n"),
            ("CONFIG_NLS_UTF8", "m"),
            ("CONFIG_SERIAL_8250_CONSOLE", "y"),
            ("CONFIG_LOCALVERSION_AUTO", "n"),
        ],
    );
    let localversion = format!("\"-vanilla-{}\"", id.digest);
    assert_symbols(&config, &[("CONFIG_LOCALVERSION", &localversion)]);
    // The default preset is the imageless guest.
    let (_, config) = identity(&ctx, &[]);
    assert_symbols(
        &config,
        &[
            ("CONFIG_VIRTIO_FS", "y"),
            ("CONFIG_9P_FS", "y"),
            ("CONFIG_VSOCKETS", "m"),
            ("CONFIG_NLS_UTF8", "m"),
            ("CONFIG_CGROUPS", "y"),
            ("CONFIG_DEVTMPFS", "y"),
            ("CONFIG_MODULES", "y"),
        ],
    );
    // make: a list of goals, the ordinary way.
    let (id_make, config) = identity(
        &ctx,
        &[
            "--defconfig",
            "defconfig",
            "--defconfig",
            "kvm_guest.config",
        ],
    );
    assert_symbols(
        &config,
        &[
            ("CONFIG_KVM_GUEST", "y"),
            ("CONFIG_VIRTIO_NET", "y"),
            ("CONFIG_64BIT", "y"),
        ],
    );
    assert_ne!(id_make.digest, id.digest);
    // fragments: any order gives the same .config and digest.
    let a = [
        "core/base",
        "arch/x86_64",
        "virtio/pci",
        "virtio/virtiofs",
        "debug/kasan",
        "builtin/vsock",
        "net/vsock",
    ];
    let mut args_a = vec![];
    for f in a {
        args_a.extend(["--fragment", f]);
    }
    let (id_a, config_a) = identity(&ctx, &args_a);
    let mut args_b = vec![];
    for f in a.iter().rev() {
        args_b.extend(["--fragment", *f]);
    }
    let (id_b, config_b) = identity(&ctx, &args_b);
    assert_eq!(config_a, config_b, "fragment order changed the .config");
    assert_eq!(id_a.digest, id_b.digest);
    // builtin/ overrides land last: vsock is =y although net/vsock asks for =m.
    assert_symbols(
        &config_a,
        &[
            ("CONFIG_KASAN", "y"),
            ("CONFIG_VIRTIO_FS", "y"),
            ("CONFIG_VSOCKETS", "y"),
        ],
    );
    // allnoconfig base (default) vs alldefconfig base.
    args_a.push("--allnoconfig-base=false");
    let (id_c, config_c) = identity(&ctx, &args_a);
    assert_ne!(id_c.digest, id_a.digest);
    assert!(
        symbols(&config_c).values().filter(|v| *v == "y").count()
            > symbols(&config_a).values().filter(|v| *v == "y").count()
    );
}

#[test]
#[ignore = "runs Kconfig on the real kernel tree: scripts/test.sh"]
fn each_identity_input_moves_the_digest_and_nothing_else_does() {
    let ctx = TestContext::new("digest");
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = TINY.to_vec();
        a.extend_from_slice(extra);
        identity(&ctx, &a).0
    };
    let base = run(&[tag()]);
    assert_eq!(base.inputs.toolchain.compiler, "gcc");
    // The toolchain's bytes: a hash of each program whose work lands in the kernel.
    let tools = &base.inputs.toolchain.tools;
    for role in ["cc", "cc1", "as", "ld"] {
        let h = tools
            .get(role)
            .unwrap_or_else(|| panic!("no {role} in {tools:?}"));
        assert!(h.starts_with("sha256:") && h.len() == 71, "{role}: {h}");
    }

    // Things that change the bytes change the digest.
    let clang = run(&[tag(), "--compiler", "clang"]);
    assert_ne!(clang.digest, base.digest);
    assert_eq!(clang.inputs.toolchain.compiler, "clang");
    assert_ne!(
        clang.inputs.config_sha256, base.inputs.config_sha256,
        "Kconfig records the compiler"
    );
    // A compiler whose version string is the same but whose bytes are not (a stable update
    // keeps "gcc (Debian 12.2.0-14) 12.2.0"): here a wrapper first on PATH.
    let wrap = ctx.path().join("wrapped-gcc");
    let real_gcc = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("gcc"))
        .find(|p| p.is_file())
        .expect("gcc on PATH");
    fs::write_executable(
        wrap.join("gcc"),
        &format!("#!/bin/sh\nexec '{}' \"$@\"\n", real_gcc.display()),
    );
    let mut a: Vec<&str> = TINY.to_vec();
    a.push(tag());
    let (updated, _) = identity_with(&ctx, &a, Some(&wrap));
    assert_eq!(updated.inputs.toolchain.cc, base.inputs.toolchain.cc);
    assert_ne!(updated.inputs.toolchain.tools["cc"], tools["cc"]);
    assert_eq!(updated.inputs.toolchain.tools["cc1"], tools["cc1"]);
    assert_ne!(updated.digest, base.digest);
    // A declared toolchain environment (an image pinned by digest) joins the toolchain's
    // identity, beside the tools' own hashes.
    let image = format!("oci:debian@sha256:{}", "5e".repeat(32));
    let declared = run(&[tag(), "--toolchain-env", &image]);
    assert_eq!(declared.inputs.toolchain.env.as_deref(), Some(&*image));
    assert_eq!(declared.inputs.toolchain.tools, base.inputs.toolchain.tools);
    assert_eq!(base.inputs.toolchain.env, None);
    assert_ne!(declared.digest, base.digest);
    let w1 = run(&[tag(), "--make-flag", "W=1"]);
    assert_ne!(w1.digest, base.digest);
    assert_eq!(w1.inputs.config_sha256, base.inputs.config_sha256);
    let symbol = identity(
        &ctx,
        &[
            tag(),
            "--fragment",
            "core/base",
            "--fragment",
            "arch/x86_64",
        ],
    )
    .0;
    assert_ne!(symbol.digest, base.digest);
    let branch = run(&["test/comment"]);
    assert_ne!(branch.digest, base.digest);
    assert_ne!(branch.inputs.tree, base.inputs.tree);
    assert_eq!(branch.label, "test-comment");
    assert_release_format(&branch.uts_release, version(), "test-comment");

    // The digest keys on the tree: a tag on the same commit is the same build.
    let test_tag = run(&["kf-test-1"]);
    assert_eq!(test_tag.label, "vanilla");
    assert_eq!(test_tag.digest, branch.digest);

    // Things that do not change the bytes leave the digest alone. (In a fresh slot and with
    // the configure memory forgotten, so that Kconfig really runs without ccache rather
    // than kforge remembering what these inputs made.)
    let forget = || {
        std::fs::remove_dir_all(ctx.system().join("configure-memory"))
            .expect("the configure memory is under the system dir");
    };
    forget();
    assert_eq!(
        run(&[tag(), "--ccache=false", "--worker-index", "1"]).digest,
        base.digest
    );
    assert_eq!(run(&[tag(), "--ccache-max-size", "1G"]).digest, base.digest);
    let custom = run(&[tag(), "--label", "my-experiment"]);
    assert_eq!(custom.digest, base.digest);
    assert_eq!(
        custom.uts_release,
        format!("{}-my-experiment-{}", version(), base.digest)
    );
    // Another slot (another worker path, another prefix-map value; with ccache, and the
    // memory forgotten, so Kconfig runs there again): same digest.
    forget();
    let other = run(&["--worker-index", "1", tag()]);
    assert_eq!(other.digest, base.digest);
    assert!(other.config.contains("/1/main/linux/"));
    // And the same request again: the same identity, answered from the configure memory
    // without a slot, its .config the memory's copy.
    let again = run(&[tag()]);
    assert!(
        again
            .config
            .starts_with(&*ctx.system().join("configure-memory").to_string_lossy()),
        "{again:?}"
    );
    assert_eq!(
        Identity {
            config: base.config.clone(),
            ..again
        },
        base
    );
}
