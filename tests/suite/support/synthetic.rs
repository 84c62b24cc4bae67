//! Store entries of a few small files, for the store's mechanics (atomic publish, kill
//! points, two writers, gc, verify, damage and repair) in seconds: the store's own code
//! writes them (`kforge::store::Store::publish_entry`), with a kernel manifest on record so
//! every `kforge store` command reads them as it reads a built kernel.
//!
//! A writer that a test kills or races runs in a process of its own: this test binary
//! started again on the `store::synthetic_writer` test, which publishes what
//! `KFORGE_TEST_WRITER` describes and exits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use kforge::store::{Kind, Layer, Published, Source, Store};

use super::fs;

const WRITER_ENV: &str = "KFORGE_TEST_WRITER";

/// A release of kforge's shape whose label says what it is.
pub fn release(n: u32) -> String {
    format!("9.9.0-synthetic-{n:012x}")
}

/// The files of entry `release`, written under `dir` (a boot image, a module, modules.dep).
pub fn files(dir: &Path, release: &str) -> Vec<Source> {
    let root = dir.join(format!("files-{release}"));
    let list = [
        (format!("boot/vmlinuz-{release}"), vec![0xb0u8; 3000]),
        (
            format!("lib/modules/{release}/kernel/x.ko"),
            b"\x7fELF module".to_vec(),
        ),
        (
            format!("lib/modules/{release}/modules.dep"),
            b"kernel/x.ko:\n".to_vec(),
        ),
    ];
    list.into_iter()
        .map(|(dest, bytes)| {
            let from = root.join(&dest);
            fs::write(&from, &bytes);
            Source { dest, from }
        })
        .collect()
}

/// The manifest on record: a kernel manifest whose paths name nothing real.
pub fn manifest(release: &str) -> kforge::kernel::manifest::Manifest {
    let digest = release.rsplit('-').next().unwrap();
    serde_json::from_value(serde_json::json!({
        "schema_version": 2,
        "commit": "0".repeat(40),
        "uts_release": release,
        "bzImage": null,
        "build_dir": "/nonexistent/build",
        "config": "/nonexistent/build/.config",
        "config_method": "preset",
        "destdir": "/nonexistent/destdir",
        "linux_compiler": "gcc (synthetic) 0",
        "uts_version": "#1 Thu Jan  1 00:00:00 UTC 1970",
        "uts_machine": "x86_64",
        "linux_compile_by": "kforge",
        "linux_compile_host": "kforge",
        "git_ref": "v9.9.0",
        "ref_kind": "tag",
        "version": "9.9.0",
        "label": "synthetic",
        "digest": digest,
        "compiler": "gcc",
        "modules_dir": null,
        "worker_index": 0,
        "series": null,
        "identity": {
            "scheme": "kforge-identity/1",
            "config_sha256": "0".repeat(64),
            "toolchain": {"compiler": "gcc", "cc": "gcc", "linker": "ld", "make": "make", "env": null},
            "make_flags": [],
            "tree": "0".repeat(40)
        },
        "reused": null,
        "store_entry": null,
        "store_devel": null
    }))
    .expect("a manifest kforge reads")
}

/// Publishes entry `release` into the store at `root`, in this process.
pub fn publish(root: &Path, dir: &Path, release: &str) -> Published {
    let store = Store::open(root, Kind::Kernel).unwrap();
    let m = manifest(release);
    let r = release.parse().unwrap();
    store
        .publish(Layer::Run, &r, &m.digest, &m, &files(dir, release), "local")
        .unwrap()
        .0
}

/// Starts a writer process publishing `release` into the store at `root`, with
/// `KFORGE_FAULT_INJECT` set to `fault` when given. Its stdout says what publish did.
pub fn spawn_writer(root: &Path, dir: &Path, release: &str, fault: Option<&str>) -> Child {
    spawn_writer_with_umask(root, dir, release, fault, 0o022)
}

/// [`spawn_writer`] with the writer's umask.
pub fn spawn_writer_with_umask(
    root: &Path,
    dir: &Path,
    release: &str,
    fault: Option<&str>,
    umask: u32,
) -> Child {
    let spec = serde_json::json!({ "root": root, "dir": dir, "release": release, "umask": umask });
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "store::synthetic_writer",
        "--nocapture",
        "--include-ignored",
    ])
    .env(WRITER_ENV, spec.to_string())
    .env_remove("KFORGE_FAULT_INJECT")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(f) = fault {
        c.env("KFORGE_FAULT_INJECT", f);
    }
    c.spawn().unwrap()
}

/// The body of a writer process (does nothing when not started as one).
pub fn writer_main() {
    let Ok(spec) = std::env::var(WRITER_ENV) else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let path = |k: &str| PathBuf::from(spec[k].as_str().unwrap());
    let umask = libc::mode_t::try_from(spec["umask"].as_u64().unwrap()).unwrap();
    // SAFETY: umask(2) only sets this process's file mode mask.
    unsafe { libc::umask(umask) };
    let published = publish(
        &path("root"),
        &path("dir"),
        spec["release"].as_str().unwrap(),
    );
    println!(
        "KFORGE-WRITER {}",
        serde_json::to_string(&published).unwrap()
    );
}
