//! The scheduled referral rules: expiring referrals not hired by their hire deadline,
//! and reaching `days_employed` milestones while the placement runs.
//!
//! Each rule reads the due rows of `scheduling.referral_schedule` a page at a time and
//! sends the aggregate its command. The commands are idempotent in effect: a referral
//! already expired rejects a second expiry, and a milestone already reached is never
//! reached again, so a retried or overlapping run changes nothing. The schedule is a
//! projection and can lag the events. A row that is due only in a stale projection gets
//! a command that the aggregate rejects, and the rule counts it and moves on.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use referrals_domain::ids::{AgencyId, ReferralId};
use referrals_domain::referral::{CheckDaysEmployed, ExpireReferral, ReferralCommand};
use referrals_domain::DomainError;
use referrals_store::application::{AppError, Application};
use referrals_store::event_store::{Actor, CommandMetadata};
use sqlx::PgPool;
use uuid::Uuid;

use crate::clock::Clock;

/// Actor name of the expiry rule in event metadata, and its job name.
pub const EXPIRY_JOB: &str = "referral_expiry";
/// Actor name of the days-employed rule in event metadata, and its job name.
pub const DAYS_EMPLOYED_JOB: &str = "days_employed";

/// Rows one query reads. A run reads pages until none is left, up to [`MAX_PAGES`].
const PAGE_SIZE: i64 = 200;
/// Upper bound of pages per run, so a run ends even if rows keep turning due. The next
/// run continues where this one stopped.
const MAX_PAGES: usize = 50;

/// Counts of one run of a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleReport {
    /// Due rows read.
    pub due: u64,
    /// Commands that recorded at least one event.
    pub changed: u64,
    /// Commands the aggregate rejected because the schedule was stale (already expired,
    /// hired, ended, or not due yet).
    pub stale: u64,
    /// Commands that failed for another reason, each logged with the referral id.
    pub failed: u64,
}

/// The scheduled referral rules over the application and a clock.
pub struct ReferralRules {
    app: Arc<Application>,
    clock: Arc<dyn Clock>,
}

impl ReferralRules {
    /// Creates the rules over the application and the clock that decides what is due.
    pub fn new(app: Arc<Application>, clock: Arc<dyn Clock>) -> Self {
        Self { app, clock }
    }

    /// Returns the application's connection pool.
    pub fn pool(&self) -> &PgPool {
        self.app.pool()
    }

    /// Expires every referral whose hire deadline is at or before the clock's time.
    ///
    /// # Errors
    /// Returns the database error when the schedule cannot be read.
    pub async fn expire_referrals(&self) -> Result<RuleReport, sqlx::Error> {
        let now = self.clock.now();
        let mut report = RuleReport::default();
        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        for _ in 0..MAX_PAGES {
            let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
                "SELECT referral_id, agency_id, expires_at FROM scheduling.referral_schedule
                  WHERE expires_at IS NOT NULL AND expires_at <= $1
                    AND ($2::timestamptz IS NULL OR (expires_at, referral_id) > ($2, $3))
                  ORDER BY expires_at, referral_id
                  LIMIT $4",
            )
            .bind(now)
            .bind(after.map(|(at, _)| at))
            .bind(after.map(|(_, id)| id))
            .bind(PAGE_SIZE)
            .fetch_all(self.pool())
            .await?;
            for (referral_id, agency_id, _) in &rows {
                let command = ReferralCommand::ExpireReferral(ExpireReferral { at: now });
                self.execute(
                    EXPIRY_JOB,
                    *agency_id,
                    *referral_id,
                    command,
                    now,
                    &mut report,
                )
                .await;
            }
            report.due += rows.len() as u64;
            match rows.last() {
                Some((id, _, at)) if rows.len() as i64 == PAGE_SIZE => after = Some((*at, *id)),
                _ => break,
            }
        }
        Ok(report)
    }

    /// Reaches the `days_employed` milestones due by the clock's day (UTC) on every
    /// referral whose next one is due.
    ///
    /// # Errors
    /// Returns the database error when the schedule cannot be read.
    pub async fn check_days_employed(&self) -> Result<RuleReport, sqlx::Error> {
        let now = self.clock.now();
        let today = now.date_naive();
        let mut report = RuleReport::default();
        let mut after: Option<(NaiveDate, Uuid)> = None;
        for _ in 0..MAX_PAGES {
            let rows: Vec<(Uuid, Uuid, NaiveDate)> = sqlx::query_as(
                "SELECT referral_id, agency_id, days_due_on FROM scheduling.referral_schedule
                  WHERE days_due_on IS NOT NULL AND days_due_on <= $1
                    AND ($2::date IS NULL OR (days_due_on, referral_id) > ($2, $3))
                  ORDER BY days_due_on, referral_id
                  LIMIT $4",
            )
            .bind(today)
            .bind(after.map(|(on, _)| on))
            .bind(after.map(|(_, id)| id))
            .bind(PAGE_SIZE)
            .fetch_all(self.pool())
            .await?;
            for (referral_id, agency_id, _) in &rows {
                let command =
                    ReferralCommand::CheckDaysEmployed(CheckDaysEmployed { today, at: now });
                self.execute(
                    DAYS_EMPLOYED_JOB,
                    *agency_id,
                    *referral_id,
                    command,
                    now,
                    &mut report,
                )
                .await;
            }
            report.due += rows.len() as u64;
            match rows.last() {
                Some((id, _, on)) if rows.len() as i64 == PAGE_SIZE => after = Some((*on, *id)),
                _ => break,
            }
        }
        Ok(report)
    }

    /// Executes one rule's command and counts the outcome. Failures are logged, not
    /// returned, so one bad referral does not stop the run.
    async fn execute(
        &self,
        job: &'static str,
        agency_id: Uuid,
        referral_id: Uuid,
        command: ReferralCommand,
        now: DateTime<Utc>,
        report: &mut RuleReport,
    ) {
        let mut metadata = CommandMetadata::new(
            AgencyId(agency_id),
            Actor::System {
                job: job.to_owned(),
            },
        );
        metadata.recorded_at = now;
        let outcome = self
            .app
            .execute_referral(&metadata, ReferralId(referral_id), command, None)
            .await;
        match outcome {
            Ok(executed) if executed.events.is_empty() => {}
            Ok(_) => {
                report.changed += 1;
                tracing::info!(job, %referral_id, "scheduled rule applied");
            }
            Err(AppError::Domain(
                DomainError::InvalidTransition { .. } | DomainError::NotDueYet { .. },
            )) => {
                report.stale += 1;
                tracing::debug!(job, %referral_id, "scheduled rule skipped: the referral moved on");
            }
            Err(error) => {
                report.failed += 1;
                tracing::warn!(job, %referral_id, %error, "scheduled rule failed; the next run retries it");
            }
        }
    }
}
