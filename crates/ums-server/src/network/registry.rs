//! The process registry as this server sees and writes it: its own entry, the registry as
//! administrators see it (status after the silence timeout, clock skew, the scheduler), and
//! the heartbeats components without database access send for themselves and their children.

use ums_db::network::ProcessRow;
use ums_db::{Db, DbError};
use ums_proto::network::v1 as pb;
use ums_tls::ComponentKind;

use super::{MAX_CLOCK_SKEW_MS, Network, SCHEDULER};
use crate::error::ApiError;

impl Network {
    pub fn own_row(&self, schema_version: &str) -> ProcessRow {
        let (device, admin, internal) = self.ports();
        ProcessRow {
            id: self.process_id.clone(),
            kind: ComponentKind::Server.as_str().into(),
            host: self.advertise_host.clone(),
            version: self.binary_version.clone(),
            schema_version: schema_version.into(),
            device_port: device.into(),
            admin_port: admin.into(),
            internal_port: internal.into(),
            status: if self.stopping() {
                "stopping"
            } else {
                "running"
            }
            .into(),
            mode: if self.update_mode() {
                "update"
            } else {
                "normal"
            }
            .into(),
            last_heartbeat: 0,
            clock_ms: self.reported_clock_ms(),
            clock_offset_ms: 0,
            cert_fingerprint: self.identity.fingerprint(),
            supervisor_id: None,
            pid: i64::from(std::process::id()),
            started_at: self.started_at_ms,
            config_hash: Some(self.config.config_hash.clone()),
            schema_min: Some(self.schema_range.0.to_string()),
            schema_max: Some(self.schema_range.1.to_string()),
        }
    }

    /// The registry as administrators see it: status after the silence timeout, clock skew
    /// flagged, the scheduler marked.
    pub async fn processes(&self, db: &Db) -> Result<Vec<pb::ProcessInfo>, DbError> {
        let (rows, now) = db.list_processes().await?;
        let holder = db.lease_holder(SCHEDULER).await?.map(|(h, _)| h);
        let silent = self.config.silent_after.as_millis() as i64;
        let mut out: Vec<pb::ProcessInfo> = rows
            .into_iter()
            .map(|r| {
                let status = if r.status == "running" && now - r.last_heartbeat > silent {
                    "stopped".to_owned()
                } else {
                    r.status.clone()
                };
                pb::ProcessInfo {
                    scheduler: holder.as_deref() == Some(r.id.as_str()),
                    id: r.id,
                    kind: r.kind,
                    host: r.host,
                    version: r.version,
                    schema_version: r.schema_version,
                    device_port: r.device_port as u32,
                    admin_port: r.admin_port as u32,
                    internal_port: r.internal_port as u32,
                    status,
                    mode: r.mode,
                    last_heartbeat_ms: r.last_heartbeat,
                    clock_ms: r.clock_ms,
                    clock_offset_ms: r.clock_offset_ms,
                    cert_fingerprint: r.cert_fingerprint,
                    supervisor_id: r.supervisor_id.unwrap_or_default(),
                    pid: r.pid as u32,
                    started_at_ms: r.started_at,
                    clock_skewed: false,
                    config_hash: r.config_hash.unwrap_or_default(),
                }
            })
            .collect();
        flag_clock_skew(&mut out);
        Ok(out)
    }

    /// Records a heartbeat a component sent for itself and what it supervises.
    pub async fn record_heartbeat(
        &self,
        db: &Db,
        peer: &ums_service::Peer,
        req: pb::HeartbeatRequest,
    ) -> Result<i64, ApiError> {
        let process = req
            .process
            .ok_or_else(|| ApiError::Invalid("heartbeat without a process".into()))?;
        if process.id != peer.id || process.kind != peer.kind.as_str() {
            return Err(ApiError::Invalid(format!(
                "a {} certificate for {} cannot report for {} {}",
                peer.kind, peer.id, process.kind, process.id
            )));
        }
        if peer.kind == ComponentKind::Broker {
            self.set_broker_view(&peer.id, req.known_servers.clone());
        }
        let before = db.list_processes().await?.0;
        let mut rows = vec![row_from_info(&process, &peer.fingerprint, None)];
        for child in &req.supervised {
            if ComponentKind::parse(&child.kind).is_none() || child.id.is_empty() {
                return Err(ApiError::Invalid(
                    "a supervised process needs an id and a known kind".into(),
                ));
            }
            rows.push(row_from_info(
                child,
                &child.cert_fingerprint,
                Some(&peer.id),
            ));
        }
        let mut now = 0;
        let mut changed = false;
        for row in &rows {
            // A supervised server or swp-auth writes its own heartbeat (with the ports the
            // watchdog does not know); the watchdog's report must not overwrite a fresher one,
            // only mark it stopped when it is.
            if (row.kind == "server" || row.kind == ComponentKind::SwpAuth.as_str())
                && row.supervisor_id.is_some()
            {
                let known = before.iter().find(|b| b.id == row.id);
                if let (Some(b), Some(sup)) = (known, &row.supervisor_id)
                    && b.supervisor_id.as_ref() != Some(sup)
                {
                    db.set_process_supervisor(&row.id, sup).await?;
                    changed = true;
                }
                if row.status != "running"
                    && before
                        .iter()
                        .any(|b| b.id == row.id && b.status == "running")
                {
                    db.set_process_status(&row.id, &row.status).await?;
                    changed = true;
                }
                continue;
            }
            changed |= !before
                .iter()
                .any(|b| b.id == row.id && b.status == row.status);
            now = db.heartbeat(row).await?;
        }
        if changed {
            self.processes_changed(db).await;
        }
        Ok(now)
    }
}

fn row_from_info(p: &pb::ProcessInfo, fingerprint: &str, supervisor: Option<&str>) -> ProcessRow {
    ProcessRow {
        id: p.id.clone(),
        kind: p.kind.clone(),
        host: p.host.clone(),
        version: p.version.clone(),
        schema_version: p.schema_version.clone(),
        device_port: p.device_port.into(),
        admin_port: p.admin_port.into(),
        internal_port: p.internal_port.into(),
        status: if p.status == "stopped" {
            "stopped".into()
        } else {
            "running".into()
        },
        mode: if p.mode == "update" {
            "update".into()
        } else {
            "normal".into()
        },
        last_heartbeat: 0,
        clock_ms: p.clock_ms,
        clock_offset_ms: 0,
        cert_fingerprint: fingerprint.to_owned(),
        supervisor_id: supervisor
            .map(str::to_owned)
            .or_else(|| (!p.supervisor_id.is_empty()).then(|| p.supervisor_id.clone())),
        pid: p.pid.into(),
        started_at: p.started_at_ms,
        config_hash: (!p.config_hash.is_empty()).then(|| p.config_hash.clone()),
        schema_min: None,
        schema_max: None,
    }
}

/// Flags running processes whose clock is more than [`MAX_CLOCK_SKEW_MS`] from the median of the
/// running servers' clocks.
pub fn flag_clock_skew(processes: &mut [pb::ProcessInfo]) {
    let mut offsets: Vec<i64> = processes
        .iter()
        .filter(|p| p.kind == "server" && p.status == "running")
        .map(|p| p.clock_offset_ms)
        .collect();
    if offsets.is_empty() {
        return;
    }
    offsets.sort_unstable();
    let median = offsets[offsets.len() / 2];
    for p in processes.iter_mut().filter(|p| p.status == "running") {
        p.clock_skewed = (p.clock_offset_ms - median).abs() > MAX_CLOCK_SKEW_MS;
    }
}

/// The servers that take devices: running, heard from recently.
pub fn running_servers(rows: &[ProcessRow], now: i64, silent_ms: i64) -> Vec<pb::ServerEndpoint> {
    let mut out: Vec<pb::ServerEndpoint> = rows
        .iter()
        .filter(|r| {
            r.kind == "server" && r.status == "running" && now - r.last_heartbeat <= silent_ms
        })
        .map(|r| pb::ServerEndpoint {
            id: r.id.clone(),
            host: r.host.clone(),
            device_port: r.device_port as u32,
            mode: r.mode.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The internal ports (`host:port`) of the `swp-auth` processes that run: heard from recently.
pub fn running_swp_auth(rows: &[ProcessRow], now: i64, silent_ms: i64) -> Vec<String> {
    rows.iter()
        .filter(|r| {
            r.kind == ComponentKind::SwpAuth.as_str()
                && r.status == "running"
                && now - r.last_heartbeat <= silent_ms
                && r.internal_port > 0
        })
        .filter_map(|r| {
            let port = u32::try_from(r.internal_port).ok()?;
            Some(crate::clients::host_port(&r.host, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, kind: &str, status: &str, offset: i64) -> pb::ProcessInfo {
        pb::ProcessInfo {
            id: id.into(),
            kind: kind.into(),
            status: status.into(),
            clock_offset_ms: offset,
            ..Default::default()
        }
    }

    #[test]
    fn a_clock_far_from_the_others_is_flagged() {
        let mut ps = vec![
            p("a", "server", "running", 100),
            p("b", "server", "running", -200),
            p("c", "server", "running", 90_000),
            p("d", "broker", "running", -70_000),
            p("e", "server", "stopped", 500_000),
        ];
        flag_clock_skew(&mut ps);
        let flagged: Vec<_> = ps
            .iter()
            .filter(|p| p.clock_skewed)
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(flagged, vec!["c", "d"]);
    }

    #[test]
    fn only_fresh_running_servers_take_devices() {
        let row = |id: &str, kind: &str, status: &str, beat: i64| ProcessRow {
            id: id.into(),
            kind: kind.into(),
            status: status.into(),
            last_heartbeat: beat,
            device_port: 30002,
            host: "h".into(),
            mode: "normal".into(),
            ..Default::default()
        };
        let rows = vec![
            row("s1", "server", "running", 10_000),
            row("s2", "server", "running", 1_000),
            row("s3", "server", "stopped", 10_000),
            row("b1", "broker", "running", 10_000),
        ];
        let mut swp = row("a1", "swp-auth", "running", 10_000);
        swp.internal_port = 61617;
        let mut gone = row("a2", "swp-auth", "running", 1_000);
        gone.internal_port = 61617;
        assert_eq!(
            running_swp_auth(&[swp, gone, rows[0].clone()], 10_500, 5_000),
            vec!["h:61617".to_owned()]
        );
        let ids: Vec<_> = running_servers(&rows, 10_500, 5_000)
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, vec!["s1"]);
    }
}
