//! The one mapping from the server's errors to gRPC statuses (and, through them, HTTP statuses).

use tonic::Status;
use ums_db::DbError;

/// An error of an API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(String),
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
            ApiError::Invalid(m) => Status::invalid_argument(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::Forbidden(m) => Status::permission_denied(m),
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
