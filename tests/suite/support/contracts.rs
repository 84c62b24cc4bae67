//! Every JSON document kforge prints, as the tests expect it, field by field. Unknown
//! fields are errors, so a field added, renamed or dropped by accident fails the test that
//! reads it. These are the tests' own copies of the output contracts, written once here.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `kforge build` / `kforge resume` / `kforge step collect`: the kernel manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
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
    pub arch: String,
    pub modules_dir: Option<String>,
    pub worker_index: u32,
    pub series: Option<Series>,
    pub identity: IdentityInputs,
    pub reused: Option<String>,
    pub store_entry: Option<String>,
    pub store_devel: Option<String>,
    pub dev_worktree: Option<String>,
    pub worktree: Option<Snapshot>,
    pub reproducible: Option<Reproducible>,
}

/// A manifest's `reproducible`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reproducible {
    /// `true`, `false` or `unknown`.
    pub verdict: String,
    pub reason: String,
}

/// `kforge repro`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReproReport {
    pub identity: String,
    pub verdict: String,
    pub reason: String,
    pub original_slot: u32,
    pub rebuild_slot: u32,
    pub rebuild_manifest: String,
    pub ccache: bool,
    pub variations: Vec<ReproVariation>,
    pub compared: Vec<String>,
    pub differing: Vec<ReproDifference>,
    pub only_in_original: Vec<String>,
    pub only_in_rebuild: Vec<String>,
    pub checked_unix: i64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReproVariation {
    pub what: String,
    pub rebuild: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReproDifference {
    pub path: String,
    pub original_sha256: String,
    pub rebuild_sha256: String,
    pub original_size: u64,
    pub rebuild_size: u64,
    pub first_difference: String,
    pub diffoscope: Option<String>,
}

/// A manifest's `worktree`: the developer worktree a build snapshotted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub path: String,
    pub branch: Option<String>,
    pub base_commit: String,
    pub commit: String,
    pub local_changes: bool,
    pub changed_paths: Vec<String>,
}

impl Manifest {
    /// The store entry's name, `kernel-<release>`.
    pub fn entry(&self) -> String {
        format!("kernel-{}", self.uts_release)
    }
}

/// A mailed series as applied (`series` in the manifest).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    pub message_id: String,
    pub subject: String,
    pub from_cover: bool,
    pub patches: Vec<String>,
    pub base: String,
    pub head: String,
    pub branch: Option<String>,
}

/// Every input of a kernel's digest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityInputs {
    pub scheme: String,
    pub config_sha256: String,
    pub toolchain: Toolchain,
    pub make_flags: Vec<String>,
    pub tree: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toolchain {
    pub compiler: String,
    pub cc: String,
    pub linker: String,
    pub make: String,
    pub env: Option<String>,
    /// `sha256:<hex>` by role (cc, cc1, as, ld, make, ...); absent in manifests written before.
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
}

/// `kforge identity`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub uts_release: String,
    pub version: String,
    pub label: String,
    pub digest: String,
    pub commit: String,
    pub git_ref: String,
    pub config: String,
    pub inputs: IdentityInputs,
}

/// `kforge qemu build`: the QEMU manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuManifest {
    pub schema_version: u32,
    pub identity: String,
    pub release: String,
    pub version: String,
    pub digest: String,
    pub commit: String,
    pub git_ref: String,
    pub ref_kind: String,
    pub series: Option<Series>,
    pub compiler: String,
    pub target_list: Vec<String>,
    pub features: String,
    pub configure_args: Vec<String>,
    pub qemu_binary: Option<String>,
    pub qemu_version: Option<String>,
    pub programs: Vec<String>,
    pub build_dir: String,
    pub destdir: String,
    pub worker_index: u32,
    pub inputs: QemuInputs,
    pub reused: Option<String>,
    pub store_entry: Option<String>,
}

impl QemuManifest {
    pub fn entry(&self) -> String {
        self.identity.clone()
    }
}

/// Every input of a QEMU build's digest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuInputs {
    pub recipe: String,
    pub tree: String,
    pub version: String,
    pub target_list: Vec<String>,
    pub configure_options: Vec<String>,
    pub toolchain: Toolchain,
    pub meson: String,
    pub ninja: String,
}

/// `kforge boot` / `kforge boot --check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootReport {
    pub passed: bool,
    pub expected_release: String,
    pub guest_release: Option<String>,
    pub modules_mounted: bool,
    pub module: String,
    pub module_loaded: bool,
    pub accel: String,
    pub seconds: f64,
    pub failure: Option<String>,
    pub console_tail: Vec<String>,
    pub rootfs: Option<String>,
    pub rootfs_mounted: bool,
    pub ready_seen: bool,
}

/// `kforge store ls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreLs {
    pub store: String,
    pub entries: Vec<StoreLsEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreLsEntry {
    pub identity: String,
    pub layers: Vec<String>,
    pub size: u64,
    pub pinned: bool,
    pub origin: Option<String>,
    pub commit: Option<String>,
    pub created_unix: Option<u64>,
    pub path: String,
}

/// `kforge store show`: the records of an entry's layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreShow {
    pub run: Option<LayerRecord<serde_json::Value>>,
    #[serde(default)]
    pub devel: Option<LayerRecord<serde_json::Value>>,
    pub kselftest: Option<LayerRecord<serde_json::Value>>,
}

/// `kforge-layer.json` in a store layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRecord<M> {
    pub schema: String,
    pub layer: String,
    pub uts_release: String,
    pub digest: String,
    pub created_unix: u64,
    pub origin: String,
    pub files: Vec<FileRecord>,
    pub manifest: M,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub link: Option<String>,
}

/// One line of `kforge store verify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verified {
    pub identity: String,
    pub layer: String,
    pub ok: bool,
    pub problems: Vec<String>,
}

/// `kforge store gc`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcReport {
    pub removed: Vec<String>,
    pub freed_bytes: u64,
    pub kept_pinned: Vec<String>,
    pub kept_in_use: Vec<String>,
    pub remaining_bytes: u64,
}

/// `kforge store export`.
#[derive(Debug, Clone, Deserialize)]
#[allow(clippy::struct_field_names)]
#[serde(deny_unknown_fields)]
pub struct Exported {
    pub dest: String,
    pub exported: Vec<String>,
    pub key: String,
}

/// `kforge store trust`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trusted {
    pub trusted: String,
}

/// `kforge library`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryList {
    pub presets: Vec<String>,
    pub fragments: Vec<String>,
}

/// `kforge mirror show`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorShow {
    pub mirror: String,
    pub tags: Vec<String>,
    pub branches: Vec<String>,
}

/// `kforge mirror init`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorInit {
    pub mirror: String,
    pub tags: Vec<String>,
}

/// `kforge mirror import-tarball`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Imported {
    pub tag: String,
    pub commit: String,
    pub tree: String,
    pub branch: Option<String>,
}

/// `kforge vm define`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefinition {
    pub name: String,
    pub uts_release: String,
    pub manifest: String,
    pub kernel: String,
    pub modules_dir: String,
    pub initrd: String,
    pub socket: String,
    pub console_log: String,
    pub qemu: String,
    pub virtiofsd: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: String,
    pub arch: String,
    pub module: String,
    pub command: Option<String>,
    pub oneshot: bool,
    pub rootfs: Option<RootFs>,
    pub rootfs_socket: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootFs {
    pub dir: String,
    pub init: String,
    pub ready: String,
}

/// `kforge vm status`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStatus {
    pub name: String,
    pub uts_release: String,
    pub qemu_unit: String,
    pub active_state: String,
    pub main_pid: u32,
    pub virtiofsd_state: String,
    pub console_log: String,
}

/// A slot's run record (`.kforge/<project>/run.json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub flow: String,
    pub id: String,
    /// running, succeeded, failed, interrupted, reused
    pub status: Option<String>,
    pub pid: u32,
    pub started_unix: i64,
    pub finished_unix: Option<i64>,
    pub kforge_version: String,
    pub host: Option<Host>,
    pub request: serde_json::Value,
    pub results: Vec<StepResult>,
    pub current: Option<String>,
    pub failed: Option<FailedStep>,
    pub reproducer: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    pub kernel: String,
    pub cpus: usize,
    pub memory_mib: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedStep {
    pub step: String,
    pub error: String,
}

/// What `kforge step NAME` prints for every step but collect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepResult {
    pub step: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub elapsed_ms: u64,
    #[serde(default)]
    pub state: BTreeMap<String, serde_json::Value>,
}

/// `kforge run --json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    pub release: String,
    pub command: Vec<String>,
    pub status: Option<i32>,
    pub failure: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub oopses: Vec<String>,
    pub seconds: f64,
}

/// `kforge test kunit` and `kforge results show`: a test run with its results.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRun {
    pub run: ResultsRun,
    pub results: Vec<Case>,
}

/// `kforge results ls`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsLs {
    pub runs: Vec<ResultsRun>,
}

/// One run in the results database (`kforge results ls` lists them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsRun {
    pub id: i64,
    pub kind: String,
    pub identity: String,
    pub filter: String,
    pub outcome: String,
    pub outcome_detail: Option<String>,
    pub started_unix: i64,
    pub seconds: f64,
    pub host: String,
    pub worker: u32,
    pub kforge_version: String,
    pub console_log: String,
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub pass: u32,
    pub fail: u32,
    pub skip: u32,
    pub crash: u32,
    pub timeout: u32,
    pub not_run: u32,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub path: Vec<String>,
    pub status: String,
    pub duration_ms: Option<u64>,
    pub diagnostics: Vec<String>,
}

impl TestRun {
    /// The result at `path` (`suite / case`), which must be there.
    #[track_caller]
    pub fn case(&self, path: &[&str]) -> &Case {
        self.results
            .iter()
            .find(|c| c.path == path)
            .unwrap_or_else(|| panic!("no result {path:?} in run {}", self.run.id))
    }
}

/// `kforge results diff A B`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsDiff {
    pub a: ResultsRun,
    pub b: ResultsRun,
    pub regressions: Vec<Change>,
    pub fixes: Vec<Change>,
    pub new: Vec<Change>,
    pub gone: Vec<Change>,
    pub changed: Vec<Change>,
    pub unchanged: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub path: Vec<String>,
    pub a: Option<String>,
    pub b: Option<String>,
}
