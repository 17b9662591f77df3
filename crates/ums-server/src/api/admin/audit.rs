//! Reading the audit log (the writes are recorded by the admin API's table, see
//! [`crate::audit`]).

use ums_db::audit::AuditFilter;
use ums_proto::admin::v1 as pb;

use super::{AdminApi, Caller};
use crate::error::ApiError;

pub async fn list(
    api: &AdminApi,
    _: Caller,
    r: pb::ListAuditRequest,
) -> Result<pb::ListAuditResponse, ApiError> {
    if r.since_ms < 0 || r.until_ms < 0 {
        return Err(ApiError::Invalid(
            "since_ms and until_ms are milliseconds since the epoch".into(),
        ));
    }
    if r.until_ms != 0 && r.since_ms > r.until_ms {
        return Err(ApiError::Invalid("since_ms is after until_ms".into()));
    }
    let some = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let filter = AuditFilter {
        admin: some(r.admin),
        action: some(r.action),
        target_contains: some(r.target),
        since: (r.since_ms > 0).then_some(r.since_ms),
        until: (r.until_ms > 0).then_some(r.until_ms),
        limit: u64::from(r.limit),
    };
    let rows = api.state.db.list_audit(&filter).await?;
    Ok(pb::ListAuditResponse {
        entries: rows
            .into_iter()
            .map(|e| pb::AuditEntry {
                id: e.id,
                at_ms: e.at,
                admin: e.admin,
                action: e.action,
                target: e.target,
                detail: e.detail,
                source: e.source,
            })
            .collect(),
    })
}
