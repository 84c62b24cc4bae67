//! Labels: the readable name between the version and the digest.
//!
//! Precedence (spec, "Build identity and reuse"): a custom label; else a series' cover
//! subject as a slug with `-v<N>` for revisions 2 and up; else `vanilla` for a tag; else a
//! slug of the ref. Truncation keeps the revision suffix and the whole digest.

use super::{DIGEST_LEN, UTS_LEN};

/// Longest custom label a user may give.
pub const LABEL_MAX: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label is empty")]
    Empty,
    #[error("label `{0}` is longer than {LABEL_MAX} characters")]
    TooLong(String),
    #[error(
        "label `{0}` may only hold letters, digits, `.`, `_` and `-`, must start with a letter or digit, and may not contain `..`"
    )]
    BadChars(String),
    #[error(
        "version `{0}` leaves no room for a label and a {DIGEST_LEN}-hex digest in {UTS_LEN} characters"
    )]
    NoRoom(String),
}

/// Checks a user-given label: it goes into `uname -r`, a store key and a path.
pub fn validate_custom_label(label: &str) -> Result<(), LabelError> {
    if label.is_empty() {
        return Err(LabelError::Empty);
    }
    if label.chars().count() > LABEL_MAX {
        return Err(LabelError::TooLong(label.to_owned()));
    }
    let first_ok = label
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let chars_ok = label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !chars_ok || label.contains("..") {
        return Err(LabelError::BadChars(label.to_owned()));
    }
    Ok(())
}

/// Lower-case ASCII letters and digits, every other run of characters one `-`.
pub fn slugify(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_dash = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
    }
    out
}

fn revision_token(word: &str) -> Option<u32> {
    let rest = word.strip_prefix('v').or_else(|| word.strip_prefix('V'))?;
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// Splits a mail subject into its title and revision: the revision comes from a `vN`
/// token inside the leading `[...]` tags (`[PATCH v3 0/5]`, `[PATCH RFC v2 0/3]`), or from a
/// standalone `vN` at the very end of the title (`... iomaps v3`). Nothing is invented.
pub fn parse_revision(subject: &str) -> (String, Option<u32>) {
    let mut rest = subject.trim();
    let mut revision = None;
    // Mail reply prefixes never name a series.
    while let Some(r) = rest
        .strip_prefix("Re:")
        .or_else(|| rest.strip_prefix("RE:"))
        .or_else(|| rest.strip_prefix("re:"))
    {
        rest = r.trim_start();
    }
    while rest.starts_with('[') {
        let Some(end) = rest.find(']') else { break };
        for word in rest[1..end].split(|c: char| c.is_whitespace() || c == ',') {
            if let Some(n) = revision_token(word) {
                revision = Some(n);
            }
        }
        rest = rest[end + 1..].trim_start();
    }
    let mut title = rest.trim_end().to_owned();
    if let Some((head, last)) = title.rsplit_once(char::is_whitespace)
        && let Some(n) = revision_token(last)
    {
        revision = revision.or(Some(n));
        title = head.trim_end().to_owned();
    }
    (title, revision)
}

/// Where a label comes from, in the spec's precedence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource<'a> {
    Custom(&'a str),
    Series {
        subject: &'a str,
    },
    Tag,
    Ref(&'a str),
    /// A developer worktree's files: its branch (`None`: detached), and whether they differ
    /// from its HEAD (the label then ends in `-dirty`).
    Worktree {
        branch: Option<&'a str>,
        dirty: bool,
    },
}

/// The label's base and its protected suffix (`-v3`), before truncation.
pub fn infer_label(source: &LabelSource<'_>) -> (String, String) {
    match source {
        LabelSource::Custom(l) => ((*l).to_owned(), String::new()),
        LabelSource::Series { subject } => {
            let (title, rev) = parse_revision(subject);
            let suffix = match rev {
                Some(n) if n >= 2 => format!("-v{n}"),
                _ => String::new(),
            };
            let base = slugify(&title);
            (
                if base.is_empty() {
                    "series".into()
                } else {
                    base
                },
                suffix,
            )
        }
        LabelSource::Tag => ("vanilla".to_owned(), String::new()),
        LabelSource::Ref(r) => {
            let r = r.strip_prefix("mirror/").unwrap_or(r);
            let r = if r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()) {
                &r[..12]
            } else {
                r
            };
            let base = slugify(r);
            (
                if base.is_empty() { "ref".into() } else { base },
                String::new(),
            )
        }
        LabelSource::Worktree { branch, dirty } => {
            let base = slugify(branch.unwrap_or_default());
            (
                if base.is_empty() {
                    "worktree".into()
                } else {
                    base
                },
                if *dirty {
                    "-dirty".into()
                } else {
                    String::new()
                },
            )
        }
    }
}

/// Cuts `base` to at most `max` characters at a `-` boundary where one exists, so a word is
/// dropped rather than split.
fn truncate_words(base: &str, max: usize) -> &str {
    if base.len() <= max {
        return base;
    }
    let cut = &base[..max];
    let at_boundary = base.as_bytes()[max] == b'-';
    let kept = if at_boundary {
        cut
    } else {
        match cut.rfind('-') {
            Some(i) if i > 0 => &cut[..i],
            _ => cut,
        }
    };
    kept.trim_end_matches(['-', '.', '_'])
}

/// `<version>-<label>-<digest>`, the label truncated so the whole fits in 64 characters;
/// the digest and the label's suffix are never cut.
pub fn compose_release(
    version: &str,
    base: &str,
    suffix: &str,
    digest: &str,
) -> Result<String, LabelError> {
    let room = UTS_LEN
        .checked_sub(version.len() + 2 + digest.len())
        .filter(|r| *r > suffix.len())
        .ok_or_else(|| LabelError::NoRoom(version.to_owned()))?;
    let base = truncate_words(base, room - suffix.len());
    let label = if base.is_empty() {
        suffix.trim_start_matches('-').to_owned()
    } else {
        format!("{base}{suffix}")
    };
    Ok(format!("{version}-{label}-{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "c0bee73009a8";

    fn series(subject: &str, version: &str) -> String {
        let (b, s) = infer_label(&LabelSource::Series { subject });
        compose_release(version, &b, &s, D).unwrap()
    }

    #[test]
    fn spec_example_holds() {
        assert_eq!(
            series("don't build bios/contexts over multiple iomaps v3", "7.1.0"),
            format!("7.1.0-don-t-build-bios-contexts-over-multiple-v3-{D}")
        );
    }

    #[test]
    fn revision_table() {
        for (subject, title, rev) in [
            ("[PATCH v3 0/5] mm: fix things", "mm: fix things", Some(3)),
            ("[PATCH 0/5] mm: fix things", "mm: fix things", None),
            ("[PATCH RFC v2 0/3] x", "x", Some(2)),
            ("[RFC PATCH v10 00/12] big", "big", Some(10)),
            ("[PATCH net-next v4 1/2] net: y", "net: y", Some(4)),
            ("iomap: fix it v3", "iomap: fix it", Some(3)),
            ("iomap: fix v3 of it", "iomap: fix v3 of it", None),
            ("[PATCH v1 0/2] first", "first", Some(1)),
            ("update to v3.2", "update to v3.2", None),
            ("Re: [PATCH v2 1/1] z", "z", Some(2)),
            ("[PATCH] lone", "lone", None),
        ] {
            assert_eq!(
                parse_revision(subject),
                (title.to_owned(), rev),
                "{subject}"
            );
        }
    }

    #[test]
    fn suffix_only_from_v2() {
        assert_eq!(
            series("[PATCH v1 0/2] first try", "6.12.1"),
            format!("6.12.1-first-try-{D}")
        );
        assert_eq!(
            series("[PATCH 0/2] first try", "6.12.1"),
            format!("6.12.1-first-try-{D}")
        );
        assert_eq!(
            series("[PATCH v2 0/2] first try", "6.12.1"),
            format!("6.12.1-first-try-v2-{D}")
        );
        assert_eq!(
            series("[PATCH v10 0/2] first try", "6.12.1"),
            format!("6.12.1-first-try-v10-{D}")
        );
    }

    #[test]
    fn long_subjects_keep_suffix_and_digest() {
        let subject = "[PATCH v7 0/9] a very long subject line that goes on and on about memory management and folios";
        let r = series(subject, "6.12.117");
        assert!(r.len() <= UTS_LEN, "{r} is {} long", r.len());
        assert!(r.ends_with(&format!("-v7-{D}")), "{r}");
        assert!(!r.contains("--"), "{r}");
        // A word is dropped, not split.
        let label = &r["6.12.117-".len()..r.len() - D.len() - "-v7-".len()];
        assert!(
            subject.to_lowercase().contains(&label.replace('-', " ")),
            "{label}"
        );
    }

    #[test]
    fn one_huge_word_is_cut_hard() {
        let r = series(&"x".repeat(100), "6.12.117");
        assert_eq!(r.len(), UTS_LEN);
        assert!(r.ends_with(D));
    }

    #[test]
    fn non_ascii_subjects_slug_cleanly() {
        assert_eq!(slugify("Überarbeitung der Größe"), "berarbeitung-der-gr-e");
        assert_eq!(slugify("--x__y--"), "x-y");
        assert_eq!(series("日本語", "6.1"), format!("6.1-series-{D}"));
    }

    #[test]
    fn ref_labels() {
        let l = |r: &str| infer_label(&LabelSource::Ref(r)).0;
        assert_eq!(l("mirror/master"), "master");
        assert_eq!(l("hch-misc"), "hch-misc");
        assert_eq!(l("feature/Foo_Bar"), "feature-foo-bar");
        assert_eq!(l(&"ab".repeat(20)), "abababababab");
        assert_eq!(infer_label(&LabelSource::Tag).0, "vanilla");
    }

    #[test]
    fn custom_labels_are_validated() {
        assert!(validate_custom_label("kasan-test.1").is_ok());
        for bad in [
            "",
            "a/b",
            "a..b",
            "has space",
            "-x",
            "--upload-pack=x",
            ".hidden",
            "é",
        ] {
            assert!(validate_custom_label(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            validate_custom_label(&"a".repeat(41)),
            Err(LabelError::TooLong(_))
        ));
        assert!(validate_custom_label(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn custom_label_truncated_further_for_long_versions() {
        let version = "6.12.117-rc1-with-a-very-long-extraversion";
        let r = compose_release(version, &"a".repeat(40), "", D);
        assert!(r.is_err() || r.unwrap().len() <= UTS_LEN);
        let r = compose_release(
            "6.12.117-rc1-extra",
            "my-forty-character-label-for-experiments",
            "",
            D,
        )
        .unwrap();
        assert!(r.len() <= UTS_LEN, "{r}");
        assert!(r.ends_with(D));
    }
}
