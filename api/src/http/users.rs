//! The users of an agency, for its admins: invite, list, change roles, deactivate, and
//! issue personal access tokens for integrations.
//!
//! Every user id in a path is looked up in the caller's agency only, so a user of another
//! agency (or a platform operator) is reported as not found.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use referrals_domain::ids::{AgencyId, UserId};
use referrals_domain::role::Role;
use referrals_domain::user::{User, UserStatus};
use referrals_domain::values::{EmailAddress, PersonName};
use referrals_store::accounts::SecretText;
use referrals_store::application::AppError;
use referrals_store::crypto::{open_field, Field};
use referrals_store::keys::KeyError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::access_log::{record_accesses, SubjectType};
use super::auth::Authenticated;
use super::authorization::{Action, Permitted};
use super::conventions::{cursor, path_id, query_error, IfMatch, Page, PageQuery};
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(invite_user, list_users))
        .routes(routes!(change_user_roles))
        .routes(routes!(deactivate_user))
        .routes(routes!(issue_access_token))
}

/// A role a user can hold, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    /// Creates and off-boards agencies, without any agency role.
    PlatformOperator,
    /// Manages the agency's users, roles and programs.
    AgencyAdmin,
    /// Manages ambassadors and referrals.
    Recruiter,
    /// Approves, rejects, holds, exports and pays payouts.
    PayoutApprover,
    /// Reads audit history and handles data-subject requests.
    ComplianceAuditor,
    /// Reads analytics without personal data.
    Analyst,
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::PlatformOperator => Self::PlatformOperator,
            Role::AgencyAdmin => Self::AgencyAdmin,
            Role::Recruiter => Self::Recruiter,
            Role::PayoutApprover => Self::PayoutApprover,
            Role::ComplianceAuditor => Self::ComplianceAuditor,
            Role::Analyst => Self::Analyst,
        }
    }
}

impl From<RoleName> for Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::PlatformOperator => Self::PlatformOperator,
            RoleName::AgencyAdmin => Self::AgencyAdmin,
            RoleName::Recruiter => Self::Recruiter,
            RoleName::PayoutApprover => Self::PayoutApprover,
            RoleName::ComplianceAuditor => Self::ComplianceAuditor,
            RoleName::Analyst => Self::Analyst,
        }
    }
}

/// Converts domain roles to their API names.
pub fn role_names(roles: &[Role]) -> Vec<RoleName> {
    roles.iter().copied().map(RoleName::from).collect()
}

/// Stage of a user account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Invited, and the invitation is not accepted yet.
    Invited,
    /// The invitation was accepted, so the user can sign in.
    Active,
    /// Deactivated for good.
    Deactivated,
}

impl From<UserStatus> for AccountStatus {
    fn from(status: UserStatus) -> Self {
        match status {
            UserStatus::Invited => Self::Invited,
            UserStatus::Active => Self::Active,
            UserStatus::Deactivated => Self::Deactivated,
        }
    }
}

/// `POST /v1/users`: whom to invite.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteUserRequest {
    /// The person's e-mail address, which becomes their sign-in name.
    #[schema(example = "jordan.lee@example.com")]
    pub email: String,
    /// The person's name.
    #[schema(example = "Jordan Lee")]
    pub name: String,
    /// One or more agency roles.
    pub roles: Vec<RoleName>,
}

/// An invited user and the one-time token that accepts the invitation.
#[derive(Serialize, ToSchema)]
pub struct InvitedUserResponse {
    /// Id of the new user.
    pub id: Uuid,
    /// One-time invitation token, accepted with `POST /v1/auth/invitations/accept`.
    #[schema(value_type = String)]
    pub invite_token: SecretText,
    /// When the invitation expires (72 hours after it was sent).
    pub invitation_expires_at: DateTime<Utc>,
}

/// One user of the agency.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    /// Id of the user.
    pub id: Uuid,
    /// The sign-in e-mail address, absent when the person's data was erased.
    pub email: Option<String>,
    /// The name given at the invitation, absent when none was given or it was erased.
    pub name: Option<String>,
    /// The user's roles, sorted.
    pub roles: Vec<RoleName>,
    /// Stage of the account.
    pub status: AccountStatus,
    /// True once the invitation is accepted and until the account is deactivated.
    pub active: bool,
    /// Whether a TOTP secret is enrolled.
    pub mfa_enrolled: bool,
    /// Whether one of the roles requires a TOTP code at sign-in.
    pub mfa_required: bool,
    /// When the invitation was sent.
    pub invited_at: Option<DateTime<Utc>>,
    /// When the invitation was accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// When the invitation expires, present only while it is pending.
    pub invitation_expires_at: Option<DateTime<Utc>>,
    /// When the user last signed in or sent a request, to the minute.
    pub last_active_at: Option<DateTime<Utc>>,
    /// Version of the user's record (its number of events).
    pub version: usize,
}

/// `PUT /v1/users/{id}/roles`: the user's roles from now on.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRolesRequest {
    /// One or more agency roles, replacing the current ones.
    pub roles: Vec<RoleName>,
}

/// A user's account after a change of roles or a deactivation.
#[derive(Serialize, ToSchema)]
pub struct AccountView {
    /// Id of the user.
    pub id: Uuid,
    /// The user's roles, sorted.
    pub roles: Vec<RoleName>,
    /// Stage of the account.
    pub status: AccountStatus,
    /// Whether a TOTP secret is enrolled.
    pub mfa_enrolled: bool,
    /// Version of the user's record (its number of events).
    pub version: usize,
}

/// `POST /v1/users/{id}/tokens`: a personal access token for an integration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// Purpose of the token, 1 to 100 characters, such as `Timesheet import`.
    #[schema(example = "Timesheet import")]
    pub label: String,
    /// When the token stops working. Without it, it works until the user is deactivated.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new personal access token. The token is shown only in this response.
#[derive(Serialize, ToSchema)]
pub struct IssuedTokenResponse {
    /// Id of the token.
    pub token_id: Uuid,
    /// The bearer token, which acts with the user's roles and needs no TOTP code.
    #[schema(value_type = String)]
    pub token: SecretText,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Invites a person into the agency with the given roles. The response carries the
/// one-time invitation token, which the person accepts within 72 hours.
#[utoipa::path(post, path = "/v1/users", tag = "users",
    security(("bearer" = [])),
    request_body = InviteUserRequest,
    responses(
        (status = 201, description = "Invited", body = InvitedUserResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an agency admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The e-mail address already has an account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid e-mail address, name or roles", body = Problem, content_type = "application/problem+json")))]
pub async fn invite_user(
    State(state): State<AppState>,
    caller: Authenticated,
    StrictJson(request): StrictJson<InviteUserRequest>,
) -> Result<(StatusCode, Json<InvitedUserResponse>), ApiError> {
    let permitted = caller.authorize(Action::InviteUser)?;

    let email = EmailAddress::parse(&request.email).map_err(invalid_value)?;
    let name = PersonName::parse(&request.name).map_err(invalid_value)?;
    let roles: Vec<Role> = request.roles.into_iter().map(Role::from).collect();

    let invited = state
        .accounts
        .invite_user(&permitted.metadata(), &email, Some(&name), &roles)
        .await
        .map_err(ApiError::from)?;

    let response = InvitedUserResponse {
        id: invited.user_id.0,
        invite_token: invited.invite_token,
        invitation_expires_at: invited.invitation_expires_at,
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Lists the agency's users in the order they were invited, with their decrypted names
/// and e-mail addresses, roles, MFA status and last activity.
#[utoipa::path(get, path = "/v1/users", tag = "users",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of users", body = Page<UserView>),
        (status = 400, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an agency admin", body = Problem, content_type = "application/problem+json")))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let permitted = caller.authorize(Action::ListUsers)?;

    let Query(page) = query.map_err(query_error)?;
    let limit = page.limit()?;
    let after: Option<Uuid> = page.position()?;

    let rows = user_rows(&state, permitted.agency_id, after, limit + 1).await?;
    let next_cursor = next_cursor(&rows, limit);
    let mut items = Vec::with_capacity(rows.len());
    for row in rows.into_iter().take(usize::try_from(limit).unwrap_or(0)) {
        items.push(user_view(&state, permitted.agency_id, row).await?);
    }
    let users: Vec<Uuid> = items.iter().map(|item| item.id).collect();
    record_accesses(
        &state,
        &permitted,
        SubjectType::User,
        &users,
        "GET /v1/users",
    )
    .await?;
    Ok(Json(Page { items, next_cursor }))
}

/// Replaces a user's roles. The change applies to the user's next request in every
/// session. Admins cannot remove their own `agency_admin` role, so an agency always
/// keeps an admin.
#[utoipa::path(put, path = "/v1/users/{id}/roles", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the user"),
        ("If-Match" = Option<String>, Header, description = "The user's version from a previous read, such as \"3\"")),
    request_body = ChangeRolesRequest,
    responses(
        (status = 200, description = "Roles changed", body = AccountView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an agency admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user is deactivated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid roles, or an admin removing their own admin role", body = Problem, content_type = "application/problem+json")))]
pub async fn change_user_roles(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<ChangeRolesRequest>,
) -> Result<Json<AccountView>, ApiError> {
    let permitted = caller.authorize(Action::ChangeRoles)?;

    let user_id = user_id(id)?;
    let roles: Vec<Role> = request.roles.into_iter().map(Role::from).collect();
    if is_caller(&permitted, user_id) && !roles.contains(&Role::AgencyAdmin) {
        return Err(ApiError::unprocessable(
            "own_admin_role",
            "you cannot remove your own agency_admin role; another agency admin must do it",
        )
        .with_field("roles"));
    }

    state
        .accounts
        .change_roles(&permitted.metadata(), user_id, &roles, expected_version)
        .await
        .map_err(ApiError::from)?;

    account_view(&state, permitted.agency_id, user_id).await
}

/// Deactivates a user for good and revokes every session and access token of theirs.
/// Requests with them fail from the next one on. Deactivating again changes nothing.
#[utoipa::path(post, path = "/v1/users/{id}/deactivate", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the user"),
        ("If-Match" = Option<String>, Header, description = "The user's version from a previous read, such as \"3\"")),
    responses(
        (status = 200, description = "Deactivated", body = AccountView),
        (status = 409, description = "The user changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an agency admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An admin deactivating their own account", body = Problem, content_type = "application/problem+json")))]
pub async fn deactivate_user(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected_version): IfMatch,
) -> Result<Json<AccountView>, ApiError> {
    let permitted = caller.authorize(Action::DeactivateUser)?;

    let user_id = user_id(id)?;
    if is_caller(&permitted, user_id) {
        return Err(ApiError::unprocessable(
            "own_account",
            "you cannot deactivate your own account; another agency admin must do it",
        ));
    }

    state
        .accounts
        .deactivate_user(&permitted.metadata(), user_id, expected_version)
        .await
        .map_err(ApiError::from)?;

    account_view(&state, permitted.agency_id, user_id).await
}

/// Issues a personal access token for a user of the agency, for an integration. The
/// token acts with the user's roles, without a TOTP code, until it expires or the user
/// is deactivated.
#[utoipa::path(post, path = "/v1/users/{id}/tokens", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the user")),
    request_body = IssueTokenRequest,
    responses(
        (status = 201, description = "Issued", body = IssuedTokenResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an agency admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user is deactivated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid label or an expiry in the past", body = Problem, content_type = "application/problem+json")))]
pub async fn issue_access_token(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    StrictJson(request): StrictJson<IssueTokenRequest>,
) -> Result<(StatusCode, Json<IssuedTokenResponse>), ApiError> {
    let permitted = caller.authorize(Action::IssueAccessToken)?;

    let user_id = user_id(id)?;

    let issued = state
        .accounts
        .issue_access_token(
            &permitted.metadata(),
            user_id,
            &request.label,
            request.expires_at,
        )
        .await
        .map_err(ApiError::from)?;

    let response = IssuedTokenResponse {
        token_id: issued.token_id,
        token: issued.token,
        expires_at: issued.expires_at,
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Opens a user's sealed e-mail address and name. Both are `None` when the person's data
/// key was destroyed by an erasure.
///
/// # Errors
/// 500 when the key is missing or a value fails to open, 503 when the database is down.
pub async fn open_user_contact(
    state: &AppState,
    tenant: AgencyId,
    user_id: UserId,
    user: &User,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let key = match state
        .app
        .personal()
        .vault()
        .data_key(tenant, user_id.0)
        .await
    {
        Ok(key) => key,
        Err(KeyError::Erased) => return Ok((None, None)),
        Err(error) => return Err(AppError::from(error).into()),
    };
    let open = |field, sealed| {
        open_field(&key, tenant, user_id.0, field, sealed)
            .map_err(|error| ApiError::internal(&error))
    };
    let email = user
        .email()
        .map(|sealed| open(Field::Email, sealed))
        .transpose()?;
    let name = user
        .name()
        .map(|sealed| open(Field::Name, sealed))
        .transpose()?;
    Ok((email, name))
}

/// The facts of one user that live beside the user's events.
#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: Uuid,
    invited_at: Option<DateTime<Utc>>,
    accepted_at: Option<DateTime<Utc>>,
    last_active_at: Option<DateTime<Utc>>,
}

/// Reads up to `limit` users of the agency after `after`, in id order. User ids are
/// UUID v7, so this is the order of invitation.
async fn user_rows(
    state: &AppState,
    agency_id: AgencyId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<UserRow>, ApiError> {
    sqlx::query_as(
        "SELECT a.user_id,
                (SELECT min(i.created_at) FROM invitations i WHERE i.user_id = a.user_id) AS invited_at,
                (SELECT max(i.used_at) FROM invitations i WHERE i.user_id = a.user_id) AS accepted_at,
                activity.last_active_at
           FROM user_accounts a
           LEFT JOIN user_activity activity ON activity.user_id = a.user_id
          WHERE a.agency_id = $1 AND ($2::uuid IS NULL OR a.user_id > $2)
          ORDER BY a.user_id
          LIMIT $3",
    )
    .bind(agency_id.0)
    .bind(after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await
    .map_err(|error| ApiError::unavailable(&error))
}

/// Returns the cursor after the last of `limit` rows, when `rows` contains one more.
fn next_cursor(rows: &[UserRow], limit: i64) -> Option<String> {
    let limit = usize::try_from(limit).ok()?;
    if rows.len() <= limit {
        return None;
    }
    rows.get(limit - 1).map(|row| cursor(&row.user_id))
}

/// Builds a user's list item from the user's aggregate and the row beside it.
async fn user_view(
    state: &AppState,
    agency_id: AgencyId,
    row: UserRow,
) -> Result<UserView, ApiError> {
    let user_id = UserId(row.user_id);
    let (user, version) = state
        .accounts
        .load_user(agency_id, user_id)
        .await
        .map_err(ApiError::from)?;
    let status = user
        .status()
        .ok_or_else(|| ApiError::internal(&format!("user {user_id} has no status")))?;
    let (email, name) = open_user_contact(state, agency_id, user_id, &user).await?;

    Ok(UserView {
        id: row.user_id,
        email,
        name,
        roles: role_names(user.roles()),
        status: status.into(),
        active: status == UserStatus::Active,
        mfa_enrolled: user.mfa_enrolled(),
        mfa_required: user.requires_mfa(),
        invited_at: row.invited_at,
        accepted_at: row.accepted_at,
        invitation_expires_at: (status == UserStatus::Invited)
            .then(|| user.invitation_expires_at())
            .flatten(),
        last_active_at: row.last_active_at,
        version,
    })
}

/// Reads a user's account back after a command, from the aggregate.
async fn account_view(
    state: &AppState,
    agency_id: AgencyId,
    user_id: UserId,
) -> Result<Json<AccountView>, ApiError> {
    let (user, version) = state
        .accounts
        .load_user(agency_id, user_id)
        .await
        .map_err(ApiError::from)?;
    let status = user
        .status()
        .ok_or_else(|| ApiError::internal(&format!("user {user_id} has no status")))?;
    Ok(Json(AccountView {
        id: user_id.0,
        roles: role_names(user.roles()),
        status: status.into(),
        mfa_enrolled: user.mfa_enrolled(),
        version,
    }))
}

fn is_caller(permitted: &Permitted, user_id: UserId) -> bool {
    permitted.caller.caller.user_id == user_id
}

fn user_id(path: Result<Path<Uuid>, PathRejection>) -> Result<UserId, ApiError> {
    path_id(path, "id").map(UserId)
}

fn invalid_value(error: referrals_domain::values::ValueError) -> ApiError {
    referrals_domain::DomainError::from(error).into()
}
