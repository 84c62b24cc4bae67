//! install: `meson install --destdir destdir/`, and the installed binary must name its
//! identity.

use super::{PREFIX, QemuRun, entry_binary, info, meson, stream};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::process::Cmd;
use crate::store::sources_under;

pub struct Install;

impl Step<QemuRun> for Install {
    fn name(&self) -> &'static str {
        "install"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let slot = &ctx.plan.slot;
        if slot.destdir.exists() {
            fs_err::remove_dir_all(&slot.destdir)?;
        }
        fs_err::create_dir_all(&slot.destdir)?;
        let cmd = Cmd::new(meson(&slot.build))
            .cwd(&slot.build)
            .args(["install", "--no-rebuild", "--destdir"])
            .arg(&slot.destdir);
        stream(&cmd, self.name(), reporter)?;
        let mut programs = Vec::new();
        for dir in ["bin", "libexec"] {
            let rel = format!("{}/{dir}", PREFIX.trim_start_matches('/'));
            let abs = slot.destdir.join(&rel);
            if abs.is_dir() {
                programs.extend(sources_under(&abs, &rel)?.into_iter().map(|s| s.dest));
            }
        }
        programs.sort();
        let c = ctx.configured();
        let version = match entry_binary(&slot.destdir, &ctx.plan.request.target_list) {
            Some(bin) => {
                let out = Cmd::new(bin.as_os_str()).arg("--version").output()?;
                let line = out.lines().next().unwrap_or_default().trim().to_owned();
                let want = format!("kforge-qemu-{}", c.release);
                if !line.contains(&want) {
                    return Err(crate::error::ProductError::NotTheIdentity {
                        what: format!("{} --version", bin.display()),
                        found: line,
                        want,
                    }
                    .into());
                }
                info(reporter, self.name(), &line);
                Some(line)
            }
            None => None,
        };
        ctx.state.programs = Some(programs);
        ctx.state.qemu_version = version;
        Ok(Outcome::Ran)
    }
}
