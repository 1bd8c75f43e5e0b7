//! `read_models.aggregate_states`: the current state of each program, ambassador,
//! referral and payout, folded from its events with the domain's own `apply`, and
//! `read_models.aggregate_snapshots`: the state at every [`SNAPSHOT_INTERVAL`]th event,
//! from which past states are rebuilt.

use async_trait::async_trait;
use cqrs_es::Aggregate;
use referrals_domain::ambassador::Ambassador;
use referrals_domain::payout::Payout;
use referrals_domain::program::Program;
use referrals_domain::referral::Referral;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;

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
