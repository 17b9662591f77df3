//! The release key (ed25519, through ring): generated and kept offline by administrators in a
//! file of mode 0600; its public key is pinned on every server and node at install.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::ReleaseError;

const KEY_PREFIX: &str = "ums-release-key-v1:";
const PUBLIC_PREFIX: &str = "ed25519:";

/// A pinned public release key, written `ed25519:<base64 of the 32 bytes>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// A short name of the key that signatures carry: the first 16 hex digits of its sha256.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.0))[..16].to_owned()
    }

    pub(crate) fn verify(&self, message: &[u8], sig_b64: &str) -> bool {
        let Ok(sig) = B64.decode(sig_b64) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, &sig)
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl FromStr for PublicKey {
    type Err = ReleaseError;
    fn from_str(s: &str) -> Result<Self, ReleaseError> {
        let bad = || {
            ReleaseError::BadKey(format!(
                "a public release key is `{PUBLIC_PREFIX}` and 44 base64 characters (as `umsctl release keygen` prints it), not `{}`",
                s.escape_debug()
            ))
        };
        let b64 = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let bytes = B64.decode(b64).map_err(|_| bad())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

/// The private release key. Never leaves the administrator's offline machine.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key().key_id())
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, ReleaseError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| ReleaseError::BadKey("the system's random source failed".into()))?;
        Self::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, ReleaseError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| ReleaseError::BadKey(format!("not an ed25519 key: {e}")))?;
        Ok(Self {
            pair,
            pkcs8: pkcs8.to_vec(),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(bytes)
    }

    pub(crate) fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.pair.sign(message).as_ref())
    }

    /// The key file's text.
    fn file_text(&self) -> String {
        format!(
            "# ums release key ({}). Keep it offline: whoever holds it can release software to every node.\n{KEY_PREFIX}{}\n",
            self.public_key(),
            B64.encode(&self.pkcs8)
        )
    }

    /// Reads a key file's text.
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(KEY_PREFIX))
            .ok_or_else(|| {
                ReleaseError::BadKey(format!(
                    "no line starting with `{KEY_PREFIX}`: not a key made by `umsctl release keygen`"
                ))
            })?;
        let pkcs8 = B64
            .decode(&line[KEY_PREFIX.len()..])
            .map_err(|_| ReleaseError::BadKey("the key is not valid base64".into()))?;
        Self::from_pkcs8(&pkcs8)
    }

    /// Writes the key to a new file of mode 0600; an existing file is never overwritten.
    pub fn write_new(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(self.file_text().as_bytes())?;
        f.sync_all()
    }

    /// Reads a key file, refusing one that others than its owner may read.
    pub fn load(path: &Path) -> Result<Self, ReleaseError> {
        let io = |e: std::io::Error| ReleaseError::BadKey(format!("{}: {e}", path.display()));
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(ReleaseError::BadKey(format!(
                "{} is readable by others (mode {:o}): run `chmod 600` on it, and consider the key exposed",
                path.display(),
                mode & 0o777
            )));
        }
        Self::parse(&std::fs::read_to_string(path).map_err(io)?)
    }
}
