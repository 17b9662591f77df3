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
    /// Bring the database schema to this version and exit. A database that holds data is
    /// backed up into <data_dir>/backups first, unless [update] backup_before_migrate = false.
    Migrate,
    /// Print the effective configuration as TOML and exit.
    Config,
    /// Back up the database and the file store into one archive (mode 0600) and exit. The
    /// database is read in one transaction, as it is, while servers keep running.
    Backup {
        /// The archive to write, or a directory to write it in; default
        /// `<data_dir>/backups/ums-<UTC time>-schema<version>.umsbak`.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Restore an archive into the configured database and data directory and exit. The whole
    /// archive is checked first; a database that holds data is refused unless --force.
    Restore {
        /// The archive `ums-server backup` wrote.
        file: PathBuf,
        /// Replace the data of a database that is not empty (in one transaction).
        #[arg(long)]
        force: bool,
    },
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
        Command::Backup { output } => {
            let mut progress = terminal_progress();
            let summary =
                ums_server::backup::create_backup_with(&cfg, output.as_deref(), &mut progress)
                    .await?;
            end_progress();
            let rows: u64 = summary.tables.values().sum();
            println!(
                "backup {} ({} bytes, mode 0600)\n  schema {}, taken at {}\n  {} rows in {} tables, {} files ({} bytes)",
                summary.path.display(),
                summary.bytes,
                summary.schema_version,
                summary.taken_at,
                rows,
                summary.tables.len(),
                summary.files,
                summary.file_bytes,
            );
            print_tables(&summary.tables);
            Ok(())
        }
        Command::Restore { file, force } => {
            let mut progress = terminal_progress();
            let summary =
                ums_server::backup::restore_backup(&cfg, &file, force, &mut progress).await?;
            end_progress();
            let rows: u64 = summary.tables.values().sum();
            println!(
                "restored {} into {}{}\n  schema {}, taken at {}\n  {} rows in {} tables, {} files ({} bytes)",
                file.display(),
                ums_db::redact(&cfg.database_url),
                if summary.replaced {
                    " (its data replaced)"
                } else {
                    ""
                },
                summary.schema_version,
                summary.taken_at,
                rows,
                summary.tables.len(),
                summary.files,
                summary.file_bytes,
            );
            print_tables(&summary.tables);
            if let Some(token_file) = &summary.token_needed {
                println!(
                    "the restored network CA key opens only with the network token: put the token in {} (mode 0600) before starting the server",
                    token_file.display()
                );
            }
            Ok(())
        }
        Command::Migrate => {
            let url = &cfg.database_url;
            let db = ums_db::Db::connect(url)
                .await
                .with_context(|| format!("open database {}", ums_db::redact(url)))?;
            let auto_backup = ums_server::backup::AutoBackup::new(&cfg);
            let opts = ums_db::RunOptions {
                applied_by: "ums-server migrate".into(),
                binary_version: ums_server::network::update::binary_version(),
                ..Default::default()
            };
            let outcome = ums_server::network::update::migrate_guarded(&db, &opts, &auto_backup)
                .await
                .context("migrate the database schema");
            db.close().await.ok();
            let outcome = outcome?;
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

/// Progress lines on stderr when it is a terminal: each table with its rows, each file's bytes.
fn terminal_progress() -> impl FnMut(ums_server::backup::Progress<'_>) + Send {
    use std::io::{IsTerminal as _, Write as _};
    use ums_server::backup::Progress;
    let tty = std::io::stderr().is_terminal();
    move |p| {
        if !tty {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = match p {
            Progress::Table { name, rows } => {
                writeln!(err, "\r\x1b[K  table {name:<24} {rows:>9} rows")
            }
            Progress::File {
                sha256,
                done,
                total,
            } => write!(
                err,
                "\r\x1b[K  file  {}  {done:>12} / {total} bytes",
                sha256.get(..12).unwrap_or(sha256)
            ),
        };
    }
}

fn end_progress() {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
}

fn print_tables(tables: &std::collections::BTreeMap<String, u64>) {
    for (name, rows) in tables {
        println!("    {name:<24} {rows:>9}");
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
