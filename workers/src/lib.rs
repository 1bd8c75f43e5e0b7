//! Background work beside the API: the scheduled referral rules and the notification
//! outbox.
//!
//! - [`rules`] expires referrals after their hire deadline and reaches `days_employed`
//!   milestones, reading due rows of the [`schedule`] projection. Each rule runs in one
//!   executor at a time across all instances ([`exclusive`]).
//! - [`outbox`] is a projection that writes notification rows in the same transaction
//!   as its checkpoint; [`dispatch`] sends them through [`providers`] at least once,
//!   with retries, backoff and a dead-letter state.
//!
//! Both take a [`clock::Clock`], so tests can fix or step the time.

pub mod clock;
pub mod dispatch;
pub mod exclusive;
pub mod outbox;
pub mod providers;
pub mod rules;
pub mod schedule;
pub mod settings;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use referrals_projections::Projection;
use tokio::sync::watch;

use crate::dispatch::Dispatcher;
use crate::rules::{ReferralRules, DAYS_EMPLOYED_JOB, EXPIRY_JOB};

/// How often the scheduled rules run. Expiry is therefore up to this late.
pub const RULES_INTERVAL: Duration = Duration::from_secs(60);
/// How often the dispatcher looks for due outbox rows when the last pass found none.
pub const DISPATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Returns the projections the workers need: the rule schedule and the outbox.
/// `referrals projections status` lists both, and `rebuild` accepts the schedule but
/// rejects the outbox, because replaying it would send every message again.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(schedule::ReferralScheduleProjection),
        Arc::new(outbox::NotificationOutboxProjection),
    ]
}

/// Runs both rules every `interval` until `shutdown` turns true. A rule that another
/// instance is running is skipped.
pub async fn run_rules(
    rules: ReferralRules,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(
        interval_seconds = interval.as_secs(),
        "scheduled rules started"
    );
    while !*shutdown.borrow() {
        run_rule(&rules, EXPIRY_JOB).await;
        run_rule(&rules, DAYS_EMPLOYED_JOB).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!("scheduled rules stopped");
}

async fn run_rule(rules: &ReferralRules, job: &'static str) {
    let outcome = exclusive::run_exclusive(rules.pool(), job, async {
        match job {
            EXPIRY_JOB => rules.expire_referrals().await,
            _ => rules.check_days_employed().await,
        }
    })
    .await;
    match outcome {
        Ok(Some(Ok(report))) if report.due > 0 => tracing::info!(
            job,
            due = report.due,
            changed = report.changed,
            stale = report.stale,
            failed = report.failed,
            "scheduled rule run finished"
        ),
        Ok(Some(Ok(_)) | None) => {}
        Ok(Some(Err(error))) | Err(error) => {
            tracing::warn!(job, %error, "scheduled rule run failed; the next run retries it");
        }
    }
}

/// Dispatches due outbox rows until `shutdown` turns true: at once again after a pass
/// that did something, after `interval` otherwise.
pub async fn run_dispatcher(
    dispatcher: Dispatcher,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!("notification dispatcher started");
    while !*shutdown.borrow() {
        let pause = match dispatcher.dispatch_due().await {
            Ok(report) if report != dispatch::DispatchReport::default() => Duration::ZERO,
            Ok(_) => interval,
            Err(error) => {
                tracing::warn!(%error, "claiming notifications failed; retrying");
                interval
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    tracing::info!("notification dispatcher stopped");
}
