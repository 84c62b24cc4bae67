//! The bare mirror: the only place sources come from. Its URL is fixed here, never a build
//! input. Made by cloning (`mirror init`) or by importing release tarballs, for machines
//! that cannot reach kernel.org.

use std::path::{Path, PathBuf};

use super::git::git;
use crate::process::{Cmd, RunError};

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(
        "no mirror at {0}: create one with `kforge mirror init --from URL_OR_PATH` or `kforge mirror import-tarball FILE --tag TAG`, or point --mirror / KFORGE_MIRROR at one"
    )]
    Missing(PathBuf),
    #[error("{0} is not a bare git repository")]
    NotBare(PathBuf),
    #[error("{0} already exists; remove it first or use another --mirror")]
    Exists(PathBuf),
    #[error(
        "git_ref `{name}` is not in the mirror {mirror} (tried tag `refs/tags/{name}`, branch `mirror/{name}` and the literal ref){hint}"
    )]
    UnknownRef {
        name: String,
        mirror: PathBuf,
        hint: String,
    },
    #[error("the mirror {0} has no release tag (v*); name a git_ref")]
    NoTags(PathBuf),
    #[error("tag `{tag}` already names another commit ({existing}); pick another --tag")]
    TagClash { tag: String, existing: String },
    #[error("{0}")]
    Tarball(String),
    #[error("{} cannot be built as a worktree: {why}", .path.display())]
    NotAWorktree { path: PathBuf, why: String },
    #[error("the worktree {} is not of the mirror {}, and its commits could not be brought into it: {why}", .path.display(), .mirror.display())]
    Unfetchable {
        path: PathBuf,
        mirror: PathBuf,
        why: String,
    },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How a ref resolved, which matters for the label (a tag builds as `vanilla`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    Tag,
    Branch,
    Commit,
    /// A developer's worktree as it was, uncommitted edits included (a snapshot commit).
    Worktree,
}

#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ResolvedRef {
    /// What the user asked for.
    pub name: String,
    pub kind: RefKind,
    /// The commit it names.
    pub commit: String,
}

#[derive(Debug, Clone)]
pub struct Mirror {
    pub path: PathBuf,
}

impl Mirror {
    /// Opens an existing bare mirror.
    pub fn open(path: &Path) -> Result<Self, MirrorError> {
        if !path.exists() {
            return Err(MirrorError::Missing(path.to_owned()));
        }
        let bare = git(path)
            .args(["rev-parse", "--is-bare-repository"])
            .output()
            .is_ok_and(|o| o.trim() == "true");
        if !bare {
            return Err(MirrorError::NotBare(path.to_owned()));
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// `kforge mirror init --from`: a bare mirror clone of a URL or a local repository,
    /// made beside its destination and renamed into place, so a failed clone leaves nothing.
    pub fn init_from(path: &Path, source: &str) -> Result<Self, MirrorError> {
        if source.starts_with('-') {
            return Err(MirrorError::Tarball(format!(
                "--from `{source}` looks like an option"
            )));
        }
        if path.exists() {
            return Err(MirrorError::Exists(path.to_owned()));
        }
        let parent = path.parent().unwrap_or(Path::new("."));
        fs_err::create_dir_all(parent)?;
        let tmp = parent.join(format!(
            ".{}.partial.{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let _ = fs_err::remove_dir_all(&tmp);
        let r = Cmd::new("git")
            .args(["clone", "--quiet", "--mirror", "--"])
            .arg(source)
            .arg(&tmp)
            .output();
        if let Err(e) = r {
            let _ = fs_err::remove_dir_all(&tmp);
            return Err(e.into());
        }
        fs_err::rename(&tmp, path)?;
        Self::open(path)
    }

    /// Creates an empty bare mirror if none exists.
    pub fn open_or_create(path: &Path) -> Result<Self, MirrorError> {
        if !path.exists() {
            fs_err::create_dir_all(path)?;
            Cmd::new("git")
                .args(["init", "--quiet", "--bare"])
                .arg(path)
                .output()?;
        }
        Self::open(path)
    }

    fn commit_of(&self, rev: &str) -> Result<Option<String>, MirrorError> {
        let out = git(&self.path)
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"))
            .output();
        match out {
            Ok(o) => Ok(Some(o.trim().to_owned())),
            Err(RunError::Failed(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves `name` as a tag, then a branch (`mirror/<name>` in a slot), then a literal
    /// ref or object id, as the spec orders it.
    pub fn resolve(&self, name: &str) -> Result<ResolvedRef, MirrorError> {
        let branch = name.strip_prefix("mirror/").unwrap_or(name);
        let candidates = [
            (format!("refs/tags/{name}"), RefKind::Tag),
            (format!("refs/heads/{branch}"), RefKind::Branch),
            (name.to_owned(), RefKind::Commit),
        ];
        for (rev, kind) in candidates {
            if let Some(commit) = self.commit_of(&rev)? {
                return Ok(ResolvedRef {
                    name: name.to_owned(),
                    kind,
                    commit,
                });
            }
        }
        let tags = self.tags().unwrap_or_default();
        let hint = if tags.is_empty() {
            String::new()
        } else {
            let shown: Vec<_> = tags.iter().take(8).map(String::as_str).collect();
            format!("; tags include: {}", shown.join(", "))
        };
        Err(MirrorError::UnknownRef {
            name: name.to_owned(),
            mirror: self.path.clone(),
            hint,
        })
    }

    /// Release tags (`v*`), newest version first.
    pub fn tags(&self) -> Result<Vec<String>, MirrorError> {
        let out = git(&self.path)
            .args(["tag", "--list", "--sort=-v:refname", "v*"])
            .output()?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The default `git_ref`: the newest release tag in the mirror.
    pub fn newest_tag(&self) -> Result<String, MirrorError> {
        self.tags()?
            .into_iter()
            .next()
            .ok_or_else(|| MirrorError::NoTags(self.path.clone()))
    }

    /// Names directly under `dir` in `commit`'s tree (used to check config goals before
    /// anything is checked out).
    pub fn list_dir(&self, commit: &str, dir: &str) -> Result<Vec<String>, MirrorError> {
        let out = git(&self.path)
            .args(["ls-tree", "--name-only", "--end-of-options"])
            .arg(format!("{commit}:{dir}"))
            .output();
        match out {
            Ok(o) => Ok(o.lines().map(str::to_owned).collect()),
            Err(RunError::Failed(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// The tree object of `commit` (what an identity keys on), without a checkout.
    pub fn tree_of(&self, commit: &str) -> Result<String, MirrorError> {
        Ok(git(&self.path)
            .args(["rev-parse", "--verify", "--end-of-options"])
            .arg(format!("{commit}^{{tree}}"))
            .output()?
            .trim()
            .to_owned())
    }

    /// `commit`'s committer date, in UTC, as `date` prints it (Kbuild's timestamp format):
    /// `Thu Jan  1 00:00:00 UTC 1970`.
    pub fn commit_date_utc(&self, commit: &str) -> Result<String, MirrorError> {
        Ok(git(&self.path)
            .env("TZ", "UTC")
            .args([
                "show",
                "--no-patch",
                "--date=format-local:%a %b %e %H:%M:%S UTC %Y",
                "--format=%cd",
                "--end-of-options",
                commit,
            ])
            .output()?
            .trim()
            .to_owned())
    }

    /// Reads one file of `commit`'s tree.
    pub fn read_file(&self, commit: &str, path: &str) -> Result<String, MirrorError> {
        Ok(git(&self.path)
            .args(["cat-file", "blob", "--end-of-options"])
            .arg(format!("{commit}:{path}"))
            .output()?)
    }

    /// Publishes `commit` as `refs/heads/<branch>` (used for series and tarball imports).
    pub fn set_branch(&self, branch: &str, commit: &str) -> Result<(), MirrorError> {
        git(&self.path)
            .args(["update-ref", "--end-of-options"])
            .arg(format!("refs/heads/{branch}"))
            .arg(commit)
            .output()?;
        Ok(())
    }
}

/// `kforge mirror init` (without `branches`) and `kforge mirror show`.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Shown {
    pub mirror: PathBuf,
    /// Release tags, newest first.
    pub tags: Vec<String>,
    /// The mirror's branches (`kforge mirror show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
}

/// What `import-tarball` produced.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Imported {
    pub tag: String,
    pub commit: String,
    pub tree: String,
    pub branch: Option<String>,
}

/// Cuts the Debian block at the end of a packaged kernel's `.gitignore` (`/*` then
/// `!/debian/`), which would otherwise ignore the whole tree.
pub fn strip_debian_gitignore(text: &str) -> Option<String> {
    let idx = text
        .lines()
        .position(|l| l.starts_with("# Debian packaging"))?;
    let kept: Vec<&str> = text.lines().take(idx).collect();
    let mut out = kept.join("\n");
    while out.ends_with("\n#") || out.ends_with('\n') {
        out = out.trim_end_matches('#').trim_end().to_owned();
    }
    out.push('\n');
    Some(out)
}

impl Mirror {
    /// Turns a release tarball into one commit with an annotated tag (and optionally a
    /// branch). Author, committer and tagger dates are the tarball's top-level Makefile
    /// mtime, so importing the same tarball twice gives the same objects.
    pub fn import_tarball(
        &self,
        tarball: &Path,
        tag: &str,
        branch: Option<&str>,
        on_progress: &mut dyn FnMut(&str),
    ) -> Result<Imported, MirrorError> {
        if !tarball.is_file() {
            return Err(MirrorError::Tarball(format!(
                "{} is not a file",
                tarball.display()
            )));
        }
        let scratch = self.path.join("kforge-import");
        let _ = fs_err::remove_dir_all(&scratch);
        fs_err::create_dir_all(&scratch)?;
        let result = self.import_into(tarball, tag, branch, &scratch, on_progress);
        let _ = fs_err::remove_dir_all(&scratch);
        result
    }

    fn import_into(
        &self,
        tarball: &Path,
        tag: &str,
        branch: Option<&str>,
        scratch: &Path,
        on_progress: &mut dyn FnMut(&str),
    ) -> Result<Imported, MirrorError> {
        let unpack = scratch.join("src");
        fs_err::create_dir_all(&unpack)?;
        on_progress(&format!("unpacking {}", tarball.display()));
        Cmd::new("tar")
            .args(["--extract", "--no-same-owner", "--file"])
            .arg(tarball)
            .arg("--directory")
            .arg(&unpack)
            .output()?;
        let entries: Vec<_> = fs_err::read_dir(&unpack)?.collect::<Result<_, _>>()?;
        let root = match entries.as_slice() {
            [only] if only.file_type()?.is_dir() => only.path(),
            _ => unpack.clone(),
        };
        let gitignore = root.join(".gitignore");
        if let Ok(text) = fs_err::read_to_string(&gitignore)
            && let Some(fixed) = strip_debian_gitignore(&text)
        {
            on_progress("cutting the Debian packaging block from .gitignore");
            fs_err::write(&gitignore, fixed)?;
        }
        let date = fs_err::metadata(root.join("Makefile"))
            .or_else(|_| fs_err::metadata(&root))?
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = format!("@{date} +0000");
        let index = scratch.join("index");
        let with_tree = |c: Cmd| {
            c.env("GIT_INDEX_FILE", &index)
                .env("GIT_AUTHOR_NAME", "kforge import")
                .env("GIT_AUTHOR_EMAIL", "kforge@localhost")
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_NAME", "kforge import")
                .env("GIT_COMMITTER_EMAIL", "kforge@localhost")
                .env("GIT_COMMITTER_DATE", &date)
        };
        on_progress("adding files to the mirror (this takes about a minute for a kernel)");
        with_tree(
            Cmd::new("git")
                .arg("--git-dir")
                .arg(&self.path)
                .arg("--work-tree")
                .arg(&root)
                .args(["-c", "core.autocrlf=false", "add", "--all", "--force", "."]),
        )
        .cwd(&root)
        .output()?;
        let tree = with_tree(git(&self.path).arg("write-tree")).output()?;
        let tree = tree.trim().to_owned();
        let name = tarball
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let commit = with_tree(git(&self.path).args([
            "commit-tree",
            &tree,
            "-m",
            &format!("Import {name} as {tag}"),
        ]))
        .output()?;
        let commit = commit.trim().to_owned();
        if let Some(existing) = self.commit_of(&format!("refs/tags/{tag}"))? {
            if existing != commit {
                return Err(MirrorError::TagClash {
                    tag: tag.to_owned(),
                    existing,
                });
            }
        } else {
            with_tree(git(&self.path).args(["tag", "--annotate", "--message"]))
                .arg(format!("{tag} (imported from {name})"))
                .arg("--end-of-options")
                .arg(tag)
                .arg(&commit)
                .output()?;
        }
        if let Some(b) = branch {
            self.set_branch(b, &commit)?;
        }
        on_progress("packing the mirror");
        git(&self.path)
            .args(["repack", "-a", "-d", "-q", "--window=0"])
            .output()?;
        Ok(Imported {
            tag: tag.to_owned(),
            commit,
            tree,
            branch: branch.map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_block_is_cut() {
        let text = "*.o\n/vmlinux\n\n#\n# Debian packaging: ignore everything\n#\n/*\n!/debian/\n";
        assert_eq!(strip_debian_gitignore(text).unwrap(), "*.o\n/vmlinux\n");
        assert_eq!(strip_debian_gitignore("*.o\n"), None);
    }
}
