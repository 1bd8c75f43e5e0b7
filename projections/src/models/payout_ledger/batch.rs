//! The batch path of the payout ledger: one statement reads the ledger rows of the
//! batch's payouts, the events are applied to them in memory, and one `UNNEST` statement
//! writes each changed row once.
//!
//! [`fold`] makes, column by column, the change that the parent module's `apply` makes
//! with SQL for the same event, so both paths leave the same rows.

use chrono::{DateTime, NaiveDate, Utc};
use referrals_domain::payout::{PayoutEvent, PayoutStatus, Requester};
use sqlx::PgConnection;
use uuid::Uuid;

use super::super::batch_rows::{column, KeyedRow, TouchedRows};
use super::super::{aggregate_uuid, decode, Decoded};
use crate::models::batch_database_error;
use crate::{ProjectionError, StoredEvent};

/// Applies the payout events of `events` in order to `payout_ledger`.
///
/// # Errors
/// [`ProjectionError::Poison`] for an event that the event-by-event path rejects, and
/// as [`batch_database_error`].
pub(super) async fn apply_batch(
    connection: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), ProjectionError> {
    let mut payouts = Vec::new();
    for event in events {
        if let Some(Decoded::Payout(payload)) = decode(event)? {
            payouts.push((event, aggregate_uuid(event)?, payload));
        }
    }
    if payouts.is_empty() {
        return Ok(());
    }

    let keys = payouts.iter().map(|(_, key, _)| *key).collect();
    let mut rows = TouchedRows::read(connection, keys).await?;
    for (event, key, payload) in payouts {
        fold(&mut rows, event, key, payload)?;
    }
    write(connection, &rows.into_changed()).await
}

/// A row of `payout_ledger`.
#[derive(Debug, sqlx::FromRow)]
struct LedgerRow {
    payout_id: Uuid,
    agency_id: Uuid,
    referral_id: Uuid,
    ambassador_id: Uuid,
    program_id: Uuid,
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
    updated_at: DateTime<Utc>,
}

impl KeyedRow for LedgerRow {
    const TABLE: &'static str = "payout_ledger";
    const KEY_COLUMN: &'static str = "payout_id";

    fn key(&self) -> Uuid {
        self.payout_id
    }
}

/// Applies one payout event to its ledger row. Every event records its sequence in
/// `version` and its time in `updated_at`, as the event-by-event path does.
fn fold(
    rows: &mut TouchedRows<LedgerRow>,
    event: &StoredEvent,
    payout_id: Uuid,
    payload: PayoutEvent,
) -> Result<(), ProjectionError> {
    let row = match payload {
        PayoutEvent::PayoutRequested {
            payout_id: _,
            agency_id,
            referral_id,
            program_id,
            ambassador_id,
            recipient,
            milestone,
            amount,
            requested_by,
            annual_bonus_cap: _,
            referrer_must_be_active: _,
            at,
        } => {
            let (requester_kind, requested_by) = match requested_by {
                Requester::System { job } => ("system", job),
                Requester::User { user_id } => ("user", user_id.to_string()),
            };
            let mut row = LedgerRow {
                payout_id,
                agency_id: agency_id.0,
                referral_id: referral_id.0,
                ambassador_id: ambassador_id.0,
                program_id: program_id.0,
                recipient: recipient.as_str().to_owned(),
                milestone: milestone.as_str().to_owned(),
                amount: amount.amount(),
                currency: amount.currency().as_str().to_owned(),
                status: PayoutStatus::PendingApproval.as_str().to_owned(),
                held: false,
                hold_reason: None,
                requested_at: at,
                requester_kind: requester_kind.to_owned(),
                requested_by,
                approved_at: None,
                approved_by: None,
                exported_at: None,
                batch_id: None,
                paid_on: None,
                paid_reference: None,
                closed_at: None,
                closed_reason: None,
                version: event.sequence,
                updated_at: event.recorded_at,
            };
            // The event-by-event upsert keeps the hold and the later steps of an
            // existing row.
            if let Some(previous) = rows.take(payout_id) {
                row.held = previous.held;
                row.hold_reason = previous.hold_reason;
                row.approved_at = previous.approved_at;
                row.approved_by = previous.approved_by;
                row.exported_at = previous.exported_at;
                row.batch_id = previous.batch_id;
                row.paid_on = previous.paid_on;
                row.paid_reference = previous.paid_reference;
                row.closed_at = previous.closed_at;
                row.closed_reason = previous.closed_reason;
            }
            rows.put(row);
            return Ok(());
        }
        PayoutEvent::PayoutApproved { approver, at } => {
            let row = rows.existing(payout_id, event)?;
            row.status = PayoutStatus::Approved.as_str().to_owned();
            row.approved_at = Some(at);
            row.approved_by = Some(approver.0);
            row
        }
        PayoutEvent::PayoutRejected { reason, at, .. } => {
            let row = rows.existing(payout_id, event)?;
            close(row, PayoutStatus::Rejected, at, reason.as_str());
            row
        }
        PayoutEvent::PayoutHeld { reason, .. } => {
            let row = rows.existing(payout_id, event)?;
            row.held = true;
            row.hold_reason = Some(reason.as_str().to_owned());
            row
        }
        PayoutEvent::PayoutReleased { .. } => {
            let row = rows.existing(payout_id, event)?;
            row.held = false;
            row.hold_reason = None;
            row
        }
        PayoutEvent::PayoutVoided {
            reason_code, at, ..
        } => {
            let row = rows.existing(payout_id, event)?;
            close(row, PayoutStatus::Voided, at, reason_code.as_str());
            row
        }
        PayoutEvent::PayoutExported { batch_id, at } => {
            let row = rows.existing(payout_id, event)?;
            row.status = PayoutStatus::Exported.as_str().to_owned();
            row.exported_at = Some(at);
            row.batch_id = Some(batch_id);
            row
        }
        PayoutEvent::PayoutPaid {
            paid_on, reference, ..
        } => {
            let row = rows.existing(payout_id, event)?;
            row.status = PayoutStatus::Paid.as_str().to_owned();
            row.paid_on = Some(paid_on);
            row.paid_reference = Some(reference);
            row
        }
        PayoutEvent::PayoutReversed { reason, at, .. } => {
            let row = rows.existing(payout_id, event)?;
            close(row, PayoutStatus::Reversed, at, reason.as_str());
            row
        }
    };
    row.version = event.sequence;
    row.updated_at = event.recorded_at;
    Ok(())
}

/// Records a rejection, void or reversal, which also ends a hold, as the event-by-event
/// path's `close` does.
fn close(row: &mut LedgerRow, status: PayoutStatus, at: DateTime<Utc>, reason: &str) {
    row.status = status.as_str().to_owned();
    row.closed_at = Some(at);
    row.closed_reason = Some(reason.to_owned());
    row.held = false;
    row.hold_reason = None;
}

async fn write(connection: &mut PgConnection, rows: &[LedgerRow]) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO payout_ledger (
             payout_id, agency_id, referral_id, ambassador_id, program_id,
             recipient, milestone, amount, currency, status, held, hold_reason,
             requested_at, requester_kind, requested_by, approved_at, approved_by,
             exported_at, batch_id, paid_on, paid_reference, closed_at,
             closed_reason, version, updated_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[],
                              $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[],
                              $11::boolean[], $12::text[], $13::timestamptz[], $14::text[],
                              $15::text[], $16::timestamptz[], $17::uuid[],
                              $18::timestamptz[], $19::uuid[], $20::date[], $21::text[],
                              $22::timestamptz[], $23::text[], $24::bigint[],
                              $25::timestamptz[])
         ON CONFLICT (payout_id) DO UPDATE
            SET agency_id = EXCLUDED.agency_id, referral_id = EXCLUDED.referral_id,
                ambassador_id = EXCLUDED.ambassador_id, program_id = EXCLUDED.program_id,
                recipient = EXCLUDED.recipient, milestone = EXCLUDED.milestone,
                amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                status = EXCLUDED.status, held = EXCLUDED.held,
                hold_reason = EXCLUDED.hold_reason, requested_at = EXCLUDED.requested_at,
                requester_kind = EXCLUDED.requester_kind,
                requested_by = EXCLUDED.requested_by, approved_at = EXCLUDED.approved_at,
                approved_by = EXCLUDED.approved_by, exported_at = EXCLUDED.exported_at,
                batch_id = EXCLUDED.batch_id, paid_on = EXCLUDED.paid_on,
                paid_reference = EXCLUDED.paid_reference, closed_at = EXCLUDED.closed_at,
                closed_reason = EXCLUDED.closed_reason, version = EXCLUDED.version,
                updated_at = EXCLUDED.updated_at",
    )
    .bind(column(rows, |row| row.payout_id))
    .bind(column(rows, |row| row.agency_id))
    .bind(column(rows, |row| row.referral_id))
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.program_id))
    .bind(column(rows, |row| row.recipient.as_str()))
    .bind(column(rows, |row| row.milestone.as_str()))
    .bind(column(rows, |row| row.amount))
    .bind(column(rows, |row| row.currency.as_str()))
    .bind(column(rows, |row| row.status.as_str()))
    .bind(column(rows, |row| row.held))
    .bind(column(rows, |row| row.hold_reason.as_deref()))
    .bind(column(rows, |row| row.requested_at))
    .bind(column(rows, |row| row.requester_kind.as_str()))
    .bind(column(rows, |row| row.requested_by.as_str()))
    .bind(column(rows, |row| row.approved_at))
    .bind(column(rows, |row| row.approved_by))
    .bind(column(rows, |row| row.exported_at))
    .bind(column(rows, |row| row.batch_id))
    .bind(column(rows, |row| row.paid_on))
    .bind(column(rows, |row| row.paid_reference.as_deref()))
    .bind(column(rows, |row| row.closed_at))
    .bind(column(rows, |row| row.closed_reason.as_deref()))
    .bind(column(rows, |row| row.version))
    .bind(column(rows, |row| row.updated_at))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error(LedgerRow::TABLE))?;
    Ok(())
}
