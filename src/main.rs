//! The `kforge` binary: parse the command line, call the library, render its events on
//! stderr, print results (manifest, identity, schema) as JSON on stdout.

mod cli;
mod ui;

use std::process::ExitCode;

use clap::Parser;

use cli::{BuildArgs, Cli, Command, MirrorCommand};
use kforge::dirs::{DirFlags, Dirs};
use kforge::error::{Error, InvalidRequest, PickError, exit};
use kforge::flow::lifecycle::{self, Flow};
use kforge::flow::{Event, Reporter};
use kforge::kernel::{self, IdentityReport, KernelFlow, Until};
use kforge::library::Library;
use kforge::qemu::QemuFlow;
use kforge::slot::Mirror;
use kforge::store::ops::{self, Stores};
use kforge::store::{EntryName, Kind, StoreError};

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializes")
    );
}

/// `kforge build` and `kforge identity`; with `--test`, 1 when the build's tests failed (or
/// regressed against `--baseline`).
fn build(args: &BuildArgs, dirs: &Dirs, until: Until, ui: &dyn Reporter) -> Result<u8, Error> {
    let mut request = args.to_request()?;
    if request.git_ref.is_none() && request.worktree.is_none() && request.b4_series.is_none() {
        // Run inside a Linux worktree (not a kforge slot's) without a ref: build its files.
        let cwd = std::env::current_dir()?;
        if let Some(top) = kforge::slot::snapshot::linux_worktree_at(&cwd)
            && !top.starts_with(&dirs.workers_dir)
        {
            ui.event(&Event::Info {
                step: "plan",
                message: &format!(
                    "building the worktree {} as it is (--git-ref builds a ref)",
                    top.display()
                ),
            });
            request.worktree = Some(top);
        }
    }
    if (args.boot || args.test.is_some()) && until == Until::Collect {
        // Fail before building when the guest cannot be booted here at all.
        kforge::guest::preflight(
            request.arch,
            guest_qemu(&args.guest.machine, dirs)?.as_deref(),
        )?;
    }
    let plan = kernel::plan(request, dirs)?;
    let finished = kernel::run(plan, until, args.wait, ui)?;
    match until {
        Until::Identity => print_json(&IdentityReport::of(&finished.run)),
        Until::Collect => {
            let manifest = finished.run.state.manifest.as_ref().expect("collect ran");
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
            if let Some(t) = &args.test
                && !test_after_build(manifest, args, &t.suite, dirs, ui)?
            {
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// What `kforge step` and `kforge qemu step` read.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, bound = "R: serde::de::DeserializeOwned")]
struct StepInput<R> {
    request: R,
    #[serde(default)]
    results: std::collections::BTreeMap<String, kforge::flow::StepResult>,
}

/// One step of flow `F` in this process: the step's result as one line of JSON (the
/// manifest, for the last step).
fn step_command<F: Flow>(
    args: &cli::StepArgs,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<(), Error> {
    if args.list {
        for name in lifecycle::step_names::<F>() {
            println!("{name}");
        }
        return Ok(());
    }
    let name = args.name.as_deref().expect("clap requires NAME");
    let text = match args.input.as_str() {
        "-" => {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
            t
        }
        s => match s.strip_prefix('@') {
            Some(file) => fs_err::read_to_string(file)?,
            None => s.to_owned(),
        },
    };
    let input: StepInput<F::Request> =
        serde_json::from_str(&text).map_err(kforge::error::FlowError::BadStepInput)?;
    let plan = F::plan(input.request, dirs)?;
    let (result, run) = lifecycle::run_step::<F>(plan, name, &input.results, args.wait, ui)?;
    let line = match F::manifest(&run) {
        Some(m) if lifecycle::step_names::<F>().last() == Some(&result.step.as_str()) => {
            serde_json::to_string(m)
        }
        _ => serde_json::to_string(&result),
    };
    println!("{}", line.expect("serializes"));
    Ok(())
}

/// `resume` of flow `F`: prints the manifest.
fn resume_command<F: Flow>(dirs: &Dirs, wait: bool, ui: &dyn Reporter) -> Result<(), Error> {
    let finished = lifecycle::resume::<F>(dirs, wait, ui)?;
    print_json(F::manifest(&finished.run).expect("the last step ran"));
    Ok(())
}

/// Boots and checks; a failed check is an error carrying the console's end.
fn boot(
    manifest: &kforge::kernel::manifest::Manifest,
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
    kforge::error::GuestError::BootFailed {
        failure: report.failure.clone().unwrap_or_else(|| "unknown".into()),
        console_tail: report.console_tail.clone(),
    }
    .into()
}

fn run_guest(
    manifest: &kforge::kernel::manifest::Manifest,
    g: &cli::GuestArgs,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<kforge::guest::BootReport, Error> {
    let workdir = dirs
        .system_dir
        .join("guests")
        .join(format!("check-{}", std::process::id()));
    let opts = kforge::guest::BootOptions {
        accel: g.machine.accel,
        timeout: std::time::Duration::from_secs(g.timeout),
        memory_mib: g.machine.memory,
        cpus: g.machine.cpus,
        module: g.module_for(manifest),
        command: g.command.clone(),
        workdir: workdir.clone(),
        qemu: guest_qemu(&g.machine, dirs)?,
        rootfs: g.rootfs(),
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
        unit_dir: args.unit_dir.clone(),
    };
    match &args.command {
        V::Define {
            name,
            manifest,
            oneshot,
            guest,
        } => {
            vm::validate_name(name)?;
            let (m, path) = manifest_or_identity(manifest.as_deref(), dirs)?;
            let def = vm::define(
                &home,
                name,
                &m,
                &path,
                &vm::DefineOptions {
                    memory_mib: guest.machine.memory,
                    cpus: guest.machine.cpus,
                    accel: guest.machine.accel,
                    module: guest.module_for(&m),
                    command: guest.command.clone(),
                    oneshot: *oneshot,
                    qemu: guest_qemu(&guest.machine, dirs)?,
                    rootfs: guest.rootfs(),
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

/// A manifest file, else an identity in the store (whose manifest is then written beside
/// the entry's lock so that a guest definition can name a file).
fn manifest_or_identity(
    arg: Option<&std::path::Path>,
    dirs: &Dirs,
) -> Result<(kforge::kernel::manifest::Manifest, std::path::PathBuf), Error> {
    let path = arg.map_or_else(|| slot_manifest(dirs), std::path::Path::to_path_buf);
    if path.is_file() || arg.is_none() {
        return Ok((read_manifest(&path)?, path));
    }
    let text = path.to_string_lossy();
    let name = match text.parse::<EntryName>() {
        Ok(n) if n.kind == Kind::Kernel => n,
        _ => {
            return Err(PickError::Neither {
                arg: text.into_owned(),
                what: "a manifest file nor a kernel release",
            }
            .into());
        }
    };
    let store = kforge::store::Store::open(&dirs.store, Kind::Kernel)?;
    let m = kernel::store_manifest(&store, &name.release).map_err(|e| -> Error {
        match e {
            StoreError::Missing(..) => PickError::NotInStore {
                arg: text.to_string(),
                name: name.clone(),
                store: dirs.store.clone(),
                hint: "see `kforge store ls`",
            }
            .into(),
            other => other.into(),
        }
    })?;
    let saved = dirs
        .system_dir
        .join("manifests")
        .join(format!("{name}.json"));
    fs_err::create_dir_all(saved.parent().expect("has parent"))?;
    let mut bytes = serde_json::to_vec_pretty(&m).expect("manifest serializes");
    bytes.push(b'\n');
    kforge::fsutil::write_atomic(&saved, &bytes)?;
    Ok((m, saved))
}

fn read_manifest(path: &std::path::Path) -> Result<kforge::kernel::manifest::Manifest, Error> {
    let text = fs_err::read_to_string(path).map_err(PickError::Unreadable)?;
    serde_json::from_str(&text).map_err(|source| {
        PickError::NotAManifest {
            path: path.to_owned(),
            what: "a kforge manifest",
            source,
        }
        .into()
    })
}

fn boot_command(args: &cli::BootArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<(), Error> {
    let (manifest, _) = manifest_or_identity(args.manifest.as_deref(), dirs)?;
    let _hold = hold_entry(&manifest, dirs)?;
    let report = run_guest(&manifest, &args.guest, dirs, ui)?;
    print_json(&report);
    if args.check && !report.passed {
        return Err(boot_failure(&report));
    }
    Ok(())
}

fn qemu_command(cmd: &cli::QemuCommand, dirs: &Dirs, ui: &dyn Reporter) -> Result<(), Error> {
    match cmd {
        cli::QemuCommand::Build(a) => {
            let request = a.to_request()?;
            let plan = kforge::qemu::plan(request, dirs)?;
            let finished = lifecycle::run::<QemuFlow>(plan, None, a.wait, ui)?;
            print_json(finished.run.state.manifest.as_ref().expect("collect ran"));
        }
        cli::QemuCommand::Step(a) => step_command::<QemuFlow>(a, dirs, ui)?,
        cli::QemuCommand::Resume { wait } => resume_command::<QemuFlow>(dirs, *wait, ui)?,
        cli::QemuCommand::Schema => {
            print_json(&schemars::schema_for!(kforge::qemu::QemuRequest));
        }
    }
    Ok(())
}

/// What `--qemu` names, as a binary (a manifest's or a store identity's).
fn guest_qemu(g: &cli::MachineArgs, dirs: &Dirs) -> Result<Option<std::path::PathBuf>, Error> {
    g.qemu
        .as_deref()
        .map(|q| kforge::qemu::binary_for(q, &dirs.store))
        .transpose()
}

/// A guest run on `machine` for `timeout` seconds, in a work directory named `<what>-<pid>`
/// (shared read-only, `command` runs there), kforge's initramfs as root.
fn run_options(
    machine: &cli::MachineArgs,
    timeout: u64,
    what: &str,
    command: Vec<String>,
    dirs: &Dirs,
) -> Result<kforge::guest::run::RunOptions, Error> {
    let workdir = dirs
        .system_dir
        .join("guests")
        .join(format!("{what}-{}", std::process::id()));
    Ok(kforge::guest::run::RunOptions {
        accel: machine.accel,
        timeout: std::time::Duration::from_secs(timeout),
        memory_mib: machine.memory,
        cpus: machine.cpus,
        qemu: guest_qemu(machine, dirs)?,
        cwd: workdir.clone(),
        workdir,
        writable: false,
        root: kforge::guest::run::Root::Initramfs,
        append: Vec::new(),
        gdb: None,
        command,
    })
}

fn mirror(args: &cli::MirrorArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<(), Error> {
    let path = match args.project {
        cli::Project::Linux => &dirs.mirror,
        cli::Project::Qemu => &dirs.qemu_mirror,
    };
    match &args.command {
        MirrorCommand::Init { from } => {
            let m = Mirror::init_from(path, from)?;
            print_json(&kforge::slot::mirror::Shown {
                tags: m.tags()?,
                mirror: m.path,
                branches: None,
            });
        }
        MirrorCommand::ImportTarball { file, tag, branch } => {
            kforge::slot::git::validate_ref(tag).map_err(InvalidRequest::one)?;
            if let Some(b) = branch {
                kforge::slot::git::validate_ref(b).map_err(InvalidRequest::one)?;
            }
            let m = Mirror::open_or_create(path)?;
            let imported = m.import_tarball(file, tag, branch.as_deref(), &mut |msg| {
                ui.event(&Event::Info {
                    step: "import-tarball",
                    message: msg,
                });
            })?;
            print_json(&imported);
        }
        MirrorCommand::Show => {
            let m = Mirror::open(path)?;
            let branches = kforge::slot::git::git(&m.path)
                .args(["for-each-ref", "--format=%(refname:short)", "refs/heads/"])
                .output()?;
            print_json(&kforge::slot::mirror::Shown {
                tags: m.tags()?,
                mirror: m.path,
                branches: Some(branches.lines().map(str::to_owned).collect()),
            });
        }
    }
    Ok(())
}

/// The store entries that defined guests boot (a kernel) or run (a QEMU): gc and rm keep them.
fn guest_uses(dirs: &Dirs) -> std::collections::BTreeSet<EntryName> {
    let run = dirs.store.join("run");
    let entry_under_run = |path: &std::path::Path| -> Option<EntryName> {
        let rel = path.strip_prefix(&run).ok()?;
        rel.components().next()?.as_os_str().to_str()?.parse().ok()
    };
    guest_defs(dirs)
        .into_iter()
        .flat_map(|def| [entry_under_run(&def.kernel), entry_under_run(&def.qemu)])
        .flatten()
        .collect()
}

fn guest_defs(dirs: &Dirs) -> Vec<kforge::guest::vm::VmDef> {
    let Ok(entries) = fs_err::read_dir(dirs.system_dir.join("vms")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs_err::read_to_string(e.path().join("vm.json")).ok())
        .filter_map(|text| serde_json::from_str::<kforge::guest::vm::VmDef>(&text).ok())
        .collect()
}

/// An entry a user named: `kernel-<release>`, `qemu-<release>`, or a bare kernel release.
fn entry(text: &str) -> Result<EntryName, Error> {
    Ok(text.parse::<EntryName>()?)
}

fn store_command(cmd: &cli::StoreCommand, dirs: &Dirs) -> Result<(), Error> {
    use cli::StoreCommand as S;
    use kforge::store::{gc, sign};
    let stores = Stores::open(&dirs.store)?;
    match cmd {
        S::Ls => print_json(&stores.ls()?),
        S::Show { identity, manifest } => {
            let name = entry(identity)?;
            if !*manifest {
                print_json(&stores.show(&name)?);
            } else if name.kind == Kind::Kernel {
                print_json(&kernel::store_manifest(
                    stores.of(Kind::Kernel),
                    &name.release,
                )?);
            } else {
                let run = stores.show(&name)?.run;
                print_json(&run.ok_or(StoreError::Missing(name, "run"))?.manifest);
            }
        }
        S::Verify { identity } => {
            let name = identity.as_deref().map(entry).transpose()?;
            let report = stores.verify(name.as_ref())?;
            print_json(&report);
            let bad: Vec<String> = report
                .iter()
                .filter(|v| !v.ok)
                .map(|v| format!("{} ({})", v.identity, v.layer.as_str()))
                .collect();
            if !bad.is_empty() {
                return Err(StoreError::Damaged {
                    path: dirs.store.clone(),
                    problems: bad,
                }
                .into());
            }
        }
        S::Gc {
            older_than,
            max_size,
            dry_run,
        } => {
            if older_than.is_none() && max_size.is_none() {
                return Err(StoreError::BadInput(
                    "say what to remove: --older-than AGE and/or --max-size SIZE".into(),
                )
                .into());
            }
            let policy = gc::Policy {
                older_than: older_than
                    .as_deref()
                    .map(gc::parse_age)
                    .transpose()
                    .map_err(StoreError::BadInput)?,
                max_size: max_size
                    .as_deref()
                    .map(gc::parse_size)
                    .transpose()
                    .map_err(StoreError::BadInput)?,
                dry_run: *dry_run,
            };
            print_json(&stores.gc(&guest_uses(dirs), &policy)?);
        }
        S::Keygen { name, force } => {
            let name = name.clone().unwrap_or_else(sign::default_key_name);
            let key = sign::keygen(&dirs.system_dir, &name, *force)?;
            println!("{}", key.public());
        }
        S::Trust { public_key } => print_json(&ops::Trusted {
            trusted: sign::trust(&dirs.system_dir, public_key)?,
        }),
        S::Keys => print_json(&ops::keys(&dirs.system_dir)?),
        S::Export { dest, identities } => {
            let key = sign::load(&dirs.system_dir)?;
            let names = identities
                .iter()
                .map(|i| entry(i))
                .collect::<Result<Vec<_>, _>>()?;
            print_json(&stores.export(dest, &names, &key)?);
        }
        S::Pin { identity } => stores.pin(&entry(identity)?, true)?,
        S::Unpin { identity } => stores.pin(&entry(identity)?, false)?,
        S::Rm { identity } => stores.remove(&entry(identity)?, &guest_uses(dirs))?,
    }
    Ok(())
}

fn peers_command(cmd: &cli::PeersCommand, dirs: &Dirs) -> Result<(), Error> {
    use cli::PeersCommand as P;
    use kforge::store::peers;
    match cmd {
        P::Add { name, url } => peers::add(&dirs.system_dir, name, url)?,
        P::Ls => print_json(&peers::list(&dirs.system_dir)?),
        P::Rm { name } => peers::remove(&dirs.system_dir, name)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    // An empty KFORGE_* variable means "not set", as it always has (clap would take it as an
    // empty value).
    for (key, value) in std::env::vars_os() {
        if value.is_empty() && key.to_string_lossy().starts_with("KFORGE_") {
            // SAFETY: no other thread runs yet (the Ctrl-C handler starts below).
            unsafe { std::env::remove_var(key) };
        }
    }
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
        kforge::flow::record::mark_interrupted();
        kforge::guest::run::restore_terminal();
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
        qemu_mirror: g.qemu_mirror.clone(),
        library: g.library.clone(),
        store: g.store.clone(),
        ccache_dir: g.ccache_dir.clone(),
        ccache_remote: g.ccache_remote.clone(),
    };
    let result = Dirs::resolve(&flags)
        .map_err(Error::from)
        .and_then(|dirs| match &cli.command {
            Command::Run(a) => run_command(&a.run, a.command.clone(), &dirs, &ui),
            Command::Shell(a) => shell_command(a, &dirs, &ui),
            Command::Test(cli::TestCommand::Kunit(a)) => kunit_command(a, &dirs, &ui),
            Command::Test(cli::TestCommand::Kselftest(a)) => kselftest_command(a, &dirs, &ui),
            Command::Build(a) => build(a, &dirs, Until::Collect, &ui),
            Command::Results(c) => results_command(c, &dirs),
            Command::Bisect(a) => bisect_command(a, &dirs, &ui),
            Command::Log(a) => log_command(a, &dirs).map(|()| 0),
            Command::Repro(a) => repro_command(a, &dirs, &ui),
            command => dispatch(command, &dirs, &ui).map(|()| 0),
        });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            let code = e.exit_code();
            ExitCode::from(
                u8::try_from(code).unwrap_or(u8::try_from(exit::INFRASTRUCTURE).unwrap_or(3)),
            )
        }
    }
}

/// Every command but `build`, `run`, `shell`, `test` and `results` (whose exit status says
/// what their command or tests did).
fn dispatch(command: &Command, dirs: &Dirs, ui: &dyn Reporter) -> Result<(), Error> {
    match command {
        Command::Identity(a) => build(a, dirs, Until::Identity, ui).map(drop),
        Command::Step(a) => step_command::<KernelFlow>(a, dirs, ui),
        Command::Resume { wait } => resume_command::<KernelFlow>(dirs, *wait, ui),
        Command::Boot(a) => boot_command(a, dirs, ui),
        Command::Vm(a) => vm_command(a, dirs, ui),
        Command::Schema { output } => {
            print_json(&output.schema());
            Ok(())
        }
        Command::WindmillFlow { project, flow } => {
            let flow = match (project, flow) {
                (cli::Project::Linux, cli::WindmillKind::Build) => {
                    kforge::windmill::flow::<KernelFlow>()
                }
                (cli::Project::Qemu, cli::WindmillKind::Build) => {
                    kforge::windmill::flow::<QemuFlow>()
                }
                (cli::Project::Linux, cli::WindmillKind::Test) => kforge::windmill::test_flow(),
                (cli::Project::Qemu, cli::WindmillKind::Test) => {
                    return Err(InvalidRequest::one(
                        "QEMU has no test flow; --flow test is the kernel's",
                    )
                    .into());
                }
            };
            print!("{}", kforge::windmill::to_yaml(&flow));
            Ok(())
        }
        Command::Library => {
            let lib = Library::new(dirs.library.clone());
            print_json(&lib.listing()?);
            Ok(())
        }
        Command::Mirror(m) => mirror(m, dirs, ui),
        Command::Qemu(c) => qemu_command(c, dirs, ui),
        Command::Store(c) => store_command(c, dirs),
        Command::Peers(c) => peers_command(c, dirs),
        Command::Build(_)
        | Command::Run(_)
        | Command::Shell(_)
        | Command::Test(_)
        | Command::Bisect(_)
        | Command::Log(_)
        | Command::Repro(_)
        | Command::Results(_) => {
            unreachable!(
                "build, run, shell, test and results are dispatched with their exit status"
            )
        }
    }
}

/// The guest options of `run` and `shell`, and the manifest's store entry held meanwhile.
fn guest_run(
    a: &cli::GuestRunArgs,
    command: Vec<String>,
    dirs: &Dirs,
) -> Result<
    (
        kforge::kernel::manifest::Manifest,
        kforge::guest::run::RunOptions,
        Option<kforge::fsutil::FileLock>,
    ),
    Error,
> {
    use kforge::guest::run;
    let g = &a.guest;
    let (manifest, _) = manifest_or_identity(a.manifest.as_deref(), dirs)?;
    let hold = hold_entry(&manifest, dirs)?;
    let opts = run::RunOptions {
        writable: g.rw,
        root: match (&g.rootfs, g.host_root) {
            (Some(d), _) => run::Root::Dir(kforge::dirs::absolute(d)),
            (None, true) => run::Root::Host,
            (None, false) => run::Root::Initramfs,
        },
        append: g.append.clone(),
        gdb: g.gdb,
        cwd: std::env::current_dir()?,
        ..run_options(&g.machine, a.timeout, "run", command, dirs)?
    };
    Ok((manifest, opts, hold))
}

/// Holds a kernel's store entry (gc leaves it alone) while a guest uses it, when it is one.
fn hold_entry(
    manifest: &kforge::kernel::manifest::Manifest,
    dirs: &Dirs,
) -> Result<Option<kforge::fsutil::FileLock>, Error> {
    if manifest.store_entry.is_none() {
        return Ok(None);
    }
    let release = manifest.uts_release.parse()?;
    Ok(Some(
        kforge::store::Store::open(&dirs.store, Kind::Kernel)?.hold(&release)?,
    ))
}

/// A status outside 0..=255 (a shell cannot make one) is reported as a failure.
fn status_byte(status: i32) -> u8 {
    u8::try_from(status).unwrap_or(1)
}

/// `kforge run`, and `kforge shell` reading a script: the command's exit status and its
/// output on ours, or (`--json`) one result for an engine.
fn run_command(
    a: &cli::GuestRunArgs,
    command: Vec<String>,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<u8, Error> {
    let (manifest, opts, _hold) = guest_run(a, command, dirs)?;
    if !a.json {
        let result = kforge::guest::run::run(
            &manifest,
            &opts,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
            ui,
        );
        let _ = fs_err::remove_dir_all(&opts.workdir);
        return Ok(status_byte(result?.status));
    }
    let start = std::time::Instant::now();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = kforge::guest::run::run(&manifest, &opts, &mut out, &mut err, ui);
    let _ = fs_err::remove_dir_all(&opts.workdir);
    let (status, failure, oopses) = match result {
        Ok(r) => (Some(r.status), None, r.oopses),
        // The guest ran and ended badly: that is the result, not kforge's failure.
        Err(
            e @ Error::Guest(
                kforge::error::GuestError::Panicked { .. }
                | kforge::error::GuestError::Died { .. }
                | kforge::error::GuestError::TimedOut { .. },
            ),
        ) => (None, Some(e.to_string()), Vec::new()),
        Err(e) => return Err(e),
    };
    print_json(&kforge::guest::run::RunResult {
        release: manifest.uts_release.clone(),
        command: opts.command.clone(),
        status,
        failure,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        oopses,
        seconds: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    Ok(0)
}

/// `kforge shell`: on a terminal, an interactive shell and its exit status; else the
/// script read from stdin, run as `kforge run -- /bin/sh -c SCRIPT` runs it.
fn shell_command(args: &cli::ShellArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<u8, Error> {
    use std::io::IsTerminal as _;
    let a = &args.run;
    if !std::io::stdin().is_terminal() {
        let script = kforge::guest::run::read_script(&mut std::io::stdin().lock())?;
        return run_command(
            a,
            kforge::guest::run::shell_script_command(script),
            dirs,
            ui,
        );
    }
    if a.json {
        return Err(kforge::error::GuestError::Refused(
            "--json is for a script on stdin (an engine's step); on a terminal the shell is interactive".into(),
        )
        .into());
    }
    let (manifest, opts, _hold) = guest_run(a, Vec::new(), dirs)?;
    let result = kforge::guest::run::shell(&manifest, &opts, ui);
    let _ = fs_err::remove_dir_all(&opts.workdir);
    Ok(status_byte(result?))
}

/// What a KUnit run needs besides the kernel.
struct KunitRun<'a> {
    suite: &'a str,
    suite_timeout: u64,
    timeout: u64,
    append: &'a [String],
    machine: &'a cli::MachineArgs,
}

/// Runs a kernel's KUnit suites (holding its store entry meanwhile), records them, and says
/// what came of it on stderr.
fn run_kunit(
    manifest: &kforge::kernel::manifest::Manifest,
    k: &KunitRun<'_>,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<kforge::verdict::db::Shown, Error> {
    use kforge::verdict::{db::Db, kunit};
    let _hold = hold_entry(manifest, dirs)?;
    let guest = run_options(k.machine, k.timeout, "kunit", Vec::new(), dirs)?;
    fs_err::create_dir_all(&guest.workdir)?;
    let opts = kunit::KunitOptions {
        suite: k.suite.to_owned(),
        suite_timeout: std::time::Duration::from_secs(k.suite_timeout),
        guest: kforge::guest::run::RunOptions {
            append: k.append.to_vec(),
            ..guest
        },
    };
    let mut db = Db::open(&dirs.system_dir)?;
    let shown = kunit::run(manifest, &opts, &mut db, dirs.worker_index, ui)?;
    report_run("kunit", &shown, ui);
    Ok(shown)
}

/// `kforge test kunit`: the run with its results; exit 1 when a case failed, crashed or
/// timed out (0 with --exit-zero).
fn kunit_command(a: &cli::KunitArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<u8, Error> {
    let (manifest, _) = manifest_or_identity(a.manifest.as_deref(), dirs)?;
    let shown = run_kunit(
        &manifest,
        &KunitRun {
            suite: &a.suite,
            suite_timeout: a.suite_timeout,
            timeout: a.timeout,
            append: &a.append,
            machine: &a.machine,
        },
        dirs,
        ui,
    )?;
    print_json(&shown);
    Ok(u8::from(shown.run.counts.bad() > 0 && !a.exit_zero))
}

/// `kforge test kselftest`: the run with its results; exit 1 when a test failed, crashed or
/// timed out (0 with --exit-zero).
fn kselftest_command(a: &cli::KselftestArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<u8, Error> {
    let (manifest, _) = manifest_or_identity(a.manifest.as_deref(), dirs)?;
    let shown = run_kselftest(
        &manifest,
        &KselftestRun {
            targets: &a.targets,
            timeout: a.timeout,
            rootfs: a.rootfs.as_deref(),
            append: &a.append,
            wait: a.wait,
            machine: &a.machine,
        },
        dirs,
        ui,
    )?;
    print_json(&shown);
    Ok(u8::from(shown.run.counts.bad() > 0 && !a.exit_zero))
}

/// What `kforge test kselftest` and a bisect's `kselftest:T` check run.
struct KselftestRun<'a> {
    targets: &'a [String],
    timeout: u64,
    rootfs: Option<&'a std::path::Path>,
    append: &'a [String],
    wait: bool,
    machine: &'a cli::MachineArgs,
}

/// Builds (or takes from the store) and runs kselftest targets against a kernel, holding
/// its store entry meanwhile; records the run and says what came of it on stderr.
fn run_kselftest(
    manifest: &kforge::kernel::manifest::Manifest,
    a: &KselftestRun<'_>,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<kforge::verdict::db::Shown, Error> {
    use kforge::guest::run::{Root, RunOptions};
    use kforge::verdict::{db::Db, kselftest};
    let _hold = hold_entry(manifest, dirs)?;
    let workdir = kselftest::workdir(dirs);
    let opts = kselftest::KselftestOptions {
        targets: a.targets.to_vec(),
        wait: a.wait,
        guest: RunOptions {
            cwd: workdir.clone(),
            workdir,
            writable: true,
            root: match a.rootfs {
                Some(d) => Root::Dir(kforge::dirs::absolute(d)),
                None => Root::Host,
            },
            append: a.append.to_vec(),
            ..run_options(a.machine, a.timeout, "kselftest", Vec::new(), dirs)?
        },
    };
    let mut db = Db::open(&dirs.system_dir)?;
    let shown = kselftest::run(manifest, &opts, dirs, &mut db, ui)?;
    report_run("kselftest", &shown, ui);
    Ok(shown)
}

/// What came of a test run, on stderr.
fn report_run(step: &'static str, shown: &kforge::verdict::db::Shown, ui: &dyn Reporter) {
    let c = &shown.run.counts;
    ui.event(&Event::Info {
        step,
        message: &format!(
            "run {}: {} ({}): {} passed, {} failed, {} skipped, {} crashed, {} timed out, {} not run; console log {}",
            shown.run.id,
            shown.run.identity,
            shown.run.outcome.as_str(),
            c.pass,
            c.fail,
            c.skip,
            c.crash,
            c.timeout,
            c.not_run,
            shown.run.console_log
        ),
    });
    for r in shown.results.iter().filter(|r| r.status.is_bad()) {
        ui.event(&Event::Warn {
            step,
            message: &format!("{}: {}", r.status.as_str(), r.path.join(" / ")),
        });
    }
}

/// `kforge build --test kunit[:GLOB]`: the built kernel's suites; with `--baseline`, its
/// regressions against the baseline's latest run of the same suites (run now when it has
/// none). Whether the build is good.
fn test_after_build(
    manifest: &kforge::kernel::manifest::Manifest,
    args: &BuildArgs,
    suite: &str,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<bool, Error> {
    use kforge::verdict::db::{self, Db};
    let k = KunitRun {
        suite,
        suite_timeout: 120,
        timeout: 900,
        append: &[],
        machine: &args.guest.machine,
    };
    let shown = run_kunit(manifest, &k, dirs, ui)?;
    let Some(baseline) = &args.baseline else {
        return Ok(shown.run.counts.bad() == 0);
    };
    let (base_manifest, _) = manifest_or_identity(Some(std::path::Path::new(baseline)), dirs)?;
    let db = Db::open(&dirs.system_dir)?;
    let recorded = db
        .runs(Some(&base_manifest.uts_release))?
        .into_iter()
        .rfind(|r| r.kind == "kunit" && r.filter == suite);
    let base = if let Some(r) = recorded {
        db.find(&r.id.to_string(), None)?
    } else {
        ui.event(&Event::Info {
            step: "kunit",
            message: &format!(
                "the baseline {} has no run of `{suite}` yet: running it",
                base_manifest.uts_release
            ),
        });
        run_kunit(&base_manifest, &k, dirs, ui)?
    };
    let d = db::diff(base, shown);
    for c in &d.regressions {
        ui.event(&Event::Warn {
            step: "kunit",
            message: &format!(
                "regression against {}: {} ({} -> {})",
                d.a.identity,
                c.path.join(" / "),
                c.a.map_or("absent", kforge::verdict::Status::as_str),
                c.b.map_or("absent", kforge::verdict::Status::as_str)
            ),
        });
    }
    ui.event(&Event::Info {
        step: "kunit",
        message: &format!(
            "against {} (run {}): {} regressions, {} fixes, {} new, {} gone",
            d.a.identity,
            d.a.id,
            d.regressions.len(),
            d.fixes.len(),
            d.new.len(),
            d.gone.len()
        ),
    });
    Ok(d.regressions.is_empty())
}

/// `kforge results`: JSON, or for `diff` on a terminal a table.
fn results_command(cmd: &cli::ResultsCommand, dirs: &Dirs) -> Result<u8, Error> {
    use cli::ResultsCommand as R;
    use kforge::verdict::db::{self, Db};
    let db = Db::open(&dirs.system_dir)?;
    match cmd {
        R::Ls { identity } => {
            let identity = identity
                .as_deref()
                .map(|i| i.strip_prefix("kernel-").unwrap_or(i));
            print_json(&db::Listing {
                runs: db.runs(identity)?,
            });
        }
        R::Show { run } => print_json(&db.find(run, None)?),
        R::Diff { a, b, exit_code } => {
            let a = db.find(a, None)?;
            let kind = a.run.kind.clone();
            let d = db::diff(a, db.find(b, Some(&kind))?);
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                print!("{}", diff_table(&d));
            } else {
                print_json(&d);
            }
            return Ok(u8::from(*exit_code && !d.regressions.is_empty()));
        }
    }
    Ok(0)
}

/// `kforge results diff` for a person: one line per change, grouped.
fn diff_table(d: &kforge::verdict::db::Diff) -> String {
    use std::fmt::Write as _;
    let status = |s: Option<kforge::verdict::Status>| s.map_or("-", |s| s.as_str());
    let mut out = format!(
        "A: run {} {} ({})\nB: run {} {} ({})\n",
        d.a.id,
        d.a.identity,
        d.a.outcome.as_str(),
        d.b.id,
        d.b.identity,
        d.b.outcome.as_str()
    );
    for (title, changes) in [
        ("regressions", &d.regressions),
        ("fixes", &d.fixes),
        ("new", &d.new),
        ("gone", &d.gone),
        ("changed", &d.changed),
    ] {
        let _ = writeln!(out, "\n{title} ({})", changes.len());
        for c in changes {
            let _ = writeln!(
                out,
                "  {:<8} -> {:<8} {}",
                status(c.a),
                status(c.b),
                c.path.join(" / ")
            );
        }
    }
    let _ = writeln!(out, "\nunchanged: {}", d.unchanged);
    out
}

/// `kforge bisect` and `kforge bisect resume`: the report on stdout, exit 0 when it ran to
/// its end (whether skipped commits left one first bad commit or several).
fn bisect_command(a: &cli::BisectArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<u8, Error> {
    use kforge::bisect::{self, Check, Invocation};
    let path = Invocation::path(&dirs.system_dir, dirs.worker_index);
    let mirror = kforge::slot::Mirror::open(&dirs.mirror)?;
    let inv = match &a.command {
        Some(cli::BisectCommand::Resume) => Invocation::load(&path)?,
        None => {
            let b = &a.build;
            let given = [
                (
                    b.git_ref_pos.is_some() || b.git_ref.is_some(),
                    "a ref to build",
                ),
                (b.worktree.is_some(), "--worktree"),
                (b.boot, "--boot (say --check boot)"),
                (b.test.is_some(), "--test (say --check kunit:GLOB)"),
                (b.baseline.is_some(), "--baseline"),
                (b.worktree_group.is_some(), "--worktree-group"),
            ];
            if let Some((_, what)) = given.iter().find(|(given, _)| *given) {
                return Err(InvalidRequest::one(format!(
                    "kforge bisect builds the commits between --good and --bad: {what} does not apply"
                ))
                .into());
            }
            let mut check = a.check.clone().expect("clap requires --check");
            if let Check::Script(p) = &mut check {
                *p = kforge::dirs::absolute(p);
                let executable = fs_err::metadata(&*p).is_ok_and(|m| {
                    std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                        && m.is_file()
                });
                if !executable {
                    return Err(InvalidRequest::one(format!(
                        "the check script {} is not an executable file",
                        p.display()
                    ))
                    .into());
                }
            }
            let request = b.to_request()?;
            let bad = a.bad.as_deref().expect("clap requires --bad");
            let (good, bad) = bisect::resolve_range(&mirror, &a.good, bad)?;
            Invocation {
                request,
                good,
                bad,
                check: check.to_string(),
                recheck: a.recheck,
            }
        }
    };
    let check: Check = inv.check.parse().map_err(InvalidRequest::one)?;
    if !matches!(check, Check::Script(_)) {
        // Fail before building when the guest cannot be booted here at all.
        kforge::guest::preflight(
            inv.request.arch,
            guest_qemu(&a.build.guest.machine, dirs)?.as_deref(),
        )?;
    }
    inv.save(&path)?;
    let mut db = kforge::verdict::db::Db::open(&dirs.system_dir)?;
    let mut candidates = BisectCandidates {
        inv: &inv,
        check: &check,
        guest: &a.build.guest,
        wait: a.build.wait,
        dirs,
        ui,
    };
    let places = bisect::Places {
        mirror: &mirror,
        inputs: dirs.system_dir.join("bisect").join("inputs"),
        worker: dirs.worker_index,
    };
    let report = bisect::bisect(&inv, &check, &places, &mut candidates, &mut db, ui)?;
    let summary = match &report.first_bad {
        Some(c) => format!(
            "first bad commit: {} {}{}",
            c.commit,
            c.subject,
            match c.changes_kernel {
                Some(false) =>
                    " (it changes no file this config's build reads: the verdict moved while the kernel did not; a flaky check, or a wrong --good or --bad?)",
                _ => "",
            }
        ),
        None => format!(
            "skipped commits leave the first bad commit among: {}",
            report.first_bad_among.join(" ")
        ),
    };
    ui.event(&Event::Info {
        step: "bisect",
        message: &format!(
            "{summary}; {} compiles for {} candidates ({} commits), {:.1} s",
            report.compiles, report.candidates, report.commits_in_range, report.seconds
        ),
    });
    print_json(&report);
    Ok(0)
}

/// Builds and checks bisect candidates with the commands' own code.
struct BisectCandidates<'a> {
    inv: &'a kforge::bisect::Invocation,
    check: &'a kforge::bisect::Check,
    guest: &'a cli::GuestArgs,
    wait: bool,
    dirs: &'a Dirs,
    ui: &'a dyn Reporter,
}

impl BisectCandidates<'_> {
    /// The flow run up to `until` for `commit`; `Err(why)` when the kernel does not build.
    fn flow(
        &self,
        commit: &str,
        until: Until,
    ) -> Result<Result<kforge::kernel::Finished, String>, Error> {
        let mut request = self.inv.request.clone();
        request.git_ref = Some(commit.to_owned());
        let plan = kernel::plan(request, self.dirs)?;
        match kernel::run(plan, until, self.wait, self.ui) {
            Ok(f) => Ok(Ok(f)),
            Err(e) if e.exit_code() == kforge::error::exit::BUILD_FAILED => {
                // The compiler's first error says why; make's last line only that it stopped.
                let text = e.to_string();
                let line = text
                    .lines()
                    .find(|l| l.contains(" error: ") || l.contains(": Error"))
                    .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()));
                let step = match &e {
                    Error::Step { step, .. } => step.as_str(),
                    _ => "build",
                };
                Ok(Err(format!(
                    "{step} failed: {}",
                    line.unwrap_or(&text).trim()
                )))
            }
            Err(e) => Err(e),
        }
    }
}

impl kforge::bisect::Candidates for BisectCandidates<'_> {
    fn identity(&mut self, commit: &str) -> Result<Result<String, String>, Error> {
        Ok(self
            .flow(commit, Until::Identity)?
            .map(|f| f.run.release().to_string()))
    }

    fn build(
        &mut self,
        commit: &str,
    ) -> Result<Result<kforge::kernel::manifest::Manifest, String>, Error> {
        Ok(self.flow(commit, Until::Collect)?.map(|f| {
            f.run
                .state
                .manifest
                .expect("collect ran: the manifest is there")
        }))
    }

    fn check(
        &mut self,
        manifest: &kforge::kernel::manifest::Manifest,
    ) -> Result<(kforge::bisect::Verdict, String), Error> {
        use kforge::bisect::{Check, Verdict};
        let (dirs, ui, g) = (self.dirs, self.ui, self.guest);
        let shown = |s: &kforge::verdict::db::Shown| {
            let c = &s.run.counts;
            (
                Verdict::of_run(&s.run),
                format!(
                    "results run {}: {} passed, {} failed, {} crashed, {} timed out{}",
                    s.run.id,
                    c.pass,
                    c.fail,
                    c.crash,
                    c.timeout,
                    s.results
                        .iter()
                        .find(|r| r.status.is_bad())
                        .map(|r| format!("; first: {}", r.path.join(" / ")))
                        .unwrap_or_default()
                ),
            )
        };
        Ok(match self.check {
            Check::Boot => {
                let report = run_guest(manifest, g, dirs, ui)?;
                if report.passed {
                    (Verdict::Good, format!("booted, {} loaded", report.module))
                } else {
                    (
                        Verdict::Bad,
                        report
                            .failure
                            .unwrap_or_else(|| "the boot check failed".into()),
                    )
                }
            }
            Check::Kunit(glob) => shown(&run_kunit(
                manifest,
                &KunitRun {
                    suite: glob,
                    suite_timeout: 120,
                    timeout: g.timeout.max(900),
                    append: &[],
                    machine: &g.machine,
                },
                dirs,
                ui,
            )?),
            Check::Kselftest(target) => shown(&run_kselftest(
                manifest,
                &KselftestRun {
                    targets: std::slice::from_ref(target),
                    timeout: g.timeout.max(900),
                    rootfs: None,
                    append: &[],
                    wait: self.wait,
                    machine: &g.machine,
                },
                dirs,
                ui,
            )?),
            Check::Run(cmd) => bisect_run_check(manifest, cmd, g, dirs, ui)?,
            Check::Script(path) => bisect_script_check(manifest, path, dirs)?,
        })
    }
}

/// `run:CMD`: the command in the guest (the current directory shared read-only); 0 good,
/// 125 skip, other statuses, a panic or a timeout bad.
fn bisect_run_check(
    manifest: &kforge::kernel::manifest::Manifest,
    cmd: &str,
    g: &cli::GuestArgs,
    dirs: &Dirs,
    ui: &dyn Reporter,
) -> Result<(kforge::bisect::Verdict, String), Error> {
    use kforge::bisect::Verdict;
    use kforge::guest::run;
    let _hold = hold_entry(manifest, dirs)?;
    let command = vec!["/bin/sh".into(), "-c".into(), cmd.to_owned()];
    let opts = run::RunOptions {
        cwd: std::env::current_dir()?,
        ..run_options(&g.machine, g.timeout, "bisect", command, dirs)?
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = run::run(manifest, &opts, &mut out, &mut err, ui);
    let _ = fs_err::remove_dir_all(&opts.workdir);
    let tail = |b: &[u8]| {
        let t = String::from_utf8_lossy(b);
        let t = t.trim();
        t.char_indices()
            .rev()
            .nth(199)
            .map_or(t, |(i, _)| &t[i..])
            .to_owned()
    };
    Ok(match result {
        Ok(r) if r.status == 0 => (Verdict::Good, format!("exited 0: {}", tail(&out))),
        Ok(r) if r.status == 125 => (Verdict::Skip, format!("exited 125: {}", tail(&err))),
        Ok(r) => (Verdict::Bad, format!("exited {}: {}", r.status, tail(&err))),
        Err(
            e @ Error::Guest(
                kforge::error::GuestError::Panicked { .. }
                | kforge::error::GuestError::Died { .. }
                | kforge::error::GuestError::TimedOut { .. },
            ),
        ) => (Verdict::Bad, e.to_string()),
        Err(e) => return Err(e),
    })
}

/// `script:PATH`: the host script given the manifest's path (and `KFORGE_RELEASE`), as
/// `git bisect run` runs one: 0 good, 125 skip, 1-127 bad; any other end stops the bisect.
fn bisect_script_check(
    manifest: &kforge::kernel::manifest::Manifest,
    script: &std::path::Path,
    dirs: &Dirs,
) -> Result<(kforge::bisect::Verdict, String), Error> {
    use kforge::bisect::Verdict;
    let file = dirs
        .system_dir
        .join("manifests")
        .join(format!("kernel-{}.json", manifest.uts_release));
    fs_err::create_dir_all(file.parent().expect("has a parent"))?;
    let mut bytes = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    bytes.push(b'\n');
    kforge::fsutil::write_atomic(&file, &bytes)?;
    // The script's output goes to stderr: stdout is the report's.
    let status = kforge::process::run_user_program(
        std::process::Command::new(script)
            .arg(&file)
            .env("KFORGE_RELEASE", &manifest.uts_release)
            .env("KFORGE_COMMIT", &manifest.commit),
    )?;
    let what = format!("{} exited {status}", script.display());
    Ok(match status.code() {
        Some(0) => (Verdict::Good, what),
        Some(125) => (Verdict::Skip, what),
        Some(1..=127) => (Verdict::Bad, what),
        _ => {
            return Err(InvalidRequest::one(format!(
                "{what}: a check script ends 0 (good), 125 (skip) or 1-127 (bad); the bisect stops (kforge bisect resume goes on)"
            ))
            .into());
        }
    })
}

/// `kforge log`: the recent runs, one run's record, or what moved between two builds.
fn log_command(a: &cli::LogArgs, dirs: &Dirs) -> Result<(), Error> {
    use kforge::runlog;
    let dir = dirs.system_dir.join("runs");
    if let Some(run) = &a.show {
        let e = runlog::find(&dir, run)?;
        let record: serde_json::Value = serde_json::from_slice(&fs_err::read(&e.record)?)
            .map_err(|err| InvalidRequest::one(format!("{}: {err}", e.record)))?;
        print_json(&record);
    } else if let [x, y] = a.compare.as_slice() {
        print_json(&runlog::compare(
            &runlog::find(&dir, x)?,
            &runlog::find(&dir, y)?,
        )?);
    } else {
        let log = runlog::log(&dir, a.count)?;
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            print!("{}", log_table(&log));
        } else {
            print_json(&log);
        }
    }
    Ok(())
}

/// `kforge repro`: the report on stdout; exit 0 when the rebuild is the same, 1 when not.
fn repro_command(a: &cli::ReproArgs, dirs: &Dirs, ui: &dyn Reporter) -> Result<u8, Error> {
    use kforge::kernel::repro::{Rebuild, Verdict};
    use kforge::kernel::request::KernelRequest;
    let runs = dirs.system_dir.join("runs");
    let recorded_request =
        |m: &kforge::kernel::manifest::Manifest| -> Result<KernelRequest, Error> {
            let file = kforge::runlog::request_of(&runs, &m.uts_release).ok_or_else(|| {
            InvalidRequest::one(format!(
                "no run record of kernel-{} in {} (the last {} runs are kept): name the                  request that built it instead (kforge repro REQUEST)",
                m.uts_release,
                runs.display(),
                kforge::flow::record::HISTORY
            ))
        })?;
            let text = fs_err::read_to_string(&file)?;
            Ok(
                KernelRequest::from_file_text(&file.to_string_lossy(), &text)
                    .map_err(InvalidRequest::one)?,
            )
        };
    let as_manifest = a
        .what
        .is_file()
        .then(|| fs_err::read(&a.what).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice::<kforge::kernel::manifest::Manifest>(&b).ok());
    let (original, request) = if let Some(m) = as_manifest {
        let r = recorded_request(&m)?;
        (m, r)
    } else if a.what.is_file() {
        let text = fs_err::read_to_string(&a.what)?;
        let request = KernelRequest::from_file_text(&a.what.to_string_lossy(), &text)
            .map_err(InvalidRequest::one)?;
        let plan = kernel::plan(request.clone(), dirs)?;
        let finished = kernel::run(plan, Until::Collect, a.wait, ui)?;
        let m = finished.run.state.manifest.expect("collect ran");
        (m, request)
    } else {
        let (m, _) = manifest_or_identity(Some(&a.what), dirs)?;
        let r = recorded_request(&m)?;
        (m, r)
    };
    let slot = if dirs.worker_index == original.worker_index {
        original.worker_index + 1
    } else {
        dirs.worker_index
    };
    let report = Rebuild {
        dirs,
        original: &original,
        request,
        slot,
        ccache: a.ccache,
        wait: a.wait,
    }
    .run(ui)?;
    print_json(&report);
    Ok(u8::from(report.verdict != Verdict::True))
}

/// `kforge log` for a person: a line per run.
fn log_table(log: &kforge::runlog::Log) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<28} {:<6} {:<11} {:>6}  {:<44} {:>8} {:>11}\n",
        "run", "flow", "status", "secs", "identity / failed step", "warnings", "ccache h/m"
    );
    for r in &log.runs {
        let what = match (&r.failed_step, &r.release, &r.current) {
            (Some(f), _, _) => format!("failed in {f}"),
            (None, _, Some(c)) if r.status != "succeeded" => format!("in {c}"),
            (None, Some(rel), _) => rel.clone(),
            _ => String::new(),
        };
        let f = r.figures.as_ref();
        let _ = writeln!(
            out,
            "{:<28} {:<6} {:<11} {:>6}  {:<44} {:>8} {:>11}",
            r.id,
            r.flow,
            r.status,
            r.seconds.map(|s| s.to_string()).unwrap_or_default(),
            what,
            f.map(|f| f.warnings.total.to_string()).unwrap_or_default(),
            f.and_then(|f| f.ccache.as_ref())
                .map(|c| format!("{}/{}", c.hits, c.misses))
                .unwrap_or_default()
        );
    }
    out
}
