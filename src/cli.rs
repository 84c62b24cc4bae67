//! The command line: one struct per command; `kforge build`'s flags carry the spec's input
//! names, grouped under the spec's input groups (each heading holds the group's summary).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use kforge::error::InvalidRequest;
use kforge::kernel::request::{ConfigMethod, KernelRequest, OneOrMany, heading};
use kforge::toolchain::Compiler;

/// `--flag[=BOOL]`: the bare flag means true.
macro_rules! bool_flag {
    () => {
        clap::builder::ArgAction::Set
    };
}

const AFTER_HELP: &str = "\
Each global option comes from its flag, else its KFORGE_* variable, else the config file,
else its default.

Exit status: 0 success, 1 build failed, 2 bad input (nothing was touched),
3 machine problem (missing tool, I/O), 4 slot busy.";

#[derive(Debug, Parser)]
#[command(
    name = "kforge",
    version,
    about = "Build a Linux kernel reproducibly at a pinned ref, with an identity that `uname -r` reports",
    long_about = "kforge builds a Linux kernel from a bare git mirror at a pinned ref, in a warm \
worktree slot, reproducibly. Every build gets a content-addressed identity \
<version>-<label>-<digest> that the kernel reports in `uname -r`; the result is a JSON \
manifest on stdout (logs go to stderr).\n\n\
Start with:\n  kforge mirror import-tarball /usr/src/linux-source-6.12.tar.xz --tag v6.12.117\n  \
kforge build --preset tiny_guest_defconfig",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file (TOML) with defaults for the options below, keys in lower case
    /// (`workers_dir = "..."`) [default: $XDG_CONFIG_HOME/kforge/config.toml].
    #[arg(long, global = true, value_name = "FILE", env = "KFORGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the worker slots live [default: SYSTEM_DIR/workers].
    #[arg(long, global = true, value_name = "DIR", env = "KFORGE_WORKERS_DIR")]
    pub workers_dir: Option<PathBuf>,
    /// Which slot this build uses: WORKERS_DIR/<index>/main/linux (or qemu) [default: 0].
    #[arg(long, global = true, value_name = "N", env = "KFORGE_WORKER_INDEX")]
    pub worker_index: Option<u32>,
    /// kforge's own state (mirrors, store, guests) [default: $XDG_DATA_HOME/kforge].
    #[arg(long, global = true, value_name = "DIR", env = "KFORGE_SYSTEM_DIR")]
    pub system_dir: Option<PathBuf>,
    /// The kernel's bare mirror [default: SYSTEM_DIR/mirrors/linux.git].
    #[arg(long, global = true, value_name = "DIR", env = "KFORGE_MIRROR")]
    pub mirror: Option<PathBuf>,
    /// QEMU's bare mirror [default: SYSTEM_DIR/mirrors/qemu.git].
    #[arg(long, global = true, value_name = "DIR", env = "KFORGE_QEMU_MIRROR")]
    pub qemu_mirror: Option<PathBuf>,
    /// A kconfig library directory (defconfigs/, fragments/) replacing the built-in one.
    #[arg(long, global = true, value_name = "DIR", env = "KFORGE_LIBRARY")]
    pub library: Option<PathBuf>,
    /// The build store, where finished identities live [default: SYSTEM_DIR/store].
    #[arg(long, global = true, value_name = "DIR", env = "KFORGE_STORE")]
    pub store: Option<PathBuf>,
    /// The local compiler cache every slot shares [default: $XDG_CACHE_HOME/kforge/ccache].
    #[arg(long, global = true, value_name = "DIR", env = "KFORGE_CCACHE_DIR")]
    pub ccache_dir: Option<PathBuf>,
    /// A cache shared by every worker behind the local one (ccache's remote_storage):
    /// redis://HOST:PORT, redis+unix:PATH, http(s)://..., file:DIR.
    #[arg(long, global = true, value_name = "URL", env = "KFORGE_CCACHE_REMOTE")]
    pub ccache_remote: Option<String>,
    /// Show every command and all of make's output.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Show only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a kernel: prepare_worktree -> build_flags -> configure -> fetch_identity ->
    /// reuse_check -> compile -> devtools -> install -> install_modules -> publish ->
    /// publish_devel -> deploy_worktree -> fetch_devel -> collect; prints the manifest.
    #[command(
        after_help = "Examples:\n  kforge build v6.12.117\n  kforge build --preset tiny_guest_defconfig --compiler clang\n  kforge build --config-method make --defconfig defconfig --defconfig kvm_guest.config\n  kforge build --config-method fragments --fragment core/base --fragment debug/kasan\n  kforge build --request build.json"
    )]
    Build(BuildArgs),
    /// Run up to configure and print the build identity with every input of its digest.
    Identity(BuildArgs),
    /// Run one step of the build on its own, for an engine that runs the flow step by step
    /// on one worker: reads the request and the earlier steps' results as JSON, prints this
    /// step's result as one line of JSON (collect prints the manifest).
    #[command(after_help = r#"INPUT is one JSON object:
  {"request": {...a build request...}, "results": {"prepare_worktree": <its output>, ...}}
Every step before NAME needs its result. configure_preset, configure_make and
configure_fragments are configure, checked against the request's config_method (the branches
of an engine's configure). The slot is WORKERS_DIR/<KFORGE_WORKER_INDEX>/main/linux.

Example (bash):
  req='{"preset": "tiny_guest_defconfig"}'
  pw=$(kforge step prepare_worktree "{\"request\": $req}")
  kforge step build_flags "{\"request\": $req, \"results\": {\"prepare_worktree\": $pw}}""#)]
    Step(StepArgs),
    /// Continue the slot's last run from the step that failed or was interrupted, with the
    /// request and the earlier steps' results it recorded; prints the manifest.
    Resume {
        /// Wait for a busy slot instead of failing.
        #[arg(long)]
        wait: bool,
    },
    /// Boot a built kernel in QEMU (modules over virtiofs) and check it: `uname -r` in the
    /// guest must be the manifest's uts_release and a module must load from the share.
    #[command(
        after_help = "Examples:\n  kforge boot --check                       # the slot's last build\n  kforge boot --check path/to/linux.manifest.json --accel tcg\n  kforge boot --command 'cat /proc/version'"
    )]
    Boot(BootArgs),
    /// Run one command in a built kernel: its stdout, stderr and exit status come back as
    /// if it had run here, in this directory (shared into the guest at the same path).
    #[command(
        after_help = r#"The loop: edit, `kforge build`, `kforge run -- CMD`. Without a manifest or identity it
runs the slot's last build. Exit status: the command's; 120 when the guest kernel panicked or
the guest died before the command ended (the console's end is printed); 124 on --timeout.

Root filesystems: kforge's busybox initramfs (default: busybox's applets); --rootfs DIR, a
directory with /bin/sh (e.g. made with debootstrap), shared writable; --host-root, this
host's own / read-only (its programs and libraries; fresh tmpfs on /tmp, /run, /var/tmp).

Examples:
  kforge run -- uname -r
  kforge run kernel-6.12.118-tiny-0123456789ab -- sh -c 'dmesg | tail -3'
  kforge run --rw -- sh -c 'cat /proc/version > version.txt'
  kforge run --host-root -- ./tools/testing/selftests/x/test.sh"#
    )]
    Run(RunArgs),
    /// An interactive shell in a built kernel on this terminal, in this directory (shared at
    /// the same path), with the same sharing options as `run`; with stdin not a terminal,
    /// the shell runs the script read from it (as `run -- /bin/sh -c SCRIPT`).
    #[command(
        after_help = r#"Leave with `exit` (its status is kforge's) or Ctrl-A x (QEMU's console escape); Ctrl-C
goes to the guest. The terminal is restored on every way out.

Not on a terminal (an engine, a pipe), the shell reads a script from stdin and runs it: its
stdout, stderr and exit status come back as `kforge run` gives them (--json, --timeout).

Examples:
  kforge shell
  kforge shell --host-root --rw
  kforge shell kernel-6.12.118-tiny-0123456789ab --rootfs ./debian-root
  printf 'cd /sys/kernel\nls\n' | kforge shell --json"#
    )]
    Shell(ShellArgs),
    /// Test a built kernel in a guest and record every case in the results database, by
    /// identity (`kforge test kunit`, `kforge test kselftest`).
    #[command(subcommand)]
    Test(TestCommand),
    /// The results database: test runs by identity, their cases, and what changed between
    /// two of them.
    #[command(subcommand)]
    Results(ResultsCommand),
    /// The recent runs of every flow on this host, newest first, from their records (kept in
    /// SYSTEM_DIR/runs, written at the start, after each step and on Ctrl-C, so a killed run
    /// still says which step it was in): status, steps with their durations, the failed
    /// step's output, warnings, ccache hits, sizes, and the command that runs it again.
    #[command(
        after_help = "Examples:\n  kforge log              # the last 10 runs\n  kforge log 50\n  kforge log --show 1733490000-1234-kernel\n  kforge log --compare kernel-<A> kernel-<B>   # sizes, warnings, ccache: what moved"
    )]
    Log(LogArgs),
    /// Find the first bad commit between a good and a bad ref of the mirror: each candidate
    /// built through the normal flow (an identity in the store), its verdict recorded in
    /// the results database; an identity already in the store is not built again, one
    /// already checked is not checked again, and a commit that changes no file its
    /// neighbour's build read is not built at all. Prints the report (JSON); its log on
    /// stderr.
    #[command(
        after_help = "Examples:\n  kforge bisect --good v6.12.117 --bad mybranch --check kunit:list* --preset tiny_guest_defconfig\n  kforge bisect --good v6.12.117 --bad mybranch --check run:'grep -q foo /proc/cpuinfo'\n  kforge bisect --good GOOD --bad BAD --check script:./is-good.sh   (0 good, 125 skip, 1-127 bad)\n  kforge bisect resume   (after an interruption; recorded verdicts are not redone)"
    )]
    Bisect(Box<BisectArgs>),
    /// Prove that a build is reproducible: rebuild its identity from scratch in another slot,
    /// with what must not matter varied (slot path, umask, user, home, locale, time zone,
    /// host name when root), and compare every file of its run layer with the store's copy
    /// byte by byte. Prints the report (JSON); exit 0 when every file is the same, 1 when
    /// not. The verdict is kept beside the store's entry and is the manifest's
    /// `reproducible` from then on.
    #[command(after_help = "Examples:
  kforge repro kernel-6.12.118-tiny-0123456789ab   # a built identity (its recorded request)
  kforge repro ./request.json                      # built first when the store lacks it
  kforge repro kernel-<release> --ccache           # faster: compiled objects from ccache")]
    Repro(ReproArgs),
    /// Named guests run by systemd as qemu-system@<vm>.service (or in the foreground).
    Vm(VmArgs),
    /// Print the JSON Schema (2020-12) of a build request, or of any document kforge prints.
    #[command(after_help = "Examples:
  kforge schema                          # the kernel build request
  kforge schema --output store-ls        # what `kforge store ls` prints
  kforge schema --output manifest | jq .properties.uts_release")]
    Schema {
        /// Which document [default: request].
        #[arg(long, value_enum, value_name = "NAME", default_value = "request")]
        output: kforge::schemas::Output,
    },
    /// Print a flow for the Windmill engine (YAML; the repository keeps them at
    /// windmill/f/kernel/build.flow/flow.yaml and windmill/f/qemu/build.flow/flow.yaml): every
    /// step a bash module calling `kforge step` (`kforge qemu step`).
    WindmillFlow {
        /// Which project: the kernel's or QEMU's.
        #[arg(long, value_enum, default_value = "linux")]
        project: Project,
        /// Which flow: the build, or the kernel's tests (windmill/f/kernel/test.flow: a
        /// manifest in, `kforge test kunit`'s run out).
        #[arg(long, value_enum, default_value = "build")]
        flow: WindmillKind,
    },
    /// List the kconfig library's presets and fragments.
    Library,
    /// Create or fill the bare mirror builds come from (the kernel's, or QEMU's with
    /// --project qemu).
    Mirror(MirrorArgs),
    /// Build QEMU itself the way kernels are built (pinned ref, optional series, identity,
    /// store), for booting guests with `--qemu`.
    #[command(subcommand)]
    Qemu(QemuCommand),
    /// The build store: finished identities (kernel-<release>), their run and devel layers.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Other hosts' stores that --use-peers fetches identities from.
    #[command(subcommand)]
    Peers(PeersCommand),
}

#[derive(Debug, Subcommand)]
pub enum TestCommand {
    /// Run the build's KUnit suites in a guest: the test modules load from the modules
    /// share (suites built in run at boot); KTAP is read from the serial console; every
    /// case (pass, fail, skip, crash, timeout, not run) goes to the results database with
    /// the raw console. Prints the run with its results; exits 1 when a case failed,
    /// crashed or timed out.
    #[command(
        after_help = r#"The kernel needs KUnit and some suites, as modules or built in: the library's
tiny_guest_defconfig has them (KUnit's own tests, the example suite, list, bitfield,
cmdline), or add the debug/kunit fragment to a fragments build.

Examples:
  kforge test kunit                                # the slot's last build, every suite
  kforge test kunit kernel-6.12.118-vanilla-0123456789ab --suite 'list*'
  kforge test kunit --suite 'list-kernel-test.list_test_list_add'
  kforge results diff kernel-A kernel-B            # what changed between two builds"#
    )]
    Kunit(KunitArgs),
    /// Build the kernel's selftests against the identity's tree and headers (kept in the
    /// store as its kselftest layer, reused when there), run them in a guest with the
    /// kernel's runner (run_kselftest.sh) and record every result, as `test kunit` does.
    #[command(
        after_help = r#"Selftests are host programs, linked against the host's libraries, many of them scripts
for the host's shell or Python; they run on a fuller userspace than kforge's initramfs:
  (default)      this host's own root, read-only (its libraries, shells and tools),
                 with fresh tmpfs on /tmp, /run and /var/tmp;
  --rootfs DIR   a root directory that has what the targets need (e.g. a debootstrap).
A copy of the built targets is the guest's working directory, writable. Building needs the
kernel's slot (WORKERS_DIR/<index>/main/linux, synced to the identity's commit; --wait
queues behind a busy one) and rsync; a kselftest layer that holds the targets is not built
again.

Examples:
  kforge test kselftest --target size
  kforge test kselftest kernel-6.12.118-vanilla-0123456789ab --target size --target timers"#
    )]
    Kselftest(KselftestArgs),
}

#[derive(Debug, Args)]
pub struct KselftestArgs {
    /// A manifest file, or an identity in the store (kernel-<release> or <release>)
    /// [default: the slot's last build].
    #[arg(value_name = "MANIFEST_OR_IDENTITY")]
    pub manifest: Option<PathBuf>,
    /// A directory of tools/testing/selftests to build and run (repeat).
    #[arg(long = "target", value_name = "TARGET", required = true)]
    pub targets: Vec<String>,
    /// Run on this root directory instead of the host's own root.
    #[arg(long, value_name = "DIR", help_heading = "Guest")]
    pub rootfs: Option<PathBuf>,
    /// Stop the run after this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 1800,
        help_heading = "Guest"
    )]
    pub timeout: u64,
    /// A kernel command line parameter to add (repeatable).
    #[arg(long, value_name = "PARAM", help_heading = "Guest")]
    pub append: Vec<String>,
    /// Exit 0 whenever the tests ran, whatever they said.
    #[arg(long)]
    pub exit_zero: bool,
    /// Wait for a busy slot when the selftests must be built.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// `--test kunit[:GLOB]`.
#[derive(Debug, Clone)]
pub struct TestSpec {
    pub suite: String,
}

impl std::str::FromStr for TestSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "kunit" => Ok(Self { suite: "*".into() }),
            Some(("kunit", glob)) if !glob.is_empty() => Ok(Self {
                suite: glob.to_owned(),
            }),
            _ => Err(format!(
                "`{s}`: say kunit (every suite) or kunit:GLOB (e.g. kunit:'list*')"
            )),
        }
    }
}

#[derive(Debug, Args)]
pub struct KunitArgs {
    /// A manifest file, or an identity in the store (kernel-<release> or <release>)
    /// [default: the slot's last build].
    #[arg(value_name = "MANIFEST_OR_IDENTITY")]
    pub manifest: Option<PathBuf>,
    /// The suites to run: a glob over suite names, or `suite.case` (KUnit's filter_glob).
    #[arg(long, value_name = "GLOB", default_value = "*")]
    pub suite: String,
    /// Stop a suite that prints no result for this many seconds (recorded as timed out).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub suite_timeout: u64,
    /// Stop the whole run after this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 900,
        help_heading = "Guest"
    )]
    pub timeout: u64,
    /// A kernel command line parameter to add (repeatable), e.g. oops=panic.
    #[arg(long, value_name = "PARAM", help_heading = "Guest")]
    pub append: Vec<String>,
    /// Exit 0 whenever the tests ran, whatever they said (for an engine: the verdict is in
    /// the JSON).
    #[arg(long)]
    pub exit_zero: bool,
    #[command(flatten)]
    pub machine: MachineArgs,
}

#[derive(Debug, Subcommand)]
pub enum ResultsCommand {
    /// The recorded test runs (of one identity), oldest first (JSON).
    Ls {
        /// kernel-<release> or <release>.
        identity: Option<String>,
    },
    /// One run with every result: by its number, or an identity's latest run.
    Show {
        #[arg(value_name = "RUN_OR_IDENTITY")]
        run: String,
    },
    /// What changed from A to B (runs, or identities' latest runs): regressions, fixes, new,
    /// gone. JSON, or a table on a terminal.
    #[command(after_help = "Examples:
  kforge results diff kernel-6.12.118-vanilla-0123456789ab kernel-6.12.118-fix-abcdef012345
  kforge results diff 3 7 --exit-code      # exit 1 when B has regressions")]
    Diff {
        #[arg(value_name = "A")]
        a: String,
        #[arg(value_name = "B")]
        b: String,
        /// Exit 1 when B has regressions against A.
        #[arg(long)]
        exit_code: bool,
    },
}

#[derive(Debug, Args)]
pub struct StepArgs {
    /// The step (omit with --list).
    #[arg(value_name = "NAME", required_unless_present = "list")]
    pub name: Option<String>,
    /// The input: JSON text, @FILE, or - for stdin.
    #[arg(value_name = "INPUT", default_value = "-")]
    pub input: String,
    /// Print the steps in order and exit.
    #[arg(long)]
    pub list: bool,
    /// Wait for a busy slot instead of failing.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// List the identities in the store with their layers, sizes and pins (JSON).
    Ls,
    /// Print one identity's layer records (files, hashes, the manifest that made it).
    Show {
        /// kernel-<release> or <release>.
        identity: String,
        /// Print only the manifest, with paths pointing into this store.
        #[arg(long)]
        manifest: bool,
    },
    /// Re-hash every file of one identity (or all) against its record; exit 1 on damage.
    Verify {
        /// kernel-<release> or <release> [default: every identity].
        identity: Option<String>,
    },
    /// Remove identities (kernels and QEMUs) unused for --older-than, then the least recently
    /// used until the store fits --max-size; never pinned ones, ones a build holds or a
    /// defined guest uses.
    #[command(after_help = "Examples:
  kforge store gc --older-than 30d
  kforge store gc --max-size 20G --dry-run")]
    Gc {
        /// Age like 30d, 12h, 90m.
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Size like 500M, 20G.
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Report what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Keep an identity whatever gc is asked.
    Pin { identity: String },
    /// Let gc remove an identity again.
    Unpin { identity: String },
    /// Remove one identity now (refused while a build holds it or a guest boots it).
    Rm { identity: String },
    /// Make this host's ed25519 signing key (for `export`); prints the public key to give
    /// to the hosts that will fetch from this one.
    Keygen {
        /// The key's name, shown to those who trust it [default: kforge-<hostname>].
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
    /// Trust a peer's public key (kforge-ed25519:<name>:<hex>, as its `keygen` printed).
    Trust { public_key: String },
    /// Print this host's public key and the keys it trusts.
    Keys,
    /// Write identities (all, or those named) to DEST as a static, signed layout that a web
    /// server, bucket or shared directory can serve to peers.
    #[command(
        after_help = "Examples:\n  kforge store export /srv/kforge-cache\n  python3 -m http.server -d /srv/kforge-cache 8080   # then, on another host:\n  kforge peers add build1 http://build1:8080"
    )]
    Export {
        dest: PathBuf,
        identities: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// Register a peer's exported store (asked in registration order by --use-peers).
    Add {
        /// 1-32 of a-z, 0-9, _ and -.
        name: String,
        /// http(s):// URL, file:/// URL or absolute directory of its `kforge store export`.
        url: String,
    },
    /// List the registered peers (JSON).
    Ls,
    /// Forget a peer.
    Rm { name: String },
}

/// Which Windmill flow `kforge windmill-flow` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WindmillKind {
    /// f/<project>/build: the build, a module per step.
    Build,
    /// f/kernel/test: a build's KUnit suites.
    Test,
}

/// Whose mirror a `kforge mirror` command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Project {
    /// The kernel's (--mirror).
    Linux,
    /// QEMU's (--qemu-mirror).
    Qemu,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  kforge mirror import-tarball /usr/src/linux-source-6.12.tar.xz --tag v6.12.117
  apt-get source --download-only qemu      # Debian's QEMU source package
  kforge mirror --project qemu import-tarball qemu_7.2+dfsg.orig.tar.xz --tag v7.2.0
  kforge mirror --project qemu init --from https://gitlab.com/qemu-project/qemu.git")]
pub struct MirrorArgs {
    /// Which project's mirror.
    #[arg(long, value_enum, default_value = "linux")]
    pub project: Project,
    #[command(subcommand)]
    pub command: MirrorCommand,
}

#[derive(Debug, Subcommand)]
pub enum QemuCommand {
    /// Build QEMU: prepare_worktree -> build_flags -> fetch_identity -> reuse_check -> configure -> compile ->
    /// install -> publish -> collect; prints the manifest (with qemu_binary).
    #[command(after_help = "Examples:
  kforge qemu build                                  # newest v* tag, x86_64-softmmu, minimal
  kforge qemu build debian/7.2+dfsg-7+deb12u18 --configure-option=--enable-slirp
  kforge qemu build v9.2.0 --target-list x86_64-softmmu,aarch64-softmmu --features default
  kforge qemu build --for-arch arm64                 # x86_64-softmmu,aarch64-softmmu
  kforge boot --check --qemu qemu-7.2.22-0123456789ab   # boot a kernel with it")]
    Build(QemuBuildArgs),
    /// Run one step of the QEMU build on its own, for an engine that runs the flow step by
    /// step on one worker (as `kforge step` does for the kernel's).
    #[command(after_help = r#"INPUT is one JSON object:
  {"request": {...a QEMU build request...}, "results": {"prepare_worktree": <its output>, ...}}
Every step before NAME needs its result. The slot is WORKERS_DIR/<KFORGE_WORKER_INDEX>/main/qemu."#)]
    Step(StepArgs),
    /// Continue the slot's failed or interrupted QEMU build from the step it stopped at.
    Resume {
        /// Wait for a busy slot instead of failing.
        #[arg(long)]
        wait: bool,
    },
    /// Print the JSON Schema of a QEMU build request.
    Schema,
}

/// The `--help` heading of a QEMU build request's inputs.
const QEMU_HEADING: &str = "QEMU build";

#[derive(Debug, Args, Clone)]
pub struct QemuBuildArgs {
    /// The ref to build (same as --git-ref).
    #[arg(value_name = "GIT_REF")]
    pub git_ref_pos: Option<String>,
    /// A request file (JSON, or TOML by its .toml name) with any inputs; flags override it.
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// Wait for a busy slot instead of failing.
    #[arg(long)]
    pub wait: bool,
    /// Tag, branch or commit from the QEMU mirror [default: the newest v* tag].
    #[arg(long, value_name = "REF", help_heading = QEMU_HEADING)]
    pub git_ref: Option<String>,
    /// A mailed series to apply on top: message-id or lore URL.
    #[arg(long, value_name = "MSGID", help_heading = QEMU_HEADING)]
    pub b4_series: Option<String>,
    /// The thread as a local mbox file or maildir (offline), for --b4-series.
    #[arg(long, value_name = "PATH", help_heading = QEMU_HEADING)]
    pub b4_mbox: Option<PathBuf>,
    /// configure's targets, comma-separated or repeated [default: x86_64-softmmu].
    #[arg(long, value_name = "TARGET", value_delimiter = ',', help_heading = QEMU_HEADING)]
    pub target_list: Vec<String>,
    /// Also boot guests of this arch (repeat): adds its system emulator's target to
    /// target_list, e.g. --for-arch arm64 gives x86_64-softmmu,aarch64-softmmu.
    #[arg(long, value_enum, value_name = "ARCH")]
    pub for_arch: Vec<kforge::arch::Arch>,
    /// minimal (TCG, KVM, vhost-user: what kforge's guests need) or default (configure's
    /// own: every feature whose library is installed) [default: minimal].
    #[arg(long, value_enum, help_heading = QEMU_HEADING)]
    pub features: Option<kforge::qemu::Features>,
    /// One more configure option, e.g. --configure-option=--enable-slirp (repeat); passed
    /// as one argv word, never through a shell.
    #[arg(
        long = "configure-option",
        value_name = "OPTION",
        allow_hyphen_values = true,
        help_heading = QEMU_HEADING
    )]
    pub configure_options: Vec<String>,
    /// gcc or clang [default: gcc].
    #[arg(long, value_enum, help_heading = QEMU_HEADING)]
    pub compiler: Option<Compiler>,
    /// Compile through the shared, kforge-managed ccache [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = QEMU_HEADING)]
    pub ccache: Option<bool>,
    /// The shared ccache's size limit [default: 10G].
    #[arg(long, value_name = "SIZE", help_heading = QEMU_HEADING)]
    pub ccache_max_size: Option<String>,
    /// Map the slot out of debug info, SOURCE_DATE_EPOCH from the commit [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = QEMU_HEADING)]
    pub reproducible: Option<bool>,
    /// Take the identity from the store when it is there [default: true]; =false rebuilds.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = QEMU_HEADING)]
    pub reuse: Option<bool>,
    /// Fetch the identity from a registered peer's store before building [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = QEMU_HEADING)]
    pub use_peers: Option<bool>,
    /// Remove build/ first.
    #[arg(long, help_heading = QEMU_HEADING)]
    pub wipe_build: bool,
    /// Clone the slot's worktree anew.
    #[arg(long, help_heading = QEMU_HEADING)]
    pub recreate_build_worktree: bool,
}

impl QemuBuildArgs {
    /// The request: the file's inputs (or the defaults), with every given flag on top.
    pub fn to_request(&self) -> Result<kforge::qemu::QemuRequest, InvalidRequest> {
        let mut r = match &self.request {
            Some(path) => {
                let text = fs_err::read_to_string(path).map_err(InvalidRequest::one)?;
                kforge::qemu::QemuRequest::from_file_text(&path.to_string_lossy(), &text)
                    .map_err(InvalidRequest::one)?
            }
            None => kforge::qemu::QemuRequest::default(),
        };
        if let (Some(a), Some(b)) = (&self.git_ref_pos, &self.git_ref)
            && a != b
        {
            return Err(InvalidRequest::one(format!(
                "two refs given: `{a}` and --git-ref `{b}`"
            )));
        }
        if let Some(g) = self.git_ref.clone().or_else(|| self.git_ref_pos.clone()) {
            r.git_ref = Some(g);
        }
        if let Some(s) = &self.b4_series {
            r.b4_series = Some(s.clone());
        }
        if let Some(m) = &self.b4_mbox {
            r.b4_mbox = Some(m.clone());
        }
        if !self.target_list.is_empty() {
            r.target_list.clone_from(&self.target_list);
        }
        for arch in &self.for_arch {
            let target = arch.qemu_target().to_owned();
            if !r.target_list.contains(&target) {
                r.target_list.push(target);
            }
        }
        if let Some(f) = self.features {
            r.features = f;
        }
        r.configure_options
            .extend(self.configure_options.iter().cloned());
        if let Some(c) = self.compiler {
            r.compiler = c;
        }
        set(&mut r.ccache, self.ccache);
        if let Some(size) = &self.ccache_max_size {
            r.ccache_max_size.clone_from(size);
        }
        set(&mut r.reproducible, self.reproducible);
        set(&mut r.reuse, self.reuse);
        set(&mut r.use_peers, self.use_peers);
        r.wipe_build |= self.wipe_build;
        r.recreate_build_worktree |= self.recreate_build_worktree;
        Ok(r)
    }
}

#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Make the bare mirror as a clone of a URL or a local repository.
    Init {
        /// URL or path of the repository to mirror.
        #[arg(long, value_name = "URL_OR_PATH")]
        from: String,
    },
    /// Import a release tarball (e.g. Debian's linux-source-*.tar.xz) as a commit with an
    /// annotated tag; creates the mirror if needed.
    ImportTarball {
        /// The tarball (any compression tar understands).
        file: PathBuf,
        /// The annotated tag to create, e.g. v6.12.117.
        #[arg(long)]
        tag: String,
        /// Also point this branch at the imported commit.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Print the mirror's path, tags and branches as JSON.
    Show,
}

#[derive(Debug, Args, Clone)]
pub struct BootArgs {
    /// Fail (exit 1) unless the check passes.
    #[arg(long)]
    pub check: bool,
    /// A manifest file, or an identity in the store (kernel-<release> or <release>)
    /// [default: the slot's last manifest, WORKERS_DIR/<index>/main/linux.manifest.json].
    #[arg(value_name = "MANIFEST_OR_IDENTITY")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub guest: GuestArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub run: GuestRunArgs,
    /// The command and its arguments, after `--` (run as argv, never joined into a string).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub run: GuestRunArgs,
}

/// What `run` and `shell` take besides the command: which kernel, how long, how to report,
/// and what the guest shares.
#[derive(Debug, Args)]
pub struct GuestRunArgs {
    /// A manifest file, or an identity in the store (kernel-<release> or <release>)
    /// [default: the slot's last build].
    #[arg(value_name = "MANIFEST_OR_IDENTITY")]
    pub manifest: Option<PathBuf>,
    /// Stop the guest after this many seconds (exit 124); `shell` only when it reads a
    /// script from stdin.
    #[arg(
        long,
        default_value_t = 600,
        value_name = "SECS",
        help_heading = "Guest"
    )]
    pub timeout: u64,
    /// For an engine: print one JSON result (status, stdout, stderr, failure, oopses,
    /// seconds; `kforge schema --output run-result`) and exit 0 whenever the guest ran.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub guest: SharedGuestArgs,
}

/// What `run` and `shell` share: this directory, the root, the machine.
#[derive(Debug, Args)]
pub struct SharedGuestArgs {
    /// Share this directory writable (default: read-only).
    #[arg(long)]
    pub rw: bool,
    /// Run in this root directory (it needs /bin/sh), shared writable.
    #[arg(long, value_name = "DIR", conflicts_with = "host_root")]
    pub rootfs: Option<PathBuf>,
    /// Run in this host's own root filesystem, read-only.
    #[arg(long)]
    pub host_root: bool,
    /// A kernel command line parameter to add (repeatable).
    #[arg(long, value_name = "PARAM")]
    pub append: Vec<String>,
    /// Start QEMU's gdbstub on 127.0.0.1:PORT [1234] and hold the kernel until gdb attaches
    /// (KASLR off, no --timeout); prints the gdb command line with the build's vmlinux.
    #[arg(
        long,
        value_name = "PORT",
        num_args = 0..=1,
        default_missing_value = "1234",
        require_equals = true
    )]
    pub gdb: Option<u16>,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// The guest machine, for every command that boots one.
#[derive(Debug, Args, Clone)]
pub struct MachineArgs {
    /// kvm, tcg, or auto: KVM only when /dev/kvm opens and the CPU has vmx/svm.
    #[arg(long, value_enum, default_value = "auto", help_heading = "Guest")]
    pub accel: kforge::guest::Accel,
    /// Guest memory in MiB.
    #[arg(
        long,
        default_value_t = 512,
        value_name = "MIB",
        help_heading = "Guest"
    )]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 1, help_heading = "Guest")]
    pub cpus: u32,
    /// The QEMU to boot with: a binary, a manifest of `kforge qemu build`, or a QEMU
    /// identity in the store (qemu-<release>) [default: qemu-system-x86_64 on PATH].
    #[arg(long, value_name = "PATH_OR_IDENTITY", help_heading = "Guest")]
    pub qemu: Option<PathBuf>,
}

/// `kforge repro`.
#[derive(Debug, Args)]
pub struct ReproArgs {
    /// The build to check: an identity in the store (`kernel-<release>`), a manifest file,
    /// or a request file (built first, in this slot, when the store lacks its identity).
    #[arg(value_name = "IDENTITY|MANIFEST|REQUEST")]
    pub what: PathBuf,
    /// Let the rebuild take compiled objects from ccache: minutes faster, but then only
    /// what is made anew (the link, modpost, the boot image, depmod) is checked.
    #[arg(long)]
    pub ccache: bool,
    /// Wait for a busy slot instead of failing (exit 4).
    #[arg(long)]
    pub wait: bool,
}

/// `kforge log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// How many runs to list.
    #[arg(default_value_t = 10, value_name = "N")]
    pub count: usize,
    /// One run's whole record: its id (or the start of it).
    #[arg(long, value_name = "RUN", conflicts_with = "compare")]
    pub show: Option<String>,
    /// What moved between two builds (run ids, or identities for their latest build).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Vec<String>,
}

/// `kforge bisect`.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    // The build's own ref and after-build options do not apply: the candidates are the refs.
    mut_arg("git_ref_pos", |a| a.hide(true)),
    mut_arg("git_ref", |a| a.hide(true)),
    mut_arg("worktree", |a| a.hide(true)),
    mut_arg("boot", |a| a.hide(true)),
    mut_arg("test", |a| a.hide(true)),
    mut_arg("baseline", |a| a.hide(true)),
    mut_arg("worktree_group", |a| a.hide(true)),
    mut_arg("deploy_dir", |a| a.hide(true)),
    mut_arg("deploy_name", |a| a.hide(true)),
    mut_arg("deploy_replace", |a| a.hide(true)),
)]
pub struct BisectArgs {
    #[command(subcommand)]
    pub command: Option<BisectCommand>,
    /// A commit where the check passes (repeat for several); an ancestor of --bad.
    #[arg(long, value_name = "REF", required = true)]
    pub good: Vec<String>,
    /// A commit where the check fails.
    #[arg(long, value_name = "REF", required = true)]
    pub bad: Option<String>,
    /// What a good candidate passes: boot (the boot check), kunit[:GLOB] (no failing
    /// case), kselftest:TARGET, run:CMD (the command exits 0 in the guest; 125 skips), or
    /// script:PATH (a host script given the manifest's path, with KFORGE_RELEASE and
    /// KFORGE_COMMIT set: 0 good, 125 skip, 1-127 bad).
    #[arg(long, value_name = "CHECK", required = true)]
    pub check: Option<kforge::bisect::Check>,
    /// Check every candidate again, whatever the results database holds for its identity.
    #[arg(long)]
    pub recheck: bool,
    /// Every candidate is built with these inputs (its ref is the candidate).
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Subcommand)]
pub enum BisectCommand {
    /// Go on with this worker's last bisect (what it decided is recorded: not redone).
    Resume,
}

#[derive(Debug, Args, Clone)]
pub struct GuestArgs {
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Give up after this many seconds.
    #[arg(
        long,
        default_value_t = 120,
        value_name = "SECS",
        help_heading = "Guest"
    )]
    pub timeout: u64,
    /// The module that must load from the modules share [default: nls_utf8, or
    /// vsock_loopback in a kernel that has it and not nls_utf8].
    #[arg(long, help_heading = "Guest")]
    pub module: Option<String>,
    /// A command the guest runs (busybox sh) before it powers off.
    #[arg(long, value_name = "CMD", help_heading = "Guest")]
    pub command: Option<String>,
    /// Boot into this directory (e.g. made with debootstrap) shared over virtiofs: kforge's
    /// initramfs checks the modules, then switch_root's into it with the modules share at
    /// /lib/modules/$(uname -r).
    #[arg(long, value_name = "DIR", help_heading = "Guest")]
    pub rootfs: Option<PathBuf>,
    /// With --rootfs: the init to start in it.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/sbin/init",
        requires = "rootfs",
        help_heading = "Guest"
    )]
    pub init: String,
    /// With --rootfs: the console text that means the guest is up (a serial getty's prompt).
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "login:",
        requires = "rootfs",
        help_heading = "Guest"
    )]
    pub ready: String,
}

impl GuestArgs {
    /// `--module`, else the default for the kernel of `m` (see [`kforge::guest::default_module`]).
    pub fn module_for(&self, m: &kforge::kernel::manifest::Manifest) -> String {
        self.module.clone().unwrap_or_else(|| {
            kforge::guest::default_module(m.modules_dir.as_deref().map(std::path::Path::new))
                .to_owned()
        })
    }

    pub fn rootfs(&self) -> Option<kforge::guest::RootFs> {
        self.rootfs.as_ref().map(|d| kforge::guest::RootFs {
            dir: kforge::dirs::absolute(d),
            init: self.init.clone(),
            ready: self.ready.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct VmArgs {
    /// Where the systemd units go.
    #[arg(
        long,
        value_name = "DIR",
        global = true,
        env = "KFORGE_UNIT_DIR",
        default_value = "/etc/systemd/system"
    )]
    pub unit_dir: PathBuf,
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Define (or redefine) a guest from a manifest: its initramfs, vm.json and units
    /// (qemu-system@.service, kforge-virtiofsd@.service, and the guest's drop-ins).
    Define {
        /// The guest's name (1-32 of [a-z0-9_-]).
        name: String,
        /// A manifest file or a store identity [default: the slot's last manifest].
        #[arg(long, value_name = "MANIFEST_OR_IDENTITY")]
        manifest: Option<PathBuf>,
        /// Reboot (ending the service) after the command instead of staying up.
        #[arg(long)]
        oneshot: bool,
        #[command(flatten)]
        guest: GuestArgs,
    },
    /// Start qemu-system@<name>.service (and its virtiofsd).
    Start { name: String },
    /// Stop the guest and its virtiofsd.
    Stop { name: String },
    /// The guest's state as systemd sees it (JSON).
    Status { name: String },
    /// Print the guest's serial console log.
    Console { name: String },
    /// Stop the guest and remove its definition and drop-ins.
    Rm { name: String },
    /// Run the guest in the foreground with the same command line (no systemd needed);
    /// the serial console goes to stdout, Ctrl-C stops it.
    Run {
        name: String,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// The ref to build (same as --git-ref).
    #[arg(value_name = "GIT_REF")]
    pub git_ref_pos: Option<String>,
    /// A request file (JSON, or TOML by its .toml name) with any inputs; flags override it.
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// Wait for a busy slot instead of failing.
    #[arg(long)]
    pub wait: bool,
    /// After the build, boot the kernel and check it (as `kforge boot --check`).
    #[arg(long)]
    pub boot: bool,
    /// After the build (and --boot), run its tests: `kunit` (every suite) or `kunit:GLOB`;
    /// exits 1 when a case fails (with --baseline: when one regresses).
    #[arg(long, value_name = "kunit[:GLOB]")]
    pub test: Option<TestSpec>,
    /// With --test: compare against this identity's latest run of the same suites (run now
    /// when it has none) and fail only on regressions.
    #[arg(long, value_name = "IDENTITY", requires = "test")]
    pub baseline: Option<String>,
    #[command(flatten)]
    pub guest: GuestArgs,

    /// Tag, branch or commit from the mirror [default: the worktree kforge runs in when it
    /// is a Linux tree, else the newest v* tag].
    #[arg(
        long,
        value_name = "REF",
        help_heading = heading::WORKTREE
    )]
    pub git_ref: Option<String>,
    /// Build this git worktree's files as they are, uncommitted edits included (its index,
    /// HEAD and files are left as they are).
    #[arg(
        long,
        value_name = "DIR",
        help_heading = heading::WORKTREE,
        conflicts_with_all = ["git_ref", "git_ref_pos", "b4_series"]
    )]
    pub worktree: Option<PathBuf>,
    /// A mailed series to apply on top: message-id or lore URL.
    #[arg(
        long,
        value_name = "MSGID",
        help_heading = heading::WORKTREE
    )]
    pub b4_series: Option<String>,
    /// The thread as a local mbox file or maildir (offline), for --b4-series.
    #[arg(
        long,
        value_name = "PATH",
        help_heading = heading::WORKTREE
    )]
    pub b4_mbox: Option<PathBuf>,
    /// Name the build yourself (<=40 chars of [A-Za-z0-9._-]); implies --custom-label.
    #[arg(
        long,
        help_heading = heading::WORKTREE
    )]
    pub label: Option<String>,
    /// Use --label instead of the inferred vanilla/branch label.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::WORKTREE)]
    pub custom_label: Option<bool>,
    /// Lay a fresh checkout, discarding build/ and destdir/.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::WORKTREE)]
    pub recreate_build_worktree: Option<bool>,
    /// Remove build/ before configuring (a clean build).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::WORKTREE)]
    pub wipe_build: Option<bool>,
    /// Lay a developer worktree of the built commit under this group, with the devel layer
    /// and a compile_commands.json for its paths.
    #[arg(
        long,
        value_name = "GROUP",
        help_heading = heading::WORKTREE
    )]
    pub worktree_group: Option<String>,
    /// Where worktree groups live (absolute) [default: SYSTEM_DIR/worktrees].
    #[arg(
        long,
        value_name = "DIR",
        help_heading = heading::WORKTREE
    )]
    pub deploy_dir: Option<PathBuf>,
    /// The developer worktree's name in its group [default: the build's label].
    #[arg(
        long,
        value_name = "NAME",
        help_heading = heading::WORKTREE
    )]
    pub deploy_name: Option<String>,
    /// Move an existing developer worktree to this build (never one with work in it).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::WORKTREE)]
    pub deploy_replace: Option<bool>,

    /// How .config is produced [default: preset].
    #[arg(
        long,
        value_enum,
        help_heading = heading::CONFIGURATION
    )]
    pub config_method: Option<ConfigMethod>,
    /// Library preset for --config-method preset [default: imageless_defconfig]; implies it.
    #[arg(
        long,
        value_name = "NAME",
        help_heading = heading::CONFIGURATION
    )]
    pub preset: Option<String>,
    /// In-tree config goal(s) for --config-method make (repeat: defconfig, kvm_guest.config); implies it.
    #[arg(
        long,
        value_name = "GOAL",
        help_heading = heading::CONFIGURATION
    )]
    pub defconfig: Vec<String>,
    /// Library fragment <category>/<name> for --config-method fragments (repeat); implies it.
    #[arg(
        long = "fragment",
        alias = "fragments",
        value_name = "ID",
        help_heading = heading::CONFIGURATION
    )]
    pub fragments: Vec<String>,
    /// Fragments start from allnoconfig (true) or alldefconfig (false) [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::CONFIGURATION)]
    pub allnoconfig_base: Option<bool>,

    /// Extra make goal to narrow the build (repeat) [default: vmlinux, bzImage, modules].
    #[arg(
        long = "target",
        alias = "targets",
        value_name = "GOAL",
        help_heading = heading::BUILD
    )]
    pub targets: Vec<String>,
    /// x86_64, arm64 or riscv64; a foreign arch builds with Debian's cross gcc or clang
    /// [default: x86_64].
    #[arg(
        long,
        value_enum,
        help_heading = heading::BUILD
    )]
    pub arch: Option<kforge::arch::Arch>,
    /// gcc, or clang with LLVM=1 [default: gcc].
    #[arg(
        long,
        value_enum,
        help_heading = heading::BUILD
    )]
    pub compiler: Option<Compiler>,
    /// The environment the build runs in, declared for the identity: an image pinned by
    /// digest (oci:NAME@sha256:HEX) or a Nix store path (nix:/nix/store/HASH-NAME).
    #[arg(long, value_name = "REF", help_heading = heading::BUILD)]
    pub toolchain_env: Option<String>,
    /// Extra make flag, VAR=VALUE or a reporting switch like -k (repeat); never via a shell.
    #[arg(
        long = "make-flag",
        alias = "make-flags",
        value_name = "FLAG",
        allow_hyphen_values = true,
        help_heading = heading::BUILD
    )]
    pub make_flags: Vec<String>,
    /// Pin KBUILD_BUILD_TIMESTAMP/USER/HOST/VERSION [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::BUILD)]
    pub reproducible: Option<bool>,
    /// Take the pinned timestamp from the commit date [default: false, the epoch].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::BUILD)]
    pub timestamp_from_commit: Option<bool>,
    /// Compile through the shared, kforge-managed ccache [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::BUILD)]
    pub ccache: Option<bool>,
    /// The cache's size limit [default: 10G].
    #[arg(
        long,
        value_name = "SIZE",
        help_heading = heading::BUILD
    )]
    pub ccache_max_size: Option<String>,
    /// Generate compile_commands.json into the devel layer [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::BUILD)]
    pub devtools: Option<bool>,

    /// Answer from destdir/ or the store when the identity exists [default: true]; =false rebuilds.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::REUSE)]
    pub reuse: Option<bool>,
    /// Fetch the identity from a registered peer's store before building [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::REUSE)]
    pub use_peers: Option<bool>,

    /// make install the boot image into destdir/boot [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::INSTALLATION)]
    pub install: Option<bool>,
    /// make modules_install into destdir/lib/modules [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::INSTALLATION)]
    pub modules_install: Option<bool>,
    /// Add lib/modules/<release>/source pointing at the tree [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = bool_flag!(), help_heading = heading::INSTALLATION)]
    pub source_symlink: Option<bool>,
}

impl BuildArgs {
    /// The request: the file's inputs (or the defaults), with every given flag on top.
    pub fn to_request(&self) -> Result<KernelRequest, InvalidRequest> {
        let mut r = match &self.request {
            Some(path) => {
                let text = fs_err::read_to_string(path).map_err(InvalidRequest::one)?;
                KernelRequest::from_file_text(&path.to_string_lossy(), &text)
                    .map_err(InvalidRequest::one)?
            }
            None => KernelRequest::default(),
        };
        if let (Some(a), Some(b)) = (&self.git_ref_pos, &self.git_ref)
            && a != b
        {
            return Err(InvalidRequest::one(format!(
                "two refs given: `{a}` and --git-ref `{b}`"
            )));
        }
        if let Some(g) = self.git_ref.clone().or_else(|| self.git_ref_pos.clone()) {
            r.git_ref = Some(g);
        }
        if let Some(w) = &self.worktree {
            r.worktree = Some(kforge::dirs::absolute(w));
        }
        if let Some(s) = &self.b4_series {
            r.b4_series = Some(s.clone());
        }
        if let Some(m) = &self.b4_mbox {
            r.b4_mbox = Some(m.clone());
        }
        if let Some(l) = &self.label {
            r.label = Some(l.clone());
            r.custom_label = true;
        }
        set(&mut r.custom_label, self.custom_label);
        set(&mut r.recreate_build_worktree, self.recreate_build_worktree);
        set(&mut r.wipe_build, self.wipe_build);
        if let Some(g) = &self.worktree_group {
            r.worktree_group = Some(g.clone());
        }
        if let Some(d) = &self.deploy_dir {
            r.deploy_dir = Some(kforge::dirs::absolute(d));
        }
        if let Some(n) = &self.deploy_name {
            r.deploy_name = Some(n.clone());
        }
        set(&mut r.deploy_replace, self.deploy_replace);
        if let Some(p) = &self.preset {
            r.preset.clone_from(p);
            r.config_method = ConfigMethod::Preset;
        }
        if !self.defconfig.is_empty() {
            r.defconfig = OneOrMany::Many(self.defconfig.clone());
            r.config_method = ConfigMethod::Make;
        }
        if !self.fragments.is_empty() {
            r.fragments.clone_from(&self.fragments);
            r.config_method = ConfigMethod::Fragments;
        }
        let implied = [
            self.preset.is_some(),
            !self.defconfig.is_empty(),
            !self.fragments.is_empty(),
        ];
        if implied.iter().filter(|x| **x).count() > 1 && self.config_method.is_none() {
            return Err(InvalidRequest::one(
                "--preset, --defconfig and --fragment choose different config methods; pass --config-method",
            ));
        }
        if let Some(m) = self.config_method {
            r.config_method = m;
        }
        set(&mut r.allnoconfig_base, self.allnoconfig_base);
        if !self.targets.is_empty() {
            r.targets.clone_from(&self.targets);
        }
        if let Some(a) = self.arch {
            r.arch = a;
        }
        if let Some(c) = self.compiler {
            r.compiler = c;
        }
        if let Some(e) = &self.toolchain_env {
            r.toolchain_env = Some(e.clone());
        }
        if !self.make_flags.is_empty() {
            r.make_flags = OneOrMany::Many(self.make_flags.clone());
        }
        set(&mut r.reproducible, self.reproducible);
        set(&mut r.timestamp_from_commit, self.timestamp_from_commit);
        set(&mut r.ccache, self.ccache);
        set(&mut r.devtools, self.devtools);
        if let Some(s) = &self.ccache_max_size {
            r.ccache_max_size.clone_from(s);
        }
        set(&mut r.reuse, self.reuse);
        set(&mut r.use_peers, self.use_peers);
        set(&mut r.install, self.install);
        set(&mut r.modules_install, self.modules_install);
        set(&mut r.source_symlink, self.source_symlink);
        Ok(r)
    }
}

fn set(field: &mut bool, value: Option<bool>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// Every input of a request's schema is a flag of its command whose argument has the
    /// input's name, under the heading of the input's group; and every flag under an input
    /// group's heading is an input of the schema. Walked from the schema and clap's command.
    fn check_inputs(
        command: &str,
        schema: &serde_json::Value,
        heading_of: &dyn Fn(&str) -> String,
    ) {
        let cli = Cli::command();
        let cmd = command
            .split(' ')
            .fold(&cli, |c, name| c.find_subcommand(name).expect(name));
        let props = schema["properties"].as_object().unwrap();
        for (name, prop) in props {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == name.as_str())
                .unwrap_or_else(|| panic!("`kforge {command}` has no flag for input `{name}`"));
            assert!(arg.get_long().is_some(), "{name} is not a --flag");
            let group = prop["x-group"].as_str().unwrap_or_default();
            assert_eq!(
                arg.get_help_heading(),
                Some(heading_of(group).as_str()),
                "`{name}` is not under its group's heading"
            );
        }
        let headings: Vec<String> = kforge::kernel::request::GROUPS
            .iter()
            .map(|(g, _)| heading_of(g))
            .collect();
        for arg in cmd.get_arguments() {
            if arg
                .get_help_heading()
                .is_some_and(|h| headings.iter().any(|x| x == h))
            {
                assert!(
                    props.contains_key(arg.get_id().as_str()),
                    "--{} is under an input heading but is no input of the schema",
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn every_build_input_is_a_flag_under_its_group() {
        let schema = kforge::kernel::request::schema();
        let summaries: std::collections::BTreeMap<&str, &str> =
            kforge::kernel::request::GROUPS.iter().copied().collect();
        check_inputs("build", &schema, &|g| format!("{g}: {}", summaries[g]));
        check_inputs("identity", &schema, &|g| format!("{g}: {}", summaries[g]));
    }

    #[test]
    fn every_qemu_input_is_a_flag_of_qemu_build() {
        let schema =
            serde_json::to_value(schemars::schema_for!(kforge::qemu::QemuRequest)).unwrap();
        check_inputs("qemu build", &schema, &|_| super::QEMU_HEADING.to_owned());
    }

    #[test]
    fn for_arch_adds_the_system_emulators_of_the_arches_booted() {
        use clap::Parser as _;
        let targets = |args: &[&str]| {
            let cli = Cli::try_parse_from(["kforge", "qemu", "build"].iter().chain(args)).unwrap();
            let super::Command::Qemu(super::QemuCommand::Build(b)) = cli.command else {
                panic!("not qemu build");
            };
            b.to_request().unwrap().target_list
        };
        assert_eq!(targets(&[]), ["x86_64-softmmu"]);
        assert_eq!(
            targets(&["--for-arch", "arm64"]),
            ["x86_64-softmmu", "aarch64-softmmu"]
        );
        assert_eq!(
            targets(&[
                "--target-list",
                "aarch64-softmmu",
                "--for-arch",
                "arm64",
                "--for-arch",
                "riscv64"
            ]),
            ["aarch64-softmmu", "riscv64-softmmu"]
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every `KFORGE_*` variable kforge reads is shown by `--help` of the command that reads
    /// it, found by reading the sources (not a list kept here).
    #[test]
    fn help_names_every_kforge_variable() {
        fn texts(dir: &std::path::Path, out: &mut String) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    texts(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        fn helps(cmd: &mut clap::Command, out: &mut String) {
            out.push_str(&cmd.render_long_help().to_string());
            for sub in cmd.get_subcommands_mut() {
                helps(sub, out);
            }
        }
        let mut src = String::new();
        texts(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut src,
        );
        let mut vars: std::collections::BTreeSet<String> = src
            .match_indices("KFORGE_")
            .map(|(i, _)| {
                src[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect()
            })
            .filter(|v: &String| v.len() > "KFORGE_".len())
            .collect();
        // The store's kill points for the tests, not a user's setting.
        vars.remove("KFORGE_FAULT_INJECT");
        assert!(
            vars.contains("KFORGE_STORE") && vars.len() >= 10,
            "{vars:?}"
        );
        let mut help = String::new();
        helps(&mut Cli::command(), &mut help);
        let missing: Vec<&String> = vars.iter().filter(|v| !help.contains(v.as_str())).collect();
        assert!(missing.is_empty(), "--help never names {missing:?}");
    }
}
