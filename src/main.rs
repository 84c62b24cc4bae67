//! The `kforge` binary: parse the command line, call the library, render its events on
//! stderr, print results (manifest, identity, schema) as JSON on stdout.

mod cli;
mod ui;

use std::process::ExitCode;

use clap::Parser;

use cli::{BuildArgs, Cli, Command, MirrorCommand};
use kforge::dirs::{DirFlags, Dirs};
use kforge::error::{Error, exit};
use kforge::flow::{Event, Reporter};
use kforge::kernel::{self, IdentityReport, Until};
use kforge::library::Library;
use kforge::slot::Mirror;

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializes")
    );
}

fn build(args: &BuildArgs, dirs: &Dirs, until: Until, ui: &dyn Reporter) -> Result<(), Error> {
    let request = args.to_request().map_err(Error::Input)?;
    let plan = kernel::plan(request, dirs)?;
    let finished = kernel::run(plan, until, args.wait, ui)?;
    match until {
        Until::Identity => print_json(&IdentityReport::of(&finished.run)),
        Until::Collect => print_json(finished.run.manifest.as_ref().expect("collect ran")),
    }
    Ok(())
}

fn mirror(cmd: &MirrorCommand, dirs: &Dirs, ui: &dyn Reporter) -> Result<(), Error> {
    match cmd {
        MirrorCommand::Init { from } => {
            let m = Mirror::init_from(&dirs.mirror, from)?;
            print_json(&serde_json::json!({ "mirror": m.path, "tags": m.tags()? }));
        }
        MirrorCommand::ImportTarball { file, tag, branch } => {
            kforge::slot::git::validate_ref(tag).map_err(Error::Input)?;
            if let Some(b) = branch {
                kforge::slot::git::validate_ref(b).map_err(Error::Input)?;
            }
            let m = Mirror::open_or_create(&dirs.mirror)?;
            let imported = m.import_tarball(file, tag, branch.as_deref(), &mut |msg| {
                ui.event(&Event::Info {
                    step: "import-tarball",
                    message: msg,
                });
            })?;
            print_json(&imported);
        }
        MirrorCommand::Show => {
            let m = Mirror::open(&dirs.mirror)?;
            let branches = kforge::slot::git::git(&m.path)
                .args(["for-each-ref", "--format=%(refname:short)", "refs/heads/"])
                .output()?;
            print_json(&serde_json::json!({
                "mirror": m.path,
                "tags": m.tags()?,
                "branches": branches.lines().collect::<Vec<_>>(),
            }));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.global.quiet {
        ui::Level::Quiet
    } else if cli.global.verbose {
        ui::Level::Verbose
    } else {
        ui::Level::Normal
    };
    let ui = ui::Ui::new(level);
    // Ctrl-C or SIGTERM: stop make, git and the rest with us.
    let _ = ctrlc::set_handler(|| {
        kforge::process::kill_all_children();
        eprintln!("\nkforge: interrupted; the slot stays usable for the next build");
        std::process::exit(130);
    });
    let g = &cli.global;
    let flags = DirFlags {
        config: g.config.clone(),
        workers_dir: g.workers_dir.clone(),
        worker_index: g.worker_index,
        system_dir: g.system_dir.clone(),
        mirror: g.mirror.clone(),
        library: g.library.clone(),
    };
    let result = Dirs::resolve(&flags)
        .map_err(|e| Error::Input(e.to_string()))
        .and_then(|dirs| match &cli.command {
            Command::Build(a) => build(a, &dirs, Until::Collect, &ui),
            Command::Identity(a) => build(a, &dirs, Until::Identity, &ui),
            Command::Schema => {
                print_json(&kforge::request::schema());
                Ok(())
            }
            Command::Library => {
                let lib = Library::new(dirs.library.clone());
                print_json(&serde_json::json!({
                    "presets": lib.presets()?,
                    "fragments": lib.fragments()?,
                }));
                Ok(())
            }
            Command::Mirror(m) => mirror(m, &dirs, &ui),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let code = e.exit_code();
            ExitCode::from(
                u8::try_from(code).unwrap_or(u8::try_from(exit::INFRASTRUCTURE).unwrap_or(3)),
            )
        }
    }
}
