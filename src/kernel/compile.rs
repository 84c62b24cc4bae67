//! compile: `make --jobs=$(nproc)` (plus `targets`): vmlinux, the boot image, modules.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::figures::{self, BuildFigures};
use super::{KernelRun, run_make_observed};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::fsutil::{touch, write_atomic};
use crate::toolchain::ccache;

pub struct Compile;

impl Step<KernelRun> for Compile {
    fn name(&self) -> &'static str {
        "compile"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        // Said before compiling, never found out by a rebuild.
        let config = fs_err::read_to_string(ctx.config_path()).unwrap_or_default();
        if let Some(why) = super::repro::known_unreproducible(&ctx.plan.request, &config) {
            reporter.event(&crate::flow::Event::Warn {
                step: self.name(),
                message: &format!("this build is not reproducible: {why}"),
            });
        }
        let goals: Vec<OsString> = ctx.plan.request.targets.iter().map(Into::into).collect();
        // This build's own ccache counters: a log of its calls, not the cache's totals.
        let stats_log = ctx.plan.slot.state.join("ccache-stats.log");
        match fs_err::remove_file(&stats_log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        fs_err::create_dir_all(&ctx.plan.slot.state)?;
        // ccache hashes the configuration without the identity (see `kconfig_key`), so a new
        // identity of the same configuration hits the cache in direct mode.
        let key_path = ctx.plan.slot.state.join("ccache-kconfig-key");
        let key = ctx
            .plan
            .request
            .ccache
            .then(|| ccache::kconfig_key(&config));
        let mut env = vec![("CCACHE_STATSLOG", stats_log.as_path())];
        if let Some(key) = &key {
            write_atomic(&key_path, key.as_bytes())?;
            env.push(("CCACHE_IGNOREHEADERS", Path::new(ccache::KCONFIG_HEADER)));
            env.push(("CCACHE_EXTRAFILES", key_path.as_path()));
        }
        let mut fig = BuildFigures::default();
        run_make_observed(
            ctx,
            self.name(),
            &goals,
            &env,
            &mut |line| fig.warnings.see(line),
            reporter,
        )?;
        // Read before a second make appends its recache calls: the figures count the build's
        // own calls, a recompiled object as a miss.
        let log = fs_err::read_to_string(&stats_log).unwrap_or_default();
        let recompiled = if key.is_some() {
            recompile_embedding_hits(ctx, self.name(), &goals, &env, &log, reporter)?
        } else {
            Vec::new()
        };
        // make's syncconfig must have left the configuration as hashed: else objects could
        // have come from the cache for another one.
        if let Some(key) = key
            && ccache::kconfig_key(&fs_err::read_to_string(ctx.config_path())?) != key
        {
            return Err(crate::error::ProductError::Unusable {
                what: ctx.config_path().display().to_string(),
                problem: "make's syncconfig changed it during the compile, so ccache's \
                          configuration key did not describe the build (a bug in kforge's \
                          configure step: please report the config); build again with \
                          --ccache=false"
                    .into(),
            }
            .into());
        }
        if ctx.plan.request.ccache {
            fig.ccache = Some(figures::ccache_of(&log, &ctx.plan.slot.build, &recompiled));
        }
        let build = &ctx.plan.slot.build;
        fig.sizes.boot_image = fs_err::metadata(build.join(ctx.plan.request.arch.boot_image()))
            .ok()
            .map(|m| m.len());
        if let Some((text, data, bss)) = figures::elf_sizes(&build.join("vmlinux")) {
            fig.sizes.vmlinux_text = Some(text);
            fig.sizes.vmlinux_data = Some(data);
            fig.sizes.vmlinux_bss = Some(bss);
        }
        if fig.warnings.total > 0 {
            reporter.event(&crate::flow::Event::Info {
                step: self.name(),
                message: &format!(
                    "{} compiler warnings ({})",
                    fig.warnings.total,
                    fig.warnings
                        .by_kind
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        ctx.state.figures = Some(fig);
        // The release the build baked must be the identity configure computed.
        let release_file = ctx.plan.slot.build.join("include/config/kernel.release");
        let release = fs_err::read_to_string(&release_file)?.trim().to_owned();
        let want = &ctx.configured().uts_release;
        if &release != want {
            return Err(crate::error::ProductError::NotTheIdentity {
                what: release_file.display().to_string(),
                found: release,
                want: want.clone(),
            }
            .into());
        }
        Ok(Outcome::Ran)
    }
}

/// Objects ccache answered although they embed a generated file (see
/// [`ccache::embedding_hits`]) are compiled again: their inputs made newer than the objects,
/// a second make with `CCACHE_RECACHE` (compile, and store the result over the old one),
/// which rebuilds them and what contains them (vmlinux, the boot image) and nothing else.
/// Returns the inputs compiled again.
fn recompile_embedding_hits(
    ctx: &mut KernelRun,
    step: &'static str,
    goals: &[OsString],
    env: &[(&str, &Path)],
    log: &str,
    reporter: &dyn Reporter,
) -> Result<Vec<PathBuf>, Error> {
    let build = &ctx.plan.slot.build;
    let inputs = ccache::embedding_hits(log, build);
    if inputs.is_empty() {
        return Ok(inputs);
    }
    let shown: Vec<String> = inputs
        .iter()
        .map(|p| p.strip_prefix(build).unwrap_or(p).display().to_string())
        .collect();
    reporter.event(&crate::flow::Event::Info {
        step,
        message: &format!(
            "ccache answered {} from its cache, but it cannot check what `.incbin` embeds there: compiled again",
            shown.join(", ")
        ),
    });
    for input in &inputs {
        touch(input, std::time::SystemTime::now())?;
    }
    let mut env = env.to_vec();
    env.push(("CCACHE_RECACHE", Path::new("1")));
    run_make_observed(ctx, step, goals, &env, &mut |_| {}, reporter)?;
    Ok(inputs)
}
