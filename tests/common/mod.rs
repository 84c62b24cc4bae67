//! The harness for kforge's integration tests: each test gets its own kforge home (system
//! dir, workers dir) under `target/kforge-test/`, a clean environment, the real fixture
//! mirror made by `scripts/fixture-mirror.sh`, and a ccache shared by the whole run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;

pub const BIN: &str = env!("CARGO_BIN_EXE_kforge");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn test_root() -> PathBuf {
    let p = repo_root().join("target/kforge-test");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// The fixture mirror (made once, cached across runs by the script itself).
pub fn mirror() -> &'static Path {
    static MIRROR: OnceLock<PathBuf> = OnceLock::new();
    MIRROR.get_or_init(|| {
        if let Some(p) = std::env::var_os("KFORGE_TEST_MIRROR") {
            return PathBuf::from(p);
        }
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/fixture-mirror.sh"))
            .arg(BIN)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/fixture-mirror.sh");
        assert!(
            out.status.success(),
            "scripts/fixture-mirror.sh failed; run scripts/install-deps.sh first"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

pub struct TestContext {
    pub dir: tempfile::TempDir,
    pub mirror: PathBuf,
}

impl TestContext {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(test_root())
            .unwrap();
        Self {
            dir,
            mirror: mirror().to_owned(),
        }
    }

    /// A context whose mirror is not the fixture (for mirror commands).
    pub fn with_mirror(name: &str, mirror: PathBuf) -> Self {
        let mut c = Self::new(name);
        c.mirror = mirror;
        c
    }

    pub fn workers(&self) -> PathBuf {
        self.dir.path().join("workers")
    }

    pub fn slot(&self, index: u32) -> PathBuf {
        self.workers().join(index.to_string()).join("main/linux")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("KFORGE_CONFIG", self.dir.path().join("no-config.toml"))
            .env("KFORGE_SYSTEM_DIR", self.dir.path().join("system"))
            .env("KFORGE_WORKERS_DIR", self.workers())
            .env("KFORGE_MIRROR", &self.mirror)
            .env("KFORGE_CCACHE_DIR", test_root().join("ccache"))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command().args(args).output().expect("run kforge");
        Run::from(out)
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "kforge failed:\n{}", self.stderr);
        self
    }
    pub fn json<T: for<'de> Deserialize<'de>>(&self) -> T {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not the expected JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs git in `dir` without the user's config, as a fixed test identity; its trimmed stdout.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "kforge test")
        .env("GIT_AUTHOR_EMAIL", "test@kforge.invalid")
        .env("GIT_COMMITTER_NAME", "kforge test")
        .env("GIT_COMMITTER_EMAIL", "test@kforge.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The manifest contract, field by field; unknown fields are an error, so a field added
/// or renamed by accident fails here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestContract {
    pub schema_version: u32,
    pub commit: String,
    pub uts_release: String,
    #[serde(rename = "bzImage")]
    pub bz_image: Option<String>,
    pub build_dir: String,
    pub config: String,
    pub config_method: String,
    pub destdir: String,
    pub linux_compiler: String,
    pub uts_version: String,
    pub uts_machine: String,
    pub linux_compile_by: String,
    pub linux_compile_host: String,
    pub git_ref: String,
    pub ref_kind: String,
    pub version: String,
    pub label: String,
    pub digest: String,
    pub compiler: String,
    pub modules_dir: Option<String>,
    pub worker_index: u32,
    pub series: Option<serde_json::Value>,
    pub identity: serde_json::Value,
    pub reused: Option<String>,
    pub store_entry: Option<String>,
    pub store_devel: Option<String>,
    pub dev_worktree: Option<String>,
}

impl TestContext {
    /// The store of this test's kforge home.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("system/store")
    }
}

/// What `kforge identity` prints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityContract {
    pub uts_release: String,
    pub version: String,
    pub label: String,
    pub digest: String,
    pub commit: String,
    pub git_ref: String,
    pub config: String,
    pub inputs: serde_json::Value,
}

/// `<version>-<label>-<12 hex>` within 64 characters.
pub fn assert_release_format(release: &str, version: &str, label: &str) {
    assert!(release.len() <= 64, "{release} is longer than 64");
    let rest = release
        .strip_prefix(&format!("{version}-{label}-"))
        .unwrap_or_else(|| panic!("{release} does not start with {version}-{label}-"));
    assert_eq!(rest.len(), 12, "{release}: digest is not 12 long");
    assert!(
        rest.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{release}"
    );
}

/// The kernel version string in a bzImage's setup header (`kernel_version` at 0x20e points
/// to a NUL-terminated string, offset + 0x200), uncompressed: what the booted kernel is.
pub fn bzimage_version_string(image: &Path) -> String {
    let bytes = std::fs::read(image).unwrap();
    assert_eq!(
        &bytes[0x202..0x206],
        b"HdrS",
        "{} is not a bzImage",
        image.display()
    );
    let off = u16::from_le_bytes([bytes[0x20e], bytes[0x20f]]) as usize + 0x200;
    let end = bytes[off..].iter().position(|b| *b == 0).unwrap() + off;
    String::from_utf8_lossy(&bytes[off..end]).into_owned()
}
