//! `ums-server`: wiring only. See the library for the server itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ums_server::{Config, Listeners, ServerConfig};

/// The management server of the suite: device API, admin API (gRPC and HTTPS JSON).
///
/// Configuration: defaults, then the TOML file given with --config, then UMS_ environment
/// variables with `__` for nesting (UMS_DATA_DIR, UMS_DATABASE_URL, UMS_DEVICE__LISTEN,
/// UMS_ADMIN__LISTEN, UMS_LOG__LEVEL, UMS_LOG__FORMAT=json).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "UMS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log as one JSON object per line (same as log.format = "json").
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default). A first start initialises the data directory.
    Run,
    /// Initialise the data directory and database, print the first administrator, and exit.
    Init,
    /// Bring the database schema to this version and exit.
    Migrate,
    /// Print the effective configuration as TOML and exit.
    Config,
    /// Probe the running server's status (GET /api/v1/health on the admin port): exit 0 when
    /// healthy, 1 otherwise. For container health checks.
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let printing = matches!(command, Command::Config);
    let mut cfg =
        match ums_service::config_for_main::<ServerConfig>(cli.config.as_deref(), printing) {
            Ok(c) => c,
            Err(code) => return code,
        };
    if matches!(command, Command::Health) {
        return ums_service::health::main(Ok(ums_service::health::Probe::new(
            cfg.admin.listen,
            ums_service::health::Check::Https {
                path: "/api/v1/health".into(),
                ca_file: ums_server::tls_dir(&cfg.data_dir).join("ca.pem"),
                server_name: ums_service::health::server_name(&cfg.tls_names),
            },
        )));
    }
    if cli.log_json {
        cfg.log.format = ums_service::LogFormat::Json;
    }
    let log = cfg.log.clone();
    ums_service::run_service(&log, real_main(command, cfg))
}

async fn real_main(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        // Printed (or refused) by `config_for_main`, or probed, before the runtime starts.
        Command::Config | Command::Health => Ok(()),
        Command::Migrate => {
            let url = &cfg.database_url;
            let (_, outcome) = ums_db::Db::open(url)
                .await
                .with_context(|| format!("open database {}", ums_db::redact(url)))?;
            match outcome.applied.as_slice() {
                [] => println!("schema is at version {}, nothing to do", outcome.to),
                applied => println!(
                    "migrated the schema to {} ({} migrations)",
                    outcome.to,
                    applied.len()
                ),
            }
            Ok(())
        }
        Command::Init => {
            let prepared = ums_server::prepare(&cfg).await?;
            print_first_start(&prepared);
            if prepared.bootstrap.created {
                println!(
                    "created the network: token in {} (mode 0600); copy it to each component that joins",
                    prepared.bootstrap.token_file.display()
                );
            }
            println!(
                "data directory {} ready (schema {})",
                cfg.data_dir.display(),
                prepared.migrated.to
            );
            Ok(())
        }
        Command::Run => {
            let shutdown = ums_service::shutdown_signal();
            let device_addr = cfg.device.listen;
            let admin_addr = cfg.admin.listen;
            let prepared = ums_server::prepare(&cfg).await?;
            let device = ums_service::listen(device_addr)
                .with_context(|| format!("listen for devices on {device_addr}"))?;
            let admin = ums_service::listen(admin_addr)
                .with_context(|| format!("listen for administrators on {admin_addr}"))?;
            let internal = match cfg.network.internal_listen {
                Some(addr) => Some(
                    ums_service::listen(addr)
                        .with_context(|| format!("listen for the network on {addr}"))?,
                ),
                None => None,
            };
            let metrics = match cfg.metrics_listen {
                Some(addr) => Some(
                    ums_service::listen(addr)
                        .with_context(|| format!("listen for metrics on {addr}"))?,
                ),
                None => None,
            };
            print_first_start(&prepared);
            println!(
                "ums-server {} ({}) on {} database\n  devices:        {}\n  administrators: https://{} (gRPC and JSON under /api/v1/)\n  network:        {} (mutual TLS)\n  CA certificate: {}\n  network token:  {}",
                env!("CARGO_PKG_VERSION"),
                prepared.process_id,
                prepared.db.backend().as_str(),
                device.local_addr()?,
                admin.local_addr()?,
                match &internal {
                    Some(l) => l.local_addr()?.to_string(),
                    None => "off".into(),
                },
                prepared.ca_path.display(),
                prepared.bootstrap.token_file.display(),
            );
            ums_server::run(
                &cfg,
                prepared,
                Listeners {
                    device,
                    admin,
                    internal,
                    metrics,
                },
                shutdown,
            )
            .await
        }
    }
}

fn print_first_start(prepared: &ums_server::Prepared) {
    if let Some(file) = &prepared.initial_password_file {
        println!(
            "first start: administrator `{}` created, password in {} (mode 0600); change it with `umsctl admins passwd {}`",
            ums_server::FIRST_ADMIN,
            file.display(),
            ums_server::FIRST_ADMIN
        );
    }
}
