//! compile: ninja builds exactly what meson installs, not the test programs.

use std::path::PathBuf;

use super::{QemuRun, meson, stream};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::process::Cmd;

#[derive(serde::Deserialize)]
pub(super) struct MesonTarget {
    filename: Vec<PathBuf>,
    installed: bool,
}

pub struct Compile;

impl Step<QemuRun> for Compile {
    fn name(&self) -> &'static str {
        "compile"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let slot = &ctx.plan.slot;
        // Only what install takes: the test programs and benchmarks of a plain `ninja`
        // would double the build.
        let json = Cmd::new(meson(&slot.build))
            .cwd(&slot.build)
            .args(["introspect", "--targets"])
            .output()?;
        let targets: Vec<MesonTarget> =
            serde_json::from_str(&json).map_err(|source| crate::error::ProductError::NotJson {
                what: "meson introspect --targets".into(),
                source,
            })?;
        let mut outputs: Vec<String> = targets
            .iter()
            .filter(|t| t.installed)
            .flat_map(|t| t.filename.iter())
            .filter_map(|f| f.strip_prefix(&slot.build).ok())
            .map(|f| f.display().to_string())
            .collect();
        outputs.sort();
        outputs.dedup();
        if outputs.is_empty() {
            return Err(crate::error::ProductError::Unusable {
                what: "meson introspect --targets".into(),
                problem: "nothing to install: is the target list empty?".into(),
            }
            .into());
        }
        let jobs = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut cmd = Cmd::new("ninja")
            .cwd(&slot.build)
            .arg(format!("-j{jobs}"))
            .args(outputs);
        for (k, v) in &ctx.configured().env {
            cmd = cmd.env(k, v);
        }
        stream(&cmd, self.name(), reporter)?;
        Ok(Outcome::Ran)
    }
}
