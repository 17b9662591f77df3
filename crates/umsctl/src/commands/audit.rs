//! `umsctl audit`: the audit log of administrators' changes, with filters.

use ums_proto::admin::v1 as pb;

use super::show;
use crate::client::{Admin, ok};
use crate::output::{parse_time, table, time};

/// What `umsctl audit` filters by.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only changes by this administrator.
    #[arg(long, value_name = "NAME")]
    pub admin: Option<String>,
    /// Only this operation, e.g. UpdateProfileParams.
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only changes whose object contains this text, e.g. "profile 7".
    #[arg(long, value_name = "TEXT")]
    pub target: Option<String>,
    /// From this time on: unix ms, RFC 3339 (2026-01-01T00:00:00Z), or a time ago such as -1h,
    /// -30m, -7d.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Before this time (same forms).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

fn entries_table(entries: &[pb::AuditEntry]) -> String {
    let mut t = table(["TIME (UTC)", "ADMIN", "ACTION", "TARGET", "FROM", "DETAIL"]);
    for e in entries {
        t.add_row([
            time(e.at_ms),
            e.admin.clone(),
            e.action.clone(),
            e.target.clone(),
            e.source.clone(),
            e.detail.clone(),
        ]);
    }
    t.to_string()
}

pub async fn run(json: bool, admin: &mut Admin, args: AuditArgs) -> anyhow::Result<()> {
    let at = |t: &Option<String>| -> anyhow::Result<i64> {
        match t.as_deref().map(str::trim) {
            None => Ok(0),
            // `-1h`: the time as long ago as `+1h` is ahead.
            Some(ago) if ago.starts_with('-') => {
                let now = parse_time("+0s").map_err(anyhow::Error::msg)?;
                let ahead = parse_time(&format!("+{}", &ago[1..])).map_err(anyhow::Error::msg)?;
                Ok((2 * now - ahead).max(1))
            }
            Some(t) => parse_time(t).map_err(anyhow::Error::msg),
        }
    };
    let request = pb::ListAuditRequest {
        admin: args.admin.unwrap_or_default(),
        action: args.action.unwrap_or_default(),
        target: args.target.unwrap_or_default(),
        since_ms: at(&args.since)?,
        until_ms: at(&args.until)?,
        limit: args.limit,
    };
    let list = ok(admin.list_audit(request).await)?;
    show(json, &list, |l| entries_table(&l.entries))
}
