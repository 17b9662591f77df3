//! The network check's probes: a round trip to another component over the internal mutual TLS,
//! and the TLS handshake a device would make on a device port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_proto::network::v1::watchdog_service_client::WatchdogServiceClient;
use ums_tls::NodeIdentity;

/// Time a probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A round trip to the component `p` on its internal port: `NetworkService.Status` of a server,
/// `WatchdogStatus` of a watchdog, a mutual-TLS handshake verified against the network CA for
/// any other kind. Returns the time it took.
pub async fn internal_round_trip(
    identity: &NodeIdentity,
    p: &pb::ProcessInfo,
) -> Result<Duration, String> {
    if p.internal_port == 0 {
        return Err("it has no internal port in the registry".into());
    }
    let addr = super::host_port(&p.host, p.internal_port);
    let start = Instant::now();
    let work = async {
        match p.kind.as_str() {
            "server" => {
                let channel =
                    ums_network::internal_channel(identity, &addr).map_err(|e| e.to_string())?;
                let status = NetworkServiceClient::new(channel)
                    .status(pb::StatusRequest {})
                    .await
                    .map_err(|s| s.message().to_owned())?
                    .into_inner();
                if status.process_id != p.id {
                    return Err(format!(
                        "{addr} answers as {}, not as {}",
                        status.process_id, p.id
                    ));
                }
                Ok(())
            }
            "watchdog" => {
                let channel =
                    ums_network::internal_channel(identity, &addr).map_err(|e| e.to_string())?;
                WatchdogServiceClient::new(channel)
                    .watchdog_status(pb::WatchdogStatusRequest {})
                    .await
                    .map_err(|s| s.message().to_owned())?;
                Ok(())
            }
            _ => {
                let config = identity
                    .mtls_client_config(&[b"h2"])
                    .map_err(|e| e.to_string())?;
                handshake(config, &p.host, &addr).await.map(|_| ())
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer from {addr} within {PROBE_TIMEOUT:?}")),
    }
}

/// A device's TLS handshake with `addr`, verifying the chain against `ca_pem` for the name
/// `host`. Returns the time it took and when the presented certificate expires.
pub async fn device_handshake(
    ca_pem: &str,
    host: &str,
    addr: &str,
) -> Result<(Duration, Option<i64>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ums_tls::parse_certs(ca_pem)? {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let start = Instant::now();
    match tokio::time::timeout(PROBE_TIMEOUT, handshake(Arc::new(config), host, addr)).await {
        Ok(Ok(not_after)) => Ok((start.elapsed(), not_after)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no TLS handshake with {addr} within {PROBE_TIMEOUT:?}"
        )),
    }
}

/// Connects and completes a TLS handshake; the leaf certificate's expiry.
async fn handshake(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    addr: &str,
) -> Result<Option<i64>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| format!("`{host}` is not a name a certificate can carry: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
    let (_, conn) = tls.get_ref();
    Ok(conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| ums_tls::not_after_ms(c)))
}
