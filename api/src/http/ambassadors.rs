//! The `ambassadors` endpoints: enroll, read, list, update and deactivate the people who
//! refer candidates.
//!
//! Contact details are stored sealed under each ambassador's data key and opened only to
//! build a response. An ambassador whose data key was destroyed by an erasure is shown
//! with the name `[erased]` and no e-mail or phone.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use referrals_domain::ambassador::{Ambassador, AmbassadorCommand, DeactivateAmbassador};
use referrals_domain::ids::{AgencyId, AmbassadorId};
use referrals_domain::terms;
use referrals_domain::values::{EmailAddress, PersonName, PhoneNumber, Sealed, ValueError};
use referrals_domain::DomainError;
use referrals_store::application::{AmbassadorChanges, AppError, NewAmbassador};
use referrals_store::personal::{ContactDetails, OpenedDetails, SealedDetails};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::access_log::{record_access, record_accesses, SubjectType};
use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{created, database_error, parse_id, query_error, respond};
use super::conventions::{cursor, IfMatch, Page, PageQuery};
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::AppState;

/// The name shown in place of a person whose personal data was erased.
pub const ERASED_NAME: &str = "[erased]";

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(enroll_ambassador, list_ambassadors))
        .routes(routes!(get_ambassador, update_ambassador))
        .routes(routes!(deactivate_ambassador))
}

/// Kind of ambassador.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AmbassadorKind {
    /// A worker the agency has placed.
    FieldWorker,
    /// A worker the agency placed in the past.
    FormerWorker,
    /// Someone outside the agency.
    External,
    /// A recruiter or branch employee: recorded as a source, never paid a bonus.
    AgencyStaff,
}

/// A new ambassador.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollAmbassadorRequest {
    /// Full name, 1 to 200 characters on one line.
    pub name: String,
    /// E-mail address; stored trimmed and lower-cased.
    pub email: Option<String>,
    /// Phone number with country code, or a 10-digit North American number.
    pub phone: Option<String>,
    /// Kind of ambassador.
    pub kind: AmbassadorKind,
    /// The agency's own id for the person, such as a payroll number.
    pub external_id: Option<String>,
    /// Whether the person agreed to text messages (default false).
    pub sms_consent: Option<bool>,
}

/// Changes to an ambassador; omitted fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAmbassadorRequest {
    /// New full name.
    pub name: Option<String>,
    /// New e-mail address.
    pub email: Option<String>,
    /// New phone number.
    pub phone: Option<String>,
    /// New kind.
    pub kind: Option<AmbassadorKind>,
    /// New external id.
    pub external_id: Option<String>,
    /// New SMS consent; `false` records an opt-out, which takes effect at once.
    pub sms_consent: Option<bool>,
}

/// An ambassador with their contact details.
#[derive(Debug, Serialize, ToSchema)]
pub struct AmbassadorView {
    /// The ambassador's id.
    pub id: Uuid,
    /// The ambassador's version, also sent as the `ETag`.
    pub version: u64,
    /// Full name, or `[erased]` after an erasure.
    pub name: String,
    /// E-mail address, if known and not erased.
    pub email: Option<String>,
    /// Phone number in E.164 form, if known and not erased.
    pub phone: Option<String>,
    /// Whether the person's personal data was erased.
    pub erased: bool,
    /// Kind of ambassador.
    pub kind: AmbassadorKind,
    /// The agency's own id for the person.
    pub external_id: Option<String>,
    /// Whether the person agreed to text messages.
    pub sms_consent: bool,
    /// Whether the ambassador may refer candidates.
    pub active: bool,
}

/// Enrolls an ambassador.
#[utoipa::path(post, path = "/v1/ambassadors", tag = "ambassadors", security(("bearer" = [])),
    request_body = EnrollAmbassadorRequest,
    responses(
        (status = 201, description = "The ambassador was enrolled", body = AmbassadorView,
            headers(("ETag" = String, description = "The ambassador's version"),
                    ("Location" = String, description = "The ambassador's URL"))),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage ambassadors", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enroll_ambassador(
    State(state): State<AppState>,
    caller: Authenticated,
    StrictJson(request): StrictJson<EnrollAmbassadorRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageAmbassadors)?;

    let ambassador = request.into_new_ambassador().map_err(DomainError::from)?;

    let executed = state
        .app
        .enroll_ambassador(&permitted.metadata(), ambassador)
        .await?;
    let view = ambassador_view(
        &state,
        permitted.agency_id,
        &executed.aggregate,
        executed.version,
    )
    .await?;
    tracing::info!(ambassador_id = %view.id, "ambassador enrolled");
    let enrolled = [view.id];
    record_accesses(
        &state,
        &permitted,
        SubjectType::Ambassador,
        &enrolled,
        "POST /v1/ambassadors",
    )
    .await?;

    created(
        &format!("/v1/ambassadors/{}", view.id),
        executed.version,
        view,
    )
}

/// Lists the agency's ambassadors, in the order they enrolled.
#[utoipa::path(get, path = "/v1/ambassadors", tag = "ambassadors", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of ambassadors", body = Page<AmbassadorView>),
        (status = 400, description = "Invalid `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters read ambassadors", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_ambassadors(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<AmbassadorView>>, ApiError> {
    let permitted = caller.authorize(Action::ReadAmbassadors)?;

    let Query(page) = query.map_err(query_error)?;
    let limit = page.limit()?;
    let after = page.position::<AmbassadorPosition>()?;

    let rows: Vec<AmbassadorRow> = sqlx::query_as(
        "SELECT ambassador_id, kind, active, name_sealed, email_sealed, phone_sealed,
                external_id, sms_consent, version, enrolled_at
           FROM read_models.ambassadors
          WHERE agency_id = $1
            AND ($2::timestamptz IS NULL OR (enrolled_at, ambassador_id) > ($2, $3))
          ORDER BY enrolled_at, ambassador_id
          LIMIT $4",
    )
    .bind(permitted.agency_id.0)
    .bind(after.as_ref().map(|position| position.enrolled_at))
    .bind(after.as_ref().map(|position| position.id))
    .bind(limit + 1)
    .fetch_all(&state.read_pool)
    .await
    .map_err(database_error)?;

    let page = ambassador_page(&state, permitted.agency_id, rows, limit).await?;
    let ambassadors: Vec<Uuid> = page.items.iter().map(|item| item.id).collect();
    let endpoint = "GET /v1/ambassadors";
    record_accesses(
        &state,
        &permitted,
        SubjectType::Ambassador,
        &ambassadors,
        endpoint,
    )
    .await?;
    Ok(Json(page))
}

/// Reads one ambassador with their contact details.
#[utoipa::path(get, path = "/v1/ambassadors/{id}", tag = "ambassadors", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The ambassador's id")),
    responses(
        (status = 200, description = "The ambassador", body = AmbassadorView,
            headers(("ETag" = String, description = "The ambassador's version"))),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters read ambassadors", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ambassador in the caller's agency", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_ambassador(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ReadAmbassadors)?;

    let ambassador_id = AmbassadorId(parse_id("id", &id)?);

    let (ambassador, version) = state
        .app
        .ambassadors
        .read(permitted.agency_id, &ambassador_id.to_string())
        .await
        .map_err(AppError::from)?
        .ok_or_else(|| ApiError::not_found("ambassador"))?;

    let view = ambassador_view(&state, permitted.agency_id, &ambassador, version).await?;
    let endpoint = "GET /v1/ambassadors/{id}";
    record_access(
        &state,
        &permitted,
        SubjectType::Ambassador,
        ambassador_id.0,
        endpoint,
    )
    .await?;
    respond(version, view)
}

/// Changes an ambassador's contact details, kind, external id or SMS consent. Only the
/// fields sent change; an e-mail address or phone number cannot be removed, only replaced.
#[utoipa::path(patch, path = "/v1/ambassadors/{id}", tag = "ambassadors", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The ambassador's id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the ambassador as last read; the change is made only at that version"),
    ),
    request_body = UpdateAmbassadorRequest,
    responses(
        (status = 200, description = "The changed ambassador", body = AmbassadorView,
            headers(("ETag" = String, description = "The ambassador's new version"))),
        (status = 400, description = "The id is not a UUID, the body is not JSON, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage ambassadors", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ambassador in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The ambassador changed since the If-Match version, or was erased", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_ambassador(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
    StrictJson(request): StrictJson<UpdateAmbassadorRequest>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageAmbassadors)?;

    let ambassador_id = AmbassadorId(parse_id("id", &id)?);
    let changes = request.into_changes().map_err(DomainError::from)?;

    let executed = state
        .app
        .update_ambassador(
            &permitted.metadata(),
            ambassador_id,
            changes,
            expected_version,
        )
        .await?;
    tracing::info!(%ambassador_id, version = executed.version, "ambassador updated");

    let view = ambassador_view(
        &state,
        permitted.agency_id,
        &executed.aggregate,
        executed.version,
    )
    .await?;
    let changed = [ambassador_id.0];
    let endpoint = "PATCH /v1/ambassadors/{id}";
    record_accesses(
        &state,
        &permitted,
        SubjectType::Ambassador,
        &changed,
        endpoint,
    )
    .await?;
    respond(executed.version, view)
}

/// Deactivates an ambassador, who then cannot refer candidates. Deactivating an inactive
/// ambassador changes nothing.
#[utoipa::path(post, path = "/v1/ambassadors/{id}/deactivate", tag = "ambassadors", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The ambassador's id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the ambassador as last read; the change is made only at that version"),
    ),
    responses(
        (status = 200, description = "The deactivated ambassador", body = AmbassadorView,
            headers(("ETag" = String, description = "The ambassador's new version"))),
        (status = 400, description = "The id is not a UUID, or If-Match is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only recruiters manage ambassadors", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ambassador in the caller's agency", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The ambassador changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn deactivate_ambassador(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    IfMatch(expected_version): IfMatch,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ManageAmbassadors)?;

    let ambassador_id = AmbassadorId(parse_id("id", &id)?);
    let metadata = permitted.metadata();
    let command = AmbassadorCommand::DeactivateAmbassador(DeactivateAmbassador {
        at: metadata.recorded_at,
    });

    let executed = state
        .app
        .ambassadors
        .execute(
            &ambassador_id.to_string(),
            command,
            &metadata,
            expected_version,
        )
        .await
        .map_err(AppError::from)?;
    tracing::info!(%ambassador_id, "ambassador deactivated");

    let view = ambassador_view(
        &state,
        permitted.agency_id,
        &executed.aggregate,
        executed.version,
    )
    .await?;
    let deactivated = [ambassador_id.0];
    let endpoint = "POST /v1/ambassadors/{id}/deactivate";
    record_accesses(
        &state,
        &permitted,
        SubjectType::Ambassador,
        &deactivated,
        endpoint,
    )
    .await?;
    respond(executed.version, view)
}

impl EnrollAmbassadorRequest {
    fn into_new_ambassador(self) -> Result<NewAmbassador, ValueError> {
        Ok(NewAmbassador {
            contact: ContactDetails {
                name: PersonName::parse(&self.name)?,
                email: self.email.as_deref().map(EmailAddress::parse).transpose()?,
                phone: self.phone.as_deref().map(PhoneNumber::parse).transpose()?,
            },
            kind: self.kind.into(),
            external_id: self.external_id,
            sms_consent: self.sms_consent.unwrap_or(false),
        })
    }
}

impl UpdateAmbassadorRequest {
    fn into_changes(self) -> Result<AmbassadorChanges, ValueError> {
        Ok(AmbassadorChanges {
            name: self.name.as_deref().map(PersonName::parse).transpose()?,
            email: self.email.as_deref().map(EmailAddress::parse).transpose()?,
            phone: self.phone.as_deref().map(PhoneNumber::parse).transpose()?,
            kind: self.kind.map(Into::into),
            external_id: self.external_id,
            sms_consent: self.sms_consent,
        })
    }
}

/// Opens a subject's sealed contact details for a response.
///
/// # Errors
/// 503 when the key store is out of reach, 500 when a key or ciphertext does not open.
pub(super) async fn open_contact(
    state: &AppState,
    agency_id: AgencyId,
    subject_id: Uuid,
    sealed: &SealedDetails,
) -> Result<OpenedDetails, ApiError> {
    Ok(state
        .app
        .personal()
        .open_contact(agency_id, subject_id, sealed)
        .await
        .map_err(AppError::from)?)
}

async fn ambassador_view(
    state: &AppState,
    agency_id: AgencyId,
    ambassador: &Ambassador,
    version: usize,
) -> Result<AmbassadorView, ApiError> {
    let (Some(id), Some(kind), Some(name)) = (
        ambassador.ambassador_id(),
        ambassador.kind(),
        ambassador.name(),
    ) else {
        return Err(ApiError::not_found("ambassador"));
    };
    let sealed = SealedDetails {
        name: name.clone(),
        email: ambassador.email().cloned(),
        phone: ambassador.phone().cloned(),
    };
    let contact = open_contact(state, agency_id, id.0, &sealed).await?;
    Ok(AmbassadorView::new(
        AmbassadorFacts {
            id: id.0,
            version: version as u64,
            kind: kind.into(),
            external_id: ambassador.external_id().map(str::to_owned),
            sms_consent: ambassador.sms_consent(),
            active: ambassador.is_active(),
        },
        contact,
    ))
}

/// The fields of a view other than the contact details.
struct AmbassadorFacts {
    id: Uuid,
    version: u64,
    kind: AmbassadorKind,
    external_id: Option<String>,
    sms_consent: bool,
    active: bool,
}

impl AmbassadorView {
    fn new(facts: AmbassadorFacts, contact: OpenedDetails) -> Self {
        let (name, email, phone, erased) = match contact {
            OpenedDetails::Present { name, email, phone } => (name, email, phone, false),
            OpenedDetails::Erased => (ERASED_NAME.to_owned(), None, None, true),
        };
        Self {
            id: facts.id,
            version: facts.version,
            name,
            email,
            phone,
            erased,
            kind: facts.kind,
            external_id: facts.external_id,
            sms_consent: facts.sms_consent,
            active: facts.active,
        }
    }
}

impl From<AmbassadorKind> for terms::AmbassadorKind {
    fn from(kind: AmbassadorKind) -> Self {
        match kind {
            AmbassadorKind::FieldWorker => Self::FieldWorker,
            AmbassadorKind::FormerWorker => Self::FormerWorker,
            AmbassadorKind::External => Self::External,
            AmbassadorKind::AgencyStaff => Self::AgencyStaff,
        }
    }
}

impl From<terms::AmbassadorKind> for AmbassadorKind {
    fn from(kind: terms::AmbassadorKind) -> Self {
        match kind {
            terms::AmbassadorKind::FieldWorker => Self::FieldWorker,
            terms::AmbassadorKind::FormerWorker => Self::FormerWorker,
            terms::AmbassadorKind::External => Self::External,
            terms::AmbassadorKind::AgencyStaff => Self::AgencyStaff,
        }
    }
}

/// A row of `read_models.ambassadors`.
#[derive(sqlx::FromRow)]
struct AmbassadorRow {
    ambassador_id: Uuid,
    kind: String,
    active: bool,
    name_sealed: String,
    email_sealed: Option<String>,
    phone_sealed: Option<String>,
    external_id: Option<String>,
    sms_consent: bool,
    version: i64,
    enrolled_at: DateTime<Utc>,
}

/// The position of the last ambassador on a page, encoded in the cursor.
#[derive(Serialize, Deserialize)]
struct AmbassadorPosition {
    enrolled_at: DateTime<Utc>,
    id: Uuid,
}

/// Turns `limit + 1` rows into a page of at most `limit` views, opening each name.
async fn ambassador_page(
    state: &AppState,
    agency_id: AgencyId,
    mut rows: Vec<AmbassadorRow>,
    limit: i64,
) -> Result<Page<AmbassadorView>, ApiError> {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = rows.last().filter(|_| has_more).map(|last| {
        cursor(&AmbassadorPosition {
            enrolled_at: last.enrolled_at,
            id: last.ambassador_id,
        })
    });

    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let sealed = SealedDetails {
            name: Sealed(row.name_sealed),
            email: row.email_sealed.map(Sealed),
            phone: row.phone_sealed.map(Sealed),
        };
        let contact = open_contact(state, agency_id, row.ambassador_id, &sealed).await?;
        let kind = stored_kind(&row.kind)?;
        let facts = AmbassadorFacts {
            id: row.ambassador_id,
            version: u64::try_from(row.version).unwrap_or_default(),
            kind,
            external_id: row.external_id,
            sms_consent: row.sms_consent,
            active: row.active,
        };
        items.push(AmbassadorView::new(facts, contact));
    }
    Ok(Page { items, next_cursor })
}

/// Reads a kind as the projection stores it (`field_worker`, ...).
fn stored_kind(text: &str) -> Result<AmbassadorKind, ApiError> {
    use serde::de::IntoDeserializer;
    let deserializer: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        text.into_deserializer();
    AmbassadorKind::deserialize(deserializer)
        .map_err(|error| ApiError::internal(&format!("read_models.ambassadors: {error}")))
}
