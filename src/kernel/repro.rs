//! Reproducibility: what a build's manifest says about it (`reproducible`), and `kforge
//! repro`, which rebuilds an identity in another slot with everything varied that must not
//! matter and compares the rebuild's run layer with the store's, file by file.
//!
//! The rebuild is a child `kforge build` (the reproducer a run record names), started with
//! a changed environment, umask and (where allowed) host name: a variation kforge's own
//! process would carry into its later work if it were applied in place.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::dirs::Dirs;
use crate::error::{Error, InvalidRequest};
use crate::flow::{Event, Reporter};
use crate::kernel::manifest::Manifest;
use crate::kernel::request::KernelRequest;
use crate::store::{FileRecord, Layer, Release, Store, describe};

/// Whether a rebuild elsewhere gives the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// `kforge repro` rebuilt it and every file of the run layer was the same.
    True,
    /// Known before the build to embed something of the build's own, or a rebuild differed.
    False,
    /// Not checked yet.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::True => "true",
            Verdict::False => "false",
            Verdict::Unknown => "unknown",
        }
    }
}

/// The manifest's `reproducible`: the verdict and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reproducibility {
    pub verdict: Verdict,
    pub reason: String,
}

/// Why a build with this request and `.config` cannot give the same bytes twice, when it is
/// known before building: build-time values or randomness that kforge does not pin.
pub fn known_unreproducible(req: &KernelRequest, config: &str) -> Option<String> {
    if !req.reproducible {
        return Some(
            "reproducible is off: the build's own time, user and host are compiled in \
             (UTS_VERSION, LINUX_COMPILE_BY, LINUX_COMPILE_HOST)"
                .into(),
        );
    }
    let value = |symbol: &str| {
        config.lines().find_map(|l| {
            l.strip_prefix(symbol)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.trim_matches('"'))
        })
    };
    if value("CONFIG_MODULE_SIG") == Some("y")
        && value("CONFIG_MODULE_SIG_KEY").is_none_or(|k| k == "certs/signing_key.pem")
    {
        return Some(
            "CONFIG_MODULE_SIG signs the modules with a key generated during the build \
             (certs/signing_key.pem): set CONFIG_MODULE_SIG_KEY to a key of your own to pin it"
                .into(),
        );
    }
    if value("CONFIG_RANDSTRUCT_FULL") == Some("y")
        || value("CONFIG_RANDSTRUCT_PERFORMANCE") == Some("y")
    {
        return Some(
            "randstruct lays structures out from a seed generated during the build \
             (scripts/basic/randstruct.seed)"
                .into(),
        );
    }
    None
}

/// What the manifest says: not reproducible when known before the build, else the last
/// `kforge repro` verdict on the identity, else unknown.
pub fn assess(
    req: &KernelRequest,
    config: &str,
    recorded: Option<&Report>,
    release: &str,
) -> Reproducibility {
    if let Some(reason) = known_unreproducible(req, config) {
        return Reproducibility {
            verdict: Verdict::False,
            reason,
        };
    }
    match recorded {
        Some(r) => Reproducibility {
            verdict: r.verdict,
            reason: format!("kforge repro: {}", r.reason),
        },
        None => Reproducibility {
            verdict: Verdict::Unknown,
            reason: format!(
                "not checked yet: `kforge repro kernel-{release}` rebuilds it elsewhere and compares"
            ),
        },
    }
}

/// The last `kforge repro` verdict on an entry, when there is a readable one.
pub fn recorded(store: &Store, release: &Release) -> Option<Report> {
    let text = std::fs::read(store.repro_verdict_path(release)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// One thing the rebuild changed that must not change the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variation {
    pub what: String,
    /// As the rebuild had it.
    pub rebuild: String,
    /// Why it was not varied, or what reaches the build of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A file whose bytes (or presence) differ between the store's copy and the rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    /// Its path in the run layer.
    pub path: String,
    pub original_sha256: String,
    pub rebuild_sha256: String,
    pub original_size: u64,
    pub rebuild_size: u64,
    /// Where they part: the first differing byte, and for text the first differing line.
    pub first_difference: String,
    /// diffoscope's text report (its start), when diffoscope is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffoscope: Option<String>,
}

/// What `kforge repro` prints (and keeps beside the store's entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The store entry checked (`kernel-<release>`).
    pub identity: String,
    pub verdict: Verdict,
    pub reason: String,
    /// The slot of the original build and the slot of the rebuild.
    pub original_slot: u32,
    pub rebuild_slot: u32,
    /// The rebuild's manifest file (its destdir holds the compared files).
    pub rebuild_manifest: String,
    /// Whether the rebuild could take objects from ccache (then only what is not compiled,
    /// or compiled anew, is checked: the link, modpost, the image, depmod).
    pub ccache: bool,
    /// What the rebuild varied.
    pub variations: Vec<Variation>,
    /// Every file of the run layer compared byte by byte (paths in the layer).
    pub compared: Vec<String>,
    pub differing: Vec<Difference>,
    pub only_in_original: Vec<String>,
    pub only_in_rebuild: Vec<String>,
    pub checked_unix: i64,
    pub seconds: f64,
}

/// The comparison of two layers' file lists: the paths compared, those whose bytes (or
/// link, or executable bit) differ, and those on one side only.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compared {
    pub compared: Vec<String>,
    pub differing: Vec<(FileRecord, FileRecord)>,
    pub only_in_original: Vec<String>,
    pub only_in_rebuild: Vec<String>,
}

pub fn compare(original: &[FileRecord], rebuild: &[FileRecord]) -> Compared {
    let theirs: BTreeMap<&str, &FileRecord> =
        rebuild.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut out = Compared::default();
    for f in original {
        match theirs.get(f.path.as_str()) {
            None => out.only_in_original.push(f.path.clone()),
            Some(r) => {
                out.compared.push(f.path.clone());
                if r.sha256 != f.sha256 || r.link != f.link || r.executable != f.executable {
                    out.differing.push((f.clone(), (*r).clone()));
                }
            }
        }
    }
    let ours: std::collections::BTreeSet<&str> = original.iter().map(|f| f.path.as_str()).collect();
    out.only_in_rebuild = rebuild
        .iter()
        .filter(|f| !ours.contains(f.path.as_str()))
        .map(|f| f.path.clone())
        .collect();
    out
}

/// Where two files part: the first differing byte offset, and for text the first
/// differing line (both sides, shortened).
pub fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let mut text = if at == a.len().min(b.len()) && a.len() != b.len() {
        format!(
            "the same for {at} bytes, then one ends ({} against {} bytes)",
            a.len(),
            b.len()
        )
    } else {
        format!("first differing byte at offset {at}")
    };
    // Text: UTF-8 without NUL bytes (System.map, config, modules.dep, ...).
    if let (Some(ta), Some(tb)) = (as_text(a), as_text(b)) {
        let short = |s: &str| -> String {
            let mut s: String = s.chars().take(160).collect();
            if s.len() >= 160 {
                s.push('…');
            }
            s
        };
        let (mut la, mut lb) = (ta.lines(), tb.lines());
        for n in 1.. {
            match (la.next(), lb.next()) {
                (Some(x), Some(y)) if x == y => {}
                (None, None) => break,
                (x, y) => {
                    let _ = write!(
                        text,
                        "; line {n}: `{}` against `{}`",
                        short(x.unwrap_or("(end)")),
                        short(y.unwrap_or("(end)"))
                    );
                    break;
                }
            }
        }
    }
    text
}

/// Text: UTF-8 without NUL bytes (System.map, config, modules.dep, ...).
fn as_text(x: &[u8]) -> Option<&str> {
    if x.contains(&0) {
        return None;
    }
    std::str::from_utf8(x).ok()
}

/// The first lines of diffoscope's text report on two files, when diffoscope is installed
/// (it knows the formats: ELF sections, compressed images, module signatures).
fn diffoscope(a: &Path, b: &Path, seconds: u64) -> Option<String> {
    let program = crate::process::find_program("diffoscope").ok()?;
    // diffoscope's own timeout makes it report what it compared so far (a boot image takes
    // it a minute in full); `timeout` stops it should it not, long enough after that for a
    // loaded machine to write the report (killed, it says nothing).
    let out = Command::new("timeout")
        .arg((seconds + 120).to_string())
        .arg(program)
        .args(["--text", "-", "--no-progress", "--max-report-size", "65536"])
        .arg(format!("--timeout={seconds}"))
        .arg(a)
        .arg(b)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().take(60).collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// The umask of this process (read by setting it and putting it back).
fn current_umask() -> u32 {
    // SAFETY: umask(2) only swaps the process's mask; it is put back at once.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    }
}

/// How the rebuild runs: its slot and the inputs to vary.
pub struct Rebuild<'a> {
    pub dirs: &'a Dirs,
    pub original: &'a Manifest,
    /// The request that built the original, as its run recorded it.
    pub request: KernelRequest,
    pub slot: u32,
    pub ccache: bool,
    /// Wait for a busy rebuild slot instead of failing.
    pub wait: bool,
}

const REPRO_USER: &str = "kforge-repro";
const REPRO_HOST: &str = "kforge-repro-host";
const REPRO_LOCALE: &str = "fr_CH.UTF-8";
const REPRO_TZ: &str = "Etc/GMT-14";

impl Rebuild<'_> {
    /// Rebuilds, compares and keeps the verdict beside the store's entry.
    pub fn run(self, reporter: &dyn Reporter) -> Result<Report, Error> {
        let started = std::time::Instant::now();
        let release: Release = self.original.uts_release.parse()?;
        let store = Store::open(&self.dirs.store, crate::store::Kind::Kernel)?;
        let record = store
            .record::<Manifest>(Layer::Run, &release)?
            .ok_or_else(|| {
                InvalidRequest::one(format!(
                    "{} has no run layer in the store {}: nothing to compare a rebuild with",
                    store.entry(&release),
                    self.dirs.store.display()
                ))
            })?;
        let damaged = store.verify(Layer::Run, &release)?;
        if !damaged.is_empty() {
            return Err(crate::store::StoreError::Damaged {
                path: store.layer_dir(Layer::Run, &release),
                problems: damaged,
            }
            .into());
        }
        let _hold = store.hold(&release)?;
        let work = self.dirs.system_dir.join("repro").join(release.as_str());
        fs_err::create_dir_all(&work)?;
        // The request as it was, pinned to the commit built, and made to compile from a
        // fresh tree: nothing answered from the store, the slot or a peer.
        let mut req = self.request.clone();
        if self.original.series.is_none() {
            // The commit, not the ref (a branch moves); under the label the ref gave, so
            // that the release string, which the kernel embeds, is the same.
            req.git_ref = Some(self.original.commit.clone());
            req.worktree = None;
            req.custom_label = true;
            req.label = Some(self.original.label.clone());
        }
        req.reuse = false;
        req.use_peers = false;
        req.ccache = self.ccache;
        req.recreate_build_worktree = true;
        req.wipe_build = false;
        req.worktree_group = None;
        req.deploy_dir = None;
        req.deploy_name = None;
        let request_file = work.join("request.json");
        let text = serde_json::to_string_pretty(&req).expect("request serializes");
        crate::fsutil::write_atomic(&request_file, text.as_bytes())?;

        let (rebuilt, variations) = self.spawn(&request_file, reporter)?;
        let mut report = Report {
            identity: store.entry_name(&release),
            verdict: Verdict::Unknown,
            reason: String::new(),
            original_slot: self.original.worker_index,
            rebuild_slot: self.slot,
            rebuild_manifest: crate::kernel::collect_manifest_path(&Slot::new(
                &self.dirs.workers_dir,
                self.slot,
                crate::kernel::PROJECT,
            ))
            .display()
            .to_string(),
            ccache: self.ccache,
            variations,
            compared: vec![],
            differing: vec![],
            only_in_original: vec![],
            only_in_rebuild: vec![],
            checked_unix: unix_now(),
            seconds: 0.0,
        };
        if rebuilt.uts_release != self.original.uts_release {
            report.reason = format!(
                "the rebuild is another identity ({}): its inputs differ from the original's \
                 (a toolchain changed since?), so the bytes say nothing",
                rebuilt.uts_release
            );
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        let destdir = PathBuf::from(&rebuilt.destdir);
        let image = destdir.join(format!("boot/vmlinuz-{release}"));
        let modules = destdir.join("lib/modules").join(release.as_str());
        let sources = crate::kernel::publish::run_sources(
            release.as_str(),
            image,
            &destdir,
            Some(Path::new(&rebuilt.build_dir)),
            modules.is_dir().then_some(modules.as_path()),
        )?;
        let theirs = describe(&sources)?;
        let c = compare(&record.files, &theirs);
        let layer = store.layer_dir(Layer::Run, &release);
        for (i, (a, b)) in c.differing.iter().enumerate() {
            let pa = layer.join(&a.path);
            let pb = sources
                .iter()
                .find(|s| s.dest == b.path)
                .map(|s| s.from.clone())
                .unwrap_or_default();
            let (ba, bb) = (
                std::fs::read(&pa).unwrap_or_default(),
                std::fs::read(&pb).unwrap_or_default(),
            );
            report.differing.push(Difference {
                path: a.path.clone(),
                original_sha256: a.sha256.clone(),
                rebuild_sha256: b.sha256.clone(),
                original_size: a.size,
                rebuild_size: b.size,
                first_difference: if a.link.is_some() || b.link.is_some() {
                    format!(
                        "a symlink to {:?} against {:?}",
                        a.link.as_deref().unwrap_or("(a file)"),
                        b.link.as_deref().unwrap_or("(a file)")
                    )
                } else if ba == bb {
                    "the same bytes; the executable bit differs".into()
                } else {
                    first_difference(&ba, &bb)
                },
                // diffoscope on the first differing files, each stopped after 30 s.
                diffoscope: (i < 3).then(|| diffoscope(&pa, &pb, 30)).flatten(),
            });
        }
        report.compared = c.compared;
        report.only_in_original = c.only_in_original;
        report.only_in_rebuild = c.only_in_rebuild;
        let same = report.differing.is_empty()
            && report.only_in_original.is_empty()
            && report.only_in_rebuild.is_empty();
        report.verdict = if same { Verdict::True } else { Verdict::False };
        report.reason = if same {
            format!(
                "all {} files of the run layer are the same after a rebuild in slot {}{}",
                report.compared.len(),
                self.slot,
                if self.ccache {
                    " (with ccache: compiled objects came from the cache)"
                } else {
                    ""
                }
            )
        } else {
            let mut named: Vec<&str> = report.differing.iter().map(|d| d.path.as_str()).collect();
            named.extend(report.only_in_original.iter().map(String::as_str));
            named.extend(report.only_in_rebuild.iter().map(String::as_str));
            let more = named.len().saturating_sub(5);
            named.truncate(5);
            format!(
                "{} of {} files differ after a rebuild in slot {}: {}{}",
                report.differing.len()
                    + report.only_in_original.len()
                    + report.only_in_rebuild.len(),
                report.compared.len(),
                self.slot,
                named.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        };
        report.seconds = started.elapsed().as_secs_f64();
        let mut text = serde_json::to_vec_pretty(&report).expect("report serializes");
        text.push(b'\n');
        let kept = store.repro_verdict_path(&release);
        fs_err::create_dir_all(kept.parent().expect("inside the store"))?;
        crate::fsutil::write_atomic(&kept, &text)?;
        reporter.event(&Event::Info {
            step: "repro",
            message: &format!(
                "reproducible: {}: {}",
                report.verdict.as_str(),
                report.reason
            ),
        });
        Ok(report)
    }

    /// Runs the rebuild: `kforge build --request FILE` in the rebuild's slot, with the
    /// directories given explicitly and the environment, umask and host name varied.
    fn spawn(
        &self,
        request_file: &Path,
        reporter: &dyn Reporter,
    ) -> Result<(Manifest, Vec<Variation>), Error> {
        let exe = std::env::current_exe()?;
        let d = self.dirs;
        let mut cmd = Command::new(&exe);
        cmd.arg("--workers-dir")
            .arg(&d.workers_dir)
            .arg("--worker-index")
            .arg(self.slot.to_string())
            .arg("--system-dir")
            .arg(&d.system_dir)
            .arg("--mirror")
            .arg(&d.mirror)
            .arg("--qemu-mirror")
            .arg(&d.qemu_mirror)
            .arg("--store")
            .arg(&d.store)
            .arg("--ccache-dir")
            .arg(&d.ccache_dir);
        if let Some(lib) = &d.library {
            cmd.arg("--library").arg(lib);
        }
        if let Some(remote) = &d.ccache_remote {
            cmd.arg("--ccache-remote").arg(remote);
        }
        cmd.arg("build").arg("--request").arg(request_file);
        if self.wait {
            cmd.arg("--wait");
        }
        // HOME stays: rustup's proxies find their toolchain through it, and Kconfig records
        // whether a rustc answers (CONFIG_RUSTC_VERSION), so another HOME is another
        // toolchain, not a variation.
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", REPRO_USER)
            .env("LOGNAME", REPRO_USER)
            .env("LANG", REPRO_LOCALE)
            .env("LC_ALL", REPRO_LOCALE)
            .env("TZ", REPRO_TZ);
        for keep in ["HOME", "TMPDIR", "RUSTUP_HOME", "CARGO_HOME"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        let umask = if current_umask() == 0o002 {
            0o022
        } else {
            0o002
        };
        let slot_src = |i| {
            Slot::new(&d.workers_dir, i, crate::kernel::PROJECT)
                .src
                .display()
                .to_string()
        };
        let original_slot = slot_src(self.original.worker_index);
        let mut variations = vec![
            Variation {
                what: "slot".into(),
                rebuild: slot_src(self.slot),
                note: Some(format!(
                    "the original was built in {original_slot}; the tree is checked out anew"
                )),
            },
            Variation {
                what: "umask".into(),
                rebuild: format!("{umask:04o}"),
                note: None,
            },
            Variation {
                what: "user".into(),
                rebuild: REPRO_USER.into(),
                note: Some("USER and LOGNAME (the uid stays: changing it needs root and a second account)".into()),
            },
            Variation {
                what: "locale and time zone".into(),
                rebuild: format!("LANG=LC_ALL={REPRO_LOCALE} TZ={REPRO_TZ}"),
                note: Some("kforge passes neither to the tools it runs (their environment is scrubbed): this checks that it still does not".into()),
            },
            Variation {
                what: "time".into(),
                rebuild: "the rebuild's own".into(),
                note: Some(format!(
                    "the original's UTS_VERSION is `{}`",
                    self.original.uts_version
                )),
            },
        ];
        // The host name, in a UTS namespace of the rebuild's own (root only).
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let host_variation = |note: Option<String>| Variation {
            what: "host name".into(),
            rebuild: if note.is_none() {
                REPRO_HOST.into()
            } else {
                "this host's".into()
            },
            note,
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut with_host = root;
        let child = loop {
            let mut c = clone_command(&cmd);
            // SAFETY: the closure only calls async-signal-safe functions (umask, unshare,
            // sethostname) between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    libc::umask(umask);
                    if with_host {
                        if libc::unshare(libc::CLONE_NEWUTS) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        let name = REPRO_HOST.as_bytes();
                        if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            match c.spawn() {
                Ok(child) => break child,
                Err(e) if with_host => {
                    variations.push(host_variation(Some(format!(
                        "not varied: a UTS namespace was refused ({e})"
                    ))));
                    with_host = false;
                }
                Err(e) => return Err(e.into()),
            }
        };
        if with_host {
            variations.push(host_variation(None));
        } else if !root {
            variations.push(host_variation(Some(
                "not varied: a UTS namespace of its own needs root".into(),
            )));
        }
        reporter.event(&Event::Info {
            step: "repro",
            message: &format!(
                "rebuilding {} in slot {} (umask {umask:04o}, user {REPRO_USER}, {}ccache)",
                self.original.uts_release,
                self.slot,
                if self.ccache { "" } else { "no " }
            ),
        });
        let out = crate::process::wait_capturing(child)?;
        if !out.0.success() {
            return Err(crate::error::ProductError::Rebuild {
                status: out.0.to_string(),
            }
            .into());
        }
        let manifest: Manifest =
            serde_json::from_slice(&out.1).map_err(|e| crate::error::ProductError::Rebuild {
                status: format!("it printed no manifest ({e})"),
            })?;
        Ok((manifest, variations))
    }
}

/// A copy of a command's program, arguments and environment (std's Command is not Clone).
fn clone_command(c: &Command) -> Command {
    let mut n = Command::new(c.get_program());
    n.args(c.get_args()).env_clear();
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            n.env(k, v);
        }
    }
    n.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    n
}

use crate::slot::Slot;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sha: &str) -> FileRecord {
        FileRecord {
            path: path.into(),
            size: 1,
            sha256: sha.into(),
            executable: false,
            link: None,
        }
    }

    #[test]
    fn comparing_layers_names_what_differs_and_what_is_on_one_side() {
        let a = [
            file("boot/vmlinuz", "1"),
            file("boot/config", "2"),
            file("gone", "3"),
        ];
        let b = [
            file("boot/vmlinuz", "9"),
            file("boot/config", "2"),
            file("new", "4"),
        ];
        let c = compare(&a, &b);
        assert_eq!(c.compared, ["boot/vmlinuz", "boot/config"]);
        assert_eq!(c.differing.len(), 1);
        assert_eq!(c.differing[0].0.path, "boot/vmlinuz");
        assert_eq!(c.only_in_original, ["gone"]);
        assert_eq!(c.only_in_rebuild, ["new"]);
        let same = compare(&a, &a);
        assert!(same.differing.is_empty() && same.only_in_rebuild.is_empty());
        let mut exec = a.clone();
        exec[1].executable = true;
        assert_eq!(
            compare(&a, &exec).differing.len(),
            1,
            "the mode is part of the bytes"
        );
    }

    #[test]
    fn the_first_difference_names_the_offset_and_the_line() {
        let d = first_difference(b"a\nb c\n", b"a\nb d\n");
        assert!(d.contains("offset 4"), "{d}");
        assert!(d.contains("line 2: `b c` against `b d`"), "{d}");
        let d = first_difference(b"\x00\x01\x02", b"\x00\x01");
        assert!(d.contains("the same for 2 bytes"), "{d}");
        assert!(!d.contains("line"), "{d}");
    }

    #[test]
    fn known_unreproducible_configurations_are_named_before_the_build() {
        let req = KernelRequest::default();
        assert!(req.reproducible);
        assert_eq!(known_unreproducible(&req, "CONFIG_MODULES=y\n"), None);
        let signed = "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_KEY=\"certs/signing_key.pem\"\n";
        assert!(
            known_unreproducible(&req, signed)
                .unwrap()
                .contains("CONFIG_MODULE_SIG")
        );
        let own_key = "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_KEY=\"/keys/mine.pem\"\n";
        assert_eq!(known_unreproducible(&req, own_key), None);
        assert!(
            known_unreproducible(&req, "CONFIG_RANDSTRUCT_FULL=y\n")
                .unwrap()
                .contains("randstruct")
        );
        let off = KernelRequest {
            reproducible: false,
            ..KernelRequest::default()
        };
        let r = assess(&off, "", None, "6.12-x-0");
        assert_eq!(r.verdict, Verdict::False);
        assert!(r.reason.contains("reproducible is off"), "{}", r.reason);
        let r = assess(&req, "", None, "6.12-x-0");
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(
            r.reason.contains("kforge repro kernel-6.12-x-0"),
            "{}",
            r.reason
        );
    }
}
