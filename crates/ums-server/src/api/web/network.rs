//! The network page: every process of the registry, the versions and update state of the
//! servers, and the network check's report.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_server::AdminService;

use super::html::{E, ago, badge, time};
use super::{Failure, Session};
use crate::api::admin::AdminApi;

#[derive(Deserialize, Default)]
pub struct NetworkQuery {
    #[serde(default)]
    fresh: String,
}

pub async fn page(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Query(q): Query<NetworkQuery>,
) -> Result<Response, Failure> {
    let processes = s
        .call(pb::ListProcessesRequest {}, |r| api.list_processes(r))
        .await?
        .processes;
    let now = ums_db::now_ms();
    let mut main = String::from("<h1>Network</h1><h2>Processes</h2>");
    main.push_str(
        "<table id=\"processes\"><tr><th>Process</th><th>Kind</th><th>Host</th><th>Status</th>\
         <th>Mode</th><th>Version</th><th>Schema</th><th>Heartbeat</th><th>Clock</th><th>Clock offset</th>\
         <th>Ports (device / admin / internal)</th><th>Role</th></tr>",
    );
    for p in &processes {
        let role = if p.scheduler { "scheduler" } else { "" };
        let skew = if p.clock_skewed { " (skewed)" } else { "" };
        let _ = write!(
            main,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td title=\"{}\">{}</td><td>{}</td><td class=\"num\">{} ms{skew}</td><td>{} / {} / {}</td><td>{role}</td></tr>",
            E(&p.id),
            E(&p.kind),
            E(&p.host),
            badge(&p.status),
            badge(&p.mode),
            E(&p.version),
            E(&p.schema_version),
            time(p.last_heartbeat_ms),
            ago(p.last_heartbeat_ms, now),
            time(p.clock_ms),
            p.clock_offset_ms,
            p.device_port,
            p.admin_port,
            p.internal_port,
        );
    }
    main.push_str("</table>");
    main.push_str(&update_status(&processes));

    let fresh = !q.fresh.is_empty();
    main.push_str("<h2>Network check</h2>");
    match s
        .call(pb::NetworkCheckRequest { fresh }, |r| api.network_check(r))
        .await
    {
        Ok(report) => main.push_str(&check_report(&report)),
        Err(e) => main.push_str(&e.banner()),
    }
    Ok(s.page("Network", "/network", &main))
}

/// What the servers run: one version and schema everywhere, or which differ, and any server
/// in update mode.
fn update_status(processes: &[ums_proto::network::v1::ProcessInfo]) -> String {
    let servers: Vec<_> = processes
        .iter()
        .filter(|p| p.kind == "server" && p.status == "running")
        .collect();
    let versions: BTreeSet<&str> = servers.iter().map(|p| p.version.as_str()).collect();
    let schemas: BTreeSet<&str> = servers.iter().map(|p| p.schema_version.as_str()).collect();
    let updating: Vec<&str> = servers
        .iter()
        .filter(|p| p.mode == "update")
        .map(|p| p.id.as_str())
        .collect();
    let mut out = String::from("<h2>Update status</h2><p id=\"update-status\">");
    match (versions.len(), schemas.len()) {
        (0, _) => out.push_str("No server is running."),
        (1, 1) => {
            let _ = write!(
                out,
                "{} running server(s), all on version <b>{}</b> with schema <b>{}</b>.",
                servers.len(),
                E(versions.iter().next().copied().unwrap_or_default()),
                E(schemas.iter().next().copied().unwrap_or_default())
            );
        }
        _ => {
            let list = |s: &BTreeSet<&str>| {
                s.iter()
                    .map(|v| E(v).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                out,
                "Servers differ: versions {}; schemas {}. An update is under way or unfinished.",
                list(&versions),
                list(&schemas)
            );
        }
    }
    if updating.is_empty() {
        out.push_str(" No server is in update mode.");
    } else {
        let _ = write!(
            out,
            " In update mode: <span class=\"mono\">{}</span>.",
            E(&updating.join(", "))
        );
    }
    out.push_str("</p>");
    out
}

fn check_report(r: &pb::NetworkCheckReport) -> String {
    let mut out = format!(
        "<p id=\"check-summary\">Checked by <span class=\"mono\">{}</span> at {}{}: {} failed, {} warnings. \
         <a href=\"/network?fresh=1\">Run the checks again</a></p>",
        E(&r.checked_by),
        time(r.checked_at_ms),
        if r.cached { " (cached)" } else { "" },
        r.failed,
        r.warnings
    );
    out.push_str(
        "<table id=\"check\"><tr><th>Section</th><th>Checked</th><th>Status</th><th>Result</th>\
         <th>Likely cause</th><th>Fix</th></tr>",
    );
    for c in &r.results {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            E(&c.section),
            E(&c.checked),
            badge(&c.status),
            E(&c.result),
            E(&c.cause),
            E(&c.fix)
        );
    }
    out.push_str("</table>");
    out
}

#[cfg(test)]
mod tests {
    use ums_proto::network::v1::ProcessInfo;

    fn server(id: &str, version: &str, schema: &str, mode: &str) -> ProcessInfo {
        ProcessInfo {
            id: id.into(),
            kind: "server".into(),
            status: "running".into(),
            version: version.into(),
            schema_version: schema.into(),
            mode: mode.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_update_status_says_whether_the_servers_agree() {
        let same = [
            server("a", "1.2", "1.6", "normal"),
            server("b", "1.2", "1.6", "normal"),
        ];
        let s = super::update_status(&same);
        assert!(
            s.contains("2 running server(s), all on version <b>1.2</b> with schema <b>1.6</b>"),
            "{s}"
        );
        assert!(s.contains("No server is in update mode"), "{s}");
        let mixed = [
            server("a", "1.2", "1.6", "normal"),
            server("b", "1.3", "1.7", "update"),
        ];
        let s = super::update_status(&mixed);
        assert!(s.contains("versions 1.2, 1.3; schemas 1.6, 1.7"), "{s}");
        assert!(
            s.contains("In update mode: <span class=\"mono\">b</span>"),
            "{s}"
        );
        assert!(super::update_status(&[]).contains("No server is running"));
    }
}
