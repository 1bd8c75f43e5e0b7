//! One event as projections read it from the events table, in global order.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::ProjectionError;

/// An event with its place in the global order.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Id of the transaction that inserted the event (PostgreSQL `xid8`).
    pub transaction_id: u64,
    /// Position assigned at insert; together with `transaction_id` the reading order.
    pub position: i64,
    /// The agency the event belongs to.
    pub agency_id: Uuid,
    /// `program`, `ambassador`, `referral` or `payout`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's sequence within its aggregate, from 1.
    pub sequence: i64,
    /// The event's fixed type name, such as `ReferralSubmitted`.
    pub event_type: String,
    /// The payload's schema version.
    pub event_version: String,
    /// The payload as stored.
    pub payload: serde_json::Value,
    /// The metadata as stored: agency, actor, time, correlation and causation ids.
    pub metadata: serde_json::Value,
    /// When the database recorded the event.
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// Names the event for logs and errors: position and aggregate coordinates, never
    /// payload contents.
    pub fn describe(&self) -> String {
        format!(
            "event at position {} ({} {} sequence {}, {} v{})",
            self.position,
            self.aggregate_type,
            self.aggregate_id,
            self.sequence,
            self.event_type,
            self.event_version
        )
    }

    /// The event's id: aggregate type, aggregate id and sequence, unique in the store.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.aggregate_type, self.aggregate_id, self.sequence
        )
    }

    /// Decodes the payload into the aggregate's event type, after the store's upcasters
    /// have brought an older payload version into the current shape.
    ///
    /// # Errors
    /// Returns [`ProjectionError::Poison`] when the payload does not have the expected
    /// shape: the projection cannot apply it and must stop rather than skip it.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, ProjectionError> {
        let serialized = SerializedEvent::new(
            self.aggregate_id.clone(),
            usize::try_from(self.sequence).unwrap_or_default(),
            self.aggregate_type.clone(),
            self.event_type.clone(),
            self.event_version.clone(),
            self.payload.clone(),
            self.metadata.clone(),
        );
        let upcast = referrals_store::upcast::upcast(serialized);
        serde_json::from_value(upcast.payload).map_err(|error| {
            ProjectionError::Poison(format!(
                "cannot read the payload of {}: {error}",
                self.describe()
            ))
        })
    }

    /// The metadata field `key` as text, such as `actor_id`.
    pub fn metadata_text(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(serde_json::Value::as_str)
    }
}
