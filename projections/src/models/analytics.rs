//! The `analytics` schema's fact tables: `ambassador_facts`, `referral_facts` and
//! `payout_facts`, which the funnel, leaderboard and payout views read.
//!
//! Nothing personal is written here: no sealed values, external ids, free-text reasons,
//! payroll references or job details, only ids, codes, times, counts and amounts. A BI
//! role can read this schema (with row-level security by agency), so every column added
//! here must keep to that rule.

use async_trait::async_trait;
use referrals_domain::ambassador::AmbassadorEvent;
use referrals_domain::payout::{PayoutEvent, PayoutStatus};
use referrals_domain::referral::{ReferralEvent, ReferralStatus};
use referrals_domain::terms::Trigger;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    aggregate_uuid, database_error, decode, expect_one_row, ineligible_reason_code, Decoded,
};
use crate::{Projection, ProjectionError, StoredEvent};

mod batch;

/// Projects ambassador, referral and payout events into the analytics fact tables.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalyticsProjection;

#[async_trait]
impl Projection for AnalyticsProjection {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn schema(&self) -> &'static str {
        "analytics"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["ambassador_facts", "referral_facts", "payout_facts"]
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

    /// Reads the touched rows of each fact table with one statement, applies the batch
    /// to them in memory and writes each changed row once.
    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        batch::apply_batch(connection, events).await
    }
}

/// Runs an insert or update of one fact row and checks that it wrote the row.
async fn update_fact<'q>(
    connection: &mut PgConnection,
    event: &StoredEvent,
    table: &str,
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<(), ProjectionError> {
    let result = query
        .execute(&mut *connection)
        .await
        .map_err(database_error(event))?;
    expect_one_row(result, event, table)
}

async fn apply_ambassador(
    connection: &mut PgConnection,
    event: &StoredEvent,
    ambassador_event: AmbassadorEvent,
) -> Result<(), ProjectionError> {
    let ambassador_id = aggregate_uuid(event)?;
    let query = match ambassador_event {
        AmbassadorEvent::AmbassadorEnrolled {
            agency_id,
            kind,
            at,
            ..
        } => sqlx::query(
            "INSERT INTO ambassador_facts (ambassador_id, agency_id, kind, active, enrolled_at,
                                           deactivated_at)
             VALUES ($1, $2, $3, true, $4, NULL)
             ON CONFLICT (ambassador_id) DO UPDATE
                SET agency_id = EXCLUDED.agency_id, kind = EXCLUDED.kind,
                    active = EXCLUDED.active, enrolled_at = EXCLUDED.enrolled_at,
                    deactivated_at = EXCLUDED.deactivated_at",
        )
        .bind(ambassador_id)
        .bind(agency_id.0)
        .bind(kind.as_str())
        .bind(at),
        AmbassadorEvent::AmbassadorUpdated {
            kind: Some(kind), ..
        } => sqlx::query("UPDATE ambassador_facts SET kind = $2 WHERE ambassador_id = $1")
            .bind(ambassador_id)
            .bind(kind.as_str()),
        // Contact details and consent are personal or not analysed.
        AmbassadorEvent::AmbassadorUpdated { kind: None, .. } => return Ok(()),
        AmbassadorEvent::AmbassadorDeactivated { at } => sqlx::query(
            "UPDATE ambassador_facts SET active = false, deactivated_at = $2
              WHERE ambassador_id = $1",
        )
        .bind(ambassador_id)
        .bind(at),
    };
    update_fact(connection, event, "ambassador_facts", query).await
}

async fn apply_referral(
    connection: &mut PgConnection,
    event: &StoredEvent,
    referral_event: ReferralEvent,
) -> Result<(), ProjectionError> {
    let referral_id = aggregate_uuid(event)?;
    let set_status = |status: ReferralStatus| {
        sqlx::query("UPDATE referral_facts SET status = $2 WHERE referral_id = $1")
            .bind(referral_id)
            .bind(status.as_str())
    };
    let query = match referral_event {
        ReferralEvent::ReferralSubmitted {
            agency_id,
            program_id,
            currency,
            ambassador_id,
            ambassador_kind,
            status,
            eligibility,
            at,
            ..
        } => sqlx::query(
            "INSERT INTO referral_facts (
                 referral_id, agency_id, program_id, ambassador_id, ambassador_kind, currency,
                 submitted_at, contacted_at, interviewing_at, hired_at,
                 first_bonus_milestone_at, status, eligible, ineligible_reason, duplicate)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, NULL, NULL, $8, $9, $10, $11)
             ON CONFLICT (referral_id) DO UPDATE
                SET agency_id = EXCLUDED.agency_id, program_id = EXCLUDED.program_id,
                    ambassador_id = EXCLUDED.ambassador_id,
                    ambassador_kind = EXCLUDED.ambassador_kind, currency = EXCLUDED.currency,
                    submitted_at = EXCLUDED.submitted_at, status = EXCLUDED.status,
                    eligible = EXCLUDED.eligible,
                    ineligible_reason = EXCLUDED.ineligible_reason,
                    duplicate = EXCLUDED.duplicate",
        )
        .bind(referral_id)
        .bind(agency_id.0)
        .bind(program_id.0)
        .bind(ambassador_id.0)
        .bind(ambassador_kind.as_str())
        .bind(currency.as_str().to_owned())
        .bind(at)
        .bind(status.as_str())
        .bind(eligibility.is_eligible())
        .bind(ineligible_reason_code(eligibility))
        .bind(status == ReferralStatus::Duplicate),
        ReferralEvent::ReferralContacted { at } => sqlx::query(
            "UPDATE referral_facts SET status = $2, contacted_at = $3 WHERE referral_id = $1",
        )
        .bind(referral_id)
        .bind(ReferralStatus::Contacted.as_str())
        .bind(at),
        ReferralEvent::ReferralInterviewing { at } => sqlx::query(
            "UPDATE referral_facts SET status = $2, interviewing_at = $3 WHERE referral_id = $1",
        )
        .bind(referral_id)
        .bind(ReferralStatus::Interviewing.as_str())
        .bind(at),
        ReferralEvent::ReferralHired { at, .. } => sqlx::query(
            "UPDATE referral_facts SET status = $2, hired_at = $3 WHERE referral_id = $1",
        )
        .bind(referral_id)
        .bind(ReferralStatus::Hired.as_str())
        .bind(at),
        ReferralEvent::EligibilityChanged { eligibility, .. } => sqlx::query(
            "UPDATE referral_facts SET eligible = $2, ineligible_reason = $3
              WHERE referral_id = $1",
        )
        .bind(referral_id)
        .bind(eligibility.is_eligible())
        .bind(ineligible_reason_code(eligibility)),
        // The funnel's last stage is the first bonus earned by working (hours or days),
        // not the hire bonus, which the hired stage already counts.
        ReferralEvent::MilestoneReached { milestone, at, .. }
            if milestone.trigger != Trigger::Hired =>
        {
            sqlx::query(
                "UPDATE referral_facts
                    SET first_bonus_milestone_at = coalesce(first_bonus_milestone_at, $2)
                  WHERE referral_id = $1",
            )
            .bind(referral_id)
            .bind(at)
        }
        ReferralEvent::ReferralDeclined { .. } => set_status(ReferralStatus::Declined),
        ReferralEvent::ReferralWithdrawn { .. } => set_status(ReferralStatus::Withdrawn),
        ReferralEvent::ReferralExpired { .. } => set_status(ReferralStatus::Expired),
        ReferralEvent::ReferralCompleted { .. } => set_status(ReferralStatus::Completed),
        // Recruiters, hours and placement ends are not part of the facts.
        ReferralEvent::RecruiterAssigned { .. }
        | ReferralEvent::MilestoneReached { .. }
        | ReferralEvent::HoursRecorded { .. }
        | ReferralEvent::HoursCorrected { .. }
        | ReferralEvent::HoursAccrued { .. }
        | ReferralEvent::HoursTotalLowered { .. }
        | ReferralEvent::PlacementEnded { .. } => return Ok(()),
    };
    update_fact(connection, event, "referral_facts", query).await
}

async fn apply_payout(
    connection: &mut PgConnection,
    event: &StoredEvent,
    payout_event: PayoutEvent,
) -> Result<(), ProjectionError> {
    let payout_id: Uuid = aggregate_uuid(event)?;
    let close = |status: PayoutStatus, at| {
        sqlx::query("UPDATE payout_facts SET status = $2, closed_at = $3 WHERE payout_id = $1")
            .bind(payout_id)
            .bind(status.as_str())
            .bind(at)
    };
    let query = match payout_event {
        PayoutEvent::PayoutRequested {
            agency_id,
            referral_id,
            program_id,
            ambassador_id,
            recipient,
            milestone,
            amount,
            at,
            ..
        } => sqlx::query(
            "INSERT INTO payout_facts (
                 payout_id, agency_id, program_id, referral_id, ambassador_id, recipient,
                 milestone, amount, currency, status, requested_at, approved_at, exported_at,
                 paid_on, closed_at, void_reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, NULL, NULL)
             ON CONFLICT (payout_id) DO UPDATE
                SET agency_id = EXCLUDED.agency_id, program_id = EXCLUDED.program_id,
                    referral_id = EXCLUDED.referral_id,
                    ambassador_id = EXCLUDED.ambassador_id, recipient = EXCLUDED.recipient,
                    milestone = EXCLUDED.milestone, amount = EXCLUDED.amount,
                    currency = EXCLUDED.currency, status = EXCLUDED.status,
                    requested_at = EXCLUDED.requested_at",
        )
        .bind(payout_id)
        .bind(agency_id.0)
        .bind(program_id.0)
        .bind(referral_id.0)
        .bind(ambassador_id.0)
        .bind(recipient.as_str())
        .bind(milestone.as_str().to_owned())
        .bind(amount.amount())
        .bind(amount.currency().as_str().to_owned())
        .bind(PayoutStatus::PendingApproval.as_str())
        .bind(at),
        PayoutEvent::PayoutApproved { at, .. } => sqlx::query(
            "UPDATE payout_facts SET status = $2, approved_at = $3 WHERE payout_id = $1",
        )
        .bind(payout_id)
        .bind(PayoutStatus::Approved.as_str())
        .bind(at),
        PayoutEvent::PayoutRejected { at, .. } => close(PayoutStatus::Rejected, at),
        PayoutEvent::PayoutVoided {
            reason_code, at, ..
        } => sqlx::query(
            "UPDATE payout_facts SET status = $2, closed_at = $3, void_reason = $4
              WHERE payout_id = $1",
        )
        .bind(payout_id)
        .bind(PayoutStatus::Voided.as_str())
        .bind(at)
        .bind(reason_code.as_str()),
        PayoutEvent::PayoutExported { at, .. } => sqlx::query(
            "UPDATE payout_facts SET status = $2, exported_at = $3 WHERE payout_id = $1",
        )
        .bind(payout_id)
        .bind(PayoutStatus::Exported.as_str())
        .bind(at),
        // The payroll reference is left out, because it may identify the payee.
        PayoutEvent::PayoutPaid { paid_on, .. } => {
            sqlx::query("UPDATE payout_facts SET status = $2, paid_on = $3 WHERE payout_id = $1")
                .bind(payout_id)
                .bind(PayoutStatus::Paid.as_str())
                .bind(paid_on)
        }
        PayoutEvent::PayoutReversed { at, .. } => close(PayoutStatus::Reversed, at),
        // Holds are a workflow detail of finance, not a fact for analysis.
        PayoutEvent::PayoutHeld { .. } | PayoutEvent::PayoutReleased { .. } => return Ok(()),
    };
    update_fact(connection, event, "payout_facts", query).await
}
