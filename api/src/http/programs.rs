//! The `programs` endpoints: create a program, read and list programs, revise their terms
//! and close them.
//!
//! Single reads and command responses come from the program's events, so a client reads
//! its own writes at once. The list comes from `read_models.programs`, which the
//! projection workers fill shortly after each event.
//!
//! This module also contains the request helpers that the ambassador and referral endpoints
//! share: id parsing, query rejections, database errors and responses with an `ETag`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};

use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use referrals_domain::ids::ProgramId;
use referrals_domain::program::{CloseProgram, Program, ProgramCommand, ReviseTerms};
use referrals_domain::terms;
use referrals_domain::values::{Currency, Hours, ValueError};
use referrals_domain::DomainError;
use referrals_store::application::{AppError, NewProgram};
use referrals_store::event_store::{CommandMetadata, Executed};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ambassadors::AmbassadorKind;
use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{
    created, cursor, database_error, parse_id, query_error, respond, IfMatch, Page, PageQuery,
};
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_program, list_programs))
        .routes(routes!(get_program))
        .routes(routes!(revise_program_terms))
        .routes(routes!(close_program))
}

/// A new program.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProgramRequest {
    /// Display name, 1 to 200 characters on one line.
    pub name: String,
    /// ISO 4217 code of the bonus currency, such as `USD` (the default).
    pub currency: Option<String>,
    /// The first version of the terms.
    pub terms: TermsInput,
}

/// Program terms as a client sends them; omitted fields get the documented defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermsInput {
    /// The milestones that earn a bonus, at least one.
    pub bonus_schedule: Vec<MilestoneInput>,
    /// Days during which a referral owns its candidate (default 180).
    pub attribution_window_days: Option<u32>,
    /// Days after the referral by which a hire must be recorded to earn a bonus (default:
    /// the attribution window).
    pub hire_deadline_days: Option<u32>,
    /// Days back in which an earlier contact makes a referral ineligible (default 365).
    pub prior_contact_lookback_days: Option<u32>,
    /// Ambassador kinds that can earn a bonus (default: all except `agency_staff`).
    pub eligible_ambassador_kinds: Option<Vec<AmbassadorKind>>,
    /// Maximum number of paid bonuses per ambassador in a rolling 12 months (default: none).
    pub annual_bonus_cap: Option<u32>,
    /// Days a placement must last for unpaid milestones to stay payable (default: none).
    pub guarantee_days: Option<u32>,
    /// Whether a payout is forfeited when the ambassador is deactivated before approval
    /// (default false).
    pub referrer_must_be_active: Option<bool>,
}

/// One milestone of a bonus schedule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneInput {
    /// The event that makes the milestone due.
    pub trigger: Trigger,
    /// 0 for `hired`, hours for `hours_worked`, whole days for `days_employed`; a decimal
    /// string or number with at most two decimals.
    #[schema(value_type = String, example = "160")]
    pub threshold: Hours,
    /// The bonus in minor units of the program currency, such as 50000 for 500.00.
    pub amount: i64,
    /// The recipient of the bonus (default `ambassador`).
    pub recipient: Option<Recipient>,
}

/// The event that makes a milestone due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The candidate is hired.
    Hired,
    /// Total hours worked reach the threshold.
    HoursWorked,
    /// The placement has lasted the threshold in days.
    DaysEmployed,
}

/// The recipient of a milestone's bonus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The ambassador who referred the candidate.
    Ambassador,
    /// The referred candidate, in a two-sided program.
    Candidate,
}

/// A program with the terms in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgramView {
    /// The program's id.
    pub id: Uuid,
    /// The program's version, also sent as the `ETag`.
    pub version: u64,
    /// Display name.
    pub name: String,
    /// ISO 4217 code of the bonus currency.
    pub currency: String,
    /// Version of the terms in force, starting at 1.
    pub terms_version: u32,
    /// The terms in force; referrals keep the version in force when they were submitted.
    pub terms: TermsView,
    /// Whether the program accepts referrals.
    pub open: bool,
}

/// Program terms with every default filled in.
#[derive(Debug, Serialize, ToSchema)]
pub struct TermsView {
    /// The milestones that earn a bonus.
    pub bonus_schedule: Vec<MilestoneView>,
    /// Days during which a referral owns its candidate.
    pub attribution_window_days: u32,
    /// Days after the referral by which a hire must be recorded to earn a bonus.
    pub hire_deadline_days: u32,
    /// Days back in which an earlier contact makes a referral ineligible.
    pub prior_contact_lookback_days: u32,
    /// Ambassador kinds that can earn a bonus.
    pub eligible_ambassador_kinds: Vec<AmbassadorKind>,
    /// Maximum number of paid bonuses per ambassador in a rolling 12 months, if any.
    pub annual_bonus_cap: Option<u32>,
    /// Days a placement must last for unpaid milestones to stay payable, if any.
    pub guarantee_days: Option<u32>,
    /// Whether a payout is forfeited when the ambassador is deactivated before approval.
    pub referrer_must_be_active: bool,
}

/// One milestone of a bonus schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct MilestoneView {
    /// The event that makes the milestone due.
    pub trigger: Trigger,
    /// Hours or days with two decimals, such as `"160.00"`.
    pub threshold: String,
    /// The bonus in minor units of the program currency.
    pub amount: i64,
    /// The recipient of the bonus.
    pub recipient: Recipient,
}

/// Creates a program with version 1 of its terms.
#[utoipa::path(post, path = "/v1/programs", tag = "programs", security(("bearer" = [])),
    request_body = CreateProgramRequest,
    responses(
        (status = 201, description = "The program was created", body = ProgramView,
            headers(("ETag" = String, description = "The program's version"),
                    ("Location" = String, description = "The program's URL"))),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only agency admins create programs", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_program(
    State(state): State<AppState>,
    caller: Authenticated,
    StrictJson(request): StrictJson<CreateProgramRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::CreateProgram)?;

    let program = request.into_new_program()?;

    let executed = state
        .app
        .create_program(&permitted.metadata(), program)
        .await?;
    let view = ProgramView::new(&executed.aggregate, executed.version)?;
    tracing::info!(program_id = %view.id, "program created");

    created(&format!("/v1/programs/{}", view.id), executed.version, view)
}

/// Lists the agency's programs, oldest first.
#[utoipa::path(get, path = "/v1/programs", tag = "programs", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of programs", body = Page<ProgramView>),
        (status = 400, description = "Invalid `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's roles do not allow reading programs", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_programs(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<ProgramView>>, ApiError> {
    let permitted = caller.authorize(Action::ReadPrograms)?;

    let Query(page) = query.map_err(query_error)?;
    let limit = page.limit()?;
    let after = page.position::<ProgramPosition>()?;

    let rows: Vec<ProgramRow> = sqlx::query_as(
        "SELECT program_id, name, currency, terms_version, terms, open, version, created_at
           FROM read_models.programs
          WHERE agency_id = $1
            AND ($2::timestamptz IS NULL OR (created_at, program_id) > ($2, $3))
          ORDER BY created_at, program_id
          LIMIT $4",
    )
    .bind(permitted.agency_id.0)
    .bind(after.as_ref().map(|position| position.created_at))
    .bind(after.as_ref().map(|position| position.id))
    .bind(limit + 1)
    .fetch_all(&state.read_pool)
    .await
    .map_err(database_error)?;

    Ok(Json(program_page(rows, limit)))
}

/// Reads one program with its terms.
#[utoipa::path(get, path = "/v1/programs/{id}", tag = "programs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The program's id")),
    responses(
        (status = 200, description = "The program", body = ProgramView,
            headers(("ETag" = String, description = "The program's version"))),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's roles do not allow reading programs", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program in the caller's agency", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_program(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ReadPrograms)?;

    let program_id = ProgramId(parse_id("id", &id)?);

    let (program, version) = state
        .app
        .programs
        .read(permitted.agency_id, &program_id.to_string())
        .await
        .map_err(AppError::from)?
        .ok_or_else(|| ApiError::not_found("program"))?;

    respond(version, ProgramView::new(&program, version)?)
}

/// Replaces the program's terms with a new version. Referrals submitted earlier keep the
/// terms they were submitted under.
#[utoipa::path(put, path = "/v1/programs/{id}/terms", tag = "programs", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The program's id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the program as last read; the change is made only at that version"),
    ),
    request_body = TermsInput,
    responses(
        (status = 200, description = "The program with its new terms", body = ProgramView,
            headers(("ETag" = String, description = "The program's new version"))),
        (status = 400, description = "The id is not a UUID, the body is not JSON, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only agency admins change programs", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The program is closed, or changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revise_program_terms(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<TermsInput>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ChangeProgram)?;

    let program_id = ProgramId(parse_id("id", &id)?);
    // The body is the terms object itself, so a field path drops the `terms.` prefix
    // that the domain's validation reports.
    let terms = request
        .into_terms()
        .map_err(|error| without_prefix(error, "terms."))?;
    let metadata = permitted.metadata();
    let command = ReviseTerms {
        terms,
        at: metadata.recorded_at,
    };

    let executed = execute(
        &state,
        program_id,
        command.into(),
        &metadata,
        expected_version,
    )
    .await?;
    tracing::info!(%program_id, version = executed.version, "program terms revised");

    respond(
        executed.version,
        ProgramView::new(&executed.aggregate, executed.version)?,
    )
}

/// Closes the program to new referrals and term revisions. Closing a closed program
/// changes nothing.
#[utoipa::path(post, path = "/v1/programs/{id}/close", tag = "programs", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The program's id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the program as last read; the change is made only at that version"),
    ),
    responses(
        (status = 200, description = "The closed program", body = ProgramView,
            headers(("ETag" = String, description = "The program's new version"))),
        (status = 400, description = "The id is not a UUID, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only agency admins change programs", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The program changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn close_program(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ChangeProgram)?;

    let program_id = ProgramId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = CloseProgram {
        at: metadata.recorded_at,
    };

    let executed = execute(
        &state,
        program_id,
        command.into(),
        &metadata,
        expected_version,
    )
    .await?;
    tracing::info!(%program_id, "program closed");

    respond(
        executed.version,
        ProgramView::new(&executed.aggregate, executed.version)?,
    )
}

async fn execute(
    state: &AppState,
    program_id: ProgramId,
    command: ProgramCommand,
    metadata: &CommandMetadata,
    expected_version: Option<usize>,
) -> Result<Executed<Program>, ApiError> {
    Ok(state
        .app
        .programs
        .execute(&program_id.to_string(), command, metadata, expected_version)
        .await
        .map_err(AppError::from)?)
}

impl CreateProgramRequest {
    fn into_new_program(self) -> Result<NewProgram, ApiError> {
        let currency = match &self.currency {
            Some(code) => Currency::parse(code).map_err(DomainError::from)?,
            None => Currency::USD,
        };
        Ok(NewProgram {
            name: self.name,
            currency,
            terms: self.terms.into_terms().map_err(DomainError::from)?,
        })
    }
}

impl TermsInput {
    /// Builds the domain terms with the defaults filled in, and validates them.
    fn into_terms(self) -> Result<terms::Terms, ValueError> {
        let schedule = self
            .bonus_schedule
            .into_iter()
            .map(|milestone| terms::Milestone {
                trigger: milestone.trigger.into(),
                threshold: milestone.threshold,
                amount: milestone.amount,
                recipient: milestone
                    .recipient
                    .map_or(terms::Recipient::Ambassador, Into::into),
            })
            .collect();
        let mut terms = terms::Terms::with_schedule(schedule);
        if let Some(days) = self.attribution_window_days {
            terms.attribution_window_days = days;
            terms.hire_deadline_days = days;
        }
        if let Some(days) = self.hire_deadline_days {
            terms.hire_deadline_days = days;
        }
        if let Some(days) = self.prior_contact_lookback_days {
            terms.prior_contact_lookback_days = days;
        }
        if let Some(kinds) = self.eligible_ambassador_kinds {
            terms.eligible_ambassador_kinds = kinds.into_iter().map(Into::into).collect();
        }
        terms.annual_bonus_cap = self.annual_bonus_cap;
        terms.guarantee_days = self.guarantee_days;
        terms.referrer_must_be_active = self.referrer_must_be_active.unwrap_or(false);
        terms.validate()?;
        Ok(terms)
    }
}

/// Reports a rejected terms field under its path in a body that is the terms object.
fn without_prefix(error: ValueError, prefix: &str) -> ApiError {
    let field = error
        .field
        .strip_prefix(prefix)
        .unwrap_or(&error.field)
        .to_owned();
    ApiError::from(DomainError::from(error.for_field(field)))
}

impl ProgramView {
    fn new(program: &Program, version: usize) -> Result<Self, ApiError> {
        let (Some(id), Some(name), Some(currency), Some(terms_version), Some(terms)) = (
            program.program_id(),
            program.name(),
            program.currency(),
            program.terms_version(),
            program.terms(),
        ) else {
            return Err(ApiError::not_found("program"));
        };
        Ok(Self {
            id: id.0,
            version: version as u64,
            name: name.to_owned(),
            currency: currency.to_string(),
            terms_version,
            terms: TermsView::from(terms),
            open: program.is_open(),
        })
    }
}

impl From<&terms::Terms> for TermsView {
    fn from(terms: &terms::Terms) -> Self {
        Self {
            bonus_schedule: terms
                .bonus_schedule
                .iter()
                .map(|milestone| MilestoneView {
                    trigger: milestone.trigger.into(),
                    threshold: milestone.threshold.to_string(),
                    amount: milestone.amount,
                    recipient: milestone.recipient.into(),
                })
                .collect(),
            attribution_window_days: terms.attribution_window_days,
            hire_deadline_days: terms.hire_deadline_days,
            prior_contact_lookback_days: terms.prior_contact_lookback_days,
            eligible_ambassador_kinds: terms
                .eligible_ambassador_kinds
                .iter()
                .copied()
                .map(Into::into)
                .collect(),
            annual_bonus_cap: terms.annual_bonus_cap,
            guarantee_days: terms.guarantee_days,
            referrer_must_be_active: terms.referrer_must_be_active,
        }
    }
}

impl From<Trigger> for terms::Trigger {
    fn from(trigger: Trigger) -> Self {
        match trigger {
            Trigger::Hired => Self::Hired,
            Trigger::HoursWorked => Self::HoursWorked,
            Trigger::DaysEmployed => Self::DaysEmployed,
        }
    }
}

impl From<terms::Trigger> for Trigger {
    fn from(trigger: terms::Trigger) -> Self {
        match trigger {
            terms::Trigger::Hired => Self::Hired,
            terms::Trigger::HoursWorked => Self::HoursWorked,
            terms::Trigger::DaysEmployed => Self::DaysEmployed,
        }
    }
}

impl From<Recipient> for terms::Recipient {
    fn from(recipient: Recipient) -> Self {
        match recipient {
            Recipient::Ambassador => Self::Ambassador,
            Recipient::Candidate => Self::Candidate,
        }
    }
}

impl From<terms::Recipient> for Recipient {
    fn from(recipient: terms::Recipient) -> Self {
        match recipient {
            terms::Recipient::Ambassador => Self::Ambassador,
            terms::Recipient::Candidate => Self::Candidate,
        }
    }
}

/// A row of `read_models.programs`.
#[derive(sqlx::FromRow)]
struct ProgramRow {
    program_id: Uuid,
    name: String,
    currency: String,
    terms_version: i32,
    terms: sqlx::types::Json<terms::Terms>,
    open: bool,
    version: i64,
    created_at: DateTime<Utc>,
}

/// The position of the last program on a page, encoded in the cursor.
#[derive(Serialize, Deserialize)]
struct ProgramPosition {
    created_at: DateTime<Utc>,
    id: Uuid,
}

/// Turns `limit + 1` rows into a page of at most `limit` items, with a cursor when the
/// extra row shows that another page follows.
fn program_page(mut rows: Vec<ProgramRow>, limit: i64) -> Page<ProgramView> {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = rows.last().filter(|_| has_more).map(|last| {
        cursor(&ProgramPosition {
            created_at: last.created_at,
            id: last.program_id,
        })
    });
    let items = rows
        .into_iter()
        .map(|row| ProgramView {
            id: row.program_id,
            version: u64::try_from(row.version).unwrap_or_default(),
            name: row.name,
            currency: row.currency,
            terms_version: u32::try_from(row.terms_version).unwrap_or_default(),
            terms: TermsView::from(&row.terms.0),
            open: row.open,
        })
        .collect();
    Page { items, next_cursor }
}
