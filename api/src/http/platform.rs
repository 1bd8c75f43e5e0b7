//! Agencies, for platform operators: creating an agency with the invitation of its first
//! admin. Operators belong to no agency and see none of an agency's personal data.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use referrals_domain::values::{EmailAddress, PersonName};
use referrals_domain::DomainError;
use referrals_store::accounts::SecretText;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Authenticated;
use super::authorization::Action;
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_agency))
}

/// `POST /v1/platform/agencies`: the new agency and its first admin.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgencyRequest {
    /// The agency's name.
    #[schema(example = "Northwind Staffing")]
    pub name: String,
    /// E-mail address of the agency's first admin, who gets the invitation.
    #[schema(example = "it@northwind.example")]
    pub admin_email: String,
    /// Name of the first admin, if known.
    pub admin_name: Option<String>,
}

/// A new agency and the invitation of its first admin.
#[derive(Serialize, ToSchema)]
pub struct CreatedAgencyResponse {
    /// Id of the agency.
    pub agency_id: Uuid,
    /// Id of the invited admin.
    pub admin_user_id: Uuid,
    /// One-time invitation token for the admin, accepted with
    /// `POST /v1/auth/invitations/accept`.
    #[schema(value_type = String)]
    pub invite_token: SecretText,
    /// When the invitation expires (72 hours after it was sent).
    pub invitation_expires_at: DateTime<Utc>,
}

/// Creates an agency and invites its first `agency_admin`.
#[utoipa::path(post, path = "/v1/platform/agencies", tag = "platform",
    security(("bearer" = [])),
    request_body = CreateAgencyRequest,
    responses(
        (status = 201, description = "Created", body = CreatedAgencyResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The admin's e-mail address already has an account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or e-mail address", body = Problem, content_type = "application/problem+json")))]
pub async fn create_agency(
    State(state): State<AppState>,
    caller: Authenticated,
    StrictJson(request): StrictJson<CreateAgencyRequest>,
) -> Result<(StatusCode, Json<CreatedAgencyResponse>), ApiError> {
    let permitted = caller.authorize(Action::CreateAgency)?;

    let admin_email = EmailAddress::parse(&request.admin_email)
        .map_err(|error| DomainError::from(error.for_field("admin_email")))?;
    let admin_name = request
        .admin_name
        .as_deref()
        .map(PersonName::parse)
        .transpose()
        .map_err(|error| DomainError::from(error.for_field("admin_name")))?;

    let created = state
        .accounts
        .create_agency(
            &permitted.metadata(),
            &request.name,
            &admin_email,
            admin_name.as_ref(),
        )
        .await
        .map_err(ApiError::from)?;

    let response = CreatedAgencyResponse {
        agency_id: created.agency_id.0,
        admin_user_id: created.admin_user_id.0,
        invite_token: created.invite_token,
        invitation_expires_at: created.invitation_expires_at,
    };
    Ok((StatusCode::CREATED, Json(response)))
}
