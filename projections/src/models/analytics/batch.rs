//! The batch path of the analytics projection: per fact table, one statement reads the
//! touched rows, the batch's events are applied to them in memory, and one `UNNEST`
//! statement writes each changed row once.
//!
//! Each `fold_*` function makes, column by column, the change that the matching
//! `apply_*` function of the parent module makes with SQL, so both paths leave the same
//! rows. Like those, it copies no personal data into the facts.

use chrono::{DateTime, NaiveDate, Utc};
use referrals_domain::ambassador::AmbassadorEvent;
use referrals_domain::payout::{PayoutEvent, PayoutStatus};
use referrals_domain::referral::{ReferralEvent, ReferralStatus};
use referrals_domain::terms::Trigger;
use sqlx::PgConnection;
use uuid::Uuid;

use super::super::batch_rows::{column, KeyedRow, TouchedRows};
use super::super::{aggregate_uuid, decode, ineligible_reason_code, Decoded};
use crate::models::batch_database_error;
use crate::{ProjectionError, StoredEvent};

/// Applies `events` in order to the three fact tables.
///
/// # Errors
/// [`ProjectionError::Poison`] for an event that the event-by-event path rejects, and
/// as [`batch_database_error`].
pub(super) async fn apply_batch(
    connection: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), ProjectionError> {
    let mut ambassadors = Vec::new();
    let mut referrals = Vec::new();
    let mut payouts = Vec::new();
    for event in events {
        match decode(event)? {
            Some(Decoded::Ambassador(payload)) => {
                ambassadors.push((event, aggregate_uuid(event)?, payload));
            }
            Some(Decoded::Referral(payload)) => {
                referrals.push((event, aggregate_uuid(event)?, payload));
            }
            Some(Decoded::Payout(payload)) => {
                payouts.push((event, aggregate_uuid(event)?, payload));
            }
            Some(Decoded::Program(_)) | None => {}
        }
    }

    if !ambassadors.is_empty() {
        let keys = ambassadors.iter().map(|(_, key, _)| *key).collect();
        let mut rows = TouchedRows::read(connection, keys).await?;
        for (event, key, payload) in ambassadors {
            fold_ambassador(&mut rows, event, key, payload)?;
        }
        write_ambassador_facts(connection, &rows.into_changed()).await?;
    }
    if !referrals.is_empty() {
        let keys = referrals.iter().map(|(_, key, _)| *key).collect();
        let mut rows = TouchedRows::read(connection, keys).await?;
        for (event, key, payload) in referrals {
            fold_referral(&mut rows, event, key, payload)?;
        }
        write_referral_facts(connection, &rows.into_changed()).await?;
    }
    if !payouts.is_empty() {
        let keys = payouts.iter().map(|(_, key, _)| *key).collect();
        let mut rows = TouchedRows::read(connection, keys).await?;
        for (event, key, payload) in payouts {
            fold_payout(&mut rows, event, key, payload)?;
        }
        write_payout_facts(connection, &rows.into_changed()).await?;
    }
    Ok(())
}

/// A row of `ambassador_facts`.
#[derive(Debug, sqlx::FromRow)]
struct AmbassadorFact {
    ambassador_id: Uuid,
    agency_id: Uuid,
    kind: String,
    active: bool,
    enrolled_at: DateTime<Utc>,
    deactivated_at: Option<DateTime<Utc>>,
}

impl KeyedRow for AmbassadorFact {
    const TABLE: &'static str = "ambassador_facts";
    const KEY_COLUMN: &'static str = "ambassador_id";

    fn key(&self) -> Uuid {
        self.ambassador_id
    }
}

fn fold_ambassador(
    rows: &mut TouchedRows<AmbassadorFact>,
    event: &StoredEvent,
    ambassador_id: Uuid,
    payload: AmbassadorEvent,
) -> Result<(), ProjectionError> {
    match payload {
        // The event-by-event upsert replaces every column of an existing row.
        AmbassadorEvent::AmbassadorEnrolled {
            agency_id,
            kind,
            at,
            ..
        } => rows.put(AmbassadorFact {
            ambassador_id,
            agency_id: agency_id.0,
            kind: kind.as_str().to_owned(),
            active: true,
            enrolled_at: at,
            deactivated_at: None,
        }),
        AmbassadorEvent::AmbassadorUpdated {
            kind: Some(kind), ..
        } => rows.existing(ambassador_id, event)?.kind = kind.as_str().to_owned(),
        AmbassadorEvent::AmbassadorUpdated { kind: None, .. } => {}
        AmbassadorEvent::AmbassadorDeactivated { at } => {
            let row = rows.existing(ambassador_id, event)?;
            row.active = false;
            row.deactivated_at = Some(at);
        }
    }
    Ok(())
}

async fn write_ambassador_facts(
    connection: &mut PgConnection,
    rows: &[AmbassadorFact],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ambassador_facts (ambassador_id, agency_id, kind, active, enrolled_at,
                                       deactivated_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::boolean[],
                              $5::timestamptz[], $6::timestamptz[])
         ON CONFLICT (ambassador_id) DO UPDATE
            SET agency_id = EXCLUDED.agency_id, kind = EXCLUDED.kind,
                active = EXCLUDED.active, enrolled_at = EXCLUDED.enrolled_at,
                deactivated_at = EXCLUDED.deactivated_at",
    )
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.agency_id))
    .bind(column(rows, |row| row.kind.as_str()))
    .bind(column(rows, |row| row.active))
    .bind(column(rows, |row| row.enrolled_at))
    .bind(column(rows, |row| row.deactivated_at))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error(AmbassadorFact::TABLE))?;
    Ok(())
}

/// A row of `referral_facts`.
#[derive(Debug, sqlx::FromRow)]
struct ReferralFact {
    referral_id: Uuid,
    agency_id: Uuid,
    program_id: Uuid,
    ambassador_id: Uuid,
    ambassador_kind: String,
    currency: String,
    submitted_at: DateTime<Utc>,
    contacted_at: Option<DateTime<Utc>>,
    interviewing_at: Option<DateTime<Utc>>,
    hired_at: Option<DateTime<Utc>>,
    first_bonus_milestone_at: Option<DateTime<Utc>>,
    status: String,
    eligible: bool,
    ineligible_reason: Option<String>,
    duplicate: bool,
}

impl KeyedRow for ReferralFact {
    const TABLE: &'static str = "referral_facts";
    const KEY_COLUMN: &'static str = "referral_id";

    fn key(&self) -> Uuid {
        self.referral_id
    }
}

fn fold_referral(
    rows: &mut TouchedRows<ReferralFact>,
    event: &StoredEvent,
    referral_id: Uuid,
    payload: ReferralEvent,
) -> Result<(), ProjectionError> {
    match payload {
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
        } => {
            let mut row = ReferralFact {
                referral_id,
                agency_id: agency_id.0,
                program_id: program_id.0,
                ambassador_id: ambassador_id.0,
                ambassador_kind: ambassador_kind.as_str().to_owned(),
                currency: currency.as_str().to_owned(),
                submitted_at: at,
                contacted_at: None,
                interviewing_at: None,
                hired_at: None,
                first_bonus_milestone_at: None,
                status: status.as_str().to_owned(),
                eligible: eligibility.is_eligible(),
                ineligible_reason: ineligible_reason_code(eligibility).map(str::to_owned),
                duplicate: status == ReferralStatus::Duplicate,
            };
            // The event-by-event upsert keeps the stage times of an existing row.
            if let Some(previous) = rows.take(referral_id) {
                row.contacted_at = previous.contacted_at;
                row.interviewing_at = previous.interviewing_at;
                row.hired_at = previous.hired_at;
                row.first_bonus_milestone_at = previous.first_bonus_milestone_at;
            }
            rows.put(row);
        }
        ReferralEvent::ReferralContacted { at } => {
            let row = rows.existing(referral_id, event)?;
            row.status = ReferralStatus::Contacted.as_str().to_owned();
            row.contacted_at = Some(at);
        }
        ReferralEvent::ReferralInterviewing { at } => {
            let row = rows.existing(referral_id, event)?;
            row.status = ReferralStatus::Interviewing.as_str().to_owned();
            row.interviewing_at = Some(at);
        }
        ReferralEvent::ReferralHired { at, .. } => {
            let row = rows.existing(referral_id, event)?;
            row.status = ReferralStatus::Hired.as_str().to_owned();
            row.hired_at = Some(at);
        }
        ReferralEvent::EligibilityChanged { eligibility, .. } => {
            let row = rows.existing(referral_id, event)?;
            row.eligible = eligibility.is_eligible();
            row.ineligible_reason = ineligible_reason_code(eligibility).map(str::to_owned);
        }
        ReferralEvent::MilestoneReached { milestone, at, .. }
            if milestone.trigger != Trigger::Hired =>
        {
            let row = rows.existing(referral_id, event)?;
            row.first_bonus_milestone_at.get_or_insert(at);
        }
        ReferralEvent::ReferralDeclined { .. } => {
            set_referral_status(rows, event, referral_id, ReferralStatus::Declined)?;
        }
        ReferralEvent::ReferralWithdrawn { .. } => {
            set_referral_status(rows, event, referral_id, ReferralStatus::Withdrawn)?;
        }
        ReferralEvent::ReferralExpired { .. } => {
            set_referral_status(rows, event, referral_id, ReferralStatus::Expired)?;
        }
        ReferralEvent::ReferralCompleted { .. } => {
            set_referral_status(rows, event, referral_id, ReferralStatus::Completed)?;
        }
        ReferralEvent::RecruiterAssigned { .. }
        | ReferralEvent::MilestoneReached { .. }
        | ReferralEvent::HoursRecorded { .. }
        | ReferralEvent::HoursCorrected { .. }
        | ReferralEvent::HoursAccrued { .. }
        | ReferralEvent::HoursTotalLowered { .. }
        | ReferralEvent::PlacementEnded { .. } => {}
    }
    Ok(())
}

fn set_referral_status(
    rows: &mut TouchedRows<ReferralFact>,
    event: &StoredEvent,
    referral_id: Uuid,
    status: ReferralStatus,
) -> Result<(), ProjectionError> {
    rows.existing(referral_id, event)?.status = status.as_str().to_owned();
    Ok(())
}

async fn write_referral_facts(
    connection: &mut PgConnection,
    rows: &[ReferralFact],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO referral_facts (
             referral_id, agency_id, program_id, ambassador_id, ambassador_kind, currency,
             submitted_at, contacted_at, interviewing_at, hired_at,
             first_bonus_milestone_at, status, eligible, ineligible_reason, duplicate)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                              $6::text[], $7::timestamptz[], $8::timestamptz[],
                              $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
                              $12::text[], $13::boolean[], $14::text[], $15::boolean[])
         ON CONFLICT (referral_id) DO UPDATE
            SET agency_id = EXCLUDED.agency_id, program_id = EXCLUDED.program_id,
                ambassador_id = EXCLUDED.ambassador_id,
                ambassador_kind = EXCLUDED.ambassador_kind, currency = EXCLUDED.currency,
                submitted_at = EXCLUDED.submitted_at, contacted_at = EXCLUDED.contacted_at,
                interviewing_at = EXCLUDED.interviewing_at, hired_at = EXCLUDED.hired_at,
                first_bonus_milestone_at = EXCLUDED.first_bonus_milestone_at,
                status = EXCLUDED.status, eligible = EXCLUDED.eligible,
                ineligible_reason = EXCLUDED.ineligible_reason,
                duplicate = EXCLUDED.duplicate",
    )
    .bind(column(rows, |row| row.referral_id))
    .bind(column(rows, |row| row.agency_id))
    .bind(column(rows, |row| row.program_id))
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.ambassador_kind.as_str()))
    .bind(column(rows, |row| row.currency.as_str()))
    .bind(column(rows, |row| row.submitted_at))
    .bind(column(rows, |row| row.contacted_at))
    .bind(column(rows, |row| row.interviewing_at))
    .bind(column(rows, |row| row.hired_at))
    .bind(column(rows, |row| row.first_bonus_milestone_at))
    .bind(column(rows, |row| row.status.as_str()))
    .bind(column(rows, |row| row.eligible))
    .bind(column(rows, |row| row.ineligible_reason.as_deref()))
    .bind(column(rows, |row| row.duplicate))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error(ReferralFact::TABLE))?;
    Ok(())
}

/// A row of `payout_facts`.
#[derive(Debug, sqlx::FromRow)]
struct PayoutFact {
    payout_id: Uuid,
    agency_id: Uuid,
    program_id: Uuid,
    referral_id: Uuid,
    ambassador_id: Uuid,
    recipient: String,
    milestone: String,
    amount: i64,
    currency: String,
    status: String,
    requested_at: DateTime<Utc>,
    approved_at: Option<DateTime<Utc>>,
    exported_at: Option<DateTime<Utc>>,
    paid_on: Option<NaiveDate>,
    closed_at: Option<DateTime<Utc>>,
    void_reason: Option<String>,
}

impl KeyedRow for PayoutFact {
    const TABLE: &'static str = "payout_facts";
    const KEY_COLUMN: &'static str = "payout_id";

    fn key(&self) -> Uuid {
        self.payout_id
    }
}

fn fold_payout(
    rows: &mut TouchedRows<PayoutFact>,
    event: &StoredEvent,
    payout_id: Uuid,
    payload: PayoutEvent,
) -> Result<(), ProjectionError> {
    match payload {
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
        } => {
            let mut row = PayoutFact {
                payout_id,
                agency_id: agency_id.0,
                program_id: program_id.0,
                referral_id: referral_id.0,
                ambassador_id: ambassador_id.0,
                recipient: recipient.as_str().to_owned(),
                milestone: milestone.as_str().to_owned(),
                amount: amount.amount(),
                currency: amount.currency().as_str().to_owned(),
                status: PayoutStatus::PendingApproval.as_str().to_owned(),
                requested_at: at,
                approved_at: None,
                exported_at: None,
                paid_on: None,
                closed_at: None,
                void_reason: None,
            };
            // The event-by-event upsert keeps the later steps of an existing row.
            if let Some(previous) = rows.take(payout_id) {
                row.approved_at = previous.approved_at;
                row.exported_at = previous.exported_at;
                row.paid_on = previous.paid_on;
                row.closed_at = previous.closed_at;
                row.void_reason = previous.void_reason;
            }
            rows.put(row);
        }
        PayoutEvent::PayoutApproved { at, .. } => {
            let row = rows.existing(payout_id, event)?;
            row.status = PayoutStatus::Approved.as_str().to_owned();
            row.approved_at = Some(at);
        }
        PayoutEvent::PayoutRejected { at, .. } => {
            close_payout(rows, event, payout_id, PayoutStatus::Rejected, at)?;
        }
        PayoutEvent::PayoutVoided {
            reason_code, at, ..
        } => {
            let row = close_payout(rows, event, payout_id, PayoutStatus::Voided, at)?;
            row.void_reason = Some(reason_code.as_str().to_owned());
        }
        PayoutEvent::PayoutExported { at, .. } => {
            let row = rows.existing(payout_id, event)?;
            row.status = PayoutStatus::Exported.as_str().to_owned();
            row.exported_at = Some(at);
        }
        PayoutEvent::PayoutPaid { paid_on, .. } => {
            let row = rows.existing(payout_id, event)?;
            row.status = PayoutStatus::Paid.as_str().to_owned();
            row.paid_on = Some(paid_on);
        }
        PayoutEvent::PayoutReversed { at, .. } => {
            close_payout(rows, event, payout_id, PayoutStatus::Reversed, at)?;
        }
        PayoutEvent::PayoutHeld { .. } | PayoutEvent::PayoutReleased { .. } => {}
    }
    Ok(())
}

/// Records a rejection, void or reversal and returns the row.
fn close_payout<'r>(
    rows: &'r mut TouchedRows<PayoutFact>,
    event: &StoredEvent,
    payout_id: Uuid,
    status: PayoutStatus,
    at: DateTime<Utc>,
) -> Result<&'r mut PayoutFact, ProjectionError> {
    let row = rows.existing(payout_id, event)?;
    row.status = status.as_str().to_owned();
    row.closed_at = Some(at);
    Ok(row)
}

async fn write_payout_facts(
    connection: &mut PgConnection,
    rows: &[PayoutFact],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO payout_facts (
             payout_id, agency_id, program_id, referral_id, ambassador_id, recipient,
             milestone, amount, currency, status, requested_at, approved_at, exported_at,
             paid_on, closed_at, void_reason)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[],
                              $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[],
                              $11::timestamptz[], $12::timestamptz[], $13::timestamptz[],
                              $14::date[], $15::timestamptz[], $16::text[])
         ON CONFLICT (payout_id) DO UPDATE
            SET agency_id = EXCLUDED.agency_id, program_id = EXCLUDED.program_id,
                referral_id = EXCLUDED.referral_id, ambassador_id = EXCLUDED.ambassador_id,
                recipient = EXCLUDED.recipient, milestone = EXCLUDED.milestone,
                amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                status = EXCLUDED.status, requested_at = EXCLUDED.requested_at,
                approved_at = EXCLUDED.approved_at, exported_at = EXCLUDED.exported_at,
                paid_on = EXCLUDED.paid_on, closed_at = EXCLUDED.closed_at,
                void_reason = EXCLUDED.void_reason",
    )
    .bind(column(rows, |row| row.payout_id))
    .bind(column(rows, |row| row.agency_id))
    .bind(column(rows, |row| row.program_id))
    .bind(column(rows, |row| row.referral_id))
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.recipient.as_str()))
    .bind(column(rows, |row| row.milestone.as_str()))
    .bind(column(rows, |row| row.amount))
    .bind(column(rows, |row| row.currency.as_str()))
    .bind(column(rows, |row| row.status.as_str()))
    .bind(column(rows, |row| row.requested_at))
    .bind(column(rows, |row| row.approved_at))
    .bind(column(rows, |row| row.exported_at))
    .bind(column(rows, |row| row.paid_on))
    .bind(column(rows, |row| row.closed_at))
    .bind(column(rows, |row| row.void_reason.as_deref()))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error(PayoutFact::TABLE))?;
    Ok(())
}
