//! Build identities: `<version>-<label>-<digest>`, what the booted kernel prints in `uname -r`.
//!
//! Pure functions only (no I/O): the digest over the identity inputs, label inference and
//! slugging, and the truncation that keeps the release within the kernel's 64 characters
//! without ever shortening the digest. Spec: "Build identity and reuse".

mod digest;
mod label;

pub use digest::{DIGEST_LEN, IdentityInputs, config_for_digest, normalize_flag_for_identity};
pub use label::{
    LABEL_MAX, LabelError, LabelSource, compose_release, infer_label, parse_revision, slugify,
    validate_custom_label,
};

/// The kernel's limit on `uname -r` (`__NEW_UTS_LEN`).
pub const UTS_LEN: usize = 64;
