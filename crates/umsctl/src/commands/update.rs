//! `umsctl update`: schema updates across the network: where a rollout stands, the checks
//! before one, the recorded steps, and running the steps that wait.

use clap::Subcommand;
use ums_proto::admin::v1 as pb;

use super::show;
use crate::client::{Admin, ok};
use crate::output::{table, time};

/// `update` subcommands.
#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Where an update stands: the database's schema version and its history (each step's
    /// version, phase, the process and binary that applied it, and when), every process's
    /// version and mode, how many running servers run the newest binary ("2 of 3 servers
    /// updated"), and the expand and contract steps that wait, with what they wait for.
    Status,
    /// Checks before an update: versions, the schema's steps, clock skew, orphaned registry
    /// entries and the most recent backup (a warning when none is less than a day old). Every
    /// check is OK, WARN or FAIL with its fix; exits 1 when a check failed.
    Plan,
    /// The recorded steps of updates, oldest first: backups, migrations, contract steps and
    /// what they waited for, mode changes.
    Log {
        /// Show at most this many, the newest.
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Run the schema steps that wait now, instead of at the scheduler's next heartbeat: a
    /// contract step once no server needs the older schema, a major step only on a server that
    /// is alone. Refused, naming the servers in the way, otherwise.
    Apply,
    /// End update mode on this server (`--server`): replay the device check-ins and job
    /// results it kept into the shared database and serve from it again. Refused while the
    /// shared database is still older than the schema the server runs on.
    EndMode,
}

fn status_text(s: &pb::UpdateStatus) -> String {
    let mut out = format!(
        "schema {} (answered by server {}, {}, knows up to {})\n{}{}\n\n",
        if s.schema_version.is_empty() {
            "none"
        } else {
            &s.schema_version
        },
        s.answered_by,
        s.binary_version,
        s.known_schema,
        s.summary,
        if s.newest_version.is_empty() {
            String::new()
        } else {
            format!(
                " (newest {}{})",
                s.newest_version,
                if s.in_progress {
                    "; update in progress"
                } else {
                    ""
                }
            )
        }
    );
    let mut h = table([
        "VERSION",
        "NAME",
        "PHASE",
        "APPLIED BY",
        "BINARY",
        "APPLIED (UTC)",
        "TOOK",
    ]);
    for step in &s.history {
        h.add_row([
            step.version.clone(),
            step.name.clone(),
            step.phase.clone(),
            step.applied_by.clone(),
            step.binary_version.clone(),
            time(step.applied_at_ms),
            format!("{} ms", step.duration_ms),
        ]);
    }
    out.push_str(&format!("history:\n{h}\n\n"));
    let mut p = table([
        "ID", "TYPE", "HOST", "VERSION", "SCHEMA", "STATUS", "MODE", "UPDATED",
    ]);
    for proc in &s.processes {
        p.add_row([
            proc.id.clone(),
            proc.kind.clone(),
            proc.host.clone(),
            proc.version.clone(),
            proc.schema_max.clone(),
            proc.status.clone(),
            proc.mode.clone(),
            if proc.kind != "server" || proc.status != "running" {
                String::new()
            } else if proc.updated {
                "yes".into()
            } else {
                "no".into()
            },
        ]);
    }
    out.push_str(&format!("processes:\n{p}\n"));
    if s.pending.is_empty() {
        out.push_str("\nno steps wait\n");
    } else {
        let mut w = table(["VERSION", "NAME", "PHASE", "WAITS FOR"]);
        for step in &s.pending {
            w.add_row([
                step.version.clone(),
                step.name.clone(),
                step.phase.clone(),
                if step.waits_for.is_empty() {
                    "nothing: runs at the next heartbeat, or `umsctl update apply`".into()
                } else {
                    step.waits_for.clone()
                },
            ]);
        }
        out.push_str(&format!("\npending steps:\n{w}\n"));
    }
    out
}

fn plan_text(plan: &pb::UpdatePlan) -> String {
    let mut t = table(["CHECK", "STATUS", "RESULT", "FIX"]);
    for c in &plan.checks {
        t.add_row([
            c.checked.clone(),
            c.status.to_uppercase(),
            c.result.clone(),
            c.fix.clone(),
        ]);
    }
    let verdict = if plan.failed == 0 && plan.warnings == 0 {
        "ready: every check passed".to_owned()
    } else {
        format!("{} failed, {} warnings", plan.failed, plan.warnings)
    };
    format!(
        "{t}\n{verdict} (schema {}, checked by server {})\n",
        plan.schema_version, plan.answered_by
    )
}

fn log_text(log: &pb::UpdateLogResponse) -> String {
    if log.entries.is_empty() {
        return "no update steps recorded".into();
    }
    let mut t = table(["TIME (UTC)", "BY", "STEP", "OUTCOME", "DETAIL"]);
    for e in &log.entries {
        t.add_row([
            time(e.at_ms),
            e.actor.clone(),
            e.step.clone(),
            e.outcome.clone(),
            e.detail.clone(),
        ]);
    }
    t.to_string()
}

pub async fn run(json: bool, admin: &mut Admin, command: UpdateCommand) -> anyhow::Result<()> {
    match command {
        UpdateCommand::EndMode => super::update_mode::end_mode(json, admin).await,
        UpdateCommand::Status => {
            let status = ok(admin.update_status(pb::UpdateStatusRequest {}).await)?;
            show(json, &status, status_text)
        }
        UpdateCommand::Plan => {
            let plan = ok(admin.update_plan(pb::UpdatePlanRequest {}).await)?;
            show(json, &plan, plan_text)?;
            if plan.failed > 0 {
                anyhow::bail!(
                    "{} checks failed: fix them before the update (see FIX)",
                    plan.failed
                );
            }
            Ok(())
        }
        UpdateCommand::Log { limit } => {
            let log = ok(admin.update_log(pb::UpdateLogRequest { limit }).await)?;
            show(json, &log, log_text)
        }
        UpdateCommand::Apply => {
            let done = ok(admin.update_apply(pb::UpdateApplyRequest {}).await)?;
            show(json, &done, |d| {
                let head = if d.applied.is_empty() {
                    "no step waited: nothing applied".to_owned()
                } else {
                    format!("applied {}", d.applied.join(", "))
                };
                match &d.status {
                    Some(s) => format!("{head}\n\n{}", status_text(s)),
                    None => head,
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_the_rollout_and_what_waits() {
        let status = pb::UpdateStatus {
            schema_version: "1.7".into(),
            answered_by: "a".into(),
            binary_version: "0.1.0+next-minor".into(),
            known_schema: "1.8".into(),
            summary: "1 of 2 servers updated".into(),
            newest_version: "0.1.0+next-minor".into(),
            in_progress: true,
            history: vec![pb::SchemaStep {
                version: "1.7".into(),
                name: "test_upgrade_probe".into(),
                phase: "expand".into(),
                applied_by: "server/a".into(),
                ..Default::default()
            }],
            pending: vec![pb::PendingStep {
                version: "1.8".into(),
                name: "test_upgrade_probe_required".into(),
                phase: "contract".into(),
                waits_for: "servers that need the older schema: b".into(),
            }],
            ..Default::default()
        };
        let text = status_text(&status);
        for want in [
            "1 of 2 servers updated",
            "update in progress",
            "server/a",
            "expand",
            "contract",
            "servers that need the older schema: b",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    #[test]
    fn plan_shows_each_check_with_its_fix() {
        let plan = pb::UpdatePlan {
            schema_version: "1.6".into(),
            answered_by: "a".into(),
            checks: vec![pb::PlanCheck {
                checked: "backup".into(),
                status: "warn".into(),
                result: "no backup recorded".into(),
                fix: "take one before the update: `ums-server backup`".into(),
            }],
            failed: 0,
            warnings: 1,
        };
        let text = plan_text(&plan);
        assert!(
            text.contains("WARN") && text.contains("ums-server backup"),
            "{text}"
        );
        assert!(text.contains("0 failed, 1 warnings"), "{text}");
    }
}
