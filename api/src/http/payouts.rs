//! Payouts: the ledger and approval queue, one payout's current state, and the
//! decisions of payout approvers (approve, reject, hold, release, void, reverse).
//!
//! Lists come from the payout ledger read model, which follows the events a moment
//! behind. Reading one payout and every command respond from the payout's own events, so
//! a client always reads its own writes, and the `ETag` is the payout's version.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use referrals_domain::ids::{AgencyId, PayoutId};
use referrals_domain::payout::{
    ApprovePayout, HoldPayout, Payout, PayoutCommand, PayoutEvent, PayoutStatus, RejectPayout,
    ReleasePayout, Requester, ReversePayout, VoidPayout, VoidReason,
};
use referrals_domain::values::Money;
use referrals_store::application::AppError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Authenticated;
use super::authorization::{Action, Permitted};
use super::conventions::{
    cursor, etag, parse_free_text, path_id, query_error, IfMatch, Page, PageQuery,
};
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_payouts))
        .routes(routes!(get_payout))
        .routes(routes!(approve_payout))
        .routes(routes!(reject_payout))
        .routes(routes!(hold_payout))
        .routes(routes!(release_payout))
        .routes(routes!(void_payout))
        .routes(routes!(reverse_payout))
}

/// Status of a payout. Whether it is on hold is reported apart, in `held`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatusName {
    /// Waiting for a payout approver.
    PendingApproval,
    /// Approved, waiting for the next payroll export.
    Approved,
    /// Sent to payroll in an export batch.
    Exported,
    /// Paid by payroll.
    Paid,
    /// Rejected by an approver (final).
    Rejected,
    /// Voided before payment (final).
    Voided,
    /// Paid and then clawed back (final).
    Reversed,
}

impl From<PayoutStatus> for PayoutStatusName {
    fn from(status: PayoutStatus) -> Self {
        match status {
            PayoutStatus::PendingApproval => Self::PendingApproval,
            PayoutStatus::Approved => Self::Approved,
            PayoutStatus::Exported => Self::Exported,
            PayoutStatus::Paid => Self::Paid,
            PayoutStatus::Rejected => Self::Rejected,
            PayoutStatus::Voided => Self::Voided,
            PayoutStatus::Reversed => Self::Reversed,
        }
    }
}

impl PayoutStatusName {
    /// Returns the name stored in the payout ledger.
    fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => PayoutStatus::PendingApproval.as_str(),
            Self::Approved => PayoutStatus::Approved.as_str(),
            Self::Exported => PayoutStatus::Exported.as_str(),
            Self::Paid => PayoutStatus::Paid.as_str(),
            Self::Rejected => PayoutStatus::Rejected.as_str(),
            Self::Voided => PayoutStatus::Voided.as_str(),
            Self::Reversed => PayoutStatus::Reversed.as_str(),
        }
    }

    /// Parses a status as the read models store it.
    pub fn parse(stored: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::from(stored)).ok()
    }
}

/// An amount of money in minor units of its currency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Amount {
    /// Minor units, such as cents.
    #[schema(example = 50000)]
    pub amount: i64,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
}

impl From<Money> for Amount {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount(),
            currency: money.currency().as_str().to_owned(),
        }
    }
}

/// Requester of a payout: a job, for milestone payouts, or a user.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequesterView {
    /// A job, by name.
    System {
        /// Name of the job, such as `payout_requester`.
        job: String,
    },
    /// A user, by id.
    User {
        /// Id of the user.
        user_id: Uuid,
    },
}

/// A payout.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayoutView {
    /// Id of the payout, derived from its referral, milestone and recipient.
    pub id: Uuid,
    /// The referral whose milestone is paid.
    pub referral_id: Uuid,
    /// The program of the referral.
    pub program_id: Uuid,
    /// The referring ambassador.
    pub ambassador_id: Uuid,
    /// Recipient of the money: `ambassador` or `candidate`.
    #[schema(example = "ambassador")]
    pub recipient: String,
    /// The milestone paid, as `trigger:threshold:recipient`.
    #[schema(example = "hours_worked:160.00:ambassador")]
    pub milestone: String,
    /// The amount to pay.
    pub amount: Amount,
    /// Status of the payout.
    pub status: PayoutStatusName,
    /// Whether the payout is on hold, which blocks approval and export.
    pub held: bool,
    /// Reason for the hold, while the payout is on hold.
    pub hold_reason: Option<String>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// Requester of the payout.
    pub requested_by: RequesterView,
    /// When it was approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// The approving user.
    pub approved_by: Option<Uuid>,
    /// When it was exported to payroll.
    pub exported_at: Option<DateTime<Utc>>,
    /// The payroll export batch.
    pub batch_id: Option<Uuid>,
    /// The day payroll paid it.
    pub paid_on: Option<NaiveDate>,
    /// Payroll's reference for the payment.
    pub paid_reference: Option<String>,
    /// When it was rejected, voided or reversed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Why: the reason typed for a rejection or reversal, the reason code of a void.
    pub closed_reason: Option<String>,
    /// Version of the payout (its number of events), as in the `ETag`.
    pub version: i64,
}

/// Filters and paging of `GET /v1/payouts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PayoutListQuery {
    /// Only payouts in this status. `pending_approval` is the approval queue.
    pub status: Option<PayoutStatusName>,
    /// Only the payouts of this referral.
    pub referral_id: Option<Uuid>,
    /// Only the payouts of this ambassador's referrals.
    pub ambassador_id: Option<Uuid>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `POST /v1/payouts/{id}/reject`, `/hold` and `/reverse`: the reason for the decision.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutReasonRequest {
    /// The reason, 1 to 1000 characters, without Social Security or payment card numbers.
    #[schema(example = "The hire date on file does not match payroll")]
    pub reason: String,
}

/// Reason code of a void.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoidReasonCode {
    /// The ambassador is inactive and the terms require an active referrer.
    AmbassadorInactive,
    /// The ambassador reached the annual bonus cap.
    AnnualCapReached,
    /// The placement ended within the guarantee period.
    PlacementEnded,
    /// The referral became ineligible for another reason.
    ReferralIneligible,
    /// Any other reason, explained in `note`.
    Other,
}

impl From<VoidReasonCode> for VoidReason {
    fn from(code: VoidReasonCode) -> Self {
        match code {
            VoidReasonCode::AmbassadorInactive => Self::AmbassadorInactive,
            VoidReasonCode::AnnualCapReached => Self::AnnualCapReached,
            VoidReasonCode::PlacementEnded => Self::PlacementEnded,
            VoidReasonCode::ReferralIneligible => Self::ReferralIneligible,
            VoidReasonCode::Other => Self::Other,
        }
    }
}

/// `POST /v1/payouts/{id}/void`: the reason for voiding.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidRequest {
    /// Reason code. `other`, the default, needs a `note`.
    pub reason_code: Option<VoidReasonCode>,
    /// Explanation, 1 to 1000 characters.
    pub note: Option<String>,
}

/// Lists payouts, oldest request first, optionally by status, referral or ambassador.
/// `?status=pending_approval` is the approval queue. The list follows the events a
/// moment behind, so read one payout for its current state.
#[utoipa::path(get, path = "/v1/payouts", tag = "payouts",
    security(("bearer" = [])),
    params(PayoutListQuery),
    responses(
        (status = 200, description = "One page of payouts", body = Page<PayoutView>),
        (status = 400, description = "Invalid filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither payout approver nor recruiter", body = Problem, content_type = "application/problem+json")))]
pub async fn list_payouts(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<PayoutListQuery>, QueryRejection>,
) -> Result<Json<Page<PayoutView>>, ApiError> {
    let permitted = caller.authorize(Action::ReadPayouts)?;

    let Query(query) = query.map_err(query_error)?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let limit = page.limit()?;
    let after: Option<(DateTime<Utc>, Uuid)> = page.position()?;

    let mut rows = ledger_rows(&state, permitted.agency_id, &query, after, limit + 1).await?;
    let next_cursor = if rows.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        rows.last()
            .map(|row| cursor(&(row.requested_at, row.payout_id)))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(LedgerRow::into_view)
        .collect::<Result<_, _>>()?;
    Ok(Json(Page { items, next_cursor }))
}

/// Returns one payout in its current state, with its version as `ETag`.
#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payouts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the payout")),
    responses(
        (status = 200, description = "The payout", body = PayoutView,
            headers(("ETag" = String, description = "The payout's version, for `If-Match`"))),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither payout approver nor recruiter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payout in the agency", body = Problem, content_type = "application/problem+json")))]
pub async fn get_payout(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let permitted = caller.authorize(Action::ReadPayouts)?;

    let payout_id = payout_id(id)?;

    let (payout, version) = load_payout(&state, permitted.agency_id, payout_id).await?;

    respond(&state, permitted.agency_id, &payout, version).await
}

/// Approves a pending payout that is not on hold. The approver may not be the user who
/// requested a manual payout. When the terms require an active referrer and the
/// ambassador is inactive, or the ambassador reached the annual cap, the payout is voided
/// instead, with that reason code.
#[utoipa::path(post, path = "/v1/payouts/{id}/approve", tag = "payouts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the payout"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` the decision is based on")),
    responses(
        (status = 200, description = "Approved, or voided by a rule of the terms", body = PayoutView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payout in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending, on hold, or changed since the `If-Match` version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The approver requested this payout", body = Problem, content_type = "application/problem+json")))]
pub async fn approve_payout(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected_version): IfMatch,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let permitted = caller.authorize(Action::DecidePayouts)?;

    let payout_id = payout_id(id)?;
    let ambassador_active = ambassador_active(&state, permitted.agency_id, payout_id).await?;
    let command = PayoutCommand::ApprovePayout(ApprovePayout {
        approver: permitted.caller.caller.user_id,
        ambassador_active,
        at: Utc::now(),
    });

    decide(&state, &permitted, payout_id, command, expected_version).await
}

/// Rejects a pending payout, on hold or not.
#[utoipa::path(post, path = "/v1/payouts/{id}/reject", tag = "payouts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the payout"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` the decision is based on")),
    request_body = PayoutReasonRequest,
    responses(
        (status = 200, description = "Rejected", body = PayoutView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payout in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending, or changed since the `If-Match` version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or invalid reason", body = Problem, content_type = "application/problem+json")))]
pub async fn reject_payout(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<PayoutReasonRequest>,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let permitted = caller.authorize(Action::DecidePayouts)?;

    let payout_id = payout_id(id)?;
    let command = PayoutCommand::RejectPayout(RejectPayout {
        by: permitted.caller.caller.user_id,
        reason: parse_free_text("reason", &request.reason)?,
        at: Utc::now(),
    });

    decide(&state, &permitted, payout_id, command, expected_version).await
}

/// Puts a pending or approved payout on hold, which blocks its approval and export.
#[utoipa::path(post, path = "/v1/payouts/{id}/hold", tag = "payouts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the payout"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` the decision is based on")),
    request_body = PayoutReasonRequest,
    responses(
        (status = 200, description = "On hold", body = PayoutView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payout in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Neither pending nor approved, already on hold, or changed since the `If-Match` version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or invalid reason", body = Problem, content_type = "application/problem+json")))]
pub async fn hold_payout(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<PayoutReasonRequest>,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let permitted = caller.authorize(Action::DecidePayouts)?;

    let payout_id = payout_id(id)?;
    let command = PayoutCommand::HoldPayout(HoldPayout {
        by: permitted.caller.caller.user_id,
        reason: parse_free_text("reason", &request.reason)?,
        at: Utc::now(),
    });

    decide(&state, &permitted, payout_id, command, expected_version).await
}

/// Releases the hold on a payout.
#[utoipa::path(post, path = "/v1/payouts/{id}/release", tag = "payouts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the payout"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` the decision is based on")),
    responses(
        (status = 200, description = "Released", body = PayoutView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payout in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not on hold, or changed since the `If-Match` version", body = Problem, content_type = "application/problem+json")))]
pub async fn release_payout(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected_version): IfMatch,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let permitted = caller.authorize(Action::DecidePayouts)?;

    let payout_id = payout_id(id)?;
    let command = PayoutCommand::ReleasePayout(ReleasePayout {
        by: permitted.caller.caller.user_id,
        at: Utc::now(),
    });

    decide(&state, &permitted, payout_id, command, expected_version).await
}

/// Voids a payout that has not been paid: pending, approved or exported, on hold or not.
#[utoipa::path(post, path = "/v1/payouts/{id}/void", tag = "payouts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the payout"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` the decision is based on")),
    request_body = VoidRequest,
    responses(
        (status = 200, description = "Voided", body = PayoutView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payout in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Paid or closed, or changed since the `If-Match` version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid note, or reason code `other` without a note", body = Problem, content_type = "application/problem+json")))]
pub async fn void_payout(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<VoidRequest>,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let permitted = caller.authorize(Action::DecidePayouts)?;

    let payout_id = payout_id(id)?;
    let note = request
        .note
        .as_deref()
        .map(|note| parse_free_text("note", note))
        .transpose()?;
    let command = PayoutCommand::VoidPayout(VoidPayout {
        by: Requester::User {
            user_id: permitted.caller.caller.user_id,
        },
        reason_code: request.reason_code.unwrap_or(VoidReasonCode::Other).into(),
        note,
        at: Utc::now(),
    });

    decide(&state, &permitted, payout_id, command, expected_version).await
}

/// Records the clawback of a paid payout. The payment stays in the history.
#[utoipa::path(post, path = "/v1/payouts/{id}/reverse", tag = "payouts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the payout"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` the decision is based on")),
    request_body = PayoutReasonRequest,
    responses(
        (status = 200, description = "Reversed", body = PayoutView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payout in the agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not paid, or changed since the `If-Match` version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or invalid reason", body = Problem, content_type = "application/problem+json")))]
pub async fn reverse_payout(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<PayoutReasonRequest>,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let permitted = caller.authorize(Action::DecidePayouts)?;

    let payout_id = payout_id(id)?;
    let command = PayoutCommand::ReversePayout(ReversePayout {
        by: permitted.caller.caller.user_id,
        reason: parse_free_text("reason", &request.reason)?,
        at: Utc::now(),
    });

    decide(&state, &permitted, payout_id, command, expected_version).await
}

/// Executes a decision on a payout and responds with its new state. With
/// `expected_version`, a payout changed since then is a 409.
async fn decide(
    state: &AppState,
    permitted: &Permitted,
    payout_id: PayoutId,
    command: PayoutCommand,
    expected_version: Option<usize>,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let executed = state
        .app
        .payouts
        .execute(
            &payout_id.to_string(),
            command,
            &permitted.metadata(),
            expected_version,
        )
        .await
        .map_err(AppError::from)?;
    if !executed.events.is_empty() {
        tracing::info!(%payout_id, version = executed.version, "payout decision recorded");
    }

    respond(
        state,
        permitted.agency_id,
        &executed.aggregate,
        executed.version,
    )
    .await
}

/// Reads the current state of a payout of the agency from its read model.
async fn load_payout(
    state: &AppState,
    agency_id: AgencyId,
    payout_id: PayoutId,
) -> Result<(Payout, usize), ApiError> {
    state
        .app
        .payouts
        .read(agency_id, &payout_id.to_string())
        .await
        .map_err(AppError::from)?
        .ok_or_else(|| ApiError::not_found("payout"))
}

/// Returns whether the ambassador of a payout is active now, which an approval needs.
async fn ambassador_active(
    state: &AppState,
    agency_id: AgencyId,
    payout_id: PayoutId,
) -> Result<bool, ApiError> {
    let (payout, _) = load_payout(state, agency_id, payout_id).await?;
    let ambassador_id = payout
        .ambassador_id()
        .ok_or_else(|| ApiError::internal(&format!("payout {payout_id} has no ambassador")))?;
    let ambassador = state
        .app
        .ambassadors
        .read(agency_id, &ambassador_id.to_string())
        .await
        .map_err(AppError::from)?
        .ok_or_else(|| {
            ApiError::internal(&format!(
                "payout {payout_id} names ambassador {ambassador_id}, which does not exist"
            ))
        })?;
    Ok(ambassador.0.is_active())
}

/// Builds the response for a payout: its view, and its version as `ETag`.
async fn respond(
    state: &AppState,
    agency_id: AgencyId,
    payout: &Payout,
    version: usize,
) -> Result<(HeaderMap, Json<PayoutView>), ApiError> {
    let details = details(state, agency_id, payout, version).await?;
    let view = aggregate_view(payout, version, details)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag(version));
    Ok((headers, Json(view)))
}

/// Facts the payout ledger records beside the aggregate's state: the time of each step
/// and the reasons given.
#[derive(Debug, Default)]
struct Details {
    hold_reason: Option<String>,
    approved_at: Option<DateTime<Utc>>,
    exported_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    closed_reason: Option<String>,
}

impl Details {
    /// Applies one event as the payout ledger projection does.
    fn apply(&mut self, event: PayoutEvent) {
        match event {
            PayoutEvent::PayoutRequested { .. } | PayoutEvent::PayoutPaid { .. } => {}
            PayoutEvent::PayoutApproved { at, .. } => self.approved_at = Some(at),
            PayoutEvent::PayoutHeld { reason, .. } => {
                self.hold_reason = Some(reason.as_str().to_owned());
            }
            PayoutEvent::PayoutReleased { .. } => self.hold_reason = None,
            PayoutEvent::PayoutExported { at, .. } => self.exported_at = Some(at),
            PayoutEvent::PayoutRejected { reason, at, .. }
            | PayoutEvent::PayoutReversed { reason, at, .. } => {
                self.close(at, reason.as_str());
            }
            PayoutEvent::PayoutVoided {
                reason_code, at, ..
            } => self.close(at, reason_code.as_str()),
        }
    }

    fn close(&mut self, at: DateTime<Utc>, reason: &str) {
        self.closed_at = Some(at);
        self.closed_reason = Some(reason.to_owned());
        self.hold_reason = None;
    }
}

/// Reads the details of a payout from its events up to `version`.
async fn details(
    state: &AppState,
    agency_id: AgencyId,
    payout: &Payout,
    version: usize,
) -> Result<Details, ApiError> {
    let payout_id = payout
        .payout_id()
        .ok_or_else(|| ApiError::internal(&"a loaded payout has no id"))?;
    let events: Vec<sqlx::types::Json<PayoutEvent>> = sqlx::query_scalar(
        "SELECT payload FROM events
          WHERE aggregate_type = 'payout' AND aggregate_id = $1 AND agency_id = $2
            AND sequence <= $3
          ORDER BY sequence",
    )
    .bind(payout_id.to_string())
    .bind(agency_id.0)
    .bind(i64::try_from(version).unwrap_or(i64::MAX))
    .fetch_all(&state.pool)
    .await
    .map_err(|error| ApiError::unavailable(&error))?;

    let mut details = Details::default();
    for sqlx::types::Json(event) in events {
        details.apply(event);
    }
    Ok(details)
}

/// Builds the view of a payout from its aggregate and details.
fn aggregate_view(
    payout: &Payout,
    version: usize,
    details: Details,
) -> Result<PayoutView, ApiError> {
    let missing = || ApiError::internal(&"a loaded payout lacks the fields of its request");
    let (Some(id), Some(referral_id), Some(program_id), Some(ambassador_id)) = (
        payout.payout_id(),
        payout.referral_id(),
        payout.program_id(),
        payout.ambassador_id(),
    ) else {
        return Err(missing());
    };
    let (Some(recipient), Some(milestone), Some(amount), Some(status)) = (
        payout.recipient(),
        payout.milestone(),
        payout.amount(),
        payout.status(),
    ) else {
        return Err(missing());
    };
    let (Some(requested_at), Some(requested_by)) = (payout.requested_at(), payout.requested_by())
    else {
        return Err(missing());
    };

    Ok(PayoutView {
        id: id.0,
        referral_id: referral_id.0,
        program_id: program_id.0,
        ambassador_id: ambassador_id.0,
        recipient: recipient.as_str().to_owned(),
        milestone: milestone.as_str().to_owned(),
        amount: amount.into(),
        status: status.into(),
        held: payout.is_held(),
        hold_reason: details.hold_reason,
        requested_at,
        requested_by: match requested_by {
            Requester::System { job } => RequesterView::System { job: job.clone() },
            Requester::User { user_id } => RequesterView::User { user_id: user_id.0 },
        },
        approved_at: details.approved_at,
        approved_by: payout.approved_by().map(|id| id.0),
        exported_at: details.exported_at,
        batch_id: payout.batch_id(),
        paid_on: payout.paid_on(),
        paid_reference: payout.paid_reference().map(str::to_owned),
        closed_at: details.closed_at,
        closed_reason: details.closed_reason,
        version: i64::try_from(version).unwrap_or(i64::MAX),
    })
}

/// One row of `read_models.payout_ledger`.
#[derive(sqlx::FromRow)]
struct LedgerRow {
    payout_id: Uuid,
    referral_id: Uuid,
    program_id: Uuid,
    ambassador_id: Uuid,
    recipient: String,
    milestone: String,
    amount: i64,
    currency: String,
    status: String,
    held: bool,
    hold_reason: Option<String>,
    requested_at: DateTime<Utc>,
    requester_kind: String,
    requested_by: String,
    approved_at: Option<DateTime<Utc>>,
    approved_by: Option<Uuid>,
    exported_at: Option<DateTime<Utc>>,
    batch_id: Option<Uuid>,
    paid_on: Option<NaiveDate>,
    paid_reference: Option<String>,
    closed_at: Option<DateTime<Utc>>,
    closed_reason: Option<String>,
    version: i64,
}

impl LedgerRow {
    fn into_view(self) -> Result<PayoutView, ApiError> {
        let invalid = |what: &str| {
            ApiError::internal(&format!(
                "payout ledger row {} has an invalid {what}",
                self.payout_id
            ))
        };
        let status = PayoutStatusName::parse(&self.status).ok_or_else(|| invalid("status"))?;
        let requested_by = match self.requester_kind.as_str() {
            "system" => RequesterView::System {
                job: self.requested_by.clone(),
            },
            "user" => RequesterView::User {
                user_id: Uuid::parse_str(&self.requested_by)
                    .map_err(|_| invalid("requested_by"))?,
            },
            _ => return Err(invalid("requester_kind")),
        };

        Ok(PayoutView {
            id: self.payout_id,
            referral_id: self.referral_id,
            program_id: self.program_id,
            ambassador_id: self.ambassador_id,
            recipient: self.recipient,
            milestone: self.milestone,
            amount: Amount {
                amount: self.amount,
                currency: self.currency,
            },
            status,
            held: self.held,
            hold_reason: self.hold_reason,
            requested_at: self.requested_at,
            requested_by,
            approved_at: self.approved_at,
            approved_by: self.approved_by,
            exported_at: self.exported_at,
            batch_id: self.batch_id,
            paid_on: self.paid_on,
            paid_reference: self.paid_reference,
            closed_at: self.closed_at,
            closed_reason: self.closed_reason,
            version: self.version,
        })
    }
}

/// Reads up to `limit` ledger rows of the agency that pass the filters, oldest request
/// first, after the `(requested_at, payout_id)` position of a cursor.
async fn ledger_rows(
    state: &AppState,
    agency_id: AgencyId,
    query: &PayoutListQuery,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<LedgerRow>, ApiError> {
    sqlx::query_as(
        "SELECT payout_id, referral_id, program_id, ambassador_id, recipient, milestone,
                amount, currency, status, held, hold_reason, requested_at, requester_kind,
                requested_by, approved_at, approved_by, exported_at, batch_id, paid_on,
                paid_reference, closed_at, closed_reason, version
           FROM read_models.payout_ledger
          WHERE agency_id = $1
            AND ($2::text IS NULL OR status = $2)
            AND ($3::uuid IS NULL OR referral_id = $3)
            AND ($4::uuid IS NULL OR ambassador_id = $4)
            AND ($5::timestamptz IS NULL OR (requested_at, payout_id) > ($5, $6))
          ORDER BY requested_at, payout_id
          LIMIT $7",
    )
    .bind(agency_id.0)
    .bind(query.status.map(PayoutStatusName::as_str))
    .bind(query.referral_id)
    .bind(query.ambassador_id)
    .bind(after.map(|(requested_at, _)| requested_at))
    .bind(after.map(|(_, payout_id)| payout_id))
    .bind(limit)
    .fetch_all(&state.read_pool)
    .await
    .map_err(|error| ApiError::unavailable(&error))
}

fn payout_id(path: Result<Path<Uuid>, PathRejection>) -> Result<PayoutId, ApiError> {
    path_id(path, "id").map(PayoutId)
}
