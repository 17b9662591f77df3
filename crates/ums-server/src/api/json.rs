//! The admin API as HTTPS JSON, for curl and browsers: `POST /api/v1/<Method>` with the request
//! message as a JSON object (fields in snake_case, missing fields take their defaults) and
//! `authorization: Bearer <token>`. The handlers are the gRPC ones, so both APIs always offer
//! the same operations with the same checks.
//!
//! ```text
//! curl --cacert data/tls/ca.pem https://localhost:8443/api/v1/Login \
//!      -d '{"username":"admin","password":"..."}'
//! curl --cacert data/tls/ca.pem -H "authorization: Bearer $TOKEN" \
//!      https://localhost:8443/api/v1/ListDevices -d '{}'
//! ```

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataMap;
use ums_proto::admin::v1::admin_service_server::AdminService;

use crate::admin_api::AdminApi;
use crate::error::{code_name, http_status};

/// Largest JSON request body.
const MAX_BODY: usize = 4 * 1024 * 1024;

pub fn router(api: Arc<AdminApi>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/{method}", post(dispatch))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

async fn health(State(api): State<Arc<AdminApi>>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "database": api.state.backend().as_str(),
    }))
    .into_response()
}

fn error(status: http::StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message, "code": code })),
    )
        .into_response()
}

async fn call<Req, Resp, F, Fut>(headers: HeaderMap, body: Bytes, f: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    let msg: Req = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) => {
            return error(
                http::StatusCode::BAD_REQUEST,
                "invalid_argument",
                &format!("invalid JSON request: {e}"),
            );
        }
    };
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(headers),
        tonic::Extensions::default(),
        msg,
    );
    match f(request).await {
        Ok(resp) => Json(resp.into_inner()).into_response(),
        Err(status) => error(
            http_status(status.code()),
            code_name(status.code()),
            status.message(),
        ),
    }
}

macro_rules! methods {
    ($api:ident, $method:ident, $headers:ident, $body:ident; $($name:literal => $fn:ident),* $(,)?) => {
        match $method.as_str() {
            $( $name => call($headers, $body, |r| async move { $api.$fn(r).await }).await, )*
            other => error(
                http::StatusCode::NOT_FOUND,
                "not_found",
                &format!("unknown method `{other}`: see ums.admin.v1.AdminService in proto/"),
            ),
        }
    };
}

async fn dispatch(
    State(api): State<Arc<AdminApi>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = api.as_ref();
    methods!(api, method, headers, body;
        "Login" => login,
        "WhoAmI" => who_am_i,
        "CreateAdmin" => create_admin,
        "ListAdmins" => list_admins,
        "SetAdminPassword" => set_admin_password,
        "DeleteAdmin" => delete_admin,
        "ListDevices" => list_devices,
        "GetDevice" => get_device,
        "UpdateDevice" => update_device,
        "DeleteDevice" => delete_device,
        "ResetDeviceCredential" => reset_device_credential,
        "CreateFolder" => create_folder,
        "ListFolders" => list_folders,
        "DeleteFolder" => delete_folder,
        "CreateProfile" => create_profile,
        "ListProfiles" => list_profiles,
        "GetProfile" => get_profile,
        "UpdateProfileParams" => update_profile_params,
        "DeleteProfile" => delete_profile,
        "ListParameters" => list_parameters,
        "Assign" => assign,
        "Unassign" => unassign,
        "ListAssignments" => list_assignments,
        "CreateJobs" => create_jobs,
        "ListJobs" => list_jobs,
        "ExplainSettings" => explain_settings,
        "ListProcesses" => list_processes,
        "RemoveProcess" => remove_process,
        "StopProcess" => stop_process,
        "StartProcess" => start_process,
        "ExportToken" => export_token,
        "RotateToken" => rotate_token,
        "ListFiles" => list_files,
        "DeleteFile" => delete_file,
        "CreateDirectory" => create_directory,
        "UpdateDirectory" => update_directory,
        "ListDirectories" => list_directories,
        "DeleteDirectory" => delete_directory,
        "AssignUser" => assign_user,
        "UnassignUser" => unassign_user,
        "ListUserAssignments" => list_user_assignments,
        "SetSharedWorkplace" => set_shared_workplace,
    )
}
