//! `<service> health`: a probe of the running service's own status endpoint, for container
//! health checks and Kubernetes exec probes in images that hold nothing but the binaries (no
//! curl, no shell). It connects to the address the service listens on (an unspecified address
//! such as `0.0.0.0` is probed on loopback), speaks the endpoint's protocol, and the binary
//! exits 0 when the service answered as it should, 1 otherwise, with one line on stdout or
//! stderr saying what it saw.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to check, and how.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Where the service listens; an unspecified address is probed on loopback.
    pub addr: SocketAddr,
    pub check: Check,
    /// Time the whole probe may take.
    pub timeout: Duration,
}

/// The protocol of the endpoint.
#[derive(Debug, Clone)]
pub enum Check {
    /// Plain HTTP/1.1 `GET path`; healthy on a 2xx status.
    Http { path: String },
    /// HTTPS `GET path` (HTTP/1.1), the server certificate verified against the CA in
    /// `ca_file` for `server_name`; healthy on a 2xx status.
    Https {
        path: String,
        ca_file: PathBuf,
        server_name: String,
    },
    /// Mutual TLS with the node identity in `identity_dir` (`ca.pem`, `node.pem`,
    /// `node-key.pem`), then the HTTP/2 preface; healthy when the server answers with its
    /// SETTINGS frame, which it sends only after accepting the certificate.
    MutualTlsH2 {
        identity_dir: PathBuf,
        server_name: String,
    },
}

impl Probe {
    /// A probe with the default timeout of 5 s.
    pub fn new(addr: SocketAddr, check: Check) -> Probe {
        Probe {
            addr,
            check,
            timeout: Duration::from_secs(5),
        }
    }

    /// The address actually connected to.
    pub fn target(&self) -> SocketAddr {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.addr.port())
    }
}

/// The name to verify a service's certificate for, from the names it was issued for: loopback
/// names first (the probe runs beside the service), else the first one.
pub fn server_name(names: &[String]) -> String {
    ["localhost", "127.0.0.1"]
        .into_iter()
        .find(|n| names.iter().any(|m| m == n))
        .map(str::to_owned)
        .or_else(|| names.first().cloned())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Runs the probe and returns what the service answered.
pub async fn probe(p: &Probe) -> anyhow::Result<String> {
    let target = p.target();
    tokio::time::timeout(p.timeout, run(p, target))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {target} within {:?}", p.timeout))?
}

async fn run(p: &Probe, target: SocketAddr) -> anyhow::Result<String> {
    ums_tls::install_crypto_provider();
    let tcp = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect to {target}"))?;
    match &p.check {
        Check::Http { path } => http_get(tcp, &target.to_string(), path).await,
        Check::Https {
            path,
            ca_file,
            server_name,
        } => {
            let ca = ums_tls::read(ca_file)?;
            let mut roots = rustls::RootCertStore::empty();
            for c in ums_tls::parse_certs(&ca)
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca_file.display()))?
            {
                roots.add(c)?;
            }
            let mut config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let tls = tls_connect(tcp, Arc::new(config), server_name).await?;
            http_get(tls, server_name, path).await
        }
        Check::MutualTlsH2 {
            identity_dir,
            server_name,
        } => {
            let identity = ums_tls::NodeIdentity::load(identity_dir)?;
            let config = identity.mtls_client_config(&[b"h2"])?;
            let mut tls = tls_connect(tcp, config, server_name).await?;
            // Client preface and an empty SETTINGS frame; the server's first frame is its own
            // SETTINGS (RFC 9113, 3.4).
            tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                .await?;
            tls.flush().await?;
            let mut head = [0u8; 9];
            tls.read_exact(&mut head)
                .await
                .context("the service closed the connection: is this certificate accepted?")?;
            if head[3] != 0x04 {
                bail!(
                    "expected an HTTP/2 SETTINGS frame, got frame type {}",
                    head[3]
                );
            }
            Ok(format!(
                "gRPC over mutual TLS answers on {target} (as {}/{})",
                identity.kind.as_str(),
                identity.id
            ))
        }
    }
}

async fn tls_connect(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .with_context(|| format!("`{server_name}` is not a server name"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake for {server_name}"))
}

/// `GET path` over HTTP/1.1; the status line and body on a 2xx, else an error.
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
) -> anyhow::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut response = Vec::new();
    // A close without TLS close_notify still leaves what was read.
    let _ = (&mut stream)
        .take(64 * 1024)
        .read_to_end(&mut response)
        .await;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP response to GET {path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .unwrap_or_default();
    let first = body.lines().next().unwrap_or_default();
    if !(200..300).contains(&code) {
        bail!("GET {path}: {status_line} {first}");
    }
    Ok(format!("GET {path}: {code} {first}"))
}

/// The body of a `health` subcommand: runs the probe on a small runtime of its own, prints the
/// outcome and returns exit status 0 (healthy) or 1.
pub fn main(probe: anyhow::Result<Probe>) -> ExitCode {
    let outcome = probe.and_then(|p| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start runtime")?
            .block_on(self::probe(&p))
    });
    match outcome {
        Ok(line) => {
            println!("healthy: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_first() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            server_name(&names(&["ums.example", "127.0.0.1"])),
            "127.0.0.1"
        );
        assert_eq!(
            server_name(&names(&["ums.example", "server-1"])),
            "ums.example"
        );
        assert_eq!(server_name(&[]), "localhost");
    }

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let p = Probe::new(
            SocketAddr::from(([0, 0, 0, 0], 8443)),
            Check::Http { path: "/".into() },
        );
        assert_eq!(p.target(), SocketAddr::from(([127, 0, 0, 1], 8443)));
    }

    #[tokio::test]
    async fn http_status_decides() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\n\r\nup\n",
                "HTTP/1.1 503 Busy\r\n\r\ndown\n",
            ] {
                if let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            }
        });
        let p = Probe::new(addr, Check::Http { path: "/m".into() });
        assert_eq!(probe(&p).await?, "GET /m: 200 up");
        let err = probe(&p).await.expect_err("503 is unhealthy");
        assert!(err.to_string().contains("503"), "{err}");
        listener_gone(addr).await
    }

    /// Once nothing listens, the probe fails on connect.
    async fn listener_gone(addr: SocketAddr) -> anyhow::Result<()> {
        let p = Probe::new(addr, Check::Http { path: "/".into() });
        for _ in 0..50 {
            if probe(&p).await.is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("{addr} still answers")
    }
}
