//! The HA network's identities: the network token, node certificates signed by the network CA, and
//! the mutual-TLS configurations every internal connection uses.
//!
//! A node certificate names its component in the subject common name as `<kind>/<id>`
//! (`server/server-3f…`), so the peer of an internal connection is known from its certificate
//! alone, without a database lookup.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::{CertAuthority, TlsError, ca_params, parse_certs, parse_key, read, write_public};

/// The kinds of process in an HA network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComponentKind {
    Server,
    Broker,
    Watchdog,
    SwpAuth,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 4] = [
        ComponentKind::Server,
        ComponentKind::Broker,
        ComponentKind::Watchdog,
        ComponentKind::SwpAuth,
    ];

    /// `"server"`, `"broker"`, `"watchdog"` or `"swp-auth"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ComponentKind::Server => "server",
            ComponentKind::Broker => "broker",
            ComponentKind::Watchdog => "watchdog",
            ComponentKind::SwpAuth => "swp-auth",
        }
    }

    /// Parses what [`ComponentKind::as_str`] prints.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hex sha256 of the first certificate of a PEM document: what a network token pins.
pub fn ca_fingerprint(cert_pem: &str) -> Result<String, TlsError> {
    let certs = parse_certs(cert_pem).map_err(|e| TlsError::Pem("certificate".into(), e))?;
    Ok(der_fingerprint(&certs[0]))
}

/// Hex sha256 of a DER certificate.
pub fn der_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The network token: `UMS1<sha256 of the network CA>::<secret>`. The hash lets a joining
/// component check the CA it is shown before it sends the secret; the secret proves it may join.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkToken {
    /// Hex sha256 of the network CA certificate (DER).
    pub ca_hash: String,
    /// 32 random bytes, base64url without padding.
    pub secret: String,
}

impl std::fmt::Debug for NetworkToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "NetworkToken(UMS1{}::…)", self.ca_hash)
    }
}

const TOKEN_PREFIX: &str = "UMS1";

impl NetworkToken {
    /// A new token for the CA with the given fingerprint.
    pub fn generate(ca_hash: &str) -> Self {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        Self {
            ca_hash: ca_hash.to_owned(),
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        }
    }

    /// Parses a token, explaining what is wrong with a malformed one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or("a network token starts with UMS1")?;
        let (hash, secret) = rest
            .split_once("::")
            .ok_or("a network token has the form UMS1<ca sha256>::<secret>")?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the CA hash of a network token is 64 hex digits".into());
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| "the secret of a network token is base64url")?;
        if raw.len() < 16 {
            return Err("the secret of a network token is too short".into());
        }
        Ok(Self {
            ca_hash: hash.to_ascii_lowercase(),
            secret: secret.to_owned(),
        })
    }

    /// Reads a token file, naming the file in the error.
    pub fn read(path: &Path) -> Result<Self, TlsError> {
        let text = read(path)?;
        Self::parse(&text).map_err(|e| TlsError::Pem(path.to_owned(), e))
    }

    /// The sha256 of the secret, hex: what the database keeps.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// The token in its text form.
    pub fn expose(&self) -> String {
        format!("{TOKEN_PREFIX}{}::{}", self.ca_hash, self.secret)
    }
}

/// Encrypts `plaintext` with a key derived from `key_material` (HKDF-SHA256, ChaCha20-Poly1305,
/// random nonce). `context` binds the ciphertext to its purpose.
pub fn seal(key_material: &[u8], context: &str, plaintext: &[u8]) -> Vec<u8> {
    use ring::aead;
    let key = derive_key(key_material, context);
    let mut nonce = [0u8; aead::NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    let mut buf = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(context.as_bytes()),
            &mut buf,
        )
        .expect("chacha20 seal cannot fail for in-memory buffers");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out.extend_from_slice(tag.as_ref());
    out
}

/// Decrypts what [`seal`] produced; `None` when the key or the context is wrong or the data was
/// changed.
pub fn open(key_material: &[u8], context: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    use ring::aead;
    if sealed.len() < aead::NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
        return None;
    }
    let key = derive_key(key_material, context);
    let (nonce, rest) = sealed.split_at(aead::NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = rest.to_vec();
    let plain = key
        .open_in_place(nonce, aead::Aad::from(context.as_bytes()), &mut buf)
        .ok()?;
    Some(plain.to_vec())
}

fn derive_key(key_material: &[u8], context: &str) -> ring::aead::LessSafeKey {
    use ring::{aead, hkdf};
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ums sealed v1");
    let prk = salt.extract(key_material);
    let info = [context.as_bytes()];
    let okm = prk
        .expand(&info, &aead::CHACHA20_POLY1305)
        .expect("hkdf output length matches the aead key");
    aead::LessSafeKey::new(aead::UnboundKey::from(okm))
}

/// A component's identity in the network: its certificate signed by the network CA, its key, and
/// the CA it trusts.
#[derive(Clone)]
pub struct NodeIdentity {
    pub kind: ComponentKind,
    pub id: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Loads `dir/ca.pem`, `dir/node.pem` and `dir/node-key.pem`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let ca_pem = read(&dir.join("ca.pem"))?;
        let cert_path = dir.join("node.pem");
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&dir.join("node-key.pem"))?;
        let certs = parse_certs(&cert_pem).map_err(|e| TlsError::Pem(cert_path.clone(), e))?;
        let (kind, id) = peer_component(&certs[0])
            .ok_or_else(|| TlsError::Pem(cert_path.clone(), "not a node certificate".to_owned()))?;
        Ok(Self {
            kind,
            id,
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// Whether `dir` holds an identity.
    pub fn exists(dir: &Path) -> bool {
        dir.join("node.pem").exists() && dir.join("node-key.pem").exists()
    }

    /// Writes the identity to `dir` (created with mode 0700); the key with mode 0600.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        crate::create_private_dir(dir)?;
        crate::write_secret(&dir.join("node-key.pem"), self.key_pem.as_bytes())?;
        write_public(&dir.join("node.pem"), self.cert_pem.as_bytes())?;
        write_public(&dir.join("ca.pem"), self.ca_pem.as_bytes())
    }

    /// Hex sha256 of the node certificate.
    pub fn fingerprint(&self) -> String {
        parse_certs(&self.cert_pem)
            .map(|c| der_fingerprint(&c[0]))
            .unwrap_or_default()
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in parse_certs(&self.ca_pem).map_err(|e| TlsError::Pem("ca".into(), e))? {
            roots.add(c)?;
        }
        Ok(Arc::new(roots))
    }

    /// A server configuration that demands a client certificate signed by the network CA.
    pub fn mtls_server_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder(self.roots()?)
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let certs = parse_certs(&self.cert_pem).map_err(|e| TlsError::Pem("node".into(), e))?;
        let key = parse_key(&self.key_pem).map_err(|e| TlsError::Pem("node key".into(), e))?;
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A client configuration that presents this node's certificate and trusts only the network's
    /// CA.
    pub fn mtls_client_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let certs = parse_certs(&self.cert_pem).map_err(|e| TlsError::Pem("node".into(), e))?;
        let key = parse_key(&self.key_pem).map_err(|e| TlsError::Pem("node key".into(), e))?;
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The component kind and id a node certificate names (subject CN `<kind>/<id>`), or `None` for
/// any other certificate.
pub fn peer_component(cert_der: &[u8]) -> Option<(ComponentKind, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    let (kind, id) = cn.split_once('/')?;
    Some((ComponentKind::parse(kind)?, id.to_owned()))
}

impl CertAuthority {
    /// Issues a node certificate for a component: usable as TLS server and client, subject CN
    /// `<kind>/<id>`, the given DNS names and IP addresses as alternative names.
    pub fn issue_node(
        &self,
        kind: ComponentKind,
        id: &str,
        names: &[String],
    ) -> Result<NodeIdentity, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        self.sign_node(kind, id, names, &key)
            .map(|cert_pem| NodeIdentity {
                kind,
                id: id.to_owned(),
                ca_pem: self.cert_pem.clone(),
                cert_pem,
                key_pem: key.serialize_pem(),
            })
    }

    /// Signs a node certificate for a public key the component generated itself (PEM
    /// SubjectPublicKeyInfo): its private key never leaves it.
    pub fn sign_node_public_key(
        &self,
        kind: ComponentKind,
        id: &str,
        names: &[String],
        public_key_pem: &str,
    ) -> Result<String, TlsError> {
        let key = rcgen::SubjectPublicKeyInfo::from_pem(public_key_pem)
            .map_err(|e| TlsError::Pem("public key".into(), e.to_string()))?;
        self.sign_node(kind, id, names, &key)
    }

    fn sign_node(
        &self,
        kind: ComponentKind,
        id: &str,
        names: &[String],
        key: &impl rcgen::PublicKeyData,
    ) -> Result<String, TlsError> {
        let now = time_now();
        self.sign_node_valid(
            kind,
            id,
            names,
            key,
            now - std::time::Duration::from_secs(3600),
            now + std::time::Duration::from_secs(NODE_CERT_DAYS * 86_400),
        )
    }

    fn sign_node_valid(
        &self,
        kind: ComponentKind,
        id: &str,
        names: &[String],
        key: &impl rcgen::PublicKeyData,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<String, TlsError> {
        let mut names = names.to_vec();
        if names.is_empty() {
            names.push("localhost".to_owned());
        }
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{}/{id}", kind.as_str()));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let ca_params = ca_params(&self.common_name);
        let issuer = Issuer::from_params(&ca_params, &self.key);
        Ok(params.signed_by(key, &issuer)?.pem())
    }

    /// Rebuilds a CA from its certificate and key in PEM.
    pub fn from_pem(common_name: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| TlsError::Pem("ca key".into(), e.to_string()))?;
        Ok(Self {
            common_name: common_name.to_owned(),
            cert_pem: cert_pem.to_owned(),
            key,
        })
    }

    /// The CA's private key in PEM. Handle as a secret.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Key material derived from the CA's private key, for sealing what only holders of the CA
    /// may read.
    pub fn key_material(&self) -> Vec<u8> {
        self.key.serialize_der()
    }
}

/// Node certificates are valid for this many days; components renew them by joining again.
pub const NODE_CERT_DAYS: u64 = 825;

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Generates a key pair for a joining component: the private key in PEM (kept) and the public
/// key in PEM (sent).
pub fn generate_node_key() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// When a certificate (DER) stops being valid, in ms since the epoch.
pub fn not_after_ms(cert_der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.validity().not_after.timestamp().saturating_mul(1000))
}

/// When the first certificate of `pem` stops being valid, in ms since the epoch.
pub fn pem_not_after_ms(pem: &str) -> Option<i64> {
    let certs = parse_certs(pem).ok()?;
    not_after_ms(certs.first()?)
}

/// Checks that `cert_pem` is signed by `ca_pem` and currently valid, for a component that got
/// its certificate back from a join.
pub fn verify_node_cert(ca_pem: &str, cert_pem: &str) -> Result<(), String> {
    let ca = parse_certs(ca_pem)?;
    let leaf = parse_certs(cert_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca[0].clone()).map_err(|e| e.to_string())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(
            &CertificateDer::from(leaf[0].to_vec()),
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install_crypto_provider;

    #[test]
    fn token_round_trips_and_hides_its_secret() {
        let token = NetworkToken::generate(&"ab".repeat(32));
        let text = token.expose();
        assert!(text.starts_with("UMS1abab"));
        assert_eq!(
            NetworkToken::parse(&format!(" {text}\n")).expect("parse"),
            token
        );
        assert!(!format!("{token:?}").contains(&token.secret));
        for bad in [
            "",
            "K10abc::def",
            "UMS1abcd::secret",
            &format!("UMS1{}", "a".repeat(64)),
            &format!("UMS1{}::***", "a".repeat(64)),
            &format!("UMS1{}::c2hvcnQ", "a".repeat(64)),
        ] {
            assert!(NetworkToken::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_context() {
        let sealed = seal(b"key one", "ca key", b"the ca private key");
        assert_eq!(
            open(b"key one", "ca key", &sealed).as_deref(),
            Some(&b"the ca private key"[..])
        );
        assert_eq!(open(b"key two", "ca key", &sealed), None);
        assert_eq!(open(b"key one", "token", &sealed), None);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(open(b"key one", "ca key", &tampered), None);
        assert_eq!(open(b"key one", "ca key", &sealed[..10]), None);
    }

    #[test]
    fn node_identity_names_its_component_and_verifies_against_its_ca_only() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertAuthority::generate("network ca").expect("ca");
        let node = ca
            .issue_node(ComponentKind::Broker, "broker-1", &["127.0.0.1".into()])
            .expect("issue");
        node.save(&dir.path().join("id")).expect("save");
        let loaded = NodeIdentity::load(&dir.path().join("id")).expect("load");
        assert_eq!(loaded.kind, ComponentKind::Broker);
        assert_eq!(loaded.id, "broker-1");
        assert_eq!(loaded.fingerprint(), node.fingerprint());
        verify_node_cert(&ca.cert_pem, &node.cert_pem).expect("signed by its ca");
        let other = CertAuthority::generate("network ca").expect("other ca");
        assert!(verify_node_cert(&other.cert_pem, &node.cert_pem).is_err());

        // A key generated by the component, signed by the CA.
        let (key_pem, public_pem) = generate_node_key().expect("key");
        let cert = ca
            .sign_node_public_key(ComponentKind::SwpAuth, "swp-9", &[], &public_pem)
            .expect("sign");
        let certs = parse_certs(&cert).expect("pem");
        assert_eq!(
            peer_component(&certs[0]),
            Some((ComponentKind::SwpAuth, "swp-9".to_owned()))
        );
        let ident = NodeIdentity {
            kind: ComponentKind::SwpAuth,
            id: "swp-9".into(),
            ca_pem: ca.cert_pem.clone(),
            cert_pem: cert,
            key_pem,
        };
        ident.mtls_server_config(&[b"h2"]).expect("server config");
        ident.mtls_client_config(&[b"h2"]).expect("client config");
        // The CA survives a round trip through PEM.
        let again =
            CertAuthority::from_pem("network ca", &ca.cert_pem, &ca.key_pem()).expect("pem");
        let n2 = again
            .issue_node(ComponentKind::Server, "s", &[])
            .expect("issue");
        verify_node_cert(&ca.cert_pem, &n2.cert_pem).expect("same ca");
    }

    #[test]
    fn an_expired_node_certificate_is_refused() {
        install_crypto_provider();
        let ca = CertAuthority::generate("network ca").expect("ca");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let day = std::time::Duration::from_secs(86_400);
        let now = time_now();
        let expired = ca
            .sign_node_valid(
                ComponentKind::Broker,
                "old",
                &[],
                &key,
                now - day * 30,
                now - day,
            )
            .expect("sign");
        let err = verify_node_cert(&ca.cert_pem, &expired).expect_err("expired");
        assert!(err.to_lowercase().contains("expired"), "{err}");
    }
}
