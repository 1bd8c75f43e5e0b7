//! Timesheet imports. `POST /v1/timesheets` stages a CSV file of weekly or cumulative
//! hours and returns at once. A background worker applies the rows, and
//! `GET /v1/timesheets/{id}` shows its progress and each row's outcome.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Authenticated;
use super::authorization::{Action, Permitted};
use super::conventions::{cursor, database_error, path_id, query_error, PageQuery};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::imports::csv_rows::TimesheetFormat;
use crate::imports::timesheets::{self, Uploader};
use crate::imports::upload::{require_csv, Batch, CsvUpload};

/// Largest timesheet file accepted, in bytes: about a million rows.
pub const MAX_TIMESHEET_BYTES: usize = 64 * 1024 * 1024;

/// Most data rows in one timesheet file.
pub const MAX_TIMESHEET_ROWS: u64 = 1_000_000;

/// Returns the routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_timesheet))
        .routes(routes!(get_timesheet))
}

/// `202` body of a timesheet upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimesheetAccepted {
    /// Id of the import; read its progress at `/v1/timesheets/{id}`.
    pub id: Uuid,
    /// `weekly` or `cumulative`, as found from the header.
    #[schema(example = "weekly")]
    pub shape: String,
    /// Number of data rows in the file.
    pub rows_total: i64,
}

/// Outcome counts of an import.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct OutcomeCounts {
    /// New figures recorded.
    pub accepted: i64,
    /// Earlier figures replaced, or lower totals recorded for review.
    pub corrected: i64,
    /// Figures recorded before; nothing changed.
    pub unchanged: i64,
    /// Worker ids without a hired referral.
    pub unknown_worker: i64,
    /// Malformed rows and rows a rule rejected.
    pub invalid: i64,
}

/// One row of an import.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TimesheetRowView {
    /// Record number in the file, counting the header as 1.
    pub line: i64,
    /// The worker id of the row, when it parsed.
    pub external_worker_id: Option<String>,
    /// `week_ending` or `as_of`, when it parsed.
    pub date: Option<NaiveDate>,
    /// `hours` or `total_hours` with two decimals, when it parsed.
    #[schema(example = "37.50")]
    pub hours: Option<String>,
    /// `accepted`, `corrected`, `unchanged`, `unknown_worker` or `invalid`; absent while
    /// the row waits for the worker.
    pub outcome: Option<String>,
    /// Reason the row is invalid or a correction.
    pub reason: Option<String>,
    /// The referral the row was applied to.
    pub referral_id: Option<Uuid>,
    /// True for a cumulative total lower than before, which a recruiter must review.
    pub needs_review: bool,
}

/// An import's progress and one page of its rows in file order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimesheetImportView {
    /// Id of the import.
    pub id: Uuid,
    /// `weekly` or `cumulative`.
    pub shape: String,
    /// `processing` until every row has an outcome, then `completed`.
    #[schema(example = "processing")]
    pub status: String,
    /// Number of data rows in the file.
    pub rows_total: i64,
    /// Rows with an outcome.
    pub rows_processed: i64,
    /// Rows per outcome.
    pub outcomes: OutcomeCounts,
    /// When the file was uploaded.
    pub created_at: DateTime<Utc>,
    /// When the last row was applied.
    pub finished_at: Option<DateTime<Utc>>,
    /// One page of rows.
    pub items: Vec<TimesheetRowView>,
    /// Pass as `cursor` for the next page of rows; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Paging and filter of the rows of `GET /v1/timesheets/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimesheetRowsQuery {
    /// Only rows with this outcome, such as `invalid`.
    #[param(inline)]
    pub outcome: Option<OutcomeFilter>,
    /// Rows per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An outcome to filter rows by.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeFilter {
    /// New figures.
    Accepted,
    /// Corrections.
    Corrected,
    /// Repeated figures.
    Unchanged,
    /// Unknown worker ids.
    UnknownWorker,
    /// Invalid rows.
    Invalid,
}

impl OutcomeFilter {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Corrected => "corrected",
            Self::Unchanged => "unchanged",
            Self::UnknownWorker => "unknown_worker",
            Self::Invalid => "invalid",
        }
    }
}

/// Uploads a timesheet as `text/csv` (UTF-8, with or without a byte order mark, CRLF or
/// LF line ends, quoted fields allowed). The header decides the shape: weekly
/// `external_worker_id,week_ending,hours` or cumulative
/// `external_worker_id,as_of,total_hours`; other columns are ignored. Hours have at
/// most two decimals. The rows are applied in the background; re-importing a file
/// records nothing new, a changed week is a correction, and a lower cumulative total is
/// a correction flagged for review.
#[utoipa::path(post, path = "/v1/timesheets", tag = "imports",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv",
        description = "external_worker_id,week_ending,hours or external_worker_id,as_of,total_hours, then one row per line"),
    responses(
        (status = 202, description = "Staged; the rows are applied in the background", body = TimesheetAccepted,
            headers(("Location" = String, description = "The import's progress"))),
        (status = 400, description = "Missing or wrong header, or an unreadable body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a recruiter", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "More than 64 MiB or a million rows", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not text/csv", body = Problem, content_type = "application/problem+json")))]
pub async fn upload_timesheet(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ImportRecords)?;
    require_csv(&headers)?;

    // NOTE: with an Idempotency-Key header, the idempotency middleware reads the whole
    // body to hash it and rejects bodies over 1 MiB (413), so large files must be sent
    // without the key. Re-sending a file without it is safe: it records nothing new.
    let mut upload = CsvUpload::start(
        TimesheetFormat,
        body,
        MAX_TIMESHEET_BYTES,
        MAX_TIMESHEET_ROWS,
    );
    let Some(Batch::Header(columns)) = upload.next().await else {
        upload.finish().await?;
        return Err(ApiError::internal(
            &"the CSV reader stopped without a header or an error",
        ));
    };

    let import_id = Uuid::now_v7();
    let (rows_total, transaction) =
        stage(&state, &permitted, import_id, columns.shape, &mut upload).await?;
    // Committed only when the reader reached the end of the body: an upload cut off or
    // over a limit leaves nothing behind.
    upload.finish().await?;
    transaction.commit().await.map_err(database_error)?;
    tracing::info!(%import_id, rows_total, shape = columns.shape.as_str(), "timesheet staged");

    let location = HeaderValue::from_str(&format!("/v1/timesheets/{import_id}"))
        .map_err(|error| ApiError::internal(&error))?;
    let accepted = TimesheetAccepted {
        id: import_id,
        shape: columns.shape.as_str().to_owned(),
        rows_total: i64::try_from(rows_total).unwrap_or(i64::MAX),
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(accepted),
    )
        .into_response())
}

/// Stages every row of the upload in one transaction, so the worker never reads half a
/// file. Returns the number of rows and the transaction, uncommitted.
async fn stage<'a>(
    state: &'a AppState,
    permitted: &Permitted,
    import_id: Uuid,
    shape: crate::imports::csv_rows::TimesheetShape,
    upload: &mut CsvUpload<TimesheetFormat>,
) -> Result<(u64, sqlx::Transaction<'a, sqlx::Postgres>), ApiError> {
    let metadata = permitted.metadata();
    let uploader = Uploader {
        agency_id: permitted.agency_id,
        user_id: permitted.caller.caller.user_id,
        role: permitted.role.as_str().to_owned(),
        request_id: metadata.request_id,
        correlation_id: metadata.correlation_id,
    };
    let mut transaction = state.pool.begin().await.map_err(database_error)?;
    timesheets::create_import(&mut transaction, import_id, shape, &uploader)
        .await
        .map_err(database_error)?;

    let mut rows_total = 0_u64;
    while let Some(batch) = upload.next().await {
        let Batch::Rows(rows) = batch else { continue };
        rows_total += u64::try_from(rows.len()).unwrap_or(0);
        timesheets::stage_rows(&mut transaction, import_id, rows)
            .await
            .map_err(database_error)?;
    }

    timesheets::close_staging(&mut transaction, import_id, rows_total)
        .await
        .map_err(database_error)?;
    Ok((rows_total, transaction))
}

/// Returns an import's progress, its outcome counts and one page of its rows in file
/// order, optionally only those with one outcome.
#[utoipa::path(get, path = "/v1/timesheets/{id}", tag = "imports",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the import"), TimesheetRowsQuery),
    responses(
        (status = 200, description = "Progress and one page of rows", body = TimesheetImportView),
        (status = 400, description = "Invalid id, filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a recruiter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such import in the agency", body = Problem, content_type = "application/problem+json")))]
pub async fn get_timesheet(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<TimesheetRowsQuery>, QueryRejection>,
) -> Result<Json<TimesheetImportView>, ApiError> {
    let permitted = caller.authorize(Action::ImportRecords)?;

    let import_id = path_id(id, "id")?;
    let Query(query) = query.map_err(query_error)?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let limit = page.limit()?;
    let after: Option<i64> = page.position()?;

    let import: Option<ImportRow> = sqlx::query_as(
        "SELECT shape, rows_total, created_at, finished_at FROM timesheet_imports
          WHERE import_id = $1 AND agency_id = $2",
    )
    .bind(import_id)
    .bind(permitted.agency_id.0)
    .fetch_optional(&state.pool)
    .await
    .map_err(database_error)?;
    let Some(import) = import else {
        return Err(ApiError::not_found("timesheet import"));
    };
    let outcomes = outcome_counts(&state, import_id).await?;

    let mut items: Vec<TimesheetRowView> = sqlx::query_as(
        "SELECT line, external_worker_id, period_date AS date,
                to_char(hours / 100.0, 'FM9999999990.00') AS hours,
                outcome, reason, referral_id, needs_review
           FROM timesheet_rows
          WHERE import_id = $1
            AND ($2::text IS NULL OR outcome = $2)
            AND ($3::bigint IS NULL OR line > $3)
          ORDER BY line
          LIMIT $4",
    )
    .bind(import_id)
    .bind(query.outcome.map(OutcomeFilter::as_str))
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await
    .map_err(database_error)?;
    let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        items.truncate(usize::try_from(limit).unwrap_or(0));
        items.last().map(|row| cursor(&row.line))
    } else {
        None
    };

    let rows_processed = outcomes.accepted
        + outcomes.corrected
        + outcomes.unchanged
        + outcomes.unknown_worker
        + outcomes.invalid;
    Ok(Json(TimesheetImportView {
        id: import_id,
        shape: import.shape,
        status: if import.finished_at.is_some() {
            "completed"
        } else {
            "processing"
        }
        .to_owned(),
        rows_total: import.rows_total,
        rows_processed,
        outcomes,
        created_at: import.created_at,
        finished_at: import.finished_at,
        items,
        next_cursor,
    }))
}

/// One row of `timesheet_imports`, as the progress read needs it.
#[derive(sqlx::FromRow)]
struct ImportRow {
    shape: String,
    rows_total: i64,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

async fn outcome_counts(state: &AppState, import_id: Uuid) -> Result<OutcomeCounts, ApiError> {
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT outcome, count(*) FROM timesheet_rows
          WHERE import_id = $1 AND outcome IS NOT NULL
          GROUP BY outcome",
    )
    .bind(import_id)
    .fetch_all(&state.pool)
    .await
    .map_err(database_error)?;
    let mut outcomes = OutcomeCounts::default();
    for (outcome, count) in counts {
        match outcome.as_str() {
            "accepted" => outcomes.accepted = count,
            "corrected" => outcomes.corrected = count,
            "unchanged" => outcomes.unchanged = count,
            "unknown_worker" => outcomes.unknown_worker = count,
            _ => outcomes.invalid += count,
        }
    }
    Ok(outcomes)
}
