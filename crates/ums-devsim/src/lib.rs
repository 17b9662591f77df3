//! Device simulator: registers many devices against the device API and checks them in, at a given
//! concurrency, and reports throughput and latencies.
//!
//! Every simulated device behaves like a real unit: it opens its own TLS connection, generates its
//! own 32-byte secret, registers, checks in and downloads its settings when the server says they
//! changed. [`DeviceClient`] is the same client, usable on its own to act as one device (the
//! end-to-end tests do this).

mod failover;
mod swp;

pub use failover::Failover;

pub use swp::{LoginReport, SessionCheckIns, run_logins, run_session_load};

use std::collections::HashSet;
use std::error::Error as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};
use ums_proto::device::v1::device_service_client::DeviceServiceClient;
use ums_proto::device::v1::{
    CheckInRequest, CheckInResponse, FetchJobsRequest, FetchJobsResponse, GetSettingsRequest,
    GetSettingsResponse, RegisterRequest, RegisterResponse, ReportJobResultRequest,
};

/// Firmware version the simulated devices report.
pub const SIM_FIRMWARE: &str = "11.10.100";

/// Number of distinct error messages kept in a [`Report`].
const ERROR_SAMPLES: usize = 5;

/// Time allowed to open a connection (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a channel to `addr` (`https://host:port`), trusting only the CA in `ca_pem`.
///
/// The TLS server name is the host of the URL; IP hosts (`127.0.0.1`, `[::1]`) are checked against
/// the IP address entries of the certificate. A plain `http://` address opens an unencrypted
/// channel, which is only meant for tests.
fn endpoint(addr: &str, ca_pem: &[u8]) -> anyhow::Result<Endpoint> {
    endpoint_with(addr, ca_pem, CONNECT_TIMEOUT, CALL_TIMEOUT)
}

/// [`endpoint`] with the given connect and call timeouts.
fn endpoint_with(
    addr: &str,
    ca_pem: &[u8],
    connect_timeout: Duration,
    call_timeout: Duration,
) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("invalid server address {addr:?}"))?
        .connect_timeout(connect_timeout)
        .timeout(call_timeout);
    if addr.starts_with("http://") {
        return Ok(endpoint);
    }
    if !addr.starts_with("https://") {
        anyhow::bail!("server address {addr:?} must start with https://");
    }
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    endpoint
        .tls_config(tls)
        .context("invalid tls configuration")
}

/// The addresses of a comma-separated list (at least one, maybe empty, which `endpoint` refuses).
fn addresses(list: &str) -> Vec<&str> {
    let v: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if v.is_empty() { vec![list] } else { v }
}

/// Formats a call error with its code and the chain of underlying causes.
fn describe(op: &str, status: &Status) -> String {
    let mut text = format!("{op}: {:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(err) = source {
        let cause = err.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = err.source();
    }
    text
}

/// A client acting as one device on the device API.
///
/// It holds a 32-byte secret (random unless set with [`DeviceClient::set_secret`]), remembers the
/// device id returned by [`DeviceClient::register`] and sends the id and secret as metadata on
/// every later call. Calls made before the device id is known carry no credentials, so the server
/// answers them with `Unauthenticated`.
#[derive(Clone)]
pub struct DeviceClient {
    inner: DeviceServiceClient<Failover>,
    secret: Vec<u8>,
    device_id: Option<i64>,
    firmware: String,
}

impl std::fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClient")
            .field("device_id", &self.device_id)
            .field("firmware", &self.firmware)
            .finish_non_exhaustive()
    }
}

impl DeviceClient {
    /// Connects to the device API at `addr` (`https://host:port`), trusting the CA in `ca_pem`.
    ///
    /// `addr` may list several addresses separated by commas (the brokers of a network, as a
    /// device's list of load balancers): calls go to the first, and a call that cannot reach
    /// the one in use moves the device on to the next at once (see [`Failover`]).
    ///
    /// The connection is opened now, so an unreachable server or a bad certificate is reported
    /// here (for a list: when none of them can be reached).
    pub async fn connect(addr: &str, ca_pem: &[u8]) -> anyhow::Result<Self> {
        let addrs = addresses(addr);
        let mut errors = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            match endpoint(a, ca_pem)?.connect().await {
                Ok(channel) => {
                    let mut channels = addrs
                        .iter()
                        .map(|a| Ok(endpoint(a, ca_pem)?.connect_lazy()))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    channels[i] = channel;
                    return Ok(Self::from_failover(Failover::starting_at(channels, i)));
                }
                Err(err) => {
                    let mut text = err.to_string();
                    let mut source = err.source();
                    while let Some(cause) = source {
                        text.push_str(": ");
                        text.push_str(&cause.to_string());
                        source = cause.source();
                    }
                    errors.push(format!("cannot connect to {a}: {text}"));
                }
            }
        }
        anyhow::bail!("{}", errors.join("; "))
    }

    /// Like [`DeviceClient::connect`], but the connection is opened by the first call.
    pub fn connect_lazy(addr: &str, ca_pem: &[u8]) -> anyhow::Result<Self> {
        let channels = addresses(addr)
            .into_iter()
            .map(|a| Ok(endpoint(a, ca_pem)?.connect_lazy()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::from_failover(Failover::new(channels)))
    }

    /// Like [`DeviceClient::connect_lazy`], giving up on a connection attempt or a call after
    /// `timeout` (instead of 10 s and 30 s): a call that times out moves the device on to its
    /// next address, as one that cannot connect does.
    pub fn connect_lazy_with_timeout(
        addr: &str,
        ca_pem: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let channels = addresses(addr)
            .into_iter()
            .map(|a| Ok(endpoint_with(a, ca_pem, timeout, timeout)?.connect_lazy()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::from_failover(Failover::new(channels)))
    }

    /// Wraps an existing channel, with a fresh random secret and firmware [`SIM_FIRMWARE`].
    pub fn from_channel(channel: Channel) -> Self {
        Self::from_failover(Failover::new(vec![channel]))
    }

    fn from_failover(channels: Failover) -> Self {
        Self {
            inner: DeviceServiceClient::new(channels),
            secret: rand::random::<[u8; 32]>().to_vec(),
            device_id: None,
            firmware: SIM_FIRMWARE.to_owned(),
        }
    }

    /// The secret this device registers with and proves its identity with.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Replaces the secret, for instance to act as a reinstalled unit or as an impostor.
    pub fn set_secret(&mut self, secret: impl Into<Vec<u8>>) {
        self.secret = secret.into();
    }

    /// The device id returned by the last successful registration, if any.
    pub fn device_id(&self) -> Option<i64> {
        self.device_id
    }

    /// Sets the device id sent on later calls, to act as an already registered device.
    pub fn set_device_id(&mut self, device_id: Option<i64>) {
        self.device_id = device_id;
    }

    /// The firmware version sent on registration and check-in.
    pub fn firmware(&self) -> &str {
        &self.firmware
    }

    /// Sets the firmware version sent on later registrations and check-ins.
    pub fn set_firmware(&mut self, firmware: impl Into<String>) {
        self.firmware = firmware.into();
    }

    /// Builds a request carrying the device credentials, when the device id is known.
    fn request<T>(&self, message: T) -> Result<Request<T>, Status> {
        let mut request = Request::new(message);
        if let Some(id) = self.device_id {
            let id = MetadataValue::try_from(id.to_string())
                .map_err(|_| Status::internal("device id is not valid metadata"))?;
            let secret = MetadataValue::try_from(hex::encode(&self.secret))
                .map_err(|_| Status::internal("device secret is not valid metadata"))?;
            let metadata = request.metadata_mut();
            metadata.insert(ums_proto::DEVICE_ID_HEADER, id);
            metadata.insert(ums_proto::DEVICE_SECRET_HEADER, secret);
        }
        Ok(request)
    }

    /// Registers the unit with this client's secret and firmware, and keeps the returned device id
    /// for later calls.
    pub async fn register(
        &mut self,
        unit_id: &str,
        name: &str,
    ) -> Result<RegisterResponse, Status> {
        let request = Request::new(RegisterRequest {
            unit_id: unit_id.to_owned(),
            name: name.to_owned(),
            firmware: self.firmware.clone(),
            secret: self.secret.clone(),
        });
        let response = self.inner.register(request).await?.into_inner();
        self.device_id = Some(response.device_id);
        Ok(response)
    }

    /// Reports contact with the given state (such as "idle") and the settings revision the device
    /// applies (0 when it has none).
    pub async fn check_in(
        &mut self,
        state: &str,
        known_revision: u64,
    ) -> Result<CheckInResponse, Status> {
        let request = self.request(CheckInRequest {
            firmware: self.firmware.clone(),
            state: state.to_owned(),
            known_revision,
        })?;
        Ok(self.inner.check_in(request).await?.into_inner())
    }

    /// Downloads the effective settings of the device.
    pub async fn get_settings(&mut self) -> Result<GetSettingsResponse, Status> {
        let request = self.request(GetSettingsRequest {})?;
        Ok(self.inner.get_settings(request).await?.into_inner())
    }

    /// Fetches the jobs due for the device; the server marks them as sent.
    pub async fn fetch_jobs(&mut self) -> Result<FetchJobsResponse, Status> {
        let request = self.request(FetchJobsRequest {})?;
        Ok(self.inner.fetch_jobs(request).await?.into_inner())
    }

    /// The files the server offers.
    pub async fn list_files(&mut self) -> Result<ums_proto::device::v1::ListFilesResponse, Status> {
        let request = self.request(ums_proto::device::v1::ListFilesRequest {})?;
        Ok(self.inner.list_files(request).await?.into_inner())
    }

    /// Downloads file `id` into `out`, from `out`'s current length: an interrupted download
    /// resumes where it stopped. At most `limit` bytes are taken in this call (`None`: all),
    /// to simulate an interruption. Returns the bytes received.
    pub async fn download_file(
        &mut self,
        id: i64,
        out: &mut Vec<u8>,
        limit: Option<usize>,
    ) -> Result<usize, Status> {
        let request = self.request(ums_proto::device::v1::DownloadFileRequest {
            file_id: id,
            offset: out.len() as u64,
        })?;
        let mut stream = self.inner.download_file(request).await?.into_inner();
        let mut received = 0;
        while let Some(chunk) = stream.message().await? {
            if chunk.offset != out.len() as u64 {
                return Err(Status::data_loss(format!(
                    "chunk at offset {} where {} was expected",
                    chunk.offset,
                    out.len()
                )));
            }
            let take = match limit {
                Some(l) => chunk.data.len().min(l - received),
                None => chunk.data.len(),
            };
            out.extend_from_slice(&chunk.data[..take]);
            received += take;
            if limit.is_some_and(|l| received >= l) {
                break;
            }
        }
        Ok(received)
    }

    /// Reports the outcome of a fetched job.
    pub async fn report_job_result(
        &mut self,
        job_id: i64,
        success: bool,
        message: &str,
    ) -> Result<(), Status> {
        let request = self.request(ReportJobResultRequest {
            job_id,
            success,
            message: message.to_owned(),
        })?;
        self.inner.report_job_result(request).await?;
        Ok(())
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Device API address, `https://host:port`, or several separated by commas.
    pub addr: String,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: Vec<u8>,
    /// Number of devices to simulate.
    pub devices: usize,
    /// Most devices in flight at once.
    pub concurrency: usize,
    /// Unit id prefix; unit ids are `{prefix}-{index:08}`.
    pub prefix: String,
    /// Check-ins per device after registering.
    pub checkins: usize,
    /// Times a device whose registration failed (refused, reset, timed out) tries again, on a
    /// new connection after a random wait of up to a second per try so far, as devices
    /// back off.
    pub retries: usize,
}

impl SimConfig {
    /// A configuration with 1000 devices, concurrency 64, one check-in per device and a prefix
    /// unique to this run (see [`random_prefix`]).
    pub fn new(addr: impl Into<String>, ca_pem: Vec<u8>) -> Self {
        Self {
            addr: addr.into(),
            ca_pem,
            devices: 1000,
            concurrency: 64,
            prefix: random_prefix(),
            checkins: 1,
            retries: 0,
        }
    }
}

/// A unit id prefix unique to one run: `sim` and 6 random hex digits.
pub fn random_prefix() -> String {
    format!("sim{}", hex::encode(rand::random::<[u8; 3]>()))
}

/// Latency summary of one kind of call.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// Slowest sample, in milliseconds.
    pub max_ms: f64,
}

impl Latency {
    fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Outcome of a simulation run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// Devices simulated.
    pub devices: usize,
    /// Devices whose every call succeeded.
    pub ok: usize,
    /// Devices with a failed call (a device stops at its first failure).
    pub errors: usize,
    /// The first distinct error messages.
    pub error_samples: Vec<String>,
    /// Registrations tried again after a failure (see [`SimConfig::retries`]).
    pub retries: u64,
    /// Devices that registered only after one or more retries.
    pub ok_after_retry: usize,
    /// The first distinct errors that were retried (what a refused device was told).
    pub retried_error_samples: Vec<String>,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// Successful register and check-in calls.
    pub ops: u64,
    /// `ops` per second of wall time.
    pub ops_per_s: f64,
    /// Latency of successful Register calls (including connection setup).
    pub register: Latency,
    /// Latency of successful CheckIn calls.
    pub checkin: Latency,
    /// Latency of successful GetSettings calls.
    pub settings: Latency,
    /// Time each successful device took from its first call to its last.
    pub total: Latency,
}

/// Timings of one simulated device, in microseconds.
#[derive(Default)]
struct DeviceRun {
    register: Option<u64>,
    /// Errors of the registrations that were tried again.
    retried: Vec<String>,
    checkins: Vec<u64>,
    settings: Option<u64>,
    total: Option<u64>,
    error: Option<String>,
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Simulates one device: register, `checkins` check-ins, and one settings download after the
/// first check-in when the server reports changed settings.
async fn simulate_device(
    addr: &str,
    ca_pem: &[u8],
    unit_id: String,
    checkins: usize,
    retries: usize,
) -> DeviceRun {
    let mut run = DeviceRun::default();
    let secret = rand::random::<[u8; 32]>().to_vec();
    let started = Instant::now();
    let mut attempt = 0;
    let mut client = loop {
        let mut client = match DeviceClient::connect_lazy(addr, ca_pem) {
            Ok(client) => client,
            Err(err) => {
                run.error = Some(format!("connect: {err:#}"));
                return run;
            }
        };
        // The same secret on every try: a registration whose answer was lost is answered
        // again with the same device.
        client.set_secret(secret.clone());
        let t = Instant::now();
        match client.register(&unit_id, &unit_id).await {
            Ok(_) => {
                run.register = Some(micros(t));
                break client;
            }
            Err(status) if attempt < retries => {
                run.retried.push(describe("register", &status));
                attempt += 1;
                let ms = rand::random::<u64>() % (1000 * attempt as u64) + 1;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Err(status) => {
                run.error = Some(describe("register", &status));
                return run;
            }
        }
    };
    let mut revision = 0;

    for i in 0..checkins {
        let t = Instant::now();
        match client.check_in("idle", revision).await {
            Ok(response) => {
                run.checkins.push(micros(t));
                if i == 0 && response.settings_changed {
                    let t = Instant::now();
                    match client.get_settings().await {
                        Ok(_) => run.settings = Some(micros(t)),
                        Err(status) => {
                            run.error = Some(describe("get settings", &status));
                            return run;
                        }
                    }
                }
                revision = response.settings_revision;
            }
            Err(status) => {
                run.error = Some(describe("check-in", &status));
                return run;
            }
        }
    }

    run.total = Some(micros(started));
    run
}

/// Aggregates device runs into a [`Report`].
struct Tally {
    report: Report,
    seen_errors: HashSet<String>,
    register: Histogram<u64>,
    checkin: Histogram<u64>,
    settings: Histogram<u64>,
    total: Histogram<u64>,
}

impl Tally {
    fn new(devices: usize) -> anyhow::Result<Self> {
        // From 1 µs to one hour, 3 significant digits.
        let histogram = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3);
        Ok(Self {
            report: Report {
                devices,
                ..Report::default()
            },
            seen_errors: HashSet::new(),
            register: histogram()?,
            checkin: histogram()?,
            settings: histogram()?,
            total: histogram()?,
        })
    }

    fn add(&mut self, run: DeviceRun) {
        if let Some(us) = run.register {
            self.register.saturating_record(us.max(1));
            self.report.ops += 1;
        }
        for us in run.checkins {
            self.checkin.saturating_record(us.max(1));
            self.report.ops += 1;
        }
        if let Some(us) = run.settings {
            self.settings.saturating_record(us.max(1));
        }
        if let Some(us) = run.total {
            self.total.saturating_record(us.max(1));
        }
        self.report.retries += run.retried.len() as u64;
        if run.error.is_none() && !run.retried.is_empty() {
            self.report.ok_after_retry += 1;
        }
        for e in run.retried {
            if self.report.retried_error_samples.len() < ERROR_SAMPLES
                && !self.report.retried_error_samples.contains(&e)
            {
                self.report.retried_error_samples.push(e);
            }
        }
        match run.error {
            None => self.report.ok += 1,
            Some(error) => {
                self.report.errors += 1;
                self.add_error(error);
            }
        }
    }

    fn add_error(&mut self, error: String) {
        if self.report.error_samples.len() < ERROR_SAMPLES && self.seen_errors.insert(error.clone())
        {
            self.report.error_samples.push(error);
        }
    }

    fn finish(mut self, elapsed: Duration) -> Report {
        let elapsed_s = elapsed.as_secs_f64();
        self.report.elapsed_s = elapsed_s;
        self.report.ops_per_s = if elapsed_s > 0.0 {
            self.report.ops as f64 / elapsed_s
        } else {
            0.0
        };
        self.report.register = Latency::from_histogram(&self.register);
        self.report.checkin = Latency::from_histogram(&self.checkin);
        self.report.settings = Latency::from_histogram(&self.settings);
        self.report.total = Latency::from_histogram(&self.total);
        self.report
    }
}

/// Runs the simulation and reports what happened.
///
/// At most `cfg.concurrency` devices are in flight at once. Failed devices are counted in the
/// report and never stop the run; an error is returned only for an unusable configuration (such
/// as a malformed address). `progress`, when given, advances by one per finished device.
pub async fn run(
    cfg: SimConfig,
    progress: Option<indicatif::ProgressBar>,
) -> anyhow::Result<Report> {
    if cfg.concurrency == 0 {
        anyhow::bail!("concurrency must be at least 1");
    }
    // Validate the addresses and the CA once, before starting any device.
    for a in addresses(&cfg.addr) {
        endpoint(a, &cfg.ca_pem)?;
    }
    if !cfg.addr.starts_with("http://")
        && !String::from_utf8_lossy(&cfg.ca_pem).contains("-----BEGIN CERTIFICATE-----")
    {
        anyhow::bail!("the ca file holds no pem certificate");
    }

    let mut tally = Tally::new(cfg.devices)?;
    let addr: std::sync::Arc<str> = cfg.addr.into();
    let ca_pem: std::sync::Arc<[u8]> = cfg.ca_pem.into();
    let started = Instant::now();
    let mut tasks = JoinSet::new();

    let finished = |tally: &mut Tally, joined: Result<DeviceRun, tokio::task::JoinError>| {
        match joined {
            Ok(run) => tally.add(run),
            Err(err) => {
                tally.report.errors += 1;
                tally.add_error(format!("device task failed: {err}"));
            }
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    };

    for i in 0..cfg.devices {
        while tasks.len() >= cfg.concurrency {
            if let Some(joined) = tasks.join_next().await {
                finished(&mut tally, joined);
            }
        }
        let unit_id = format!("{}-{i:08}", cfg.prefix);
        let addr = addr.clone();
        let ca_pem = ca_pem.clone();
        let (checkins, retries) = (cfg.checkins, cfg.retries);
        tasks.spawn(
            async move { simulate_device(&addr, &ca_pem, unit_id, checkins, retries).await },
        );
    }
    while let Some(joined) = tasks.join_next().await {
        finished(&mut tally, joined);
    }

    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    Ok(tally.finish(started.elapsed()))
}
