//! How far a streaming replica is behind its primary, for the metrics and
//! `referrals projections status`.

use sqlx::{PgPool, Row};

/// The replay lag of a replica, measured against the primary's current WAL position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaLag {
    /// Whether the read database is a standby in recovery. When false it is a primary
    /// itself (or the same server) and the lag figures are zero.
    pub is_standby: bool,
    /// WAL bytes written on the primary that the replica has not replayed yet.
    pub bytes: f64,
    /// Seconds since the replica replayed its last transaction, or 0 when it has
    /// replayed everything the primary has written.
    pub seconds: f64,
}

/// Measures how far `replica` is behind `primary`.
///
/// The byte figure is exact at the time of the primary's query. The seconds are an upper
/// bound: while WAL without transactions (a checkpoint, say) waits to be replayed, they
/// count from the last replayed commit, which on an idle primary may be long ago.
///
/// # Errors
/// Returns the database error when either server cannot be queried.
pub async fn replica_lag(primary: &PgPool, replica: &PgPool) -> Result<ReplicaLag, sqlx::Error> {
    let primary_position: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(primary)
        .await?;
    let row = sqlx::query(
        "SELECT pg_is_in_recovery() AS is_standby,
                CASE WHEN pg_is_in_recovery()
                     THEN greatest(pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()), 0)
                     ELSE 0 END::float8 AS bytes,
                CASE WHEN NOT pg_is_in_recovery()
                       OR pg_last_wal_replay_lsn() >= $1::pg_lsn THEN 0
                     ELSE coalesce(extract(epoch FROM clock_timestamp()
                                                     - pg_last_xact_replay_timestamp()), 0)
                     END::float8 AS seconds",
    )
    .bind(primary_position)
    .fetch_one(replica)
    .await?;
    Ok(ReplicaLag {
        is_standby: row.get("is_standby"),
        bytes: row.get("bytes"),
        seconds: row.get("seconds"),
    })
}
