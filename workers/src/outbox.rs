//! The `notification_outbox` projection: turns events into outbox rows in the same
//! transaction as its checkpoint, so every event yields its messages exactly once in
//! the table, whatever crashes or retries happen.
//!
//! A row names the recipient by id; the dispatcher resolves the address at send time.
//! Ambassador messages get an e-mail row and an SMS row, and the dispatcher skips the
//! SMS unless texting and consent allow it when the message goes out.

use async_trait::async_trait;
use referrals_domain::payout::PayoutEvent;
use referrals_domain::referral::ReferralEvent;
use referrals_projections::{Projection, ProjectionError, StoredEvent};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

/// The name of the projection and its checkpoint.
pub const OUTBOX_PROJECTION: &str = "notification_outbox";

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// E-mail.
    Email,
    /// Text message.
    Sms,
}

impl Channel {
    /// Returns the stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// Recipient of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recipient {
    Ambassador(Uuid),
    User(Uuid),
}

/// One message the event causes, before it becomes outbox rows.
struct Notice {
    recipient: Recipient,
    template: &'static str,
    referral_id: Option<Uuid>,
    payout_id: Option<Uuid>,
    params: Value,
}

/// Writes `notifications.outbox` rows for the events that notify someone. The
/// ambassador hears when a referral is received, changes status or earns a bonus, and
/// when a payout is paid. The recruiter hears when a referral is assigned to them.
///
/// It keeps no tables of its own to rebuild: replaying events into the outbox would
/// send everything again.
#[derive(Debug, Default)]
pub struct NotificationOutboxProjection;

#[async_trait]
impl Projection for NotificationOutboxProjection {
    fn name(&self) -> &'static str {
        OUTBOX_PROJECTION
    }

    fn schema(&self) -> &'static str {
        "notifications"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let notice = match event.aggregate_type.as_str() {
            "referral" => referral_notice(connection, event).await?,
            "payout" => payout_notice(connection, event).await?,
            _ => None,
        };
        let Some(notice) = notice else {
            return Ok(());
        };
        let channels: &[Channel] = match notice.recipient {
            Recipient::Ambassador(_) => &[Channel::Email, Channel::Sms],
            Recipient::User(_) => &[Channel::Email],
        };
        let (kind, recipient_id) = match notice.recipient {
            Recipient::Ambassador(id) => ("ambassador", id),
            Recipient::User(id) => ("user", id),
        };
        for channel in channels {
            sqlx::query(
                "INSERT INTO outbox (dedupe_key, agency_id, channel, recipient_kind, recipient_id,
                                     template, referral_id, payout_id, params, next_attempt_at,
                                     created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), now())
                 ON CONFLICT (dedupe_key) DO NOTHING",
            )
            .bind(format!("{}:{}", event.id(), channel.as_str()))
            .bind(event.agency_id)
            .bind(channel.as_str())
            .bind(kind)
            .bind(recipient_id)
            .bind(notice.template)
            .bind(notice.referral_id)
            .bind(notice.payout_id)
            .bind(&notice.params)
            .execute(&mut *connection)
            .await?;
        }
        Ok(())
    }
}

fn parse_id(event: &StoredEvent) -> Result<Uuid, ProjectionError> {
    event.aggregate_id.parse().map_err(|_| {
        ProjectionError::Poison(format!(
            "{} has an aggregate id that is not a UUID",
            event.describe()
        ))
    })
}

async fn referral_notice(
    connection: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Option<Notice>, ProjectionError> {
    let referral_id = parse_id(event)?;
    let status = match event.decode::<ReferralEvent>()? {
        ReferralEvent::ReferralSubmitted {
            ambassador_id,
            status,
            ..
        } => {
            return Ok(Some(Notice {
                recipient: Recipient::Ambassador(ambassador_id.0),
                template: "referral_received",
                referral_id: Some(referral_id),
                payout_id: None,
                params: json!({ "status": status.as_str() }),
            }))
        }
        ReferralEvent::RecruiterAssigned { recruiter_id, .. } => {
            return Ok(Some(Notice {
                recipient: Recipient::User(recruiter_id.0),
                template: "referral_assigned",
                referral_id: Some(referral_id),
                payout_id: None,
                params: json!({}),
            }))
        }
        ReferralEvent::ReferralContacted { .. } => "contacted",
        ReferralEvent::ReferralInterviewing { .. } => "interviewing",
        ReferralEvent::ReferralHired { .. } => "hired",
        ReferralEvent::ReferralDeclined { .. } => "declined",
        ReferralEvent::ReferralWithdrawn { .. } => "withdrawn",
        ReferralEvent::ReferralExpired { .. } => "expired",
        ReferralEvent::ReferralCompleted { .. } => "completed",
        _ => return Ok(None),
    };
    let ambassador_id =
        first_payload_field(connection, event, "ReferralSubmitted", "ambassador_id").await?;
    Ok(Some(Notice {
        recipient: Recipient::Ambassador(ambassador_id),
        template: "status_changed",
        referral_id: Some(referral_id),
        payout_id: None,
        params: json!({ "status": status }),
    }))
}

async fn payout_notice(
    connection: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Option<Notice>, ProjectionError> {
    let payout_id = parse_id(event)?;
    match event.decode::<PayoutEvent>()? {
        PayoutEvent::PayoutRequested {
            referral_id,
            ambassador_id,
            recipient,
            amount,
            ..
        } => {
            // A bonus paid to the candidate is not the ambassador's news.
            if recipient != referrals_domain::terms::Recipient::Ambassador {
                return Ok(None);
            }
            Ok(Some(Notice {
                recipient: Recipient::Ambassador(ambassador_id.0),
                template: "bonus_earned",
                referral_id: Some(referral_id.0),
                payout_id: Some(payout_id),
                params: json!({
                    "amount": amount.amount(),
                    "currency": amount.currency().to_string(),
                }),
            }))
        }
        PayoutEvent::PayoutPaid { paid_on, .. } => {
            let recipient =
                first_payload_text(connection, event, "PayoutRequested", "recipient").await?;
            if recipient.as_deref() != Some("ambassador") {
                return Ok(None);
            }
            let ambassador_id =
                first_payload_field(connection, event, "PayoutRequested", "ambassador_id").await?;
            Ok(Some(Notice {
                recipient: Recipient::Ambassador(ambassador_id),
                template: "payout_paid",
                referral_id: None,
                payout_id: Some(payout_id),
                params: json!({ "paid_on": paid_on }),
            }))
        }
        _ => Ok(None),
    }
}

/// Reads a text field of the aggregate's first event, whose type must be `event_type`.
async fn first_payload_text(
    connection: &mut PgConnection,
    event: &StoredEvent,
    event_type: &str,
    field: &str,
) -> Result<Option<String>, ProjectionError> {
    // The payload is the serde form of the event enum, {"EventType": {fields}}. It stays
    // `json`: a cast to jsonb would reject a stored `\u0000`.
    let text: Option<Option<String>> = sqlx::query_scalar(
        "SELECT payload -> $3 ->> $4 FROM public.events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event_type)
    .bind(field)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(text.flatten())
}

/// Reads a UUID field of the aggregate's first event.
async fn first_payload_field(
    connection: &mut PgConnection,
    event: &StoredEvent,
    event_type: &str,
    field: &str,
) -> Result<Uuid, ProjectionError> {
    first_payload_text(connection, event, event_type, field)
        .await?
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            ProjectionError::Poison(format!(
                "{} belongs to an aggregate whose first event has no {field}",
                event.describe()
            ))
        })
}
