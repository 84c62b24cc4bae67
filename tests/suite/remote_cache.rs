//! Shared compile caching across workers: ccache's remote storage on a real `redis-server`
//! (loopback), configured through kforge's managed ccache config. A worker with an empty
//! local cache compiles the kernel from the remote entries another worker left.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::support::servers::Redis;
use crate::support::{Manifest, TINY, TestContext, fixtures, fs, tag};

/// ccache's counters for the cache at `dir`.
fn stats(dir: &Path) -> HashMap<String, u64> {
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
#[ignore = "builds kernels with a redis-server: scripts/test.sh"]
fn a_worker_with_an_empty_cache_compiles_from_the_shared_remote() {
    fixtures::tiny_gcc();
    let ctx = TestContext::new("remote");
    let redis = Redis::start(ctx.path());
    let build = |slot: u32, cache: Option<&Path>| -> Manifest {
        let mut c = ctx
            .kforge(["build", tag()])
            .args(TINY)
            .arg("--reuse=false")
            .env("KFORGE_CCACHE_REMOTE", redis.url())
            .worker(slot);
        if let Some(dir) = cache {
            c = c.env("KFORGE_CCACHE_DIR", dir);
        }
        c.run().success().json()
    };

    // Worker 1, with the run's shared local cache: every result also goes to redis.
    let a = build(1, None);
    let keys: u64 = redis.cli(&["dbsize"]).parse().unwrap();
    assert!(keys > 500, "only {keys} entries reached redis");

    let image = |m: &Manifest, slot: u32| {
        fs::read(
            ctx.slot(slot)
                .join(format!("destdir/boot/vmlinuz-{}", m.uts_release)),
        )
    };
    // Worker 1's slot is not read again: its image is kept, the 1.7 GB slot is dropped.
    let image_a = image(&a, 1);
    ctx.drop_kernel_slot(1);

    // Worker 2, with a cache of its own that starts empty.
    let empty = ctx.path().join("ccache-worker2");
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
    let conf: String = fs::names(&empty)
        .iter()
        .filter(|n| n.starts_with("kforge-ccache-"))
        .map(|n| fs::read_string(empty.join(n)))
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
    assert!(image_a == image(&b, 2), "remote hits gave another bzImage");

    // A remote URL that could break the config file is refused before anything runs.
    ctx.kforge(["identity"])
        .args(TINY)
        .args(["--worker-index", "3"])
        .env("KFORGE_CCACHE_REMOTE", "redis://x\nmax_size = 1")
        .run()
        .refused("ccache remote");
    assert!(!ctx.slot(3).exists());
}
