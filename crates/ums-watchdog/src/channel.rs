//! A lazy gRPC channel to another component's internal port over mutual TLS.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use ums_tls::NodeIdentity;

/// A channel to `addr` (`host:port`) that presents this node's certificate and trusts only the
/// cluster CA. Connects on first use and reconnects after failures.
pub fn internal_channel(identity: &NodeIdentity, addr: &str) -> anyhow::Result<Channel> {
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(addr);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&identity.ca_pem))
        .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
        .domain_name(host);
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}
