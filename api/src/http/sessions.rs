//! Signing in and out, accepting an invitation, multi-factor enrollment and the current
//! user (`/v1/me`), and the mapping of account errors to problems.
//!
//! Failed sign-ins never reveal whether the e-mail address has an account or what state
//! it is in: an unknown address, a wrong password and a deactivated account all get the same
//! 401. No response or log line here contains a password, a token or a TOTP code, except
//! the response that hands a new token or secret to its owner.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use referrals_store::accounts::{Credential, LoginError, SecretText};
use referrals_store::event_store::CommandMetadata;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Authenticated;
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::users::{open_user_contact, role_names, RoleName};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(accept_invitation))
        .routes(routes!(create_session))
        .routes(routes!(delete_current_session))
        .routes(routes!(get_me))
        .routes(routes!(enroll_mfa))
}

/// `POST /v1/auth/invitations/accept`: the invitation token and the first password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitationRequest {
    /// The one-time token from the invitation.
    pub invite_token: String,
    /// The password to sign in with, 12 to 256 characters.
    pub password: String,
}

/// An accepted invitation.
#[derive(Serialize, ToSchema)]
pub struct AcceptedInvitationResponse {
    /// Id of the now active user.
    pub user_id: Uuid,
    /// The TOTP secret in base32, when a role requires multi-factor authentication. Add
    /// it to an authenticator app now: it is shown only here, and signing in needs a code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")]
    pub totp_secret: Option<SecretText>,
}

/// `POST /v1/auth/sessions`: credentials.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// The account's e-mail address.
    pub email: String,
    /// The account's password.
    pub password: String,
    /// The current 6-digit code of the authenticator app, required once MFA is enrolled.
    #[schema(example = "123456")]
    pub totp: Option<String>,
}

/// A new session.
#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    /// The bearer token for `Authorization: Bearer <token>`.
    #[schema(value_type = String)]
    pub token: SecretText,
    /// When the session ends (12 hours after sign-in).
    pub expires_at: DateTime<Utc>,
    /// True when a role requires MFA but none is enrolled yet: until `POST /v1/me/mfa`,
    /// the session may only enroll, read `/v1/me` and sign out.
    pub mfa_enrollment_required: bool,
}

/// Kind of credential that authenticated a request.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A sign-in session.
    Session,
    /// A personal access token.
    AccessToken,
}

/// The signed-in user.
#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    /// Id of the user.
    pub user_id: Uuid,
    /// The user's agency, absent for a platform operator.
    pub agency_id: Option<Uuid>,
    /// The user's roles, sorted.
    pub roles: Vec<RoleName>,
    /// The user's e-mail address, absent when the person's data was erased.
    pub email: Option<String>,
    /// The user's name, when one was given.
    pub name: Option<String>,
    /// Whether a TOTP secret is enrolled.
    pub mfa_enrolled: bool,
    /// Whether one of the roles requires a TOTP code at sign-in.
    pub mfa_required: bool,
    /// True when the user must enroll MFA with `POST /v1/me/mfa` before anything else.
    pub mfa_enrollment_required: bool,
    /// Kind of credential that authenticated this request.
    pub credential: CredentialKind,
}

/// A newly enrolled TOTP secret.
#[derive(Serialize, ToSchema)]
pub struct MfaEnrollmentResponse {
    /// The secret in base32, for an authenticator app. It is shown only here.
    #[schema(value_type = String, example = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")]
    pub totp_secret: SecretText,
}

/// Accepts an invitation by setting the first password. When a role requires MFA, the
/// response carries the TOTP secret to add to an authenticator app.
#[utoipa::path(post, path = "/v1/auth/invitations/accept", tag = "auth",
    request_body = AcceptInvitationRequest,
    responses(
        (status = 200, description = "Accepted; the user can sign in", body = AcceptedInvitationResponse),
        (status = 404, description = "Unknown invitation token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Accepted before, or the user is deactivated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Password too short or too long, or the invitation expired", body = Problem, content_type = "application/problem+json")))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    StrictJson(request): StrictJson<AcceptInvitationRequest>,
) -> Result<Json<AcceptedInvitationResponse>, ApiError> {
    let accepted = state
        .accounts
        .accept_invitation(&request.invite_token, &request.password)
        .await
        .map_err(ApiError::from)?;

    Ok(Json(AcceptedInvitationResponse {
        user_id: accepted.user_id.0,
        totp_secret: accepted.totp_secret,
    }))
}

/// Signs in with e-mail address, password and, once MFA is enrolled, a TOTP code.
///
/// After five failed attempts within 15 minutes an account is blocked until the oldest
/// of them is 15 minutes old, and a client address after twenty. The 429 response gives
/// the wait in seconds in `Retry-After`.
#[utoipa::path(post, path = "/v1/auth/sessions", tag = "auth",
    request_body = SignInRequest,
    responses(
        (status = 201, description = "Signed in", body = SessionResponse),
        (status = 401, description = "`invalid_credentials`, `mfa_required` (send `totp`) or `invalid_totp`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed")))))]
pub async fn create_session(
    State(state): State<AppState>,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    StrictJson(request): StrictJson<SignInRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    // The server records the peer address of every connection. Requests built in-process,
    // as in tests, have none and count as localhost.
    // NOTE: behind a reverse proxy every client has the proxy's address, so the limit per
    // address applies to all clients together; `X-Forwarded-For` is not read.
    let client_address = connect_info.map_or(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        |Extension(ConnectInfo(address))| address.ip(),
    );

    let session = state
        .accounts
        .login(
            &request.email,
            &request.password,
            request.totp.as_deref(),
            client_address,
        )
        .await
        .map_err(login_problem)?;

    let response = SessionResponse {
        token: session.token,
        expires_at: session.expires_at,
        mfa_enrollment_required: session.mfa_enrollment_required,
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Signs out: the session's token is rejected from the next request on.
#[utoipa::path(delete, path = "/v1/auth/sessions/current", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The request used a personal access token, which has no session", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_current_session(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    if let Credential::AccessToken(_) = caller.caller.credential {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_a_session",
            "this request used a personal access token, which has no session to sign out of; \
             deactivating the user revokes the token",
        ));
    }

    // The middleware authenticated this header, so it contains a well-formed bearer token.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthenticated)?;

    // A session revoked by a concurrent sign-out is signed out all the same.
    state.accounts.logout(token).await.map_err(ApiError::from)?;

    Ok(StatusCode::NO_CONTENT)
}

/// Returns the signed-in user: agency, roles, contact details and MFA status.
#[utoipa::path(get, path = "/v1/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = MeResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json")))]
pub async fn get_me(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<MeResponse>, ApiError> {
    let caller = caller.caller;
    let tenant = caller.tenant_id();

    let (user, _) = state
        .accounts
        .load_user(tenant, caller.user_id)
        .await
        .map_err(ApiError::from)?;
    let (email, name) = open_user_contact(&state, tenant, caller.user_id, &user).await?;

    Ok(Json(MeResponse {
        user_id: caller.user_id.0,
        agency_id: caller.agency_id.map(|id| id.0),
        roles: role_names(&caller.roles),
        email,
        name,
        mfa_enrolled: user.mfa_enrolled(),
        mfa_required: user.requires_mfa(),
        mfa_enrollment_required: caller.mfa_enrollment_required,
        credential: match caller.credential {
            Credential::Session(_) => CredentialKind::Session,
            Credential::AccessToken(_) => CredentialKind::AccessToken,
        },
    }))
}

/// Enrolls a TOTP secret for the signed-in user. Every later sign-in needs a code from
/// it, and a session that had to enroll first may do anything its roles allow.
#[utoipa::path(post, path = "/v1/me/mfa", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Enrolled; add the secret to an authenticator app", body = MfaEnrollmentResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA is already enrolled", body = Problem, content_type = "application/problem+json")))]
pub async fn enroll_mfa(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<MfaEnrollmentResponse>, ApiError> {
    let metadata = own_account_metadata(&caller);

    let totp_secret = state
        .accounts
        .enroll_mfa(&metadata, caller.caller.user_id)
        .await
        .map_err(ApiError::from)?;

    Ok(Json(MfaEnrollmentResponse { totp_secret }))
}

/// Maps a failed sign-in to a problem. A deactivated account gets the same response as a
/// wrong password, so the response does not reveal the account's state.
fn login_problem(error: LoginError) -> ApiError {
    let unauthorized = |code, detail: String| ApiError::new(StatusCode::UNAUTHORIZED, code, detail);
    match error {
        LoginError::InvalidCredentials | LoginError::Deactivated => unauthorized(
            "invalid_credentials",
            LoginError::InvalidCredentials.to_string(),
        ),
        LoginError::MfaRequired => unauthorized("mfa_required", error.to_string()),
        LoginError::InvalidTotp => unauthorized("invalid_totp", error.to_string()),
        LoginError::RateLimited {
            retry_after_seconds,
        } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            error.to_string(),
        )
        .with_retry_after(retry_after_seconds),
        LoginError::Unavailable(cause) => ApiError::unavailable(&cause),
        LoginError::Internal(cause) => ApiError::internal(&cause),
    }
}

/// Metadata of a command on the caller's own account, with this request's ids.
fn own_account_metadata(caller: &Authenticated) -> CommandMetadata {
    let mut metadata = caller.caller.own_account_metadata();
    metadata.request_id = caller.ids.request_id;
    metadata.correlation_id = caller.ids.correlation_id;
    metadata.causation_id = caller.ids.request_id;
    metadata
}
