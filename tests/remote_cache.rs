//! Shared compile caching across workers: ccache's remote storage on a real `redis-server`
//! (loopback), configured through kforge's managed ccache config. A worker with an empty
//! local cache compiles the kernel from the remote entries another worker left.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ManifestContract, TestContext};

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn start(dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)");
        let redis = Self { child, port };
        let start = Instant::now();
        while redis.cli(&["ping"]) != "PONG" {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        redis
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// ccache's counters for the cache at `dir`.
fn stats(dir: &Path) -> std::collections::HashMap<String, u64> {
    let out = Command::new("ccache")
        .env("CCACHE_CONFIGPATH", "/dev/null")
        .env("CCACHE_DIR", dir)
        .arg("--print-stats")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn a_worker_with_an_empty_cache_compiles_from_the_shared_remote() {
    let ctx = TestContext::new("remote");
    let redis = Redis::start(ctx.dir.path());
    let build = |slot: u32, cache: Option<&Path>| -> ManifestContract {
        let mut c = ctx.command();
        c.env("KFORGE_CCACHE_REMOTE", redis.url())
            .env("KFORGE_WORKER_INDEX", slot.to_string())
            .args([
                "build",
                "v6.12.117",
                "--preset",
                "tiny_guest_defconfig",
                "--reuse=false",
            ]);
        if let Some(dir) = cache {
            c.env("KFORGE_CCACHE_DIR", dir);
        }
        let out = c.output().unwrap();
        let r = common::Run::from(out).ok();
        r.json()
    };

    // Worker 1, with the run's shared local cache: every result also goes to redis.
    let a = build(1, None);
    let keys: u64 = redis.cli(&["dbsize"]).parse().unwrap();
    assert!(keys > 500, "only {keys} entries reached redis");

    // Worker 2, with a cache of its own that starts empty.
    let empty = ctx.dir.path().join("ccache-worker2");
    let b = build(2, Some(&empty));
    let s = stats(&empty);
    let remote_hits = s["remote_storage_hit"];
    let local_hits = s["local_storage_hit"];
    let misses = s["cache_miss"];
    assert!(remote_hits > 500, "remote hits {remote_hits}: {s:?}");
    // The local cache started empty: its only hits are files this build compiled twice.
    assert!(
        local_hits * 4 < remote_hits,
        "local hits {local_hits} vs remote hits {remote_hits}: {s:?}"
    );
    eprintln!("worker 2: {remote_hits} remote hits, {local_hits} local hits, {misses} misses");
    assert!(
        misses * 20 < remote_hits,
        "misses {misses} vs remote hits {remote_hits}"
    );
    let conf: String = std::fs::read_dir(&empty)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("kforge-ccache-")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        conf.contains(&format!(
            "remote_storage = {}|connect-timeout=1000\n",
            redis.url()
        )),
        "{conf}"
    );

    assert_eq!(
        a.uts_release, b.uts_release,
        "the remote storage is not a build input"
    );
    let image = |m: &ManifestContract, slot: u32| {
        std::fs::read(
            ctx.slot(slot)
                .join(format!("destdir/boot/vmlinuz-{}", m.uts_release)),
        )
        .unwrap()
    };
    assert!(
        image(&a, 1) == image(&b, 2),
        "remote hits gave another bzImage"
    );

    // A remote URL that could break the config file is refused before anything runs.
    let bad = ctx
        .command()
        .env("KFORGE_CCACHE_REMOTE", "redis://x\nmax_size = 1")
        .args([
            "identity",
            "--preset",
            "tiny_guest_defconfig",
            "--worker-index",
            "3",
        ])
        .output()
        .unwrap();
    let bad = common::Run::from(bad);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("ccache remote"), "{}", bad.stderr);
    assert!(!ctx.slot(3).exists());
}
