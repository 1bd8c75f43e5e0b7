//! One executor per job at a time across every process that shares the database.
//!
//! A job run holds a session-level advisory lock on a connection taken out of the pool
//! for the run. Closing that connection releases the lock, so a process that dies
//! mid-run never leaves the job locked.

use std::future::Future;

use sqlx::{Connection, PgConnection, PgPool};

/// Runs `job` if no other executor is running the job named `name`, and returns its
/// output. Returns `Ok(None)` without running it when another executor is running it.
///
/// # Errors
/// Returns the database error when the lock cannot be queried.
pub async fn run_exclusive<F, T>(
    pool: &PgPool,
    name: &str,
    job: F,
) -> Result<Option<T>, sqlx::Error>
where
    F: Future<Output = T>,
{
    let mut connection: PgConnection = pool.acquire().await?.detach();
    let key = lock_name(name);
    let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(&key)
        .fetch_one(&mut connection)
        .await?;
    if !acquired {
        tracing::debug!(job = name, "job skipped: another executor is running it");
        return Ok(None);
    }

    let output = job.await;

    // Closing the connection releases the lock even if the unlock fails.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&key)
        .execute(&mut connection)
        .await;
    if let Err(error) = unlocked {
        tracing::warn!(job = name, %error, "unlocking the job failed; closing its connection releases it");
    }
    if let Err(error) = connection.close().await {
        tracing::debug!(job = name, %error, "closing the job's lock connection failed");
    }
    Ok(Some(output))
}

/// Advisory lock key text of a job, apart from the projection runner's `projection:` keys.
fn lock_name(job: &str) -> String {
    format!("job:{job}")
}
