//! Read models built from the event store.
//!
//! Every projection follows the events table in one global order from its own checkpoint,
//! and writes its view rows and its checkpoint in one transaction, so a crash or retry
//! never applies an event twice and never skips one. See [`runner`] for how the order
//! stays gap-free when transactions commit out of order.

use async_trait::async_trait;
use sqlx::PgConnection;

pub mod event;
pub mod models;
pub mod reactors;
pub mod runner;
pub mod status;

pub use event::StoredEvent;

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event cannot be applied, now or on a retry (for example a payload this code
    /// cannot read). The projection stops at this event until it is fixed and rebuilt.
    #[error("{0}")]
    Poison(String),
    /// A failure that may pass (database unavailable, lock timeout). The batch is rolled
    /// back and retried later.
    #[error("{0}")]
    Transient(String),
}

impl From<sqlx::Error> for ProjectionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Transient(format!("database error: {error}"))
    }
}

/// A read model kept up to date from the events table.
///
/// A projection writes only tables of its [`schema`](Projection::schema), using
/// unqualified table names: the runner sets `search_path` to the live schema for normal
/// catch-up and to a shadow schema during a rebuild, so the same code builds both.
#[async_trait]
pub trait Projection: Send + Sync {
    /// Stable name: the key of its checkpoint and its advisory lock. Never renamed.
    fn name(&self) -> &'static str;

    /// The schema that holds the projection's tables.
    fn schema(&self) -> &'static str;

    /// The projection's tables, unqualified, in an order that satisfies foreign keys.
    fn tables(&self) -> &'static [&'static str];

    /// Applies one event inside the batch transaction `connection`; events the
    /// projection does not use are ignored.
    ///
    /// # Errors
    /// [`ProjectionError::Poison`] stops the projection at this event;
    /// [`ProjectionError::Transient`] rolls the batch back to be retried.
    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError>;

    /// Applies a batch of events, in order, inside the batch transaction `connection`.
    /// The default calls [`apply`](Projection::apply) for each event. Projections that
    /// write the same rows for many events override it to write each row once per batch,
    /// and must leave the same rows as the event-by-event path.
    ///
    /// # Errors
    /// [`ProjectionError::Transient`] rolls the batch back to be retried, as with
    /// [`apply`](Projection::apply). [`ProjectionError::Poison`] makes the runner roll back
    /// what this call wrote and apply the same events one at a time with `apply`, whose
    /// error then names the failing event. So an override may report a poison event
    /// without finding it.
    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(connection, event).await?;
        }
        Ok(())
    }
}
