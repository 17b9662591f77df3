//! The web console for administrators, on the admin port at `/`: server-rendered HTML pages and
//! plain forms (POST, then a redirect to the page that shows the result), no script at all.
//!
//! Every page and form calls the admin API's handlers through [`AdminService`], with the
//! session's token as its bearer token: the console has exactly the API's operations, checks,
//! permissions and audit log, and holds no logic of its own beyond reading forms and writing
//! HTML.
//!
//! Security: the session is the admin API's session token in a `__Host-` cookie (`HttpOnly`,
//! `Secure`, `SameSite=Strict`); every POST carries a CSRF token, checked in one place
//! ([`csrf_guard`]) before any handler runs: the session's (a hash of its token) or, for the
//! login form, a random token also sent as a cookie. Every answer carries a CSP of
//! `default-src 'self'` (the one style sheet is served from `/style.css`), `nosniff`, no
//! framing and `no-store`.

mod devices;
pub mod html;
mod more;
mod network;
mod settings;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tonic::Code;
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_server::AdminService;

use self::html::{E, csrf_field};
use crate::api::admin::AdminApi;
use crate::secrets::{random_token, sha256_hex};

/// The session cookie: the admin API's session token.
const SESSION_COOKIE: &str = "__Host-ums_session";
/// The login form's CSRF cookie (double submit: the form's field must equal it).
const LOGIN_COOKIE: &str = "__Host-ums_login";
/// Largest form body.
const MAX_FORM: usize = 64 * 1024;
const STYLE: &str = include_str!("style.css");

pub fn router(api: Arc<AdminApi>) -> axum::Router {
    axum::Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/style.css", get(style))
        .route("/network", get(network::page))
        .route("/devices", get(devices::list))
        .route("/devices/{id}", get(devices::detail))
        .route("/devices/{id}/move", post(devices::move_to))
        .route("/devices/{id}/rename", post(devices::rename))
        .route("/devices/{id}/assign", post(devices::assign))
        .route("/devices/{id}/unassign", post(devices::unassign))
        .route(
            "/folders",
            get(settings::folders).post(settings::create_folder),
        )
        .route("/folders/{id}/delete", post(settings::delete_folder))
        .route(
            "/profiles",
            get(settings::profiles).post(settings::create_profile),
        )
        .route("/profiles/{id}", get(settings::profile))
        .route("/profiles/{id}/params", post(settings::set_params))
        .route("/profiles/{id}/assign", post(settings::assign))
        .route("/profiles/{id}/unassign", post(settings::unassign))
        .route("/profiles/{id}/delete", post(settings::delete_profile))
        .route("/jobs", get(more::jobs).post(more::create_jobs))
        .route("/files", get(more::files))
        .route("/swp", get(more::swp))
        .route("/swp/end", post(more::end_session))
        .route("/audit", get(more::audit))
        .layer(axum::middleware::from_fn(csrf_guard))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(api)
}

/// The headers of every answer of the console.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The CSRF token of a session: derived from its secret token, so it needs no storage and a
/// page of another site, which cannot read the cookie, cannot know it.
fn session_csrf(token: &str) -> String {
    sha256_hex(format!("ums-web-csrf\0{token}").as_bytes())
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Refuses every POST whose `csrf` field is not the one its session (or, for the login form,
/// its login cookie) expects, before any handler runs.
async fn csrf_guard(request: Request, next: Next) -> Response {
    if request.method() != http::Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let expected = if parts.uri.path() == "/login" {
        cookie(&parts.headers, LOGIN_COOKIE).map(str::to_owned)
    } else {
        cookie(&parts.headers, SESSION_COOKIE).map(session_csrf)
    };
    let Some(expected) = expected else {
        // No session (or a login form without its cookie): start over at the login page.
        return Redirect::to("/login").into_response();
    };
    let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
        Ok(b) => b,
        Err(_) => {
            return message_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                &format!("a form may send at most {} KiB", MAX_FORM / 1024),
            );
        }
    };
    let given = serde_urlencoded::from_bytes::<CsrfField>(&bytes)
        .map(|f| f.csrf)
        .unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return message_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "the form's security token does not match this session: it expired or came from another site. Reload the page and send it again.",
        );
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// A page outside a session: a title and a message.
fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<main class=\"narrow\"><h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Back to the console</a></p></main>",
        E(title),
        E(message)
    );
    (status, Html(document(title, "", &body))).into_response()
}

/// The whole HTML document around `nav` and `main`.
fn document(title: &str, nav: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · UMS console</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body>{nav}{main}</body></html>\n",
        E(title)
    )
}

/// A logged-in administrator, taken from the session cookie and checked with the admin API.
pub struct Session {
    token: String,
    pub username: String,
    pub permissions: Vec<String>,
    pub csrf: String,
    client: Option<ums_service::ClientAddr>,
}

impl FromRequestParts<Arc<AdminApi>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<AdminApi>,
    ) -> Result<Self, Self::Rejection> {
        let to_login = || {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str);
            Redirect::to(&format!("/login?next={}", html::url_component(next))).into_response()
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        let mut session = Session {
            csrf: session_csrf(token),
            token: token.to_owned(),
            username: String::new(),
            permissions: Vec::new(),
            client: parts.extensions.get::<ums_service::ClientAddr>().copied(),
        };
        match session
            .call(pb::WhoAmIRequest {}, |r| api.who_am_i(r))
            .await
        {
            Ok(me) => {
                session.username = me.username;
                session.permissions = me.permissions;
                Ok(session)
            }
            Err(Failure(status)) if status.code() == Code::Unauthenticated => Err(to_login()),
            Err(f) => Err(f.into_response()),
        }
    }
}

impl Session {
    /// Calls an admin API method as this administrator.
    pub async fn call<Req, Resp, F, Fut>(&self, message: Req, f: F) -> Result<Resp, Failure>
    where
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| Failure(tonic::Status::unauthenticated("malformed session cookie")))?;
        request.metadata_mut().insert("authorization", bearer);
        if let Some(addr) = self.client {
            request.extensions_mut().insert(addr);
        }
        Ok(f(request).await.map_err(Failure)?.into_inner())
    }

    /// The page `main` inside the console's layout, `active` the navigation entry to mark.
    pub fn page(&self, title: &str, active: &str, main: &str) -> Response {
        let mut nav = String::from("<header><a class=\"brand\" href=\"/\">UMS</a><nav>");
        for (href, label) in [
            ("/network", "Network"),
            ("/devices", "Devices"),
            ("/folders", "Folders"),
            ("/profiles", "Profiles"),
            ("/jobs", "Jobs"),
            ("/files", "Files"),
            ("/swp", "Shared Workplace"),
            ("/audit", "Audit log"),
        ] {
            let class = if href == active {
                " class=\"active\""
            } else {
                ""
            };
            let _ = write!(nav, "<a href=\"{href}\"{class}>{label}</a>");
        }
        let _ = write!(
            nav,
            "</nav><form method=\"post\" action=\"/logout\" class=\"logout\">{}<span>{}</span> \
             <button type=\"submit\">Log out</button></form></header>",
            csrf_field(&self.csrf),
            E(&self.username)
        );
        Html(document(title, &nav, &format!("<main>{main}</main>"))).into_response()
    }

    /// `page` with a refusal shown above it, in the status the refusal maps to.
    pub fn page_with_error(
        &self,
        error: &Failure,
        title: &str,
        active: &str,
        main: &str,
    ) -> Response {
        let main = format!("{}{main}", error.banner());
        let mut response = self.page(title, active, &main);
        *response.status_mut() = error.status();
        response
    }
}

/// A call the admin API refused (or could not serve), shown to the administrator with its
/// message; an expired session leads to the login page.
pub struct Failure(pub tonic::Status);

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self(tonic::Status::invalid_argument(message.into()))
    }

    fn status(&self) -> StatusCode {
        crate::error::http_status(self.0.code())
    }

    /// The refusal as a banner at the top of a page.
    pub fn banner(&self) -> String {
        format!(
            "<p class=\"error\" role=\"alert\">Refused ({}): {}</p>",
            crate::error::code_name(self.0.code()).replace('_', " "),
            E(self.0.message())
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.0.code() == Code::Unauthenticated {
            return Redirect::to("/login").into_response();
        }
        message_page(self.status(), "Refused", &self.banner_text())
    }
}

impl Failure {
    fn banner_text(&self) -> String {
        format!(
            "{}: {}",
            crate::error::code_name(self.0.code()).replace('_', " "),
            self.0.message()
        )
    }
}

/// A value of a form or query that must be an id.
pub fn parse_id(what: &str, s: &str) -> Result<i64, Failure> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Failure::invalid(format!("{what} must be a positive number, not `{s}`")))
}

/// An optional id: empty is `None`.
pub fn parse_opt_id(what: &str, s: &str) -> Result<Option<i64>, Failure> {
    if s.trim().is_empty() {
        Ok(None)
    } else {
        parse_id(what, s).map(Some)
    }
}

/// After a successful POST: see the result on `to` (POST, redirect, GET).
pub fn see(to: &str) -> Response {
    Redirect::to(to).into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

async fn home(_: Session) -> Response {
    see("/network")
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// Where to go after logging in: a path of this console only, never another site.
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if local && next != "/login" && !next.starts_with("/login?") {
        next
    } else {
        "/network"
    }
}

fn cookie_header(name: &str, value: &str, max_age_s: i64) -> HeaderValue {
    let value =
        format!("{name}={value}; Path=/; Max-Age={max_age_s}; Secure; HttpOnly; SameSite=Strict");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn login_form(token: &str, next: &str, username: &str, error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", E(e))
    });
    let body = format!(
        "<main class=\"narrow\"><h1>UMS console</h1><p>Log in with an administrator account.</p>{error}\
         <form method=\"post\" action=\"/login\" class=\"stack\">{}\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>User name <input name=\"username\" id=\"username\" value=\"{}\" autocomplete=\"username\" required autofocus></label>\
         <label>Password <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"login\">Log in</button></form></main>",
        csrf_field(token),
        E(next),
        E(username)
    );
    document("Log in", "", &body)
}

async fn login_page(
    State(api): State<Arc<AdminApi>>,
    parts: Parts,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    let mut parts = parts;
    if Session::from_request_parts(&mut parts, &api).await.is_ok() {
        return see(safe_next(&q.next));
    }
    let token = random_token(32);
    let mut response = Html(login_form(&token, safe_next(&q.next), "", None)).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_COOKIE, &token, 3600),
    );
    response
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(api): State<Arc<AdminApi>>,
    client: Option<axum::Extension<ums_service::ClientAddr>>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let mut request = tonic::Request::new(pb::LoginRequest {
        username: form.username.trim().to_owned(),
        password: form.password,
    });
    if let Some(axum::Extension(addr)) = client {
        request.extensions_mut().insert(addr);
    }
    match api.login(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            let max_age = (answer.expires_at_ms - ums_db::now_ms()).max(0) / 1000;
            let mut response = see(safe_next(&form.next));
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                cookie_header(SESSION_COOKIE, &answer.token, max_age),
            );
            h.append(header::SET_COOKIE, cookie_header(LOGIN_COOKIE, "", 0));
            response
        }
        Err(status) => {
            let failure = Failure(status);
            let mut response = Html(login_form(
                &form.csrf,
                safe_next(&form.next),
                &form.username,
                Some(failure.0.message()),
            ))
            .into_response();
            *response.status_mut() = failure.status();
            response
        }
    }
}

async fn logout(State(api): State<Arc<AdminApi>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = api
            .state
            .db
            .delete_session(&sha256_hex(token.as_bytes()))
            .await
    {
        tracing::warn!(error = %e, "cannot end an administrator's session");
        return message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not logged out",
            "the session could not be ended: try again",
        );
    }
    let mut response = see("/login");
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie_header(SESSION_COOKIE, "", 0));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next("/devices/3?user=a"), "/devices/3?user=a");
        for bad in [
            "",
            "https://evil.example",
            "//evil.example",
            "/\\evil",
            "devices",
            "/login",
            "/login?next=/x",
        ] {
            assert_eq!(safe_next(bad), "/network", "{bad}");
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-ums_session=tok; b="),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "b"), None, "an empty cookie is none");
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
    }

    #[test]
    fn session_cookies_are_strict() {
        let c = cookie_header(SESSION_COOKIE, "tok", 60);
        let c = c.to_str().expect("ascii");
        for part in [
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c}");
        }
    }

    #[test]
    fn the_csrf_token_depends_on_the_session() {
        assert_ne!(session_csrf("a"), session_csrf("b"));
        assert_eq!(session_csrf("a"), session_csrf("a"));
        assert_eq!(session_csrf("a").len(), 64);
    }
}
