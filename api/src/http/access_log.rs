//! The access log: one append-only row for each data subject whose decrypted personal
//! fields a response revealed (single reads, lists, audit history and state, the access
//! review), and the endpoint that lists them for reviewers.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use referrals_store::event_store::{Actor, CommandMetadata};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Authenticated;
use super::authorization::{Action, Permitted};
use super::conventions::{cursor, database_error, parse_id, query_error, Page, PageQuery};
use super::problem::{ApiError, Problem};
use super::AppState;

/// Whose personal data a response revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    /// The candidate of a referral; the subject id is the referral's id.
    Candidate,
    /// An ambassador; the subject id is the ambassador's id.
    Ambassador,
    /// A user of the agency; the subject id is the user's id.
    User,
}

impl SubjectType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Ambassador => "ambassador",
            Self::User => "user",
        }
    }
}

/// Records that the caller of `permitted` was shown `subject_id`'s personal data through
/// `endpoint` (method and route template, such as `GET /v1/referrals/{id}`).
///
/// # Errors
/// Returns 503 or 500 when the row cannot be written. Callers then fail the read rather
/// than reveal personal data without a log entry.
pub async fn record_access(
    state: &AppState,
    permitted: &Permitted,
    subject_type: SubjectType,
    subject_id: Uuid,
    endpoint: &str,
) -> Result<(), ApiError> {
    record_accesses(state, permitted, subject_type, &[subject_id], endpoint).await
}

/// Records one access per subject of a list, in one statement.
///
/// # Errors
/// As [`record_access`].
pub async fn record_accesses(
    state: &AppState,
    permitted: &Permitted,
    subject_type: SubjectType,
    subject_ids: &[Uuid],
    endpoint: &str,
) -> Result<(), ApiError> {
    record_accesses_as(
        state,
        &permitted.metadata(),
        subject_type,
        subject_ids,
        endpoint,
    )
    .await
}

/// Records accesses for the caller named in a command's metadata, for command responses
/// that show the changed subject's personal data.
///
/// # Errors
/// As [`record_access`]; 500 when the metadata names no user.
pub async fn record_accesses_as(
    state: &AppState,
    metadata: &CommandMetadata,
    subject_type: SubjectType,
    subject_ids: &[Uuid],
    endpoint: &str,
) -> Result<(), ApiError> {
    if subject_ids.is_empty() {
        return Ok(());
    }
    let Actor::User { id, role } = &metadata.actor else {
        return Err(ApiError::internal(
            &"an access by a job cannot be logged as a user's",
        ));
    };
    sqlx::query(
        "INSERT INTO access_log
             (id, agency_id, user_id, role, subject_type, subject_id, endpoint, request_id)
         SELECT gen_random_uuid(), $1, $2, $3, $4, subject_id, $5, $6
           FROM unnest($7::uuid[]) AS subject_id",
    )
    .bind(metadata.agency_id.0)
    .bind(id.0)
    .bind(role)
    .bind(subject_type.as_str())
    .bind(endpoint)
    .bind(metadata.request_id)
    .bind(subject_ids)
    .execute(&state.pool)
    .await
    .map_err(database_error)?;
    Ok(())
}

/// Routes of the access log.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_access_log))
}

/// Filters of the access log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessLogQuery {
    /// Only reads of this subject (referral, ambassador or user id).
    pub subject_id: Option<String>,
    /// Only reads by this user.
    pub user_id: Option<String>,
}

/// One read of personal data.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessLogEntry {
    /// The entry's id.
    pub id: Uuid,
    /// Who read.
    pub user_id: Uuid,
    /// The role they read in.
    pub role: String,
    /// Whose data was read.
    pub subject_type: SubjectType,
    /// The subject's id.
    pub subject_id: Uuid,
    /// Method and route template of the read.
    pub endpoint: String,
    /// The id of the request, as in its `X-Request-Id` header.
    pub request_id: Uuid,
    /// When the read happened (UTC).
    pub accessed_at: DateTime<Utc>,
}

/// An `access_log` row as selected by [`list_access_log`].
type AccessLogRow = (
    Uuid,
    Uuid,
    String,
    String,
    Uuid,
    String,
    Uuid,
    DateTime<Utc>,
);

/// Lists who read personal data in the agency, newest first.
#[utoipa::path(get, path = "/v1/audit/access-log", tag = "audit", security(("bearer" = [])),
    params(AccessLogQuery, PageQuery),
    responses(
        (status = 200, description = "One page of reads, newest first", body = Page<AccessLogEntry>),
        (status = 400, description = "A filter, limit or cursor is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only compliance auditors and agency admins review access", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_access_log(
    State(state): State<AppState>,
    caller: Authenticated,
    filters: Result<Query<AccessLogQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<AccessLogEntry>>, ApiError> {
    let permitted = caller.authorize(Action::ReviewAccess)?;

    let Query(filters) = filters.map_err(query_error)?;
    let Query(page) = page.map_err(query_error)?;
    let subject_id = filters
        .subject_id
        .as_deref()
        .map(|text| parse_id("subject_id", text))
        .transpose()?;
    let user_id = filters
        .user_id
        .as_deref()
        .map(|text| parse_id("user_id", text))
        .transpose()?;
    let limit = page.limit()?;
    let after: Option<(DateTime<Utc>, Uuid)> = page.position()?;

    let rows: Vec<AccessLogRow> = sqlx::query_as(
        "SELECT id, user_id, role, subject_type, subject_id, endpoint, request_id, accessed_at
               FROM access_log
              WHERE agency_id = $1
                AND ($2::uuid IS NULL OR subject_id = $2)
                AND ($3::uuid IS NULL OR user_id = $3)
                AND ($4::timestamptz IS NULL OR (accessed_at, id) < ($4, $5))
              ORDER BY accessed_at DESC, id DESC
              LIMIT $6",
    )
    .bind(permitted.agency_id.0)
    .bind(subject_id)
    .bind(user_id)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await
    .map_err(database_error)?;

    let mut items: Vec<AccessLogEntry> = rows
        .into_iter()
        .map(
            |(id, user_id, role, subject_type, subject_id, endpoint, request_id, accessed_at)| {
                AccessLogEntry {
                    id,
                    user_id,
                    role,
                    subject_type: match subject_type.as_str() {
                        "candidate" => SubjectType::Candidate,
                        "ambassador" => SubjectType::Ambassador,
                        _ => SubjectType::User,
                    },
                    subject_id,
                    endpoint,
                    request_id,
                    accessed_at,
                }
            },
        )
        .collect();
    let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        items.pop();
        items
            .last()
            .map(|last| cursor(&(last.accessed_at, last.id)))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
