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
    if args.boot && until == Until::Collect {
        // Fail before building when the guest cannot be booted here at all.
        kforge::process::find_program("qemu-system-x86_64")?;
        kforge::guest::find_virtiofsd()?;
        kforge::guest::initramfs::find_static_busybox().map_err(Error::Input)?;
    }
    let plan = kernel::plan(request, dirs)?;
    let finished = kernel::run(plan, until, args.wait, ui)?;
    match until {
        Until::Identity => print_json(&IdentityReport::of(&finished.run)),
        Until::Collect => {
            let manifest = finished.run.manifest.as_ref().expect("collect ran");
            print_json(manifest);
            if args.boot {
                let report = boot(manifest, &args.guest, dirs, ui)?;
                ui.event(&Event::Info {
                    step: "boot",
                    message: &format!(
                        "uname -r in the guest: {}; {} loaded from the share; {:.1} s",
                        report.guest_release.as_deref().unwrap_or("?"),
                        report.module,
                        report.seconds
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Boots and checks; a failed check is an error carrying the console's end.
fn boot(
    manifest: &kforge::manifest::Manifest,
    g: &cli::GuestArgs,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<kforge::guest::BootReport, Error> {
    let report = run_guest(manifest, g, dirs, ui)?;
    if report.passed {
        Ok(report)
    } else {
        Err(boot_failure(&report))
    }
}

fn boot_failure(report: &kforge::guest::BootReport) -> Error {
    Error::Build(format!(
        "boot check failed: {}\n--- guest console (last {} lines) ---\n{}",
        report.failure.as_deref().unwrap_or("unknown"),
        report.console_tail.len(),
        report.console_tail.join("\n")
    ))
}

fn run_guest(
    manifest: &kforge::manifest::Manifest,
    g: &cli::GuestArgs,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<kforge::guest::BootReport, Error> {
    let workdir = dirs
        .system_dir
        .join("guests")
        .join(format!("check-{}", std::process::id()));
    let opts = kforge::guest::BootOptions {
        accel: g.accel,
        timeout: std::time::Duration::from_secs(g.timeout),
        memory_mib: g.memory,
        cpus: g.cpus,
        module: g.module.clone(),
        command: g.command.clone(),
        workdir: workdir.clone(),
        qemu: g.qemu.clone(),
    };
    let result = kforge::guest::boot_check(manifest, &opts, ui);
    let _ = fs_err::remove_dir_all(&workdir);
    result
}

fn vm_command(args: &cli::VmArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<(), Error> {
    use cli::VmCommand as V;
    use kforge::guest::vm;
    let home = vm::VmHome {
        vms_dir: dirs.system_dir.join("vms"),
        unit_dir: args
            .unit_dir
            .clone()
            .or_else(|| std::env::var_os("KFORGE_UNIT_DIR").map(std::path::PathBuf::from))
            .unwrap_or_else(|| "/etc/systemd/system".into()),
    };
    match &args.command {
        V::Define {
            name,
            manifest,
            oneshot,
            guest,
        } => {
            vm::validate_name(name)?;
            let path = manifest.clone().unwrap_or_else(|| slot_manifest(dirs));
            let m = read_manifest(&path)?;
            let def = vm::define(
                &home,
                name,
                &m,
                &path,
                &vm::DefineOptions {
                    memory_mib: guest.memory,
                    cpus: guest.cpus,
                    accel: guest.accel,
                    module: guest.module.clone(),
                    command: guest.command.clone(),
                    oneshot: *oneshot,
                    qemu: guest.qemu.clone(),
                },
            )?;
            print_json(&def);
        }
        V::Start { name } => vm::start(&home, name)?,
        V::Stop { name } => vm::stop(&home, name)?,
        V::Status { name } => print_json(&vm::status(&home, name)?),
        V::Console { name } => print!("{}", vm::console(&home, name)?),
        V::Rm { name } => vm::remove(&home, name)?,
        V::Run { name, timeout } => {
            let def = home.load(name)?;
            ui.event(&Event::Info {
                step: "vm",
                message: &format!("running {name} ({}) in the foreground", def.uts_release),
            });
            vm::run(
                &def,
                timeout.map(std::time::Duration::from_secs),
                &mut |line| println!("{line}"),
            )?;
        }
    }
    Ok(())
}

fn slot_manifest(dirs: &Dirs) -> std::path::PathBuf {
    kernel::collect_manifest_path(&kforge::slot::Slot::new(
        &dirs.workers_dir,
        dirs.worker_index,
        kernel::PROJECT,
    ))
}

fn read_manifest(path: &std::path::Path) -> Result<kforge::manifest::Manifest, Error> {
    let text = fs_err::read_to_string(path)
        .map_err(|e| Error::Input(format!("reading the manifest: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("{} is not a kforge manifest: {e}", path.display())))
}

fn boot_command(args: &cli::BootArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<(), Error> {
    let path = args.manifest.clone().unwrap_or_else(|| slot_manifest(dirs));
    let manifest = read_manifest(&path)?;
    let report = run_guest(&manifest, &args.guest, dirs, ui)?;
    print_json(&report);
    if args.check && !report.passed {
        return Err(boot_failure(&report));
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
            Command::Boot(a) => boot_command(a, &dirs, &ui),
            Command::Vm(a) => vm_command(a, &dirs, &ui),
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
