//! The network check (`NetworkCheck`): the health of the whole HA network, run from any server.
//!
//! This server asks every running server for its [`local_probe`] over the internal port (round
//! trips to every component, its files on disk, tokens of other networks it refused, its CA,
//! certificates and database), publishes a probe event and waits until each server saw it, makes
//! a device's TLS handshake on every broker's and server's device port, and reads the registry
//! for clocks, versions, config hashes, roles and stale entries. Every row that is not ok names
//! its likely cause and the fix. A report is cached for a minute.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ums_proto::admin::v1 as pb;
use ums_proto::network::v1 as cpb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;

use super::{AdminApi, Caller};
use crate::clients::host_port;
use crate::clients::probe::{PROBE_TIMEOUT, device_handshake, internal_round_trip};
use crate::error::ApiError;
use crate::state::AppState;

/// How long a report is answered from the cache.
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// Certificates expiring sooner than this are reported.
const EXPIRY_WARNING_MS: i64 = 30 * 24 * 3600 * 1000;
/// Files found missing and copied again within this time are reported.
const RESTORED_WITHIN_MS: i64 = 3600 * 1000;
/// Time every server gets to see the probe event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A database round trip slower than this is reported.
const SLOW_DB_US: i64 = 100_000;
/// The largest probe file a server copies when asked.
const PROBE_FILE_MAX: u64 = 4096;
/// A process stopped for longer than this is a stale registry entry.
const STALE_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The last report and when it was made.
#[derive(Default)]
pub struct Cache(Mutex<Option<(Instant, pb::NetworkCheckReport)>>);

pub async fn network_check(
    api: &AdminApi,
    _: Caller,
    r: pb::NetworkCheckRequest,
) -> Result<pb::NetworkCheckReport, ApiError> {
    if !r.fresh {
        let cached = api.check_cache.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, report)) = cached.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            let mut report = report.clone();
            report.cached = true;
            return Ok(report);
        }
    }
    let report = run(&api.state).await?;
    *api.check_cache.0.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((Instant::now(), report.clone()));
    Ok(report)
}

/// This server's part of the check, also served to the other servers as `NetworkService.Probe`.
pub async fn local_probe(
    state: &AppState,
    file: Option<&cpb::ProbeFile>,
) -> Result<cpb::ProbeResponse, ApiError> {
    let net = &state.network;
    let db = &state.db;
    let processes = net.processes(db).await?;
    let me = &net.process_id;
    let copy = async {
        match file {
            Some(f) => copy_probe_file(state, &processes, f).await,
            None => Ok(Duration::ZERO),
        }
    };
    let targets: Vec<&cpb::ProcessInfo> = processes
        .iter()
        .filter(|p| p.id != *me && p.status == "running" && p.internal_port != 0)
        .collect();
    let (rtts, copied) = tokio::join!(
        join_all(
            targets
                .iter()
                .map(|p| internal_round_trip(&net.identity, p)),
        ),
        copy
    );
    let (probe_file_us, probe_file_error) = match (file, copied) {
        (None, _) => (0, String::new()),
        (Some(_), Ok(d)) => (d.as_micros().max(1) as i64, String::new()),
        (Some(_), Err(e)) => (0, e),
    };
    let peers = targets
        .iter()
        .zip(rtts)
        .map(|(p, r)| match r {
            Ok(d) => cpb::PeerProbe {
                id: p.id.clone(),
                kind: p.kind.clone(),
                rtt_us: d.as_micros().max(1) as i64,
                error: String::new(),
            },
            Err(e) => cpb::PeerProbe {
                id: p.id.clone(),
                kind: p.kind.clone(),
                rtt_us: 0,
                error: e,
            },
        })
        .collect();

    // The files this server is recorded as holding, checked on its disk.
    let files = db.list_files(false).await?;
    let replicas = db.file_replicas().await?;
    let mut bad_files = Vec::new();
    for f in &files {
        let held = replicas
            .iter()
            .any(|r| r.file_id == f.id && r.server_id == *me && r.status == "present");
        if held && !state.files.has(&f.sha256, f.size as u64).await {
            bad_files.push(cpb::BadFile {
                path: f.path.clone(),
                sha256: f.sha256.clone(),
                problem: "missing".into(),
                at_ms: ums_db::now_ms(),
            });
        }
    }
    bad_files.extend(net.restored_files(RESTORED_WITHIN_MS));

    let (mismatches, who, at) = net.token_mismatches();
    let last = if mismatches == 0 {
        String::new()
    } else {
        format!("{who}, {}", ago(ums_db::now_ms(), at))
    };
    let db_latency_us = match db.ping().await {
        Ok(d) => d.as_micros().max(1) as i64,
        Err(_) => -1,
    };
    let pool = db.pool_stats();
    Ok(cpb::ProbeResponse {
        process_id: me.clone(),
        peers,
        bad_files,
        token_mismatches: mismatches,
        last_token_mismatch: last,
        ca_sha256: net.ca_sha256.clone(),
        device_ca_sha256: ums_tls::ca_fingerprint(&net.ca.cert_pem).unwrap_or_default(),
        node_cert_not_after_ms: ums_tls::pem_not_after_ms(&net.identity.cert_pem).unwrap_or(0),
        db_latency_us,
        pool_open: pool.open,
        pool_idle: pool.idle,
        pool_max: pool.max,
        brokers: net.broker_views(),
        config_hash: net.config.config_hash.clone(),
        probe_file_us,
        probe_file_error,
    })
}

/// Copies the checking server's probe file the way the replicator copies a file (resuming,
/// hash-checked), then deletes the copy: the file path between two servers, tested end to end.
async fn copy_probe_file(
    state: &AppState,
    processes: &[cpb::ProcessInfo],
    f: &cpb::ProbeFile,
) -> Result<Duration, String> {
    if f.size > PROBE_FILE_MAX {
        return Err(format!(
            "a probe file has at most {PROBE_FILE_MAX} bytes, not {}",
            f.size
        ));
    }
    if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the probe file's sha256 must be 64 hex digits".into());
    }
    let source = processes
        .iter()
        .find(|p| p.id == f.source_id && p.kind == "server")
        .ok_or_else(|| format!("server {} is not in the registry", f.source_id))?;
    let started = Instant::now();
    let sha = f.sha256.to_ascii_lowercase();
    let copied = tokio::time::timeout(
        PROBE_TIMEOUT * 2,
        crate::files::fetch(&state.files, &state.network.identity, source, &sha, f.size),
    )
    .await;
    let took = started.elapsed();
    state.files.remove(&sha).await;
    match copied {
        Ok(Ok(())) => Ok(took),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!(
            "no complete copy within {} s",
            (PROBE_TIMEOUT * 2).as_secs()
        )),
    }
}

/// Writes a probe file of random content into this server's store; its sha256 and size.
async fn write_probe_file(state: &AppState) -> std::io::Result<(String, u64)> {
    let mut upload = state.files.begin().await?;
    let content = format!(
        "ums network check probe from {} at {} ms: {}\n",
        state.network.process_id,
        ums_db::now_ms(),
        crate::secrets::random_token(32)
    );
    upload.write(content.as_bytes()).await?;
    let (tmp, sha, size) = upload.finish().await?;
    state.files.commit(&tmp, &sha).await?;
    Ok((sha, size))
}

/// Asks the server `p` for its probe over the internal port.
async fn remote_probe(
    state: &AppState,
    p: &cpb::ProcessInfo,
    file: Option<cpb::ProbeFile>,
) -> Result<cpb::ProbeResponse, String> {
    let addr = host_port(&p.host, p.internal_port);
    let channel =
        ums_network::internal_channel(&state.network.identity, &addr).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(cpb::ProbeRequest { file });
    req.set_timeout(PROBE_TIMEOUT * 3);
    tokio::time::timeout(
        PROBE_TIMEOUT * 3,
        NetworkServiceClient::new(channel).probe(req),
    )
    .await
    .map_err(|_| format!("no answer from {addr} within {:?}", PROBE_TIMEOUT * 3))?
    .map(|r| r.into_inner())
    .map_err(|s| s.message().to_owned())
}

/// Waits until the server `p` saw the probe event `id`; the time from publication.
async fn event_arrival(
    state: &AppState,
    p: &cpb::ProcessInfo,
    id: &str,
    published: Instant,
) -> Result<Duration, String> {
    let addr = host_port(&p.host, p.internal_port);
    let channel =
        ums_network::internal_channel(&state.network.identity, &addr).map_err(|e| e.to_string())?;
    let mut client = NetworkServiceClient::new(channel);
    loop {
        // Each question is bounded, so a server that hangs cannot hold the check.
        let mut req = tonic::Request::new(cpb::EventSeenRequest {
            probe_id: id.to_owned(),
        });
        req.set_timeout(PROBE_TIMEOUT);
        let seen = tokio::time::timeout(PROBE_TIMEOUT, client.event_seen(req))
            .await
            .map_err(|_| format!("no answer from {addr} within {PROBE_TIMEOUT:?}"))?
            .map_err(|s| s.message().to_owned())?
            .into_inner()
            .seen;
        if seen {
            return Ok(published.elapsed());
        }
        if published.elapsed() > EVENT_TIMEOUT {
            return Err(format!("the event did not arrive within {EVENT_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A row of the report.
struct Row(pb::CheckResult);

impl Row {
    fn new(
        section: &str,
        checked: impl Into<String>,
        status: &str,
        result: impl Into<String>,
    ) -> Self {
        Row(pb::CheckResult {
            section: section.into(),
            checked: checked.into(),
            status: status.into(),
            result: result.into(),
            ..Default::default()
        })
    }
    fn ok(section: &str, checked: impl Into<String>, result: impl Into<String>) -> Self {
        Self::new(section, checked, "ok", result)
    }
    fn info(section: &str, checked: impl Into<String>, result: impl Into<String>) -> Self {
        Self::new(section, checked, "info", result)
    }
    fn failed(section: &str, checked: impl Into<String>, result: impl Into<String>) -> Self {
        Self::new(section, checked, "failed", result)
    }
    fn warning(section: &str, checked: impl Into<String>, result: impl Into<String>) -> Self {
        Self::new(section, checked, "warning", result)
    }
    fn because(mut self, cause: impl Into<String>, fix: impl Into<String>) -> Self {
        self.0.cause = cause.into();
        self.0.fix = fix.into();
        self
    }
    fn pair(mut self, from: &str, to: &str, rtt_us: i64) -> Self {
        self.0.from = from.into();
        self.0.to = to.into();
        self.0.rtt_us = rtt_us;
        self
    }
}

fn name(p: &cpb::ProcessInfo) -> String {
    format!("{} {}", p.kind, p.id)
}

fn ms(us: i64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

pub fn ago(now: i64, at: i64) -> String {
    let s = (now - at).max(0) / 1000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

const NOT_RUNNING_CAUSE: &str = "the process is not running (stopped, crashed, or its host is down), or it cannot reach any server to send its heartbeat (firewall, network token)";

fn not_running_fix(p: &cpb::ProcessInfo) -> String {
    let start = if p.supervisor_id.is_empty() {
        format!("start it on {} (systemctl start ums-{})", p.host, p.kind)
    } else {
        format!("umsctl network start {}", p.id)
    };
    format!(
        "{start}; check that it reaches a server's internal port; if it is gone for good, remove it with `umsctl network rm {}`",
        p.id
    )
}

/// Runs every check.
async fn run(state: &AppState) -> Result<pb::NetworkCheckReport, ApiError> {
    let net = &state.network;
    let me = net.process_id.clone();
    let now = ums_db::now_ms();
    let processes = net.processes(&state.db).await?;
    let servers: Vec<&cpb::ProcessInfo> = processes
        .iter()
        .filter(|p| p.kind == "server" && p.status == "running" && p.internal_port != 0)
        .collect();

    // A probe file every other running server copies from this one.
    let probe_file = if servers.iter().any(|p| p.id != me) {
        match write_probe_file(state).await {
            Ok((sha256, size)) => Ok(Some(cpb::ProbeFile {
                source_id: me.clone(),
                sha256,
                size,
            })),
            Err(e) => Err(e.to_string()),
        }
    } else {
        Ok(None)
    };
    let asked = probe_file.as_ref().ok().cloned().flatten();

    // Every running server's probe, the probe event, and the device ports, at once.
    let probes = join_all(servers.iter().map(|p| async {
        if p.id == me {
            local_probe(state, None).await.map_err(|e| e.to_string())
        } else {
            remote_probe(state, p, asked.clone()).await
        }
    }));
    let events = async {
        let others: Vec<&&cpb::ProcessInfo> = servers.iter().filter(|p| p.id != me).collect();
        if others.is_empty() {
            return Vec::new();
        }
        let published = Instant::now();
        let id = net.publish_probe(&state.db).await;
        join_all(
            others
                .iter()
                .map(|p| event_arrival(state, p, &id, published)),
        )
        .await
        .into_iter()
        .zip(others.iter().map(|p| (**p).clone()))
        .collect::<Vec<_>>()
    };
    let device_targets: Vec<&cpb::ProcessInfo> = processes
        .iter()
        .filter(|p| (p.kind == "broker" || p.kind == "server") && p.device_port != 0)
        .collect();
    let handshakes = join_all(device_targets.iter().map(|p| {
        let addr = host_port(&p.host, p.device_port);
        let ca = net.ca.cert_pem.clone();
        let host = p.host.clone();
        async move { device_handshake(&ca, &host, &addr).await }
    }));
    let (probes, events, handshakes) = tokio::join!(probes, events, handshakes);
    if let Some(f) = &asked {
        state.files.remove(&f.sha256).await;
    }

    let mut rows: Vec<Row> = Vec::new();
    let by_id: BTreeMap<&str, &cpb::ProcessInfo> =
        processes.iter().map(|p| (p.id.as_str(), p)).collect();

    // Messaging: every server to every component, the event, and what is not running.
    let mut answered: Vec<(&cpb::ProcessInfo, cpb::ProbeResponse)> = Vec::new();
    for (s, probe) in servers.iter().zip(probes) {
        match probe {
            Ok(p) => answered.push((*s, p)),
            Err(e) => rows.push(
                Row::failed(
                    "messaging",
                    format!("{} -> {}", me, s.id),
                    format!("the server does not answer the check: {e}"),
                )
                .because(
                    "its internal port is blocked by a firewall, or the server is overloaded or hanging",
                    format!(
                        "open port {} on {} to the other servers, and look at the server's log",
                        s.internal_port, s.host
                    ),
                )
                .pair(&me, &s.id, 0),
            ),
        }
    }
    for (s, probe) in &answered {
        for peer in &probe.peers {
            let target = by_id
                .get(peer.id.as_str())
                .map(|p| name(p))
                .unwrap_or_else(|| format!("{} {}", peer.kind, peer.id));
            let checked = format!("{} {} -> {target}", s.kind, s.id);
            if peer.error.is_empty() {
                rows.push(
                    Row::ok(
                        "messaging",
                        checked,
                        format!("round trip {}", ms(peer.rtt_us)),
                    )
                    .pair(&s.id, &peer.id, peer.rtt_us),
                );
            } else {
                rows.push(
                    Row::failed("messaging", checked, format!("no connection: {}", peer.error))
                        .because(
                            "the component is not running, its internal port is blocked by a firewall, its clock is far off (certificates not yet or no longer valid), or it holds a certificate of another network",
                            format!(
                                "check that {} runs and that its internal port is open to {}; compare clocks; re-join it with this network's token if its certificate is from another network",
                                peer.id, s.host
                            ),
                        )
                        .pair(&s.id, &peer.id, 0),
                );
            }
        }
    }
    for (arrival, to) in events {
        let checked = format!("event {me} -> {}", to.id);
        match arrival {
            Ok(d) => rows.push(
                Row::ok("messaging", checked, format!("arrived after {}", ms(d.as_micros() as i64)))
                    .pair(&me, &to.id, d.as_micros() as i64),
            ),
            Err(e) => rows.push(
                Row::failed("messaging", checked, e)
                    .because(
                        "the server's database listener is down (it then sees changes only through its counter poll), or it cannot reach the database",
                        format!("look at the log of {} for `event listener`; check its connection to PostgreSQL", to.id),
                    )
                    .pair(&me, &to.id, 0),
            ),
        }
    }
    for p in &processes {
        if p.status == "running" {
            if p.kind == "broker" {
                rows.push(Row::ok(
                    "messaging",
                    format!("{} -> servers", name(p)),
                    format!("heartbeat {}", ago(now, p.last_heartbeat_ms)),
                ));
            }
            continue;
        }
        rows.push(
            Row::failed(
                "messaging",
                name(p),
                format!(
                    "{}, last heartbeat {}",
                    p.status,
                    ago(now, p.last_heartbeat_ms)
                ),
            )
            .because(NOT_RUNNING_CAUSE, not_running_fix(p)),
        );
    }

    // Files: on every server's disk, and every file on every running server.
    let files = state.db.list_files(false).await?;
    let replicas = state.db.file_replicas().await?;
    let mut file_problems = 0;
    for (s, probe) in &answered {
        for f in &probe.bad_files {
            file_problems += 1;
            let checked = format!("{} on server {}", f.path, s.id);
            rows.push(if f.problem == "missing" {
                Row::failed("files", checked, "missing from the server's disk")
                    .because(
                        "the file was deleted by hand or lost by the disk, though the server is recorded as holding it",
                        format!(
                            "the replicator copies it again from another server within 10 s; if it does not, check the disk and the permissions of the data directory's files/ on {}",
                            s.host
                        ),
                    )
            } else {
                Row::warning(
                    "files",
                    checked,
                    format!("was missing from the disk, copied again {}", ago(now, f.at_ms)),
                )
                .because(
                    "the file was deleted by hand or lost by the disk",
                    format!(
                        "find out what removes files from the data directory on {} (a clean-up job, a failing disk)",
                        s.host
                    ),
                )
            });
        }
    }
    for f in &files {
        for s in &servers {
            let replica = replicas
                .iter()
                .find(|r| r.file_id == f.id && r.server_id == s.id);
            let status = replica.map_or("absent", |r| r.status.as_str());
            if status == "present" {
                continue;
            }
            file_problems += 1;
            let error = replica.map(|r| r.error.as_str()).unwrap_or_default();
            rows.push(
                Row::failed(
                    "files",
                    format!("{} on server {}", f.path, s.id),
                    format!("not in sync: {status}{}", if error.is_empty() { String::new() } else { format!(" ({error})") }),
                )
                .because(
                    "the copy from the other servers failed or is still running: internal port blocked, disk full, or no running server holds the file",
                    format!("check free space on {} and that it reaches the other servers' internal ports; the replicator retries every 10 s", s.host),
                ),
            );
        }
    }
    match &probe_file {
        Err(e) => {
            rows.push(
                Row::failed(
                    "files",
                    format!("probe file on server {me}"),
                    format!("could not be written: {e}"),
                )
                .because(
                    "the data directory's files/ is not writable or the disk is full",
                    format!(
                        "check free space and the permissions of the data directory on {}",
                        by_id
                            .get(me.as_str())
                            .map_or("this server", |p| p.host.as_str())
                    ),
                ),
            );
        }
        Ok(None) => {}
        Ok(Some(_)) => {
            let mut slowest = 0;
            let mut copied = 0;
            for (s, probe) in answered.iter().filter(|(s, _)| s.id != me) {
                if probe.probe_file_us > 0 {
                    copied += 1;
                    slowest = slowest.max(probe.probe_file_us);
                    continue;
                }
                let why = if probe.probe_file_error.is_empty() {
                    format!("not copied: {} did not copy it (an older version?)", s.id)
                } else {
                    format!("not copied: {}", probe.probe_file_error)
                };
                rows.push(
                    Row::failed("files", format!("probe file {me} -> {}", s.id), why)
                        .because(
                            "the server cannot copy files from this one: internal port blocked, disk full or not writable, or a hash mismatch on the way",
                            format!(
                                "check that {} reaches port {} of this server, and free space and permissions of the data directory's files/ on {}",
                                s.id,
                                by_id.get(me.as_str()).map_or(0, |p| p.internal_port),
                                s.host
                            ),
                        ),
                );
            }
            if copied > 0 {
                rows.push(Row::ok(
                    "files",
                    format!("probe file from {me}"),
                    format!(
                        "copied to {copied} other servers and verified, slowest {}",
                        ms(slowest)
                    ),
                ));
            }
        }
    }
    if file_problems == 0 {
        rows.push(Row::ok(
            "files",
            "replicated files",
            format!(
                "{} files present on all {} running servers",
                files.len(),
                servers.len()
            ),
        ));
    }

    // Device ports: the handshake a device makes, through every broker and to every server.
    for (p, hs) in device_targets.iter().zip(handshakes) {
        let checked = format!("{} port {} on {}", name(p), p.device_port, p.host);
        match hs {
            Ok((d, not_after)) => {
                rows.push(Row::ok(
                    "device ports",
                    checked.clone(),
                    format!(
                        "TLS handshake {}, chain verified against the device CA",
                        ms(d.as_micros() as i64)
                    ),
                ));
                if let Some(t) = not_after
                    && t - now < EXPIRY_WARNING_MS
                {
                    rows.push(
                        Row::warning(
                            "certificates",
                            format!("certificate devices see on {checked}"),
                            format!("expires in {} days", (t - now) / 86_400_000),
                        )
                        .because(
                            "the server certificate is near its end",
                            "remove server.pem from the server's data directory tls/ and restart it: it issues a new one from the CA",
                        ),
                    );
                }
            }
            Err(e) => {
                let (cause, fix) = if p.status != "running" {
                    (
                        format!(
                            "{} is {} (last heartbeat {})",
                            name(p),
                            p.status,
                            ago(now, p.last_heartbeat_ms)
                        ),
                        not_running_fix(p),
                    )
                } else if e.contains("certificate") || e.contains("Certificate") {
                    (
                        "the certificate on the port is not signed by the network's device CA or does not name the host devices use".to_owned(),
                        "list the names devices use in device.names of every server behind the brokers and restart the servers".to_owned(),
                    )
                } else {
                    (
                        "the port is closed, blocked by a firewall, or the process is overloaded"
                            .to_owned(),
                        format!(
                            "open port {} on {} to the devices' networks",
                            p.device_port, p.host
                        ),
                    )
                };
                rows.push(Row::failed("device ports", checked, e).because(cause, fix));
            }
        }
    }

    // Certificates: one CA everywhere; node certificates not near their end.
    let cas: BTreeSet<(&str, &str)> = answered
        .iter()
        .map(|(_, p)| (p.ca_sha256.as_str(), p.device_ca_sha256.as_str()))
        .collect();
    if cas.len() <= 1 {
        let (network_ca, device_ca) = cas.iter().next().copied().unwrap_or(("", ""));
        rows.push(Row::ok(
            "certificates",
            "network CA and device CA of every server",
            format!(
                "the same on {} servers: network CA sha256 {}, device CA sha256 {}",
                answered.len(),
                short(network_ca),
                short(device_ca)
            ),
        ));
    } else {
        for (s, p) in &answered {
            if p.ca_sha256 != net.ca_sha256 {
                rows.push(
                    Row::failed(
                        "certificates",
                        format!("CA of server {}", s.id),
                        format!("network CA sha256 {} differs from {}", short(&p.ca_sha256), short(&net.ca_sha256)),
                    )
                    .because(
                        "the server was set up with a CA of its own before it joined this network",
                        "stop it, remove tls/ and identity/ from its data directory, and start it with this network's token",
                    ),
                );
            }
        }
    }
    for (s, p) in &answered {
        if p.node_cert_not_after_ms != 0 && p.node_cert_not_after_ms - now < EXPIRY_WARNING_MS {
            rows.push(
                Row::warning(
                    "certificates",
                    format!("node certificate of server {}", s.id),
                    format!("expires in {} days", (p.node_cert_not_after_ms - now) / 86_400_000),
                )
                .because(
                    "the node certificate is near its end",
                    "remove identity/ from the server's data directory and restart it: it issues a new one",
                ),
            );
        }
    }

    more_checks(&mut rows, &processes, &answered, now);
    roles(&mut rows, &processes, &answered);

    let results: Vec<pb::CheckResult> = rows.into_iter().map(|r| r.0).collect();
    let failed = results.iter().filter(|r| r.status == "failed").count() as u32;
    let warnings = results.iter().filter(|r| r.status == "warning").count() as u32;
    Ok(pb::NetworkCheckReport {
        checked_at_ms: now,
        checked_by: me,
        cached: false,
        results,
        failed,
        warnings,
    })
}

fn short(hash: &str) -> String {
    hash.chars().take(16).collect()
}

/// A registry entry no process stands behind any more.
pub struct Orphan<'a> {
    pub process: &'a cpb::ProcessInfo,
    /// What was found, e.g. "stopped, last heartbeat 30 h ago".
    pub result: String,
    pub cause: &'static str,
    pub fix: String,
}

/// The orphaned registry entries: a process whose watchdog left the registry, or one stopped
/// for longer than a day.
pub fn orphaned(processes: &[cpb::ProcessInfo], now: i64) -> Vec<Orphan<'_>> {
    let ids: BTreeSet<&str> = processes.iter().map(|p| p.id.as_str()).collect();
    let mut out = Vec::new();
    for p in processes {
        if !p.supervisor_id.is_empty() && !ids.contains(p.supervisor_id.as_str()) {
            out.push(Orphan {
                process: p,
                result: format!("its watchdog {} is not in the registry", p.supervisor_id),
                cause: "the watchdog was removed while the process stayed",
                fix: format!(
                    "remove the entry with `umsctl network rm {}` if the process is gone",
                    p.id
                ),
            });
        } else if p.status != "running" && now - p.last_heartbeat_ms > STALE_AFTER_MS {
            out.push(Orphan {
                process: p,
                result: format!("stopped, last heartbeat {}", ago(now, p.last_heartbeat_ms)),
                cause: "the process was taken out of the network without removing its entry",
                fix: format!("`umsctl network rm {}`", p.id),
            });
        }
    }
    out
}

/// Clocks, tokens, versions, the database, stale registry entries, config hashes.
fn more_checks(
    rows: &mut Vec<Row>,
    processes: &[cpb::ProcessInfo],
    answered: &[(&cpb::ProcessInfo, cpb::ProbeResponse)],
    now: i64,
) {
    const S: &str = "more checks";
    let running: Vec<&cpb::ProcessInfo> =
        processes.iter().filter(|p| p.status == "running").collect();
    let skewed: Vec<&&cpb::ProcessInfo> = running.iter().filter(|p| p.clock_skewed).collect();
    for p in &skewed {
        let s = p.clock_offset_ms as f64 / 1000.0;
        rows.push(
            Row::failed(
                S,
                format!("clock of {}", name(p)),
                format!("{:.0} s {} the database's clock", s.abs(), if s > 0.0 { "ahead of" } else { "behind" }),
            )
            .because(
                "its system clock is wrong: no time synchronisation on the host",
                format!(
                    "synchronise the clock of {} (chrony or systemd-timesyncd), then restart its services; clocks must be within 60 s of each other",
                    p.host
                ),
            ),
        );
    }
    if skewed.is_empty() {
        let worst = running
            .iter()
            .map(|p| p.clock_offset_ms.abs())
            .max()
            .unwrap_or(0);
        rows.push(Row::ok(
            S,
            "clocks",
            format!(
                "{} processes within 60 s of each other (largest offset {worst} ms)",
                running.len()
            ),
        ));
    }

    let mismatches: u64 = answered.iter().map(|(_, p)| p.token_mismatches).sum();
    if mismatches == 0 {
        rows.push(Row::ok(
            S,
            "network token",
            "no join attempts with another network's token",
        ));
    } else {
        for (s, p) in answered.iter().filter(|(_, p)| p.token_mismatches > 0) {
            rows.push(
                Row::failed(
                    S,
                    format!("network token at server {}", s.id),
                    format!(
                        "{} join attempts with another network's token (last: {})",
                        p.token_mismatches, p.last_token_mismatch
                    ),
                )
                .because(
                    "a component was installed with the token of another network, or with a token that was rotated out",
                    "copy this network's token (`umsctl token export`) into the component's token file and restart it",
                ),
            );
        }
    }

    let versions: BTreeSet<&str> = running
        .iter()
        .map(|p| p.version.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    if versions.len() > 1 {
        rows.push(
            Row::warning(
                S,
                "versions",
                format!(
                    "running: {}",
                    versions.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            )
            .because(
                "an update is in progress or a host was left out of it",
                "update every component to the same version",
            ),
        );
    } else {
        rows.push(Row::ok(
            S,
            "versions",
            format!(
                "every process runs {}",
                versions.iter().next().copied().unwrap_or("?")
            ),
        ));
    }
    let schemas: BTreeSet<&str> = running
        .iter()
        .filter(|p| p.kind == "server")
        .map(|p| p.schema_version.as_str())
        .collect();
    if schemas.len() > 1 {
        rows.push(
            Row::failed(S, "schema versions", format!("servers report: {}", schemas.iter().copied().collect::<Vec<_>>().join(", ")))
                .because("a server has not reconnected since the schema changed, or runs on a copy of the database", "restart the servers that report the older schema"),
        );
    } else {
        rows.push(Row::ok(
            S,
            "schema versions",
            format!(
                "every server on {}",
                schemas.iter().next().copied().unwrap_or("?")
            ),
        ));
    }

    for (s, p) in answered {
        let checked = format!("database from server {}", s.id);
        let pool = format!(
            "pool {} open, {} idle, at most {}",
            p.pool_open, p.pool_idle, p.pool_max
        );
        let busy = p.pool_max > 0 && p.pool_open >= p.pool_max && p.pool_idle == 0;
        if p.db_latency_us < 0 {
            rows.push(
                Row::failed(S, checked, format!("no answer; {pool}")).because(
                    "the server lost its database connection",
                    "check PostgreSQL and the network between them",
                ),
            );
        } else if p.db_latency_us > SLOW_DB_US || busy {
            rows.push(
                Row::warning(
                    S,
                    checked,
                    format!("round trip {}; {pool}", ms(p.db_latency_us)),
                )
                .because(
                    "the database is overloaded or far away, or every pooled connection is busy",
                    "look at PostgreSQL's load and slow queries; keep servers near their database",
                ),
            );
        } else {
            rows.push(Row::ok(
                S,
                checked,
                format!("round trip {}; {pool}", ms(p.db_latency_us)),
            ));
        }
    }

    let orphans = orphaned(processes, now);
    for o in &orphans {
        rows.push(
            Row::warning(S, format!("registry entry {}", name(o.process)), &o.result)
                .because(o.cause, &o.fix),
        );
    }
    let stale = orphans.len();
    if stale == 0 {
        rows.push(Row::ok(
            S,
            "registry",
            format!("{} entries, none orphaned", processes.len()),
        ));
    }

    let mut hashes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in running
        .iter()
        .filter(|p| p.kind == "server" && !p.config_hash.is_empty())
    {
        hashes
            .entry(p.config_hash.as_str())
            .or_default()
            .push(p.id.as_str());
    }
    if hashes.len() > 1 {
        let common = hashes
            .iter()
            .max_by_key(|(_, v)| v.len())
            .map(|(h, _)| *h)
            .unwrap_or_default();
        for (h, ids) in hashes.iter().filter(|(h, _)| **h != common) {
            rows.push(
                Row::failed(S, format!("configuration of server {}", ids.join(", ")), format!("hash {h} differs from {common} of the others"))
                    .because(
                        "settings every server must share differ: the [network] timings, device.names, device.online_within_s, device.proxy_protocol, admin.session_hours or whether swp.url is set",
                        "compare `ums-server config` on the servers and make those settings equal, then restart the odd ones",
                    ),
            );
        }
    } else {
        rows.push(Row::ok(
            S,
            "configuration",
            "the cluster-relevant settings are the same on every server",
        ));
    }
}

/// Who holds which role, and what the brokers see.
fn roles(
    rows: &mut Vec<Row>,
    processes: &[cpb::ProcessInfo],
    answered: &[(&cpb::ProcessInfo, cpb::ProbeResponse)],
) {
    const S: &str = "roles";
    match processes.iter().find(|p| p.scheduler) {
        Some(p) => rows.push(Row::info(S, "scheduler", format!("held by {}", p.id))),
        None => rows.push(
            Row::failed(S, "scheduler", "no server holds the scheduler lease").because(
                "no server is running, or none reaches the database",
                "start a server; check the servers' database connection",
            ),
        ),
    }
    for p in processes.iter().filter(|p| p.status == "running") {
        let role = match p.kind.as_str() {
            "server" => "device, admin and internal API; file source for the others",
            "broker" => "device load balancer",
            "watchdog" => "supervisor of its node",
            "swp-auth" => "Shared Workplace logins",
            _ => continue,
        };
        rows.push(Row::info(S, name(p), format!("{role}, on {}", p.host)));
    }
    let mut views: BTreeMap<String, cpb::BrokerView> = BTreeMap::new();
    for (_, probe) in answered {
        for v in &probe.brokers {
            let newer = views.get(&v.broker_id).is_none_or(|o| o.at_ms < v.at_ms);
            if newer {
                views.insert(v.broker_id.clone(), v.clone());
            }
        }
    }
    for v in views.values() {
        let running = processes
            .iter()
            .any(|p| p.id == v.broker_id && p.status == "running");
        if !running {
            continue;
        }
        let list: Vec<String> = v
            .servers
            .iter()
            .map(|s| format!("{} {}", s.address, if s.up { "up" } else { "down" }))
            .collect();
        let down = v.servers.iter().filter(|s| !s.up).count();
        let checked = format!("servers known to broker {}", v.broker_id);
        let text = if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        };
        if down > 0 || v.servers.is_empty() {
            rows.push(Row::warning(S, checked, text).because(
                "the broker's health checks of those servers fail: the server is down or its device port is blocked from the broker",
                "check the servers the broker marks down and the path from the broker to their device ports",
            ));
        } else {
            rows.push(Row::info(S, checked, text));
        }
    }
}
