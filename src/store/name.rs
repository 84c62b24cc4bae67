//! The names of store entries, as types: a [`Release`] (what `uname -r` or a QEMU build's
//! `<version>-<digest>` says) and an [`EntryName`] (`<kind>-<release>`, the entry's name in
//! every directory of the store and of a peer's export). Parsed and checked once, where text
//! comes in; everything after takes the types, so no path is ever made of an unchecked name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::StoreError;

/// What a store entry holds: a kernel (`kernel-<release>`) or a QEMU (`qemu-<release>`).
/// Both kinds share the store's directories, locks, pins and writing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Kind {
    #[default]
    Kernel,
    Qemu,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Kernel, Kind::Qemu];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::Qemu => "qemu",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release kforge could have made: letters, digits, `.`, `_`, `-` and `+`, at most 64, not
/// starting with `.` or `-`; so it is always one safe path component.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct Release(String);

impl Release {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Release {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(StoreError::BadRelease(s.to_owned()))
        }
    }
}

impl TryFrom<String> for Release {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        s.parse()
    }
}

impl From<Release> for String {
    fn from(r: Release) -> String {
        r.0
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Release {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A release is one safe path component (`lib/modules/<release>`).
impl AsRef<std::path::Path> for Release {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl PartialEq<str> for Release {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A store entry: `<kind>-<release>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryName {
    pub kind: Kind,
    pub release: Release,
}

impl EntryName {
    pub fn new(kind: Kind, release: Release) -> Self {
        Self { kind, release }
    }

    /// `<kind>-<release>`, or a bare release (taken as `default`'s): what a user may type.
    pub fn parse_or(text: &str, default: Kind) -> Result<Self, StoreError> {
        for kind in Kind::ALL {
            if let Some(r) = text
                .strip_prefix(kind.as_str())
                .and_then(|t| t.strip_prefix('-'))
            {
                return Ok(Self::new(kind, r.parse()?));
            }
        }
        Ok(Self::new(default, text.parse()?))
    }
}

impl EntryName {
    /// The shortest text that parses back to this entry: a bare release for the default
    /// kind, `<kind>-<release>` for the others.
    pub fn short(&self) -> String {
        if self.kind == Kind::default() {
            self.release.to_string()
        } else {
            self.to_string()
        }
    }
}

/// `kernel-<release>` or `qemu-<release>`; a bare release is a kernel's.
impl FromStr for EntryName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        Self::parse_or(s, Kind::Kernel)
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.kind, self.release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_one_safe_path_component() {
        assert!("6.12.117-vanilla-c2a875e327a8".parse::<Release>().is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-opt", &"x".repeat(65), "a b"] {
            assert!(bad.parse::<Release>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Release>("\"../x\"").is_err());
    }

    #[test]
    fn entry_names_carry_their_kind() {
        let q: EntryName = "qemu-7.2.22-0123456789ab".parse().unwrap();
        assert_eq!(q.kind, Kind::Qemu);
        assert_eq!(q.release.as_str(), "7.2.22-0123456789ab");
        assert_eq!(q.to_string(), "qemu-7.2.22-0123456789ab");
        let k: EntryName = "6.12.117-vanilla-c2a875e327a8".parse().unwrap();
        assert_eq!(k.to_string(), "kernel-6.12.117-vanilla-c2a875e327a8");
        assert_eq!(
            "kernel-6.12.117-x-0".parse::<EntryName>().unwrap().kind,
            Kind::Kernel
        );
        assert!("kernel-a/b".parse::<EntryName>().is_err());
        assert_eq!(k.short(), "6.12.117-vanilla-c2a875e327a8");
        assert_eq!(q.short(), q.to_string());
        assert_eq!(k.short().parse::<EntryName>().unwrap(), k);
        assert!("qemu-".parse::<EntryName>().is_err());
    }
}
