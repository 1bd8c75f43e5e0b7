//! The projection runner: reads the events table in global order from a projection's
//! checkpoint, in batches, and applies each batch and the new checkpoint in one
//! transaction.
//!
//! # Why the order is gap-free
//! `position` comes from an identity column, so it is assigned at insert, while
//! transactions commit in another order: an event with a lower position can become
//! visible after one with a higher position. A reader that only remembered the highest
//! position seen would skip it forever. The runner therefore reads only events whose
//! inserting transaction is older than every transaction still running
//! (`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`): those can no longer change,
//! and no new event can appear below them. It orders by `(transaction_id, position)` and
//! keeps that pair as its checkpoint. A long transaction anywhere in the cluster delays the
//! horizon, so events wait, but none are lost.
//!
//! # One writer per projection
//! Each batch transaction first takes a transaction-scoped advisory lock named after the
//! projection, so runners in several processes take turns and each batch starts from the
//! checkpoint its predecessor committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;

use crate::{Projection, ProjectionError, StoredEvent};

/// Events read and applied per transaction when no other size is set.
pub const DEFAULT_BATCH_SIZE: i64 = 500;

/// How long an idle runner waits before it looks for new events again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long a runner waits after a transient failure before it retries.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Errors of the runner: a stop at an unreadable event, or a failure that may pass.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The projection met an event it cannot apply and stopped before it.
    #[error(
        "projection {projection} stopped at the event at position {position} ({event_id}): {message}; \
         fix the projection and run `referrals projections rebuild {projection}`"
    )]
    Stopped {
        /// The projection's name.
        projection: String,
        /// Global position of the event it could not apply.
        position: i64,
        /// The event's id (`aggregate_type/aggregate_id/sequence`).
        event_id: String,
        /// Why it could not apply it.
        message: String,
    },
    /// A failure that may pass, such as a lost connection.
    #[error("projection {projection} failed and will retry: {message}")]
    Transient {
        /// The projection's name.
        projection: String,
        /// What failed.
        message: String,
    },
    /// The request itself is wrong, such as rebuilding a projection that has no tables.
    #[error("{0}")]
    Invalid(String),
}

/// Where a batch writes: the live tables or a rebuild's shadow copies.
#[derive(Debug, Clone)]
struct Target {
    /// Schema searched first for the projection's unqualified table names.
    schema: String,
    /// Row of `projection_checkpoints` that tracks this target.
    checkpoint: String,
}

impl Target {
    fn live(projection: &dyn Projection) -> Self {
        Self {
            schema: projection.schema().to_owned(),
            checkpoint: projection.name().to_owned(),
        }
    }

    fn shadow(projection: &dyn Projection) -> Self {
        Self {
            schema: shadow_schema(projection),
            checkpoint: format!("{}:rebuild", projection.name()),
        }
    }
}

fn shadow_schema(projection: &dyn Projection) -> String {
    format!("rebuild_{}", projection.name())
}

/// Returns the advisory lock key text of a checkpoint row.
fn lock_name(checkpoint: &str) -> String {
    format!("projection:{checkpoint}")
}

/// Reads events in global order and applies them to projections.
#[derive(Debug, Clone)]
pub struct ProjectionRunner {
    pool: PgPool,
    batch_size: i64,
}

impl ProjectionRunner {
    /// Creates a runner over `pool` with [`DEFAULT_BATCH_SIZE`].
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// Sets how many events one transaction reads and applies.
    pub fn with_batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Applies one batch to the projection's live tables and returns how many events it
    /// applied; 0 means the projection has caught up.
    ///
    /// # Errors
    /// [`RunnerError::Stopped`] when an event cannot be applied (now or at an earlier
    /// run), [`RunnerError::Transient`] when the database fails.
    pub async fn run_batch(&self, projection: &dyn Projection) -> Result<usize, RunnerError> {
        self.run_batch_into(projection, &Target::live(projection))
            .await
    }

    /// Applies batches until no readable event is left; returns the count.
    ///
    /// Events of a transaction that started before the oldest transaction still running
    /// in the cluster (in any database) are readable; later ones wait for that
    /// transaction to end. So a caller that must see every committed event applied, such
    /// as a test, repeats this until the status reports no event behind.
    ///
    /// # Errors
    /// As [`ProjectionRunner::run_batch`].
    pub async fn catch_up(&self, projection: &dyn Projection) -> Result<u64, RunnerError> {
        self.catch_up_into(projection, &Target::live(projection), &mut |_| {})
            .await
    }

    async fn catch_up_into(
        &self,
        projection: &dyn Projection,
        target: &Target,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, RunnerError> {
        let mut applied = 0u64;
        loop {
            let batch = self.run_batch_into(projection, target).await?;
            if batch == 0 {
                return Ok(applied);
            }
            applied += batch as u64;
            progress(applied);
        }
    }

    async fn run_batch_into(
        &self,
        projection: &dyn Projection,
        target: &Target,
    ) -> Result<usize, RunnerError> {
        if let Some(applied) = self
            .run_batch_once(projection, target, Apply::Whole)
            .await?
        {
            return Ok(applied);
        }
        // The batch call reported a poison event and its transaction was rolled back. The
        // batch runs again, event by event, so that the error names the poison event. It
        // re-reads the checkpoint, because another runner may have moved it meanwhile.
        Ok(self
            .run_batch_once(projection, target, Apply::OneByOne)
            .await?
            .unwrap_or_default())
    }

    /// Reads one batch after the checkpoint, applies it in the `apply` mode and commits it with
    /// the new checkpoint. Returns the number of events applied, or `None`, with nothing
    /// committed, when [`Apply::Whole`] met a poison event.
    async fn run_batch_once(
        &self,
        projection: &dyn Projection,
        target: &Target,
        apply: Apply,
    ) -> Result<Option<usize>, RunnerError> {
        let transient = |error: sqlx::Error| RunnerError::Transient {
            projection: projection.name().to_owned(),
            message: error.to_string(),
        };
        let mut tx = self.pool.begin().await.map_err(transient)?;
        // One statement takes the projection's lock and, for this transaction only, makes
        // the target's schema the first one searched for unqualified table names. The
        // schema name is built by this module from a projection's fixed name, never from
        // input, and is quoted all the same.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)),
                    set_config('search_path', $2, true)",
        )
        .bind(lock_name(&target.checkpoint))
        .bind(format!("{}, public", quote_identifier(&target.schema)))
        .execute(&mut *tx)
        .await
        .map_err(transient)?;
        let checkpoint = read_checkpoint(&mut tx, &target.checkpoint)
            .await
            .map_err(transient)?;
        if let Some(failure) = checkpoint.failure {
            return Err(RunnerError::Stopped {
                projection: projection.name().to_owned(),
                position: failure.position,
                event_id: failure.event_id,
                message: failure.message,
            });
        }

        let events = read_events(
            &mut tx,
            &checkpoint.transaction_id,
            checkpoint.position,
            self.batch_size,
        )
        .await
        .map_err(transient)?;
        if events.is_empty() {
            return Ok(Some(0));
        }

        match apply {
            Apply::Whole => match projection.apply_batch(&mut tx, &events).await {
                Ok(()) => {}
                Err(ProjectionError::Transient(message)) => {
                    return Err(RunnerError::Transient {
                        projection: projection.name().to_owned(),
                        message,
                    })
                }
                Err(ProjectionError::Poison(message)) => {
                    tracing::debug!(
                        projection = projection.name(),
                        events = events.len(),
                        error = %message,
                        "batch has an event the projection cannot apply; applying its events one at a time"
                    );
                    return Ok(None);
                }
            },
            Apply::OneByOne => {
                for event in &events {
                    match projection.apply(&mut tx, event).await {
                        Ok(()) => {}
                        Err(ProjectionError::Transient(message)) => {
                            return Err(RunnerError::Transient {
                                projection: projection.name().to_owned(),
                                message: format!("{}: {message}", event.describe()),
                            })
                        }
                        Err(ProjectionError::Poison(message)) => {
                            drop(tx);
                            return Err(self
                                .record_failure(projection, target, event, message)
                                .await);
                        }
                    }
                }
            }
        }

        write_checkpoint(&mut tx, target, &events)
            .await
            .map_err(transient)?;
        tx.commit().await.map_err(transient)?;
        Ok(Some(events.len()))
    }

    /// Marks the projection as stopped at `event` and returns the error to report.
    async fn record_failure(
        &self,
        projection: &dyn Projection,
        target: &Target,
        event: &StoredEvent,
        message: String,
    ) -> RunnerError {
        tracing::error!(
            projection = projection.name(),
            position = event.position,
            event_id = %event.id(),
            error = %message,
            "projection stopped at an event it cannot apply"
        );
        // An upsert, because the batch that would have created the checkpoint row of a
        // projection's first run was just rolled back.
        let recorded = sqlx::query(
            "INSERT INTO projection_checkpoints
                    (projection, failed_position, failed_event, failure, failed_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (projection) DO UPDATE
                SET failed_position = $2, failed_event = $3, failure = $4, failed_at = now()",
        )
        .bind(&target.checkpoint)
        .bind(event.position)
        .bind(event.id())
        .bind(&message)
        .execute(&self.pool)
        .await;
        if let Err(error) = recorded {
            tracing::error!(projection = projection.name(), %error, "recording the projection failure failed");
        }
        RunnerError::Stopped {
            projection: projection.name().to_owned(),
            position: event.position,
            event_id: event.id(),
            message,
        }
    }

    /// Keeps every projection caught up until `shutdown` turns true. Each projection runs
    /// in its own task: one that stops at an event it cannot apply stays stopped (and
    /// logged), while the others go on.
    pub async fn run(
        &self,
        projections: Vec<Arc<dyn Projection>>,
        shutdown: watch::Receiver<bool>,
    ) {
        let tasks: Vec<_> = projections
            .into_iter()
            .map(|projection| {
                let runner = self.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { runner.follow(projection, shutdown).await })
            })
            .collect();
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a projection task panicked");
            }
        }
    }

    async fn follow(&self, projection: Arc<dyn Projection>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(projection = projection.name(), "projection runner started");
        while !*shutdown.borrow() {
            let pause = match self.run_batch(projection.as_ref()).await {
                Ok(0) => POLL_INTERVAL,
                Ok(_) => Duration::ZERO,
                Err(RunnerError::Stopped { .. }) => {
                    // Already logged with the event's position and id when it happened.
                    break;
                }
                Err(error) => {
                    tracing::warn!(projection = projection.name(), %error, "projection batch failed; retrying");
                    RETRY_DELAY
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!(projection = projection.name(), "projection runner stopped");
    }

    /// Rebuilds a projection from the first event without taking its tables offline:
    /// builds copies of its tables in a shadow schema from the whole event store, then,
    /// while holding the projection's lock, catches the copies up and replaces the live
    /// rows with theirs in one transaction. Readers see the old rows until that commit.
    /// `progress` is called with the number of events applied so far.
    ///
    /// # Errors
    /// [`RunnerError::Invalid`] for a projection without tables, and the errors of
    /// [`ProjectionRunner::run_batch`] while building.
    pub async fn rebuild(
        &self,
        projection: &dyn Projection,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<RebuildReport, RunnerError> {
        if projection.tables().is_empty() {
            return Err(RunnerError::Invalid(format!(
                "projection {} keeps no tables, so there is nothing to rebuild",
                projection.name()
            )));
        }
        let started = Instant::now();
        let transient = |error: sqlx::Error| RunnerError::Transient {
            projection: projection.name().to_owned(),
            message: error.to_string(),
        };
        let shadow = Target::shadow(projection);
        self.prepare_shadow(projection, &shadow)
            .await
            .map_err(transient)?;
        let mut applied = self.catch_up_into(projection, &shadow, progress).await?;

        // Hold the live projection's lock on a connection of its own: live batches wait
        // while the copies catch up with the last events and replace the live rows.
        let mut lock = self.pool.acquire().await.map_err(transient)?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(lock_name(projection.name()))
            .execute(&mut *lock)
            .await
            .map_err(transient)?;
        let swapped = async {
            applied += self.catch_up_into(projection, &shadow, progress).await?;
            self.swap(projection, &shadow).await.map_err(transient)
        }
        .await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(lock_name(projection.name()))
            .execute(&mut *lock)
            .await;
        if let Err(error) = unlocked {
            // Closing the connection releases a session lock; do not return it to the pool.
            tracing::warn!(projection = projection.name(), %error, "releasing the rebuild lock failed");
            lock.detach();
        }
        swapped?;

        Ok(RebuildReport {
            events: applied,
            elapsed: started.elapsed(),
        })
    }

    async fn prepare_shadow(
        &self,
        projection: &dyn Projection,
        shadow: &Target,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let schema = quote_identifier(&shadow.schema);
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut *tx)
            .await?;
        for table in projection.tables() {
            let table = quote_identifier(table);
            let live = quote_identifier(projection.schema());
            sqlx::query(&format!(
                "CREATE TABLE {schema}.{table} (LIKE {live}.{table} INCLUDING ALL)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
            .bind(&shadow.checkpoint)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn swap(&self, projection: &dyn Projection, shadow: &Target) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let live = quote_identifier(projection.schema());
        let copies = quote_identifier(&shadow.schema);
        // DELETE, not TRUNCATE: TRUNCATE would lock readers out until the commit, while
        // DELETE lets them read the old rows meanwhile.
        for table in projection.tables().iter().rev() {
            let table = quote_identifier(table);
            sqlx::query(&format!("DELETE FROM {live}.{table}"))
                .execute(&mut *tx)
                .await?;
        }
        for table in projection.tables() {
            let table = quote_identifier(table);
            sqlx::query(&format!(
                "INSERT INTO {live}.{table} SELECT * FROM {copies}.{table}"
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE projection_checkpoints AS live
                SET transaction_id = built.transaction_id, position = built.position,
                    events_applied = built.events_applied, updated_at = now(),
                    failed_position = NULL, failed_event = NULL, failure = NULL, failed_at = NULL
               FROM projection_checkpoints AS built
              WHERE live.projection = $1 AND built.projection = $2",
        )
        .bind(projection.name())
        .bind(&shadow.checkpoint)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
            .bind(&shadow.checkpoint)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP SCHEMA {copies} CASCADE"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}

/// The outcome of a rebuild.
#[derive(Debug, Clone, Copy)]
pub struct RebuildReport {
    /// Events applied to the copies.
    pub events: u64,
    /// Time from start to swap.
    pub elapsed: Duration,
}

impl RebuildReport {
    /// Events applied per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// A stopped projection's failure, as recorded in its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Position of the event it could not apply.
    pub position: i64,
    /// The event's id.
    pub event_id: String,
    /// Why.
    pub message: String,
}

impl Failure {
    /// Reads the failure columns of a `projection_checkpoints` row; `None` when the
    /// projection has not stopped.
    pub(crate) fn from_row(row: &PgRow) -> Option<Self> {
        let position = row.get::<Option<i64>, _>("failed_position")?;
        Some(Self {
            position,
            event_id: row
                .get::<Option<String>, _>("failed_event")
                .unwrap_or_default(),
            message: row.get::<Option<String>, _>("failure").unwrap_or_default(),
        })
    }
}

/// The mode of applying a batch: one [`Projection::apply_batch`] call, or event by event
/// with [`Projection::apply`] after the batch call reported a poison event.
#[derive(Debug, Clone, Copy)]
enum Apply {
    Whole,
    OneByOne,
}

/// Moves the checkpoint past the last of `events`, which must not be empty.
async fn write_checkpoint(
    connection: &mut PgConnection,
    target: &Target,
    events: &[StoredEvent],
) -> Result<(), sqlx::Error> {
    let last = events.last().expect("a batch has at least one event");
    sqlx::query(
        "UPDATE projection_checkpoints
            SET transaction_id = $2::text::xid8, position = $3,
                events_applied = events_applied + $4, updated_at = now()
          WHERE projection = $1",
    )
    .bind(&target.checkpoint)
    .bind(last.transaction_id.to_string())
    .bind(last.position)
    .bind(events.len() as i64)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

struct Checkpoint {
    transaction_id: String,
    position: i64,
    failure: Option<Failure>,
}

async fn read_checkpoint(
    connection: &mut PgConnection,
    name: &str,
) -> Result<Checkpoint, sqlx::Error> {
    // Creates the row on a projection's first run. The second SELECT reads the snapshot
    // taken before the INSERT, so it finds the row only when it existed already.
    let row = sqlx::query(
        "WITH created AS (
             INSERT INTO projection_checkpoints (projection) VALUES ($1)
             ON CONFLICT DO NOTHING
             RETURNING transaction_id::text AS transaction_id, position, failed_position,
                       failed_event, failure)
         SELECT * FROM created
         UNION ALL
         SELECT transaction_id::text, position, failed_position, failed_event, failure
           FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(name)
    .fetch_one(&mut *connection)
    .await?;
    let failure = Failure::from_row(&row);
    Ok(Checkpoint {
        transaction_id: row.get("transaction_id"),
        position: row.get("position"),
        failure,
    })
}

async fn read_events(
    connection: &mut PgConnection,
    after_transaction: &str,
    after_position: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT transaction_id::text AS transaction_id, position, agency_id, aggregate_type,
                aggregate_id, sequence, event_type, event_version, payload::text AS payload,
                metadata::text AS metadata, recorded_at
           FROM events
          WHERE (transaction_id, position) > ($1::text::xid8, $2)
            AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          -- Qualified, because a bare name would sort by the text output column of the
          -- same name, which puts transaction 1000 before 999.
          ORDER BY events.transaction_id, events.position
          LIMIT $3",
    )
    .bind(after_transaction)
    .bind(after_position)
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    rows.iter().map(stored_event).collect()
}

fn stored_event(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    let transaction_id: String = row.try_get("transaction_id")?;
    Ok(StoredEvent {
        transaction_id: transaction_id
            .parse()
            .map_err(|error| sqlx::Error::ColumnDecode {
                index: "transaction_id".to_owned(),
                source: Box::new(error),
            })?,
        position: row.try_get("position")?,
        agency_id: row.try_get("agency_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: parse_json(row.try_get("payload")?),
        metadata: parse_json(row.try_get("metadata")?),
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
    })
}

/// Parses stored JSON text. Payloads are read as text rather than cast to `jsonb`, because
/// `jsonb` rejects the escape `\u0000` that `json` accepts: one such event would make every
/// batch query fail and stall the projection. Text that does not parse becomes `null`, so
/// a projection that needs the payload stops at that event with its position and id.
fn parse_json(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// Quotes an SQL identifier: doubles embedded quotes and wraps it in double quotes.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
