//! devtools: `compile_commands.json` for the build, made by the kernel's own generator
//! (scripts/clang-tools/gen_compile_commands.py over exactly the objects this build linked),
//! run as `make compile_commands.json` runs it but without make, whose walk of the whole
//! build to find nothing to do cost seconds on every build. publish_devel takes it into the
//! devel layer.

use super::{KernelRun, forward};
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::process::Cmd;
use crate::toolchain::Compiler;

pub struct Devtools;

impl Step<KernelRun> for Devtools {
    fn name(&self) -> &'static str {
        "devtools"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let out = ctx.plan.slot.build.join("compile_commands.json");
        // A database left by an earlier build of this slot must not pass for this one's
        // (publish_devel takes whatever is there).
        match fs_err::remove_file(&out) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        if !ctx.plan.request.devtools {
            return Ok(Outcome::Skipped("devtools is off".into()));
        }
        // The kernel Makefile's rule: `$(PYTHON3) gen_compile_commands.py -a $(AR) -o $@
        // vmlinux.a $(KBUILD_VMLINUX_LIBS) $(MODORDER)`, in the object tree.
        let build = &ctx.plan.slot.build;
        let mut archives: Vec<String> = vec!["vmlinux.a".into(), "lib/lib.a".into()];
        if let Ok(arches) = fs_err::read_dir(build.join("arch")) {
            for a in arches.flatten() {
                archives.push(format!(
                    "arch/{}/lib/lib.a",
                    a.file_name().to_string_lossy()
                ));
            }
        }
        archives.push("modules.order".into());
        archives.retain(|a| build.join(a).is_file());
        let ar = match (
            ctx.plan.request.compiler,
            ctx.plan.request.arch.cross_prefix(),
        ) {
            (Compiler::Clang, _) => "llvm-ar".to_owned(),
            (Compiler::Gcc, Some(prefix)) => format!("{prefix}ar"),
            (Compiler::Gcc, None) => "ar".to_owned(),
        };
        let cmd = Cmd::new("python3")
            .arg(
                ctx.plan
                    .slot
                    .src
                    .join("scripts/clang-tools/gen_compile_commands.py"),
            )
            .args(["-a", ar.as_str(), "-o", "compile_commands.json"])
            .args(&archives)
            .cwd(build);
        reporter.event(&Event::Command {
            step: self.name(),
            command: &cmd.display(),
        });
        cmd.stream(&mut forward(self.name(), reporter))?;
        let entries = read_entries(&out)?;
        reporter.event(&Event::Info {
            step: self.name(),
            message: &format!("{} ({} translation units)", out.display(), entries.len()),
        });
        ctx.state.compile_commands = Some(out);
        Ok(Outcome::Ran)
    }
}

/// One entry of a compilation database, as the kernel's generator writes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub command: String,
    pub directory: String,
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Reads a compilation database; an empty or unreadable one is an error.
pub fn read_entries(path: &std::path::Path) -> Result<Vec<Entry>, Error> {
    let text = fs_err::read_to_string(path)?;
    let what = || format!("{} (a compilation database)", path.display());
    let entries: Vec<Entry> =
        serde_json::from_str(&text).map_err(|source| crate::error::ProductError::NotJson {
            what: what(),
            source,
        })?;
    if entries.is_empty() {
        return Err(crate::error::ProductError::Unusable {
            what: what(),
            problem: "it is empty".into(),
        }
        .into());
    }
    Ok(entries)
}
