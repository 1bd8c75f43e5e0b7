//! The `referrals` endpoints: the eligibility pre-check, submission, the board, one
//! referral (now or at a past time or version), and the pipeline commands from assignment
//! to the end of the placement.
//!
//! Single reads and command responses come from the referral's events, so a client reads
//! its own writes at once. The board comes from `read_models.referral_board`, which the
//! projection workers fill shortly after each event. Every pipeline command goes through
//! [`Application::execute_referral`], which also requests the payouts of the milestones
//! the command reached.
//!
//! [`Application::execute_referral`]: referrals_store::application::Application::execute_referral

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use referrals_domain::ids::{AgencyId, AmbassadorId, ProgramId, ReferralId, UserId};
use referrals_domain::referral::{
    self, AssignRecruiter, Decline, Eligibility, EndPlacement, MarkContacted, MarkInterviewing,
    RecordHire, RecordHours, Referral, ReferralCommand, Withdraw,
};
use referrals_domain::role::Role;
use referrals_domain::user::UserStatus;
use referrals_domain::values::{
    parse_label, EmailAddress, FreeText, Hours, PersonName, PhoneNumber, Sealed, ValueError,
};
use referrals_domain::DomainError;
use referrals_store::accounts::AccountError;
use referrals_store::application::{AppError, HistoryPoint, NewReferral};
use referrals_store::event_store::CommandMetadata;
use referrals_store::personal::{ContactDetails, OpenedDetails, SealedDetails};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::access_log::{record_access, record_accesses, record_accesses_as, SubjectType};
use super::ambassadors::{open_contact, ERASED_NAME};
use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{
    created, database_error, parse_free_text, parse_id, query_error, respond,
};
use super::conventions::{cursor, IfMatch, Page, PageQuery};
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::programs::{Recipient, TermsView, Trigger};
use super::AppState;

/// Maximum length of a job reference in characters, as the referral aggregate enforces it.
const MAX_JOB_REFERENCE_CHARS: usize = 200;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(check_referral_eligibility))
        .routes(routes!(submit_referral, list_referrals))
        .routes(routes!(get_referral))
        .routes(routes!(assign_recruiter))
        .routes(routes!(mark_contacted))
        .routes(routes!(mark_interviewing))
        .routes(routes!(record_hire))
        .routes(routes!(record_hours))
        .routes(routes!(end_placement))
        .routes(routes!(decline_referral))
        .routes(routes!(withdraw_referral))
}

/// A referral to submit, or to check before submitting.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitReferralRequest {
    /// The program the referral is for.
    pub program_id: Uuid,
    /// The ambassador who refers the candidate.
    pub ambassador_id: Uuid,
    /// The referred candidate; an e-mail address or a phone number is required.
    pub candidate: CandidateInput,
    /// The job opening the candidate is referred for, 1 to 200 characters.
    pub job_reference: Option<String>,
    /// A note about the candidate, up to 1000 characters; no government identifiers or
    /// card numbers.
    pub note: Option<String>,
}

/// The referred candidate's contact details.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateInput {
    /// Full name, 1 to 200 characters on one line.
    pub name: String,
    /// E-mail address; compared trimmed and lower-cased.
    pub email: Option<String>,
    /// Phone number with country code, or a 10-digit North American number.
    pub phone: Option<String>,
}

/// The recruiter to assign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRecruiterRequest {
    /// User id of a recruiter of the agency.
    pub recruiter_id: Uuid,
}

/// The hire of the candidate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordHireRequest {
    /// First day of work.
    pub start_date: NaiveDate,
    /// Job title, 1 to 200 characters.
    pub job_title: String,
    /// Client the candidate is placed with, 1 to 200 characters.
    pub client_name: String,
    /// Worker id in the agency's back office, which timesheet imports match on.
    pub external_worker_id: Option<String>,
}

/// The hours of one work week.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordHoursRequest {
    /// Last day of the work week.
    pub week_ending: NaiveDate,
    /// Hours worked that week, 0 to 168, as a decimal string or number with at most two
    /// decimals. Reporting a week again replaces its earlier figure.
    #[schema(value_type = String, example = "37.50")]
    pub hours: Hours,
}

/// The end of the placement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndPlacementRequest {
    /// Last day of the placement, on or after the start date.
    pub end_date: NaiveDate,
    /// The reason the placement ended, up to 1000 characters.
    pub reason: String,
}

/// The reason for declining or withdrawing a referral.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// The reason, up to 1000 characters; no government identifiers or card numbers.
    pub reason: String,
}

/// Filters and paging of the referral board.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BoardQuery {
    /// Only referrals with this pipeline status.
    #[param(value_type = Option<ReferralStatus>)]
    pub status: Option<String>,
    /// Only referrals of this program.
    #[param(value_type = Option<Uuid>)]
    pub program_id: Option<String>,
    /// Only referrals by this ambassador.
    #[param(value_type = Option<Uuid>)]
    pub ambassador_id: Option<String>,
    /// Only referrals assigned to this recruiter.
    #[param(value_type = Option<Uuid>)]
    pub recruiter_id: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A past state to read instead of the current one; at most one of the two.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PastStateQuery {
    /// The state after every event recorded at or before this RFC 3339 time.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub as_of: Option<String>,
    /// The state at this version (the sequence number of its last event).
    #[param(value_type = Option<u64>)]
    pub version: Option<String>,
}

/// Pipeline status of a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    /// Recorded and owning its candidate.
    Submitted,
    /// The recruiter contacted the candidate.
    Contacted,
    /// The candidate is interviewing.
    Interviewing,
    /// The candidate was hired.
    Hired,
    /// Every milestone of the bonus schedule was reached.
    Completed,
    /// The agency declined the candidate.
    Declined,
    /// The referral was withdrawn.
    Withdrawn,
    /// No hire by the hire deadline.
    Expired,
    /// Another referral owned the candidate when this one was submitted.
    Duplicate,
}

/// Whether a referral earns bonuses, and if not, why.
#[derive(Debug, Serialize, ToSchema)]
pub struct EligibilityView {
    /// Whether the referral earns bonuses.
    pub eligible: bool,
    /// Why not: `duplicate`, `prior_contact`, `ambassador_kind`, `hire_deadline_passed`,
    /// `placement_ended`, `annual_cap_reached` or `ambassador_inactive`.
    pub reason: Option<String>,
}

/// A referral with its candidate, placement and progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralView {
    /// The referral's id.
    pub id: Uuid,
    /// The referral's version, also sent as the `ETag`.
    pub version: u64,
    /// The program it was submitted to.
    pub program_id: Uuid,
    /// The ambassador who referred the candidate.
    pub ambassador_id: Uuid,
    /// Pipeline status.
    pub status: ReferralStatus,
    /// Bonus eligibility.
    pub eligibility: EligibilityView,
    /// For a duplicate, the referral that owned the candidate.
    pub duplicate_of: Option<Uuid>,
    /// The candidate's contact details.
    pub candidate: CandidateView,
    /// The note about the candidate, unless erased.
    pub note: Option<String>,
    /// The job opening the candidate was referred for.
    pub job_reference: Option<String>,
    /// The assigned recruiter's user id.
    pub recruiter_id: Option<Uuid>,
    /// Whether the agency knew the candidate within the look-back period at submission.
    pub prior_contact: bool,
    /// The placement, once the candidate is hired.
    pub placement: Option<PlacementView>,
    /// Total hours worked, with two decimals.
    pub hours_total: String,
    /// Milestones reached so far, in the order they were reached.
    pub milestones_reached: Vec<ReachedMilestoneView>,
    /// Version of the program terms the referral keeps.
    pub terms_version: u32,
    /// The program terms the referral keeps.
    pub terms: TermsView,
    /// ISO 4217 code of the bonus currency.
    pub currency: String,
    /// When the referral was submitted.
    pub submitted_at: DateTime<Utc>,
}

/// The candidate's contact details.
#[derive(Debug, Serialize, ToSchema)]
pub struct CandidateView {
    /// Full name, or `[erased]` after an erasure.
    pub name: String,
    /// E-mail address, if known and not erased.
    pub email: Option<String>,
    /// Phone number in E.164 form, if known and not erased.
    pub phone: Option<String>,
    /// Whether the candidate's personal data was erased.
    pub erased: bool,
}

/// The placement that followed the hire.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlacementView {
    /// First day of work.
    pub start_date: NaiveDate,
    /// Job title.
    pub job_title: String,
    /// Client the worker is placed with.
    pub client_name: String,
    /// Worker id in the agency's back office.
    pub external_worker_id: Option<String>,
    /// When the hire was recorded.
    pub hired_at: DateTime<Utc>,
    /// Last day of the placement, once it ended.
    pub end_date: Option<NaiveDate>,
    /// The reason the placement ended.
    pub end_reason: Option<String>,
    /// Whether it ended before the guarantee period was over.
    pub ended_within_guarantee: bool,
}

/// A milestone the referral reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReachedMilestoneView {
    /// Stable key, such as `hours_worked:160.00:ambassador`.
    pub key: String,
    /// The event that made the milestone due.
    pub trigger: Trigger,
    /// Hours or days with two decimals.
    pub threshold: String,
    /// The bonus in minor units of the currency.
    pub amount: i64,
    /// The recipient of the bonus.
    pub recipient: Recipient,
    /// The day it counts as reached.
    pub reached_on: NaiveDate,
    /// Whether a payout was requested for it, which needs the referral to be eligible.
    pub payable: bool,
}

/// A referral on the board.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralSummary {
    /// The referral's id.
    pub id: Uuid,
    /// The referral's version.
    pub version: u64,
    /// The program it was submitted to.
    pub program_id: Uuid,
    /// The ambassador who referred the candidate.
    pub ambassador_id: Uuid,
    /// The assigned recruiter's user id.
    pub recruiter_id: Option<Uuid>,
    /// Pipeline status.
    pub status: ReferralStatus,
    /// Bonus eligibility.
    pub eligibility: EligibilityView,
    /// For a duplicate, the referral that owned the candidate.
    pub duplicate_of: Option<Uuid>,
    /// The candidate's name, or `[erased]` after an erasure.
    pub candidate_name: String,
    /// When the referral was submitted.
    pub submitted_at: DateTime<Utc>,
    /// When the candidate was contacted.
    pub contacted_at: Option<DateTime<Utc>>,
    /// When interviewing started.
    pub interviewing_at: Option<DateTime<Utc>>,
    /// When the hire was recorded.
    pub hired_at: Option<DateTime<Utc>>,
    /// First day of work.
    pub start_date: Option<NaiveDate>,
    /// Last day of the placement.
    pub end_date: Option<NaiveDate>,
    /// Total hours worked, with two decimals.
    pub hours_total: String,
    /// Number of milestones reached so far.
    pub milestones_reached_count: u32,
}

/// Decides whether a referral would earn bonuses, without submitting it: nothing is
/// recorded and the candidate is not claimed. A `duplicate` result never reveals who
/// referred the candidate before.
#[utoipa::path(post, path = "/v1/referrals/eligibility-check", tag = "referrals", security(("bearer" = [])),
    request_body = SubmitReferralRequest,
    responses(
        (status = 200, description = "Whether the referral would earn bonuses", body = EligibilityView),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program or ambassador in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The program is closed or the ambassador inactive", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid, or the referral breaks a rule such as `self_referral`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn check_referral_eligibility(
    State(state): State<AppState>,
    caller: Authenticated,
    StrictJson(request): StrictJson<SubmitReferralRequest>,
) -> Result<Json<EligibilityView>, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral = request.into_new_referral().map_err(DomainError::from)?;

    let eligibility = state
        .app
        .check_eligibility(permitted.agency_id, &referral, Utc::now())
        .await?;

    Ok(Json(EligibilityView::from(eligibility)))
}

/// Submits a referral. When another referral already owns the candidate, the referral is
/// recorded with status `duplicate`, names the owner in `duplicate_of`, and earns nothing.
#[utoipa::path(post, path = "/v1/referrals", tag = "referrals", security(("bearer" = [])),
    request_body = SubmitReferralRequest,
    responses(
        (status = 201, description = "The referral was recorded, as `submitted` or `duplicate`", body = ReferralView,
            headers(("ETag" = String, description = "The referral's version"),
                    ("Location" = String, description = "The referral's URL"))),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program or ambassador in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The program is closed or the ambassador inactive", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid, or the referral breaks a rule such as `self_referral`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit_referral(
    State(state): State<AppState>,
    caller: Authenticated,
    StrictJson(request): StrictJson<SubmitReferralRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral = request.into_new_referral().map_err(DomainError::from)?;

    let executed = state
        .app
        .submit_referral(&permitted.metadata(), referral)
        .await?;
    let view = referral_view(
        &state,
        permitted.agency_id,
        &executed.aggregate,
        executed.version,
    )
    .await?;
    tracing::info!(referral_id = %view.id, status = ?view.status, "referral submitted");
    let candidate = [view.id];
    record_accesses(
        &state,
        &permitted,
        SubjectType::Candidate,
        &candidate,
        "POST /v1/referrals",
    )
    .await?;

    created(
        &format!("/v1/referrals/{}", view.id),
        executed.version,
        view,
    )
}

/// Lists the referral board, newest first, with optional filters.
#[utoipa::path(get, path = "/v1/referrals", tag = "referrals", security(("bearer" = [])),
    params(BoardQuery),
    responses(
        (status = 200, description = "One page of the board", body = Page<ReferralSummary>),
        (status = 400, description = "A filter, `limit` or `cursor` is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters read referrals", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_referrals(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<BoardQuery>, QueryRejection>,
) -> Result<Json<Page<ReferralSummary>>, ApiError> {
    let permitted = caller.authorize(Action::ReadReferrals)?;

    let Query(query) = query.map_err(query_error)?;
    let filters = BoardFilters::parse(&query)?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = page.limit()?;
    let after = page.position::<BoardPosition>()?;

    let rows: Vec<BoardRow> = board_query(permitted.agency_id, &filters, after.as_ref(), limit + 1)
        .build_query_as()
        .fetch_all(&state.read_pool)
        .await
        .map_err(database_error)?;

    let page = board_page(&state, permitted.agency_id, rows, limit).await?;
    let candidates: Vec<Uuid> = page.items.iter().map(|item| item.id).collect();
    let endpoint = "GET /v1/referrals";
    record_accesses(
        &state,
        &permitted,
        SubjectType::Candidate,
        &candidates,
        endpoint,
    )
    .await?;
    Ok(Json(page))
}

/// Reads one referral: its current state, or with `as_of` or `version` the state it had
/// then, rebuilt from its events.
#[utoipa::path(get, path = "/v1/referrals/{id}", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), PastStateQuery),
    responses(
        (status = 200, description = "The referral", body = ReferralView,
            headers(("ETag" = String, description = "The version shown"))),
        (status = 400, description = "The id, `as_of` or `version` is invalid, or both of them were given", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters read referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency, or none at that time or version", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_referral(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    query: Result<Query<PastStateQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ReadReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let Query(query) = query.map_err(query_error)?;
    let point = query.history_point()?;

    let (referral, version) = load_referral(&state, permitted.agency_id, referral_id, point)
        .await?
        .ok_or_else(|| ApiError::not_found("referral"))?;

    let view = referral_view(&state, permitted.agency_id, &referral, version).await?;
    let endpoint = "GET /v1/referrals/{id}";
    record_access(
        &state,
        &permitted,
        SubjectType::Candidate,
        referral_id.0,
        endpoint,
    )
    .await?;
    respond(version, view)
}

/// Assigns the recruiter who handles the referral.
#[utoipa::path(post, path = "/v1/referrals/{id}/assign", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), IfMatchHeader),
    request_body = AssignRecruiterRequest,
    responses(
        (status = 200, description = "The referral with its recruiter", body = ReferralView,
            headers(("ETag" = String, description = "The referral's new version"))),
        (status = 400, description = "The id is not a UUID, the body is not JSON, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referral ended, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`recruiter_id` is not a recruiter of the agency", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn assign_recruiter(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<AssignRecruiterRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let recruiter_id = UserId(request.recruiter_id);
    // The referral is looked up first, so that another agency's referral is not found
    // before its recruiter is judged.
    require_referral(&state, permitted.agency_id, referral_id).await?;
    require_recruiter(&state, permitted.agency_id, recruiter_id).await?;
    let metadata = permitted.metadata();
    let command = AssignRecruiter {
        recruiter_id,
        at: metadata.recorded_at,
    };

    execute_command(
        &state,
        &metadata,
        referral_id,
        command.into(),
        expected_version,
    )
    .await
}

/// Records that the recruiter contacted the candidate.
#[utoipa::path(post, path = "/v1/referrals/{id}/contacted", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), IfMatchHeader),
    responses(
        (status = 200, description = "The contacted referral", body = ReferralView,
            headers(("ETag" = String, description = "The referral's new version"))),
        (status = 400, description = "The id is not a UUID, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referral is not `submitted`, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn mark_contacted(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = MarkContacted {
        at: metadata.recorded_at,
    };

    execute_command(
        &state,
        &metadata,
        referral_id,
        command.into(),
        expected_version,
    )
    .await
}

/// Records that the candidate is interviewing.
#[utoipa::path(post, path = "/v1/referrals/{id}/interviewing", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), IfMatchHeader),
    responses(
        (status = 200, description = "The referral, now interviewing", body = ReferralView,
            headers(("ETag" = String, description = "The referral's new version"))),
        (status = 400, description = "The id is not a UUID, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referral is past this step, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn mark_interviewing(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = MarkInterviewing {
        at: metadata.recorded_at,
    };

    execute_command(
        &state,
        &metadata,
        referral_id,
        command.into(),
        expected_version,
    )
    .await
}

/// Records the hire of the candidate, which reaches the `hired` milestones.
#[utoipa::path(post, path = "/v1/referrals/{id}/hire", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), IfMatchHeader),
    request_body = RecordHireRequest,
    responses(
        (status = 200, description = "The hired referral", body = ReferralView,
            headers(("ETag" = String, description = "The referral's new version"))),
        (status = 400, description = "The id is not a UUID, the body is not JSON, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referral was hired or ended before, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn record_hire(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<RecordHireRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = RecordHire {
        start_date: request.start_date,
        job_title: request.job_title,
        client_name: request.client_name,
        external_worker_id: request.external_worker_id,
        at: metadata.recorded_at,
    };

    execute_command(
        &state,
        &metadata,
        referral_id,
        command.into(),
        expected_version,
    )
    .await
}

/// Records the hours of one work week, replacing an earlier figure for the same week.
/// Reaching an `hours_worked` threshold requests the milestone's payout.
#[utoipa::path(post, path = "/v1/referrals/{id}/hours", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), IfMatchHeader),
    request_body = RecordHoursRequest,
    responses(
        (status = 200, description = "The referral with its new total", body = ReferralView,
            headers(("ETag" = String, description = "The referral's new version"))),
        (status = 400, description = "The id is not a UUID, the body is not JSON, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referral is not hired, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid, such as negative hours; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn record_hours(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<RecordHoursRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = RecordHours {
        week_ending: request.week_ending,
        hours: request.hours,
        at: metadata.recorded_at,
    };

    execute_command(
        &state,
        &metadata,
        referral_id,
        command.into(),
        expected_version,
    )
    .await
}

/// Records the end of the placement. Under a guarantee period, an early end makes the
/// referral ineligible for milestones not yet paid.
#[utoipa::path(post, path = "/v1/referrals/{id}/placement-end", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), IfMatchHeader),
    request_body = EndPlacementRequest,
    responses(
        (status = 200, description = "The referral with its ended placement", body = ReferralView,
            headers(("ETag" = String, description = "The referral's new version"))),
        (status = 400, description = "The id is not a UUID, the body is not JSON, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referral has no running placement, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn end_placement(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<EndPlacementRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = EndPlacement {
        end_date: request.end_date,
        reason: parse_free_text("reason", &request.reason)?,
        at: metadata.recorded_at,
    };

    execute_command(
        &state,
        &metadata,
        referral_id,
        command.into(),
        expected_version,
    )
    .await
}

/// Declines the candidate before a hire.
#[utoipa::path(post, path = "/v1/referrals/{id}/decline", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), IfMatchHeader),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "The declined referral", body = ReferralView,
            headers(("ETag" = String, description = "The referral's new version"))),
        (status = 400, description = "The id is not a UUID, the body is not JSON, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referral was hired or ended, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The reason is invalid", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn decline_referral(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<ReasonRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = Decline {
        reason: parse_free_text("reason", &request.reason)?,
        at: metadata.recorded_at,
    };

    execute_command(
        &state,
        &metadata,
        referral_id,
        command.into(),
        expected_version,
    )
    .await
}

/// Withdraws the referral before a hire, at the ambassador's or the candidate's request.
#[utoipa::path(post, path = "/v1/referrals/{id}/withdraw", tag = "referrals", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The referral's id"), IfMatchHeader),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "The withdrawn referral", body = ReferralView,
            headers(("ETag" = String, description = "The referral's new version"))),
        (status = 400, description = "The id is not a UUID, the body is not JSON, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage referrals", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such referral in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referral was hired or ended, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The reason is invalid", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn withdraw_referral(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<ReasonRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageReferrals)?;

    let referral_id = ReferralId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = Withdraw {
        reason: parse_free_text("reason", &request.reason)?,
        at: metadata.recorded_at,
    };

    execute_command(
        &state,
        &metadata,
        referral_id,
        command.into(),
        expected_version,
    )
    .await
}

/// The `If-Match` header of the referral commands.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(
    dead_code,
    reason = "describes the header for OpenAPI; `IfMatch` reads it"
)]
struct IfMatchHeader {
    /// The `ETag` of the referral as last read; the command runs only at that version.
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

/// Executes a pipeline command, which also requests the payouts of reached milestones,
/// and responds with the referral's new state.
async fn execute_command(
    state: &AppState,
    metadata: &CommandMetadata,
    referral_id: ReferralId,
    command: ReferralCommand,
    expected_version: Option<usize>,
) -> Result<Response, ApiError> {
    let endpoint = command_endpoint(&command);
    let executed = state
        .app
        .execute_referral(metadata, referral_id, command, expected_version)
        .await?;
    tracing::info!(%referral_id, version = executed.version, "referral command accepted");
    let candidate = [referral_id.0];
    record_accesses_as(
        state,
        metadata,
        SubjectType::Candidate,
        &candidate,
        endpoint,
    )
    .await?;

    let view = referral_view(
        state,
        metadata.agency_id,
        &executed.aggregate,
        executed.version,
    )
    .await?;
    respond(executed.version, view)
}

/// The route of a referral command, for the access log of its response.
fn command_endpoint(command: &ReferralCommand) -> &'static str {
    match command {
        ReferralCommand::SubmitReferral(_) => "POST /v1/referrals",
        ReferralCommand::AssignRecruiter(_) => "POST /v1/referrals/{id}/assign",
        ReferralCommand::MarkContacted(_) => "POST /v1/referrals/{id}/contacted",
        ReferralCommand::MarkInterviewing(_) => "POST /v1/referrals/{id}/interviewing",
        ReferralCommand::RecordHire(_) => "POST /v1/referrals/{id}/hire",
        ReferralCommand::RecordHours(_) | ReferralCommand::RecordCumulativeHours(_) => {
            "POST /v1/referrals/{id}/hours"
        }
        ReferralCommand::EndPlacement(_) => "POST /v1/referrals/{id}/placement-end",
        ReferralCommand::Decline(_) => "POST /v1/referrals/{id}/decline",
        ReferralCommand::Withdraw(_) => "POST /v1/referrals/{id}/withdraw",
        ReferralCommand::CheckDaysEmployed(_) | ReferralCommand::ExpireReferral(_) => {
            "referral job"
        }
    }
}

async fn load_referral(
    state: &AppState,
    agency_id: AgencyId,
    referral_id: ReferralId,
    point: Option<HistoryPoint>,
) -> Result<Option<(Referral, usize)>, ApiError> {
    let id = referral_id.to_string();
    match point {
        None => Ok(state
            .app
            .referrals
            .read(agency_id, &id)
            .await
            .map_err(AppError::from)?),
        Some(point) => Ok(state
            .app
            .state_at::<Referral>(agency_id, &id, point)
            .await?),
    }
}

/// Checks that the referral exists in the agency.
async fn require_referral(
    state: &AppState,
    agency_id: AgencyId,
    referral_id: ReferralId,
) -> Result<(), ApiError> {
    match load_referral(state, agency_id, referral_id, None).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("referral")),
    }
}

/// Checks that `recruiter_id` is a recruiter of the agency who was not deactivated.
async fn require_recruiter(
    state: &AppState,
    agency_id: AgencyId,
    recruiter_id: UserId,
) -> Result<(), ApiError> {
    let user = match state.accounts.load_user(agency_id, recruiter_id).await {
        Ok((user, _)) => Some(user),
        Err(AccountError::NotFound(_)) => None,
        Err(AccountError::Unavailable(cause)) => return Err(ApiError::unavailable(&cause)),
        Err(error) => return Err(ApiError::internal(&error)),
    };
    let is_recruiter = user.is_some_and(|user| {
        user.roles().contains(&Role::Recruiter) && user.status() != Some(UserStatus::Deactivated)
    });
    if is_recruiter {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "unknown_recruiter",
        "recruiter_id is not an active user with the recruiter role in your agency; choose one from GET /v1/users",
    )
    .with_field("recruiter_id"))
}

impl SubmitReferralRequest {
    fn into_new_referral(self) -> Result<NewReferral, ValueError> {
        let candidate = ContactDetails {
            name: PersonName::parse(&self.candidate.name)
                .map_err(|error| error.for_field("candidate.name"))?,
            email: self
                .candidate
                .email
                .as_deref()
                .map(EmailAddress::parse)
                .transpose()
                .map_err(|error| error.for_field("candidate.email"))?,
            phone: self
                .candidate
                .phone
                .as_deref()
                .map(PhoneNumber::parse)
                .transpose()
                .map_err(|error| error.for_field("candidate.phone"))?,
        };
        let note = self
            .note
            .as_deref()
            .map(FreeText::parse)
            .transpose()
            .map_err(|error| error.for_field("note"))?;
        // Submission checks this too, but the pre-check must reject the same bodies.
        let job_reference = self
            .job_reference
            .as_deref()
            .map(|raw| parse_label("job_reference", raw, MAX_JOB_REFERENCE_CHARS))
            .transpose()?;
        Ok(NewReferral {
            program_id: ProgramId(self.program_id),
            ambassador_id: AmbassadorId(self.ambassador_id),
            candidate,
            job_reference,
            note,
        })
    }
}

impl PastStateQuery {
    /// Returns the point in history to read, or `None` for the current state.
    pub(crate) fn history_point(&self) -> Result<Option<HistoryPoint>, ApiError> {
        match (&self.as_of, &self.version) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "conflicting_parameters",
                "as_of and version select a past state in two ways; send only one of them",
            )),
            // An unencoded `+` in a query string arrives as a space, so a space before the
            // offset is read as the `+` it was.
            (Some(as_of), None) => DateTime::parse_from_rfc3339(&as_of.trim().replace(' ', "+"))
                .map(|at| Some(HistoryPoint::Time(at.with_timezone(&Utc))))
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_as_of",
                        "as_of must be an RFC 3339 time such as 2026-03-01T09:30:00Z",
                    )
                    .with_field("as_of")
                }),
            (None, Some(version)) => version
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&version| version >= 1)
                .map(|version| Some(HistoryPoint::Version(version)))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_version",
                        "version must be a whole number from 1, such as an ETag value without its quotes",
                    )
                    .with_field("version")
                }),
        }
    }
}

async fn referral_view(
    state: &AppState,
    agency_id: AgencyId,
    referral: &Referral,
    version: usize,
) -> Result<ReferralView, ApiError> {
    let missing = || ApiError::internal(&"a stored referral has no submission");
    let id = referral.referral_id().ok_or_else(missing)?;
    let sealed = referral.candidate().ok_or_else(missing)?;
    let sealed = SealedDetails {
        name: sealed.name.clone(),
        email: sealed.email.clone(),
        phone: sealed.phone.clone(),
    };
    let (candidate, note) = state
        .app
        .personal()
        .open_contact_with_note(agency_id, id.0, &sealed, referral.note())
        .await
        .map_err(AppError::from)?;
    ReferralView::new(referral, version, candidate.into(), note).ok_or_else(missing)
}

impl ReferralView {
    fn new(
        referral: &Referral,
        version: usize,
        candidate: CandidateView,
        note: Option<String>,
    ) -> Option<Self> {
        Some(Self {
            id: referral.referral_id()?.0,
            version: version as u64,
            program_id: referral.program_id()?.0,
            ambassador_id: referral.ambassador_id()?.0,
            status: referral.status()?.into(),
            eligibility: referral.eligibility()?.into(),
            duplicate_of: referral.duplicate_of().map(|id| id.0),
            candidate,
            note,
            job_reference: referral.job_reference().map(str::to_owned),
            recruiter_id: referral.recruiter_id().map(|id| id.0),
            prior_contact: referral.prior_contact()?,
            placement: referral.placement().map(PlacementView::from),
            hours_total: referral.hours_total()?.to_string(),
            milestones_reached: referral
                .milestones_reached()
                .iter()
                .map(ReachedMilestoneView::from)
                .collect(),
            terms_version: referral.terms_version()?,
            terms: TermsView::from(referral.terms()?),
            currency: referral.currency()?.to_string(),
            submitted_at: referral.submitted_at()?,
        })
    }
}

impl From<OpenedDetails> for CandidateView {
    fn from(contact: OpenedDetails) -> Self {
        match contact {
            OpenedDetails::Present { name, email, phone } => Self {
                name,
                email,
                phone,
                erased: false,
            },
            OpenedDetails::Erased => Self {
                name: ERASED_NAME.to_owned(),
                email: None,
                phone: None,
                erased: true,
            },
        }
    }
}

impl From<&referral::Placement> for PlacementView {
    fn from(placement: &referral::Placement) -> Self {
        Self {
            start_date: placement.start_date,
            job_title: placement.job_title.clone(),
            client_name: placement.client_name.clone(),
            external_worker_id: placement.external_worker_id.clone(),
            hired_at: placement.hired_at,
            end_date: placement.end_date,
            end_reason: placement
                .end_reason
                .as_ref()
                .map(|reason| reason.as_str().to_owned()),
            ended_within_guarantee: placement.ended_within_guarantee,
        }
    }
}

impl From<&referral::ReachedMilestone> for ReachedMilestoneView {
    fn from(reached: &referral::ReachedMilestone) -> Self {
        Self {
            key: reached.key.as_str().to_owned(),
            trigger: reached.milestone.trigger.into(),
            threshold: reached.milestone.threshold.to_string(),
            amount: reached.milestone.amount,
            recipient: reached.milestone.recipient.into(),
            reached_on: reached.reached_on,
            payable: reached.payable,
        }
    }
}

impl From<Eligibility> for EligibilityView {
    fn from(eligibility: Eligibility) -> Self {
        Self {
            eligible: eligibility.is_eligible(),
            reason: eligibility
                .reason()
                .map(|reason| reason.as_str().to_owned()),
        }
    }
}

impl From<referral::ReferralStatus> for ReferralStatus {
    fn from(status: referral::ReferralStatus) -> Self {
        use referral::ReferralStatus as Stored;
        match status {
            Stored::Submitted => Self::Submitted,
            Stored::Contacted => Self::Contacted,
            Stored::Interviewing => Self::Interviewing,
            Stored::Hired => Self::Hired,
            Stored::Completed => Self::Completed,
            Stored::Declined => Self::Declined,
            Stored::Withdrawn => Self::Withdrawn,
            Stored::Expired => Self::Expired,
            Stored::Duplicate => Self::Duplicate,
        }
    }
}

impl ReferralStatus {
    /// Parses a status name as clients and the board store it, such as `hired`.
    fn parse(text: &str) -> Option<Self> {
        use serde::de::IntoDeserializer;
        let deserializer: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            text.into_deserializer();
        Self::deserialize(deserializer).ok()
    }

    /// Returns the status name as the board stores it.
    fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Contacted => "contacted",
            Self::Interviewing => "interviewing",
            Self::Hired => "hired",
            Self::Completed => "completed",
            Self::Declined => "declined",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
            Self::Duplicate => "duplicate",
        }
    }
}

/// The board's filters, parsed.
struct BoardFilters {
    status: Option<ReferralStatus>,
    program_id: Option<Uuid>,
    ambassador_id: Option<Uuid>,
    recruiter_id: Option<Uuid>,
}

impl BoardFilters {
    fn parse(query: &BoardQuery) -> Result<Self, ApiError> {
        let id = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|text| parse_id(name, text))
                .transpose()
        };
        let status = query
            .status
            .as_deref()
            .map(|text| {
                ReferralStatus::parse(text.trim()).ok_or_else(|| {
                    // A status is no personal data, but any text can arrive here, so only
                    // its start is quoted back.
                    let quoted_start: String = text.chars().take(40).collect();
                    ApiError::bad_request(
                        "invalid_status",
                        format!(
                            "status {quoted_start:?} is not a referral status; use one of submitted, \
                             contacted, interviewing, hired, completed, declined, withdrawn, \
                             expired or duplicate"
                        ),
                    )
                    .with_field("status")
                })
            })
            .transpose()?;
        Ok(Self {
            status,
            program_id: id("program_id", &query.program_id)?,
            ambassador_id: id("ambassador_id", &query.ambassador_id)?,
            recruiter_id: id("recruiter_id", &query.recruiter_id)?,
        })
    }
}

/// The position of the last referral on a page, encoded in the cursor.
#[derive(Serialize, Deserialize)]
struct BoardPosition {
    submitted_at: DateTime<Utc>,
    id: Uuid,
}

/// Builds the board query. Each filter adds an equality on an indexed column, so a
/// filtered page is read from its index in order, newest first.
fn board_query<'a>(
    agency_id: AgencyId,
    filters: &BoardFilters,
    after: Option<&BoardPosition>,
    rows: i64,
) -> QueryBuilder<'a, Postgres> {
    let mut query = QueryBuilder::new(
        "SELECT referral_id, program_id, ambassador_id, recruiter_id, status, eligible,
                ineligible_reason, duplicate_of, candidate_name_sealed, submitted_at,
                contacted_at, interviewing_at, hired_at, start_date, end_date,
                hours_total::text AS hours_total, milestones_reached, version
           FROM read_models.referral_board
          WHERE agency_id = ",
    );
    query.push_bind(agency_id.0);
    if let Some(status) = filters.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(program_id) = filters.program_id {
        query.push(" AND program_id = ").push_bind(program_id);
    }
    if let Some(ambassador_id) = filters.ambassador_id {
        query.push(" AND ambassador_id = ").push_bind(ambassador_id);
    }
    if let Some(recruiter_id) = filters.recruiter_id {
        query.push(" AND recruiter_id = ").push_bind(recruiter_id);
    }
    if let Some(after) = after {
        query
            .push(" AND (submitted_at, referral_id) < (")
            .push_bind(after.submitted_at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    query
        .push(" ORDER BY submitted_at DESC, referral_id DESC LIMIT ")
        .push_bind(rows);
    query
}

/// A row of `read_models.referral_board`.
#[derive(sqlx::FromRow)]
struct BoardRow {
    referral_id: Uuid,
    program_id: Uuid,
    ambassador_id: Uuid,
    recruiter_id: Option<Uuid>,
    status: String,
    eligible: bool,
    ineligible_reason: Option<String>,
    duplicate_of: Option<Uuid>,
    candidate_name_sealed: String,
    submitted_at: DateTime<Utc>,
    contacted_at: Option<DateTime<Utc>>,
    interviewing_at: Option<DateTime<Utc>>,
    hired_at: Option<DateTime<Utc>>,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    hours_total: String,
    milestones_reached: i32,
    version: i64,
}

/// Turns `limit + 1` rows into a page of at most `limit` summaries, opening each
/// candidate's name.
async fn board_page(
    state: &AppState,
    agency_id: AgencyId,
    mut rows: Vec<BoardRow>,
    limit: i64,
) -> Result<Page<ReferralSummary>, ApiError> {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = rows.last().filter(|_| has_more).map(|last| {
        cursor(&BoardPosition {
            submitted_at: last.submitted_at,
            id: last.referral_id,
        })
    });

    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let sealed = SealedDetails {
            name: Sealed(row.candidate_name_sealed.clone()),
            email: None,
            phone: None,
        };
        let candidate =
            CandidateView::from(open_contact(state, agency_id, row.referral_id, &sealed).await?);
        items.push(ReferralSummary::new(row, candidate.name)?);
    }
    Ok(Page { items, next_cursor })
}

impl ReferralSummary {
    fn new(row: BoardRow, candidate_name: String) -> Result<Self, ApiError> {
        let status = ReferralStatus::parse(&row.status).ok_or_else(|| {
            ApiError::internal(&format!(
                "referral_board has an unknown status {:?}",
                row.status
            ))
        })?;
        Ok(Self {
            id: row.referral_id,
            version: u64::try_from(row.version).unwrap_or_default(),
            program_id: row.program_id,
            ambassador_id: row.ambassador_id,
            recruiter_id: row.recruiter_id,
            status,
            eligibility: EligibilityView {
                eligible: row.eligible,
                reason: row.ineligible_reason,
            },
            duplicate_of: row.duplicate_of,
            candidate_name,
            submitted_at: row.submitted_at,
            contacted_at: row.contacted_at,
            interviewing_at: row.interviewing_at,
            hired_at: row.hired_at,
            start_date: row.start_date,
            end_date: row.end_date,
            hours_total: row.hours_total,
            milestones_reached_count: u32::try_from(row.milestones_reached).unwrap_or_default(),
        })
    }
}
