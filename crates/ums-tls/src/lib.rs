//! Certificates and rustls configurations.
//!
//! Every key is ECDSA P-256: a full handshake costs a fraction of RSA-2048's CPU, which matters when
//! tens of thousands of devices connect at once. Servers keep a large session cache and issue
//! session tickets so a reconnecting device resumes instead of repeating the full handshake.
//!
//! Only the `ring` provider is compiled in; [`install_crypto_provider`] installs it once per process.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

mod network;
pub use network::{
    ComponentKind, NODE_CERT_DAYS, NetworkToken, NodeIdentity, ca_fingerprint, der_fingerprint,
    generate_node_key, not_after_ms, open, peer_component, pem_not_after_ms, seal,
    verify_node_cert,
};

/// Errors of certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid pem in {0}: {1}")]
    Pem(PathBuf, String),
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate authority: its certificate and key in PEM.
pub struct CertAuthority {
    common_name: String,
    /// The CA certificate in PEM; what clients trust.
    pub cert_pem: String,
    key: KeyPair,
}

/// A certificate with its private key, both in PEM.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertAuthority {
    /// Creates a new CA with an ECDSA P-256 key.
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(common_name);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            common_name: common_name.to_owned(),
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads the CA from `dir/ca.pem` and `dir/ca-key.pem`, or creates both (the key with mode
    /// 0600) when neither exists. Returns the CA and whether it was created.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<(Self, bool), TlsError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        if cert_path.exists() || key_path.exists() {
            let cert_pem = read(&cert_path)?;
            let key_pem = read(&key_path)?;
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|e| TlsError::Pem(key_path.clone(), e.to_string()))?;
            return Ok((
                Self {
                    common_name: common_name.to_owned(),
                    cert_pem,
                    key,
                },
                false,
            ));
        }
        create_dir(dir)?;
        let ca = Self::generate(common_name)?;
        write_secret(&key_path, ca.key.serialize_pem().as_bytes())?;
        write_public(&cert_path, ca.cert_pem.as_bytes())?;
        Ok((ca, true))
    }

    /// Issues a server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let ca_params = ca_params(&self.common_name);
        let issuer = Issuer::from_params(&ca_params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

/// Builds a rustls server configuration for a certificate chain and key in PEM, advertising the
/// given ALPN protocols, with a session cache of `session_cache` entries and session tickets.
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    alpn: &[&[u8]],
    session_cache: usize,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = parse_certs(cert_chain_pem).map_err(|e| TlsError::Pem("certificate".into(), e))?;
    let key = parse_key(key_pem).map_err(|e| TlsError::Pem("private key".into(), e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(session_cache);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// Parses every certificate of a PEM bundle.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(certs)
}

/// Parses the first private key of a PEM document.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no private key found".into())
}

/// Reads a text file, naming it in the error.
pub fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// Creates a directory (and its parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Io {
            action: "create directory",
            path: dir.to_owned(),
            source,
        })
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })
}

/// Writes a file that holds a secret: created with mode 0600, replaced atomically.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_mode(path, bytes, 0o600)
}

/// Writes a public file (mode 0644), replaced atomically.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_mode(path, bytes, 0o644)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_is_created_once_and_key_is_private() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, created) = CertAuthority::load_or_create(dir.path(), "test ca").expect("create");
        assert!(created);
        let mode = fs::metadata(dir.path().join("ca-key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = CertAuthority::load_or_create(dir.path(), "test ca").expect("load");
        assert!(!created);
        assert_eq!(ca.cert_pem, again.cert_pem);
    }

    #[test]
    fn issued_certificate_verifies_against_the_loaded_ca() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        CertAuthority::load_or_create(dir.path(), "test ca").expect("create");
        // Issue with a CA loaded from disk: the issuer must match the original certificate.
        let (ca, _) = CertAuthority::load_or_create(dir.path(), "test ca").expect("load");
        let issued = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()])
            .expect("issue");
        let mut roots = rustls::RootCertStore::empty();
        for c in parse_certs(&ca.cert_pem).expect("ca pem") {
            roots.add(c).expect("add root");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .expect("verifier");
        let leaf = parse_certs(&issued.cert_pem).expect("leaf").remove(0);
        for name in ["localhost", "127.0.0.1"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).expect("name");
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &server_name,
                    &[],
                    rustls::pki_types::UnixTime::now(),
                )
                .expect("certificate verifies");
        }
        let wrong = rustls::pki_types::ServerName::try_from("example.org").expect("name");
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &wrong, &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
        server_config(&issued.cert_pem, &issued.key_pem, &[b"h2"], 1024).expect("config");
    }
}
