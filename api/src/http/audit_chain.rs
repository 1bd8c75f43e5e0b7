//! `POST /v1/audit/verify`: recomputes the hash chain of the caller's agency's events.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use referrals_store::audit::{self, BrokenLink, VerifyReport};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{database_error, query_error};
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_audit_chain))
}

/// Options of a verification.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyChainQuery {
    /// Verify every event of the agency instead of only those after the checkpoint of the
    /// last successful verification (default false).
    pub full: Option<bool>,
}

/// The outcome of a verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyChainResponse {
    /// True when no broken link was found.
    pub ok: bool,
    /// Events checked by this request, the broken one included. Without `full=true`, these
    /// are only the events after the last checkpoint.
    pub events_checked: u64,
    /// The first event, in global order, at which the chain is broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLinkResponse>,
}

/// An event at which the hash chain is broken.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokenLinkResponse {
    /// The event's global position.
    pub position: i64,
    /// The aggregate's type, such as `referral`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's sequence within the aggregate.
    pub sequence: i64,
    /// `hash_mismatch`, `previous_hash_mismatch`, `missing_predecessor` or
    /// `predecessor_out_of_order`.
    #[schema(example = "hash_mismatch")]
    pub reason: String,
    /// The reason as a sentence.
    pub detail: String,
}

impl From<BrokenLink> for BrokenLinkResponse {
    fn from(broken: BrokenLink) -> Self {
        Self {
            position: broken.position,
            aggregate_type: broken.aggregate_type,
            aggregate_id: broken.aggregate_id,
            sequence: broken.sequence,
            reason: broken.reason.code().to_owned(),
            detail: broken.reason.describe().to_owned(),
        }
    }
}

impl From<VerifyReport> for VerifyChainResponse {
    fn from(report: VerifyReport) -> Self {
        Self {
            ok: report.ok,
            events_checked: report.events_checked,
            first_broken: report.first_broken.map(BrokenLinkResponse::from),
        }
    }
}

/// Recomputes the hash chain of the caller's agency's events and names the first broken
/// link. A broken chain is a finding, not an error: the response is 200 with `ok: false`.
#[utoipa::path(post, path = "/v1/audit/verify", tag = "audit",
    security(("bearer" = [])),
    params(VerifyChainQuery),
    responses(
        (status = 200, description = "The verification report", body = VerifyChainResponse),
        (status = 400, description = "Invalid query string", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a compliance auditor", body = Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all)]
pub async fn verify_audit_chain(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<VerifyChainQuery>, QueryRejection>,
) -> Result<Json<VerifyChainResponse>, ApiError> {
    let permitted = caller.authorize(Action::ReadAudit)?;

    let Query(query) = query.map_err(query_error)?;
    let incremental = !query.full.unwrap_or(false);

    let report = audit::verify_chain(&state.pool, Some(permitted.agency_id), incremental)
        .await
        .map_err(database_error)?;

    tracing::info!(
        agency_id = %permitted.agency_id.0,
        ok = report.ok,
        events_checked = report.events_checked,
        "audit chain verified"
    );
    Ok(Json(report.into()))
}
