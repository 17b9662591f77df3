//! The one error path of the server's APIs: handlers return [`ApiError`], and the one place a
//! `tonic::Status` is built from it is [`From<ApiError> for Status`]; the JSON API maps that
//! status to HTTP with [`http_status`]. Database and internal failures are logged here and reach
//! the caller only as "database unavailable" or "internal error", never with their text.

use tonic::Status;
use ums_db::DbError;

/// An error of an API call, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong; retrying it unchanged fails again.
    #[error("{0}")]
    Invalid(String),
    /// An offset or a range past what exists.
    #[error("{0}")]
    OutOfRange(String),
    /// The request is valid but the state does not allow it now (set something up first).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Try again shortly, or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// Too many attempts: wait.
    #[error("{0}")]
    Exhausted(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the right.
    #[error("{0}")]
    Denied(String),
    /// What arrived is not what was announced; nothing was stored.
    #[error("{0}")]
    DataLoss(String),
    /// A failure of this server's own: logged, and reported only as "internal error".
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl ApiError {
    /// An internal failure, from anything that displays.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{e:#}"))
    }

    /// The answer of another component (`who`: "swp-auth", "watchdog w1"), passed on with the
    /// same meaning and the other side's message, prefixed with who said it.
    pub fn remote(who: &str, s: &Status) -> Self {
        Self::with_code(s.code(), format!("{who}: {}", s.message()))
    }

    /// The answer of another component passed on as it is, for answers meant for the caller
    /// (a directory's verdict on a login).
    pub fn relayed(s: &Status) -> Self {
        Self::with_code(s.code(), s.message().to_owned())
    }

    fn with_code(code: tonic::Code, m: String) -> Self {
        use tonic::Code as C;
        match code {
            C::NotFound => Self::NotFound(m),
            C::InvalidArgument => Self::Invalid(m),
            C::OutOfRange => Self::OutOfRange(m),
            C::FailedPrecondition | C::AlreadyExists | C::Aborted => Self::FailedPrecondition(m),
            C::ResourceExhausted => Self::Exhausted(m),
            C::Unauthenticated => Self::Unauthenticated(m),
            C::PermissionDenied => Self::Denied(m),
            C::DataLoss => Self::DataLoss(m),
            C::Unavailable | C::DeadlineExceeded | C::Cancelled => Self::Unavailable(m),
            C::Ok | C::Unknown | C::Unimplemented | C::Internal => Self::Internal(m),
        }
    }
}

impl From<ums_domain::ValidationError> for ApiError {
    fn from(e: ums_domain::ValidationError) -> Self {
        Self::Invalid(e.0)
    }
}

impl From<ums_domain::SettingsError> for ApiError {
    fn from(e: ums_domain::SettingsError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::Invalid(m) => Status::invalid_argument(m),
            ApiError::OutOfRange(m) => Status::out_of_range(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Exhausted(m) => Status::resource_exhausted(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::Denied(m) => Status::permission_denied(m),
            ApiError::DataLoss(m) => Status::data_loss(m),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("internal error")
            }
            ApiError::Db(e) => match e {
                DbError::NotFound(_) => Status::not_found(e.to_string()),
                DbError::Conflict(_) => Status::failed_precondition(e.to_string()),
                DbError::Invalid(_) => Status::invalid_argument(e.to_string()),
                DbError::CredentialMismatch(_) => Status::permission_denied(e.to_string()),
                DbError::WriterGone => Status::unavailable("server is shutting down"),
                DbError::Unreachable(_) => {
                    Status::unavailable("this server cannot reach its database: retry shortly")
                }
                DbError::Migrate(_) | DbError::Db(_) => {
                    tracing::error!(error = %e, "database error");
                    Status::unavailable("database unavailable, try again")
                }
            },
        }
    }
}

/// HTTP status for a gRPC status code, for the JSON API.
pub fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as H;
    use tonic::Code as C;
    match code {
        C::Ok => H::OK,
        C::InvalidArgument | C::OutOfRange => H::BAD_REQUEST,
        C::Unauthenticated => H::UNAUTHORIZED,
        C::PermissionDenied => H::FORBIDDEN,
        C::NotFound => H::NOT_FOUND,
        C::AlreadyExists | C::Aborted | C::FailedPrecondition => H::CONFLICT,
        C::ResourceExhausted => H::TOO_MANY_REQUESTS,
        C::Unimplemented => H::NOT_IMPLEMENTED,
        C::Unavailable => H::SERVICE_UNAVAILABLE,
        C::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        _ => H::INTERNAL_SERVER_ERROR,
    }
}

/// The snake_case name of a gRPC status code, for JSON error bodies.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "ok",
        C::Cancelled => "cancelled",
        C::Unknown => "unknown",
        C::InvalidArgument => "invalid_argument",
        C::DeadlineExceeded => "deadline_exceeded",
        C::NotFound => "not_found",
        C::AlreadyExists => "already_exists",
        C::PermissionDenied => "permission_denied",
        C::ResourceExhausted => "resource_exhausted",
        C::FailedPrecondition => "failed_precondition",
        C::Aborted => "aborted",
        C::OutOfRange => "out_of_range",
        C::Unimplemented => "unimplemented",
        C::Internal => "internal",
        C::Unavailable => "unavailable",
        C::DataLoss => "data_loss",
        C::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_text_never_reaches_the_caller() {
        let e = ApiError::Db(DbError::Migrate(ums_db::MigrateError::BadVersion(
            "relation \"schema_version\" is broken".into(),
        )));
        let s = Status::from(e);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(!s.message().contains("relation"), "{}", s.message());
        let s = Status::from(ApiError::internal("disk full at /var/lib/ums"));
        assert_eq!(s.message(), "internal error");
    }

    #[test]
    fn a_remote_answer_keeps_its_meaning_and_says_who_gave_it() {
        let e = ApiError::remote("swp-auth", &Status::permission_denied("wrong password"));
        let s = Status::from(e);
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert_eq!(s.message(), "swp-auth: wrong password");
    }
}
