//! How kforge runs git: one place that builds the command.
//!
//! Inherited `GIT_DIR`/`GIT_WORK_TREE`/`GIT_INDEX_FILE` never reach git (the process
//! wrapper scrubs the environment); user values go after `--end-of-options`.

use std::path::Path;

use crate::process::Cmd;

/// `git` run against the repository at `dir` (a bare mirror or a worktree).
pub fn git(dir: &Path) -> Cmd {
    Cmd::new("git").arg("-C").arg(dir).args([
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "advice.detachedHead=false",
    ])
}

/// Checks a ref the user gave before git sees it: non-empty, not option-shaped, and within
/// what `git check-ref-format` accepts for a branch or tag name, or a hex object id.
pub fn validate_ref(r: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("git_ref `{r}` is not usable: {why}"));
    if r.is_empty() {
        return bad("it is empty");
    }
    if r.len() > 255 {
        return bad("it is longer than 255 characters");
    }
    if r.starts_with('-') {
        return bad("it starts with `-`, like an option");
    }
    if r.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("it contains white space or control characters");
    }
    if let Some(c) = r.chars().find(|c| "~^:?*[\\".contains(*c)) {
        return bad(&format!("`{c}` is not allowed in a ref name"));
    }
    if r.contains("..") || r.contains("@{") || r.contains("//") {
        return bad("`..`, `@{` and `//` are not allowed");
    }
    if r.starts_with('/') || r.ends_with('/') || r.ends_with('.') || r.ends_with(".lock") {
        return bad("a ref may not start or end with `/`, or end with `.` or `.lock`");
    }
    if r.split('/').any(|part| part.starts_with('.')) {
        return bad("no component may start with `.`");
    }
    if r == "@" {
        return bad("`@` alone is not a ref");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_ref;

    #[test]
    fn refs() {
        for ok in [
            "v6.12.117",
            "mirror/master",
            "hch-misc",
            "b4/some-series-v2",
            "0123456789abcdef0123456789abcdef01234567",
            "HEAD",
        ] {
            assert!(validate_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "--upload-pack=touch /tmp/x",
            "-x",
            "a b",
            "v1..v2",
            "HEAD~1",
            "x^{tree}",
            "a:b",
            "x@{0}",
            "/abs",
            "trailing/",
            "x.lock",
            "a/.hidden",
            "a\nb",
            "$(id)",
        ] {
            // `$(id)` is a legal ref name to git; it is refused by resolution, not here.
            if bad == "$(id)" {
                continue;
            }
            assert!(validate_ref(bad).is_err(), "{bad:?}");
        }
    }
}
