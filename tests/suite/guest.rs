//! The guest layer for real: kforge-built kernels (the suite's gcc and clang fixtures)
//! booted in QEMU (TCG here) with their modules shared over virtiofsd, checked from what the
//! guest prints on its serial console.

use std::path::{Path, PathBuf};

use crate::support::procs::{assert_no_guests, guest_pids, status_field};
use crate::support::{BootReport, Outcome, RunResult, TestContext, fixtures, fs};

/// `kforge boot --check` of a manifest file or a store identity, under TCG.
fn boot(ctx: &TestContext, manifest: &Path, extra: &[&str]) -> Outcome {
    ctx.kforge(["boot", "--check"])
        .arg(manifest)
        .args(["--accel", "tcg"])
        .args(extra)
        .run()
}

/// A root directory holding a static busybox and `init` (a shell script).
fn rootfs(dir: &Path, init: &str) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "sbin", "proc", "sys", "dev", "etc", "lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static (scripts/install-deps.sh installs it)");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    fs::write_executable(root.join("sbin/init"), init);
    root
}

#[test]
#[ignore = "boots kernels in QEMU: scripts/test.sh"]
fn built_kernels_boot_with_their_identity_and_modules() {
    let ctx = TestContext::new("guest");
    let gcc = ctx.adopt(fixtures::tiny_gcc());
    let manifest = ctx.manifest_file(&gcc.entry());
    // boot --check by store identity: the guest reports the identity and loads a module
    // from the virtiofs share.
    let report: BootReport = boot(&ctx, Path::new(&gcc.entry()), &[]).success().json();
    assert!(report.passed, "{report:?}");
    assert_eq!(
        report.guest_release.as_deref(),
        Some(gcc.uts_release.as_str())
    );
    assert_eq!(report.expected_release, gcc.uts_release);
    assert!(report.modules_mounted && report.module_loaded);
    assert_eq!(report.module, "nls_utf8");
    assert_eq!(report.accel, "tcg");
    assert!(report.seconds > 0.0);
    assert!(
        report
            .console_tail
            .iter()
            .any(|l| l == &format!("KFORGE-UNAME {}", gcc.uts_release))
    );
    assert_no_guests(ctx.path());
    // The same by manifest file.
    let report: BootReport = boot(&ctx, &manifest, &[]).success().json();
    assert!(report.passed, "{report:?}");

    // A root directory shared over virtiofs: the guest switches into it, with its modules
    // share moved to /lib/modules/$(uname -r), and writes into it.
    let root = rootfs(
        ctx.path(),
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nr=$(uname -r)\n\
         echo \"ROOTFS-INIT $r $(cat /etc/hostname)\"\n\
         [ -f /lib/modules/$r/modules.dep ] && echo ROOTFS-MODULES-VISIBLE\n\
         echo $r > /booted-release; sync\necho 'guest login:'\nsleep 60\n",
    );
    fs::write(root.join("etc/hostname"), "from-the-share\n");
    let root_s = root.to_str().unwrap();
    let report: BootReport = boot(&ctx, &manifest, &["--rootfs", root_s])
        .success()
        .json();
    assert!(
        report.passed && report.rootfs_mounted && report.ready_seen,
        "{report:?}"
    );
    assert_eq!(report.rootfs.as_deref(), Some(root_s));
    let tail = report.console_tail.join("\n");
    assert!(
        tail.contains(&format!("ROOTFS-INIT {} from-the-share", gcc.uts_release)),
        "{tail}"
    );
    assert!(tail.contains("ROOTFS-MODULES-VISIBLE"), "{tail}");
    assert_eq!(
        fs::read_string(root.join("booted-release")),
        format!("{}\n", gcc.uts_release)
    );
    // A root directory whose init never says it is up: fails with the reason; one without
    // the init: refused before booting.
    boot(
        &ctx,
        &manifest,
        &[
            "--rootfs",
            root_s,
            "--ready",
            "never-printed",
            "--timeout",
            "20",
        ],
    )
    .code(1)
    .stderr_has("`never-printed` did not appear");
    boot(
        &ctx,
        &manifest,
        &["--rootfs", root_s, "--init", "/sbin/nope"],
    )
    .code(2)
    .stderr_has("has no /sbin/nope");
    assert_no_guests(ctx.path());

    // The clang build boots too.
    let clang = ctx.adopt(fixtures::tiny_clang());
    let report: BootReport = boot(&ctx, Path::new(&clang.entry()), &[]).success().json();
    assert!(report.passed, "{report:?}");
    assert_eq!(
        report.guest_release.as_deref(),
        Some(clang.uts_release.as_str())
    );

    // A manifest whose modules tree is missing: refused before booting.
    let edited = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&manifest)).unwrap();
        f(&mut v);
        let p = ctx.path().join(name);
        fs::write(&p, v.to_string());
        p
    };
    let missing = edited("missing.json", &|v| {
        v["modules_dir"] = "/nonexistent/lib/modules/x".into();
    });
    boot(&ctx, &missing, &[]).code(2).stderr_has("is missing");
    // One that names another release's tree: refused too.
    let other = edited("other.json", &|v| {
        v["modules_dir"] = clang.modules_dir.clone().unwrap().into();
    });
    boot(&ctx, &other, &[])
        .code(2)
        .stderr_has(&format!("belongs to release {}", clang.uts_release));
    // Another release's modules under this release's name: the guest boots, the module
    // does not load (wrong vermagic), and the check fails with the console's end.
    let fake = ctx.path().join("fake/lib/modules").join(&gcc.uts_release);
    fs::copy_tree(Path::new(clang.modules_dir.as_ref().unwrap()), &fake);
    let wrong = edited("wrong.json", &|v| {
        v["modules_dir"] = fake.display().to_string().into();
    });
    let r = boot(&ctx, &wrong, &[])
        .code(1)
        .stderr_has("module nls_utf8 did not load")
        .stderr_has("--- guest console");
    let report: BootReport = r.json();
    assert!(!report.passed && report.modules_mounted && !report.module_loaded);
    assert_eq!(
        report.failure.as_deref(),
        Some("module nls_utf8 did not load from the modules share")
    );
    // A kernel built before the presets had nls_utf8 (its modules.dep lists vsock_loopback
    // instead): the check loads that one when no --module is given.
    fs::write(
        fake.join("modules.dep"),
        "kernel/net/vmw_vsock/vsock_loopback.ko: kernel/net/vmw_vsock/vsock.ko\n",
    );
    let report: BootReport = boot(&ctx, &wrong, &[])
        .code(1)
        .stderr_has("module vsock_loopback did not load")
        .json();
    assert_eq!(report.module, "vsock_loopback");
    // A guest that does not finish in time is stopped, and nothing is left running. It sleeps,
    // so it cannot finish first: the tiny kernel's whole check can take less than 1 s.
    boot(
        &ctx,
        &manifest,
        &["--timeout", "1", "--command", "sleep 60"],
    )
    .code(1)
    .stderr_has("did not finish within 1 s");
    assert_no_guests(ctx.path());
}

#[test]
#[ignore = "boots kernels in QEMU: scripts/test.sh"]
fn run_hands_back_the_command_output_and_status() {
    let ctx = TestContext::new("run");
    let gcc = ctx.adopt(fixtures::tiny_gcc());
    let entry = gcc.entry();
    let work = ctx.path().join("work tree");
    fs::write(work.join("data.txt"), "from the host\n");
    let run = |extra: &[&str], cmd: &[&str]| {
        ctx.kforge(["run", entry.as_str(), "--accel", "tcg"])
            .args(extra)
            .arg("--")
            .args(cmd)
            .cwd(&work)
            .run()
    };
    // The command's status is kforge's, its stdout and stderr arrive apart, and nothing of
    // the console mixes into them.
    let r = run(&[], &["sh", "-c", "echo out; echo err >&2; exit 7"]).code(7);
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.starts_with("err\n"), "{}", r.stderr);
    let r = run(&[], &["uname", "-r"]).success();
    assert_eq!(r.stdout, format!("{}\n", gcc.uts_release));
    // It runs in this directory, shared at the same path: read-only unless --rw.
    let r = run(&[], &["sh", "-c", "pwd; cat data.txt"]).success();
    assert_eq!(r.stdout, format!("{}\nfrom the host\n", work.display()));
    run(&[], &["sh", "-c", "echo x > new.txt"])
        .code(1)
        .stderr_has("Read-only file system");
    assert!(!work.join("new.txt").exists());
    run(&["--rw"], &["sh", "-c", "echo written > new.txt"]).success();
    assert_eq!(fs::read_string(work.join("new.txt")), "written\n");

    // A root directory: the command runs in it, with this kernel's modules.
    let root = rootfs(ctx.path(), "#!/bin/busybox sh\n");
    fs::write(root.join("etc/hostname"), "in-the-rootfs\n");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let r = run(
        &["--rootfs", root.to_str().unwrap()],
        &[
            "sh",
            "-c",
            "/bin/busybox cat /etc/hostname data.txt; /bin/busybox ls /lib/modules/$(/bin/busybox uname -r)/modules.dep",
        ],
    )
    .success();
    assert_eq!(
        r.stdout,
        format!(
            "in-the-rootfs\nfrom the host\n/lib/modules/{}/modules.dep\n",
            gcc.uts_release
        )
    );
    // A guest that plants a symlink to /etc in its writable root share and writes through
    // it reaches the share's /etc, never the host's.
    let r = run(
        &["--rootfs", root.to_str().unwrap()],
        &[
            "sh",
            "-c",
            "/bin/busybox ln -s /etc /escape && echo planted > /escape/kforge-escape && /bin/busybox cat /escape/kforge-escape",
        ],
    )
    .success();
    assert_eq!(r.stdout, "planted\n");
    assert!(
        !Path::new("/etc/kforge-escape").exists(),
        "the guest wrote into the host's /etc"
    );
    assert_eq!(fs::read_string(root.join("etc/kforge-escape")), "planted\n");
    assert_eq!(
        std::fs::read_link(root.join("escape")).unwrap(),
        Path::new("/etc")
    );

    // While a guest runs: its QEMU is not root and runs under seccomp; its virtiofsd
    // daemons are in PID namespaces of their own.
    let mut running = ctx
        .kforge(["run", entry.as_str(), "--accel", "tcg", "--", "sleep", "6"])
        .cwd(&work)
        .spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (qemu_pid, daemons) = loop {
        if running.try_wait().unwrap().is_some() {
            let r = crate::support::Outcome::wait(running);
            panic!("kforge run ended before its guest was seen: {}", r.stderr);
        }
        let procs = guest_pids(ctx.path());
        let qemu = procs
            .iter()
            .find(|(_, c)| c.contains("qemu-system"))
            .map(|(p, _)| *p);
        let daemons: Vec<u32> = procs
            .iter()
            .filter(|(_, c)| c.contains("virtiofsd"))
            .map(|(p, _)| *p)
            .collect();
        if let Some(q) = qemu
            && status_field(q, "Seccomp") == ["2"]
        {
            break (q, daemons);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sandboxed QEMU appeared: {procs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let uid = status_field(qemu_pid, "Uid");
    assert!(
        !uid.is_empty() && uid.iter().all(|u| u != "0"),
        "QEMU runs as {uid:?}"
    );
    assert!(
        daemons.iter().any(|p| status_field(*p, "NSpid").len() == 2),
        "no virtiofsd in a PID namespace of its own: {daemons:?}"
    );
    crate::support::Outcome::wait(running).success();

    // The host's own root, read-only: its programs and files.
    let r = run(&["--host-root"], &["cat", "/etc/os-release"]).success();
    assert_eq!(r.stdout, fs::read_string("/etc/os-release"));
    run(&["--host-root"], &["touch", "/kforge-must-not-exist"])
        .code(1)
        .stderr_has("Read-only file system");
    assert!(!Path::new("/kforge-must-not-exist").exists());

    // For an engine: one JSON result, the status and both streams in it, exit 0.
    let r: RunResult = run(&["--json"], &["sh", "-c", "echo o; echo e >&2; exit 5"])
        .success()
        .json();
    assert_eq!(
        (r.status, r.stdout.as_str(), r.stderr.as_str()),
        (Some(5), "o\n", "e\n")
    );
    assert_eq!(r.release, gcc.uts_release);
    assert_eq!(r.command, ["sh", "-c", "echo o; echo e >&2; exit 5"]);
    assert!(r.failure.is_none() && r.seconds > 0.0, "{r:?}");
    let r: RunResult = run(&["--json", "--append", "rdinit=/nope"], &["true"])
        .success()
        .json();
    assert_eq!(r.status, None);
    assert!(
        r.failure
            .as_deref()
            .is_some_and(|f| f.starts_with("the guest kernel panicked")),
        "{r:?}"
    );

    // A kernel that panics, a command that hangs: reported, never a hung terminal.
    run(&["--append", "rdinit=/nope"], &["true"])
        .code(120)
        .stderr_has("the guest kernel panicked: Kernel panic - not syncing");
    run(&["--timeout", "5"], &["sleep", "60"])
        .code(124)
        .stderr_has("did not finish within 5 s (the command was running)");
    // kforge shell on a pseudo-terminal (util-linux's script): a command runs in this
    // directory, `exit 3` leaves, and its status is kforge's.
    let kforge = ctx
        .kforge(["shell", entry.as_str(), "--accel", "tcg"])
        .command();
    let line = std::iter::once(kforge.get_program())
        .chain(kforge.get_args())
        .map(|a| a.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = std::process::Command::new("script");
    script
        .args(["-qfec", &line, "/dev/null"])
        .current_dir(&work)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    for (k, v) in ctx.kforge_env() {
        script.env(k, v);
    }
    let mut child = script.spawn().expect("script (bsdutils) runs");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let chunk = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("{needle:?} did not appear on the terminal ({e}):\n{seen}")
            });
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    wait_for("leave with exit");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"echo shell-$((6*7)) in $(pwd)\n").unwrap();
    wait_for(&format!("shell-42 in {}", work.display()));
    std::io::Write::write_all(&mut stdin, b"exit 3\n").unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    assert_eq!(status.code(), Some(3), "the shell's status is kforge's");
    // Not on a terminal (an engine's step): the shell runs the script on its stdin, with
    // run's streams, status and JSON result.
    let shell = || {
        ctx.kforge(["shell", entry.as_str(), "--accel", "tcg"])
            .cwd(&work)
    };
    let r = shell()
        .run_with_stdin(
            b"cd /proc/sys/kernel\necho in $(pwd) $(cat osrelease)\necho e >&2\nexit 4\n",
        )
        .code(4);
    assert_eq!(
        r.stdout,
        format!("in /proc/sys/kernel {}\n", gcc.uts_release)
    );
    assert!(r.stderr.starts_with("e\n"), "{}", r.stderr);
    let r: RunResult = shell()
        .arg("--json")
        .run_with_stdin(b"cat data.txt; exit 2")
        .success()
        .json();
    assert_eq!((r.status, r.stdout.as_str()), (Some(2), "from the host\n"));
    assert_eq!(r.command[..2], ["/bin/sh", "-c"]);
    shell()
        .run_with_stdin(&vec![b'#'; 70 * 1024])
        .refused("is over 64 KiB");

    // --gdb: the kernel is held at the reset vector until gdb attaches, then runs on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut held = ctx
        .kforge(["run", entry.as_str(), "--accel", "tcg"])
        .arg(format!("--gdb={port}"))
        .args(["--", "echo", "gdb-ran"])
        .cwd(&work)
        .spawn();
    let mut stderr = std::io::BufReader::new(held.stderr.take().unwrap());
    let mut hint = String::new();
    while !hint.contains("target remote") {
        hint.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut hint).unwrap() > 0,
            "kforge run --gdb printed no gdb command line"
        );
    }
    assert!(
        hint.contains(&format!("/vmlinux -ex 'target remote 127.0.0.1:{port}'")),
        "{hint}"
    );
    let gdb = std::process::Command::new("gdb")
        .args(["-batch", "-nx", "-ex"])
        .arg(format!("target remote 127.0.0.1:{port}"))
        .args(["-ex", "info registers rip", "-ex", "continue"])
        .output()
        .expect("gdb (scripts/install-deps.sh installs it)");
    let said = String::from_utf8_lossy(&gdb.stdout);
    assert!(said.contains("0xfff0"), "held at the reset vector:\n{said}");
    std::io::Read::read_to_string(&mut stderr, &mut String::new()).unwrap();
    let r = crate::support::Outcome::wait(held).success();
    assert_eq!(r.stdout, "gdb-ran\n");

    // Bad input: refused before anything starts.
    run(&["--rootfs", "/nonexistent"], &["true"]).refused("does not exist");
    run(&["--rootfs", work.to_str().unwrap()], &["true"]).refused("has no /bin/sh");
    run(&["--append", "a\nb"], &["true"]).refused("control characters");
    assert_no_guests(ctx.path());
}
