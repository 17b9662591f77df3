//! Signed release manifests: what a release of the suite holds (its version, a revision number
//! that only grows, when it was made and until when it may be installed, and every file with the
//! roles that need it, its size and sha256), the canonical form that is signed, signing with an
//! offline ed25519 release key and verification against the public keys a node pinned at
//! install.
//!
//! A manifest is accepted only when it is signed by a pinned key, well formed, not expired, and
//! (where a revision is already installed or released) not older: a database write alone never
//! makes a node run other code, since the key that decides is not in the database.
//!
//! The signed bytes are the manifest's canonical JSON (fields in a fixed order, files sorted by
//! name, roles sorted, no white space) after a domain prefix. The envelope on disk and on the
//! wire carries the manifest as an object; a verifier parses it (unknown fields refused) and
//! checks the signature over the canonical form of what it parsed, so what is verified is
//! exactly what is used.

mod bundle;
mod keys;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use bundle::{BundleError, MANIFEST_FILE, bundle_path, hash_file, pack};
pub use keys::{PublicKey, SigningKey};

/// The manifest format this build reads and writes.
pub const FORMAT: u32 = 1;
/// What precedes the canonical manifest in the signed message, so a signature over a manifest
/// can never be taken for a signature over anything else.
const DOMAIN: &[u8] = b"ums-release-manifest-v1\n";
/// Largest manifest accepted (bytes of its JSON).
pub const MAX_MANIFEST: usize = 1 << 20;
/// Most files a release may hold.
pub const MAX_FILES: usize = 10_000;
/// The roles of the suite's own binaries; a bundle may add custom roles.
pub const KNOWN_ROLES: &[&str] = &["server", "broker", "watchdog", "swp-auth", "umsctl"];

/// Why a manifest or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error("the manifest is not valid: {0}")]
    Malformed(String),
    #[error("the manifest is unsigned: sign it with `umsctl release sign` and the release key")]
    Unsigned,
    #[error(
        "the manifest is signed by none of the pinned release keys (signed by key id {signed_by}; pinned: {pinned})"
    )]
    UnknownKey { signed_by: String, pinned: String },
    #[error(
        "the manifest's signature by key id {0} does not match its content: it was changed after signing"
    )]
    BadSignature(String),
    #[error("the release expired at {expires_at_ms} (unix ms); sign it again with a later expiry")]
    Expired { expires_at_ms: i64 },
    #[error(
        "revision {revision} is older than revision {current} already in place: a rollback is made by signing the old files as a new revision"
    )]
    Rollback { revision: u64, current: u64 },
    #[error("no release key is pinned: set the public key(s) of the release key")]
    NoPinnedKey,
    #[error("the key is not valid: {0}")]
    BadKey(String),
}

/// A release: the signed part of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The release version people speak of, such as `0.4.0`.
    pub version: String,
    /// Grows with every release of a network; a node never installs a lower one.
    pub revision: u64,
    pub created_at_ms: i64,
    /// After this time no node installs the release.
    pub expires_at_ms: i64,
    /// Sorted by name, names unique.
    pub files: Vec<FileEntry>,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path inside the installed release, such as `bin/ums-server`.
    pub name: String,
    /// The roles that need it (sorted, unique), such as `["broker", "server"]`.
    pub roles: Vec<String>,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// `0o755` for programs, `0o644` for the rest.
    pub mode: u32,
}

/// A manifest with its signatures, as stored in a bundle (`manifest.json`) and sent to servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    pub signed: Manifest,
    pub signatures: Vec<Signature>,
}

/// One signature over a manifest's canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// [`PublicKey::key_id`] of the signing key.
    pub key_id: String,
    /// The ed25519 signature, base64.
    pub sig: String,
}

impl Manifest {
    /// Checks the manifest's own rules: format, version, revision, times, file names, roles,
    /// hashes and modes, files sorted by name and unique.
    pub fn validate(&self) -> Result<(), ReleaseError> {
        let bad = |m: String| Err(ReleaseError::Malformed(m));
        if self.format != FORMAT {
            return bad(format!(
                "format {} is not format {FORMAT} that this build reads",
                self.format
            ));
        }
        if self.version.is_empty()
            || self.version.len() > 64
            || !self
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        {
            return bad(format!(
                "version `{}` must be 1 to 64 letters, digits or . _ + -",
                self.version.escape_debug()
            ));
        }
        if self.revision == 0 {
            return bad("revision must be 1 or more".into());
        }
        if self.expires_at_ms <= self.created_at_ms {
            return bad("it expires before it was created".into());
        }
        if self.files.is_empty() {
            return bad("it holds no file".into());
        }
        if self.files.len() > MAX_FILES {
            return bad(format!("it holds more than {MAX_FILES} files"));
        }
        for (i, f) in self.files.iter().enumerate() {
            validate_name(&f.name).map_err(ReleaseError::Malformed)?;
            if let Some(prev) = i.checked_sub(1).map(|p| &self.files[p])
                && prev.name >= f.name
            {
                return bad(format!(
                    "files must be sorted by name and unique: `{}` follows `{}`",
                    f.name, prev.name
                ));
            }
            if f.roles.is_empty() {
                return bad(format!("file `{}` belongs to no role", f.name));
            }
            for r in &f.roles {
                validate_role(r).map_err(ReleaseError::Malformed)?;
            }
            if f.roles.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!(
                    "the roles of `{}` must be sorted and unique",
                    f.name
                ));
            }
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return bad(format!(
                    "the sha256 of `{}` must be 64 lower-case hex digits",
                    f.name
                ));
            }
            if f.mode != 0o755 && f.mode != 0o644 {
                return bad(format!(
                    "the mode of `{}` must be 0755 or 0644, not {:o}",
                    f.name, f.mode
                ));
            }
        }
        Ok(())
    }

    /// The canonical JSON: the struct's field order, no white space. Deterministic because the
    /// validated manifest's lists are sorted.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, integers and vectors cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The sha256 of the canonical form: names this exact release.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }

    /// The files a node with these roles needs.
    pub fn files_for<'a>(&'a self, roles: &'a [String]) -> impl Iterator<Item = &'a FileEntry> {
        self.files
            .iter()
            .filter(move |f| f.roles.iter().any(|r| roles.contains(r)))
    }

    /// Every role the release names.
    pub fn roles(&self) -> BTreeSet<&str> {
        self.files
            .iter()
            .flat_map(|f| f.roles.iter().map(String::as_str))
            .collect()
    }

    /// The total size of the files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    fn message(&self) -> Vec<u8> {
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(&self.canonical_bytes());
        m
    }
}

/// Checks a file name of a release: a relative path of 1 to 255 bytes, components of letters,
/// digits and `._+-`, none empty, `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "file name `{}` must be a relative path of letters, digits and . _ + - (no empty, `.` or `..` part)",
            name.escape_debug()
        ))
    }
}

/// Checks a role name: 1 to 32 lower-case letters, digits and `-`.
pub fn validate_role(role: &str) -> Result<(), String> {
    if !role.is_empty()
        && role.len() <= 32
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "role `{}` must be 1 to 32 lower-case letters, digits or -",
            role.escape_debug()
        ))
    }
}

/// Signs a manifest with the release key (after checking it).
pub fn sign(manifest: Manifest, key: &SigningKey) -> Result<SignedManifest, ReleaseError> {
    manifest.validate()?;
    let sig = key.sign(&manifest.message());
    Ok(SignedManifest {
        signatures: vec![Signature {
            key_id: key.public_key().key_id(),
            sig,
        }],
        signed: manifest,
    })
}

impl SignedManifest {
    /// Reads an envelope (at most [`MAX_MANIFEST`] bytes of JSON; unknown fields refused).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReleaseError> {
        if bytes.len() > MAX_MANIFEST {
            return Err(ReleaseError::Malformed(format!(
                "it is larger than {MAX_MANIFEST} bytes"
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| ReleaseError::Malformed(e.to_string()))
    }

    /// The envelope as indented JSON, for a bundle's `manifest.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Verifies the envelope against the pinned keys at `now_ms` and returns the manifest: it
    /// must carry a valid signature by one of `keys`, be well formed and not expired. A
    /// signature by a pinned key that does not match refuses the manifest even when another
    /// one matches.
    pub fn verify(&self, keys: &[PublicKey], now_ms: i64) -> Result<&Manifest, ReleaseError> {
        if keys.is_empty() {
            return Err(ReleaseError::NoPinnedKey);
        }
        if self.signatures.is_empty() {
            return Err(ReleaseError::Unsigned);
        }
        let message = self.signed.message();
        let mut verified = false;
        for s in &self.signatures {
            let Some(key) = keys.iter().find(|k| k.key_id() == s.key_id) else {
                continue;
            };
            if !key.verify(&message, &s.sig) {
                return Err(ReleaseError::BadSignature(s.key_id.clone()));
            }
            verified = true;
        }
        if !verified {
            return Err(ReleaseError::UnknownKey {
                signed_by: self
                    .signatures
                    .iter()
                    .map(|s| s.key_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                pinned: keys
                    .iter()
                    .map(|k| k.key_id())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        self.signed.validate()?;
        if self.signed.expires_at_ms <= now_ms {
            return Err(ReleaseError::Expired {
                expires_at_ms: self.signed.expires_at_ms,
            });
        }
        Ok(&self.signed)
    }

    /// [`verify`](Self::verify), and refuses a revision older than `current` (the one
    /// installed or released).
    pub fn verify_not_older(
        &self,
        keys: &[PublicKey],
        now_ms: i64,
        current: u64,
    ) -> Result<&Manifest, ReleaseError> {
        let m = self.verify(keys, now_ms)?;
        if m.revision < current {
            return Err(ReleaseError::Rollback {
                revision: m.revision,
                current,
            });
        }
        Ok(m)
    }
}

/// Parses a list of pinned public keys (`ed25519:<base64>` each).
pub fn parse_keys<S: AsRef<str>>(keys: &[S]) -> Result<Vec<PublicKey>, ReleaseError> {
    keys.iter().map(|k| k.as_ref().trim().parse()).collect()
}

#[cfg(test)]
mod tests;
