//! The event store: postgres-es persistence with exact conflict reporting, event metadata,
//! and a command executor that returns what it committed.
//!
//! postgres-es reports every unique violation during an append as an optimistic-lock
//! error. [`EventRepository`] wraps it and checks, after such an error, whether another
//! writer really appended to the same aggregate; only then is the error a version conflict.
//!
//! [`AggregateStore::execute`] follows the steps of cqrs-es's `CqrsFramework` (load,
//! handle, commit) through the same public traits, but returns the new state and the
//! committed events, which the framework discards, and dispatches to no in-process query:
//! read models follow the events table in global order instead.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore, PersistenceError,
    ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use referrals_domain::ids::{AgencyId, UserId};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Aggregates whose snapshot is refreshed every this many events; long histories (hours
/// recorded week after week) then load from the snapshot plus at most this many events.
pub const SNAPSHOT_EVERY: usize = 50;

/// The postgres-es repository, with unique violations that are not version conflicts
/// reported as what they are.
pub struct EventRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
}

impl EventRepository {
    /// Creates a repository over the `events` and `snapshots` tables.
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }

    /// Returns true when the aggregate already has an event at or after `sequence`,
    /// which is what a genuine version conflict leaves behind.
    async fn sequence_taken(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: usize,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events
                             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence >= $3)",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
    }

    /// Appends `events` of one aggregate, and writes its snapshot when cqrs-es requests one,
    /// in a single statement. postgres-es sends BEGIN, one INSERT per event, the snapshot
    /// write and COMMIT, each a round trip. Only a snapshot write, once every
    /// [`SNAPSHOT_EVERY`] events, runs in a transaction, so that a snapshot written by
    /// someone else rolls the events back too.
    async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), AppendError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let Some((_, payload, version)) = snapshot_update else {
            insert_events(&self.pool, A::TYPE, events, None).await?;
            return Ok(());
        };

        // cqrs-es folds into the snapshot only the events up to the last multiple of
        // SNAPSHOT_EVERY, but postgres-es labels it with the last event's sequence. A
        // command whose events straddle that multiple would then lose the later ones on
        // the next load. The label here is the multiple the snapshot state really reached.
        let reached = last.sequence / SNAPSHOT_EVERY * SNAPSHOT_EVERY;
        let snapshot = (
            &payload,
            i64::try_from(reached).unwrap_or(i64::MAX),
            i64::try_from(version).unwrap_or(i64::MAX),
        );
        let mut transaction = self.pool.begin().await?;
        let snapshots_written =
            insert_events(&mut *transaction, A::TYPE, events, Some(snapshot)).await?;
        if snapshots_written != 1 {
            // Dropping the transaction rolls the events back.
            return Err(AppendError::SnapshotMoved);
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Reads an aggregate's snapshot and the events after it in one statement, where
    /// cqrs-es reads them in two. The snapshot, if any, is the first row (`part` 0).
    async fn load_rows(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<(Option<SerializedSnapshot>, Vec<SerializedEvent>), sqlx::Error> {
        type Row = (
            i32,
            Option<String>,
            Option<String>,
            i64,
            Option<i64>,
            Value,
            Option<Value>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "WITH snapshot AS (
                 SELECT last_sequence, current_snapshot, payload
                   FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2)
             SELECT 0 AS part, NULL::text AS event_type, NULL::text AS event_version,
                    last_sequence AS sequence, current_snapshot, payload, NULL::json AS metadata
               FROM snapshot
             UNION ALL
             SELECT 1, event_type, event_version, sequence, NULL, payload, metadata
               FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2
                AND sequence > coalesce((SELECT last_sequence FROM snapshot), 0)
             ORDER BY part, sequence",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&self.pool)
        .await?;

        let mut snapshot = None;
        let mut events = Vec::with_capacity(rows.len());
        for (_, event_type, event_version, sequence, current_snapshot, payload, metadata) in rows {
            let sequence = usize::try_from(sequence).unwrap_or_default();
            match (event_type, event_version, metadata) {
                (Some(event_type), Some(event_version), Some(metadata)) => {
                    events.push(SerializedEvent::new(
                        aggregate_id.to_owned(),
                        sequence,
                        aggregate_type.to_owned(),
                        event_type,
                        event_version,
                        payload,
                        metadata,
                    ));
                }
                _ => {
                    snapshot = Some(SerializedSnapshot {
                        aggregate_id: aggregate_id.to_owned(),
                        aggregate: payload,
                        current_sequence: sequence,
                        current_snapshot: current_snapshot
                            .and_then(|version| usize::try_from(version).ok())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok((snapshot, events))
    }
}

/// Inserts `events`, all of one aggregate and in sequence order, with one statement,
/// and with `snapshot` (state, last sequence folded in, snapshot version) also upserts the
/// aggregate's snapshot row if it is still at the previous version. Returns the number of
/// snapshot rows written.
async fn insert_events<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    aggregate_type: &str,
    events: &[SerializedEvent],
    snapshot: Option<(&Value, i64, i64)>,
) -> Result<i64, sqlx::Error> {
    let Some(first) = events.first() else {
        return Ok(0);
    };
    let mut sequences = Vec::with_capacity(events.len());
    let mut event_types = Vec::with_capacity(events.len());
    let mut event_versions = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut metadata = Vec::with_capacity(events.len());
    for event in events {
        sequences.push(i64::try_from(event.sequence).unwrap_or(i64::MAX));
        event_types.push(event.event_type.as_str());
        event_versions.push(event.event_version.as_str());
        payloads.push(&event.payload);
        metadata.push(&event.metadata);
    }
    let (_, snapshots_written): (i64, i64) = sqlx::query_as(
        "WITH appended AS (
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata)
             SELECT $1, $2, new.sequence, new.event_type, new.event_version,
                    new.payload, new.metadata
               FROM unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
                    AS new (sequence, event_type, event_version, payload, metadata)
              -- The hash chain trigger links each row to the one inserted before it.
              ORDER BY new.sequence
             RETURNING 1),
         snapshot AS (
             INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence,
                                    current_snapshot, payload)
             SELECT $1, $2, $8, $9, $10 WHERE $9 IS NOT NULL
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                SET last_sequence = EXCLUDED.last_sequence,
                    current_snapshot = EXCLUDED.current_snapshot,
                    payload = EXCLUDED.payload
              WHERE snapshots.current_snapshot = EXCLUDED.current_snapshot - 1
             RETURNING 1)
         SELECT (SELECT count(*) FROM appended), (SELECT count(*) FROM snapshot)",
    )
    .bind(aggregate_type)
    .bind(&first.aggregate_id)
    .bind(&sequences)
    .bind(&event_types)
    .bind(&event_versions)
    .bind(&payloads)
    .bind(&metadata)
    .bind(snapshot.map(|(_, last_sequence, _)| last_sequence))
    .bind(snapshot.map(|(_, _, version)| version))
    .bind(snapshot.map(|(payload, _, _)| payload))
    .fetch_one(executor)
    .await?;
    Ok(snapshots_written)
}

/// Why [`EventRepository::append`] wrote nothing.
#[derive(Debug, thiserror::Error)]
enum AppendError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The snapshot row is not at the version the command loaded.
    #[error("the snapshot was replaced by another writer")]
    SnapshotMoved,
}

/// Returns true for PostgreSQL's unique violation (SQLSTATE 23505).
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.code().as_deref() == Some("23505"))
}

/// A unique violation during an append that was not caused by a concurrent writer.
#[derive(Debug, thiserror::Error)]
#[error(
    "appending to {aggregate_type} {aggregate_id} violated a unique constraint, \
     but no other writer appended to it"
)]
pub struct UnexpectedUniqueViolation {
    aggregate_type: String,
    aggregate_id: String,
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        match self.append::<A>(events, snapshot_update).await {
            Err(AppendError::Database(error)) if is_unique_violation(&error) => {
                let taken = self
                    .sequence_taken(A::TYPE, &first.aggregate_id, first.sequence)
                    .await
                    .map_err(|error| PersistenceError::ConnectionError(Box::new(error)))?;
                if taken {
                    Err(PersistenceError::OptimisticLockError)
                } else {
                    Err(PersistenceError::UnknownError(Box::new(
                        UnexpectedUniqueViolation {
                            aggregate_type: A::TYPE.to_owned(),
                            aggregate_id: first.aggregate_id.clone(),
                        },
                    )))
                }
            }
            Err(AppendError::Database(error)) if crate::database::is_unavailable(&error) => {
                Err(PersistenceError::ConnectionError(Box::new(error)))
            }
            Err(AppendError::Database(error)) => {
                Err(PersistenceError::UnknownError(Box::new(error)))
            }
            Err(AppendError::SnapshotMoved) => Err(PersistenceError::OptimisticLockError),
            Ok(()) => Ok(()),
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}

/// The issuer of a command: a signed-in user acting in one of their roles, or a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user of the agency (or a platform operator) acting in `role`.
    User {
        /// The user's id.
        id: UserId,
        /// The role the user acted in, such as `recruiter`.
        role: String,
    },
    /// An automatic job, such as the process manager that requests payouts.
    System {
        /// The job's name, such as `payout_requester`.
        job: String,
    },
}

/// The context every event carries: agency, actor, time and the ids that tie a request's
/// events together. Stored as the event's metadata.
#[derive(Debug, Clone)]
pub struct CommandMetadata {
    /// The agency the command acts in.
    pub agency_id: AgencyId,
    /// Who issued the command.
    pub actor: Actor,
    /// When the command was accepted (UTC).
    pub recorded_at: DateTime<Utc>,
    /// Shared by every event that one business operation caused, across aggregates.
    pub correlation_id: Uuid,
    /// The id of the request or event that directly caused this command.
    pub causation_id: Uuid,
    /// The id of the HTTP request or job run.
    pub request_id: Uuid,
}

impl CommandMetadata {
    /// Metadata for a new operation started by `actor` now, with fresh ids.
    pub fn new(agency_id: AgencyId, actor: Actor) -> Self {
        let request_id = Uuid::now_v7();
        Self {
            agency_id,
            actor,
            recorded_at: Utc::now(),
            correlation_id: request_id,
            causation_id: request_id,
            request_id,
        }
    }

    /// Metadata for a command that a job issues because of `cause`, in the same
    /// correlation as the cause.
    pub fn caused_by(&self, actor: Actor, cause: Uuid) -> Self {
        Self {
            agency_id: self.agency_id,
            actor,
            recorded_at: Utc::now(),
            correlation_id: self.correlation_id,
            causation_id: cause,
            request_id: self.request_id,
        }
    }

    /// The metadata as the string map cqrs-es stores.
    pub fn to_map(&self) -> HashMap<String, String> {
        let (actor_id, actor_role) = match &self.actor {
            Actor::User { id, role } => (id.to_string(), role.clone()),
            Actor::System { job } => ("system".to_owned(), format!("system:{job}")),
        };
        HashMap::from([
            ("agency_id".to_owned(), self.agency_id.to_string()),
            ("actor_id".to_owned(), actor_id),
            ("actor_role".to_owned(), actor_role),
            (
                "recorded_at".to_owned(),
                self.recorded_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            ("correlation_id".to_owned(), self.correlation_id.to_string()),
            ("causation_id".to_owned(), self.causation_id.to_string()),
            ("request_id".to_owned(), self.request_id.to_string()),
        ])
    }
}

/// An aggregate that belongs to one agency. The store uses it to make another agency's
/// aggregates look absent, so tenant isolation does not depend on every caller checking.
pub trait Tenanted {
    /// The owning agency; `None` before the aggregate's first event.
    fn agency_id(&self) -> Option<AgencyId>;
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate rejected the command under its rules.
    #[error(transparent)]
    Rejected(E),
    /// The aggregate does not exist in the caller's agency.
    #[error("{aggregate_type} not found")]
    NotFound {
        /// The aggregate's type.
        aggregate_type: &'static str,
    },
    /// Another command changed the aggregate first, or the caller expected another version.
    #[error("the {aggregate_type} was changed by another request; reload it and try again")]
    Conflict {
        /// The aggregate's type.
        aggregate_type: &'static str,
    },
    /// The database could not be reached.
    #[error("the event store is unavailable: {0}")]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: a stored event that cannot be read, an unexpected database error.
    #[error("the event store failed: {0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl<E: std::error::Error> CommandError<E> {
    fn from_aggregate(error: AggregateError<E>, aggregate_type: &'static str) -> Self {
        match error {
            AggregateError::UserError(error) => Self::Rejected(error),
            AggregateError::AggregateConflict => Self::Conflict { aggregate_type },
            AggregateError::DatabaseConnectionError(error) => Self::Unavailable(error),
            AggregateError::DeserializationError(error)
            | AggregateError::UnexpectedError(error) => {
                if is_connection_error(error.as_ref()) {
                    Self::Unavailable(error)
                } else {
                    Self::Failed(error)
                }
            }
        }
    }
}

/// Maps a failed query to [`CommandError::Unavailable`] or [`CommandError::Failed`].
fn classify_sqlx<E: std::error::Error>(error: sqlx::Error) -> CommandError<E> {
    if is_connection_error(&error) {
        CommandError::Unavailable(Box::new(error))
    } else {
        CommandError::Failed(Box::new(error))
    }
}

/// Returns true for errors that mean the database is out of reach rather than wrong.
fn is_connection_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(sqlx_error) = error.downcast_ref::<sqlx::Error>() {
            return crate::database::is_unavailable(sqlx_error);
        }
        current = error.source();
    }
    false
}

/// The outcome of a committed command.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The aggregate's state after the command.
    pub aggregate: A,
    /// The aggregate's version (sequence of its last event) after the command.
    pub version: usize,
    /// The events the command committed; empty when it changed nothing.
    pub events: Vec<EventEnvelope<A>>,
}

/// Counts a command's outcome in the `commands_total` metric.
fn count_outcome<A: Aggregate>(outcome: &Result<Executed<A>, CommandError<A::Error>>) {
    let label = match outcome {
        Ok(executed) if executed.events.is_empty() => "unchanged",
        Ok(_) => "committed",
        Err(CommandError::Rejected(_)) => "rejected",
        Err(CommandError::NotFound { .. }) => "not_found",
        Err(CommandError::Conflict { .. }) => "conflict",
        Err(CommandError::Unavailable(_)) => "unavailable",
        Err(CommandError::Failed(_)) => "failed",
    };
    metrics::counter!("commands_total", "aggregate" => A::TYPE, "outcome" => label).increment(1);
}

/// Loads aggregates and executes commands on them through cqrs-es and postgres-es.
pub struct AggregateStore<A: Aggregate + Tenanted> {
    store: PersistedEventStore<EventRepository, A>,
    repository: EventRepository,
    services: A::Services,
    pool: PgPool,
}

impl<A: Aggregate + Tenanted> AggregateStore<A> {
    /// Creates a store for `A` over `pool`, with snapshots every [`SNAPSHOT_EVERY`] events.
    pub fn new(pool: PgPool, services: A::Services) -> Self {
        Self {
            store: PersistedEventStore::new_snapshot_store(
                EventRepository::new(pool.clone()),
                SNAPSHOT_EVERY,
            )
            .with_upcasters(crate::upcast::upcasters()),
            repository: EventRepository::new(pool.clone()),
            services,
            pool,
        }
    }

    /// Loads the aggregate's context from its snapshot and the events after it, read in
    /// one statement and upcast by [`crate::upcast`]. An event that does not deserialize is
    /// reported with its aggregate, sequence and version. A snapshot that no longer
    /// deserializes (the aggregate's shape changed) is ignored and every event replayed,
    /// as cqrs-es does.
    async fn load_context(
        &self,
        aggregate_id: &str,
    ) -> Result<EventStoreAggregateContext<A>, CommandError<A::Error>> {
        let (snapshot, mut events) = self
            .repository
            .load_rows(A::TYPE, aggregate_id)
            .await
            .map_err(classify_sqlx)?;
        let mut context = EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        };
        if let Some(snapshot) = snapshot {
            match EventStoreAggregateContext::try_from(snapshot) {
                Ok(from_snapshot) => context = from_snapshot,
                Err(_) => {
                    events = self
                        .repository
                        .get_events::<A>(aggregate_id)
                        .await
                        .map_err(|error| {
                            CommandError::from_aggregate(AggregateError::from(error), A::TYPE)
                        })?;
                }
            }
        }
        for event in events {
            let sequence = event.sequence;
            let event = crate::upcast::decode::<A>(event)
                .map_err(|unreadable| CommandError::Failed(Box::new(unreadable)))?;
            context.aggregate.apply(event);
            context.current_sequence = sequence;
        }
        Ok(context)
    }

    /// Loads an aggregate of `agency_id` with its version; `None` when it has no events or
    /// belongs to another agency.
    ///
    /// # Errors
    /// Returns [`CommandError::Unavailable`] or [`CommandError::Failed`] when loading fails.
    pub async fn load(
        &self,
        agency_id: AgencyId,
        aggregate_id: &str,
    ) -> Result<Option<(A, usize)>, CommandError<A::Error>> {
        let context = self.load_context(aggregate_id).await?;
        if context.current_sequence == 0 || context.aggregate.agency_id() != Some(agency_id) {
            return Ok(None);
        }
        Ok(Some((context.aggregate, context.current_sequence)))
    }

    /// Reads the current state of an aggregate of `agency_id` from the
    /// `read_models.aggregate_states` projection, without replaying its events. When the
    /// projection has not caught up with the aggregate's last event (right after a
    /// command), the aggregate is loaded from the event store instead, so a client always
    /// reads its own writes. `None` when it does not exist or belongs to another agency.
    ///
    /// # Errors
    /// Returns [`CommandError::Unavailable`] or [`CommandError::Failed`] when reading fails.
    pub async fn read(
        &self,
        agency_id: AgencyId,
        aggregate_id: &str,
    ) -> Result<Option<(A, usize)>, CommandError<A::Error>> {
        let row: (Option<i64>, Option<i64>, Option<Uuid>, Option<Value>) = sqlx::query_as(
            "SELECT (SELECT max(sequence) FROM events
                      WHERE aggregate_type = $1 AND aggregate_id = $2),
                    state.version, state.agency_id, state.state
               FROM (SELECT 1) AS one
               LEFT JOIN read_models.aggregate_states AS state
                 ON state.aggregate_type = $1 AND state.aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_one(&self.pool)
        .await
        .map_err(classify_sqlx)?;

        match row {
            (None, _, _, _) => Ok(None),
            (Some(latest), Some(version), Some(owner), Some(state)) if latest == version => {
                if owner != agency_id.0 {
                    return Ok(None);
                }
                let aggregate = serde_json::from_value(state)
                    .map_err(|error| CommandError::Failed(Box::new(error)))?;
                Ok(Some((
                    aggregate,
                    usize::try_from(version).unwrap_or_default(),
                )))
            }
            _ => self.load(agency_id, aggregate_id).await,
        }
    }

    /// Executes one command and commits its events with `metadata`.
    ///
    /// With `expected_version`, the command runs only if the aggregate is still at that
    /// version (an HTTP `If-Match`).
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when a rule rejects the command, [`CommandError::Conflict`]
    /// when another writer got there first or the version differs, and
    /// [`CommandError::Unavailable`] or [`CommandError::Failed`] for the database.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
        expected_version: Option<usize>,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let outcome = self
            .execute_once(aggregate_id, command, metadata, expected_version)
            .await;
        count_outcome::<A>(&outcome);
        outcome
    }

    /// Executes a command that creates an aggregate under an id that has no events (a
    /// fresh UUID v7), without reading its nonexistent events first. If the id is taken
    /// after all, the append fails and the command is a [`CommandError::Conflict`].
    ///
    /// # Errors
    /// As [`AggregateStore::execute`].
    pub async fn create(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let context = EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        };
        let outcome = self.handle_and_commit(context, command, metadata).await;
        count_outcome::<A>(&outcome);
        outcome
    }

    async fn execute_once(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
        expected_version: Option<usize>,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let context = self.load_context(aggregate_id).await?;
        if context.current_sequence > 0 && context.aggregate.agency_id() != Some(metadata.agency_id)
        {
            return Err(CommandError::NotFound {
                aggregate_type: A::TYPE,
            });
        }
        // A version expected of an aggregate that does not exist means the caller names
        // something unknown, not something that changed.
        if context.current_sequence == 0 && expected_version.is_some() {
            return Err(CommandError::NotFound {
                aggregate_type: A::TYPE,
            });
        }
        if expected_version.is_some_and(|expected| expected != context.current_sequence) {
            return Err(CommandError::Conflict {
                aggregate_type: A::TYPE,
            });
        }
        self.handle_and_commit(context, command, metadata).await
    }

    /// Handles `command` on the loaded `context` and commits the events it decides.
    async fn handle_and_commit(
        &self,
        mut context: EventStoreAggregateContext<A>,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        // `EventSink::write` applies each event to the aggregate it is given, and cqrs-es's
        // snapshot step applies the same events again to the context it commits. Handling
        // the command on the loaded state and committing a copy of that state taken before
        // the command keeps the snapshot from counting every event twice.
        let loaded_state = serde_json::to_value(&context.aggregate)
            .map_err(|error| CommandError::Failed(Box::new(error)))?;
        let sink = EventSink::default();
        context
            .aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Executed {
                version: context.current_sequence,
                aggregate: context.aggregate,
                events: Vec::new(),
            });
        }

        let loaded_aggregate: A = serde_json::from_value(loaded_state)
            .map_err(|error| CommandError::Failed(Box::new(error)))?;
        let aggregate = std::mem::replace(&mut context.aggregate, loaded_aggregate);
        let loaded_version = context.current_sequence;
        let committed = self
            .store
            .commit(events, context, metadata.to_map())
            .await
            .map_err(|error| CommandError::from_aggregate(error, A::TYPE))?;
        let version = committed
            .last()
            .map_or(loaded_version, |event| event.sequence);
        Ok(Executed {
            aggregate,
            version,
            events: committed,
        })
    }

    /// The services the aggregate's command handlers use.
    pub fn services(&self) -> &A::Services {
        &self.services
    }

    /// Executes one command on the new aggregate `aggregate_id` and appends its events
    /// inside `transaction`, so that they commit or roll back together with the caller's
    /// other writes. The events are stored as [`Self::execute`] stores them, without a
    /// snapshot.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when a rule rejects the command,
    /// [`CommandError::Conflict`] when the aggregate already has events, and
    /// [`CommandError::Unavailable`] or [`CommandError::Failed`] for the database. The
    /// transaction is unusable after a database error, so the caller must drop it.
    pub async fn execute_new_in(
        &self,
        transaction: &mut Transaction<'_, Postgres>,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<A, CommandError<A::Error>> {
        let mut aggregate = A::default();
        let sink = EventSink::default();
        aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let events = sink.collect().await;
        let metadata = serde_json::to_value(metadata.to_map())
            .map_err(|error| CommandError::Failed(Box::new(error)))?;
        let mut serialized = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            let payload = serde_json::to_value(&event)
                .map_err(|error| CommandError::Failed(Box::new(error)))?;
            serialized.push(SerializedEvent::new(
                aggregate_id.to_owned(),
                index + 1,
                A::TYPE.to_owned(),
                event.event_type(),
                event.event_version(),
                payload,
                metadata.clone(),
            ));
            aggregate.apply(event);
        }
        let inserted = insert_events(&mut **transaction, A::TYPE, &serialized, None).await;
        // `commands_total` is not counted here: the caller's commit decides the outcome.
        match inserted {
            Ok(_) => Ok(aggregate),
            Err(error) if is_unique_violation(&error) => Err(CommandError::Conflict {
                aggregate_type: A::TYPE,
            }),
            Err(error) => Err(classify_sqlx(error)),
        }
    }
}
