//! `swp-auth`: wiring only. See the library for the service itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use swp_auth::{Config, Listeners, SwpAuthConfig};

/// Shared Workplace login service: checks device users' passwords against Active Directory or
/// LDAP for the servers of the network.
///
/// Configuration: defaults, then the TOML file given with --config, then UMS_ environment
/// variables with `__` for nesting (UMS_DATA_DIR, UMS_NETWORK__SERVERS,
/// UMS_NETWORK__TOKEN_FILE, UMS_INTERNAL__LISTEN, UMS_LOG__LEVEL).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "UMS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Print the effective configuration as TOML and exit.
    Config,
    /// Probe the running service over mutual TLS with its own identity: exit 0 when it
    /// answers, 1 otherwise. For container health checks.
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let printing = matches!(command, Command::Config);
    let cfg = match ums_service::config_for_main::<SwpAuthConfig>(cli.config.as_deref(), printing) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if matches!(command, Command::Health) {
        return ums_service::health::main(Ok(ums_service::health::Probe::new(
            cfg.listen,
            ums_service::health::Check::MutualTlsH2 {
                identity_dir: cfg.network.identity_dir.clone(),
                server_name: ums_service::health::server_name(&cfg.network.names),
            },
        )));
    }
    let log = cfg.log.clone();
    ums_service::run_service(&log, real_main(command, cfg))
}

async fn real_main(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        // Printed (or refused) by `config_for_main`, or probed, before the runtime starts.
        Command::Config | Command::Health => Ok(()),
        Command::Run => {
            ums_tls::install_crypto_provider();
            let shutdown = ums_service::shutdown_signal();
            let addr = cfg.listen;
            let identity = swp_auth::identity(&cfg).await?;
            let internal = ums_service::listen(addr)
                .with_context(|| format!("listen for servers on {addr}"))?;
            let metrics = match cfg.metrics_listen {
                Some(a) => Some(
                    ums_service::listen(a).with_context(|| format!("listen for metrics on {a}"))?,
                ),
                None => None,
            };
            println!(
                "swp-auth {} ({}/{})\n  servers: https://{} (mutual TLS)",
                env!("CARGO_PKG_VERSION"),
                identity.kind,
                identity.id,
                internal.local_addr()?
            );
            swp_auth::run(&cfg, identity, Listeners { internal, metrics }, shutdown).await
        }
    }
}
