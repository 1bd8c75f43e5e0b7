//! Upcasters: functions that rewrite a stored event payload of an older `event_version`
//! into the shape the current event types deserialize. Events are never rewritten in the
//! table, so every reader of stored events (the aggregate stores and past-state replay)
//! passes them through [`upcast`] first.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster, SerializedEvent};
use serde_json::Value;

/// Every upcaster, oldest target version first, as cqrs-es applies them in order.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SemanticVersionEventUpcaster::new(
        "ReferralSubmitted",
        "1.0",
        Box::new(referral_submitted_with_prior_contact),
    ))]
}

/// Upcasts `ReferralSubmitted` before 1.0, which had no `prior_contact` flag: referrals
/// of that time were never checked against known candidates, so the flag is `false`.
fn referral_submitted_with_prior_contact(mut payload: Value) -> Value {
    if let Some(fields) = payload
        .get_mut("ReferralSubmitted")
        .and_then(Value::as_object_mut)
    {
        fields.entry("prior_contact").or_insert(Value::Bool(false));
    }
    payload
}

/// Applies every upcaster that accepts the event, in registry order.
pub fn upcast(mut event: SerializedEvent) -> SerializedEvent {
    for upcaster in upcasters() {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event
}

/// A stored event that does not deserialize, even after upcasting.
#[derive(Debug, thiserror::Error)]
#[error(
    "stored event {sequence} of {aggregate_type} {aggregate_id} ({event_type} version \
     {event_version}) cannot be read: {source}; add an upcaster for this version"
)]
pub struct UnreadableEvent {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's sequence number within the aggregate.
    pub sequence: usize,
    /// The stored event type.
    pub event_type: String,
    /// The stored event version.
    pub event_version: String,
    /// Why deserialization failed.
    pub source: serde_json::Error,
}

/// Upcasts and deserializes `event` as an event of aggregate `A`.
///
/// # Errors
/// Returns [`UnreadableEvent`] naming the aggregate, sequence and version when the payload
/// does not match the event type.
pub fn decode<A: cqrs_es::Aggregate>(event: SerializedEvent) -> Result<A::Event, UnreadableEvent> {
    let event = upcast(event);
    serde_json::from_value(event.payload).map_err(|source| UnreadableEvent {
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
        event_type: event.event_type,
        event_version: event.event_version,
        source,
    })
}
