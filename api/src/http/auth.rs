//! Authentication: a middleware that turns a bearer token into the caller, and the
//! extractor handlers use to require one.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use referrals_store::accounts::{AuthError, Caller};

use super::problem::ApiError;
use super::{AppState, RequestIds};

/// The authenticated caller of a request, with the request's ids.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The caller, with their agency and roles as of this request.
    pub caller: Caller,
    /// The request's ids, for event metadata.
    pub ids: RequestIds,
}

/// Paths a caller who must still enroll MFA may use.
const MFA_ENROLLMENT_PATHS: &[&str] = &["/v1/me/mfa", "/v1/auth/sessions/current", "/v1/me"];

/// Authenticates the bearer token when one is sent and stores the caller in the request.
/// A token that is sent but invalid is rejected here, so no handler runs for it. Requests
/// without a token pass, and the permission check rejects them where a caller is needed.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return next.run(request).await;
    };
    let Some(token) = value
        .to_str()
        .ok()
        .and_then(|text| text.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return ApiError::unauthenticated().into_response();
    };
    let caller = match state.accounts.authenticate(token).await {
        Ok(caller) => caller,
        Err(AuthError::Unavailable(cause)) => return ApiError::unavailable(&cause).into_response(),
        Err(AuthError::Internal(cause)) => return ApiError::internal(&cause).into_response(),
        Err(error) => {
            tracing::debug!(%error, "rejected a bearer token");
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                error.to_string(),
            )
            .into_response();
        }
    };
    if caller.mfa_enrollment_required && !MFA_ENROLLMENT_PATHS.contains(&request.uri().path()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "mfa_enrollment_required",
            "your role requires multi-factor authentication: enroll with POST /v1/me/mfa first",
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ApiError::unauthenticated)?;
        let ids = parts
            .extensions
            .get::<RequestIds>()
            .copied()
            .ok_or_else(|| ApiError::internal(&"request ids missing: middleware order is wrong"))?;
        Ok(Self { caller, ids })
    }
}
