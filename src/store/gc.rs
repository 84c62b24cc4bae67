//! `kforge store gc`: remove identities by age or to fit a size, least recently used first,
//! never a pinned one, one a build holds (its shared lock) or one a defined guest uses. Both
//! kinds of entry (kernels and QEMUs) compete for the one size budget.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Store, StoreError};
use crate::fsutil::FileLock;

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Remove identities unused for longer than this.
    pub older_than: Option<Duration>,
    /// Then remove the least recently used until the store fits this many bytes.
    pub max_size: Option<u64>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub removed: Vec<String>,
    pub freed_bytes: u64,
    pub kept_pinned: Vec<String>,
    pub kept_in_use: Vec<String>,
    pub remaining_bytes: u64,
}

/// Parses `30d`, `12h`, `90m`, `45s` (a bare number is days).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "d"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not an age like 30d, 12h, 90m"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 7 * 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h, d or w")),
    };
    Ok(Duration::from_secs(secs))
}

/// Parses a size like ccache does: `500M`, `20G`, `1T`, or bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size like 500M or 20G"))
}

/// Runs the policy over the entries of the stores given (one view per kind), never removing
/// an entry in `used` (what defined guests boot). Entries are reported by their short name.
pub fn run(
    stores: &[&Store],
    used: &BTreeSet<super::EntryName>,
    policy: &Policy,
) -> Result<Report, StoreError> {
    let mut entries: Vec<(&Store, super::Release, SystemTime, u64)> = Vec::new();
    for store in stores {
        store.sweep()?;
        for r in store.releases()? {
            let last = store.last_used(&r).unwrap_or(SystemTime::UNIX_EPOCH);
            let size = store.size_of(&r);
            entries.push((store, r, last, size));
        }
    }
    entries.sort_by_key(|e| e.2);
    let mut total: u64 = entries.iter().map(|e| e.3).sum();
    let now = SystemTime::now();
    let mut report = Report::default();
    for (store, release, last, size) in entries {
        let entry = store.entry(&release);
        let name = entry.short();
        let old = policy
            .older_than
            .is_some_and(|age| now.duration_since(last).unwrap_or_default() > age);
        let over = policy.max_size.is_some_and(|max| total > max);
        if !old && !over {
            continue;
        }
        if store.is_pinned(&release) {
            report.kept_pinned.push(name);
            continue;
        }
        if used.contains(&entry) {
            report.kept_in_use.push(name);
            continue;
        }
        let lock_path = store.root.join("locks").join(store.entry_name(&release));
        let Some(_lock) = FileLock::try_acquire(&lock_path)? else {
            report.kept_in_use.push(name);
            continue;
        };
        if !policy.dry_run {
            store.remove(&release)?;
        }
        total = total.saturating_sub(size);
        report.freed_bytes += size;
        report.removed.push(name);
    }
    report.remaining_bytes = total;
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::duration_suboptimal_units)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_parse() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_age("2").unwrap(), Duration::from_secs(2 * 86_400));
        assert_eq!(parse_age("90m").unwrap(), Duration::from_secs(5400));
        assert!(parse_age("-1d").is_err());
        assert!(parse_age("3y").is_err());
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
