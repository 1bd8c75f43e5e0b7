//! How far behind each projection is: the figures of `referrals projections status` and
//! of the `projection_lag_*` metrics.

use sqlx::{PgPool, Row};

use crate::runner::Failure;

/// One projection's position and lag.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Global position of the last event it applied; 0 before the first.
    pub position: i64,
    /// Events it has applied since it was created or last rebuilt.
    pub events_applied: i64,
    /// Committed events it has not applied yet.
    pub events_behind: i64,
    /// Age in seconds of the oldest event it has not applied yet; 0 when caught up.
    pub seconds_behind: f64,
    /// Set when the projection stopped at an event it cannot apply.
    pub failure: Option<Failure>,
}

/// Reads the status of each named projection; a projection that never ran reports
/// position 0 with every event behind.
///
/// # Errors
/// Returns the database error when a query fails.
pub async fn projection_status(
    pool: &PgPool,
    names: &[&str],
) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let mut statuses = Vec::with_capacity(names.len());
    for name in names {
        let row = sqlx::query(
            "WITH checkpoint AS (
                 SELECT transaction_id, position, events_applied,
                        failed_position, failed_event, failure
                   FROM projection_checkpoints WHERE projection = $1
                 UNION ALL
                 SELECT '0'::xid8, 0, 0, NULL, NULL, NULL
                  WHERE NOT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection = $1)
             )
             SELECT checkpoint.position, checkpoint.events_applied,
                    checkpoint.failed_position, checkpoint.failed_event, checkpoint.failure,
                    behind.events_behind, behind.seconds_behind
               FROM checkpoint,
                    LATERAL (
                        SELECT count(*) AS events_behind,
                               coalesce(extract(epoch FROM clock_timestamp() - min(events.recorded_at)), 0)::float8
                                   AS seconds_behind
                          FROM events
                         WHERE (events.transaction_id, events.position)
                               > (checkpoint.transaction_id, checkpoint.position)
                    ) AS behind",
        )
        .bind(name)
        .fetch_one(pool)
        .await?;
        let failure = Failure::from_row(&row);
        statuses.push(ProjectionStatus {
            name: (*name).to_owned(),
            position: row.get("position"),
            events_applied: row.get("events_applied"),
            events_behind: row.get("events_behind"),
            seconds_behind: row.get("seconds_behind"),
            failure,
        });
    }
    Ok(statuses)
}
