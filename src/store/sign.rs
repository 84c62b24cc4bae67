//! Signing keys for exported stores: ed25519. A host signs what it exports with its own key
//! (`SYSTEM_DIR/keys/signing.key`); a host fetching from peers accepts only indexes signed
//! by a key it trusts (`SYSTEM_DIR/keys/trusted`, one public key per line).
//!
//! A public key is written `kforge-ed25519:<name>:<64 hex>`.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use super::StoreError;
use crate::fsutil::write_atomic;

const PREFIX: &str = "kforge-ed25519";

fn keys_dir(system_dir: &Path) -> PathBuf {
    system_dir.join("keys")
}

fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// A key's name: 1-64 of letters, digits, `.`, `_`, `-`.
pub fn validate_key_name(name: &str) -> Result<(), StoreError> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Ok(())
    } else {
        Err(StoreError::BadInput(format!(
            "key name `{name}`: use 1-64 letters, digits, `.`, `_` or `-`"
        )))
    }
}

/// This host's signing key and its name.
#[derive(Debug)]
pub struct Key {
    pub name: String,
    key: SigningKey,
}

impl Key {
    pub fn public(&self) -> String {
        format!(
            "{PREFIX}:{}:{}",
            self.name,
            hex::encode(self.key.verifying_key().as_bytes())
        )
    }

    pub fn sign(&self, bytes: &[u8]) -> String {
        hex::encode(self.key.sign(bytes).to_bytes())
    }
}

/// The name a key gets when none is given: `kforge-<hostname>`.
pub fn default_key_name() -> String {
    let host = fs_err::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    format!("kforge-{}", if host.is_empty() { "host" } else { &host })
}

/// Makes this host's signing key (refusing to replace one unless `force`).
pub fn keygen(system_dir: &Path, name: &str, force: bool) -> Result<Key, StoreError> {
    validate_key_name(name)?;
    let path = keys_dir(system_dir).join("signing.key");
    if path.exists() && !force {
        return Err(StoreError::BadInput(format!(
            "{} exists; pass --force to replace it (peers trusting it will refuse new exports)",
            path.display()
        )));
    }
    let mut seed = [0u8; 32];
    fs_err::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let key = Key {
        name: name.to_owned(),
        key: SigningKey::from_bytes(&seed),
    };
    fs_err::create_dir_all(keys_dir(system_dir))?;
    write_atomic(&path, format!("{name} {}\n", hex::encode(seed)).as_bytes())?;
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(key)
}

/// This host's signing key.
pub fn load(system_dir: &Path) -> Result<Key, StoreError> {
    let path = keys_dir(system_dir).join("signing.key");
    let text = fs_err::read_to_string(&path).map_err(|_| {
        StoreError::BadInput(format!(
            "no signing key at {}: run `kforge store keygen` first",
            path.display()
        ))
    })?;
    let (name, hex) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| StoreError::BadInput(format!("{} is not a kforge key", path.display())))?;
    let seed = from_hex::<32>(hex)
        .ok_or_else(|| StoreError::BadInput(format!("{} is not a kforge key", path.display())))?;
    Ok(Key {
        name: name.to_owned(),
        key: SigningKey::from_bytes(&seed),
    })
}

/// Parses `kforge-ed25519:<name>:<hex>`.
pub fn parse_public(text: &str) -> Result<(String, VerifyingKey), StoreError> {
    let bad = || {
        StoreError::BadInput(format!(
            "`{text}` is not a public key like {PREFIX}:<name>:<64 hex>"
        ))
    };
    let mut parts = text.trim().splitn(3, ':');
    if parts.next() != Some(PREFIX) {
        return Err(bad());
    }
    let name = parts.next().ok_or_else(bad)?;
    validate_key_name(name)?;
    let bytes = parts.next().and_then(from_hex::<32>).ok_or_else(bad)?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
    Ok((name.to_owned(), key))
}

/// The keys this host trusts.
pub fn trusted(system_dir: &Path) -> Result<Vec<(String, VerifyingKey)>, StoreError> {
    let path = keys_dir(system_dir).join("trusted");
    let text = match fs_err::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(parse_public)
        .collect()
}

/// Adds a public key to the trusted ones (replacing one of the same name).
pub fn trust(system_dir: &Path, public: &str) -> Result<String, StoreError> {
    let (name, key) = parse_public(public)?;
    let mut keys = trusted(system_dir)?;
    keys.retain(|(n, _)| n != &name);
    keys.push((name.clone(), key));
    let mut text = String::new();
    for (n, k) in &keys {
        let _ = writeln!(text, "{PREFIX}:{n}:{}", hex::encode(k.as_bytes()));
    }
    fs_err::create_dir_all(keys_dir(system_dir))?;
    write_atomic(&keys_dir(system_dir).join("trusted"), text.as_bytes())?;
    Ok(name)
}

/// Checks `sig` (hex) over `bytes` by the trusted key named `key_name`.
pub fn verify(
    trusted: &[(String, VerifyingKey)],
    key_name: &str,
    bytes: &[u8],
    sig: &str,
) -> Result<(), String> {
    let Some((_, key)) = trusted.iter().find(|(n, _)| n == key_name) else {
        return Err(format!(
            "signed by `{key_name}`, a key this host does not trust (kforge store trust)"
        ));
    };
    let sig = from_hex::<64>(sig).ok_or("the signature is not 64 hex bytes")?;
    key.verify(bytes, &Signature::from_bytes(&sig))
        .map_err(|_| format!("the signature by `{key_name}` does not match the index"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "host-a", false).unwrap();
        assert!(keygen(dir.path(), "host-a", false).is_err());
        let again = load(dir.path()).unwrap();
        assert_eq!(again.public(), key.public());
        trust(dir.path(), &key.public()).unwrap();
        let t = trusted(dir.path()).unwrap();
        let sig = key.sign(b"index");
        verify(&t, "host-a", b"index", &sig).unwrap();
        assert!(verify(&t, "host-a", b"indeX", &sig).is_err());
        assert!(verify(&t, "host-b", b"index", &sig).is_err());
        assert!(parse_public("kforge-ed25519:x:zz").is_err());
        assert!(parse_public("ssh-ed25519:x:00").is_err());
        assert!(validate_key_name("a/b").is_err());
    }
}
