//! `read_models.payout_ledger`: one row per payout with its status, hold and the dates
//! of each step, for finance's approval queue, export batches and payment history.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use referrals_domain::payout::{PayoutEvent, PayoutStatus, Requester};
use sqlx::PgConnection;

use super::{aggregate_uuid, database_error, decode, expect_one_row, Decoded, RowUpdate};
use crate::{Projection, ProjectionError, StoredEvent};

mod batch;

/// Projects payout events into `read_models.payout_ledger`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PayoutLedgerProjection;

#[async_trait]
impl Projection for PayoutLedgerProjection {
    fn name(&self) -> &'static str {
        "payout_ledger"
    }

    fn schema(&self) -> &'static str {
        "read_models"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["payout_ledger"]
    }

    /// Reads the ledger rows of the batch's payouts with one statement, applies the batch
    /// to them in memory and writes each changed row once.
    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        batch::apply_batch(connection, events).await
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let Some(Decoded::Payout(payout_event)) = decode(event)? else {
            return Ok(());
        };
        let payout_id = aggregate_uuid(event)?;
        let update = RowUpdate {
            table: "payout_ledger",
            key_column: "payout_id",
            key: payout_id,
            event,
        };

        match payout_event {
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
                let result = sqlx::query(
                    "INSERT INTO payout_ledger (
                         payout_id, agency_id, referral_id, ambassador_id, program_id,
                         recipient, milestone, amount, currency, status, held, hold_reason,
                         requested_at, requester_kind, requested_by, approved_at, approved_by,
                         exported_at, batch_id, paid_on, paid_reference, closed_at,
                         closed_reason, version, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, false, NULL, $11, $12,
                             $13, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, $14, $15)
                     ON CONFLICT (payout_id) DO UPDATE
                        SET agency_id = EXCLUDED.agency_id,
                            referral_id = EXCLUDED.referral_id,
                            ambassador_id = EXCLUDED.ambassador_id,
                            program_id = EXCLUDED.program_id,
                            recipient = EXCLUDED.recipient, milestone = EXCLUDED.milestone,
                            amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                            status = EXCLUDED.status, requested_at = EXCLUDED.requested_at,
                            requester_kind = EXCLUDED.requester_kind,
                            requested_by = EXCLUDED.requested_by,
                            version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
                )
                .bind(payout_id)
                .bind(agency_id.0)
                .bind(referral_id.0)
                .bind(ambassador_id.0)
                .bind(program_id.0)
                .bind(recipient.as_str())
                .bind(milestone.as_str().to_owned())
                .bind(amount.amount())
                .bind(amount.currency().as_str().to_owned())
                .bind(PayoutStatus::PendingApproval.as_str())
                .bind(at)
                .bind(requester_kind)
                .bind(requested_by)
                .bind(event.sequence)
                .bind(event.recorded_at)
                .execute(&mut *connection)
                .await
                .map_err(database_error(event))?;
                expect_one_row(result, event, "payout_ledger")
            }
            PayoutEvent::PayoutApproved { approver, at } => {
                update
                    .run(
                        connection,
                        "status = $4, approved_at = $5, approved_by = $6",
                        |query| {
                            query
                                .bind(PayoutStatus::Approved.as_str())
                                .bind(at)
                                .bind(approver.0)
                        },
                    )
                    .await
            }
            PayoutEvent::PayoutRejected { reason, at, .. } => {
                close(
                    &update,
                    connection,
                    PayoutStatus::Rejected,
                    at,
                    reason.as_str(),
                )
                .await
            }
            PayoutEvent::PayoutHeld { reason, .. } => {
                update
                    .run(connection, "held = true, hold_reason = $4", |query| {
                        query.bind(reason.as_str().to_owned())
                    })
                    .await
            }
            PayoutEvent::PayoutReleased { .. } => {
                update
                    .run(connection, "held = false, hold_reason = NULL", |query| {
                        query
                    })
                    .await
            }
            PayoutEvent::PayoutVoided {
                reason_code, at, ..
            } => {
                close(
                    &update,
                    connection,
                    PayoutStatus::Voided,
                    at,
                    reason_code.as_str(),
                )
                .await
            }
            PayoutEvent::PayoutExported { batch_id, at } => {
                update
                    .run(
                        connection,
                        "status = $4, exported_at = $5, batch_id = $6",
                        |query| {
                            query
                                .bind(PayoutStatus::Exported.as_str())
                                .bind(at)
                                .bind(batch_id)
                        },
                    )
                    .await
            }
            PayoutEvent::PayoutPaid {
                paid_on, reference, ..
            } => {
                update
                    .run(
                        connection,
                        "status = $4, paid_on = $5, paid_reference = $6",
                        |query| {
                            query
                                .bind(PayoutStatus::Paid.as_str())
                                .bind(paid_on)
                                .bind(reference)
                        },
                    )
                    .await
            }
            PayoutEvent::PayoutReversed { reason, at, .. } => {
                close(
                    &update,
                    connection,
                    PayoutStatus::Reversed,
                    at,
                    reason.as_str(),
                )
                .await
            }
        }
    }
}

/// Records a rejection, void or reversal. A rejected or voided payout is no longer on
/// hold, as in the payout aggregate. A reversed payout was paid, and a paid payout cannot
/// be on hold.
async fn close(
    update: &RowUpdate<'_>,
    connection: &mut PgConnection,
    status: PayoutStatus,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<(), ProjectionError> {
    let reason = reason.to_owned();
    update
        .run(
            connection,
            "status = $4, closed_at = $5, closed_reason = $6, held = false, hold_reason = NULL",
            |query| query.bind(status.as_str()).bind(at).bind(reason),
        )
        .await
}
