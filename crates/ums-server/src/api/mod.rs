//! The server's APIs, the top layer: the admin API (gRPC and JSON) and the web console over
//! it, the device API, the network service of the internal port, and joining. Each handler returns
//! `Result<_, ApiError>`; [`crate::error`] turns that into a status in one place.

pub mod admin;
pub mod device;
pub mod join;
pub mod json;
pub mod network;
pub mod web;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// Refuses a client that announces a release this server does not serve (`x-ums-version`, or
/// a user agent that starts with the announcement), with a message naming both versions. A
/// client that announces nothing is served.
pub fn version_checked(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(version_guard))
}

async fn version_guard(request: Request, next: Next) -> Response {
    use ums_proto::version;
    let headers = request.headers();
    let announced = match headers.get(version::HEADER) {
        Some(v) => Some(
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| format!("`{}` is not text", version::HEADER)),
        ),
        None => headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .filter(|ua| ua.contains(" protocol="))
            .map(|ua| Ok(ua.to_owned())),
    };
    let Some(announced) = announced else {
        return next.run(request).await;
    };
    let verdict = announced
        .and_then(|text| version::parse(&text))
        .and_then(|client| version::check(&client, "server"));
    let Err(message) = verdict else {
        return next.run(request).await;
    };
    tracing::warn!(%message, "refused a client of another version");
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let status = tonic::Status::from(crate::error::ApiError::FailedPrecondition(message));
        let (parts, ()) = status.into_http::<()>().into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    let code = tonic::Code::FailedPrecondition;
    axum::response::IntoResponse::into_response((
        crate::error::http_status(code),
        axum::Json(serde_json::json!({ "error": message, "code": "failed_precondition" })),
    ))
}

/// Counts every request of `router` in the server's metrics: by port (`api`), method and
/// status, and its latency up to the response's headers (the whole call for unary gRPC).
pub fn counted(router: axum::Router, state: &Arc<AppState>, api: &'static str) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(
        (state.clone(), api),
        count,
    ))
}

async fn count(
    State((state, api)): State<(Arc<AppState>, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    let start = std::time::Instant::now();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let grpc = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(crate::metrics::grpc_code_name);
    let is_grpc = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let http_status = response.status();
    let status = match grpc {
        Some(code) => code.to_owned(),
        // A gRPC answer with a body carries its status in the trailers: ok unless it fails
        // later in the stream.
        None if is_grpc && http_status.is_success() => "ok".to_owned(),
        None => http_status.as_u16().to_string(),
    };
    // Only methods the port serves become label values: an unknown path from a client is one
    // series, not one per path.
    let unknown = http_status == http::StatusCode::NOT_FOUND || grpc == Some("unimplemented");
    let method = if unknown { "unknown" } else { method_of(&path) };
    let m = &state.metrics;
    m.requests.inc(&[api, method, &status]);
    m.request_seconds
        .observe(&[api, method], start.elapsed().as_secs_f64());
    response
}

/// `/ums.admin.v1.AdminService/Login` → `AdminService/Login`; `/api/v1/Login` → `Login`;
/// every page of the web console (whose paths carry ids) → `web`.
fn method_of(path: &str) -> &str {
    if let Some(m) = path.strip_prefix("/api/v1/") {
        return m;
    }
    let p = path.trim_start_matches('/');
    match p.split_once('/') {
        Some((service, _)) if service.contains('.') => {
            &p[service.rfind('.').map_or(0, |i| i + 1)..]
        }
        _ => "web",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn methods_are_named_without_their_package() {
        assert_eq!(
            super::method_of("/ums.admin.v1.AdminService/Login"),
            "AdminService/Login"
        );
        assert_eq!(super::method_of("/api/v1/ListDevices"), "ListDevices");
        assert_eq!(super::method_of("/devices/12"), "web");
        assert_eq!(super::method_of("/"), "web");
    }
}
