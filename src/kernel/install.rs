//! install: `make install` of the boot image into `destdir/boot/`, named with the release.
//!
//! The host's `installkernel` is never run (Debian's and Fedora's run boot-loader hooks):
//! Kbuild's install script looks for `$HOME/bin/$INSTALLKERNEL` first, so kforge gives it
//! its own small one that only copies.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;

use super::{KernelRun, run_make};
use crate::error::Error;
use crate::flow::{Outcome, Reporter, Step};

const INSTALLKERNEL: &str = "kforge-installkernel";

const SCRIPT: &str = r#"#!/bin/sh
# installkernel(8) for kforge: copy the image, System.map and config into the install
# directory under the release's name, and nothing else (no boot-loader hooks).
set -eu
ver=$1 image=$2 map=$3 dir=$4
[ -n "$dir" ] || { echo "kforge-installkernel: no install directory" >&2; exit 1; }
mkdir -p "$dir"
cp "$image" "$dir/.vmlinuz-$ver.tmp" && mv "$dir/.vmlinuz-$ver.tmp" "$dir/vmlinuz-$ver"
cp "$map" "$dir/.System.map-$ver.tmp" && mv "$dir/.System.map-$ver.tmp" "$dir/System.map-$ver"
config="$(dirname "$map")/.config"
if [ -f "$config" ]; then
  cp "$config" "$dir/.config-$ver.tmp" && mv "$dir/.config-$ver.tmp" "$dir/config-$ver"
fi
"#;

pub struct Install;

impl Step<KernelRun> for Install {
    fn name(&self) -> &'static str {
        "install"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        if let Some(why) = ctx.reused_reason() {
            return Ok(Outcome::Skipped(why));
        }
        let slot = ctx.plan.slot.clone();
        let release = ctx.configured().uts_release.clone();
        let built = slot.build.join(ctx.plan.request.arch.boot_image());
        if !ctx.plan.request.install {
            ctx.state.bz_image = built.is_file().then_some(built);
            return Ok(Outcome::Skipped("install is off".into()));
        }
        if !built.is_file() {
            ctx.state.bz_image = None;
            return Ok(Outcome::Skipped(
                "no boot image was built (targets narrowed the build)".into(),
            ));
        }
        let home = slot.state.join("install-home");
        let bin = home.join("bin");
        fs_err::create_dir_all(&bin)?;
        let script = bin.join(INSTALLKERNEL);
        fs_err::write(&script, SCRIPT)?;
        fs_err::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let boot = slot.destdir.join("boot");
        let mut install_path = OsString::from("INSTALL_PATH=");
        install_path.push(&boot);
        let mut flags = ctx.flags().clone();
        flags
            .make
            .env
            .push(("HOME".into(), home.to_string_lossy().into_owned()));
        let saved = ctx.state.flags.replace(flags);
        let mut args = vec![
            install_path,
            format!("INSTALLKERNEL={INSTALLKERNEL}").into(),
        ];
        let arch = ctx.plan.request.arch;
        if arch != crate::arch::Arch::X86_64 {
            // riscv's install takes the compressed Image.gz, which QEMU's `virt` loader cannot
            // boot; every arch's plain Image boots, so that is what is installed.
            args.push(format!("KBUILD_IMAGE={}", arch.boot_image()).into());
        }
        args.push("install".into());
        let r = run_make(ctx, self.name(), &args, reporter);
        ctx.state.flags = saved;
        r?;
        let image = boot.join(format!("vmlinuz-{release}"));
        if !image.is_file() {
            return Err(crate::error::ProductError::NotProduced {
                step: "make install",
                path: image,
            }
            .into());
        }
        ctx.state.bz_image = Some(image);
        Ok(Outcome::Ran)
    }
}
