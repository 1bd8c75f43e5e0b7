//! Reads and writes of the four tables for the batch path: the stored rows and figures a
//! batch needs, in one statement each, and one multi-row upsert per table.

use std::collections::HashMap;

use referrals_domain::terms::Recipient;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{EarningsRow, PayoutFigures, PayoutLookup, ReferralCounts, ReferralLookup, SummaryRow};
use crate::models::batch_database_error;
use crate::ProjectionError;

pub(super) async fn read_referral_lookups(
    connection: &mut PgConnection,
    referral_ids: &[Uuid],
) -> Result<HashMap<Uuid, ReferralLookup>, ProjectionError> {
    if referral_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<ReferralLookup> = sqlx::query_as(
        "SELECT referral_id, ambassador_id, duplicate, hired,
                milestones_reached::bigint AS milestones_reached
           FROM ambassador_summary_referrals WHERE referral_id = ANY($1)",
    )
    .bind(referral_ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_summary_referrals"))?;
    Ok(rows.into_iter().map(|row| (row.referral_id, row)).collect())
}

pub(super) async fn read_payout_lookups(
    connection: &mut PgConnection,
    payout_ids: &[Uuid],
) -> Result<HashMap<Uuid, PayoutLookup>, ProjectionError> {
    if payout_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<PayoutLookup> = sqlx::query_as(
        "SELECT payout_id, ambassador_id, recipient, amount, currency, status
           FROM ambassador_summary_payouts WHERE payout_id = ANY($1)",
    )
    .bind(payout_ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_summary_payouts"))?;
    Ok(rows.into_iter().map(|row| (row.payout_id, row)).collect())
}

pub(super) async fn read_summaries(
    connection: &mut PgConnection,
    ambassador_ids: &[Uuid],
) -> Result<HashMap<Uuid, SummaryRow>, ProjectionError> {
    if ambassador_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<SummaryRow> = sqlx::query_as(
        "SELECT ambassador_id, agency_id, kind, active,
                referrals_submitted::bigint AS referrals_submitted,
                referrals_duplicate::bigint AS referrals_duplicate,
                referrals_hired::bigint AS referrals_hired,
                milestones_reached::bigint AS milestones_reached,
                payouts_pending::bigint AS payouts_pending,
                payouts_approved::bigint AS payouts_approved,
                payouts_paid::bigint AS payouts_paid, updated_at
           FROM ambassador_summaries WHERE ambassador_id = ANY($1)",
    )
    .bind(ambassador_ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_summaries"))?;
    Ok(rows
        .into_iter()
        .map(|row| (row.ambassador_id, row))
        .collect())
}

pub(super) async fn read_earnings(
    connection: &mut PgConnection,
    ambassador_ids: &[Uuid],
) -> Result<HashMap<(Uuid, String), EarningsRow>, ProjectionError> {
    if ambassador_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<EarningsRow> = sqlx::query_as(
        "SELECT ambassador_id, currency, agency_id, pending_amount, earned_amount, paid_amount,
                updated_at
           FROM ambassador_earnings WHERE ambassador_id = ANY($1)",
    )
    .bind(ambassador_ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_earnings"))?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.ambassador_id, row.currency.clone()), row))
        .collect())
}

/// Reads the referral figures of `ambassador_ids` from the lookup rows, grouped by the
/// flags that [`ReferralCounts::add`] counts.
pub(super) async fn read_referral_counts(
    connection: &mut PgConnection,
    ambassador_ids: &[Uuid],
) -> Result<HashMap<Uuid, ReferralCounts>, ProjectionError> {
    if ambassador_ids.is_empty() {
        return Ok(Default::default());
    }
    let groups: Vec<(Uuid, bool, bool, i64, i64)> = sqlx::query_as(
        "SELECT ambassador_id, duplicate, hired, count(*),
                coalesce(sum(milestones_reached), 0)::bigint
           FROM ambassador_summary_referrals WHERE ambassador_id = ANY($1)
          GROUP BY ambassador_id, duplicate, hired",
    )
    .bind(ambassador_ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_summary_referrals"))?;
    let mut counts: HashMap<Uuid, ReferralCounts> = HashMap::new();
    for (ambassador_id, duplicate, hired, count, milestones) in groups {
        counts
            .entry(ambassador_id)
            .or_default()
            .add(duplicate, hired, count, milestones);
    }
    Ok(counts)
}

/// Reads the figures of the own payouts of `ambassador_ids` from the lookup rows, grouped
/// by status, per ambassador and per ambassador and currency.
pub(super) async fn read_payout_figures(
    connection: &mut PgConnection,
    ambassador_ids: &[Uuid],
) -> Result<
    (
        HashMap<Uuid, PayoutFigures>,
        HashMap<(Uuid, String), PayoutFigures>,
    ),
    ProjectionError,
> {
    if ambassador_ids.is_empty() {
        return Ok(Default::default());
    }
    let groups: Vec<(Uuid, String, String, i64, i64)> = sqlx::query_as(
        "SELECT ambassador_id, currency, status, count(*), sum(amount)::bigint
           FROM ambassador_summary_payouts
          WHERE ambassador_id = ANY($1) AND recipient = $2
          GROUP BY ambassador_id, currency, status",
    )
    .bind(ambassador_ids)
    .bind(Recipient::Ambassador.as_str())
    .fetch_all(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_summary_payouts"))?;
    let mut counts: HashMap<Uuid, PayoutFigures> = HashMap::new();
    let mut totals: HashMap<(Uuid, String), PayoutFigures> = HashMap::new();
    for (ambassador_id, currency, status, count, amount) in groups {
        counts
            .entry(ambassador_id)
            .or_default()
            .add(&status, count, amount);
        totals
            .entry((ambassador_id, currency))
            .or_default()
            .add(&status, count, amount);
    }
    Ok((counts, totals))
}

/// Collects one column of `rows` for an `UNNEST` parameter.
fn column<'r, R, T>(rows: &[&'r R], value: impl Fn(&'r R) -> T) -> Vec<T> {
    rows.iter().map(|row| value(row)).collect()
}

pub(super) async fn write_referral_lookups(
    connection: &mut PgConnection,
    rows: &[&ReferralLookup],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ambassador_summary_referrals (
             referral_id, ambassador_id, duplicate, hired, milestones_reached)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::boolean[], $4::boolean[],
                              $5::bigint[])
         ON CONFLICT (referral_id) DO UPDATE
            SET ambassador_id = EXCLUDED.ambassador_id, duplicate = EXCLUDED.duplicate,
                hired = EXCLUDED.hired, milestones_reached = EXCLUDED.milestones_reached",
    )
    .bind(column(rows, |row| row.referral_id))
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.duplicate))
    .bind(column(rows, |row| row.hired))
    .bind(column(rows, |row| row.milestones_reached))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_summary_referrals"))?;
    Ok(())
}

pub(super) async fn write_payout_lookups(
    connection: &mut PgConnection,
    rows: &[&PayoutLookup],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ambassador_summary_payouts (
             payout_id, ambassador_id, recipient, amount, currency, status)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[],
                              $6::text[])
         ON CONFLICT (payout_id) DO UPDATE
            SET ambassador_id = EXCLUDED.ambassador_id, recipient = EXCLUDED.recipient,
                amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                status = EXCLUDED.status",
    )
    .bind(column(rows, |row| row.payout_id))
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.recipient.as_str()))
    .bind(column(rows, |row| row.amount))
    .bind(column(rows, |row| row.currency.as_str()))
    .bind(column(rows, |row| row.status.as_str()))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_summary_payouts"))?;
    Ok(())
}

pub(super) async fn write_summaries(
    connection: &mut PgConnection,
    rows: &[&SummaryRow],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ambassador_summaries (
             ambassador_id, agency_id, kind, active, referrals_submitted, referrals_duplicate,
             referrals_hired, milestones_reached, payouts_pending, payouts_approved,
             payouts_paid, updated_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::boolean[], $5::bigint[],
                              $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                              $10::bigint[], $11::bigint[], $12::timestamptz[])
         ON CONFLICT (ambassador_id) DO UPDATE
            SET agency_id = EXCLUDED.agency_id, kind = EXCLUDED.kind, active = EXCLUDED.active,
                referrals_submitted = EXCLUDED.referrals_submitted,
                referrals_duplicate = EXCLUDED.referrals_duplicate,
                referrals_hired = EXCLUDED.referrals_hired,
                milestones_reached = EXCLUDED.milestones_reached,
                payouts_pending = EXCLUDED.payouts_pending,
                payouts_approved = EXCLUDED.payouts_approved,
                payouts_paid = EXCLUDED.payouts_paid, updated_at = EXCLUDED.updated_at",
    )
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.agency_id))
    .bind(column(rows, |row| row.kind.as_str()))
    .bind(column(rows, |row| row.active))
    .bind(column(rows, |row| row.referrals_submitted))
    .bind(column(rows, |row| row.referrals_duplicate))
    .bind(column(rows, |row| row.referrals_hired))
    .bind(column(rows, |row| row.milestones_reached))
    .bind(column(rows, |row| row.payouts_pending))
    .bind(column(rows, |row| row.payouts_approved))
    .bind(column(rows, |row| row.payouts_paid))
    .bind(column(rows, |row| row.updated_at))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_summaries"))?;
    Ok(())
}

pub(super) async fn write_earnings(
    connection: &mut PgConnection,
    rows: &[&EarningsRow],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ambassador_earnings (
             ambassador_id, currency, agency_id, pending_amount, earned_amount, paid_amount,
             updated_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::bigint[],
                              $6::bigint[], $7::timestamptz[])
         ON CONFLICT (ambassador_id, currency) DO UPDATE
            SET agency_id = EXCLUDED.agency_id, pending_amount = EXCLUDED.pending_amount,
                earned_amount = EXCLUDED.earned_amount, paid_amount = EXCLUDED.paid_amount,
                updated_at = EXCLUDED.updated_at",
    )
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.currency.as_str()))
    .bind(column(rows, |row| row.agency_id))
    .bind(column(rows, |row| row.pending_amount))
    .bind(column(rows, |row| row.earned_amount))
    .bind(column(rows, |row| row.paid_amount))
    .bind(column(rows, |row| row.updated_at))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error("ambassador_earnings"))?;
    Ok(())
}
