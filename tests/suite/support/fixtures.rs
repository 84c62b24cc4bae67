//! The suite-wide fixture store: the kernels and the QEMU that tests only consume, each built
//! once per suite by the first test that asks (the others wait on its lock), in a kforge
//! home of its own under `target/kforge-test/fixtures/<binary key>/`. A test copies an entry
//! into its own store with [`super::TestContext::adopt`], so what it damages or collects is
//! its own copy.
//!
//! A fixture's kernel slot (1.7 GB, the checkout mostly) is kept only for the test whose
//! subject is that build, which drops it when done ([`Fixture::drop_slot`]); the other
//! architectures' slots, which no test looks into, are dropped as soon as they are built.
//! The suite must fit on a CI disk it does not own.
//!
//! The key is the kforge binary's size and modification time: a rebuilt kforge builds its
//! fixtures anew (from the shared ccache), an unchanged one takes them in seconds.
//! `scripts/test.sh` starts every suite with no fixtures.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use super::{
    BIN, Execs, Home, Manifest, Outcome, QemuManifest, TINY, kernel_mirror, qemu_mirror, tag,
};

/// A built identity in the fixture store, with the home and slot that built it.
#[derive(Debug, Clone)]
pub struct Fixture<M> {
    pub home: Home,
    pub slot: u32,
    /// What the build printed (its first, compiling run).
    pub manifest: M,
    entry: String,
    lock: PathBuf,
    qemu: bool,
}

/// What becomes of the slot that built a fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Kept for the test that checks the build in it (or builds in it again).
    Kept,
    /// Dropped once built: tests take the store entry only.
    Dropped,
}

impl<M> Fixture<M> {
    /// The store entry's name (`kernel-<release>`, `qemu-<release>`).
    pub fn entry(&self) -> String {
        self.entry.clone()
    }

    /// `kforge ARGS` in the fixture's home and slot; only inside [`Fixture::exclusive`].
    pub fn kforge<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Execs {
        let mut cmd = self
            .home
            .command(kernel_mirror().as_os_str(), self.qemu.then(qemu_mirror));
        cmd.args(args)
            .env("KFORGE_WORKER_INDEX", self.slot.to_string());
        Execs { cmd }
    }

    /// The environment kforge runs with in the fixture's home and slot.
    pub fn kforge_env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        self.kforge(Vec::<&str>::new())
            .command()
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
            .collect()
    }

    /// Runs `f` with the fixture's home to itself: for the test whose subject is the
    /// fixture's build, to exercise it in the warm slot that made it (a second request, a
    /// repair). Nobody copies the entry meanwhile; `f` must leave it as it found it.
    pub fn exclusive<R>(&self, f: impl FnOnce(&Self) -> R) -> R {
        let _lock = kforge::fsutil::FileLock::acquire(&self.lock).unwrap();
        f(self)
    }

    /// Drops the fixture's kernel slot (its checkout, build and state), for the test whose
    /// subject the slot was, once it has looked: no other test reads it, and it is 1.7 GB.
    pub fn drop_slot(&self) {
        self.exclusive(|f| f.home.drop_kernel_slot(f.slot));
    }

    /// Holds the fixture shared (no [`Fixture::exclusive`] user meanwhile), for a copy.
    pub(super) fn shared(&self) -> kforge::fsutil::FileLock {
        kforge::fsutil::FileLock::shared(&self.lock).unwrap()
    }
}

fn fixture_root() -> PathBuf {
    let meta = std::fs::metadata(BIN).expect("the kforge binary");
    let key = format!("{:x}-{:x}", meta.len(), meta.mtime_nsec() ^ meta.mtime());
    let dir = super::test_root().join("fixtures").join(key);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds `name` once: under an exclusive lock, unless an earlier test (in this process or
/// another) already did. A failed build is remembered, so the tests after it fail at once
/// with its output instead of building it again.
fn ensure<M: DeserializeOwned>(
    name: &str,
    slot: u32,
    args: &[&str],
    qemu: bool,
    after: Slot,
    entry: impl Fn(&M) -> String,
) -> Fixture<M> {
    let root = fixture_root();
    let home = Home {
        root: root.join("home"),
    };
    let done = root.join(format!("{name}.json"));
    let failed = root.join(format!("{name}.failed"));
    let lock = root.join(format!("{name}.lock"));
    let _lock = kforge::fsutil::FileLock::acquire(&lock).unwrap();
    if let Ok(text) = std::fs::read_to_string(&failed) {
        panic!("the fixture {name} failed to build earlier in this suite:\n{text}");
    }
    if !done.exists() {
        let start = std::time::Instant::now();
        eprintln!("fixture {name}: building (kforge {})", args.join(" "));
        let mirror = kernel_mirror();
        let mut cmd = home.command(mirror.as_os_str(), qemu.then(qemu_mirror));
        cmd.args(args).env("KFORGE_WORKER_INDEX", slot.to_string());
        let out = Outcome::new(format!("kforge {}", args.join(" ")), cmd.output().unwrap());
        if !out.status.success() {
            let text = format!("`{}` exited {}:\n{}", out.command, out.status, out.stderr);
            kforge::fsutil::write_atomic(&failed, text.as_bytes()).unwrap();
            panic!("the fixture {name} failed to build: {text}");
        }
        if after == Slot::Dropped {
            home.drop_kernel_slot(slot);
        }
        kforge::fsutil::write_atomic(&done, out.stdout.as_bytes()).unwrap();
        eprintln!("fixture {name}: built in {:?}", start.elapsed());
    }
    let manifest: M = serde_json::from_slice(&std::fs::read(&done).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", done.display()));
    Fixture {
        entry: entry(&manifest),
        home,
        slot,
        manifest,
        lock,
        qemu,
    }
}

/// The tiny guest preset at the fixture tag, with gcc (slot 0 of the fixture home). Also what
/// warms the suite's ccache: a test that compiles this config with gcc asks for it first,
/// so the cold compile happens once.
pub fn tiny_gcc() -> &'static Fixture<Manifest> {
    static F: OnceLock<Fixture<Manifest>> = OnceLock::new();
    F.get_or_init(|| {
        ensure(
            "tiny-gcc",
            0,
            &["build", tag(), TINY[0], TINY[1]],
            false,
            Slot::Kept,
            |m: &Manifest| m.entry(),
        )
    })
}

/// The same with clang and LLVM (slot 1).
pub fn tiny_clang() -> &'static Fixture<Manifest> {
    static F: OnceLock<Fixture<Manifest>> = OnceLock::new();
    F.get_or_init(|| {
        ensure(
            "tiny-clang",
            1,
            &["build", tag(), TINY[0], TINY[1], "--compiler", "clang"],
            false,
            Slot::Kept,
            |m: &Manifest| m.entry(),
        )
    })
}

/// The tiny guest preset for another arch (the arch's own `tiny_guest_defconfig`), cross
/// compiled with `compiler`, in a slot of its own, dropped once built (the tests read its
/// store entry).
fn tiny_for(name: &str, slot: u32, arch: &str, compiler: &str) -> Fixture<Manifest> {
    ensure(
        name,
        slot,
        &[
            "build",
            tag(),
            TINY[0],
            TINY[1],
            "--arch",
            arch,
            "--compiler",
            compiler,
        ],
        false,
        Slot::Dropped,
        |m: &Manifest| m.entry(),
    )
}

/// The arm64 tiny guest with Debian's cross gcc (slot 2).
pub fn tiny_arm64_gcc() -> &'static Fixture<Manifest> {
    static F: OnceLock<Fixture<Manifest>> = OnceLock::new();
    F.get_or_init(|| tiny_for("tiny-arm64-gcc", 2, "arm64", "gcc"))
}

/// The arm64 tiny guest with clang and LLVM (slot 3).
pub fn tiny_arm64_clang() -> &'static Fixture<Manifest> {
    static F: OnceLock<Fixture<Manifest>> = OnceLock::new();
    F.get_or_init(|| tiny_for("tiny-arm64-clang", 3, "arm64", "clang"))
}

/// The riscv64 tiny guest with Debian's cross gcc (slot 4).
pub fn tiny_riscv64_gcc() -> &'static Fixture<Manifest> {
    static F: OnceLock<Fixture<Manifest>> = OnceLock::new();
    F.get_or_init(|| tiny_for("tiny-riscv64-gcc", 4, "riscv64", "gcc"))
}

/// The arguments of the QEMU fixture: Debian's QEMU, minimal, with the aarch64 target beside
/// x86_64's (its minimal device set) for the arm64 guests, built for the suite's budget:
/// without debug info and unoptimised (`--enable-debug` is `-O0`; its TCG and mutex checks
/// turned back off). Its compile step took 206 s instead of 334 s at `-O2` (2 cores, cold
/// cache, nothing else running), and the suite's guests boot in about 2 s instead of 1.
/// These are options of the request's own, in the identity.
pub const QEMU_OPTIONS: [&str; 4] = [
    "--disable-debug-info",
    "--enable-debug",
    "--disable-debug-tcg",
    "--disable-debug-mutex",
];

/// `kforge qemu build` of the fixture, with [`QEMU_OPTIONS`].
pub fn qemu_build() -> Vec<String> {
    let mut args: Vec<String> = ["qemu", "build", "debian/latest", "--for-arch", "arm64"]
        .map(String::from)
        .into();
    args.extend(
        QEMU_OPTIONS
            .iter()
            .map(|o| format!("--configure-option={o}")),
    );
    args
}

/// QEMU from Debian's source package (`kforge qemu build`, slot 0 of the fixture home).
pub fn qemu() -> &'static Fixture<QemuManifest> {
    static F: OnceLock<Fixture<QemuManifest>> = OnceLock::new();
    F.get_or_init(|| {
        let args = qemu_build();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ensure("qemu", 0, &args, true, Slot::Kept, QemuManifest::entry)
    })
}
