//! `POST /v1/known-candidates`: a CSV list of people the agency already had contact
//! with. Each e-mail address and phone number is stored only as a keyed hash with the
//! last contact date, for the prior-contact rule of referrals and the eligibility
//! pre-check.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use chrono::{NaiveDate, Utc};
use referrals_domain::ids::AgencyId;
use referrals_store::application::AppError;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::database_error;
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::imports::csv_rows::{KnownCandidateFormat, KnownCandidateRow, ParsedRow};
use crate::imports::upload::{require_csv, Batch, CsvUpload};

/// Largest known-candidates file accepted, in bytes.
pub const MAX_KNOWN_CANDIDATE_BYTES: usize = 16 * 1024 * 1024;

/// Most data rows in one known-candidates file. The response lists every row, so this
/// also bounds the response size.
pub const MAX_KNOWN_CANDIDATE_ROWS: u64 = 100_000;

/// Returns the routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(import_known_candidates))
}

/// The result of one row.
#[derive(Debug, Serialize, ToSchema)]
pub struct KnownCandidateRowResult {
    /// Record number in the file, counting the header as 1.
    pub line: u64,
    /// `accepted` or `invalid`.
    #[schema(example = "accepted")]
    pub outcome: String,
    /// Reason the row is invalid. It never quotes an e-mail address or phone number.
    pub reason: Option<String>,
}

/// The result of a known-candidates import.
#[derive(Debug, Serialize, ToSchema)]
pub struct KnownCandidateImport {
    /// Number of data rows in the file.
    pub rows_total: u64,
    /// Rows stored.
    pub accepted: u64,
    /// Rows rejected.
    pub invalid: u64,
    /// Every row in file order.
    pub rows: Vec<KnownCandidateRowResult>,
}

/// Imports people the agency already had contact with, as `text/csv` with the header
/// `email,phone,last_contact_on` (UTF-8, quoted fields allowed, other columns ignored).
/// A row needs an e-mail address, a phone number or both. A person listed again keeps
/// the later contact date. A referral of a person contacted within the program's
/// look-back period is ineligible with the reason `prior_contact`.
#[utoipa::path(post, path = "/v1/known-candidates", tag = "imports",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv",
        description = "email,phone,last_contact_on, then one row per person"),
    responses(
        (status = 200, description = "The result of every row", body = KnownCandidateImport),
        (status = 400, description = "Missing or wrong header, or an unreadable body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a recruiter", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "More than 16 MiB or 100,000 rows", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not text/csv", body = Problem, content_type = "application/problem+json")))]
pub async fn import_known_candidates(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<KnownCandidateImport>, ApiError> {
    let permitted = caller.authorize(Action::ImportRecords)?;
    require_csv(&headers)?;

    let format = KnownCandidateFormat {
        today: Utc::now().date_naive(),
    };
    let mut upload = CsvUpload::start(
        format,
        body,
        MAX_KNOWN_CANDIDATE_BYTES,
        MAX_KNOWN_CANDIDATE_ROWS,
    );
    let mut transaction = state.pool.begin().await.map_err(database_error)?;
    let mut result = KnownCandidateImport {
        rows_total: 0,
        accepted: 0,
        invalid: 0,
        rows: Vec::new(),
    };
    while let Some(batch) = upload.next().await {
        let Batch::Rows(rows) = batch else { continue };
        let keys = store_batch(
            &state,
            permitted.agency_id,
            &mut transaction,
            rows,
            &mut result,
        )
        .await?;
        tracing::debug!(keys, "known candidates stored");
    }

    // Committed only when the whole file was read: a cut-off upload stores nothing.
    upload.finish().await?;
    transaction.commit().await.map_err(database_error)?;
    tracing::info!(
        rows = result.rows_total,
        accepted = result.accepted,
        invalid = result.invalid,
        "known candidates imported"
    );
    Ok(Json(result))
}

/// Hashes and upserts one batch, appending each row's result; returns the number of
/// keys written.
async fn store_batch(
    state: &AppState,
    agency_id: AgencyId,
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: Vec<ParsedRow<KnownCandidateRow>>,
    result: &mut KnownCandidateImport,
) -> Result<usize, ApiError> {
    // One key per statement: PostgreSQL rejects an upsert that touches a row twice.
    let mut latest: HashMap<String, NaiveDate> = HashMap::new();
    for parsed in rows {
        result.rows_total += 1;
        let row = match parsed.row {
            Ok(row) => row,
            Err(reason) => {
                result.invalid += 1;
                result.rows.push(KnownCandidateRowResult {
                    line: parsed.line,
                    outcome: "invalid".to_owned(),
                    reason: Some(reason),
                });
                continue;
            }
        };
        let keys = state
            .app
            .personal()
            .contact_keys(agency_id, row.email.as_ref(), row.phone.as_ref())
            .await
            .map_err(AppError::from)?;
        for key in [keys.email, keys.phone].into_iter().flatten() {
            let date = latest.entry(key.0).or_insert(row.last_contact_on);
            *date = (*date).max(row.last_contact_on);
        }
        result.accepted += 1;
        result.rows.push(KnownCandidateRowResult {
            line: parsed.line,
            outcome: "accepted".to_owned(),
            reason: None,
        });
    }
    if latest.is_empty() {
        return Ok(0);
    }

    let (keys, dates): (Vec<String>, Vec<NaiveDate>) = latest.into_iter().unzip();
    sqlx::query(
        "INSERT INTO known_candidates (agency_id, contact_key, last_contact_on)
         SELECT $1, * FROM unnest($2::text[], $3::date[])
         ON CONFLICT (agency_id, contact_key) DO UPDATE
            SET last_contact_on = GREATEST(known_candidates.last_contact_on,
                                           EXCLUDED.last_contact_on)",
    )
    .bind(agency_id.0)
    .bind(&keys)
    .bind(&dates)
    .execute(&mut **transaction)
    .await
    .map_err(database_error)?;
    Ok(keys.len())
}
