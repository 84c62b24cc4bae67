//! The QEMU flow for real: Debian's QEMU source package (imported by
//! `scripts/fixture-qemu.sh`) built by `kforge qemu build`, reused on a second request,
//! and a kforge-built kernel booted with it by the guest layer and by a defined guest's
//! unit.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{BIN, ManifestContract, Run, TestContext, git, repo_root};

/// The QEMU mirror (made once, cached across runs by the script itself).
fn qemu_mirror() -> &'static Path {
    static MIRROR: OnceLock<PathBuf> = OnceLock::new();
    MIRROR.get_or_init(|| {
        if let Some(p) = std::env::var_os("KFORGE_TEST_QEMU_MIRROR") {
            return PathBuf::from(p);
        }
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/fixture-qemu.sh"))
            .arg(BIN)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/fixture-qemu.sh");
        assert!(
            out.status.success(),
            "scripts/fixture-qemu.sh failed; run scripts/install-deps.sh first"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn run(ctx: &TestContext, path: Option<&Path>, args: &[&str]) -> Run {
    let mut c = ctx.command();
    c.env("KFORGE_QEMU_MIRROR", qemu_mirror());
    if let Some(p) = path {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut new = p.as_os_str().to_owned();
        new.push(":");
        new.push(old);
        c.env("PATH", new);
    }
    Run::from(c.args(args).output().expect("run kforge"))
}

/// The manifest contract of `kforge qemu build`, field by field.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QemuManifest {
    schema_version: u32,
    identity: String,
    release: String,
    version: String,
    digest: String,
    commit: String,
    git_ref: String,
    ref_kind: String,
    series: Option<serde_json::Value>,
    compiler: String,
    target_list: Vec<String>,
    features: String,
    configure_args: Vec<String>,
    qemu_binary: Option<String>,
    qemu_version: Option<String>,
    programs: Vec<String>,
    build_dir: String,
    destdir: String,
    worker_index: u32,
    inputs: serde_json::Value,
    reused: Option<String>,
    store_entry: Option<String>,
}

/// Wrappers for meson and ninja that log every call, then run the real tool.
fn logging_tools(dir: &Path) -> PathBuf {
    let bin = dir.join("logging-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("tools.log");
    for tool in ["meson", "ninja"] {
        let real = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let real = String::from_utf8(real.stdout).unwrap().trim().to_owned();
        assert!(!real.is_empty(), "{tool} is not installed");
        let script = bin.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexec '{real}' \"$@\"\n",
                log.display()
            ),
        )
        .unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .unwrap();
    }
    bin
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn qemu_from_debian_source_builds_is_reused_and_boots_a_kforge_kernel() {
    let ctx = TestContext::new("qemu");
    let mirror = qemu_mirror();
    let commit = git(mirror, &["rev-parse", "refs/heads/debian/latest"]);
    let version = git(
        mirror,
        &["cat-file", "blob", "refs/heads/debian/latest:VERSION"],
    );

    // A ref the mirror does not have is refused before anything is made.
    let r = run(&ctx, None, &["qemu", "build", "no/such/ref"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("tags include: v7"), "{}", r.stderr);
    assert!(!ctx.workers().exists());
    // So is a target this QEMU does not have.
    let r = run(
        &ctx,
        None,
        &[
            "qemu",
            "build",
            "debian/latest",
            "--target-list",
            "nope64-softmmu",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("x86_64-softmmu"), "{}", r.stderr);
    assert!(!ctx.workers().exists());

    // First request: configured, compiled, installed, published. Without debug info (an
    // option of the request's own, in the identity): a fifth less to compile in CI.
    let build: &[&str] = &[
        "qemu",
        "build",
        "debian/latest",
        "--configure-option=--disable-debug-info",
    ];
    let r = run(&ctx, None, build).ok();
    let first: QemuManifest = r.json();
    assert!(r.stderr.contains("ok  compile"), "{}", r.stderr);
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
    assert_eq!(first.target_list, vec!["x86_64-softmmu"]);
    assert_eq!(first.features, "minimal");
    assert_eq!(first.compiler, "gcc");
    assert_eq!(first.schema_version, 1);
    assert_eq!(first.worker_index, 0);
    assert!(first.series.is_none());
    assert_eq!(first.programs, vec!["usr/local/bin/qemu-system-x86_64"]);
    for arg in [
        "--target-list=x86_64-softmmu",
        "--cc=ccache gcc",
        "--without-default-features",
        "--enable-vhost-user",
        "--disable-debug-info",
    ] {
        assert!(first.configure_args.iter().any(|a| a == arg), "{arg}");
    }
    assert!(
        first.inputs["configure_options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "--disable-debug-info")
    );
    assert!(
        first
            .configure_args
            .contains(&format!("--with-pkgversion=kforge-{}", first.identity))
    );
    // The digest's inputs hold neither the slot's path nor the ccache wrapper.
    let inputs = first.inputs.to_string();
    assert!(
        !inputs.contains(ctx.workers().to_str().unwrap()),
        "{inputs}"
    );
    assert!(!inputs.contains("ccache"), "{inputs}");
    assert_eq!(first.inputs["tree"].as_str().unwrap().len(), 40);

    // The binary is the store's copy, and says which identity it is.
    let entry = ctx.store().join("run").join(&first.identity);
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
    assert_eq!(sha256(&installed), sha256(&binary));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("kforge-layer.json")).unwrap()).unwrap();
    let recorded = record["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "usr/local/bin/qemu-system-x86_64")
        .unwrap();
    assert_eq!(recorded["sha256"].as_str().unwrap(), sha256(&binary));
    assert_eq!(recorded["executable"], true);
    assert_eq!(
        record["manifest"]["identity"].as_str(),
        Some(first.identity.as_str())
    );
    // The slot keeps the manifest beside it.
    let slot_manifest = ctx.workers().join("0/main/qemu.manifest.json");
    let kept: QemuManifest =
        serde_json::from_slice(&std::fs::read(&slot_manifest).unwrap()).unwrap();
    assert_eq!(kept, first);

    // Second request: the store answers; meson and ninja are asked their versions only.
    let tools = logging_tools(ctx.dir.path());
    let r = run(&ctx, Some(&tools), build).ok();
    let second: QemuManifest = r.json();
    assert!(r.stderr.contains("is in the store"), "{}", r.stderr);
    assert!(r.stderr.contains("compile skipped"), "{}", r.stderr);
    let log = std::fs::read_to_string(ctx.dir.path().join("tools.log")).unwrap_or_default();
    assert!(
        log.lines().all(|l| l.ends_with(" --version")),
        "the reused build ran meson or ninja:\n{log}"
    );
    assert_eq!(second.reused.as_deref(), Some("store"));
    let mut same = second.clone();
    same.reused = None;
    assert_eq!(
        same, first,
        "a reused build's manifest differs but for `reused`"
    );

    // A damaged store copy is found by verify, and the next request rebuilds and replaces
    // it (the warm build/ has nothing to compile).
    let trace = entry.join("usr/local/share/qemu/trace-events-all");
    let mut bytes = std::fs::read(&trace).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&trace, &bytes).unwrap();
    let r = ctx.run(&["store", "verify", &first.identity]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("usr/local/share/qemu/trace-events-all: sha256 differs from the record"),
        "{}",
        r.stdout
    );
    let r = run(&ctx, None, build).ok();
    let repaired: QemuManifest = r.json();
    assert!(r.stderr.contains("is damaged, rebuilding"), "{}", r.stderr);
    assert!(
        r.stderr.contains("replaced the damaged copy of"),
        "{}",
        r.stderr
    );
    assert_eq!(repaired.reused, None);
    assert_eq!(repaired.identity, first.identity);
    ctx.run(&["store", "verify", &first.identity]).ok();
    let listed: serde_json::Value = ctx.run(&["store", "ls"]).ok().json();
    assert!(
        listed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["identity"] == first.identity.as_str() && e["commit"] == commit.as_str()),
        "{listed}"
    );

    // A kernel, booted with this QEMU by identity: the guest check passes, and the
    // command line kforge ran names the store's binary.
    let k = ctx.run(&["build", "--preset", "tiny_guest_defconfig"]).ok();
    let kernel: ManifestContract = k.json();
    let r = run(
        &ctx,
        None,
        &[
            "-v",
            "boot",
            "--check",
            "--accel",
            "tcg",
            "--qemu",
            &first.identity,
        ],
    )
    .ok();
    let report: serde_json::Value = r.json();
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(
        report["guest_release"].as_str(),
        Some(kernel.uts_release.as_str())
    );
    assert!(
        r.stderr
            .contains(&format!("$ {} -nodefaults", binary.display())),
        "{}",
        r.stderr
    );

    // A defined guest given the QEMU manifest: its unit's ExecStart names the built
    // binary, the units verify, and the guest runs (in the foreground here) and checks out.
    let units = ctx.dir.path().join("units");
    let u = units.to_str().unwrap();
    run(
        &ctx,
        None,
        &[
            "vm",
            "--unit-dir",
            u,
            "define",
            "q1",
            "--oneshot",
            "--qemu",
            slot_manifest.to_str().unwrap(),
        ],
    )
    .ok();
    let dropin =
        std::fs::read_to_string(units.join("qemu-system@q1.service.d/kforge.conf")).unwrap();
    assert!(
        dropin.contains(&format!("\nExecStart=\"{}\" ", binary.display())),
        "{dropin}"
    );
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "qemu-system@q1.service",
            "kforge-virtiofsd@q1.service",
        ])
        .env("SYSTEMD_UNIT_PATH", format!("{u}:"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = run(
        &ctx,
        None,
        &["vm", "--unit-dir", u, "run", "q1", "--timeout", "60"],
    )
    .ok();
    assert!(
        r.stdout
            .contains(&format!("KFORGE-UNAME {}", kernel.uts_release)),
        "{}",
        r.stdout
    );

    // The entry a defined guest runs is not removed under it, by rm nor by gc; a pinned
    // one is kept by gc; else gc takes QEMU entries as it takes kernels.
    let r = ctx.run(&["store", "rm", &first.identity]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("used by a defined guest"), "{}", r.stderr);
    let gc: serde_json::Value = ctx
        .run(&["store", "gc", "--older-than", "0s", "--dry-run"])
        .ok()
        .json();
    let mut in_use: Vec<&str> = gc["kept_in_use"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    in_use.sort_unstable();
    assert_eq!(
        in_use,
        vec![kernel.uts_release.as_str(), first.identity.as_str()],
        "{gc}"
    );
    ctx.run(&["vm", "--unit-dir", u, "rm", "q1"]).ok();
    ctx.run(&["store", "pin", &first.identity]).ok();
    let gc: serde_json::Value = ctx
        .run(&["store", "gc", "--older-than", "0s", "--dry-run"])
        .ok()
        .json();
    assert_eq!(
        gc["kept_pinned"],
        serde_json::json!([first.identity]),
        "{gc}"
    );
    assert!(entry.exists());
    ctx.run(&["store", "unpin", &first.identity]).ok();
    let gc: serde_json::Value = ctx.run(&["store", "gc", "--older-than", "0s"]).ok().json();
    assert!(
        gc["removed"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(first.identity)),
        "{gc}"
    );
    assert!(!entry.exists());
    let r = ctx.run(&["store", "rm", &first.identity]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no store entry"), "{}", r.stderr);

    // What --qemu is not: a missing file, a manifest of something else, an unknown identity.
    for (arg, says) in [
        ("/nonexistent/qemu-system-x86_64", "neither a file nor"),
        (
            ctx.workers()
                .join("0/main/linux.manifest.json")
                .to_str()
                .unwrap(),
            "is not a QEMU manifest",
        ),
        ("qemu-7.2.22-000000000000", "is not in the store"),
    ] {
        let r = run(&ctx, None, &["boot", "--check", "--qemu", arg]);
        assert_eq!(r.code, 2, "{arg}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{arg}: {}", r.stderr);
    }
}
