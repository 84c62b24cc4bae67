//! build_flags: resolve the make flags (toolchain, reproducibility, ccache, the user's
//! flags) and write the managed ccache config.

use std::path::{Path, PathBuf};

use super::KernelRun;
use super::kbuild::MakeFlags;
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::identity::normalize_flag_for_identity;
use crate::kernel::request::KernelRequest;
use crate::toolchain::{Compiler, ccache};

/// The reproducible timestamp when none comes from the commit.
pub const EPOCH_TIMESTAMP: &str = "Thu Jan  1 00:00:00 UTC 1970";
/// `KBUILD_BUILD_USER` and `KBUILD_BUILD_HOST` of a reproducible build.
pub const BUILD_USER: &str = "kforge";
pub const BUILD_HOST: &str = "kforge";

#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct BuildFlags {
    pub make: MakeFlags,
    /// The flags as they enter the digest (no job count, no ccache, no host paths).
    pub identity_flags: Vec<String>,
    pub ccache_conf: Option<PathBuf>,
}

/// The flags for a request, as a pure function of its inputs.
pub fn compute(
    req: &KernelRequest,
    src: &Path,
    jobs: usize,
    timestamp: Option<&str>,
    ccache_conf: Option<&Path>,
) -> BuildFlags {
    let mut argv = vec![
        format!("--jobs={jobs}"),
        format!("ARCH={}", req.arch.kbuild()),
    ];
    if req.compiler == Compiler::Clang {
        // clang takes its target from ARCH (Kbuild's CLANG_TARGET_FLAGS) and LLVM=1 its
        // tools; no CROSS_COMPILE.
        argv.push("LLVM=1".to_owned());
    } else if let Some(prefix) = req.arch.cross_prefix() {
        argv.push(format!("CROSS_COMPILE={prefix}"));
    }
    // CC is always explicit so that a ccache wrapper is the only difference between a
    // build with and without ccache (and the identity form strips it).
    let cc = req.compiler.cc_for(req.arch);
    argv.push(if ccache_conf.is_some() {
        format!("CC=ccache {cc}")
    } else {
        format!("CC={cc}")
    });
    if req.reproducible {
        argv.push(format!(
            "KBUILD_BUILD_TIMESTAMP={}",
            timestamp.unwrap_or(EPOCH_TIMESTAMP)
        ));
        argv.push(format!("KBUILD_BUILD_USER={BUILD_USER}"));
        argv.push(format!("KBUILD_BUILD_HOST={BUILD_HOST}"));
        argv.push("KBUILD_BUILD_VERSION=1".to_owned());
    }
    // The slot path appears in debug info only (Kbuild already uses relative paths and
    // -fmacro-prefix-map when build/ sits inside the tree); map it out so slots agree.
    let prefix_map = format!("-fdebug-prefix-map={}=.", src.display());
    let user = req.extra_make_flags();
    for var in ["KCFLAGS", "KAFLAGS"] {
        let user_value = user
            .iter()
            .find_map(|f| f.strip_prefix(var).and_then(|r| r.strip_prefix('=')));
        argv.push(match user_value {
            Some(v) => format!("{var}={v} {prefix_map}"),
            None => format!("{var}={prefix_map}"),
        });
    }
    // With CONFIG_LOCALVERSION_AUTO=n, setlocalversion still appends `+` to an untagged
    // or dirty tree unless LOCALVERSION is set (even empty) on the command line.
    argv.push("LOCALVERSION=".to_owned());
    argv.extend(
        user.iter()
            .filter(|f| !f.starts_with("KCFLAGS=") && !f.starts_with("KAFLAGS="))
            .cloned(),
    );
    let identity_flags = argv
        .iter()
        .filter(|f| !f.starts_with("--jobs="))
        .map(|f| normalize_flag_for_identity(f))
        .collect();
    let env = ccache_conf.map(ccache::env_for).unwrap_or_default();
    BuildFlags {
        make: MakeFlags { argv, env },
        identity_flags,
        ccache_conf: ccache_conf.map(Path::to_owned),
    }
}

/// The pinned build timestamp: the commit's date with `timestamp_from_commit`, else `None`
/// (the epoch), read from the mirror, so that it is known before the slot is touched.
pub fn timestamp(
    req: &KernelRequest,
    mirror: &crate::slot::Mirror,
    commit: &str,
) -> Result<Option<String>, Error> {
    Ok(if req.reproducible && req.timestamp_from_commit {
        Some(mirror.commit_date_utc(commit)?)
    } else {
        None
    })
}

/// The flags as they enter the digest: the same whatever the slot, the job count and the
/// ccache wrapper (which [`normalize_flag_for_identity`] and the job filter take out).
pub fn identity_flags(req: &KernelRequest, timestamp: Option<&str>) -> Vec<String> {
    compute(req, Path::new("/"), 1, timestamp, None).identity_flags
}

/// The job count: the CPUs this process may use (cgroup quota and affinity included).
pub fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

pub struct BuildFlagsStep;

impl Step<KernelRun> for BuildFlagsStep {
    fn name(&self) -> &'static str {
        "build_flags"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let plan = &ctx.plan;
        let req = &plan.request;
        let timestamp = timestamp(req, &plan.mirror, ctx.head_commit())?;
        let conf = if req.ccache {
            crate::process::find_program("ccache")?;
            Some(ccache::write_ccache_conf(&ccache::CcacheSettings {
                cache_dir: plan.dirs.ccache_dir.clone(),
                max_size: req.ccache_max_size.clone(),
                base_dir: plan.dirs.workers_dir.clone(),
                remote: plan.dirs.ccache_remote.clone(),
            })?)
        } else {
            None
        };
        let flags = compute(
            req,
            &plan.slot.src,
            jobs(),
            timestamp.as_deref(),
            conf.as_deref(),
        );
        reporter.event(&Event::Info {
            step: self.name(),
            message: &format!("make {}", flags.make.argv.join(" ")),
        });
        ctx.state.flags = Some(flags);
        Ok(Outcome::Ran)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::request::OneOrMany;

    fn flags(req: &KernelRequest, src: &str, jobs: usize) -> BuildFlags {
        compute(
            req,
            Path::new(src),
            jobs,
            None,
            Some(Path::new("/c/kforge-ccache.conf")),
        )
    }

    #[test]
    fn gcc_reproducible_ccache() {
        let f = flags(&KernelRequest::default(), "/w/0/main/linux", 2);
        assert_eq!(
            f.make.argv,
            vec![
                "--jobs=2",
                "ARCH=x86_64",
                "CC=ccache gcc",
                "KBUILD_BUILD_TIMESTAMP=Thu Jan  1 00:00:00 UTC 1970",
                "KBUILD_BUILD_USER=kforge",
                "KBUILD_BUILD_HOST=kforge",
                "KBUILD_BUILD_VERSION=1",
                "KCFLAGS=-fdebug-prefix-map=/w/0/main/linux=.",
                "KAFLAGS=-fdebug-prefix-map=/w/0/main/linux=.",
                "LOCALVERSION=",
            ]
        );
        assert_eq!(
            f.make.env,
            vec![("CCACHE_CONFIGPATH".into(), "/c/kforge-ccache.conf".into())]
        );
    }

    #[test]
    fn clang_uses_llvm() {
        let req = KernelRequest {
            compiler: Compiler::Clang,
            ..KernelRequest::default()
        };
        let f = flags(&req, "/s", 4);
        assert!(f.make.argv.contains(&"LLVM=1".to_owned()));
        assert!(f.make.argv.contains(&"CC=ccache clang".to_owned()));
    }

    #[test]
    fn a_foreign_arch_cross_compiles_with_gcc_and_targets_with_clang() {
        let arm = KernelRequest {
            arch: crate::arch::Arch::Arm64,
            ..KernelRequest::default()
        };
        let f = flags(&arm, "/s", 2);
        assert_eq!(
            f.make.argv[1..4],
            [
                "ARCH=arm64",
                "CROSS_COMPILE=aarch64-linux-gnu-",
                "CC=ccache aarch64-linux-gnu-gcc"
            ]
        );
        let rv = KernelRequest {
            arch: crate::arch::Arch::Riscv64,
            compiler: Compiler::Clang,
            ..KernelRequest::default()
        };
        let f = flags(&rv, "/s", 2);
        assert_eq!(
            f.make.argv[1..4],
            ["ARCH=riscv", "LLVM=1", "CC=ccache clang"]
        );
        assert!(!f.make.argv.iter().any(|a| a.starts_with("CROSS_COMPILE")));
        // Two arches never share identity flags (so never a digest).
        assert_ne!(
            identity_flags(&arm, None),
            identity_flags(&KernelRequest::default(), None)
        );
    }

    #[test]
    fn identity_flags_ignore_slot_jobs_and_ccache() {
        let req = KernelRequest::default();
        let a = flags(&req, "/w/0/main/linux", 2);
        let b = flags(&req, "/w/7/main/linux", 64);
        let c = compute(&req, Path::new("/w/0/main/linux"), 2, None, None);
        assert_eq!(a.identity_flags, b.identity_flags);
        assert_eq!(a.identity_flags, c.identity_flags);
        assert_ne!(a.make.argv, b.make.argv);
        // What the fast path computes without a slot is what the step computes in one.
        assert_eq!(identity_flags(&req, None), a.identity_flags);
        let ts = Some("Tue Nov 14 22:13:20 UTC 2023");
        assert_eq!(
            identity_flags(&req, ts),
            compute(&req, Path::new("/w/3/main/linux"), 8, ts, None).identity_flags
        );
    }

    #[test]
    fn user_flags_merge_and_count() {
        let req = KernelRequest {
            make_flags: OneOrMany::One("W=1 KCFLAGS=-O2".into()),
            ..KernelRequest::default()
        };
        let f = flags(&req, "/s", 2);
        assert!(
            f.make
                .argv
                .contains(&"KCFLAGS=-O2 -fdebug-prefix-map=/s=.".to_owned())
        );
        assert_eq!(f.make.argv.last().unwrap(), "W=1");
        assert_eq!(
            f.make
                .argv
                .iter()
                .filter(|a| a.starts_with("KCFLAGS"))
                .count(),
            1
        );
        let plain = flags(&KernelRequest::default(), "/s", 2);
        assert_ne!(f.identity_flags, plain.identity_flags);
    }

    #[test]
    fn not_reproducible_pins_nothing() {
        let req = KernelRequest {
            reproducible: false,
            ..KernelRequest::default()
        };
        let f = flags(&req, "/s", 2);
        assert!(!f.make.argv.iter().any(|a| a.starts_with("KBUILD_BUILD")));
    }
}
