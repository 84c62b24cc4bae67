//! Peers for real: one kforge home builds and exports its store, Python's http.server serves
//! it on loopback, a second home fetches the identity instead of building it, verifies it
//! and boots it. Bad peers (unreachable, a flipped byte, unsigned, signed by an unknown
//! key, a hostile archive) are reported and skipped, and add nothing to the store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{ManifestContract, TestContext};
use kforge::store::{peers, sign};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(root: &Path) -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "-d",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("http.server did not start");
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn read_index(p: &Path) -> peers::Index {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn write_index(p: &Path, i: &peers::Index) {
    std::fs::write(p, serde_json::to_vec_pretty(i).unwrap()).unwrap();
}

#[test]
fn an_identity_comes_from_a_peer_verified_and_boots() {
    let src = TestContext::new("peer-src");
    let m1: ManifestContract = src
        .run(&["build", "--preset", "tiny_guest_defconfig"])
        .ok()
        .json();
    let public = src.run(&["store", "keygen", "--name", "src"]).ok().stdout;
    let public = public.trim();
    assert!(public.starts_with("kforge-ed25519:src:"), "{public}");
    let root = src.dir.path().join("serve");
    std::fs::create_dir_all(&root).unwrap();
    let good = root.join("good");
    let out: serde_json::Value = src
        .run(&["store", "export", good.to_str().unwrap()])
        .ok()
        .json();
    let id = format!("kernel-{}", m1.uts_release);
    assert_eq!(out["exported"], serde_json::json!([id]));

    // Bad copies of the export.
    let variant = |name: &str| -> PathBuf {
        let d = root.join(name);
        copy_dir(&good, &d);
        d.join(&id)
    };
    let flipped = variant("flipped");
    let mut bytes = std::fs::read(flipped.join("run.tar.gz")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(flipped.join("run.tar.gz"), bytes).unwrap();

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
    let data = std::fs::read(hostile.join("run.tar.gz")).unwrap();
    let (sha, size) = kforge::store::hash_file(&hostile.join("run.tar.gz")).unwrap();
    assert_eq!(size, data.len() as u64);
    let mut idx = read_index(&hostile.join("run.json"));
    idx.signed.archive_sha256 = sha;
    idx.signed.archive_size = size;
    let src_key = sign::load(&src.dir.path().join("system")).unwrap();
    write_index(
        &hostile.join("run.json"),
        &peers::sign_index(idx.signed, &src_key),
    );

    let (_server, port) = serve(&root);
    let dst = TestContext::new("peer-dst");
    dst.run(&["store", "trust", public]).ok();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (name, url) in [
        ("dead", format!("http://127.0.0.1:{dead}")),
        ("flipped", format!("http://127.0.0.1:{port}/flipped")),
        ("unsigned", format!("http://127.0.0.1:{port}/unsigned")),
        ("wrongkey", format!("http://127.0.0.1:{port}/wrongkey")),
        ("hostile", format!("http://127.0.0.1:{port}/hostile")),
        ("good", format!("http://127.0.0.1:{port}/good")),
    ] {
        dst.run(&["peers", "add", name, &url]).ok();
    }
    let r = dst.run(&["peers", "add", "bad name", "http://x"]);
    assert_eq!(r.code, 2);
    let r = dst.run(&["peers", "add", "x", "ftp://x"]);
    assert_eq!(r.code, 2);

    let r = dst
        .run(&["build", "--preset", "tiny_guest_defconfig", "--use-peers"])
        .ok();
    let m2: ManifestContract = r.json();
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
    assert!(!dst.dir.path().join("escaped").exists());
    assert!(!dst.dir.path().join("system/escaped").exists());
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
    assert!(
        std::fs::read(m2.bz_image.as_ref().unwrap()).unwrap()
            == std::fs::read(m1.bz_image.as_ref().unwrap()).unwrap()
    );
    let show: serde_json::Value = dst.run(&["store", "show", &id]).ok().json();
    assert!(
        show["run"]["origin"]
            .as_str()
            .unwrap()
            .starts_with("peer good"),
        "{show}"
    );
    let ls: serde_json::Value = dst.run(&["store", "ls"]).ok().json();
    assert_eq!(ls["entries"].as_array().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(dst.store().join("tmp")).unwrap().count(),
        0
    );

    // The fetched kernel boots with its identity and its modules.
    let boot = dst.run(&["boot", "--check", &id, "--accel", "tcg"]).ok();
    let report: serde_json::Value = boot.json();
    assert_eq!(report["guest_release"], serde_json::json!(m1.uts_release));
    assert_eq!(report["module_loaded"], serde_json::json!(true));

    // An identity no peer has: reported, then built here.
    let r = dst
        .run(&[
            "build",
            "--preset",
            "tiny_guest_defconfig",
            "--label",
            "local",
            "--use-peers",
        ])
        .ok();
    let m3: ManifestContract = r.json();
    assert_eq!(m3.reused, None);
    assert!(r.stderr.contains("peer good does not have"), "{}", r.stderr);
    assert!(
        r.stderr.contains("no peer had it: building here"),
        "{}",
        r.stderr
    );
}
