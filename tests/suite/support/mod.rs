//! The harness every integration test uses (in the manner of cargo's cargo-test-support):
//! a [`TestContext`] is one kforge home (system dir, workers, store) under `target/kforge-test/`
//! with a clean environment; [`TestContext::kforge`] builds a command, [`Execs::run`] runs it
//! and returns an [`Outcome`] whose stdout parses into the typed contracts of [`contracts`].
//!
//! Kernels and QEMUs that tests only consume come from the suite-wide [`fixtures`] store,
//! built once per suite under a lock and copied into a test's own store in a second
//! ([`TestContext::adopt`]). Nothing here is written twice in a test module.
#![allow(dead_code)]

pub mod contracts;
pub mod fixtures;
pub mod fs;
pub mod git;
pub mod kernel;
pub mod procs;
pub mod servers;
pub mod synthetic;
pub mod systemd;
pub mod tools;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;

pub use contracts::*;

/// The kforge binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kforge");

/// The library preset the tests build: the smallest bootable guest.
pub const TINY: [&str; 2] = ["--preset", "tiny_guest_defconfig"];

/// The kernel version of the fixture mirror, from its `v<version>` tag. Debian's
/// linux-source-6.12 follows the stable releases (6.12.117, then 6.12.118, ...), so the suite
/// pins none: it builds whatever the machine's package holds.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(kernel_mirror())
            .args(["tag", "--list", "v*"])
            .output()
            .expect("git runs");
        let tags = String::from_utf8(out.stdout).unwrap();
        let versions: Vec<&str> = tags
            .lines()
            .filter_map(|t| t.strip_prefix('v'))
            .filter(|v| v.split('.').count() == 3 && v.split('.').all(|n| n.parse::<u32>().is_ok()))
            .collect();
        assert_eq!(
            versions.len(),
            1,
            "the fixture mirror has one v<version> tag: {tags}"
        );
        versions[0].to_owned()
    })
}

/// The fixture mirror's tag, `v<version>`.
pub fn tag() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| format!("v{}", version()))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/kforge-test`: every test's files, the fixture store and the shared ccache.
pub fn test_root() -> PathBuf {
    let p = repo_root().join("target/kforge-test");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// The ccache every kforge run of the suite shares (so a kernel is compiled cold once).
pub fn ccache_dir() -> PathBuf {
    test_root().join("ccache")
}

/// A mirror made by one of the project's fixture scripts: the path in `env` when the suite
/// runner made it already, else the script's answer (it caches across runs).
fn fixture_mirror(env: &str, script: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(repo_root().join("scripts").join(script))
        .arg(BIN)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} failed; run scripts/install-deps.sh first"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The kernel mirror imported from Debian's linux-source-6.12 (`scripts/fixture-mirror.sh`).
pub fn kernel_mirror() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| fixture_mirror("KFORGE_TEST_MIRROR", "fixture-mirror.sh"))
}

/// The QEMU mirror imported from Debian's qemu source package (`scripts/fixture-qemu.sh`).
pub fn qemu_mirror() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| fixture_mirror("KFORGE_TEST_QEMU_MIRROR", "fixture-qemu.sh"))
}

/// The directories of one kforge home, as kforge lays them out.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn system(&self) -> PathBuf {
        self.root.join("system")
    }
    pub fn store(&self) -> PathBuf {
        self.system().join("store")
    }
    pub fn workers(&self) -> PathBuf {
        self.root.join("workers")
    }
    /// The kernel slot `WORKERS_DIR/<index>/main/linux`.
    pub fn slot(&self, index: u32) -> PathBuf {
        self.workers().join(index.to_string()).join("main/linux")
    }
    /// The QEMU slot `WORKERS_DIR/<index>/main/qemu`.
    pub fn qemu_slot(&self, index: u32) -> PathBuf {
        self.workers().join(index.to_string()).join("main/qemu")
    }
    /// The manifest `collect` leaves beside a kernel slot.
    pub fn slot_manifest(&self, index: u32) -> PathBuf {
        self.workers()
            .join(format!("{index}/main/linux.manifest.json"))
    }
    /// The manifest `collect` leaves beside a QEMU slot.
    pub fn qemu_slot_manifest(&self, index: u32) -> PathBuf {
        self.workers()
            .join(format!("{index}/main/qemu.manifest.json"))
    }
    /// Removes kernel slot `index` as if it had never been used: its checkout and build, the
    /// manifest beside it and its state (the QEMU slot beside it stays).
    pub fn drop_kernel_slot(&self, index: u32) {
        let main = self.workers().join(index.to_string()).join("main");
        for dir in [self.slot(index), main.join(".kforge/linux")] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    panic!("removing {}: {e}", dir.display())
                }
                _ => {}
            }
        }
        let _ = std::fs::remove_file(self.slot_manifest(index));
    }

    /// A kernel slot's run record.
    pub fn run_record(&self, index: u32) -> PathBuf {
        self.workers()
            .join(format!("{index}/main/.kforge/linux/run.json"))
    }

    /// A command running kforge in this home with a clean environment: nothing of the
    /// caller's `GIT_*`, `ARCH`, `MAKEFLAGS` or config file reaches it.
    fn command(&self, mirror: &OsStr, qemu_mirror: Option<&Path>) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.root)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("KFORGE_CONFIG", self.root.join("no-config.toml"))
            .env("KFORGE_SYSTEM_DIR", self.system())
            .env("KFORGE_WORKERS_DIR", self.workers())
            .env("KFORGE_MIRROR", mirror)
            .env("KFORGE_CCACHE_DIR", ccache_dir())
            .stdin(Stdio::null());
        if let Some(q) = qemu_mirror {
            c.env("KFORGE_QEMU_MIRROR", q);
        }
        c
    }
}

/// Which kernel mirror a context's kforge sees.
#[derive(Debug, Clone)]
enum MirrorChoice {
    /// The real one (`scripts/fixture-mirror.sh`).
    Kernel,
    /// A path of the test's choosing (one that may not exist).
    Path(PathBuf),
}

/// One test's kforge home, removed when the test passes (kept when it fails, to look at).
pub struct TestContext {
    dir: tempfile::TempDir,
    pub home: Home,
    mirror: MirrorChoice,
    qemu_mirror: bool,
}

impl std::ops::Deref for TestContext {
    type Target = Home;
    fn deref(&self) -> &Home {
        &self.home
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        // Store layers are sealed read-only; a user who is not root could not remove them.
        if self.store().exists() {
            fs::make_writable(&self.store());
        }
        if std::thread::panicking() {
            // Keep what a failing test left, for the developer to look at.
            self.dir.disable_cleanup(true);
            eprintln!("(test files kept in {})", self.dir.path().display());
        }
    }
}

impl TestContext {
    /// A home building from the real kernel mirror.
    pub fn new(name: &str) -> Self {
        Self::make(name, MirrorChoice::Kernel)
    }

    /// A home building from a mirror of its own that borrows the real mirror's objects:
    /// for a test that adds refs or worktrees to it (a published series, a developer
    /// worktree), which the other tests must not see.
    pub fn with_private_mirror(name: &str) -> Self {
        let mut ctx = Self::make(name, MirrorChoice::Kernel);
        let mirror = ctx.path().join("linux.git");
        git::private_mirror(kernel_mirror(), &mirror);
        ctx.mirror = MirrorChoice::Path(mirror);
        ctx
    }

    /// A home whose kernel mirror is `path` (for mirror commands, or a missing mirror).
    pub fn with_mirror(name: &str, path: impl Into<PathBuf>) -> Self {
        Self::make(name, MirrorChoice::Path(path.into()))
    }

    /// A home for commands that read no mirror (help, schema, library).
    pub fn without_mirror(name: &str) -> Self {
        Self::with_mirror(name, "/nonexistent/mirror.git")
    }

    /// Also hands kforge the QEMU fixture mirror.
    pub fn with_qemu_mirror(mut self) -> Self {
        self.qemu_mirror = true;
        self
    }

    fn make(name: &str, mirror: MirrorChoice) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(test_root())
            .unwrap();
        Self {
            home: Home {
                root: dir.path().to_path_buf(),
            },
            dir,
            mirror,
            qemu_mirror: false,
        }
    }

    /// The test's own directory (the kforge home's root): scratch files go here.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The kernel mirror this context's kforge uses.
    pub fn mirror(&self) -> PathBuf {
        match &self.mirror {
            MirrorChoice::Kernel => kernel_mirror().to_path_buf(),
            MirrorChoice::Path(p) => p.clone(),
        }
    }

    /// `kforge ARGS` in this home.
    pub fn kforge<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Execs {
        let mirror = self.mirror();
        let qemu = self.qemu_mirror.then(qemu_mirror);
        let mut cmd = self.home.command(mirror.as_os_str(), qemu);
        cmd.args(args);
        Execs { cmd }
    }

    /// The environment kforge runs with here, for a command that runs kforge indirectly
    /// (node running the Windmill flow, nsenter into a systemd).
    pub fn kforge_env(&self) -> Vec<(OsString, OsString)> {
        self.kforge(Vec::<&str>::new())
            .cmd
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
            .collect()
    }

    /// Copies a fixture kernel's store entry (run and devel layers) into this home's store
    /// and returns its manifest as this store serves it (paths in this store).
    pub fn adopt(&self, f: &fixtures::Fixture<Manifest>) -> Manifest {
        let _shared = f.shared();
        let entry = f.entry();
        for layer in ["run", "devel"] {
            let from = f.home.store().join(layer).join(&entry);
            if from.is_dir() {
                fs::copy_tree(&from, &self.store().join(layer).join(&entry));
            }
        }
        serde_json::from_slice(&fs::read(self.manifest_file(&entry))).unwrap()
    }

    /// The manifest of a store entry of this home (`kforge store show --manifest`), written
    /// to a file of the test's: what `--manifest FILE` options take.
    pub fn manifest_file(&self, entry: &str) -> PathBuf {
        let out = self
            .kforge(["store", "show", "--manifest", entry])
            .run()
            .success();
        let _: Manifest = out.json();
        let path = self.path().join("manifests").join(format!("{entry}.json"));
        fs::write(&path, &out.stdout);
        path
    }

    /// Copies the fixture QEMU's store entry into this home's store; its identity.
    pub fn adopt_qemu(&self, f: &fixtures::Fixture<QemuManifest>) -> String {
        let _shared = f.shared();
        let entry = f.entry();
        fs::copy_tree(
            &f.home.store().join("run").join(&entry),
            &self.store().join("run").join(&entry),
        );
        entry
    }
}

/// A kforge command about to run.
pub struct Execs {
    cmd: Command,
}

impl Execs {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }
    pub fn args<S: AsRef<OsStr>>(mut self, a: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(a);
        self
    }
    /// Runs in `dir` (kforge's current directory).
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }
    /// Runs in slot `index` (`KFORGE_WORKER_INDEX`).
    pub fn worker(self, index: u32) -> Self {
        self.env("KFORGE_WORKER_INDEX", index.to_string())
    }
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(k);
        self
    }
    /// Puts `dir` first on PATH (logging wrappers, stand-in tools).
    pub fn path_prepend(self, dir: &Path) -> Self {
        let mut p = dir.as_os_str().to_owned();
        p.push(":");
        p.push(std::env::var_os("PATH").unwrap_or_default());
        self.env("PATH", p)
    }
    /// The command as it stands, for a caller that runs it its own way.
    pub fn command(self) -> Command {
        self.cmd
    }
    /// Starts it with stdout and stderr piped.
    pub fn spawn(mut self) -> Child {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kforge")
    }
    /// Runs it to the end with `input` on its stdin.
    pub fn run_with_stdin(mut self, input: &[u8]) -> Outcome {
        let line = describe(&self.cmd);
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kforge");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
        let out = child.wait_with_output().expect("run kforge");
        // kforge may refuse before reading its stdin: a broken pipe is no failure here.
        let _ = writer.join().unwrap();
        Outcome::new(line, out)
    }
    /// Runs it to the end.
    pub fn run(mut self) -> Outcome {
        let line = describe(&self.cmd);
        let out = self.cmd.output().expect("run kforge");
        Outcome::new(line, out)
    }
}

fn describe(c: &Command) -> String {
    let mut s = "kforge".to_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// What a finished kforge printed, and how it ended.
pub struct Outcome {
    pub command: String,
    pub status: ExitStatus,
    /// The exit code; -1 when a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    #[allow(clippy::needless_pass_by_value)]
    pub fn new(command: String, out: std::process::Output) -> Self {
        Self {
            command,
            status: out.status,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// From a child started with [`Execs::spawn`].
    pub fn wait(child: Child) -> Self {
        Self::new("kforge (spawned)".into(), child.wait_with_output().unwrap())
    }

    #[track_caller]
    pub fn success(self) -> Self {
        assert!(
            self.status.success(),
            "`{}` failed ({}):\n{}",
            self.command,
            self.status,
            self.stderr
        );
        self
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "`{}` exited {} (expected {code}):\n{}",
            self.command, self.status, self.stderr
        );
        self
    }

    /// Asserts exit 2 (bad input) with `needle` in the message and nothing on stdout.
    #[track_caller]
    pub fn refused(self, needle: &str) -> Self {
        let s = self.code(2).stderr_has(needle);
        assert!(
            s.stdout.is_empty(),
            "`{}` printed:\n{}",
            s.command,
            s.stdout
        );
        s
    }

    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(
            self.stderr.contains(needle),
            "`{}`: expected {needle:?} on stderr:\n{}",
            self.command,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(self, needle: &str) -> Self {
        assert!(
            self.stdout.contains(needle),
            "`{}`: expected {needle:?} on stdout:\n{}",
            self.command,
            self.stdout
        );
        self
    }

    pub fn signal(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(&self.status)
    }

    /// stdout as the contract `T` (whose unknown fields are errors).
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}`: stdout is not the expected JSON ({e}):\n{}\nstderr:\n{}",
                self.command, self.stdout, self.stderr
            )
        })
    }
}

/// A kernel-shaped source tree of a few files (a Makefile with its version, an x86
/// defconfig, a config fragment, one C file), packed as `dir/linux-source-<version>.tar.xz`
/// the way Debian ships linux-source; `extra` adds files (path, content).
pub fn mini_kernel_tarball(dir: &Path, version: &str, extra: &[(&str, &str)]) -> PathBuf {
    let name = format!("linux-source-{version}");
    let src = dir.join(&name);
    let mut parts = version.split('.');
    let (v, p, s) = (
        parts.next().unwrap_or("0"),
        parts.next().unwrap_or("0"),
        parts.next().unwrap_or("0"),
    );
    fs::write(
        src.join("Makefile"),
        format!("VERSION = {v}\nPATCHLEVEL = {p}\nSUBLEVEL = {s}\nEXTRAVERSION =\n"),
    );
    fs::write(
        src.join("arch/x86/configs/x86_64_defconfig"),
        "CONFIG_64BIT=y\n",
    );
    fs::write(
        src.join("kernel/configs/kvm_guest.config"),
        "CONFIG_KVM_GUEST=y\n",
    );
    fs::write(src.join("init/version.c"), "int version;\n");
    for (path, text) in extra {
        fs::write(src.join(path), text);
    }
    let tarball = dir.join(format!("{name}.tar.xz"));
    let st = Command::new("tar")
        .arg("-cJf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir)
        .arg(&name)
        .status()
        .unwrap();
    assert!(st.success());
    tarball
}

/// The version of the mini mirror [`TestContext::with_mini_mirror`] makes.
pub const MINI_VERSION: &str = "9.9.0";

impl TestContext {
    /// A home whose mirror is a kernel-shaped tree of a few files, imported by kforge
    /// (`v9.9.0`, branch `master`): enough for every check kforge makes before it touches a
    /// slot, in a second, without the real kernel.
    pub fn with_mini_mirror(name: &str) -> Self {
        let mut ctx = Self::make(name, MirrorChoice::Path(PathBuf::new()));
        let tarball = mini_kernel_tarball(ctx.path(), MINI_VERSION, &[]);
        ctx.mirror = MirrorChoice::Path(ctx.path().join("mini.git"));
        ctx.kforge(["mirror", "import-tarball"])
            .arg(&tarball)
            .args(["--tag", &format!("v{MINI_VERSION}"), "--branch", "master"])
            .run()
            .success();
        ctx
    }
}

/// Runs a committed Windmill flow module by module here (`windmill/run-local.mjs`, as a
/// `same_worker` flow runs on one worker), with kforge's environment `envs` and this build's
/// kforge first on PATH; its result (the last module's) is its stdout.
pub fn run_windmill_flow(
    envs: impl IntoIterator<Item = (OsString, OsString)>,
    flow: &str,
    input: &str,
) -> Outcome {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let mut path = bin_dir.as_os_str().to_owned();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let out = Command::new("node")
        .env_clear()
        .envs(envs)
        .env("PATH", path)
        .arg(repo_root().join("windmill/run-local.mjs"))
        .arg(repo_root().join(flow))
        .arg(input)
        .output()
        .expect("node (scripts/install-deps.sh installs it)");
    Outcome::new(format!("node windmill/run-local.mjs {flow}"), out)
}

/// Asserts a refused request: exit 2, the message, nothing printed, and no slot created.
#[track_caller]
pub fn refused(ctx: &TestContext, args: &[&str], needle: &str) {
    ctx.kforge(args).run().refused(needle);
    assert!(!ctx.workers().exists(), "{args:?} touched the workers dir");
}
