//! Joining an HA network and talking to its members.
//!
//! A component (broker, watchdog, swp-auth) holds the network token `UMS1<ca sha256>::<secret>`.
//! [`join`] first fetches the network CA from a server and checks its hash against the token, and
//! only over a connection verified against that CA does it send the secret and its public key; the
//! server answers with a certificate signed by the network CA. The private key never leaves the
//! component. Every later internal call is mutual TLS ([`internal_channel`]).

mod config;
pub mod diagnostics;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::{Channel, Endpoint};
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::join_service_client::JoinServiceClient;
use ums_tls::{ComponentKind, NetworkToken, NodeIdentity};

pub use config::{Membership, MembershipError, NetworkConfig, check_host_port, hostname};

/// The message both sides use when a token belongs to another network.
pub const TOKEN_MISMATCH: &str = "network token mismatch";

/// Time allowed to open an internal connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "{TOKEN_MISMATCH}: the token is for the CA with sha256 {token}, but {server} serves the CA with sha256 {served}"
    )]
    Mismatch {
        server: String,
        token: String,
        served: String,
    },
    #[error("{server} refused to join: {message}")]
    Refused { server: String, message: String },
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    #[error("{0}")]
    Tls(#[from] ums_tls::TlsError),
    #[error("the certificate {server} returned is not valid for this network: {message}")]
    BadCertificate { server: String, message: String },
}

/// What a component needs to join.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// `host:port` of any server's admin port.
    pub server: String,
    pub token: NetworkToken,
    pub kind: ComponentKind,
    /// The component's id, unique in the network (`broker-node1`).
    pub id: String,
    /// DNS names and IP addresses its certificate is for (where others reach it).
    pub names: Vec<String>,
}

/// Joins the network: checks the CA against the token, then gets a node certificate for a key
/// generated here.
pub async fn join(opts: &JoinOptions) -> Result<NodeIdentity, JoinError> {
    ums_tls::install_crypto_provider();
    let server = opts.server.clone();
    let unreachable = |e: &dyn std::fmt::Display| JoinError::Unreachable {
        server: server.clone(),
        message: e.to_string(),
    };

    // 1. The CA, over a connection we cannot verify yet. Nothing secret is sent on it.
    let insecure = Arc::new(insecure_client_config());
    let channel = connect(&opts.server, insecure)
        .await
        .map_err(|e| unreachable(&e))?;
    let ca = JoinServiceClient::new(channel)
        .get_ca(pb::GetCaRequest {
            ca_hash: opts.token.ca_hash.clone(),
            kind: opts.kind.as_str().into(),
            host: opts.names.first().cloned().unwrap_or_default(),
        })
        .await;
    let ca_pem = match ca {
        Ok(r) => r.into_inner().ca_pem,
        Err(status) if status.message().contains(TOKEN_MISMATCH) => {
            tracing::error!(server = %opts.server, "{TOKEN_MISMATCH}: {}", status.message());
            return Err(JoinError::Refused {
                server: server.clone(),
                message: status.message().to_owned(),
            });
        }
        Err(status) => return Err(unreachable(&status.message())),
    };
    let served = ums_tls::ca_fingerprint(&ca_pem)?;
    if served != opts.token.ca_hash {
        let err = JoinError::Mismatch {
            server: server.clone(),
            token: opts.token.ca_hash.clone(),
            served,
        };
        tracing::error!("{err}");
        return Err(err);
    }

    // 2. The secret, only over a connection verified against the pinned CA.
    let (key_pem, public_key_pem) = ums_tls::generate_node_key()?;
    let verified = Arc::new(ca_client_config(&ca_pem)?);
    let channel = connect(&opts.server, verified)
        .await
        .map_err(|e| unreachable(&e))?;
    let reply = JoinServiceClient::new(channel)
        .join(pb::JoinRequest {
            ca_hash: opts.token.ca_hash.clone(),
            secret: opts.token.secret.clone(),
            kind: opts.kind.as_str().into(),
            id: opts.id.clone(),
            names: opts.names.clone(),
            public_key_pem,
        })
        .await
        .map_err(|status| JoinError::Refused {
            server: server.clone(),
            message: status.message().to_owned(),
        })?
        .into_inner();
    ums_tls::verify_node_cert(&ca_pem, &reply.cert_pem).map_err(|message| {
        JoinError::BadCertificate {
            server: server.clone(),
            message,
        }
    })?;
    Ok(NodeIdentity {
        kind: opts.kind,
        id: opts.id.clone(),
        ca_pem,
        cert_pem: reply.cert_pem,
        key_pem,
    })
}

/// The identity saved in `dir`, or a new one from [`join`] (then saved there). An identity for
/// another CA than the token's, or about to expire, is replaced.
pub async fn load_or_join(dir: &Path, opts: &JoinOptions) -> Result<NodeIdentity, JoinError> {
    if NodeIdentity::exists(dir) {
        let identity = NodeIdentity::load(dir)?;
        let same_ca = ums_tls::ca_fingerprint(&identity.ca_pem)
            .map(|h| h == opts.token.ca_hash)
            .unwrap_or(false);
        if same_ca
            && identity.kind == opts.kind
            && ums_tls::verify_node_cert(&identity.ca_pem, &identity.cert_pem).is_ok()
        {
            return Ok(identity);
        }
        tracing::info!(dir = %dir.display(), "the saved identity is not valid for this token: joining again");
    }
    let identity = join(opts).await?;
    identity.save(dir)?;
    tracing::info!(kind = %identity.kind, id = %identity.id, server = %opts.server, "joined the network");
    Ok(identity)
}

/// A lazily connected mutual-TLS channel to another component's internal port (`host:port`).
pub fn internal_channel(identity: &NodeIdentity, addr: &str) -> Result<Channel, JoinError> {
    let config = identity.mtls_client_config(&[b"h2"])?;
    let unreachable = |message: String| JoinError::Unreachable {
        server: addr.to_owned(),
        message,
    };
    // The server checks the release a component announces (`ums_proto::version`).
    let announce = ums_proto::version::announce(identity.kind.as_str());
    Ok(endpoint(addr)
        .map_err(unreachable)?
        .user_agent(announce)
        .map_err(|e| unreachable(e.to_string()))?
        .connect_with_connector_lazy(connector(config)))
}

/// The internal port of the server whose admin port is `admin_addr` (`host:port`): its
/// `NetworkService.Status` there says which port it is. Returns `host:port` and a lazily
/// connected mutual-TLS channel to it.
pub async fn internal_channel_via(
    identity: &NodeIdentity,
    admin_addr: &str,
) -> Result<(String, Channel), JoinError> {
    let unreachable = |message: String| JoinError::Unreachable {
        server: admin_addr.to_owned(),
        message,
    };
    let admin = internal_channel(identity, admin_addr)?;
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(CONNECT_TIMEOUT);
    let status = pb::network_service_client::NetworkServiceClient::new(admin)
        .status(req)
        .await
        .map_err(|s| unreachable(s.message().to_owned()))?
        .into_inner();
    if status.internal_port == 0 {
        return Err(unreachable("the server has no internal port".into()));
    }
    let host = admin_addr.rsplit_once(':').map_or(admin_addr, |(h, _)| h);
    let internal = format!("{host}:{}", status.internal_port);
    let channel = internal_channel(identity, &internal)?;
    Ok((internal, channel))
}

async fn connect(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel, String> {
    endpoint(addr)?
        .connect_with_connector(connector(config))
        .await
        .map_err(|e| describe(&e))
}

fn endpoint(addr: &str) -> Result<Endpoint, String> {
    let uri = format!("http://{addr}");
    Endpoint::from_shared(uri)
        .map_err(|e| format!("invalid address {addr:?}: {e}"))
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
        })
}

fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let cause = e.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = e.source();
    }
    text
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP then TLS with the given configuration; the TLS name is the host of the URI.
fn connector(
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: http::Uri| {
        let config = config.clone();
        async move {
            let host = uri.host().ok_or("address without host")?.to_owned();
            let port = uri.port_u16().ok_or("address without port")?;
            let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, BoxError>(hyper_util::rt::TokioIo::new(tls))
        }
    })
}

/// Trusts only the CA in `ca_pem`, no client certificate.
fn ca_client_config(ca_pem: &str) -> Result<rustls::ClientConfig, JoinError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        ums_tls::parse_certs(ca_pem).map_err(|e| ums_tls::TlsError::Pem("network ca".into(), e))?
    {
        roots.add(cert).map_err(ums_tls::TlsError::Rustls)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts any server certificate: only for fetching the public CA certificate, whose hash is
/// then checked against the token.
fn insecure_client_config() -> rustls::ClientConfig {
    let provider = rustls::crypto::ring::default_provider();
    let mut config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

#[derive(Debug)]
struct AnyServerCert(rustls::crypto::CryptoProvider);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
