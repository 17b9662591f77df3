//! `ums-watchdog`: wiring only. See the library for the watchdog itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::Context;
use clap::Parser;
use ums_watchdog::{Config, StopOutcome, WatchdogConfig};

/// Exit status when a child had to be killed at shutdown.
const EXIT_KILLED: u8 = 3;

/// Supervisor of a node: starts the local ums-server and ums-broker as child processes (each in
/// its own process group), waits for them to accept connections, restarts one that exits (at
/// once the first time, then with a growing backoff while it keeps crashing), stops and starts
/// them when a server of the network asks over mutual TLS, and reports them to the servers for
/// the process registry. Their output goes to this process's stderr, each line prefixed with
/// `<id>| ` (or to data_dir/logs/<id>.log with output = "file").
///
/// Configuration: defaults, then the TOML file given with --config (see
/// deploy/ums-watchdog.toml), then UMS_ environment variables with `__` for nesting:
/// UMS_DATA_DIR, UMS_INTERNAL_LISTEN=0.0.0.0:61618, UMS_SERVER__ENABLED=true,
/// UMS_SERVER__BINARY=/usr/bin/ums-server, UMS_BROKER__ENABLED=true,
/// UMS_NETWORK__SERVERS=10.0.0.1:8443, UMS_LOG__FORMAT=json.
///
/// Under systemd (Type=notify) it reports READY=1 once every child's first start is over and
/// STOPPING=1 when it begins to stop.
///
/// A software update whose release holds another ums-watchdog binary ends with the watchdog
/// re-executing itself into it (same pid); the server and broker keep running and are
/// supervised by the new binary.
///
/// SIGTERM or SIGINT: stop the broker (it drains), then the server, each with SIGTERM and its
/// stop_timeout_ms, then SIGKILL of its process group.
///
/// Exit status: 0 stopped on a signal, every child exited in time; 1 the watchdog could not
/// start (such as the internal port in use); 2 invalid configuration; 3 stopped on a signal,
/// but a child did not exit in time and its process group was killed.
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
    /// Supervise (the default).
    Run,
    /// Print the effective configuration as TOML and exit.
    Config,
}

fn main() -> ExitCode {
    // Before anything else: a launcher may have left SIGINT or SIGTERM blocked, and without
    // them the watchdog could not stop its children in order.
    ums_service::unblock_stop_signals();
    let cli = Cli::parse();
    let printing = matches!(cli.command, Some(Command::Config));
    let cfg = match ums_service::config_for_main::<WatchdogConfig>(cli.config.as_deref(), printing)
    {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log = cfg.log.clone();
    let killed = Arc::new(AtomicU8::new(0));
    let k = killed.clone();
    // The main thread forks every child and is the one that re-executes the watchdog (see
    // `ums_watchdog::reexec`); the runtime runs on another.
    let spawner = ums_watchdog::reexec::Spawner::claim();
    let runtime = std::thread::Builder::new()
        .name("ums-watchdog".into())
        .spawn(move || {
            // Ends the spawner's loop on the main thread however this thread ends.
            struct Quit;
            impl Drop for Quit {
                fn drop(&mut self) {
                    ums_watchdog::reexec::quit();
                }
            }
            let _quit = Quit;
            ums_service::run_service(&log, real_main(cfg, k))
        });
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start the runtime thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(s) = spawner {
        s.serve();
    }
    let code = runtime.join().unwrap_or(ExitCode::FAILURE);
    if killed.load(Ordering::Relaxed) != 0 {
        return ExitCode::from(EXIT_KILLED);
    }
    code
}

async fn real_main(cfg: Config, killed: Arc<AtomicU8>) -> anyhow::Result<()> {
    let shutdown = ums_service::shutdown_signal();
    let addr = cfg.internal_listen;
    let internal = ums_service::listen(addr)
        .with_context(|| format!("listen for the internal api on {addr}"))?;
    println!(
        "ums-watchdog {} ({}) on {}",
        env!("CARGO_PKG_VERSION"),
        cfg.network.id,
        internal.local_addr()?
    );
    let metrics = match cfg.metrics_listen {
        Some(a) => {
            Some(ums_service::listen(a).with_context(|| format!("listen for metrics on {a}"))?)
        }
        None => None,
    };
    let adopted = ums_watchdog::reexec::handed_over();
    let watchdog = ums_watchdog::Watchdog::start_adopting(cfg, internal, adopted)?;
    if let Some(l) = metrics {
        watchdog.serve_metrics(l);
    }
    let outcome = watchdog.run_until(shutdown).await;
    if outcome == StopOutcome::Killed {
        killed.store(1, Ordering::Relaxed);
    }
    Ok(())
}
