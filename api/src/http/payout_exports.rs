//! Payroll hand-off: `POST /v1/payouts/exports` batches every approved payout into a CSV
//! file for payroll and marks the payouts exported, `GET /v1/payouts/exports/{id}`
//! downloads that file, and `POST /v1/payouts/paid-imports` reads payroll's file of paid
//! payouts and marks them paid.
//!
//! A payout joins a batch only through its own `MarkExported` command, so when two
//! exports run at once the aggregate's version check lets exactly one of them take each
//! payout. The file contains names, so it is stored sealed, and every download is
//! written to the access log.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use referrals_domain::ids::{AgencyId, PayoutId};
use referrals_domain::payout::{MarkExported, MarkPaid, Payout, PayoutCommand, PayoutStatus};
use referrals_domain::terms::Recipient;
use referrals_domain::values::Sealed;
use referrals_domain::DomainError;
use referrals_store::application::AppError;
use referrals_store::crypto::{open_field, seal_field, Field};
use referrals_store::event_store::CommandMetadata;
use referrals_store::keys::KeyError;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::access_log::{record_accesses, SubjectType};
use super::auth::Authenticated;
use super::authorization::{Action, Permitted};
use super::conventions::{database_error, path_id};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::imports::csv_rows::{PaidFormat, PaidRow};
use crate::imports::upload::{require_csv, Batch, CsvUpload};

/// Largest paid-payouts file accepted, in bytes.
pub const MAX_PAID_BYTES: usize = 16 * 1024 * 1024;

/// Most data rows in one paid-payouts file. The response lists every row, so this also
/// bounds the response size.
pub const MAX_PAID_ROWS: u64 = 100_000;

/// The route template of a download, as the access log records it.
const DOWNLOAD_ENDPOINT: &str = "GET /v1/payouts/exports/{id}";

/// The header line of an export file.
const EXPORT_HEADER: [&str; 8] = [
    "payout_id",
    "payee_type",
    "payee_name",
    "ambassador_external_id",
    "ambassador_name",
    "amount_minor_units",
    "currency",
    "memo",
];

/// Shown in place of a name whose owner's personal data was erased.
const ERASED_NAME: &str = "[erased]";

/// Returns the routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_export))
        .routes(routes!(download_export))
        .routes(routes!(import_paid))
}

/// `201` body of an export.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayoutExportView {
    /// Id of the export batch, also the `batch_id` of its payouts.
    pub id: Uuid,
    /// Number of payouts in the file; 0 when no payout was approved.
    pub payout_count: i32,
    /// URL of the CSV download.
    #[schema(example = "/v1/payouts/exports/0190f6d2-7c4e-7a35-9d4b-2f1e8c3a5b60")]
    pub download_url: String,
    /// When the batch was made.
    pub created_at: DateTime<Utc>,
}

/// One line of an export, before it is written as CSV.
struct ExportLine {
    payout_id: PayoutId,
    recipient: Recipient,
    payee_name: String,
    ambassador_id: Uuid,
    ambassador_external_id: String,
    ambassador_name: String,
    amount: i64,
    currency: String,
    memo: String,
    referral_id: Uuid,
}

/// Batches every approved payout that is not on hold into a payroll CSV file and marks
/// each one exported under the batch id. The columns are
/// `payout_id,payee_type,payee_name,ambassador_external_id,ambassador_name,amount_minor_units,currency,memo`;
/// amounts are integers in minor units of the currency, such as cents. Payouts are found
/// through the payout ledger, which follows events a moment behind, so a payout
/// approved a moment ago may only join the next batch.
#[utoipa::path(post, path = "/v1/payouts/exports", tag = "payouts",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The batch, with its download link", body = PayoutExportView,
            headers(("Location" = String, description = "The CSV download"))),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json")))]
pub async fn create_export(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::PayPayouts)?;

    // NOTE: the batch row is written after its payouts are marked exported. A crash in
    // between leaves those payouts exported under this batch id with no file to
    // download; their ids and amounts remain in the payout ledger (`batch_id`).
    let export_id = Uuid::now_v7();
    let metadata = permitted.metadata();
    let candidates = approved_payouts(&state, permitted.agency_id).await?;
    let mut lines = Vec::with_capacity(candidates.len());
    for payout_id in candidates {
        if let Some(payout) = mark_exported(&state, &metadata, payout_id, export_id).await? {
            lines.push(export_line(&state, permitted.agency_id, &payout).await?);
        }
    }

    let created_at = store_export(&state, &permitted, export_id, &lines).await?;
    tracing::info!(%export_id, payouts = lines.len(), "payouts exported");

    let download_url = format!("/v1/payouts/exports/{export_id}");
    let location =
        HeaderValue::from_str(&download_url).map_err(|error| ApiError::internal(&error))?;
    let view = PayoutExportView {
        id: export_id,
        payout_count: i32::try_from(lines.len()).unwrap_or(i32::MAX),
        download_url,
        created_at,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response())
}

/// Returns the ids of the agency's approved payouts that are not on hold, oldest
/// approval first.
async fn approved_payouts(
    state: &AppState,
    agency_id: AgencyId,
) -> Result<Vec<PayoutId>, ApiError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT payout_id FROM read_models.payout_ledger
          WHERE agency_id = $1 AND status = 'approved' AND NOT held
          ORDER BY approved_at, payout_id",
    )
    .bind(agency_id.0)
    .fetch_all(&state.pool)
    .await
    .map_err(database_error)?;
    Ok(ids.into_iter().map(PayoutId).collect())
}

/// Marks one payout exported in this batch. Returns `None` when the payout is no longer
/// approved or is on hold, such as when a concurrent export took it first.
async fn mark_exported(
    state: &AppState,
    metadata: &CommandMetadata,
    payout_id: PayoutId,
    export_id: Uuid,
) -> Result<Option<Payout>, ApiError> {
    let command = PayoutCommand::MarkExported(MarkExported {
        batch_id: export_id,
        at: metadata.recorded_at,
    });
    match state
        .app
        .payouts
        .execute(&payout_id.to_string(), command, metadata, None)
        .await
        .map_err(AppError::from)
    {
        Ok(executed) => Ok(Some(executed.aggregate)),
        Err(AppError::Domain(error)) => {
            tracing::debug!(%payout_id, %error, "payout left out of the export");
            Ok(None)
        }
        Err(AppError::Conflict { .. }) => {
            tracing::debug!(%payout_id, "payout changed during the export; left for the next one");
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// Builds the export line of an exported payout, opening the names it needs.
async fn export_line(
    state: &AppState,
    agency_id: AgencyId,
    payout: &Payout,
) -> Result<ExportLine, ApiError> {
    let missing = || ApiError::internal(&"an exported payout lacks the fields of its request");
    let (Some(payout_id), Some(referral_id), Some(ambassador_id)) = (
        payout.payout_id(),
        payout.referral_id(),
        payout.ambassador_id(),
    ) else {
        return Err(missing());
    };
    let (Some(recipient), Some(milestone), Some(amount)) =
        (payout.recipient(), payout.milestone(), payout.amount())
    else {
        return Err(missing());
    };

    let (ambassador, _) = state
        .app
        .ambassadors
        .load(agency_id, &ambassador_id.to_string())
        .await
        .map_err(AppError::from)?
        .ok_or_else(|| {
            ApiError::internal(&format!("payout {payout_id} names a missing ambassador"))
        })?;
    let ambassador_name = open_name(state, agency_id, ambassador_id.0, ambassador.name()).await?;
    let payee_name = match recipient {
        Recipient::Ambassador => ambassador_name.clone(),
        Recipient::Candidate => {
            let (referral, _) = state
                .app
                .referrals
                .load(agency_id, &referral_id.to_string())
                .await
                .map_err(AppError::from)?
                .ok_or_else(|| {
                    ApiError::internal(&format!("payout {payout_id} names a missing referral"))
                })?;
            let name = referral.candidate().map(|candidate| &candidate.name);
            open_name(state, agency_id, referral_id.0, name).await?
        }
    };

    Ok(ExportLine {
        payout_id,
        recipient,
        payee_name,
        ambassador_id: ambassador_id.0,
        ambassador_external_id: ambassador.external_id().unwrap_or_default().to_owned(),
        ambassador_name,
        amount: amount.amount(),
        currency: amount.currency().as_str().to_owned(),
        memo: format!(
            "Referral bonus {} for referral {referral_id}",
            milestone_words(milestone.as_str())
        ),
        referral_id: referral_id.0,
    })
}

/// Describes a milestone key such as `hours_worked:160.00:ambassador` in words for the
/// memo column, e.g. "after 160 hours worked". Erasure finds a candidate payee's line by
/// the referral id at the end of the memo, so the memo keeps ending with it.
fn milestone_words(key: &str) -> String {
    let mut parts = key.split(':');
    let trigger = parts.next().unwrap_or_default();
    let threshold = parts.next().unwrap_or_default();
    let threshold = threshold.strip_suffix(".00").unwrap_or(threshold);
    let recipient = parts.next().unwrap_or_default();
    let when = match trigger {
        "hired" => "at hire".to_owned(),
        "hours_worked" => format!("after {threshold} hours worked"),
        "days_employed" => format!("after {threshold} days employed"),
        _ => key.to_owned(),
    };
    if recipient == "candidate" {
        format!("{when}, to the candidate")
    } else {
        when
    }
}

/// Opens a sealed name of `subject_id`; an erased subject's name is [`ERASED_NAME`].
async fn open_name(
    state: &AppState,
    agency_id: AgencyId,
    subject_id: Uuid,
    sealed: Option<&Sealed>,
) -> Result<String, ApiError> {
    let Some(sealed) = sealed else {
        return Ok(ERASED_NAME.to_owned());
    };
    let key = match state
        .app
        .personal()
        .vault()
        .data_key(agency_id, subject_id)
        .await
    {
        Ok(key) => key,
        Err(KeyError::Erased | KeyError::Missing) => return Ok(ERASED_NAME.to_owned()),
        Err(error) => return Err(AppError::from(error).into()),
    };
    open_field(&key, agency_id, subject_id, Field::Name, sealed)
        .map_err(|error| ApiError::internal(&error))
}

/// Writes the CSV file, seals it under the export's own data key and stores the batch;
/// returns its creation time.
async fn store_export(
    state: &AppState,
    permitted: &Permitted,
    export_id: Uuid,
    lines: &[ExportLine],
) -> Result<DateTime<Utc>, ApiError> {
    let text = export_csv(lines).map_err(|error| ApiError::internal(&error))?;
    let agency_id = permitted.agency_id;
    let key = state
        .app
        .personal()
        .vault()
        .data_key_or_create(agency_id, export_id)
        .await
        .map_err(AppError::from)?;
    let content = seal_field(&key, agency_id, export_id, Field::Note, &text);
    let ambassador_ids: Vec<Uuid> = lines.iter().map(|line| line.ambassador_id).collect();
    let referral_ids: Vec<Uuid> = lines
        .iter()
        .filter(|line| line.recipient == Recipient::Candidate)
        .map(|line| line.referral_id)
        .collect();

    sqlx::query_scalar(
        "INSERT INTO payout_exports
             (export_id, agency_id, created_by, payout_count, content, ambassador_ids,
              referral_ids)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING created_at",
    )
    .bind(export_id)
    .bind(agency_id.0)
    .bind(permitted.caller.caller.user_id.0)
    .bind(i32::try_from(lines.len()).unwrap_or(i32::MAX))
    .bind(content.0)
    .bind(&ambassador_ids)
    .bind(&referral_ids)
    .fetch_one(&state.pool)
    .await
    .map_err(database_error)
}

/// Writes the lines as CSV with [`EXPORT_HEADER`].
fn export_csv(lines: &[ExportLine]) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(EXPORT_HEADER)?;
    for line in lines {
        writer.write_record([
            line.payout_id.to_string(),
            line.recipient.as_str().to_owned(),
            spreadsheet_safe(&line.payee_name),
            spreadsheet_safe(&line.ambassador_external_id),
            spreadsheet_safe(&line.ambassador_name),
            line.amount.to_string(),
            line.currency.clone(),
            line.memo.clone(),
        ])?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Prefixes text that a spreadsheet would run as a formula (a leading `=`, `+`, `-`, `@`,
/// tab or carriage return) with an apostrophe, because payroll clerks open these files in
/// spreadsheet programs and names are typed by users.
fn spreadsheet_safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// Downloads an export batch as `text/csv`. Every download is written to the access log
/// for each person named in the file.
#[utoipa::path(get, path = "/v1/payouts/exports/{id}", tag = "payouts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Id of the export batch")),
    responses(
        (status = 200, description = "The CSV file", body = String, content_type = "text/csv"),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such export in the agency", body = Problem, content_type = "application/problem+json")))]
pub async fn download_export(
    State(state): State<AppState>,
    caller: Authenticated,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::PayPayouts)?;

    let export_id = path_id(id, "id")?;
    let agency_id = permitted.agency_id;
    let stored: Option<(String, Vec<Uuid>, Vec<Uuid>)> = sqlx::query_as(
        "SELECT content, ambassador_ids, referral_ids FROM payout_exports
          WHERE export_id = $1 AND agency_id = $2",
    )
    .bind(export_id)
    .bind(agency_id.0)
    .fetch_optional(&state.pool)
    .await
    .map_err(database_error)?;
    let Some((content, ambassador_ids, referral_ids)) = stored else {
        return Err(ApiError::not_found("payout export"));
    };
    let key = state
        .app
        .personal()
        .vault()
        .data_key(agency_id, export_id)
        .await
        .map_err(AppError::from)?;
    let text = open_field(&key, agency_id, export_id, Field::Note, &Sealed(content))
        .map_err(|error| ApiError::internal(&error))?;

    record_accesses(
        &state,
        &permitted,
        SubjectType::Ambassador,
        &ambassador_ids,
        DOWNLOAD_ENDPOINT,
    )
    .await?;
    record_accesses(
        &state,
        &permitted,
        SubjectType::Candidate,
        &referral_ids,
        DOWNLOAD_ENDPOINT,
    )
    .await?;

    let disposition = HeaderValue::from_str(&format!(
        "attachment; filename=\"payout-export-{export_id}.csv\""
    ))
    .map_err(|error| ApiError::internal(&error))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from(text),
    )
        .into_response())
}

/// The result of one row of a paid import.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaidRowResult {
    /// Record number in the file, counting the header as 1.
    pub line: u64,
    /// The payout of the row, when the id parsed.
    pub payout_id: Option<Uuid>,
    /// `paid`; `unchanged` (already paid under this reference); `unmatched` (not an
    /// exported payout of the agency); `conflict` (already paid under another
    /// reference); or `invalid`.
    #[schema(example = "paid")]
    pub outcome: String,
    /// Reason the row was not applied.
    pub reason: Option<String>,
}

/// The result of a paid import.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct PaidImportView {
    /// Number of data rows in the file.
    pub rows_total: u64,
    /// Payouts marked paid now.
    pub paid: u64,
    /// Payouts already paid under the same reference.
    pub unchanged: u64,
    /// Rows that match no exported payout of the agency.
    pub unmatched: u64,
    /// Payouts already paid under another reference.
    pub conflict: u64,
    /// Malformed rows.
    pub invalid: u64,
    /// Every row in file order.
    pub rows: Vec<PaidRowResult>,
}

/// Marks exported payouts paid from payroll's `text/csv` file with the header
/// `payout_id,paid_on,reference` (UTF-8, quoted fields allowed, other columns ignored).
/// Importing the same file again changes nothing. Rows are applied one by one as they
/// are read, so the rows before a cut-off stay applied. Sending the whole file again
/// completes it.
#[utoipa::path(post, path = "/v1/payouts/paid-imports", tag = "payouts",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv",
        description = "payout_id,paid_on,reference, then one row per payment"),
    responses(
        (status = 200, description = "The result of every row", body = PaidImportView),
        (status = 400, description = "Missing or wrong header, or an unreadable body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a payout approver", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "More than 16 MiB or 100,000 rows", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not text/csv", body = Problem, content_type = "application/problem+json")))]
pub async fn import_paid(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PaidImportView>, ApiError> {
    let permitted = caller.authorize(Action::PayPayouts)?;
    require_csv(&headers)?;

    let metadata = permitted.metadata();
    let mut upload = CsvUpload::start(PaidFormat, body, MAX_PAID_BYTES, MAX_PAID_ROWS);
    let mut view = PaidImportView::default();
    while let Some(batch) = upload.next().await {
        let Batch::Rows(rows) = batch else { continue };
        for parsed in rows {
            let result = match parsed.row {
                Ok(row) => mark_paid(&state, &metadata, parsed.line, row).await?,
                Err(reason) => PaidRowResult {
                    line: parsed.line,
                    payout_id: None,
                    outcome: "invalid".to_owned(),
                    reason: Some(reason),
                },
            };
            view.count(result);
        }
    }
    upload.finish().await?;

    tracing::info!(
        rows = view.rows_total,
        paid = view.paid,
        unmatched = view.unmatched,
        "paid payouts imported"
    );
    Ok(Json(view))
}

impl PaidImportView {
    fn count(&mut self, result: PaidRowResult) {
        self.rows_total += 1;
        match result.outcome.as_str() {
            "paid" => self.paid += 1,
            "unchanged" => self.unchanged += 1,
            "unmatched" => self.unmatched += 1,
            "conflict" => self.conflict += 1,
            _ => self.invalid += 1,
        }
        self.rows.push(result);
    }
}

/// Marks one payout paid, or returns why the row does not apply.
async fn mark_paid(
    state: &AppState,
    metadata: &CommandMetadata,
    line: u64,
    row: PaidRow,
) -> Result<PaidRowResult, ApiError> {
    let result = |outcome: &str, reason: Option<String>| PaidRowResult {
        line,
        payout_id: Some(row.payout_id),
        outcome: outcome.to_owned(),
        reason,
    };
    let payout_id = row.payout_id;
    let loaded = state
        .app
        .payouts
        .load(metadata.agency_id, &payout_id.to_string())
        .await
        .map_err(AppError::from)?;
    let Some((payout, _)) = loaded else {
        return Ok(result(
            "unmatched",
            Some(format!(
                "payout_id {payout_id} is not a payout of this agency"
            )),
        ));
    };
    let status = payout.status();
    if !matches!(status, Some(PayoutStatus::Exported | PayoutStatus::Paid)) {
        let status = status.map_or("unknown", PayoutStatus::as_str);
        return Ok(result(
            "unmatched",
            Some(format!(
                "payout {payout_id} is {status}, not exported; only exported payouts can be marked paid"
            )),
        ));
    }

    let command = PayoutCommand::MarkPaid(MarkPaid {
        paid_on: row.paid_on,
        reference: row.reference.clone(),
        at: metadata.recorded_at,
    });
    let executed = state
        .app
        .payouts
        .execute(&payout_id.to_string(), command, metadata, None)
        .await
        .map_err(AppError::from);
    Ok(match executed {
        Ok(executed) if executed.events.is_empty() => result("unchanged", None),
        Ok(_) => result("paid", None),
        Err(AppError::Domain(DomainError::AlreadyPaid)) => result(
            "conflict",
            Some(format!(
                "payout {payout_id} is already paid under another reference; a payout is never paid twice"
            )),
        ),
        Err(AppError::Domain(error)) => result("invalid", Some(error.to_string())),
        Err(AppError::Conflict { .. }) => result(
            "conflict",
            Some(format!("payout {payout_id} changed while the row was applied; import the row again")),
        ),
        Err(error) => return Err(error.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::{milestone_words, spreadsheet_safe};

    #[test]
    fn formula_text_gets_an_apostrophe() {
        for text in ["=SUM(A1)", "+1", "-2", "@cmd", "\tx", "\rx"] {
            assert_eq!(spreadsheet_safe(text), format!("'{text}"), "{text:?}");
        }
    }

    #[test]
    fn milestone_memo_reads_as_words() {
        assert_eq!(milestone_words("hired:0.00:ambassador"), "at hire");
        assert_eq!(
            milestone_words("hours_worked:160.00:ambassador"),
            "after 160 hours worked"
        );
        assert_eq!(
            milestone_words("days_employed:42.00:candidate"),
            "after 42 days employed, to the candidate"
        );
        assert_eq!(
            milestone_words("hours_worked:37.50:ambassador"),
            "after 37.50 hours worked"
        );
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(spreadsheet_safe("Ada Quinn"), "Ada Quinn");
        assert_eq!(spreadsheet_safe("O'Neil-Smith"), "O'Neil-Smith");
        assert_eq!(spreadsheet_safe(""), "");
    }
}
