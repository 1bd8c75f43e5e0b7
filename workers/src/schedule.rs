//! The `referral_schedule` projection: the due dates of the scheduled referral rules,
//! so a job reads only the referrals that are due.

use async_trait::async_trait;
use chrono::TimeDelta;
use referrals_domain::referral::{ReferralEvent, ReferralStatus};
use referrals_domain::terms::Trigger;
use referrals_projections::{Projection, ProjectionError, StoredEvent};
use sqlx::PgConnection;
use uuid::Uuid;

/// Keeps `scheduling.referral_schedule`: the hire deadline of each referral waiting for
/// a hire, and the day its next `days_employed` milestone falls due.
#[derive(Debug, Default)]
pub struct ReferralScheduleProjection;

#[async_trait]
impl Projection for ReferralScheduleProjection {
    fn name(&self) -> &'static str {
        "referral_schedule"
    }

    fn schema(&self) -> &'static str {
        "scheduling"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["referral_schedule"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "referral" {
            return Ok(());
        }
        let referral_id: Uuid = event.aggregate_id.parse().map_err(|_| {
            ProjectionError::Poison(format!(
                "{} has an aggregate id that is not a UUID",
                event.describe()
            ))
        })?;
        match event.decode::<ReferralEvent>()? {
            ReferralEvent::ReferralSubmitted {
                terms, status, at, ..
            } => {
                // A duplicate owns nothing and earns nothing, so no rule applies to it.
                if status != ReferralStatus::Submitted {
                    return Ok(());
                }
                let expires_at = at
                    .checked_add_signed(TimeDelta::days(i64::from(terms.hire_deadline_days)))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                let thresholds: Vec<i32> = terms
                    .bonus_schedule
                    .iter()
                    .filter(|milestone| milestone.trigger == Trigger::DaysEmployed)
                    .filter_map(|milestone| milestone.threshold.as_whole())
                    .filter_map(|days| i32::try_from(days).ok())
                    .collect();
                sqlx::query(
                    "INSERT INTO referral_schedule (referral_id, agency_id, expires_at, days_thresholds)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (referral_id) DO NOTHING",
                )
                .bind(referral_id)
                .bind(event.agency_id)
                .bind(expires_at)
                .bind(&thresholds)
                .execute(&mut *connection)
                .await?;
            }
            ReferralEvent::ReferralHired { start_date, .. } => {
                sqlx::query(
                    "UPDATE referral_schedule SET expires_at = NULL, start_date = $2
                      WHERE referral_id = $1",
                )
                .bind(referral_id)
                .bind(start_date)
                .execute(&mut *connection)
                .await?;
                update_days_due(connection, referral_id).await?;
            }
            ReferralEvent::MilestoneReached { milestone, .. }
                if milestone.trigger == Trigger::DaysEmployed =>
            {
                let days = milestone
                    .threshold
                    .as_whole()
                    .and_then(|days| i32::try_from(days).ok());
                sqlx::query(
                    "UPDATE referral_schedule SET days_thresholds = array_remove(days_thresholds, $2)
                      WHERE referral_id = $1",
                )
                .bind(referral_id)
                .bind(days)
                .execute(&mut *connection)
                .await?;
                update_days_due(connection, referral_id).await?;
            }
            ReferralEvent::PlacementEnded { end_date, .. } => {
                sqlx::query("UPDATE referral_schedule SET end_date = $2 WHERE referral_id = $1")
                    .bind(referral_id)
                    .bind(end_date)
                    .execute(&mut *connection)
                    .await?;
                update_days_due(connection, referral_id).await?;
            }
            ReferralEvent::ReferralDeclined { .. }
            | ReferralEvent::ReferralWithdrawn { .. }
            | ReferralEvent::ReferralExpired { .. } => {
                sqlx::query("DELETE FROM referral_schedule WHERE referral_id = $1")
                    .bind(referral_id)
                    .execute(&mut *connection)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Sets `days_due_on` to the start date plus the lowest threshold left. A placement
/// that ended before that day never reaches it, so the row is then no longer due. A
/// placement that ended on or after that day stays due, because its check may not have
/// run yet.
async fn update_days_due(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE referral_schedule AS s
            SET days_due_on = (
                SELECT s.start_date + min(t)
                  FROM unnest(s.days_thresholds) AS t
                HAVING s.end_date IS NULL OR s.start_date + min(t) <= s.end_date)
          WHERE referral_id = $1",
    )
    .bind(referral_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
