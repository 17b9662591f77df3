//! Administrators: logging in (argon2id, a lockout after repeated failures, a random session
//! token stored as its hash) and the accounts with their permissions.

use ums_proto::admin::v1 as pb;

use super::{AdminApi, Caller, PERMISSIONS, split_permissions};
use crate::error::ApiError;
use crate::secrets::{dummy_hash, hash_password, random_token, sha256_hex, verify_password};

const MIN_PASSWORD: usize = 8;

pub fn validate_username(u: &str) -> Result<(), ApiError> {
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "user name must be 1 to 64 characters of letters, digits, `.`, `_`, `-` and `@`".into(),
        ))
    }
}

fn validate_password(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < MIN_PASSWORD || p.len() > 1024 {
        return Err(ApiError::Invalid(format!(
            "password must be {MIN_PASSWORD} to 1024 characters"
        )));
    }
    Ok(())
}

fn validate_permissions(perms: &[String]) -> Result<(), ApiError> {
    for p in perms {
        if p != "*" && !PERMISSIONS.contains(&p.as_str()) {
            return Err(ApiError::Invalid(format!(
                "unknown permission `{p}`: use * or one of {}",
                PERMISSIONS.join(", ")
            )));
        }
    }
    Ok(())
}

fn admin_pb(a: ums_db::admins::Admin) -> pb::Admin {
    pb::Admin {
        id: a.id,
        permissions: split_permissions(&a.permissions),
        username: a.username,
        created_at_ms: a.created_at,
    }
}

pub async fn login(
    api: &AdminApi,
    _: Caller,
    r: pb::LoginRequest,
) -> Result<pb::LoginResponse, ApiError> {
    let wrong = || ApiError::Unauthenticated("wrong user name or password".into());
    if r.username.is_empty() || r.password.is_empty() || r.password.len() > 1024 {
        return Err(wrong());
    }
    let now = std::time::Instant::now();
    if let Err(wait) = api.logins.check(&r.username, now) {
        return Err(ApiError::Exhausted(format!(
            "too many failed logins for `{}`: try again in {} s",
            r.username,
            wait.as_secs().max(1)
        )));
    }
    let admin = api.state.db.find_admin(&r.username).await?;
    // Verify against a dummy hash for unknown users too, so timing tells nothing.
    let hash = match &admin {
        Some(a) => a.password_hash.clone(),
        None => dummy_hash().await,
    };
    let valid = verify_password(r.password, hash).await;
    let Some(admin) = admin.filter(|_| valid) else {
        api.logins.failed(&r.username, now);
        api.state.metrics.logins.inc(&["admin", "failed"]);
        tracing::info!(user = %r.username, "failed administrator login");
        return Err(wrong());
    };
    api.logins.succeeded(&r.username);
    api.state.metrics.logins.inc(&["admin", "ok"]);
    let token = random_token(48);
    let session_ms = i64::try_from(api.state.info.session.as_millis()).unwrap_or(i64::MAX / 4);
    let expires_at_ms = ums_db::now_ms() + session_ms;
    api.state
        .db
        .create_session(&sha256_hex(token.as_bytes()), admin.id, expires_at_ms)
        .await?;
    tracing::info!(user = %admin.username, "administrator logged in");
    Ok(pb::LoginResponse {
        token,
        expires_at_ms,
        permissions: split_permissions(&admin.permissions),
    })
}

pub async fn who_am_i(
    _: &AdminApi,
    c: Caller,
    _: pb::WhoAmIRequest,
) -> Result<pb::WhoAmIResponse, ApiError> {
    Ok(pb::WhoAmIResponse {
        username: c.username,
        permissions: c.permissions,
    })
}

pub async fn create(
    api: &AdminApi,
    _: Caller,
    r: pb::CreateAdminRequest,
) -> Result<pb::Admin, ApiError> {
    validate_username(&r.username)?;
    validate_password(&r.password)?;
    validate_permissions(&r.permissions)?;
    let hash = hash_password(r.password).await?;
    let a = api
        .state
        .db
        .create_admin(&r.username, &hash, &r.permissions)
        .await?;
    Ok(admin_pb(a))
}

pub async fn list(
    api: &AdminApi,
    _: Caller,
    _: pb::ListAdminsRequest,
) -> Result<pb::ListAdminsResponse, ApiError> {
    let admins = api.state.db.list_admins().await?;
    Ok(pb::ListAdminsResponse {
        admins: admins.into_iter().map(admin_pb).collect(),
    })
}

/// Anyone may change their own password; another's needs `admins:write`.
pub async fn set_password(
    api: &AdminApi,
    caller: Caller,
    r: pb::SetAdminPasswordRequest,
) -> Result<pb::Empty, ApiError> {
    if caller.username != r.username {
        caller.require("admins:write")?;
    }
    validate_password(&r.password)?;
    let hash = hash_password(r.password).await?;
    api.state.db.set_admin_password(&r.username, &hash).await?;
    Ok(pb::Empty {})
}

pub async fn delete(
    api: &AdminApi,
    _: Caller,
    r: pb::DeleteAdminRequest,
) -> Result<pb::Empty, ApiError> {
    api.state.db.delete_admin(&r.username).await?;
    Ok(pb::Empty {})
}
