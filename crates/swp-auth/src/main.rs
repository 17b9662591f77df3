//! `swp-auth`: wiring only. See the library for the service itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use swp_auth::{Listeners, SwpAuthConfig};

/// Shared Workplace login service: checks device users' passwords against Active Directory or
/// LDAP for the servers of the network.
///
/// Configuration: defaults, then the TOML file given with --config, then UMS_ environment
/// variables with `__` for nesting (UMS_IDENTITY_DIR, UMS_INTERNAL__LISTEN, UMS_LOG__LEVEL).
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
    let cfg: SwpAuthConfig = match ums_service::load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Health) = cli.command {
        let names = match cfg.network.names.as_slice() {
            [] => vec!["127.0.0.1".to_owned()],
            names => names.to_vec(),
        };
        return ums_service::health::main(cfg.listen_addr().map(|addr| {
            ums_service::health::Probe::new(
                addr,
                ums_service::health::Check::MutualTlsH2 {
                    identity_dir: cfg.identity_dir.clone(),
                    server_name: ums_service::health::server_name(&names),
                },
            )
        }));
    }
    let log = cfg.log.clone();
    ums_service::run_service(&log, real_main(cli.command.unwrap_or(Command::Run), cfg))
}

async fn real_main(command: Command, cfg: SwpAuthConfig) -> anyhow::Result<()> {
    match command {
        Command::Config => {
            print!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
        Command::Health => anyhow::bail!("the health probe runs without the service"),
        Command::Run => {
            ums_tls::install_crypto_provider();
            let shutdown = ums_service::shutdown_signal();
            let addr = cfg.listen_addr()?;
            let identity = swp_auth::identity(&cfg).await?;
            let internal = ums_service::listen(addr)
                .with_context(|| format!("listen for servers on {addr}"))?;
            println!(
                "swp-auth {} ({}/{})\n  servers: https://{} (mutual TLS)",
                env!("CARGO_PKG_VERSION"),
                identity.kind,
                identity.id,
                internal.local_addr()?
            );
            swp_auth::run(&cfg, identity, Listeners { internal }, shutdown).await
        }
    }
}
