//! The agency's own settings, for its admins: whether ambassadors may get text
//! messages (SMS) at all. An ambassador also needs their own consent.

use axum::extract::State;
use axum::Json;
use referrals_domain::agency::{AgencyCommand, SetTexting};
use referrals_store::application::AppError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authenticated;
use super::authorization::Action;
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(read_texting, set_texting))
}

/// `PUT /v1/agency/texting`: enable or disable SMS.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTextingRequest {
    /// Whether ambassadors who consented may get text messages.
    pub enabled: bool,
}

/// The agency's texting setting.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextingView {
    /// Whether ambassadors who consented may get text messages.
    pub enabled: bool,
}

/// Reads whether the agency sends text messages.
#[utoipa::path(get, path = "/v1/agency/texting", tag = "agency",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The setting", body = TextingView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an agency admin", body = Problem, content_type = "application/problem+json")))]
pub async fn read_texting(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<TextingView>, ApiError> {
    let permitted = caller.authorize(Action::ManageAgencySettings)?;

    let agency_id = permitted.agency_id;
    let agency = state
        .accounts
        .agencies
        .load(agency_id, &agency_id.to_string())
        .await
        .map_err(AppError::from)?;

    Ok(Json(TextingView {
        enabled: agency.is_some_and(|(agency, _)| agency.texting_enabled()),
    }))
}

/// Enables or disables text messages to the agency's ambassadors. Messages already
/// queued follow the new setting, because the dispatcher checks it when it sends.
/// Setting the current value again changes nothing.
#[utoipa::path(put, path = "/v1/agency/texting", tag = "agency",
    security(("bearer" = [])),
    request_body = SetTextingRequest,
    responses(
        (status = 200, description = "The new setting", body = TextingView),
        (status = 400, description = "The body is not JSON of the expected shape", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an agency admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The agency does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json")))]
pub async fn set_texting(
    State(state): State<AppState>,
    caller: Authenticated,
    StrictJson(request): StrictJson<SetTextingRequest>,
) -> Result<Json<TextingView>, ApiError> {
    let permitted = caller.authorize(Action::ManageAgencySettings)?;

    let metadata = permitted.metadata();
    let agency_id = permitted.agency_id;
    let command = AgencyCommand::SetTexting(SetTexting {
        enabled: request.enabled,
        at: metadata.recorded_at,
    });
    let executed = state
        .accounts
        .agencies
        .execute(&agency_id.to_string(), command, &metadata, None)
        .await
        .map_err(AppError::from)?;
    tracing::info!(%agency_id, enabled = request.enabled, "agency texting set");

    Ok(Json(TextingView {
        enabled: executed.aggregate.texting_enabled(),
    }))
}
