//! `SupportBundle`: what an administrator sends when asking for help. The network check's
//! report, and of every running server, watchdog and swp-auth its configuration with secrets
//! redacted and its recent logs, gathered by this server over the internal mutual TLS.
//! `umsctl support-bundle` writes it into one archive.

use futures_util::future::join_all;
use ums_proto::admin::v1 as pb;
use ums_proto::network::v1 as cpb;
use ums_tls::ComponentKind;

use super::{AdminApi, Caller, check};
use crate::clients::diagnostics;
use crate::error::ApiError;

/// Kinds that serve `DiagnosticsService` on their internal port.
fn answers_diagnostics(kind: &str) -> bool {
    matches!(kind, "server" | "watchdog" | "swp-auth")
}

pub async fn support_bundle(
    api: &AdminApi,
    caller: Caller,
    r: pb::SupportBundleRequest,
) -> Result<pb::SupportBundleResponse, ApiError> {
    let state = &api.state;
    let net = &state.network;
    tracing::info!(admin = %caller.username, "support bundle requested");
    let report = check::network_check(
        api,
        Caller {
            username: caller.username.clone(),
            permissions: caller.permissions.clone(),
        },
        pb::NetworkCheckRequest { fresh: r.fresh },
    );
    let processes = net.processes(&state.db).await?;
    let me = net.process_id.as_str();
    let remote: Vec<&cpb::ProcessInfo> = processes
        .iter()
        .filter(|p| {
            p.id != me
                && p.status == "running"
                && p.internal_port != 0
                && answers_diagnostics(&p.kind)
        })
        .collect();
    let (report, fetched) = tokio::join!(
        report,
        join_all(remote.iter().map(|p| diagnostics::fetch(&net.identity, p)))
    );
    let mut bundle = pb::SupportBundleResponse {
        created_at_ms: ums_db::now_ms(),
        created_by: me.to_owned(),
        check: Some(report?),
        processes: vec![ums_network::diagnostics::local(
            me,
            ComponentKind::Server,
            env!("CARGO_PKG_VERSION"),
        )],
        missing: Vec::new(),
    };
    for (p, got) in remote.iter().zip(fetched) {
        match got {
            Ok(d) => bundle.processes.push(d),
            Err(e) => bundle.missing.push(gap(p, e)),
        }
    }
    let covered: Vec<String> = bundle
        .processes
        .iter()
        .map(|d| d.process_id.clone())
        .collect();
    for p in &processes {
        if covered.contains(&p.id) || remote.iter().any(|r| r.id == p.id) {
            continue;
        }
        let reason = if p.status != "running" {
            format!("it is {} in the registry", p.status)
        } else if !p.supervisor_id.is_empty() && covered.contains(&p.supervisor_id) {
            format!(
                "a {} has no internal port: its output is in the logs of its watchdog {}",
                p.kind, p.supervisor_id
            )
        } else {
            format!(
                "a {} has no internal port and no watchdog of the network supervises it: collect its log on {}",
                p.kind, p.host
            )
        };
        bundle.missing.push(gap(p, reason));
    }
    Ok(bundle)
}

fn gap(p: &cpb::ProcessInfo, reason: String) -> pb::BundleGap {
    pb::BundleGap {
        process_id: p.id.clone(),
        kind: p.kind.clone(),
        reason,
    }
}
