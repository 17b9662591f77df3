//! Connection to the admin API, the bearer token, call errors and password input.

use std::error::Error as _;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};
use ums_proto::admin::v1::admin_service_client::AdminServiceClient;

/// Adds `authorization: Bearer <token>` and this release's `x-ums-version` to every call, so
/// a server of a release that does not serve this umsctl says so, naming both versions.
#[derive(Clone)]
pub struct Auth {
    header: Option<AsciiMetadataValue>,
    version: AsciiMetadataValue,
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        request
            .metadata_mut()
            .insert(ums_proto::version::HEADER, self.version.clone());
        Ok(request)
    }
}

/// An admin API client that authenticates every call.
pub type Admin = AdminServiceClient<InterceptedService<Channel, Auth>>;

/// Connects to the admin API at `server` (`https://host:port`), trusting only the CA in `ca`.
///
/// The TLS server name is the host of the URL; IP hosts are checked against the IP address
/// entries of the server certificate.
pub async fn connect(server: &str, ca: &Path, token: Option<&str>) -> anyhow::Result<Admin> {
    if !server.starts_with("https://") {
        anyhow::bail!("server address {server:?} must start with https://");
    }
    let pem = std::fs::read(ca).with_context(|| format!("cannot read ca file {}", ca.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("ca file {} holds no pem certificate", ca.display());
    }
    let header = token
        .map(|token| MetadataValue::try_from(format!("Bearer {token}")))
        .transpose()
        .context("the stored session token is not valid: run `umsctl login`")?;
    let channel = Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("invalid server address {server:?}"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .context("invalid tls configuration")?
        .connect()
        .await
        .map_err(|err| anyhow::anyhow!("cannot connect to {server}: {}", chain(&err)))?;
    let version = MetadataValue::try_from(ums_proto::version::announce("umsctl"))
        .context("this build's version is not a valid header")?;
    Ok(AdminServiceClient::with_interceptor(
        channel,
        Auth { header, version },
    ))
}

/// An error and its causes, joined with ": ", skipping causes already in the text.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The message printed for a failed call.
pub fn status_message(status: &Status) -> String {
    match status.code() {
        Code::Unauthenticated => "not logged in or session expired: run `umsctl login`".to_owned(),
        Code::Unavailable | Code::Unknown | Code::Internal if status.source().is_some() => {
            chain(status)
        }
        _ if status.message().is_empty() => format!("{:?}", status.code()).to_lowercase(),
        _ => status.message().to_owned(),
    }
}

/// A failed call, printed as `error: <message>`.
#[derive(Debug)]
pub struct CallError(pub String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallError {}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        Self(status_message(&status))
    }
}

/// Unwraps a response, turning a failed call into a [`CallError`].
pub fn ok<T>(result: Result<tonic::Response<T>, Status>) -> Result<T, CallError> {
    result
        .map(tonic::Response::into_inner)
        .map_err(CallError::from)
}

/// Reads a password: from the environment variable `env`, else the first line of `file`, else a
/// line of standard input (prompted with `prompt`, without echo, when it is a terminal).
pub async fn read_password(env: &str, file: Option<&Path>, prompt: &str) -> anyhow::Result<String> {
    if let Some(password) = std::env::var_os(env) {
        return password
            .into_string()
            .map_err(|_| anyhow::anyhow!("{env} is not valid utf-8"));
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read password file {}", file.display()))?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    let password = if std::io::stdin().is_terminal() {
        prompt_hidden(prompt).await?
    } else {
        read_line()?
    };
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    Ok(password)
}

/// One line of standard input without its line ending.
fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Runs `stty` on the terminal; returns whether it succeeded.
fn stty(arg: &str) -> bool {
    std::process::Command::new("stty")
        .arg(arg)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Prompts on standard error and reads a line from the terminal with echo turned off (through
/// `stty`). When echo cannot be turned off the prompt says the input is visible. Echo is turned
/// back on even when the user interrupts with Ctrl-C.
async fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    let hidden = stty("-echo");
    let mut stderr = std::io::stderr();
    let visible = if hidden { "" } else { " (input is visible)" };
    let _ = write!(stderr, "{prompt}{visible}: ");
    let _ = stderr.flush();
    let line = tokio::select! {
        line = tokio::task::spawn_blocking(read_line) => line,
        _ = tokio::signal::ctrl_c() => {
            if hidden {
                stty("echo");
            }
            let _ = writeln!(stderr);
            std::process::exit(130);
        }
    };
    if hidden {
        stty("echo");
        let _ = writeln!(stderr);
    }
    line.context("cannot read the password")?
}
