//! `read_models.aggregate_states`: the current state of each program, ambassador,
//! referral and payout, folded from its events with the domain's own `apply`, and
//! `read_models.aggregate_snapshots`: the state at every [`SNAPSHOT_INTERVAL`]th event,
//! from which past states are rebuilt.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use referrals_domain::ambassador::Ambassador;
use referrals_domain::payout::Payout;
use referrals_domain::program::Program;
use referrals_domain::referral::Referral;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{database_error, decode, Decoded};
use crate::{Projection, ProjectionError, StoredEvent};

/// Events between two stored past states of one aggregate.
pub const SNAPSHOT_INTERVAL: i64 = 50;

/// Projects every known event into the state of its aggregate.
#[derive(Debug, Clone, Copy, Default)]
pub struct AggregateStatesProjection;

#[async_trait]
impl Projection for AggregateStatesProjection {
    fn name(&self) -> &'static str {
        "aggregate_states"
    }

    fn schema(&self) -> &'static str {
        "read_models"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["aggregate_states", "aggregate_snapshots"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        match decode(event)? {
            Some(Decoded::Program(payload)) => fold::<Program>(connection, event, payload).await,
            Some(Decoded::Ambassador(payload)) => {
                fold::<Ambassador>(connection, event, payload).await
            }
            Some(Decoded::Referral(payload)) => fold::<Referral>(connection, event, payload).await,
            Some(Decoded::Payout(payload)) => fold::<Payout>(connection, event, payload).await,
            None => Ok(()),
        }
    }

    /// Folds the whole batch in memory: per aggregate type, one statement reads the
    /// stored states of the touched aggregates, one upserts each touched state once, and
    /// one inserts the past states due in the batch.
    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut programs = Vec::new();
        let mut ambassadors = Vec::new();
        let mut referrals = Vec::new();
        let mut payouts = Vec::new();
        for event in events {
            match decode(event)? {
                Some(Decoded::Program(payload)) => programs.push((event, payload)),
                Some(Decoded::Ambassador(payload)) => ambassadors.push((event, payload)),
                Some(Decoded::Referral(payload)) => referrals.push((event, payload)),
                Some(Decoded::Payout(payload)) => payouts.push((event, payload)),
                None => {}
            }
        }
        fold_batch::<Program>(connection, programs).await?;
        fold_batch::<Ambassador>(connection, ambassadors).await?;
        fold_batch::<Referral>(connection, referrals).await?;
        fold_batch::<Payout>(connection, payouts).await
    }
}

/// Applies one event to the stored state of its aggregate and writes the result back.
async fn fold<A>(
    connection: &mut PgConnection,
    event: &StoredEvent,
    payload: A::Event,
) -> Result<(), ProjectionError>
where
    A: Aggregate + Serialize + DeserializeOwned,
{
    let stored: Option<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT version, state FROM aggregate_states
          WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .fetch_optional(&mut *connection)
    .await
    .map_err(database_error(event))?;

    let mut aggregate = match stored {
        None => A::default(),
        Some((version, _)) if version + 1 != event.sequence => {
            return Err(ProjectionError::Poison(format!(
                "{} does not follow the stored state at version {version}",
                event.describe()
            )))
        }
        Some((_, state)) => serde_json::from_value::<A>(state).map_err(|error| {
            ProjectionError::Poison(format!(
                "the stored state before {} cannot be read: {error}",
                event.describe()
            ))
        })?,
    };
    aggregate.apply(payload);
    let state = serde_json::to_value(&aggregate).map_err(|error| {
        ProjectionError::Poison(format!(
            "the state after {} cannot be written: {error}",
            event.describe()
        ))
    })?;

    sqlx::query(
        "INSERT INTO aggregate_states (aggregate_type, aggregate_id, agency_id, version, state, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
            SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.agency_id)
    .bind(event.sequence)
    .bind(&state)
    .bind(event.recorded_at)
    .execute(&mut *connection)
    .await
    .map_err(database_error(event))?;

    if event.sequence % SNAPSHOT_INTERVAL == 0 {
        sqlx::query(
            "INSERT INTO aggregate_snapshots
                 (aggregate_type, aggregate_id, agency_id, version, recorded_at, state)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.agency_id)
        .bind(event.sequence)
        .bind(event.recorded_at)
        .bind(&state)
        .execute(&mut *connection)
        .await
        .map_err(database_error(event))?;
    }
    Ok(())
}

/// The state of one aggregate while a batch is folded.
struct Folded<A> {
    aggregate: A,
    /// Sequence of the last event applied, `None` while no state is stored or applied.
    version: Option<i64>,
    agency_id: Uuid,
    updated_at: DateTime<Utc>,
}

/// Rows of one multi-row statement, one vector per column.
#[derive(Default)]
struct StateRows {
    aggregate_ids: Vec<String>,
    agency_ids: Vec<Uuid>,
    versions: Vec<i64>,
    times: Vec<DateTime<Utc>>,
    states: Vec<serde_json::Value>,
}

impl StateRows {
    fn push<A: Serialize>(
        &mut self,
        aggregate_id: &str,
        folded: &Folded<A>,
        version: i64,
    ) -> Result<(), ProjectionError> {
        let state = serde_json::to_value(&folded.aggregate).map_err(|error| {
            ProjectionError::Poison(format!(
                "the state of {aggregate_id} at version {version} cannot be written: {error}"
            ))
        })?;
        self.aggregate_ids.push(aggregate_id.to_owned());
        self.agency_ids.push(folded.agency_id);
        self.versions.push(version);
        self.times.push(folded.updated_at);
        self.states.push(state);
        Ok(())
    }
}

/// Applies the events of one aggregate type, in order, to the states of their aggregates
/// and writes each touched state once. Checks and results match [`fold`].
async fn fold_batch<A>(
    connection: &mut PgConnection,
    events: Vec<(&StoredEvent, A::Event)>,
) -> Result<(), ProjectionError>
where
    A: Aggregate + Serialize + DeserializeOwned,
{
    let Some((first, _)) = events.first() else {
        return Ok(());
    };
    let aggregate_type = first.aggregate_type.clone();
    let batch_error = super::batch_database_error("aggregate_states");

    let mut ids: Vec<&str> = events
        .iter()
        .map(|(event, _)| event.aggregate_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let stored: Vec<(String, Uuid, i64, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT aggregate_id, agency_id, version, state, updated_at FROM aggregate_states
          WHERE aggregate_type = $1 AND aggregate_id = ANY($2)",
    )
    .bind(&aggregate_type)
    .bind(&ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(&batch_error)?;

    let mut states: HashMap<String, Folded<A>> = HashMap::with_capacity(ids.len());
    for (aggregate_id, agency_id, version, state, updated_at) in stored {
        let aggregate = serde_json::from_value::<A>(state).map_err(|error| {
            ProjectionError::Poison(format!(
                "the stored state of {aggregate_type} {aggregate_id} cannot be read: {error}"
            ))
        })?;
        let folded = Folded {
            aggregate,
            version: Some(version),
            agency_id,
            updated_at,
        };
        states.insert(aggregate_id, folded);
    }

    let mut snapshots = StateRows::default();
    let mut touched = Vec::with_capacity(ids.len());
    for (event, payload) in events {
        let folded = states
            .entry(event.aggregate_id.clone())
            .or_insert_with(|| Folded {
                aggregate: A::default(),
                version: None,
                agency_id: event.agency_id,
                updated_at: event.recorded_at,
            });
        if let Some(version) = folded.version {
            if version + 1 != event.sequence {
                return Err(ProjectionError::Poison(format!(
                    "{} does not follow the stored state at version {version}",
                    event.describe()
                )));
            }
        }
        folded.aggregate.apply(payload);
        folded.version = Some(event.sequence);
        folded.updated_at = event.recorded_at;
        if event.sequence % SNAPSHOT_INTERVAL == 0 {
            snapshots.push(&event.aggregate_id, folded, event.sequence)?;
        }
        touched.push(event.aggregate_id.as_str());
    }
    touched.sort_unstable();
    touched.dedup();

    let mut current = StateRows::default();
    for aggregate_id in touched {
        let folded = &states[aggregate_id];
        let version = folded.version.expect("a touched aggregate has a version");
        current.push(aggregate_id, folded, version)?;
    }
    // The agency is written only with a new row, as in `fold`.
    sqlx::query(
        "INSERT INTO aggregate_states (aggregate_type, aggregate_id, agency_id, version, state, updated_at)
         SELECT $1, * FROM UNNEST($2::text[], $3::uuid[], $4::bigint[], $5::jsonb[], $6::timestamptz[])
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
            SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at",
    )
    .bind(&aggregate_type)
    .bind(&current.aggregate_ids)
    .bind(&current.agency_ids)
    .bind(&current.versions)
    .bind(&current.states)
    .bind(&current.times)
    .execute(&mut *connection)
    .await
    .map_err(&batch_error)?;

    if !snapshots.aggregate_ids.is_empty() {
        sqlx::query(
            "INSERT INTO aggregate_snapshots
                 (aggregate_type, aggregate_id, agency_id, version, recorded_at, state)
             SELECT $1, * FROM UNNEST($2::text[], $3::uuid[], $4::bigint[], $5::timestamptz[], $6::jsonb[])",
        )
        .bind(&aggregate_type)
        .bind(&snapshots.aggregate_ids)
        .bind(&snapshots.agency_ids)
        .bind(&snapshots.versions)
        .bind(&snapshots.times)
        .bind(&snapshots.states)
        .execute(&mut *connection)
        .await
        .map_err(&batch_error)?;
    }
    Ok(())
}
