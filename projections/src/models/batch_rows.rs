//! What the batch paths of the row-per-id read models share: the rows a batch reads and
//! changes, kept in memory by key, and the conversion of a batch statement's database
//! error.
//!
//! A batch path reads the stored rows of every key its events touch with one statement.
//! It applies the events to those rows in memory, in order, and then writes each changed
//! row once as a whole, so each row ends up as the event-by-event path would leave it.

use std::collections::HashMap;

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::batch_database_error;
use crate::{ProjectionError, StoredEvent};

/// A read model row with a UUID primary key, read whole with `SELECT *`.
pub(super) trait KeyedRow: for<'r> FromRow<'r, PgRow> + Send + Unpin {
    /// The table, unqualified.
    const TABLE: &'static str;
    /// The primary key column.
    const KEY_COLUMN: &'static str;

    /// Returns the row's primary key.
    fn key(&self) -> Uuid;
}

/// The rows of one table that a batch reads and changes, by key.
pub(super) struct TouchedRows<R> {
    rows: HashMap<Uuid, R>,
    /// Keys of the rows changed so far, with repeats.
    changed: Vec<Uuid>,
}

impl<R: KeyedRow> TouchedRows<R> {
    /// Reads the stored rows of `keys` with one statement; keys without a row are left
    /// out.
    ///
    /// # Errors
    /// As [`batch_database_error`].
    pub(super) async fn read(
        connection: &mut PgConnection,
        mut keys: Vec<Uuid>,
    ) -> Result<Self, ProjectionError> {
        keys.sort_unstable();
        keys.dedup();
        let sql = format!(
            "SELECT * FROM {table} WHERE {key} = ANY($1)",
            table = R::TABLE,
            key = R::KEY_COLUMN
        );
        let stored: Vec<R> = sqlx::query_as(&sql)
            .bind(&keys)
            .fetch_all(&mut *connection)
            .await
            .map_err(batch_database_error(R::TABLE))?;
        let rows = stored.into_iter().map(|row| (row.key(), row)).collect();
        Ok(Self {
            rows,
            changed: Vec::with_capacity(keys.len()),
        })
    }

    /// Removes and returns the row of `key`, stored or written earlier in the batch.
    /// The caller then [`put`](Self::put)s its replacement.
    pub(super) fn take(&mut self, key: Uuid) -> Option<R> {
        self.rows.remove(&key)
    }

    /// Inserts or replaces a row and marks it changed.
    pub(super) fn put(&mut self, row: R) {
        let key = row.key();
        self.rows.insert(key, row);
        self.changed.push(key);
    }

    /// Returns the row of `key` for `event` to change, and marks it changed.
    ///
    /// # Errors
    /// [`ProjectionError::Poison`] when no row exists, where the event-by-event path's
    /// `UPDATE` would change none, because the event that creates the row was not applied
    /// before it.
    pub(super) fn existing(
        &mut self,
        key: Uuid,
        event: &StoredEvent,
    ) -> Result<&mut R, ProjectionError> {
        let Some(row) = self.rows.get_mut(&key) else {
            return Err(ProjectionError::Poison(format!(
                "{} found no row in {} to update, because the event that creates the row \
                 was not applied before it",
                event.describe(),
                R::TABLE
            )));
        };
        self.changed.push(key);
        Ok(row)
    }

    /// Returns the changed rows in key order, each once.
    pub(super) fn into_changed(mut self) -> Vec<R> {
        self.changed.sort_unstable();
        self.changed.dedup();
        self.changed
            .iter()
            .map(|key| {
                self.rows
                    .remove(key)
                    .expect("a changed row stays in the map")
            })
            .collect()
    }
}

/// Returns one column of `rows`, to bind as an array parameter of an `UNNEST` statement.
pub(super) fn column<'a, R, T>(rows: &'a [R], value: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}
