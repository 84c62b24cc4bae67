//! Mailed patch series: a message-id (or lore URL) and, offline, a local copy of the thread.
//! b4 selects the series and revision and writes an am-ready mbox into a directory kforge
//! owns; kforge applies it with `git am` (committer pinned, so a re-apply is
//! deterministic), and publishes the result to the mirror as `refs/heads/b4/<slug>`.
//!
//! Generic over the project (kernel and QEMU); it knows b4, git and mail, not make.

pub mod mail;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::process::{Cmd, RunError};
use crate::slot::git::git;

/// Committer of applied series: fixed, with the author date as the commit date.
pub const COMMITTER_NAME: &str = "kforge";
pub const COMMITTER_EMAIL: &str = "kforge@localhost";

#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("b4_series `{0}` is refused: {1}")]
    BadMessageId(String, String),
    #[error("b4_mbox {0} is not a readable mbox file or maildir directory")]
    BadMbox(PathBuf),
    #[error("b4 found no patches for <{msgid}>{detail}")]
    NoPatches { msgid: String, detail: String },
    #[error(
        "the series does not apply on {base}: patch {failed} failed; the slot is back at {base}\n{output}"
    )]
    DoesNotApply {
        base: String,
        failed: String,
        output: String,
    },
    #[error("the series applied, but publishing it to the mirror as {branch} failed: {source}")]
    Publish {
        branch: String,
        #[source]
        source: RunError,
    },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Characters a message-id may hold here: RFC 5322 `dot-atom` text minus everything a shell,
/// a URL or a path could give meaning to.
fn msgid_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '.' | '_' | '+' | '=' | '-' | '@' | '~' | '!' | '#' | '^' | '{' | '}'
        )
}

/// Extracts and checks the message-id of a `b4_series` value: `<id@host>`, `id@host`, or a
/// lore-style URL (`https://lore.kernel.org/<list>/<id>/...`, `.../r/<id>`). Anything else
/// (shell metacharacters, `..`, `%`-escapes, an option-shaped value) is refused before b4
/// runs.
pub fn parse_message_id(input: &str) -> Result<String, SeriesError> {
    let bad = |why: &str| Err(SeriesError::BadMessageId(input.to_owned(), why.to_owned()));
    let s = input.trim();
    if s.is_empty() {
        return bad("it is empty");
    }
    if s.len() > 512 {
        return bad("it is too long");
    }
    let id = if let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    {
        if rest.contains('%') {
            return bad("URL escapes (%XX) are not accepted; give the message-id itself");
        }
        let path = rest.split(['?', '#']).next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // host, list (or "r"), message-id, then optional T/, t.mbox.gz, ...
        match parts.as_slice() {
            [_host, _list, id, ..] => (*id).to_owned(),
            _ => return bad("not a lore-style URL (https://host/<list>/<message-id>/)"),
        }
    } else {
        let inner = s
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .unwrap_or(s);
        inner.to_owned()
    };
    if id.starts_with('-') {
        return bad("it starts with `-`, like an option");
    }
    if id.contains("..") {
        return bad("it contains `..`");
    }
    if let Some(c) = id.chars().find(|c| !msgid_char(*c)) {
        return bad(&format!(
            "the character {c:?} is not accepted in a message-id"
        ));
    }
    if id.matches('@').count() != 1 || id.starts_with('@') || id.ends_with('@') {
        return bad("a message-id has the form <left@right>");
    }
    Ok(id)
}

/// Checks a local thread copy: an existing mbox file or maildir directory, made absolute
/// (so b4 can never read it as an option).
pub fn check_mbox(path: &Path) -> Result<PathBuf, SeriesError> {
    let abs = crate::dirs::absolute(path);
    let ok =
        abs.is_file() || (abs.is_dir() && abs.join("cur").is_dir() || abs.join("new").is_dir());
    if ok {
        Ok(abs)
    } else {
        Err(SeriesError::BadMbox(path.to_owned()))
    }
}

/// What was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Applied {
    pub message_id: String,
    /// The cover letter's subject (or the first patch's, without a cover).
    pub subject: String,
    pub from_cover: bool,
    /// Subjects of the applied patches, in order.
    pub patches: Vec<String>,
    /// The commit the series was applied on.
    pub base: String,
    /// HEAD after `git am`.
    pub head: String,
    /// `b4/<slug>` in the mirror.
    pub branch: Option<String>,
}

/// `b4` run in `cwd` with a HOME, cache and git identity of kforge's own (b4 reads
/// `user.name`/`user.email` from git config and fails without them).
fn b4(cwd: &Path, workdir: &Path) -> Cmd {
    Cmd::new("b4")
        .cwd(cwd)
        .env("HOME", workdir.join("home"))
        .env("XDG_CACHE_HOME", workdir.join("cache"))
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "user.name")
        .env("GIT_CONFIG_VALUE_0", COMMITTER_NAME)
        .env("GIT_CONFIG_KEY_1", "user.email")
        .env("GIT_CONFIG_VALUE_1", COMMITTER_EMAIL)
}

/// b4 am's output: the am-ready mbox (and the cover, when b4 saved one).
fn b4_am(
    workdir: &Path,
    cwd: &Path,
    msgid: &str,
    mbox: Option<&Path>,
) -> Result<PathBuf, SeriesError> {
    if workdir.exists() {
        fs_err::remove_dir_all(workdir)?;
    }
    fs_err::create_dir_all(workdir)?;
    let mut cmd = b4(cwd, workdir)
        .arg("am")
        .args(["--no-cache", "--outdir"])
        .arg(workdir)
        .args(["--mbox-name", "series"]);
    if let Some(m) = mbox {
        cmd = cmd.arg("--use-local-mbox").arg(m);
    }
    let out = cmd.arg(format!("<{msgid}>")).output();
    let am_mbox = workdir.join("series.mbx");
    match out {
        Ok(_) if am_mbox.is_file() && fs_err::metadata(&am_mbox)?.len() > 0 => Ok(am_mbox),
        Ok(text) => Err(SeriesError::NoPatches {
            msgid: msgid.to_owned(),
            detail: format!(": {}", text.trim()),
        }),
        Err(RunError::Failed(p)) => Err(SeriesError::NoPatches {
            msgid: msgid.to_owned(),
            detail: format!(" ({}): {}", p.status, p.tail.join("\n")),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The cover subject: the thread root's own subject, read from the local thread copy or
/// fetched on its own (`b4 mbox --single-message`), since the am mbox lacks the cover.
fn cover_subject(workdir: &Path, cwd: &Path, msgid: &str, mbox: Option<&Path>) -> Option<String> {
    if let Some(m) = mbox {
        return mail::find_subject(m, msgid);
    }
    let dir = workdir.join("cover");
    b4(cwd, workdir)
        .args(["mbox", "--single-message", "--outdir"])
        .arg(&dir)
        .arg(format!("<{msgid}>"))
        .output()
        .ok()?;
    let file = fs_err::read_dir(&dir).ok()?.find_map(Result::ok)?.path();
    mail::find_subject(&file, msgid)
}

/// Downloads (or reads) the series, applies it on the slot's HEAD, and on failure puts the
/// slot back at the base. The worktree must be clean and at `base`.
pub fn apply(
    worktree: &Path,
    workdir: &Path,
    msgid: &str,
    mbox: Option<&Path>,
    base: &str,
) -> Result<Applied, SeriesError> {
    let am_mbox = b4_am(workdir, worktree, msgid, mbox)?;
    let patches = mail::subjects(&mail::read_messages(&fs_err::read_to_string(&am_mbox)?));
    let (subject, from_cover) = match cover_subject(workdir, worktree, msgid, mbox) {
        Some(s) if !s.is_empty() && !is_patch_subject_of(&s, &patches) => (s, true),
        _ => (patches.first().cloned().unwrap_or_default(), false),
    };
    let am = git(worktree)
        .env("GIT_COMMITTER_NAME", COMMITTER_NAME)
        .env("GIT_COMMITTER_EMAIL", COMMITTER_EMAIL)
        .args([
            "am",
            "--quiet",
            "--committer-date-is-author-date",
            "--no-3way",
            "--keep-cr",
        ])
        .arg(&am_mbox)
        .output();
    if let Err(e) = am {
        let output = match &e {
            RunError::Failed(p) => p.tail.join("\n"),
            other => other.to_string(),
        };
        // Which patch stopped `git am`: its number and subject, before --abort removes them.
        let state = worktree.join(".git/rebase-apply");
        let number = fs_err::read_to_string(state.join("next")).unwrap_or_default();
        let subject = fs_err::read_to_string(state.join("final-commit")).unwrap_or_default();
        let failed = format!(
            "{:0>4} ({})",
            number.trim(),
            subject.lines().next().unwrap_or("?").trim()
        );
        let _ = git(worktree).args(["am", "--abort"]).output();
        // `git am --abort` keeps its state when HEAD was detached: leave nothing behind.
        if state.exists() {
            fs_err::remove_dir_all(&state)?;
        }
        git(worktree)
            .args([
                "checkout",
                "--quiet",
                "--force",
                "--detach",
                "--end-of-options",
                base,
            ])
            .output()?;
        git(worktree)
            .args(["clean", "-ffdxq", "-e", "/build/", "-e", "/destdir/"])
            .output()?;
        return Err(SeriesError::DoesNotApply {
            base: base.to_owned(),
            failed,
            output,
        });
    }
    let head = git(worktree)
        .args(["rev-parse", "HEAD"])
        .output()?
        .trim()
        .to_owned();
    Ok(Applied {
        message_id: msgid.to_owned(),
        subject: mail::strip_reply(&subject),
        from_cover,
        patches,
        base: base.to_owned(),
        head,
        branch: None,
    })
}

/// True when `subject` is one of the patches' own subjects (the message-id named a patch,
/// not a cover letter).
fn is_patch_subject_of(subject: &str, patches: &[String]) -> bool {
    let (title, _) = crate::identity::parse_revision(subject);
    patches
        .iter()
        .any(|p| crate::identity::parse_revision(p).0 == title)
}

/// What a flow's prepare_worktree does with a series: applies it on the slot's worktree at
/// `base`, publishes its HEAD to the mirror as `b4/<slug of its subject>`, and says so through
/// `info`. The returned record names that branch.
pub fn apply_and_publish(
    slot: &crate::slot::Slot,
    mirror: &Path,
    (msgid, mbox): (&str, Option<&Path>),
    base: &str,
    info: &mut dyn FnMut(&str),
) -> Result<Applied, SeriesError> {
    let mut applied = apply(&slot.src, &slot.state.join("b4"), msgid, mbox, base)?;
    let (label, suffix) = crate::identity::infer_label(&crate::identity::LabelSource::Series {
        subject: &applied.subject,
    });
    let branch = publish(
        &slot.src,
        mirror,
        &format!("{label}{suffix}"),
        &applied.head,
    )?;
    info(&format!(
        "applied {} patch(es) of \"{}\" on {}; published as {branch}",
        applied.patches.len(),
        applied.subject,
        &base[..12.min(base.len())]
    ));
    applied.branch = Some(branch);
    Ok(applied)
}

/// Publishes the applied HEAD to the mirror as `refs/heads/b4/<slug>` for review.
pub fn publish(
    worktree: &Path,
    mirror: &Path,
    slug: &str,
    head: &str,
) -> Result<String, SeriesError> {
    let branch = format!("b4/{slug}");
    match git(worktree)
        .args(["push", "--quiet", "--force", "--no-verify"])
        .arg(mirror)
        .arg(format!("{head}:refs/heads/{branch}"))
        .output()
    {
        Ok(_) => Ok(branch),
        Err(source) => Err(SeriesError::Publish { branch, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids() {
        for (input, want) in [
            (
                "<20240101.1234-1-a@kernel.org>",
                "20240101.1234-1-a@kernel.org",
            ),
            (
                "cover.1700000000.git.me@example.com",
                "cover.1700000000.git.me@example.com",
            ),
            (
                "CAHk-=wgXyz+abc@mail.gmail.com",
                "CAHk-=wgXyz+abc@mail.gmail.com",
            ),
            (
                "https://lore.kernel.org/linux-fsdevel/20240101.1-a@x.org/",
                "20240101.1-a@x.org",
            ),
            (
                "https://lore.kernel.org/r/20240101.1-a@x.org",
                "20240101.1-a@x.org",
            ),
            (
                "https://lore.kernel.org/all/20240101.1-a@x.org/T/#t",
                "20240101.1-a@x.org",
            ),
        ] {
            assert_eq!(parse_message_id(input).unwrap(), want, "{input}");
        }
        for bad in [
            "",
            "--upload-pack=x@y",
            "-x@y",
            "a;rm -rf /@x",
            "$(id)@x",
            "`id`@x",
            "a b@x",
            "a|b@x",
            "../../etc/passwd@x",
            "a..b@x",
            "https://lore.kernel.org/all/..%2F..%2Fetc@x/",
            "https://lore.kernel.org/all/a%40b/",
            "https://lore.kernel.org/",
            "no-at-sign",
            "two@at@signs",
            "a/b@x",
            "a\nb@x",
            "<a'b@x>",
        ] {
            assert!(parse_message_id(bad).is_err(), "{bad:?}");
        }
    }
}
