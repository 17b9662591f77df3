//! `umsctl network`: the HA network's processes, stopped and started through their watchdogs.

use clap::Subcommand;
use ums_proto::admin::v1 as pb;
use ums_proto::network::v1::ProcessInfo;

use super::show;
use crate::client::{Admin, ok};
use crate::output::{table, time};

/// `network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Every process of the network: servers, brokers, watchdogs, swp-auth, with status, last
    /// heartbeat and clock offset. Clocks more than 60 s from the servers' are flagged.
    List,
    /// Delete an orphaned registry entry (a process that shows as stopped).
    Rm { id: String },
    /// Ask a process's watchdog to stop it (the broker drains, the server finishes its work).
    Stop { id: String },
    /// Ask a process's watchdog to start it again.
    Start { id: String },
    /// Check the whole network from the server: messaging between every pair of components,
    /// files on every server, device ports, certificates, clocks, tokens, versions, database,
    /// registry and configuration. Every failed check names its likely cause and fix. Exits 1
    /// when a check failed. A report less than a minute old is shown again unless --fresh.
    Check {
        /// Run the checks again instead of showing a report less than a minute old.
        #[arg(long)]
        fresh: bool,
        /// Also write the report as a self-contained HTML page to this file.
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
    },
}

fn processes_table(ps: &[ProcessInfo]) -> String {
    let mut t = table([
        "ID",
        "TYPE",
        "HOST",
        "PORTS",
        "STATUS",
        "MODE",
        "VERSION",
        "SCHEMA",
        "HEARTBEAT (UTC)",
        "CLOCK",
        "NOTES",
    ]);
    for p in ps {
        let ports = [
            ("dev", p.device_port),
            ("adm", p.admin_port),
            ("int", p.internal_port),
        ]
        .iter()
        .filter(|(_, port)| *port != 0)
        .map(|(n, port)| format!("{n} {port}"))
        .collect::<Vec<_>>()
        .join(", ");
        let mut notes = Vec::new();
        if p.scheduler {
            notes.push("scheduler".to_owned());
        }
        if p.clock_skewed {
            notes.push("CLOCK SKEW".to_owned());
        }
        if !p.supervisor_id.is_empty() {
            notes.push(format!("watched by {}", p.supervisor_id));
        }
        t.add_row([
            p.id.clone(),
            p.kind.clone(),
            p.host.clone(),
            ports,
            p.status.clone(),
            p.mode.clone(),
            p.version.clone(),
            p.schema_version.clone(),
            time(p.last_heartbeat_ms),
            format!("{:+.1}s", p.clock_offset_ms as f64 / 1000.0),
            notes.join("; "),
        ]);
    }
    t.to_string()
}

pub async fn run(json: bool, admin: &mut Admin, command: NetworkCommand) -> anyhow::Result<()> {
    match command {
        NetworkCommand::List => {
            let list = ok(admin.list_processes(pb::ListProcessesRequest {}).await)?;
            show(json, &list, |l| processes_table(&l.processes))
        }
        NetworkCommand::Rm { id } => {
            let done = ok(admin
                .remove_process(pb::ProcessRequest { id: id.clone() })
                .await)?;
            show(json, &done, |_| format!("removed {id} from the registry"))
        }
        NetworkCommand::Stop { id } => {
            let p = ok(admin.stop_process(pb::ProcessRequest { id }).await)?;
            show(json, &p, |p| format!("{} is {}", p.id, p.status))
        }
        NetworkCommand::Start { id } => {
            let p = ok(admin.start_process(pb::ProcessRequest { id }).await)?;
            show(json, &p, |p| format!("{} is {}", p.id, p.status))
        }
        NetworkCommand::Check { fresh, html } => {
            super::check::run(json, admin, fresh, html.as_deref()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_is_flagged_in_the_table() {
        let broker = |clock_skewed| ProcessInfo {
            id: "broker-1".into(),
            kind: "broker".into(),
            status: "running".into(),
            clock_offset_ms: if clock_skewed { 120_000 } else { 0 },
            clock_skewed,
            ..Default::default()
        };
        let table = processes_table(&[broker(false)]);
        assert!(table.contains("broker-1"), "{table}");
        assert!(!table.contains("CLOCK SKEW"), "{table}");
        let table = processes_table(&[broker(true)]);
        assert!(table.contains("CLOCK SKEW"), "{table}");
    }
}
