//! A developer's worktree as it is, uncommitted edits included, made buildable: its files
//! become a git tree object through a temporary index (the developer's index, HEAD and
//! files are never touched), wrapped in a commit whose parent is the worktree's HEAD and
//! whose author, committer and dates are fixed, so the same files give the same commit.
//! The commit is pushed into the mirror under `refs/kforge/snapshots/<commit>`, where the
//! slot checks it out like any other commit.

use std::path::{Path, PathBuf};

use super::git::git;
use super::mirror::{Mirror, MirrorError, RefKind, ResolvedRef};

/// The worktree as snapshotted.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The worktree's top directory.
    pub path: PathBuf,
    /// Its branch (`None` on a detached HEAD).
    pub branch: Option<String>,
    /// The commit its HEAD names: what the edits are on top of.
    pub base_commit: String,
    /// The commit kforge made of the files (in the mirror under refs/kforge/snapshots/).
    pub commit: String,
    /// Whether the files differ from the base commit.
    pub local_changes: bool,
    /// The paths that differ from the base commit (added, changed or removed), sorted.
    pub changed_paths: Vec<String>,
}

/// Where a snapshot's commit is kept in the mirror.
pub const SNAPSHOT_REFS: &str = "refs/kforge/snapshots/";

/// The top directory of the git worktree holding `dir`, when it is a Linux tree.
pub fn linux_worktree_at(dir: &Path) -> Option<PathBuf> {
    let top = git(dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .ok()?;
    let top = PathBuf::from(top.trim());
    is_linux_tree(&top).then_some(top)
}

fn is_linux_tree(top: &Path) -> bool {
    let marks = [
        "Kconfig",
        "Makefile",
        "arch",
        "kernel",
        "scripts/setlocalversion",
    ];
    marks.iter().all(|p| top.join(p).exists())
}

/// Snapshots the worktree at `dir` (its top directory is found from there).
pub fn take(dir: &Path) -> Result<Snapshot, MirrorError> {
    let not = |why: String| MirrorError::NotAWorktree {
        path: dir.to_owned(),
        why,
    };
    let top = git(dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .map_err(|_| not("it is not inside a git worktree".into()))?;
    let top = PathBuf::from(top.trim());
    if !is_linux_tree(&top) {
        return Err(not(format!(
            "its git worktree {} is not a Linux source tree",
            top.display()
        )));
    }
    let base = git(&top)
        .args(["rev-parse", "--verify", "HEAD^{commit}"])
        .output()
        .map_err(|_| not("its HEAD names no commit yet".into()))?
        .trim()
        .to_owned();
    let branch = git(&top)
        .args(["symbolic-ref", "--short", "-q", "HEAD"])
        .output()
        .ok()
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty());
    // A copy of the developer's index: `git add -A` then re-reads only files whose stat
    // changed, and the real index stays as it was.
    let git_dir = PathBuf::from(
        git(&top)
            .args(["rev-parse", "--absolute-git-dir"])
            .output()?
            .trim(),
    );
    let index = std::env::temp_dir().join(format!("kforge-index-{}", std::process::id()));
    let _guard = RemoveOnDrop(index.clone());
    if git_dir.join("index").is_file() {
        fs_err::copy(git_dir.join("index"), &index)?;
    }
    let with_index = |args: &[&str]| {
        git(&top)
            .env("GIT_INDEX_FILE", &index)
            .args(args.iter().copied())
            .output()
    };
    // Untracked files git ignores stay out, as a commit would leave them out.
    with_index(&["add", "--all", "--", "."])?;
    let tree = with_index(&["write-tree"])?.trim().to_owned();
    let changed = with_index(&["diff-index", "--cached", "--name-only", "-z", "HEAD", "--"])?;
    let mut changed_paths: Vec<String> = changed
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    changed_paths.sort();
    let commit = git(&top)
        .args(["commit-tree", &tree, "-p", &base, "-m"])
        .arg(format!("kforge: snapshot of a worktree on {base}"))
        .env("GIT_AUTHOR_NAME", "kforge")
        .env("GIT_AUTHOR_EMAIL", "kforge@localhost")
        .env("GIT_AUTHOR_DATE", "@0 +0000")
        .env("GIT_COMMITTER_NAME", "kforge")
        .env("GIT_COMMITTER_EMAIL", "kforge@localhost")
        .env("GIT_COMMITTER_DATE", "@0 +0000")
        .output()?
        .trim()
        .to_owned();
    Ok(Snapshot {
        path: top,
        branch,
        base_commit: base,
        commit,
        local_changes: !changed_paths.is_empty(),
        changed_paths,
    })
}

impl Snapshot {
    /// Brings the snapshot's objects into the mirror (a push from the worktree's
    /// repository: only what the mirror lacks travels) and names the commit there.
    pub fn publish(&self, mirror: &Mirror) -> Result<ResolvedRef, MirrorError> {
        let target = format!("{}:{SNAPSHOT_REFS}{}", self.commit, self.commit);
        git(&self.path)
            .args([
                "push",
                "--quiet",
                "--no-verify",
                "--force",
                "--end-of-options",
            ])
            .arg(&mirror.path)
            .arg(&target)
            .output()
            .map_err(|e| MirrorError::Unfetchable {
                path: self.path.clone(),
                mirror: mirror.path.clone(),
                why: e.to_string(),
            })?;
        Ok(ResolvedRef {
            name: self.branch.clone().unwrap_or_else(|| "HEAD".into()),
            kind: RefKind::Worktree,
            commit: self.commit.clone(),
        })
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
