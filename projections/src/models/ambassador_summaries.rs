//! `read_models.ambassador_summaries` and `read_models.ambassador_earnings`: per
//! ambassador, counts of referrals, hires, milestones and payouts, and the money earned
//! and paid per currency. Ordered by hires and then by the amount paid, they are the
//! leaderboard.
//!
//! Only `ReferralSubmitted` and `PayoutRequested` name the ambassador, so the projection
//! keeps two lookup tables of its own, `ambassador_summary_referrals` and
//! `ambassador_summary_payouts`, and after each change recounts the ambassador's figures
//! from them. Recounting rather than adding to counters keeps the figures consistent with
//! the lookup rows, whatever order of statuses a payout went through.

use async_trait::async_trait;
use referrals_domain::ambassador::AmbassadorEvent;
use referrals_domain::payout::{PayoutEvent, PayoutStatus};
use referrals_domain::referral::{ReferralEvent, ReferralStatus};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{aggregate_uuid, database_error, decode, expect_one_row, Decoded};
use crate::{Projection, ProjectionError, StoredEvent};

mod batch;

/// Projects ambassador, referral and payout events into the ambassador summaries and
/// earnings.
#[derive(Debug, Clone, Copy, Default)]
pub struct AmbassadorSummariesProjection;

#[async_trait]
impl Projection for AmbassadorSummariesProjection {
    fn name(&self) -> &'static str {
        "ambassador_summaries"
    }

    fn schema(&self) -> &'static str {
        "read_models"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "ambassador_summaries",
            "ambassador_earnings",
            "ambassador_summary_referrals",
            "ambassador_summary_payouts",
        ]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        match decode(event)? {
            Some(Decoded::Ambassador(ambassador_event)) => {
                apply_ambassador(connection, event, ambassador_event).await
            }
            Some(Decoded::Referral(referral_event)) => {
                apply_referral(connection, event, referral_event).await
            }
            Some(Decoded::Payout(payout_event)) => {
                apply_payout(connection, event, payout_event).await
            }
            Some(Decoded::Program(_)) | None => Ok(()),
        }
    }

    /// Folds the batch into the touched rows in memory, reading them and the figures
    /// they are recounted from with a few statements, and writes each changed row once.
    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        batch::apply_batch(connection, events).await
    }
}

async fn apply_ambassador(
    connection: &mut PgConnection,
    event: &StoredEvent,
    ambassador_event: AmbassadorEvent,
) -> Result<(), ProjectionError> {
    let ambassador_id = aggregate_uuid(event)?;
    let result = match ambassador_event {
        AmbassadorEvent::AmbassadorEnrolled {
            agency_id, kind, ..
        } => sqlx::query(
            "INSERT INTO ambassador_summaries (
                 ambassador_id, agency_id, kind, active, referrals_submitted,
                 referrals_duplicate, referrals_hired, milestones_reached, payouts_pending,
                 payouts_approved, payouts_paid, updated_at)
             VALUES ($1, $2, $3, true, 0, 0, 0, 0, 0, 0, 0, $4)
             ON CONFLICT (ambassador_id) DO UPDATE
                SET agency_id = EXCLUDED.agency_id, kind = EXCLUDED.kind,
                    active = EXCLUDED.active, updated_at = EXCLUDED.updated_at",
        )
        .bind(ambassador_id)
        .bind(agency_id.0)
        .bind(kind.as_str())
        .bind(event.recorded_at)
        .execute(&mut *connection)
        .await
        .map_err(database_error(event))?,
        AmbassadorEvent::AmbassadorUpdated {
            kind: Some(kind), ..
        } => sqlx::query(
            "UPDATE ambassador_summaries SET kind = $2, updated_at = $3 WHERE ambassador_id = $1",
        )
        .bind(ambassador_id)
        .bind(kind.as_str())
        .bind(event.recorded_at)
        .execute(&mut *connection)
        .await
        .map_err(database_error(event))?,
        // Contact details and consent are not part of the summary.
        AmbassadorEvent::AmbassadorUpdated { kind: None, .. } => return Ok(()),
        AmbassadorEvent::AmbassadorDeactivated { .. } => sqlx::query(
            "UPDATE ambassador_summaries SET active = false, updated_at = $2
              WHERE ambassador_id = $1",
        )
        .bind(ambassador_id)
        .bind(event.recorded_at)
        .execute(&mut *connection)
        .await
        .map_err(database_error(event))?,
    };
    expect_one_row(result, event, "ambassador_summaries")
}

async fn apply_referral(
    connection: &mut PgConnection,
    event: &StoredEvent,
    referral_event: ReferralEvent,
) -> Result<(), ProjectionError> {
    let referral_id = aggregate_uuid(event)?;
    let ambassador_id: Uuid = match referral_event {
        ReferralEvent::ReferralSubmitted {
            ambassador_id,
            status,
            ..
        } => {
            sqlx::query(
                "INSERT INTO ambassador_summary_referrals (
                     referral_id, ambassador_id, duplicate, hired, milestones_reached)
                 VALUES ($1, $2, $3, false, 0)
                 ON CONFLICT (referral_id) DO UPDATE
                    SET ambassador_id = EXCLUDED.ambassador_id,
                        duplicate = EXCLUDED.duplicate",
            )
            .bind(referral_id)
            .bind(ambassador_id.0)
            .bind(status == ReferralStatus::Duplicate)
            .execute(&mut *connection)
            .await
            .map_err(database_error(event))?;
            ambassador_id.0
        }
        ReferralEvent::ReferralHired { .. } => {
            update_referral(connection, event, referral_id, "hired = true").await?
        }
        ReferralEvent::MilestoneReached { .. } => {
            update_referral(
                connection,
                event,
                referral_id,
                "milestones_reached = milestones_reached + 1",
            )
            .await?
        }
        _ => return Ok(()),
    };
    recount_referrals(connection, event, ambassador_id).await
}

/// Updates a referral's lookup row and returns its ambassador.
async fn update_referral(
    connection: &mut PgConnection,
    event: &StoredEvent,
    referral_id: Uuid,
    assignments: &str,
) -> Result<Uuid, ProjectionError> {
    let ambassador_id = sqlx::query_scalar(&format!(
        "UPDATE ambassador_summary_referrals SET {assignments}
          WHERE referral_id = $1
         RETURNING ambassador_id"
    ))
    .bind(referral_id)
    .fetch_optional(&mut *connection)
    .await
    .map_err(database_error(event))?;
    ambassador_id.ok_or_else(|| missing_lookup(event, "ambassador_summary_referrals"))
}

async fn recount_referrals(
    connection: &mut PgConnection,
    event: &StoredEvent,
    ambassador_id: Uuid,
) -> Result<(), ProjectionError> {
    let result = sqlx::query(
        "UPDATE ambassador_summaries AS summary
            SET referrals_submitted = counts.submitted,
                referrals_duplicate = counts.duplicates,
                referrals_hired = counts.hired,
                milestones_reached = counts.milestones,
                updated_at = $2
           FROM (SELECT count(*) AS submitted,
                        count(*) FILTER (WHERE duplicate) AS duplicates,
                        count(*) FILTER (WHERE hired) AS hired,
                        coalesce(sum(milestones_reached), 0) AS milestones
                   FROM ambassador_summary_referrals
                  WHERE ambassador_id = $1) AS counts
          WHERE summary.ambassador_id = $1",
    )
    .bind(ambassador_id)
    .bind(event.recorded_at)
    .execute(&mut *connection)
    .await
    .map_err(database_error(event))?;
    expect_one_row(result, event, "ambassador_summaries")
}

async fn apply_payout(
    connection: &mut PgConnection,
    event: &StoredEvent,
    payout_event: PayoutEvent,
) -> Result<(), ProjectionError> {
    let payout_id = aggregate_uuid(event)?;
    let status = match payout_event {
        PayoutEvent::PayoutRequested {
            ambassador_id,
            recipient,
            amount,
            ..
        } => {
            sqlx::query(
                "INSERT INTO ambassador_summary_payouts (
                     payout_id, ambassador_id, recipient, amount, currency, status)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (payout_id) DO UPDATE
                    SET ambassador_id = EXCLUDED.ambassador_id,
                        recipient = EXCLUDED.recipient, amount = EXCLUDED.amount,
                        currency = EXCLUDED.currency, status = EXCLUDED.status",
            )
            .bind(payout_id)
            .bind(ambassador_id.0)
            .bind(recipient.as_str())
            .bind(amount.amount())
            .bind(amount.currency().as_str())
            .bind(PayoutStatus::PendingApproval.as_str())
            .execute(&mut *connection)
            .await
            .map_err(database_error(event))?;
            let currency = amount.currency().as_str().to_owned();
            return recount_payouts(connection, event, ambassador_id.0, &currency).await;
        }
        PayoutEvent::PayoutApproved { .. } => PayoutStatus::Approved,
        PayoutEvent::PayoutRejected { .. } => PayoutStatus::Rejected,
        PayoutEvent::PayoutVoided { .. } => PayoutStatus::Voided,
        PayoutEvent::PayoutExported { .. } => PayoutStatus::Exported,
        PayoutEvent::PayoutPaid { .. } => PayoutStatus::Paid,
        PayoutEvent::PayoutReversed { .. } => PayoutStatus::Reversed,
        // A hold changes no count or amount.
        PayoutEvent::PayoutHeld { .. } | PayoutEvent::PayoutReleased { .. } => return Ok(()),
    };

    let payout: Option<(Uuid, String)> = sqlx::query_as(
        "UPDATE ambassador_summary_payouts SET status = $2
          WHERE payout_id = $1
         RETURNING ambassador_id, currency",
    )
    .bind(payout_id)
    .bind(status.as_str())
    .fetch_optional(&mut *connection)
    .await
    .map_err(database_error(event))?;
    let (ambassador_id, currency) =
        payout.ok_or_else(|| missing_lookup(event, "ambassador_summary_payouts"))?;
    recount_payouts(connection, event, ambassador_id, &currency).await
}

/// Recounts the ambassador's payouts and the earnings in `currency`. Only payouts to the
/// ambassador count, because a candidate's bonus in a two-sided program is not theirs.
async fn recount_payouts(
    connection: &mut PgConnection,
    event: &StoredEvent,
    ambassador_id: Uuid,
    currency: &str,
) -> Result<(), ProjectionError> {
    let result = sqlx::query(
        "UPDATE ambassador_summaries AS summary
            SET payouts_pending = counts.pending,
                payouts_approved = counts.approved,
                payouts_paid = counts.paid,
                updated_at = $2
           FROM (SELECT count(*) FILTER (WHERE status = 'pending_approval') AS pending,
                        count(*) FILTER (WHERE status IN ('approved', 'exported')) AS approved,
                        count(*) FILTER (WHERE status = 'paid') AS paid
                   FROM ambassador_summary_payouts
                  WHERE ambassador_id = $1 AND recipient = 'ambassador') AS counts
          WHERE summary.ambassador_id = $1",
    )
    .bind(ambassador_id)
    .bind(event.recorded_at)
    .execute(&mut *connection)
    .await
    .map_err(database_error(event))?;
    expect_one_row(result, event, "ambassador_summaries")?;

    // A candidate's payout finds no rows here and leaves the earnings as they are.
    sqlx::query(
        "INSERT INTO ambassador_earnings (ambassador_id, currency, agency_id, pending_amount,
                                          earned_amount, paid_amount, updated_at)
         SELECT $1, $2, $3,
                coalesce(sum(amount) FILTER (WHERE status = 'pending_approval'), 0),
                coalesce(sum(amount) FILTER (WHERE status IN ('approved', 'exported', 'paid')), 0),
                coalesce(sum(amount) FILTER (WHERE status = 'paid'), 0),
                $4
           FROM ambassador_summary_payouts
          WHERE ambassador_id = $1 AND currency = $2 AND recipient = 'ambassador'
         HAVING count(*) > 0
         ON CONFLICT (ambassador_id, currency) DO UPDATE
            SET pending_amount = EXCLUDED.pending_amount,
                earned_amount = EXCLUDED.earned_amount,
                paid_amount = EXCLUDED.paid_amount,
                updated_at = EXCLUDED.updated_at",
    )
    .bind(ambassador_id)
    .bind(currency)
    .bind(event.agency_id)
    .bind(event.recorded_at)
    .execute(&mut *connection)
    .await
    .map_err(database_error(event))?;
    Ok(())
}

fn missing_lookup(event: &StoredEvent, table: &str) -> ProjectionError {
    ProjectionError::Poison(format!(
        "{} found no row in {table}, because the event that creates the row was not applied \
         before it",
        event.describe()
    ))
}
