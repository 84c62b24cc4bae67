//! What a kernel says about itself: the identity's shape, a bzImage's version string, a
//! module's vermagic, the symbols of a `.config`.

use std::collections::BTreeMap;
use std::path::Path;

/// `<version>-<label>-<12 hex>` within 64 characters.
#[track_caller]
pub fn assert_release_format(release: &str, version: &str, label: &str) {
    assert!(release.len() <= 64, "{release} is longer than 64");
    let rest = release
        .strip_prefix(&format!("{version}-{label}-"))
        .unwrap_or_else(|| panic!("{release} does not start with {version}-{label}-"));
    assert_eq!(rest.len(), 12, "{release}: digest is not 12 long");
    assert!(
        rest.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{release}"
    );
}

/// The kernel version string in a bzImage's setup header (`kernel_version` at 0x20e points
/// to a NUL-terminated string, offset + 0x200), uncompressed: what the booted kernel is.
#[track_caller]
pub fn bzimage_version_string(image: &Path) -> String {
    let bytes = super::fs::read(image);
    assert_eq!(
        &bytes[0x202..0x206],
        b"HdrS",
        "{} is not a bzImage",
        image.display()
    );
    let off = u16::from_le_bytes([bytes[0x20e], bytes[0x20f]]) as usize + 0x200;
    let end = bytes[off..].iter().position(|b| *b == 0).unwrap() + off;
    String::from_utf8_lossy(&bytes[off..end]).into_owned()
}

/// `modinfo -F vermagic`.
#[track_caller]
pub fn vermagic(ko: &Path) -> String {
    let out = std::process::Command::new("/sbin/modinfo")
        .args(["-F", "vermagic"])
        .arg(ko)
        .output()
        .unwrap();
    assert!(out.status.success(), "modinfo {}", ko.display());
    String::from_utf8(out.stdout).unwrap()
}

/// A `.config` as symbol -> value (`n` for `# X is not set`).
pub fn symbols(config: &str) -> BTreeMap<String, String> {
    config
        .lines()
        .filter_map(|l| {
            if let Some(s) = l
                .strip_prefix("# ")
                .and_then(|r| r.strip_suffix(" is not set"))
            {
                Some((s.to_owned(), "n".to_owned()))
            } else {
                l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
            }
        })
        .collect()
}

/// Asserts each symbol's value.
#[track_caller]
pub fn assert_symbols(config: &str, want: &[(&str, &str)]) {
    let s = symbols(config);
    for (k, v) in want {
        assert_eq!(s.get(*k).map(String::as_str), Some(*v), "{k}");
    }
}
