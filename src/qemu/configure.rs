//! configure: QEMU's configure in build/, only when its options changed (a warm slot is
//! incremental).

use super::{QemuRun, stream};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};
use crate::fsutil::write_atomic;
use crate::process::Cmd;

/// What configure last ran with in build/, so a warm slot is not configured again.
const CONFIGURE_STAMP: &str = "kforge-configure.json";

pub struct Configure;

impl Step<QemuRun> for Configure {
    fn name(&self) -> &'static str {
        "configure"
    }

    fn run(&self, ctx: &mut QemuRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let slot = &ctx.plan.slot;
        let c = ctx.configured();
        let stamp_text = serde_json::to_string_pretty(&serde_json::json!({
            "args": c.args,
            "env": c.env,
        }))
        .expect("serializes");
        let stamp = slot.build.join(CONFIGURE_STAMP);
        if slot.build.join("build.ninja").is_file()
            && fs_err::read_to_string(&stamp).ok().as_deref() == Some(stamp_text.as_str())
        {
            return Ok(Outcome::Skipped(
                "build/ is configured with these options already".into(),
            ));
        }
        // Another configuration's build/ would mix the two: start it clean.
        slot.wipe_build()?;
        let mut cmd = Cmd::new(slot.src.join("configure").as_os_str())
            .cwd(&slot.build)
            .args(c.args.iter().cloned());
        for (k, v) in &c.env {
            cmd = cmd.env(k, v);
        }
        stream(&cmd, self.name(), reporter)?;
        write_atomic(&stamp, stamp_text.as_bytes())?;
        Ok(Outcome::Ran)
    }
}
