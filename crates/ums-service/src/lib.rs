//! Plumbing every service of the suite shares: configuration loading, logging, the shutdown
//! signal, and serving an HTTP router (gRPC and JSON alike) over TLS.

pub mod diagnostics;
pub mod health;
pub mod metrics;
pub mod proxy;
mod serve;

pub use serve::{ClientAddr, Peer, ServeOptions, serve_tls};

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A service's configuration file format (serde, loaded by [`load_config`]), turned once, with
/// every value checked, into the validated configuration the service runs with: addresses
/// parsed, names and paths resolved, so nothing parses or looks anything up later.
pub trait ServiceConfig: Serialize + Default + for<'de> Deserialize<'de> + Clone {
    /// The checked configuration.
    type Validated;

    /// Checks every value; the error names the key.
    fn validate(&self) -> anyhow::Result<Self::Validated>;

    /// What the `config` subcommand prints: secrets redacted.
    fn redacted(&self) -> Self {
        self.clone()
    }
}

/// What a service's `main` does with its configuration: load it (see [`load_config`]) and
/// validate it; with `print` (the `config` subcommand of every binary) write it as TOML to
/// stdout, secrets redacted. `Err` carries the exit status to return: 2 for an invalid
/// configuration (with the reason on stderr), 0 after printing.
pub fn config_for_main<T: ServiceConfig>(
    file: Option<&Path>,
    print: bool,
) -> Result<T::Validated, std::process::ExitCode> {
    let loaded = load_config::<T>(file).and_then(|c| c.validate().map(|v| (c, v)));
    let (cfg, validated) = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e:#}");
            return Err(std::process::ExitCode::from(2));
        }
    };
    if !print && let Ok(text) = toml::to_string_pretty(&cfg.redacted()) {
        diagnostics::set_config(&text);
    }
    if print {
        return Err(match toml::to_string_pretty(&cfg.redacted()) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        });
    }
    Ok(validated)
}

/// Deserializes a list given as `["a", "b"]` (TOML) or as `"a,b"` (an environment variable):
/// `#[serde(deserialize_with = "ums_service::list_or_commas")]`.
pub fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Builds the configuration sources of a service in order of precedence, lowest first: the
/// defaults of `T`, the TOML file (when given; it must exist), then `UMS_` environment variables
/// with `__` separating nested keys (`UMS_DEVICE__LISTEN=0.0.0.0:30001`).
///
/// Only variables whose first segment names a key of `T` are read: the services of a node share
/// one environment, and a variable meant for another (or for the tests) must not make this one
/// refuse to start. Unknown keys in the file are still refused, so a typo there is caught.
pub fn figment<T: Serialize + Default>(file: Option<&Path>) -> Figment {
    let known: Vec<String> = figment::value::Value::serialize(T::default())
        .ok()
        .and_then(|v| v.into_dict())
        .map(|dict| dict.into_keys().collect())
        .unwrap_or_default();
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(Env::prefixed("UMS_").split("__").filter(move |key| {
        // The key arrives split into `a.b` already; take its top-level segment.
        let first = key.as_str().split('.').next().unwrap_or_default();
        known.iter().any(|k| k.eq_ignore_ascii_case(first))
    }))
}

/// Extracts a configuration from its sources, with an error naming the offending key.
pub fn load_config<T>(file: Option<&Path>) -> anyhow::Result<T>
where
    T: Serialize + Default + for<'de> Deserialize<'de>,
{
    if let Some(file) = file
        && !file.exists()
    {
        anyhow::bail!("configuration file {} does not exist", file.display());
    }
    Ok(figment::<T>(file).extract()?)
}

/// Extracts a configuration from TOML text over the defaults of `T`, as [`load_config`] does
/// with a file's content, but without reading the environment: for tests and fuzzing of the
/// configuration formats.
pub fn config_from_toml<T>(text: &str) -> anyhow::Result<T>
where
    T: Serialize + Default + for<'de> Deserialize<'de>,
{
    Ok(Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::string(text))
        .extract()?)
}

/// The body of every service's `main` after its configuration is loaded: installs the logger,
/// starts the multi-threaded runtime, runs `service` on a worker thread (not on the thread that
/// blocks in `main`, where accept loops would be woken through an extra thread hop), and maps
/// the outcome to an exit code: 0 on success, 1 on an error (printed), 2 on a bad log setting.
pub fn run_service<F>(log: &LogConfig, service: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    use std::process::ExitCode;
    unblock_stop_signals();
    if let Err(e) = init_logging(log) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::spawn(service)
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("service task failed: {e}")))
    });
    // Tasks still running (connections past their drain timeout) end here.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit of open files to the hard limit: every device connection is a
/// descriptor (two in a broker), and the usual soft limit of 1024 would refuse a storm of
/// devices long before memory or CPU run out. Returns the limits before and after.
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some((soft, soft));
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::debug!(from = soft, to = hard, "raised the open files limit");
            Some((soft, hard))
        }
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "could not raise the open files limit");
            Some((soft, soft))
        }
    }
}

/// The soft limit of open files of this process.
pub fn open_files_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Unblocks SIGINT and SIGTERM in the calling thread, and so in the threads it starts later.
///
/// A blocked signal is inherited across `exec` (a launcher that blocks SIGINT to outlive its
/// children's Ctrl-C, for one): left blocked, Ctrl-C or a SIGTERM would never reach the
/// service and it could not stop gracefully. [`run_service`] calls it before the runtime starts
/// its threads.
pub fn unblock_stop_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_unblock() {
        eprintln!("warning: could not unblock SIGINT and SIGTERM: {e}");
    }
}

/// Length of the accept queue of the services' listeners. A storm of devices connecting at once
/// must queue, not be dropped: a dropped SYN costs the device a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener with [`LISTEN_BACKLOG`] (the default of 128 overflows at 08:00).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging configuration, the `[log]` table of every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `tracing` syntax, such as `info` or `ums_server=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Installs the global tracing subscriber. Call once, from `main`. Every line also goes, as
/// plain text, into the process's recent-log ring ([`diagnostics::OWN_LOG`]) for support
/// bundles.
pub fn init_logging(cfg: &LogConfig) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(&cfg.level)
            .map_err(|e| anyhow::anyhow!("invalid log level `{}`: {e}", cfg.level))?,
    };
    use std::io::IsTerminal as _;
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let stderr = match cfg.format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr.json().boxed(),
    };
    let recent = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(diagnostics::OwnLogWriter);
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(recent)
        .try_init()
        .map_err(|e| anyhow::anyhow!("install logger: {e}"))
}

/// Whether log lines get colour escapes: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>). A file, a pipe or a journal gets
/// plain text.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A future that resolves when the process receives SIGINT or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled: call it
/// before binding the listeners, so a SIGTERM that arrives as soon as a port answers already
/// means "stop gracefully" rather than the default action of dying on the spot. Must be called
/// inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers the process can only be killed; never resolve.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
            _ = int.recv() => tracing::info!("received SIGINT, shutting down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        let (_, now) = raise_open_files_limit().expect("limits");
        assert_eq!(now, hard);
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").0,
            hard
        );
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        name: String,
        nested: Nested,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Nested {
        listen_addr: String,
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn file_then_environment_with_double_underscore_nesting() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "name = \"file\"\n[nested]\nlisten_addr = \"a\"\n")?;
            jail.set_env("UMS_NESTED__LISTEN_ADDR", "b");
            let cfg: Sample = figment::<Sample>(Some(Path::new("c.toml"))).extract()?;
            assert_eq!(cfg.name, "file");
            assert_eq!(cfg.nested.listen_addr, "b");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn variables_of_other_services_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("UMS_SOMETHING_ELSE", "x");
            jail.set_env("UMS_NAME", "env");
            let cfg: Strict = figment::<Strict>(None).extract()?;
            assert_eq!(cfg.name, "env");
            Ok(())
        });
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Strict {
        name: String,
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load_config::<Sample>(Some(Path::new("/nonexistent/ums.toml")))
            .expect_err("missing file");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
