//! The admin API as HTTPS JSON, for curl and browsers: `POST /api/v1/<Method>` with the request
//! message as a JSON object (fields in snake_case, missing fields take their defaults) and
//! `authorization: Bearer <token>`. The methods and their handlers are the gRPC ones (the table
//! in [`crate::api::admin`]), so both APIs always offer the same operations with the same checks.
//!
//! `GET /api/v1/health` answers without a session, for probes; any other path is a 404
//! ([`fallback`]).
//!
//! ```text
//! TOKEN=$(curl -s --cacert data/tls/ca.pem https://localhost:8443/api/v1/Login \
//!      -d '{"username":"admin","password":"..."}' | jq -r .token)
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

use crate::api::admin::AdminApi;
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

/// What the admin port answers on a path it does not serve: a gRPC call gets gRPC's
/// `Unimplemented`, as from any gRPC server; anything else (a probe, a browser, curl) gets
/// HTTP 404 with a JSON body, never a 200 with an empty body.
pub async fn fallback(request: axum::extract::Request) -> Response {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    JsonError {
        status: http::StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!(
            "no such path `{}`: the JSON API is POST /api/v1/<Method>, and GET /api/v1/health for probes",
            request.uri().path()
        ),
    }
    .into_response()
}

/// A refused JSON call: its HTTP status and the body `{"error": ..., "code": ...}`.
pub struct JsonError {
    status: http::StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message, "code": self.code })),
        )
            .into_response()
    }
}

/// Decodes the body as `Req`, calls `f` with the headers as metadata, and encodes the answer.
pub async fn call<Req, Resp, F, Fut>(
    metadata: MetadataMap,
    extensions: tonic::Extensions,
    body: &[u8],
    f: F,
) -> Result<serde_json::Value, JsonError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let msg: Req = serde_json::from_slice(body).map_err(|e| JsonError {
        status: http::StatusCode::BAD_REQUEST,
        code: "invalid_argument",
        message: format!("invalid JSON request: {e}"),
    })?;
    let request = tonic::Request::from_parts(metadata, extensions, msg);
    let answer = f(request).await.map_err(|status| JsonError {
        status: http_status(status.code()),
        code: code_name(status.code()),
        message: status.message().to_owned(),
    })?;
    serde_json::to_value(answer.into_inner()).map_err(|e| JsonError {
        status: http::StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: format!("cannot encode the answer: {e}"),
    })
}

async fn dispatch(
    State(api): State<Arc<AdminApi>>,
    Path(method): Path<String>,
    client: Option<axum::Extension<ums_service::ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The client's address reaches the handlers as it does over gRPC (for the audit log).
    let mut extensions = tonic::Extensions::default();
    if let Some(axum::Extension(addr)) = client {
        extensions.insert(addr);
    }
    match api
        .dispatch_json(
            &method,
            MetadataMap::from_headers(headers),
            extensions,
            &body,
        )
        .await
    {
        Some(Ok(value)) => Json(value).into_response(),
        Some(Err(e)) => e.into_response(),
        None => JsonError {
            status: http::StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("unknown method `{method}`: see ums.admin.v1.AdminService in proto/"),
        }
        .into_response(),
    }
}
