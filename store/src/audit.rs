//! Tamper evidence for the event store: the hash chain of each aggregate's events and the
//! verification that recomputes it.
//!
//! A trigger on `events` (migration `20261204130003_link_event_hashes_on_insert.sql`)
//! stores, for every event, `previous_hash` (the `hash` of the event with `sequence - 1` of
//! the same aggregate, NULL for sequence 1) and `hash`:
//!
//! ```text
//! hash = SHA-256(P || F(aggregate_type) || F(aggregate_id) || F(sequence) || F(event_type)
//!                  || F(event_version) || F(payload) || F(metadata))
//! ```
//!
//! `P` is `previous_hash`, or 32 zero bytes for sequence 1. `F(b)` is the length of `b` in
//! bytes as a 4-byte big-endian integer, followed by `b`. Text columns are their UTF-8
//! bytes, `payload` and `metadata` their stored JSON text byte for byte (`column::text`),
//! and `sequence` is 8 bytes, big-endian two's complement. [`chain_hash`] computes the same
//! value in Rust, from the stored text, never from a re-serialized JSON value.
//!
//! [`verify_chain`] reads events in global order and reports the first event whose stored
//! columns no longer match its hash, or whose `previous_hash` no longer matches its
//! predecessor. Changing any byte of a stored event, its hash or its previous hash is
//! reported at that event. Each run of one agency also checkpoints every chain's head (its
//! last verified event and hash in `audit_chain_heads`), and the next run first checks that
//! those heads are unchanged, so removing verified events from the end of a chain, or
//! rewriting a verified chain with recomputed hashes, is reported as well. Not covered:
//! the columns the database assigns (`position`, `transaction_id`, `recorded_at`), and
//! changes to events that no verification has seen yet.

use futures::TryStreamExt;
use referrals_domain::ids::AgencyId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// `P` in the hash of an aggregate's first event, which has no predecessor.
pub const FIRST_PREVIOUS_HASH: [u8; 32] = [0; 32];

/// The stored columns of one event that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct ChainedColumns<'a> {
    /// `events.aggregate_type`.
    pub aggregate_type: &'a str,
    /// `events.aggregate_id`.
    pub aggregate_id: &'a str,
    /// `events.sequence`.
    pub sequence: i64,
    /// `events.event_type`.
    pub event_type: &'a str,
    /// `events.event_version`.
    pub event_version: &'a str,
    /// `events.payload::text`: the stored JSON text.
    pub payload: &'a str,
    /// `events.metadata::text`: the stored JSON text.
    pub metadata: &'a str,
}

/// Computes an event's hash as the insert trigger does, over `previous_hash` (`None` for
/// sequence 1) and the event's stored columns.
///
/// # Panics
/// Panics when one column is 4 GiB or longer, which PostgreSQL cannot store.
pub fn chain_hash(previous_hash: Option<&[u8]>, columns: &ChainedColumns<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous_hash.unwrap_or(&FIRST_PREVIOUS_HASH));
    let fields: [&[u8]; 7] = [
        columns.aggregate_type.as_bytes(),
        columns.aggregate_id.as_bytes(),
        &columns.sequence.to_be_bytes(),
        columns.event_type.as_bytes(),
        columns.event_version.as_bytes(),
        columns.payload.as_bytes(),
        columns.metadata.as_bytes(),
    ];
    for field in fields {
        let length = u32::try_from(field.len()).expect("a stored column is shorter than 4 GiB");
        hasher.update(length.to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True when every event checked links to its predecessor and matches its hash.
    pub ok: bool,
    /// Events checked by this run, the broken one included. An incremental run counts only
    /// the events after its checkpoint.
    pub events_checked: u64,
    /// The first event, in global order, at which the chain is broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
}

/// An event at which the hash chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The event's global position.
    pub position: i64,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's sequence within the aggregate.
    pub sequence: i64,
    /// The kind of mismatch found.
    pub reason: BreakReason,
}

/// The kinds of break that a verification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakReason {
    /// The stored hash differs from the hash of the event's stored columns: a column or
    /// the hash itself was changed.
    HashMismatch,
    /// `previous_hash` differs from the stored hash of the event with `sequence - 1`, or
    /// is set on a first event, or is missing on a later one.
    PreviousHashMismatch,
    /// The event with `sequence - 1` does not exist.
    MissingPredecessor,
    /// The event with `sequence - 1` has a later global position than this event.
    PredecessorOutOfOrder,
    /// The last event of a chain that an earlier verification found intact is gone or
    /// has another hash: the chain was cut short or rewritten.
    HeadMismatch,
}

impl BreakReason {
    /// Returns the stable code that clients and scripts match on.
    pub fn code(self) -> &'static str {
        match self {
            Self::HashMismatch => "hash_mismatch",
            Self::PreviousHashMismatch => "previous_hash_mismatch",
            Self::MissingPredecessor => "missing_predecessor",
            Self::PredecessorOutOfOrder => "predecessor_out_of_order",
            Self::HeadMismatch => "head_mismatch",
        }
    }

    /// Returns the reason as a sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::HashMismatch => "the stored hash does not match the event's stored columns",
            Self::PreviousHashMismatch => {
                "previous_hash does not match the stored hash of the preceding event"
            }
            Self::MissingPredecessor => "the preceding event of the aggregate is missing",
            Self::PredecessorOutOfOrder => {
                "the preceding event of the aggregate has a later position"
            }
            Self::HeadMismatch => {
                "a chain's last verified event is missing or changed since it was verified"
            }
        }
    }
}

/// One event as the verification reads it, with its predecessor's hash and position.
#[derive(sqlx::FromRow)]
struct StoredEvent {
    position: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    hash: Vec<u8>,
    previous_hash: Option<Vec<u8>>,
    predecessor_hash: Option<Vec<u8>>,
    predecessor_position: Option<i64>,
}

impl StoredEvent {
    /// Returns why the chain is broken at this event, if it is.
    fn check(&self) -> Option<BreakReason> {
        let columns = ChainedColumns {
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload: &self.payload,
            metadata: &self.metadata,
        };
        if chain_hash(self.previous_hash.as_deref(), &columns)[..] != self.hash[..] {
            return Some(BreakReason::HashMismatch);
        }
        if self.sequence == 1 {
            return self
                .previous_hash
                .is_some()
                .then_some(BreakReason::PreviousHashMismatch);
        }
        let (Some(predecessor_hash), Some(predecessor_position)) =
            (&self.predecessor_hash, self.predecessor_position)
        else {
            return Some(BreakReason::MissingPredecessor);
        };
        if predecessor_position >= self.position {
            return Some(BreakReason::PredecessorOutOfOrder);
        }
        (self.previous_hash.as_ref() != Some(predecessor_hash))
            .then_some(BreakReason::PreviousHashMismatch)
    }
}

// The predecessor is joined in rather than remembered, so memory stays constant however
// many aggregates there are. Its own hash is recomputed when the scan reaches it: it has a
// lower position, which the check above enforces.
const SELECT_EVENTS: &str = "
SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version,
       e.payload::text AS payload, e.metadata::text AS metadata, e.hash, e.previous_hash,
       p.hash AS predecessor_hash, p.position AS predecessor_position
  FROM events e
  LEFT JOIN events p
         ON p.aggregate_type = e.aggregate_type
        AND p.aggregate_id = e.aggregate_id
        AND p.sequence = e.sequence - 1";

/// Verifies the hash chain of one agency's events, or of every event with `agency: None`.
///
/// With `incremental` and an agency, only the events after the agency's checkpoint are
/// read. When the number of events at or below the checkpoint's position has changed
/// since, the whole agency is read instead. A run over one agency that finds no
/// broken link moves the checkpoint to the last event it read. A run over every event is
/// always full and keeps no checkpoint.
///
/// # Errors
/// Returns the database error when a query fails.
pub async fn verify_chain(
    pool: &PgPool,
    agency: Option<AgencyId>,
    incremental: bool,
) -> Result<VerifyReport, sqlx::Error> {
    verify_chain_with_progress(pool, agency, incremental, &mut |_| {}).await
}

/// Verifies like [`verify_chain`], calling `progress` with the number of events checked so far after
/// every 1,000 events.
///
/// # Errors
/// Returns the database error when a query fails.
pub async fn verify_chain_with_progress(
    pool: &PgPool,
    agency: Option<AgencyId>,
    incremental: bool,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyReport, sqlx::Error> {
    if let Some(agency) = agency {
        if let Some(broken) = changed_head(pool, agency).await? {
            tracing::error!(
                aggregate_type = %broken.aggregate_type,
                aggregate_id = %broken.aggregate_id,
                sequence = broken.sequence,
                reason = broken.reason.code(),
                "event hash chain is broken"
            );
            return Ok(VerifyReport {
                ok: false,
                events_checked: 0,
                first_broken: Some(broken),
            });
        }
    }
    let (after_position, checked_before) = match agency {
        Some(agency) if incremental => usable_checkpoint(pool, agency).await?,
        _ => (0, 0),
    };

    let mut query = format!("{SELECT_EVENTS} WHERE e.position > $1");
    if agency.is_some() {
        query.push_str(" AND e.agency_id = $2");
    }
    query.push_str(" ORDER BY e.position");
    let mut select = sqlx::query_as::<_, StoredEvent>(&query).bind(after_position);
    if let Some(agency) = agency {
        select = select.bind(agency.0);
    }
    let mut rows = select.fetch(pool);

    let mut events_checked = 0_u64;
    let mut last_position = after_position;
    while let Some(event) = rows.try_next().await? {
        events_checked += 1;
        last_position = event.position;
        let finding = match event.check() {
            Some(reason) => Some((event, reason)),
            // An event below the checkpoint was verified by an earlier run, but its hash
            // may have been changed since, and the insert trigger then linked this event
            // to the changed hash. Recomputing the predecessor catches that.
            None if after_position > 0 => {
                recheck_predecessor_below(pool, &event, after_position).await?
            }
            None => None,
        };
        if let Some((event, reason)) = finding {
            let broken = BrokenLink {
                position: event.position,
                aggregate_type: event.aggregate_type,
                aggregate_id: event.aggregate_id,
                sequence: event.sequence,
                reason,
            };
            tracing::error!(
                position = broken.position,
                aggregate_type = %broken.aggregate_type,
                aggregate_id = %broken.aggregate_id,
                sequence = broken.sequence,
                reason = reason.code(),
                "event hash chain is broken"
            );
            return Ok(VerifyReport {
                ok: false,
                events_checked,
                first_broken: Some(broken),
            });
        }
        if events_checked % 1_000 == 0 {
            progress(events_checked);
        }
    }
    drop(rows);

    if let Some(agency) = agency {
        save_checkpoint(pool, agency, last_position, checked_before + events_checked).await?;
        save_heads(pool, agency, after_position, last_position).await?;
    }
    Ok(VerifyReport {
        ok: true,
        events_checked,
        first_broken: None,
    })
}

/// Returns the predecessor of `event` with [`BreakReason::HashMismatch`] when the
/// predecessor is at or below `checkpoint` and no longer matches its hash.
async fn recheck_predecessor_below(
    pool: &PgPool,
    event: &StoredEvent,
    checkpoint: i64,
) -> Result<Option<(StoredEvent, BreakReason)>, sqlx::Error> {
    let Some(position) = event.predecessor_position.filter(|&at| at <= checkpoint) else {
        return Ok(None);
    };
    let predecessor: StoredEvent =
        sqlx::query_as(&format!("{SELECT_EVENTS} WHERE e.position = $1"))
            .bind(position)
            .fetch_one(pool)
            .await?;
    Ok((predecessor.check() == Some(BreakReason::HashMismatch))
        .then_some((predecessor, BreakReason::HashMismatch)))
}

/// Returns the position after which an incremental run of `agency` starts and the number
/// of events at or below it: the checkpoint's, or `(0, 0)` when there is none or it no
/// longer counts the events below it.
async fn usable_checkpoint(pool: &PgPool, agency: AgencyId) -> Result<(i64, u64), sqlx::Error> {
    let checkpoint: Option<(i64, i64)> = sqlx::query_as(
        "SELECT position, events_checked FROM audit_chain_checkpoints WHERE agency_id = $1",
    )
    .bind(agency.0)
    .fetch_optional(pool)
    .await?;
    let Some((position, events_checked)) = checkpoint else {
        return Ok((0, 0));
    };

    // Positions are taken at insert, so an event committed after the last run can sit
    // below its checkpoint, and a removed event leaves a gap there. Either changes the count.
    let events_now: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE agency_id = $1 AND position <= $2")
            .bind(agency.0)
            .bind(position)
            .fetch_one(pool)
            .await?;
    if events_now != events_checked {
        tracing::warn!(
            agency_id = %agency.0,
            checkpoint_position = position,
            events_checked,
            events_now,
            "events at or below the audit checkpoint changed; verifying the agency in full"
        );
        return Ok((0, 0));
    }
    Ok((position, u64::try_from(events_checked).unwrap_or(0)))
}

/// Returns the first recorded chain head of `agency` that no longer matches its event:
/// the event is gone (the chain was cut short) or its hash differs (it was rewritten).
async fn changed_head(pool: &PgPool, agency: AgencyId) -> Result<Option<BrokenLink>, sqlx::Error> {
    let row: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT head.aggregate_type, head.aggregate_id, head.sequence, event.position
           FROM audit_chain_heads AS head
           LEFT JOIN events AS event
                  ON event.aggregate_type = head.aggregate_type
                 AND event.aggregate_id = head.aggregate_id
                 AND event.sequence = head.sequence
          WHERE head.agency_id = $1
            AND (event.hash IS NULL OR event.hash <> head.hash)
          ORDER BY event.position NULLS FIRST
          LIMIT 1",
    )
    .bind(agency.0)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(aggregate_type, aggregate_id, sequence, position)| BrokenLink {
            position: position.unwrap_or(0),
            aggregate_type,
            aggregate_id,
            sequence,
            reason: BreakReason::HeadMismatch,
        },
    ))
}

/// Records, for each of the agency's chains with events verified by this run (positions
/// after `after` up to `last`), its last such event as the chain's verified head.
async fn save_heads(
    pool: &PgPool,
    agency: AgencyId,
    after: i64,
    last: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_chain_heads (aggregate_type, aggregate_id, agency_id, sequence, hash)
         SELECT DISTINCT ON (aggregate_type, aggregate_id)
                aggregate_type, aggregate_id, agency_id, sequence, hash
           FROM events
          WHERE agency_id = $1 AND position > $2 AND position <= $3
          ORDER BY aggregate_type, aggregate_id, sequence DESC
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
            SET sequence = EXCLUDED.sequence, hash = EXCLUDED.hash
          WHERE audit_chain_heads.sequence <= EXCLUDED.sequence",
    )
    .bind(agency.0)
    .bind(after)
    .bind(last)
    .execute(pool)
    .await?;
    Ok(())
}

async fn save_checkpoint(
    pool: &PgPool,
    agency: AgencyId,
    position: i64,
    events_checked: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_chain_checkpoints (agency_id, position, events_checked, verified_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (agency_id) DO UPDATE
            SET position = EXCLUDED.position,
                events_checked = EXCLUDED.events_checked,
                verified_at = EXCLUDED.verified_at",
    )
    .bind(agency.0)
    .bind(position)
    .bind(i64::try_from(events_checked).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> ChainedColumns<'static> {
        ChainedColumns {
            aggregate_type: "referral",
            aggregate_id: "a",
            sequence: 1,
            event_type: "X",
            event_version: "1.0",
            payload: r#"{"a": 1}"#,
            metadata: r#"{"agency_id":"01938a6d-0000-7000-8000-000000000001"}"#,
        }
    }

    /// The value PostgreSQL 15 computed with `event_chain_hash` for these columns.
    #[test]
    fn chain_hash_matches_the_sql_function() {
        let hash = chain_hash(None, &columns());
        let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            hex,
            "62bc00ab41950c204c89b7f8481c2ab9ac892ee7ba8632937b71eabe2b1f411b"
        );
    }

    #[test]
    fn chain_hash_separates_adjacent_fields() {
        let joined = ChainedColumns {
            event_type: "X1",
            event_version: ".0",
            ..columns()
        };
        assert_ne!(chain_hash(None, &columns()), chain_hash(None, &joined));
    }
}
