//! deploy_worktree: only when `worktree_group` is set, lay a git worktree of the bare mirror
//! at the built commit (series included) at `<deploy_dir>/<group>/<name>`, for a human to
//! open in an editor.
//!
//! A developer worktree holds someone's work, so kforge only ever moves one that is exactly
//! as it left it: detached at the commit it deployed, with nothing modified or untracked.
//! Anything else stops the run with the reason, and the worktree is not touched.

use std::path::{Path, PathBuf};

use super::KernelRun;
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::fsutil::FileLock;
use crate::slot::git::git;

/// The file in a worktree's git dir that records the commit kforge deployed there.
const DEPLOYED: &str = "kforge-deployed";

pub struct DeployWorktree;

/// Where the request's developer worktree goes.
pub fn target(ctx: &KernelRun) -> Option<PathBuf> {
    let req = &ctx.plan.request;
    let group = req.worktree_group.as_ref()?;
    let root = req
        .deploy_dir
        .clone()
        .unwrap_or_else(|| ctx.plan.dirs.system_dir.join("worktrees"));
    let name = req
        .deploy_name
        .clone()
        .unwrap_or_else(|| ctx.configured().label.clone());
    Some(root.join(group).join(name))
}

impl Step<KernelRun> for DeployWorktree {
    fn name(&self) -> &'static str {
        "deploy_worktree"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let Some(path) = target(ctx) else {
            return Ok(Outcome::Skipped("no worktree_group requested".into()));
        };
        let commit = ctx.head_commit().to_owned();
        let mirror = ctx.plan.mirror.path.clone();
        let group_dir = path.parent().expect("group/name").to_owned();
        fs_err::create_dir_all(&group_dir)?;
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        // Two runs deploying the same name take turns.
        let _lock = FileLock::acquire(&group_dir.join(format!(".{name}.kforge-lock")))?;
        let message = if std::fs::symlink_metadata(&path).is_ok() {
            move_existing(&path, &mirror, &commit, ctx.plan.request.deploy_replace)?
        } else {
            // A worktree deleted by hand leaves a registration behind that would block `add`.
            git(&mirror).args(["worktree", "prune"]).output()?;
            git(&mirror)
                .args(["worktree", "add", "--detach", "--quiet"])
                .arg(&path)
                .arg(&commit)
                .output()?;
            format!("laid {} at {}", path.display(), short(&commit))
        };
        let git_dir = git(&path)
            .args(["rev-parse", "--absolute-git-dir"])
            .output()?;
        crate::fsutil::write_atomic(
            &Path::new(git_dir.trim()).join(DEPLOYED),
            format!("{commit}\n").as_bytes(),
        )?;
        reporter.event(&Event::Info {
            step: self.name(),
            message: &message,
        });
        ctx.state.dev_worktree = Some(path);
        Ok(Outcome::Ran)
    }
}

fn short(commit: &str) -> &str {
    &commit[..12.min(commit.len())]
}

/// An existing path: leave it, move it, or refuse, and say which.
fn move_existing(path: &Path, mirror: &Path, commit: &str, replace: bool) -> Result<String, Error> {
    let refuse = |why: String| {
        Err(crate::error::PlanError::WorktreeInTheWay {
            path: path.to_owned(),
            why,
        }
        .into())
    };
    if !path.join(".git").is_file() {
        return refuse(
            "exists and is not a git worktree; choose another deploy_name or deploy_dir".into(),
        );
    }
    let common = git(path)
        .args(["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .output()?;
    let same_repo = match (
        std::fs::canonicalize(common.trim()),
        std::fs::canonicalize(mirror),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_repo {
        return refuse(format!(
            "is a worktree of {}, not of the mirror {}",
            common.trim(),
            mirror.display()
        ));
    }
    let head = git(path)
        .args(["rev-parse", "HEAD"])
        .output()?
        .trim()
        .to_owned();
    let branch = git(path)
        .args(["symbolic-ref", "--quiet", "--short", "HEAD"])
        .output()
        .ok()
        .map(|b| b.trim().to_owned());
    if head == commit && branch.is_none() {
        // Already this build's commit: whatever is being edited there stays as it is.
        return Ok(format!(
            "{} is already at {}; kept as it is",
            path.display(),
            short(commit)
        ));
    }
    if !replace {
        return refuse(format!(
            "it is at {}, this build is {}; set deploy_replace to move it, or choose another deploy_name",
            short(&head),
            short(commit)
        ));
    }
    let status = git(path)
        .args(["status", "--porcelain=v1", "--untracked-files=normal"])
        .output()?;
    let changed: Vec<&str> = status.lines().filter(|l| !l.trim().is_empty()).collect();
    if !changed.is_empty() {
        let shown: Vec<&str> = changed.iter().take(5).copied().collect();
        return refuse(format!(
            "it has uncommitted work ({} path(s): {}{}); commit or stash it first",
            changed.len(),
            shown.join(", "),
            if changed.len() > 5 { ", ..." } else { "" }
        ));
    }
    if let Some(b) = branch {
        return refuse(format!(
            "it is on branch `{b}`, which kforge did not create; check out the commit you want yourself"
        ));
    }
    let git_dir = git(path)
        .args(["rev-parse", "--absolute-git-dir"])
        .output()?;
    let deployed = std::fs::read_to_string(Path::new(git_dir.trim()).join(DEPLOYED))
        .map(|s| s.trim().to_owned())
        .ok();
    match deployed {
        Some(d) if d == head => {}
        Some(d) => {
            return refuse(format!(
                "its HEAD moved from {} (deployed by kforge) to {}: commits of yours would be lost",
                short(&d),
                short(&head)
            ));
        }
        None => return refuse("kforge did not deploy it".into()),
    }
    git(path)
        .args(["checkout", "--quiet", "--detach"])
        .arg(commit)
        .output()?;
    Ok(format!(
        "moved {} from {} to {}",
        path.display(),
        short(&head),
        short(commit)
    ))
}
