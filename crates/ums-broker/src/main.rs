//! `ums-broker`: wiring only. See the library for the broker itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ums_broker::{BrokerConfig, Config};

/// mimalloc rather than glibc's malloc: tokio allocates each task and each socket's readiness
/// state aligned to 128 bytes, and glibc serves such a block with up to 128 bytes lost beside
/// it, while mimalloc's size classes hold it without loss. Three such blocks per connection:
/// 20.0 MB with glibc, 15.3 MB with mimalloc at 9,850 idle connections. Built as v2 without
/// transparent huge pages, which would make each thread's first heap page 2 MB resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The load balancer devices connect to: forwards every device TCP connection to one of the
/// servers' device ports, round robin over the servers that pass their health checks. TLS
/// passes through untouched.
///
/// Configuration: defaults, then the TOML file given with --config (see
/// deploy/ums-broker.toml), then UMS_ environment variables with `__` for nesting:
/// UMS_LISTEN=0.0.0.0:30001, UMS_SERVERS=10.0.0.1:30002,10.0.0.2:30002,
/// UMS_HEALTH__INTERVAL_MS=250, UMS_RATE__PER_SECOND=100, UMS_METRICS__LISTEN=127.0.0.1:9102,
/// UMS_LOG__LEVEL=info, UMS_LOG__FORMAT=json.
///
/// SIGTERM or SIGINT: stop accepting, let proxied connections finish for drain_timeout_s,
/// exit 0. Exit status 2: invalid configuration; 1: the broker could not start.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "UMS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Print the effective configuration as TOML and exit.
    Config,
    /// Probe the running broker (GET /metrics on metrics.listen): exit 0 when it answers, 1
    /// otherwise. For container health checks.
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printing = matches!(cli.command, Some(Command::Config));
    let cfg = match ums_service::config_for_main::<BrokerConfig>(cli.config.as_deref(), printing) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(Command::Health) = cli.command {
        return ums_service::health::main(match cfg.metrics_listen {
            Some(addr) => Ok(ums_service::health::Probe::new(
                addr,
                ums_service::health::Check::Http {
                    path: "/metrics".into(),
                },
            )),
            None => Err(anyhow::anyhow!(
                "metrics.listen is empty: the health probe reads /metrics"
            )),
        });
    }
    let log = cfg.log.clone();
    ums_service::run_service(&log, real_main(cfg))
}

async fn real_main(cfg: Config) -> anyhow::Result<()> {
    let shutdown = ums_service::shutdown_signal();
    let addr = cfg.listen;
    let listener =
        ums_service::listen(addr).with_context(|| format!("listen for devices on {addr}"))?;
    let metrics = match cfg.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("listen for metrics on {a}"))?,
        ),
        None => None,
    };
    let servers = std::sync::Arc::new(ums_broker::ServerSet::new(cfg.servers.clone()));
    if cfg.network.enabled() {
        ums_tls::install_crypto_provider();
        let identity = cfg.network.identity().await.context("join the network")?;
        println!(
            "ums-broker {} ({}) on {} -> the running servers of the network (via {})",
            env!("CARGO_PKG_VERSION"),
            identity.id,
            listener.local_addr()?,
            cfg.network.servers.join(", ")
        );
        tokio::spawn(ums_broker::network::follow(
            cfg.network.clone(),
            identity,
            servers.clone(),
            listener.local_addr()?.port(),
        ));
    } else {
        println!(
            "ums-broker {} on {} -> {}",
            env!("CARGO_PKG_VERSION"),
            listener.local_addr()?,
            if cfg.servers.is_empty() {
                "no servers".to_owned()
            } else {
                cfg.servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    ums_broker::run_with_servers(&cfg, servers, listener, metrics, shutdown).await
}
