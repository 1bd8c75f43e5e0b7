//! Timesheet imports: staging an uploaded file's rows, and the background worker that
//! applies them to referrals through the referral aggregate's hour commands.
//!
//! The worker takes one unfinished import at a time and locks its row
//! (`FOR UPDATE SKIP LOCKED`) for as long as it works on it, so another server instance
//! picks a different import, and rows of one worker are applied in file order. A crash
//! releases the lock, and the next worker resumes with the rows that have no outcome.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use referrals_domain::ids::{AgencyId, ReferralId, UserId};
use referrals_domain::referral::{
    RecordCumulativeHours, RecordHours, ReferralCommand, ReferralEvent,
};
use referrals_domain::values::Hours;
use referrals_store::application::{AppError, Application};
use referrals_store::event_store::{Actor, CommandMetadata};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use super::csv_rows::{ParsedRow, TimesheetRow, TimesheetShape};

/// Rows the worker reads and updates per statement.
const ROWS_PER_STEP: i64 = 500;

/// How often an idle worker looks for new imports.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How many times a row is retried when a recruiter changed the referral at the same
/// moment.
const CONFLICT_RETRIES: usize = 5;

/// Outcome of one timesheet row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOutcome {
    /// A new figure was recorded.
    Accepted,
    /// An earlier figure was replaced, or a lower total recorded for review.
    Corrected,
    /// The same figure was recorded before; nothing changed.
    Unchanged,
    /// No hired referral has this worker id.
    UnknownWorker,
    /// The row is malformed or a rule rejected it.
    Invalid,
}

impl RowOutcome {
    /// Returns the name stored and shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Corrected => "corrected",
            Self::Unchanged => "unchanged",
            Self::UnknownWorker => "unknown_worker",
            Self::Invalid => "invalid",
        }
    }
}

/// The uploader of an import, recorded as the actor of the events it causes.
#[derive(Debug, Clone)]
pub struct Uploader {
    /// The agency the import belongs to.
    pub agency_id: AgencyId,
    /// The uploading user.
    pub user_id: UserId,
    /// The role the user uploaded in.
    pub role: String,
    /// The upload request.
    pub request_id: Uuid,
    /// The correlation id of the upload request.
    pub correlation_id: Uuid,
}

/// Creates an import inside `transaction`, before its rows are staged.
///
/// # Errors
/// The database error.
pub async fn create_import(
    transaction: &mut Transaction<'_, Postgres>,
    import_id: Uuid,
    shape: TimesheetShape,
    uploader: &Uploader,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO timesheet_imports
             (import_id, agency_id, shape, uploaded_by, uploaded_role, request_id,
              correlation_id, rows_total)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
    )
    .bind(import_id)
    .bind(uploader.agency_id.0)
    .bind(shape.as_str())
    .bind(uploader.user_id.0)
    .bind(&uploader.role)
    .bind(uploader.request_id)
    .bind(uploader.correlation_id)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Stages a batch of parsed rows: valid rows wait for the worker, invalid rows get
/// their outcome now.
///
/// # Errors
/// The database error.
pub async fn stage_rows(
    transaction: &mut Transaction<'_, Postgres>,
    import_id: Uuid,
    rows: Vec<ParsedRow<TimesheetRow>>,
) -> Result<(), sqlx::Error> {
    let mut lines = Vec::with_capacity(rows.len());
    let mut workers = Vec::with_capacity(rows.len());
    let mut dates = Vec::with_capacity(rows.len());
    let mut hours = Vec::with_capacity(rows.len());
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut reasons = Vec::with_capacity(rows.len());
    for parsed in rows {
        lines.push(i64::try_from(parsed.line).unwrap_or(i64::MAX));
        match parsed.row {
            Ok(row) => {
                workers.push(Some(row.external_worker_id));
                dates.push(Some(row.date));
                hours.push(Some(row.hours.hundredths()));
                outcomes.push(None);
                reasons.push(None);
            }
            Err(reason) => {
                workers.push(None);
                dates.push(None);
                hours.push(None);
                outcomes.push(Some(RowOutcome::Invalid.as_str()));
                reasons.push(Some(reason));
            }
        }
    }
    sqlx::query(
        "INSERT INTO timesheet_rows
             (import_id, line, external_worker_id, period_date, hours, outcome, reason)
         SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::date[], $5::bigint[],
                                  $6::text[], $7::text[])",
    )
    .bind(import_id)
    .bind(&lines)
    .bind(&workers)
    .bind(&dates)
    .bind(&hours)
    .bind(&outcomes)
    .bind(&reasons)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Records the number of staged rows; the import is finished at once when none of them
/// waits for the worker.
///
/// # Errors
/// The database error.
pub async fn close_staging(
    transaction: &mut Transaction<'_, Postgres>,
    import_id: Uuid,
    rows_total: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE timesheet_imports
            SET rows_total = $2,
                finished_at = CASE WHEN EXISTS (SELECT 1 FROM timesheet_rows
                                                 WHERE import_id = $1 AND outcome IS NULL)
                                   THEN NULL ELSE now() END
          WHERE import_id = $1",
    )
    .bind(import_id)
    .bind(i64::try_from(rows_total).unwrap_or(i64::MAX))
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Runs the worker until `stopping` turns true: applies every unfinished import, then
/// waits [`POLL_INTERVAL`] and looks again.
pub async fn run_worker(app: &Application, mut stopping: watch::Receiver<bool>) {
    tracing::info!("timesheet import worker started");
    loop {
        match process_pending(app).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "timesheet rows applied"),
            Err(error) => {
                tracing::warn!(%error, "timesheet import worker failed; retrying");
            }
        }
        if *stopping.borrow() {
            break;
        }
        tokio::select! {
            _ = stopping.changed() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        if *stopping.borrow() {
            break;
        }
    }
    tracing::info!("timesheet import worker stopped");
}

/// Applies the pending rows of every unfinished import that no other worker holds, and
/// returns how many rows it applied.
///
/// # Errors
/// [`AppError::Unavailable`] when the database fails; the rows without an outcome are
/// then applied by the next run.
pub async fn process_pending(app: &Application) -> Result<u64, AppError> {
    let mut applied = 0;
    while let Some(count) = process_next_import(app).await? {
        applied += count;
    }
    Ok(applied)
}

/// An import the worker holds.
#[derive(sqlx::FromRow)]
struct ClaimedImport {
    import_id: Uuid,
    agency_id: Uuid,
    shape: String,
    uploaded_by: Uuid,
    uploaded_role: String,
    request_id: Uuid,
    correlation_id: Uuid,
}

/// A staged row that waits for the worker, with the referral its worker id names.
#[derive(sqlx::FromRow)]
struct PendingRow {
    line: i64,
    period_date: NaiveDate,
    hours: i64,
    referral_id: Option<Uuid>,
}

/// The result of applying one row.
struct Applied {
    line: i64,
    outcome: RowOutcome,
    reason: Option<String>,
    referral_id: Option<Uuid>,
    needs_review: bool,
}

/// Claims one unfinished import and applies its pending rows; returns `None` when there
/// is no import to claim.
async fn process_next_import(app: &Application) -> Result<Option<u64>, AppError> {
    let pool = app.pool();
    // The claim transaction only holds the row lock; row outcomes are committed apart
    // in small steps, so progress shows while the import runs.
    let mut claim = pool.begin().await.map_err(unavailable)?;
    let claimed: Option<ClaimedImport> = sqlx::query_as(
        "SELECT import_id, agency_id, shape, uploaded_by, uploaded_role, request_id,
                correlation_id
           FROM timesheet_imports
          WHERE finished_at IS NULL
          ORDER BY created_at, import_id
          LIMIT 1
          FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *claim)
    .await
    .map_err(unavailable)?;
    let Some(import) = claimed else {
        return Ok(None);
    };
    let Some(shape) = TimesheetShape::parse(&import.shape) else {
        return Err(AppError::Internal(format!(
            "timesheet import {} has the unknown shape {}",
            import.import_id, import.shape
        )));
    };

    let mut applied = 0;
    loop {
        let rows = pending_rows(pool, &import).await?;
        if rows.is_empty() {
            break;
        }
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            results.push(apply_row(app, &import, shape, row).await?);
        }
        applied += u64::try_from(results.len()).unwrap_or(0);
        store_outcomes(pool, import.import_id, results).await?;
    }

    sqlx::query("UPDATE timesheet_imports SET finished_at = now() WHERE import_id = $1")
        .bind(import.import_id)
        .execute(&mut *claim)
        .await
        .map_err(unavailable)?;
    claim.commit().await.map_err(unavailable)?;
    tracing::info!(import_id = %import.import_id, rows = applied, "timesheet import finished");
    Ok(Some(applied))
}

/// Reads the next pending rows in file order, each with the latest referral hired under
/// its worker id.
async fn pending_rows(pool: &PgPool, import: &ClaimedImport) -> Result<Vec<PendingRow>, AppError> {
    sqlx::query_as(
        "SELECT r.line, r.period_date, r.hours, hire.referral_id
           FROM timesheet_rows r
           LEFT JOIN LATERAL (
                SELECT e.aggregate_id::uuid AS referral_id
                  FROM events e
                 WHERE e.agency_id = $2
                   AND e.aggregate_type = 'referral'
                   AND e.event_type = 'ReferralHired'
                   AND e.payload -> 'ReferralHired' ->> 'external_worker_id' = r.external_worker_id
                 ORDER BY e.position DESC
                 LIMIT 1) hire ON true
          WHERE r.import_id = $1 AND r.outcome IS NULL
          ORDER BY r.line
          LIMIT $3",
    )
    .bind(import.import_id)
    .bind(import.agency_id)
    .bind(ROWS_PER_STEP)
    .fetch_all(pool)
    .await
    .map_err(unavailable)
}

/// Applies one row through the referral aggregate. Rule violations become the row's
/// `invalid` outcome; only a failure of the platform stops the import.
async fn apply_row(
    app: &Application,
    import: &ClaimedImport,
    shape: TimesheetShape,
    row: PendingRow,
) -> Result<Applied, AppError> {
    let Some(referral_id) = row.referral_id else {
        return Ok(Applied {
            line: row.line,
            outcome: RowOutcome::UnknownWorker,
            reason: Some(
                "no hired referral has this external_worker_id; record it with the hire first"
                    .to_owned(),
            ),
            referral_id: None,
            needs_review: false,
        });
    };
    let hours = Hours::from_hundredths(row.hours)
        .map_err(|error| AppError::Internal(format!("a staged row has invalid hours: {error}")))?;
    let metadata = row_metadata(import, row.line);
    let command = match shape {
        TimesheetShape::Weekly => ReferralCommand::RecordHours(RecordHours {
            week_ending: row.period_date,
            hours,
            at: metadata.recorded_at,
        }),
        TimesheetShape::Cumulative => {
            ReferralCommand::RecordCumulativeHours(RecordCumulativeHours {
                as_of: row.period_date,
                total_hours: hours,
                at: metadata.recorded_at,
            })
        }
    };

    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match app
            .execute_referral(&metadata, ReferralId(referral_id), command.clone(), None)
            .await
        {
            Err(AppError::Conflict { .. }) if attempt < CONFLICT_RETRIES => continue,
            other => break other,
        }
    };

    let (outcome, reason, needs_review) = match result {
        Ok(executed) => classify(&executed.events),
        Err(AppError::Domain(error)) => (RowOutcome::Invalid, Some(error.to_string()), false),
        Err(AppError::NotFound(_)) => (
            RowOutcome::UnknownWorker,
            Some("the referral hired under this external_worker_id no longer exists".to_owned()),
            false,
        ),
        Err(AppError::Conflict { .. }) => (
            RowOutcome::Invalid,
            Some(
                "the referral kept changing while the row was applied; import the row again"
                    .to_owned(),
            ),
            false,
        ),
        Err(error @ AppError::Unavailable(_)) => return Err(error),
        Err(AppError::Internal(cause)) => {
            tracing::error!(
                import_id = %import.import_id,
                line = row.line,
                %referral_id,
                error = %cause,
                "a timesheet row failed inside the service"
            );
            (
                RowOutcome::Invalid,
                Some(
                    "the row could not be applied because of an internal failure, which was logged"
                        .to_owned(),
                ),
                false,
            )
        }
    };
    Ok(Applied {
        line: row.line,
        outcome,
        reason,
        referral_id: Some(referral_id),
        needs_review,
    })
}

/// Tells from the events of one hour command what happened to the row.
fn classify(
    events: &[cqrs_es::EventEnvelope<referrals_domain::referral::Referral>],
) -> (RowOutcome, Option<String>, bool) {
    for envelope in events {
        match &envelope.payload {
            ReferralEvent::HoursRecorded { .. } | ReferralEvent::HoursAccrued { .. } => {
                return (RowOutcome::Accepted, None, false)
            }
            ReferralEvent::HoursCorrected { previous_hours, .. } => {
                return (
                    RowOutcome::Corrected,
                    Some(format!("replaced the {previous_hours} hours recorded before for this week")),
                    false,
                )
            }
            ReferralEvent::HoursTotalLowered { previous_total, .. } => {
                return (
                    RowOutcome::Corrected,
                    Some(format!(
                        "the total is lower than the {previous_total} hours recorded before; a recruiter must review it"
                    )),
                    true,
                )
            }
            _ => {}
        }
    }
    (RowOutcome::Unchanged, None, false)
}

/// Metadata of the command for one row: the uploader is the actor, and the import is
/// the cause, so the audit trail leads from each hour event to its file and line.
fn row_metadata(import: &ClaimedImport, line: i64) -> CommandMetadata {
    let mut metadata = CommandMetadata::new(
        AgencyId(import.agency_id),
        Actor::User {
            id: UserId(import.uploaded_by),
            role: import.uploaded_role.clone(),
        },
    );
    metadata.recorded_at = Utc::now();
    metadata.request_id = import.request_id;
    metadata.correlation_id = import.correlation_id;
    metadata.causation_id = Uuid::new_v5(&import.import_id, &line.to_be_bytes());
    metadata
}

async fn store_outcomes(
    pool: &PgPool,
    import_id: Uuid,
    results: Vec<Applied>,
) -> Result<(), AppError> {
    let mut lines = Vec::with_capacity(results.len());
    let mut outcomes = Vec::with_capacity(results.len());
    let mut reasons = Vec::with_capacity(results.len());
    let mut referrals = Vec::with_capacity(results.len());
    let mut reviews = Vec::with_capacity(results.len());
    for result in results {
        lines.push(result.line);
        outcomes.push(result.outcome.as_str());
        reasons.push(result.reason);
        referrals.push(result.referral_id);
        reviews.push(result.needs_review);
    }
    sqlx::query(
        "UPDATE timesheet_rows r
            SET outcome = u.outcome, reason = u.reason, referral_id = u.referral_id,
                needs_review = u.needs_review
           FROM unnest($2::bigint[], $3::text[], $4::text[], $5::uuid[], $6::bool[])
                AS u(line, outcome, reason, referral_id, needs_review)
          WHERE r.import_id = $1 AND r.line = u.line",
    )
    .bind(import_id)
    .bind(&lines)
    .bind(&outcomes)
    .bind(&reasons)
    .bind(&referrals)
    .bind(&reviews)
    .execute(pool)
    .await
    .map_err(unavailable)?;
    Ok(())
}

fn unavailable(error: sqlx::Error) -> AppError {
    AppError::Unavailable(error.to_string())
}
