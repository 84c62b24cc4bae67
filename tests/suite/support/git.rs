//! git as the tests run it: no user or system config, a fixed identity.

use std::path::Path;
use std::process::Command;

/// Who commits in a test.
pub const TESTER: (&str, &str) = ("kforge test", "test@kforge.invalid");

/// `git -C DIR ARGS` as [`TESTER`]; its trimmed stdout.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_as(TESTER, dir, args)
}

/// `git -C DIR ARGS` as `who` (name, email); its trimmed stdout.
#[track_caller]
pub fn git_as(who: (&str, &str), dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", who.0)
        .env("GIT_AUTHOR_EMAIL", who.1)
        .env("GIT_COMMITTER_NAME", who.0)
        .env("GIT_COMMITTER_EMAIL", who.1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `git clone --quiet --bare --shared FROM TO`: a mirror of a test's own (its refs and
/// worktrees are its own; the objects are borrowed).
#[track_caller]
pub fn private_mirror(from: &Path, to: &Path) {
    let out = Command::new("git")
        .args(["clone", "--quiet", "--bare", "--shared"])
        .arg(from)
        .arg(to)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
