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

/// Adds the client errors that the shared extractors return to every operation of
/// `openapi` that lacks them, so that the document lists every status a client can get.
/// An invalid path id, query parameter, `If-Match` or JSON syntax is 400. A body that is
/// not `application/json` is 415, and one above the size limit is 413. A body that does
/// not fit the request schema is 422. The extractors return these before any handler runs.
pub fn document_client_errors(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let has_body = operation.request_body.is_some();
            let has_parameters = operation
                .parameters
                .as_ref()
                .is_some_and(|parameters| !parameters.is_empty());
            if has_parameters || has_body {
                add_problem_response(
                    operation,
                    "400",
                    "Invalid id, query parameter, header or JSON syntax",
                );
            }
            if has_body {
                add_problem_response(operation, "413", "The request body is too large");
                add_problem_response(operation, "415", "The body is not `application/json`");
                add_problem_response(
                    operation,
                    "422",
                    "A field is missing, of the wrong type or invalid",
                );
            }
        }
    }
}

fn add_problem_response(
    operation: &mut utoipa::openapi::path::Operation,
    status: &str,
    description: &str,
) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let responses = &mut operation.responses.responses;
    if responses.contains_key(status) {
        return;
    }
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build();
    responses.insert(status.to_owned(), response.into());
}
