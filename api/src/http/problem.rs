//! Every error response: RFC 9457 problem details with a stable `code`, mapped in this one
//! place from domain, application and extraction errors.
//!
//! Client mistakes become 4xx with a message that names the value and the fix. Failures
//! of the platform become 500 or 503; their cause is logged here and never sent to the
//! client, because database messages can quote stored values.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use referrals_domain::{DomainError, ErrorKind};
use referrals_store::accounts::AccountError;
use referrals_store::application::AppError;
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem details document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:referrals:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, and how to fix it.
    pub detail: String,
    /// A stable machine-readable code, such as `self_referral` or `version_conflict`.
    pub code: String,
    /// The field the problem is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error that becomes a problem response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// A problem with the given status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Names the field the problem is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds a `Retry-After` header, in seconds.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400: the request cannot be parsed.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401: no valid credentials.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a valid token as `Authorization: Bearer <token>`; sign in again if it expired",
        )
    }

    /// 403: the caller's roles do not allow the action; `required` names the roles that do.
    pub fn forbidden(required: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the role {required}; an agency admin can grant it with \
                 PUT /v1/users/{{id}}/roles"
            ),
        )
    }

    /// 404: unknown, or belonging to another agency (the response is the same for both).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 409: the resource changed since the caller read it.
    pub fn version_conflict(what: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "version_conflict",
            format!("the {what} was changed by another request; read it again and retry"),
        )
    }

    /// 422: a value or rule was violated.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// 503: the database is unavailable. The cause is logged, not sent.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "request failed because the database is unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the service cannot reach its database right now; retry in a few seconds",
        )
        .with_retry_after(5)
    }

    /// 500: a failure of the platform. The cause is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed inside the service");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the service failed to handle this request; it has been logged",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:referrals:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            field: self.field.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let field = match &error {
            DomainError::Invalid(value) => Some(value.field.clone()),
            _ => None,
        };
        let mut api_error = match error.kind() {
            ErrorKind::Invalid => Self::unprocessable(error.code(), error.to_string()),
            ErrorKind::Conflict => Self::new(StatusCode::CONFLICT, error.code(), error.to_string()),
            ErrorKind::NotFound => {
                Self::new(StatusCode::NOT_FOUND, error.code(), error.to_string())
            }
            ErrorKind::Unavailable => Self::unavailable(&error),
        };
        api_error.field = field;
        api_error
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Domain(error) => error.into(),
            AppError::NotFound(what) => Self::not_found(what),
            AppError::Conflict { aggregate_type } => Self::version_conflict(aggregate_type),
            AppError::Unavailable(cause) => Self::unavailable(&cause),
            AppError::Internal(cause) => Self::internal(&cause),
        }
    }
}

impl From<AccountError> for ApiError {
    /// Maps a failure of an account use case. The messages of [`AccountError`] contain no
    /// e-mail address, password, token or secret.
    fn from(error: AccountError) -> Self {
        let detail = error.to_string();
        match error {
            AccountError::Domain(error) => error.into(),
            AccountError::EmailTaken => Self::new(StatusCode::CONFLICT, "email_taken", detail),
            AccountError::InvalidInvitation => {
                Self::new(StatusCode::NOT_FOUND, "invalid_invitation", detail)
                    .with_field("invite_token")
            }
            AccountError::NotFound(what) => Self::not_found(what),
            AccountError::Conflict { aggregate_type } => Self::version_conflict(aggregate_type),
            AccountError::Erased => Self::new(StatusCode::CONFLICT, "erased", detail),
            AccountError::Unavailable(cause) => Self::unavailable(&cause),
            AccountError::Internal(cause) => Self::internal(&cause),
        }
    }
}
