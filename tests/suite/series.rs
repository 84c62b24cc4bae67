//! Mailed series through real b4 and git am: series made by the test with
//! `git format-patch --cover-letter -v2/-v3` from the fixture mirror, as local mbox threads.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::git::{git, git_as};
use crate::support::kernel::{assert_release_format, bzimage_version_string};
use crate::support::{Identity, Manifest, TINY, TestContext, fixtures, fs, tag, version};

const COVER: &str = "don't build bios/contexts over multiple iomaps";
const AUTHOR: (&str, &str) = ("Series Author", "author@example.org");

/// A scratch clone of the fixture to write series in; only `init/` (which the series edit)
/// is checked out.
fn workspace(ctx: &TestContext) -> PathBuf {
    let dir = ctx.path().join("dev");
    let out = Command::new("git")
        .args(["clone", "--quiet", "--shared", "--no-checkout"])
        .arg(ctx.mirror())
        .arg(&dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success());
    git(&dir, &["sparse-checkout", "set", "init"]);
    dir
}

/// Commits `edits` (file, appended line) on a branch from `base` and formats them as one
/// mbox thread with a cover letter; returns (mbox path, cover message-id, patch message-ids).
fn series(
    dev: &Path,
    name: &str,
    base: &str,
    version: u32,
    edits: &[(&str, &str)],
    cover: Option<&str>,
) -> (PathBuf, String, Vec<String>) {
    series_by(AUTHOR, dev, name, base, version, edits, cover)
}

/// [`series`], written and mailed by `author`.
fn series_by(
    author: (&str, &str),
    dev: &Path,
    name: &str,
    base: &str,
    version: u32,
    edits: &[(&str, &str)],
    cover: Option<&str>,
) -> (PathBuf, String, Vec<String>) {
    let g = |args: &[&str]| git_as(author, dev, args);
    g(&["checkout", "--quiet", "--force", "-B", name, base]);
    for (file, line) in edits {
        let p = dev.join(file);
        let mut text = fs::read_string(&p);
        text.push_str(line);
        text.push('\n');
        fs::write(&p, text);
        g(&["commit", "--quiet", "-am", &format!("{file}: {line}")]);
    }
    let out = dev.join(format!("out-{name}"));
    let mut args = vec![
        "format-patch".to_owned(),
        "--quiet".into(),
        "--thread=shallow".into(),
        format!("-v{version}"),
        "-o".into(),
        out.display().to_string(),
    ];
    if let Some(c) = cover {
        g(&["config", &format!("branch.{name}.description"), c]);
        args.push("--cover-letter".into());
        args.push("--cover-from-description=subject".into());
    }
    args.push(format!("{base}..{name}"));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    g(&a);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut mbox = String::new();
    let mut ids = Vec::new();
    for f in &files {
        let text = fs::read_string(f);
        let id = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("Message-ID: ")
                    .or_else(|| l.strip_prefix("Message-Id: "))
            })
            .unwrap()
            .trim_matches(['<', '>'])
            .to_owned();
        ids.push(id);
        mbox.push_str(&text);
    }
    let path = dev.join(format!("{name}.mbox"));
    fs::write(&path, mbox);
    let first = ids.remove(0);
    (path, first, ids)
}

fn id_of(ctx: &TestContext, extra: &[&str]) -> Identity {
    ctx.kforge(["identity", tag()])
        .args(TINY)
        .args(extra)
        .run()
        .success()
        .json()
}

#[test]
#[ignore = "builds a kernel: scripts/test.sh"]
fn a_series_is_applied_published_labelled_and_built() {
    fixtures::tiny_gcc();
    // The build publishes the series to its mirror.
    let ctx = TestContext::with_private_mirror("series-build");
    let dev = workspace(&ctx);
    let edits = [
        ("init/version.c", "/* series: patch one */"),
        ("init/main.c", "/* series: patch two */"),
    ];
    let (mbox, cover, _) = series(&dev, "iomap-v3", tag(), 3, &edits, Some(COVER));
    // The slot holds the series' base, built: the series then compiles incrementally.
    ctx.kforge(["build", tag()]).args(TINY).run().success();
    let fork_o = fs::mtime(ctx.slot(0).join("build/kernel/fork.o"));
    let m: Manifest = ctx
        .kforge(["build", tag()])
        .args(TINY)
        .args(["--b4-series", &format!("<{cover}>"), "--b4-mbox"])
        .arg(&mbox)
        .run()
        .success()
        .json();
    // The spec's example label, v3 kept, the digest whole.
    assert_eq!(m.label, "don-t-build-bios-contexts-over-multiple-v3");
    assert_release_format(
        &m.uts_release,
        version(),
        "don-t-build-bios-contexts-over-multiple-v3",
    );
    let s = m.series.clone().expect("series in manifest");
    assert_eq!(s.message_id, cover);
    assert!(s.from_cover);
    assert_eq!(s.subject, format!("[PATCH v3 0/2] {COVER}"));
    assert_eq!(s.patches.len(), 2);
    assert_eq!(
        s.branch.as_deref(),
        Some("b4/don-t-build-bios-contexts-over-multiple-iomaps-v3")
    );
    // The manifest's commit is the applied HEAD, published in the mirror for review, and
    // holds both patches on top of the tag.
    let mirror = ctx.mirror();
    let published = git(
        &mirror,
        &[
            "rev-parse",
            "refs/heads/b4/don-t-build-bios-contexts-over-multiple-iomaps-v3",
        ],
    );
    assert_eq!(m.commit, published);
    assert_eq!(s.head, published);
    assert_eq!(
        git(&mirror, &["rev-parse", &format!("{published}~2")]),
        git(&mirror, &["rev-parse", &format!("{}^{{commit}}", tag())])
    );
    assert_eq!(
        s.base,
        git(&mirror, &["rev-parse", &format!("{}^{{commit}}", tag())])
    );
    assert_eq!(
        git(&mirror, &["show", "-s", "--format=%cn <%ce>", &published]),
        "kforge <kforge@localhost>"
    );
    let src = ctx.slot(0);
    assert!(fs::read_string(src.join("init/main.c")).contains("series: patch two"));
    // Built for real: the image reports the series' identity.
    let banner = bzimage_version_string(Path::new(m.bz_image.as_ref().unwrap()));
    assert!(banner.starts_with(&m.uts_release), "{banner}");
    let release = fs::read_string(src.join("build/include/config/kernel.release"));
    assert_eq!(release.trim(), m.uts_release);
    assert!(!m.uts_release.ends_with('+'));
    assert_eq!(
        fs::mtime(src.join("build/kernel/fork.o")),
        fork_o,
        "an object the series does not touch was rebuilt"
    );
}

#[test]
#[ignore = "runs Kconfig on the real kernel tree: scripts/test.sh"]
fn identity_of_series_revisions_and_faults() {
    let ctx = TestContext::new("series-id");
    let dev = workspace(&ctx);
    let v2_edits = [
        ("init/version.c", "/* series: patch one */"),
        ("init/main.c", "/* series: patch two */"),
    ];
    let v3_edits = [
        ("init/version.c", "/* series: patch one, reworked */"),
        ("init/main.c", "/* series: patch two */"),
    ];
    let (mbox2, cover2, _) = series(&dev, "s-v2", tag(), 2, &v2_edits, Some(COVER));
    let (mbox3, cover3, _) = series(&dev, "s-v3", tag(), 3, &v3_edits, Some(COVER));
    let args = |cover: &str, mbox: &Path| {
        vec![
            "--b4-series".to_owned(),
            cover.to_owned(),
            "--b4-mbox".to_owned(),
            mbox.display().to_string(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        id_of(&ctx, &a)
    };
    let v2 = run(args(&cover2, &mbox2));
    assert_eq!(v2.label, "don-t-build-bios-contexts-over-multiple-v2");
    // Applying the same series again: the same tree, so the same digest.
    let v2_again = run(args(&cover2, &mbox2));
    assert_eq!(v2_again.digest, v2.digest);
    assert_eq!(v2_again.inputs.tree, v2.inputs.tree);
    // Another revision differs in label and digest.
    let v3 = run(args(&cover3, &mbox3));
    assert_eq!(v3.label, "don-t-build-bios-contexts-over-multiple-v3");
    assert_ne!(v3.digest, v2.digest);
    // A lore URL names the same series.
    let url = format!("https://lore.kernel.org/linux-fsdevel/{cover3}/");
    assert_eq!(run(args(&url, &mbox3)).digest, v3.digest);
    // No cover letter (v1): the first patch's subject, and no revision invented.
    let (mbox1, first, _) = series(&dev, "s-v1", tag(), 1, &v2_edits[..1], None);
    let v1 = run(args(&first, &mbox1));
    assert_eq!(v1.label, "init-version-c-series-patch-one");
    // A long name folds the From: header git format-patch writes (Debian 12's b4 0.12
    // crashed on it in save_cover); the series applies all the same.
    let long = (
        "Maximiliana Bartholomew-Featherstonehaugh von Wolfenstein-Schmidt III",
        "maximiliana@example.org",
    );
    let (mbox_long, cover_long, _) = series_by(
        long,
        &dev,
        "s-long",
        tag(),
        2,
        &v2_edits,
        Some("a long name"),
    );
    assert!(
        fs::read_string(&mbox_long).contains(&format!("From: {}\n <", long.0)),
        "the From: header is not folded"
    );
    let folded = run(args(&cover_long, &mbox_long));
    assert_eq!(folded.label, "a-long-name-v2");
    assert_eq!(
        folded.inputs.tree, v2.inputs.tree,
        "the same edits, the same tree"
    );
    // A custom label still wins over the series.
    let mut a = args(&cover3, &mbox3);
    a.extend(["--label".to_owned(), "mine".to_owned()]);
    assert_eq!(run(a).label, "mine");

    // A series that does not apply: clear error naming the patch, slot clean at the ref.
    let (bad_mbox, bad_cover, _) = series(
        &dev,
        "s-bad",
        "origin/test/comment",
        2,
        &[("init/version.c", "/* on top of the comment */")],
        Some("needs the comment"),
    );
    let bad_base_edit = fs::read_string(&bad_mbox).replace(
        "/* kforge test branch: a comment only */",
        "/* a context that is not in the base */",
    );
    fs::write(&bad_mbox, bad_base_edit);
    let r = ctx
        .kforge(["identity", tag()])
        .args(TINY)
        .args(["--b4-series", &bad_cover, "--b4-mbox"])
        .arg(&bad_mbox)
        .run()
        .code(1);
    assert!(
        r.stderr.contains("does not apply") && r.stderr.contains("patch 0001"),
        "{}",
        r.stderr
    );
    let src = ctx.slot(0);
    assert_eq!(
        git(&src, &["rev-parse", "HEAD"]),
        git(&src, &["rev-parse", &format!("{}^{{commit}}", tag())])
    );
    assert_eq!(git(&src, &["status", "--porcelain"]), "", "slot left dirty");
    assert!(
        !src.join(".git/rebase-apply").exists(),
        "git am left in progress"
    );
    // The slot is usable right after.
    assert_eq!(run(args(&cover2, &mbox2)).digest, v2.digest);

    // Hostile message-ids are refused before b4 runs.
    let fresh = TestContext::new("series-hostile");
    for bad in [
        "--upload-pack=x@y",
        "$(touch /tmp/kforge-b4)@x",
        "a;b@x",
        "../../x@y",
        "https://lore.kernel.org/all/a%2F..%2Fb@x/",
        "a b@x",
    ] {
        fresh
            .kforge(["build", &format!("--b4-series={bad}"), "--b4-mbox"])
            .arg(&mbox2)
            .run()
            .refused("is refused");
    }
    fresh
        .kforge([
            "build",
            "--b4-series",
            &cover2,
            "--b4-mbox",
            "/nonexistent.mbox",
        ])
        .run()
        .code(2);
    assert!(!fresh.workers().exists());
    assert!(!Path::new("/tmp/kforge-b4").exists());
}
