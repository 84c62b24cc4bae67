//! Mailed series through real b4 and git am: series made by the test with
//! `git format-patch --cover-letter -v2/-v3` from the fixture mirror, as local mbox threads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    IdentityContract, ManifestContract, TestContext, assert_release_format, bzimage_version_string,
};

const COVER: &str = "don't build bios/contexts over multiple iomaps";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Series Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.org")
        .env("GIT_COMMITTER_NAME", "Series Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.org")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A scratch clone of the fixture to write series in.
fn workspace(ctx: &TestContext) -> PathBuf {
    let dir = ctx.dir.path().join("dev");
    let out = Command::new("git")
        .args(["clone", "--quiet", "--shared", "--no-checkout"])
        .arg(&ctx.mirror)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
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
    git(dev, &["checkout", "--quiet", "--force", "-B", name, base]);
    for (file, line) in edits {
        let p = dev.join(file);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(&p, text).unwrap();
        git(
            dev,
            &["commit", "--quiet", "-am", &format!("{file}: {line}")],
        );
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
        git(dev, &["config", &format!("branch.{name}.description"), c]);
        args.push("--cover-letter".into());
        args.push("--cover-from-description=subject".into());
    }
    args.push(format!("{base}..{name}"));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    git(dev, &a);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut mbox = String::new();
    let mut ids = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
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
    std::fs::write(&path, mbox).unwrap();
    let first = ids.remove(0);
    (path, first, ids)
}

fn id_of(ctx: &TestContext, extra: &[&str]) -> IdentityContract {
    let mut a = vec!["identity", "v6.12.117", "--preset", "tiny_guest_defconfig"];
    a.extend_from_slice(extra);
    ctx.run(&a).ok().json()
}

#[test]
fn a_series_is_applied_published_labelled_and_built() {
    let ctx = TestContext::new("series-build");
    let dev = workspace(&ctx);
    let edits = [
        ("init/version.c", "/* series: patch one */"),
        ("init/main.c", "/* series: patch two */"),
    ];
    let (mbox, cover, _) = series(&dev, "iomap-v3", "v6.12.117", 3, &edits, Some(COVER));
    let m: ManifestContract = ctx
        .run(&[
            "build",
            "v6.12.117",
            "--preset",
            "tiny_guest_defconfig",
            "--b4-series",
            &format!("<{cover}>"),
            "--b4-mbox",
            mbox.to_str().unwrap(),
        ])
        .ok()
        .json();
    // The spec's example label, v3 kept, the digest whole.
    assert_eq!(m.label, "don-t-build-bios-contexts-over-multiple-v3");
    assert_release_format(
        &m.uts_release,
        "6.12.117",
        "don-t-build-bios-contexts-over-multiple-v3",
    );
    let s = m.series.clone().expect("series in manifest");
    assert_eq!(s["message_id"], cover.as_str());
    assert_eq!(s["from_cover"], true);
    assert_eq!(s["subject"], format!("[PATCH v3 0/2] {COVER}"));
    assert_eq!(s["patches"].as_array().unwrap().len(), 2);
    assert_eq!(
        s["branch"],
        "b4/don-t-build-bios-contexts-over-multiple-iomaps-v3"
    );
    // The manifest's commit is the applied HEAD, published in the mirror for review, and
    // holds both patches on top of the tag.
    let mirror = ctx.mirror.clone();
    let published = git(
        &mirror,
        &[
            "rev-parse",
            "refs/heads/b4/don-t-build-bios-contexts-over-multiple-iomaps-v3",
        ],
    );
    assert_eq!(m.commit, published);
    assert_eq!(
        git(&mirror, &["rev-parse", &format!("{published}~2")]),
        git(&mirror, &["rev-parse", "v6.12.117^{commit}"])
    );
    assert_eq!(
        git(&mirror, &["show", "-s", "--format=%cn <%ce>", &published]),
        "kforge <kforge@localhost>"
    );
    let src = ctx.slot(0);
    assert!(
        std::fs::read_to_string(src.join("init/main.c"))
            .unwrap()
            .contains("series: patch two")
    );
    // Built for real: the image reports the series' identity.
    let banner = bzimage_version_string(Path::new(m.bz_image.as_ref().unwrap()));
    assert!(banner.starts_with(&m.uts_release), "{banner}");
    let release = std::fs::read_to_string(src.join("build/include/config/kernel.release")).unwrap();
    assert_eq!(release.trim(), m.uts_release);
    assert!(!m.uts_release.ends_with('+'));
}

#[test]
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
    let (mbox2, cover2, _) = series(&dev, "s-v2", "v6.12.117", 2, &v2_edits, Some(COVER));
    let (mbox3, cover3, _) = series(&dev, "s-v3", "v6.12.117", 3, &v3_edits, Some(COVER));
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
    assert_eq!(v2_again.inputs["tree"], v2.inputs["tree"]);
    // Another revision differs in label and digest.
    let v3 = run(args(&cover3, &mbox3));
    assert_eq!(v3.label, "don-t-build-bios-contexts-over-multiple-v3");
    assert_ne!(v3.digest, v2.digest);
    // A lore URL names the same series.
    let url = format!("https://lore.kernel.org/linux-fsdevel/{cover3}/");
    assert_eq!(run(args(&url, &mbox3)).digest, v3.digest);
    // No cover letter (v1): the first patch's subject, and no revision invented.
    let (mbox1, first, _) = series(&dev, "s-v1", "v6.12.117", 1, &v2_edits[..1], None);
    let v1 = run(args(&first, &mbox1));
    assert_eq!(v1.label, "init-version-c-series-patch-one");
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
    let mut bad_base_edit = std::fs::read_to_string(&bad_mbox).unwrap();
    bad_base_edit = bad_base_edit.replace(
        "/* kforge test branch: a comment only */",
        "/* a context that is not in v6.12.117 */",
    );
    std::fs::write(&bad_mbox, bad_base_edit).unwrap();
    let r = ctx.run(&[
        "identity",
        "v6.12.117",
        "--preset",
        "tiny_guest_defconfig",
        "--b4-series",
        &bad_cover,
        "--b4-mbox",
        bad_mbox.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("does not apply") && r.stderr.contains("patch 0001"),
        "{}",
        r.stderr
    );
    let src = ctx.slot(0);
    assert_eq!(
        git(&src, &["rev-parse", "HEAD"]),
        git(&src, &["rev-parse", "v6.12.117^{commit}"])
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
        let r = fresh.run(&[
            "build",
            &format!("--b4-series={bad}"),
            "--b4-mbox",
            mbox2.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("is refused"), "{bad}: {}", r.stderr);
    }
    let r = fresh.run(&[
        "build",
        "--b4-series",
        &cover2,
        "--b4-mbox",
        "/nonexistent.mbox",
    ]);
    assert_eq!(r.code, 2);
    assert!(!fresh.workers().exists());
    assert!(!Path::new("/tmp/kforge-b4").exists());
}
