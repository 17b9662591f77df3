//! Ending update mode by hand, for a server that did not reconnect by itself (see
//! [`crate::state::AppState::leave_update_mode`]).

use ums_proto::admin::v1 as pb;

use super::{AdminApi, Caller};
use crate::error::ApiError;

pub async fn end(
    api: &AdminApi,
    caller: Caller,
    _: pb::EndUpdateModeRequest,
) -> Result<pb::EndUpdateModeResponse, ApiError> {
    let why = format!("ended by {}", caller.username);
    match api.state.leave_update_mode(&why).await? {
        Some((replayed, schema)) => Ok(pb::EndUpdateModeResponse {
            was_in_update_mode: true,
            replayed,
            schema: schema.to_string(),
        }),
        None => Ok(pb::EndUpdateModeResponse {
            was_in_update_mode: false,
            replayed: 0,
            schema: api
                .state
                .db
                .schema_version()
                .await?
                .map(|v| v.to_string())
                .unwrap_or_default(),
        }),
    }
}
