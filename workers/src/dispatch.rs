//! The outbox dispatcher: claims due rows, resolves each recipient's address at send
//! time, sends through the channel's provider, and records the outcome.
//!
//! Delivery is at least once. A claim pushes the row's `next_attempt_at` ahead by the
//! claim lease ([`CLAIM_LEASE`] unless configured), so parallel dispatchers skip it. If the process dies before the
//! outcome is written, the row falls due again after the lease and is sent again.
//! Failed attempts back off exponentially, and after `max_attempts` failures the row
//! is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use referrals_domain::agency::Agency;
use referrals_domain::ids::AgencyId;
use referrals_domain::user::User;
use referrals_store::application::Application;
use referrals_store::crypto::{open_field, Field};
use referrals_store::event_store::AggregateStore;
use referrals_store::keys::KeyError;
use referrals_store::personal::{OpenedDetails, SealedDetails};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::clock::Clock;
use crate::outbox::Channel;
use crate::providers::{OutgoingMessage, Provider};
use crate::templates;

/// How long a claimed row stays invisible to other dispatchers by default. It must
/// exceed the time one batch of sends can take, or another dispatcher claims and sends
/// the rest of a slow batch a second time.
pub const CLAIM_LEASE: TimeDelta = TimeDelta::minutes(5);

/// Retry settings of the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed attempts after which a message is dead-lettered, at least 1.
    pub max_attempts: u32,
    /// Wait after the first failure; each further failure doubles it.
    pub base_backoff: Duration,
    /// Upper bound of the wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Eight attempts spread over about 21 minutes: waits of 10 s, 20 s, ... 640 s.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Returns the wait after the `failures`-th failed attempt (1 for the first).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.base_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// Counts of one dispatch pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Messages the provider accepted.
    pub sent: u64,
    /// Attempts that failed and will be retried.
    pub failed: u64,
    /// Messages that failed their last allowed attempt.
    pub dead_lettered: u64,
    /// Messages not sent on purpose: no consent, texting disabled, no address, erased.
    pub skipped: u64,
}

/// A claimed outbox row.
#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    dedupe_key: String,
    agency_id: Uuid,
    channel: String,
    recipient_kind: String,
    recipient_id: Uuid,
    template: String,
    referral_id: Option<Uuid>,
    payout_id: Option<Uuid>,
    params: Value,
    attempts: i32,
}

/// The outcome of resolving a row's recipient.
enum Resolved {
    Send(OutgoingMessage),
    Skip(&'static str),
}

/// Sends due outbox rows through the providers.
pub struct Dispatcher {
    app: Arc<Application>,
    agencies: AggregateStore<Agency>,
    users: AggregateStore<User>,
    email: Arc<dyn Provider>,
    sms: Arc<dyn Provider>,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
    batch_size: i64,
    claim_lease: TimeDelta,
}

impl Dispatcher {
    /// Creates a dispatcher that claims up to 100 rows per pass.
    pub fn new(
        app: Arc<Application>,
        email: Arc<dyn Provider>,
        sms: Arc<dyn Provider>,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let pool = app.pool().clone();
        Self {
            agencies: AggregateStore::new(pool.clone(), ()),
            users: AggregateStore::new(pool, ()),
            app,
            email,
            sms,
            policy: RetryPolicy {
                max_attempts: policy.max_attempts.max(1),
                ..policy
            },
            clock,
            batch_size: 100,
            claim_lease: CLAIM_LEASE,
        }
    }

    /// Sets how long a claimed row stays invisible to other dispatchers, in place of
    /// [`CLAIM_LEASE`]. Rows claimed by a process that died are sent again after it.
    #[must_use]
    pub fn with_claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX);
        self
    }

    /// Sets the maximum number of rows one pass claims, 100 by default and at least 1.
    #[must_use]
    pub fn with_batch_size(mut self, rows: u32) -> Self {
        self.batch_size = i64::from(rows.max(1));
        self
    }

    fn pool(&self) -> &PgPool {
        self.app.pool()
    }

    /// Claims the rows due by the clock's time, one batch, and attempts each once.
    ///
    /// # Errors
    /// Returns the database error when claiming fails; failures of single rows are
    /// recorded on the row and counted in the report.
    pub async fn dispatch_due(&self) -> Result<DispatchReport, sqlx::Error> {
        let now = self.clock.now();
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "UPDATE notifications.outbox SET next_attempt_at = $2
              WHERE id IN (SELECT id FROM notifications.outbox
                            WHERE status = 'pending' AND next_attempt_at <= $1
                            ORDER BY next_attempt_at, id
                            LIMIT $3
                              FOR UPDATE SKIP LOCKED)
          RETURNING id, dedupe_key, agency_id, channel, recipient_kind, recipient_id, template,
                    referral_id, payout_id, params, attempts",
        )
        .bind(now)
        .bind(
            now.checked_add_signed(self.claim_lease)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
        .bind(self.batch_size)
        .fetch_all(self.pool())
        .await?;

        let mut report = DispatchReport::default();
        for row in rows {
            self.attempt(&row, &mut report).await?;
        }
        record_pending(self.pool()).await;
        Ok(report)
    }

    async fn attempt(
        &self,
        row: &OutboxRow,
        report: &mut DispatchReport,
    ) -> Result<(), sqlx::Error> {
        let channel = if row.channel == "sms" {
            Channel::Sms
        } else {
            Channel::Email
        };
        let outcome = match self.resolve(row, channel).await {
            Ok(Resolved::Skip(reason)) => {
                self.finish(row.id, "skipped", Some(reason)).await?;
                report.skipped += 1;
                metrics::counter!("notifications_skipped_total", "channel" => channel.as_str())
                    .increment(1);
                tracing::info!(
                    outbox_id = row.id,
                    channel = channel.as_str(),
                    reason,
                    "notification skipped"
                );
                return Ok(());
            }
            Ok(Resolved::Send(message)) => match channel {
                Channel::Email => self.email.send(&message).await,
                Channel::Sms => self.sms.send(&message).await,
            }
            .map_err(|error| error.0),
            Err(error) => Err(error),
        };

        match outcome {
            Ok(()) => {
                sqlx::query(
                    "UPDATE notifications.outbox
                        SET status = 'sent', attempts = attempts + 1, sent_at = $2, last_error = NULL
                      WHERE id = $1",
                )
                .bind(row.id)
                .bind(self.clock.now())
                .execute(self.pool())
                .await?;
                report.sent += 1;
                metrics::counter!("notifications_sent_total", "channel" => channel.as_str())
                    .increment(1);
                tracing::info!(outbox_id = row.id, channel = channel.as_str(), template = %row.template, "notification sent");
            }
            Err(error) => self.record_failure(row, channel, &error, report).await?,
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        row: &OutboxRow,
        channel: Channel,
        error: &str,
        report: &mut DispatchReport,
    ) -> Result<(), sqlx::Error> {
        let failures = u32::try_from(row.attempts).unwrap_or(0) + 1;
        if failures >= self.policy.max_attempts {
            sqlx::query(
                "UPDATE notifications.outbox
                    SET status = 'dead_lettered', attempts = attempts + 1, last_error = $2
                  WHERE id = $1",
            )
            .bind(row.id)
            .bind(error)
            .execute(self.pool())
            .await?;
            report.dead_lettered += 1;
            metrics::counter!("notifications_dead_lettered_total", "channel" => channel.as_str())
                .increment(1);
            tracing::error!(outbox_id = row.id, channel = channel.as_str(), attempts = failures, %error, "notification dead-lettered after its last attempt");
            return Ok(());
        }

        let wait = TimeDelta::from_std(self.policy.backoff(failures)).unwrap_or(TimeDelta::MAX);
        let next_attempt_at = self
            .clock
            .now()
            .checked_add_signed(wait)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        sqlx::query(
            "UPDATE notifications.outbox
                SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
              WHERE id = $1",
        )
        .bind(row.id)
        .bind(error)
        .bind(next_attempt_at)
        .execute(self.pool())
        .await?;
        report.failed += 1;
        metrics::counter!("notifications_failed_total", "channel" => channel.as_str()).increment(1);
        tracing::warn!(outbox_id = row.id, channel = channel.as_str(), attempts = failures, %error, %next_attempt_at, "notification attempt failed; retrying later");
        Ok(())
    }

    async fn finish(&self, id: i64, status: &str, reason: Option<&str>) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE notifications.outbox SET status = $2, last_error = $3 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(reason)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Resolves the recipient's address now, so an erasure or an SMS opt-out made
    /// after the row was written still applies. Errors are texts for `last_error`,
    /// without personal data.
    async fn resolve(&self, row: &OutboxRow, channel: Channel) -> Result<Resolved, String> {
        let agency_id = AgencyId(row.agency_id);
        let (name, address) = match row.recipient_kind.as_str() {
            "ambassador" => match self
                .ambassador_address(agency_id, row.recipient_id, channel)
                .await?
            {
                Ok(found) => found,
                Err(reason) => return Ok(Resolved::Skip(reason)),
            },
            _ => match self.user_address(agency_id, row.recipient_id).await? {
                Ok(found) => found,
                Err(reason) => return Ok(Resolved::Skip(reason)),
            },
        };
        let text = templates::render(
            &row.template,
            name.as_deref(),
            row.referral_id,
            row.payout_id,
            &row.params,
        );
        Ok(Resolved::Send(OutgoingMessage {
            dedupe_key: row.dedupe_key.clone(),
            channel,
            to: address,
            subject: text.subject,
            body: match channel {
                Channel::Email => text.body,
                Channel::Sms => text.short,
            },
        }))
    }

    /// Returns the ambassador's name and the channel's address, or the reason to skip.
    async fn ambassador_address(
        &self,
        agency_id: AgencyId,
        ambassador_id: Uuid,
        channel: Channel,
    ) -> Result<Result<(Option<String>, String), &'static str>, String> {
        let loaded = self
            .app
            .ambassadors
            .load(agency_id, &ambassador_id.to_string())
            .await
            .map_err(|error| format!("loading the ambassador failed: {error}"))?;
        let Some((ambassador, _)) = loaded else {
            return Ok(Err("recipient_not_found"));
        };
        if channel == Channel::Sms {
            if !ambassador.sms_consent() {
                return Ok(Err("no_sms_consent"));
            }
            let agency = self
                .agencies
                .load(agency_id, &agency_id.to_string())
                .await
                .map_err(|error| format!("loading the agency failed: {error}"))?;
            if !agency.is_some_and(|(agency, _)| agency.texting_enabled()) {
                return Ok(Err("texting_disabled"));
            }
        }
        let Some(name) = ambassador.name() else {
            return Ok(Err("recipient_not_found"));
        };
        let sealed = SealedDetails {
            name: name.clone(),
            email: ambassador.email().cloned(),
            phone: ambassador.phone().cloned(),
        };
        let opened = self
            .app
            .personal()
            .open_contact(agency_id, ambassador_id, &sealed)
            .await
            .map_err(|error| format!("opening the ambassador's contact details failed: {error}"))?;
        let OpenedDetails::Present { name, email, phone } = opened else {
            return Ok(Err("recipient_erased"));
        };
        let address = match channel {
            Channel::Email => email.ok_or("no_email_address"),
            Channel::Sms => phone.ok_or("no_phone_number"),
        };
        Ok(address.map(|address| (Some(name), address)))
    }

    /// Returns the user's name, if known, and e-mail address, or the reason to skip.
    async fn user_address(
        &self,
        agency_id: AgencyId,
        user_id: Uuid,
    ) -> Result<Result<(Option<String>, String), &'static str>, String> {
        let loaded = self
            .users
            .load(agency_id, &user_id.to_string())
            .await
            .map_err(|error| format!("loading the user failed: {error}"))?;
        let Some((user, _)) = loaded else {
            return Ok(Err("recipient_not_found"));
        };
        let Some(email) = user.email() else {
            return Ok(Err("no_email_address"));
        };
        let key = match self
            .app
            .personal()
            .vault()
            .data_key(agency_id, user_id)
            .await
        {
            Ok(key) => key,
            Err(KeyError::Erased) => return Ok(Err("recipient_erased")),
            Err(error) => return Err(format!("loading the user's data key failed: {error}")),
        };
        let open = |field, sealed| {
            open_field(&key, agency_id, user_id, field, sealed)
                .map_err(|error| format!("opening the user's contact details failed: {error}"))
        };
        let address = open(Field::Email, email)?;
        let name = user
            .name()
            .map(|name| open(Field::Name, name))
            .transpose()?;
        Ok(Ok((name, address)))
    }
}

/// Sets the `notifications_pending` gauge; a failed count only leaves it stale.
async fn record_pending(pool: &PgPool) {
    let pending: Result<i64, sqlx::Error> =
        sqlx::query_scalar("SELECT count(*) FROM notifications.outbox WHERE status = 'pending'")
            .fetch_one(pool)
            .await;
    match pending {
        Ok(pending) => metrics::gauge!("notifications_pending").set(pending as f64),
        Err(error) => tracing::warn!(%error, "counting pending notifications failed"),
    }
}
