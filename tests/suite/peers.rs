//! Peers for real: one kforge home exports its store (holding the suite's gcc kernel),
//! Python's http.server serves it on loopback, a second home fetches the identity instead
//! of building it, verifies it and boots it. Bad peers (unreachable, a flipped byte,
//! unsigned, signed by an unknown key, a hostile archive) are reported and skipped, and add
//! nothing to the store.

use std::path::PathBuf;
use std::process::Command;

use kforge::store::{peers, sign};

use crate::support::servers::{free_port, http};
use crate::support::{
    BootReport, Exported, Manifest, QemuManifest, StoreLs, StoreShow, TINY, TestContext, Trusted,
    fixtures, fs,
};

fn read_index(p: &std::path::Path) -> peers::Index {
    serde_json::from_slice(&fs::read(p)).unwrap()
}

fn write_index(p: &std::path::Path, i: &peers::Index) {
    fs::write(p, serde_json::to_vec_pretty(i).unwrap());
}

#[test]
#[ignore = "builds and boots kernels: scripts/test.sh"]
fn an_identity_comes_from_a_peer_verified_and_boots() {
    let src = TestContext::new("peer-src");
    let m1 = src.adopt(fixtures::tiny_gcc());
    let public = src
        .kforge(["store", "keygen", "--name", "src"])
        .run()
        .success()
        .stdout;
    let public = public.trim();
    assert!(public.starts_with("kforge-ed25519:src:"), "{public}");
    let root = src.path().join("serve");
    let good = root.join("good");
    let out: Exported = src
        .kforge(["store", "export"])
        .arg(&good)
        .run()
        .success()
        .json();
    let id = m1.entry();
    assert_eq!(out.exported, [id.as_str()]);
    assert_eq!(out.key, "src");

    // Bad copies of the export.
    let variant = |name: &str| -> PathBuf {
        let d = root.join(name);
        fs::copy_tree(&good, &d);
        d.join(&id)
    };
    let flipped = variant("flipped");
    let size = fs::read(flipped.join("run.tar.gz")).len();
    fs::flip_byte(&flipped.join("run.tar.gz"), size / 2, 0x55);

    let unsigned = variant("unsigned");
    let mut idx = read_index(&unsigned.join("run.json"));
    idx.signature = None;
    write_index(&unsigned.join("run.json"), &idx);

    let wrongkey = variant("wrongkey");
    let other_home = tempfile::tempdir().unwrap();
    let other = sign::keygen(other_home.path(), "src", false).unwrap();
    let idx = read_index(&wrongkey.join("run.json"));
    write_index(
        &wrongkey.join("run.json"),
        &peers::sign_index(idx.signed, &other),
    );

    // A hostile archive, correctly hashed and signed by the trusted key.
    let hostile = variant("hostile");
    let st = Command::new("python3")
        .arg("-c")
        .arg(
            "import io,sys,tarfile\n\
             t=tarfile.open(sys.argv[1],'w:gz')\n\
             i=tarfile.TarInfo('../../escaped'); d=b'pwned'; i.size=len(d)\n\
             t.addfile(i, io.BytesIO(d)); t.close()",
        )
        .arg(hostile.join("run.tar.gz"))
        .status()
        .unwrap();
    assert!(st.success());
    let data = fs::read(hostile.join("run.tar.gz"));
    let (sha, size) = kforge::store::hash_file(&hostile.join("run.tar.gz")).unwrap();
    assert_eq!(size, data.len() as u64);
    let mut idx = read_index(&hostile.join("run.json"));
    idx.signed.archive_sha256 = sha;
    idx.signed.archive_size = size;
    let src_key = sign::load(&src.system()).unwrap();
    write_index(
        &hostile.join("run.json"),
        &peers::sign_index(idx.signed, &src_key),
    );

    let server = http(&root);
    let dst = TestContext::new("peer-dst");
    let trusted: Trusted = dst
        .kforge(["store", "trust", public])
        .run()
        .success()
        .json();
    assert_eq!(trusted.trusted, "src");
    let dead = free_port();
    for (name, url) in [
        ("dead", format!("http://127.0.0.1:{dead}")),
        ("flipped", server.url("flipped")),
        ("unsigned", server.url("unsigned")),
        ("wrongkey", server.url("wrongkey")),
        ("hostile", server.url("hostile")),
        ("good", server.url("good")),
    ] {
        dst.kforge(["peers", "add", name, &url]).run().success();
    }
    dst.kforge(["peers", "add", "bad name", "http://x"])
        .run()
        .code(2);
    dst.kforge(["peers", "add", "x", "ftp://x"]).run().code(2);

    let r = dst
        .kforge(["build"])
        .args(TINY)
        .arg("--use-peers")
        .run()
        .success();
    let m2: Manifest = r.json();
    let err = &r.stderr;
    for (peer, why) in [
        ("dead", "refused"),
        ("flipped", "does not match its signed hash and size"),
        ("unsigned", "the index is unsigned"),
        ("wrongkey", "does not match the index"),
        ("hostile", "leaves the layer"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("peer {peer} ")) && l.contains(why)),
            "{peer}: {why}\n{err}"
        );
    }
    assert!(err.contains("fetched"), "{err}");
    assert!(err.contains("compile skipped"), "{err}");
    assert!(!dst.path().join("escaped").exists());
    assert!(!dst.system().join("escaped").exists());
    assert_eq!(m2.reused.as_deref(), Some("peer"));
    assert_eq!(m2.uts_release, m1.uts_release);
    for (a, b) in [
        (&m2.commit, &m1.commit),
        (&m2.digest, &m1.digest),
        (&m2.linux_compiler, &m1.linux_compiler),
        (&m2.uts_version, &m1.uts_version),
    ] {
        assert_eq!(a, b);
    }
    assert_eq!(m2.identity, m1.identity);
    assert!(fs::read(m2.bz_image.as_ref().unwrap()) == fs::read(m1.bz_image.as_ref().unwrap()));
    let show: StoreShow = dst.kforge(["store", "show", &id]).run().success().json();
    let origin = show.run.expect("a run layer").origin;
    assert!(origin.starts_with("peer good"), "{origin}");
    let ls: StoreLs = dst.kforge(["store", "ls"]).run().success().json();
    assert_eq!(ls.entries.len(), 1);
    assert_eq!(ls.entries[0].identity, id);
    assert!(fs::names(&dst.store().join("tmp")).is_empty());

    // The fetched kernel boots with its identity and its modules.
    let report: BootReport = dst
        .kforge(["boot", "--check", &id, "--accel", "tcg"])
        .run()
        .success()
        .json();
    assert_eq!(
        report.guest_release.as_deref(),
        Some(m1.uts_release.as_str())
    );
    assert!(report.module_loaded);

    // An identity no peer has (the clang build: from the suite's ccache, warm for it):
    // reported, then built here.
    fixtures::tiny_clang();
    let r = dst
        .kforge(["build"])
        .args(TINY)
        .args(["--compiler", "clang", "--use-peers"])
        .run()
        .success()
        .stderr_has("peer good does not have")
        .stderr_has("no peer had it: building here");
    let m3: Manifest = r.json();
    assert_eq!(m3.reused, None);
    assert_eq!(m3.compiler, "clang");
}

#[test]
#[ignore = "takes the suite's QEMU: scripts/test.sh"]
fn a_qemu_comes_from_a_peer_verified_and_runs() {
    let f = fixtures::qemu();
    let src = TestContext::new("peer-qemu-src");
    let id = src.adopt_qemu(f);
    let public = src
        .kforge(["store", "keygen", "--name", "src"])
        .run()
        .success()
        .stdout;
    let root = src.path().join("serve");
    let good = root.join("good");
    let out: Exported = src
        .kforge(["store", "export"])
        .arg(&good)
        .run()
        .success()
        .json();
    assert_eq!(out.exported, [id.as_str()]);
    // A copy with one flipped byte in its archive, asked first: refused, nothing kept.
    let flipped = root.join("flipped");
    fs::copy_tree(&good, &flipped);
    let archive = flipped.join(&id).join("run.tar.gz");
    fs::flip_byte(&archive, fs::read(&archive).len() / 2, 0x55);

    let server = http(&root);
    let dst = TestContext::new("peer-qemu-dst").with_qemu_mirror();
    dst.kforge(["store", "trust", public.trim()])
        .run()
        .success();
    for name in ["flipped", "good"] {
        dst.kforge(["peers", "add", name, &server.url(name)])
            .run()
            .success();
    }
    let r = dst
        .kforge(fixtures::qemu_build())
        .arg("--use-peers")
        .run()
        .success()
        .stderr_has("peer flipped")
        .stderr_has("does not match its signed hash and size")
        .stderr_has(&format!("{id}: fetched from peer good"))
        .stderr_has("configure skipped")
        .stderr_has("compile skipped");
    let m: QemuManifest = r.json();
    assert_eq!(m.reused.as_deref(), Some("peer"));
    assert_eq!(m.identity, id);
    assert_eq!(m.digest, f.manifest.digest);
    assert_eq!(m.inputs, f.manifest.inputs);
    let entry = dst.store().join("run").join(&id);
    let binary = entry.join("usr/local/bin/qemu-system-x86_64");
    assert_eq!(m.qemu_binary.as_deref(), binary.to_str());
    assert_eq!(
        fs::sha256(&binary),
        fs::sha256(
            &f.home
                .store()
                .join("run")
                .join(&id)
                .join("usr/local/bin/qemu-system-x86_64")
        )
    );
    let show: StoreShow = dst.kforge(["store", "show", &id]).run().success().json();
    let origin = show.run.expect("a run layer").origin;
    assert!(origin.starts_with("peer good"), "{origin}");
    // The fetched emulator runs and names its identity.
    let version = Command::new(&binary).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains(&format!("kforge-{id}")), "{version}");
    assert!(fs::names(&dst.store().join("tmp")).is_empty());
}
