//! `referrals projections status`, `catch-up` and `rebuild`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::status::{projection_status, ProjectionStatus};
use referrals_projections::{models, Projection};
use referrals_store::application::PAYOUT_REQUESTER_JOB;
use referrals_store::database;
use referrals_store::replica::replica_lag;
use referrals_workers::outbox::OUTBOX_PROJECTION;

/// How often a rebuild without a terminal logs its progress, in events.
const LOG_EVERY_EVENTS: u64 = 50_000;

/// How long `catch-up` keeps retrying a projection that still has events behind.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Prints the status of every read model, reactor and worker projection. With a replica, also prints its
/// replay lag and the status as read from the replica, which is what list endpoints
/// serve; JSON output is then an object with `primary` and `replica` keys in place of the
/// bare list.
///
/// # Errors
/// Returns an error when a database cannot be reached.
pub async fn status(
    database_url: &str,
    database_read_url: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let pool = database::connect(&database::parse_url(database_url)?, 2).await?;
    let read_models = models::all();
    let mut names: Vec<&str> = read_models
        .iter()
        .map(|projection| projection.name())
        .collect();
    names.push(PAYOUT_REQUESTER_JOB);
    let worker_projections = referrals_workers::projections();
    names.extend(
        worker_projections
            .iter()
            .map(|projection| projection.name()),
    );
    let statuses = projection_status(&pool, &names)
        .await
        .context("reading projection status")?;

    let Some(read_url) = database_read_url else {
        if json {
            println!("{}", serde_json::to_string_pretty(&status_rows(&statuses))?);
        } else {
            print_status_table(&statuses);
        }
        return Ok(());
    };

    let read_options = database::parse_url(read_url).context("DATABASE_READ_URL")?;
    let replica = database::connect(&read_options, 2).await?;
    let lag = replica_lag(&pool, &replica)
        .await
        .context("measuring the replica's replay lag")?;
    let replica_statuses = projection_status(&replica, &names)
        .await
        .context("reading projection status from the replica")?;
    let described = database::describe(&read_options);
    if json {
        let report = serde_json::json!({
            "primary": status_rows(&statuses),
            "replica": {
                "database": described,
                "is_standby": lag.is_standby,
                "replay_lag_bytes": lag.bytes,
                "replay_lag_seconds": lag.seconds,
                "projections": status_rows(&replica_statuses),
            },
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_status_table(&statuses);
    println!();
    if lag.is_standby {
        println!(
            "read replica {described}: {:.0} bytes of WAL behind the primary, {:.1} seconds of replay lag",
            lag.bytes, lag.seconds
        );
    } else {
        println!("read database {described} is not a standby: it serves its own writes");
    }
    println!("as read from the replica:");
    print_status_table(&replica_statuses);
    Ok(())
}

fn status_rows(statuses: &[ProjectionStatus]) -> Vec<serde_json::Value> {
    statuses
        .iter()
        .map(|status| {
            serde_json::json!({
                "projection": status.name,
                "position": status.position,
                "events_applied": status.events_applied,
                "events_behind": status.events_behind,
                "seconds_behind": status.seconds_behind,
                "stopped_at": status.failure.as_ref().map(|failure| serde_json::json!({
                    "position": failure.position,
                    "event_id": failure.event_id,
                    "error": failure.message,
                })),
            })
        })
        .collect()
}

fn print_status_table(statuses: &[ProjectionStatus]) {
    println!(
        "{:<22} {:>12} {:>14} {:>13} {:>14}  state",
        "projection", "position", "events applied", "events behind", "seconds behind"
    );
    for status in statuses {
        let state = match &status.failure {
            None => "running".to_owned(),
            Some(failure) => format!(
                "stopped at position {} ({}): {}",
                failure.position, failure.event_id, failure.message
            ),
        };
        println!(
            "{:<22} {:>12} {:>14} {:>13} {:>14.1}  {state}",
            status.name,
            status.position,
            status.events_applied,
            status.events_behind,
            status.seconds_behind
        );
    }
}

/// Applies the events after each checkpoint to every read model and the referral
/// schedule, the projections that `rebuild` handles, and prints the count per
/// projection.
///
/// A pass reads only events of transactions older than every transaction still running
/// in the PostgreSQL cluster, so a projection with events behind is caught up again,
/// with a short pause, until none is left or [`CATCH_UP_TIMEOUT`] runs out.
///
/// # Errors
/// Returns an error when the database cannot be reached, a batch fails, or a projection
/// still has events behind after the timeout.
pub async fn catch_up(database_url: &str) -> anyhow::Result<()> {
    let pool = database::connect(&database::parse_url(database_url)?, 2).await?;
    let runner = ProjectionRunner::new(pool.clone());
    for projection in rebuildable_projections() {
        let name = projection.name();
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut applied = 0;
        loop {
            applied += runner
                .catch_up(projection.as_ref())
                .await
                .with_context(|| format!("catching up {name}"))?;
            let status = projection_status(&pool, &[name])
                .await
                .with_context(|| format!("reading the status of {name}"))?;
            let behind = status.first().map_or(0, |row| row.events_behind);
            if behind == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} still has {behind} events behind after {} s; a long transaction \
                     elsewhere on the PostgreSQL server may hold them back, so retry when it ends",
                    CATCH_UP_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!(projection = name, applied, "projection caught up");
        println!("{name}: caught up, {applied} events applied");
    }
    Ok(())
}

/// Returns every read model and the referral schedule: the projections that only read
/// events and write their own tables, so replaying or catching them up has no effect
/// outside them.
fn rebuildable_projections() -> Vec<std::sync::Arc<dyn Projection>> {
    let mut projections: Vec<std::sync::Arc<dyn Projection>> = models::all()
        .into_iter()
        .map(std::sync::Arc::from)
        .collect();
    projections.extend(
        referrals_workers::projections()
            .into_iter()
            .filter(|projection| projection.name() != OUTBOX_PROJECTION),
    );
    projections
}

/// Rebuilds one projection, or every read model and the referral schedule, showing
/// progress.
///
/// # Errors
/// Returns an error for an unknown name, for the notification outbox, and for a failed
/// rebuild.
pub async fn rebuild(database_url: &str, name: Option<&str>) -> anyhow::Result<()> {
    // Checked before connecting, so the reason does not depend on the database.
    if name == Some(OUTBOX_PROJECTION) {
        bail!("{}", outbox_rebuild_refusal());
    }
    let pool = database::connect(&database::parse_url(database_url)?, 4).await?;
    let rebuildable = rebuildable_projections();
    let chosen: Vec<_> = match name {
        None => rebuildable.iter().collect(),
        Some(name) => {
            let Some(projection) = rebuildable
                .iter()
                .find(|projection| projection.name() == name)
            else {
                let known: Vec<_> = rebuildable
                    .iter()
                    .map(|projection| projection.name())
                    .collect();
                bail!(
                    "unknown projection {name:?}; the projections that can be rebuilt are: {}",
                    known.join(", ")
                );
            };
            vec![projection]
        }
    };

    let runner = ProjectionRunner::new(pool);
    let on_terminal = std::io::stderr().is_terminal();
    for projection in chosen {
        let projection_name = projection.name();
        let mut next_log = LOG_EVERY_EVENTS;
        let mut progress = |applied: u64| {
            if on_terminal {
                eprint!("\rrebuilding {projection_name}: {applied} events applied");
                let _ = std::io::stderr().flush();
            } else if applied >= next_log {
                tracing::info!(projection = projection_name, applied, "rebuild in progress");
                next_log = applied + LOG_EVERY_EVENTS;
            }
        };
        let report = runner
            .rebuild(projection.as_ref(), &mut progress)
            .await
            .with_context(|| format!("rebuilding {projection_name}"))?;
        if on_terminal {
            eprintln!();
        }
        tracing::info!(
            projection = projection_name,
            events = report.events,
            seconds = report.elapsed.as_secs_f64(),
            events_per_second = report.rate(),
            "rebuild finished"
        );
        println!(
            "{projection_name}: rebuilt from {} events in {:.1} s ({:.0} events/s)",
            report.events,
            report.elapsed.as_secs_f64(),
            report.rate()
        );
    }
    Ok(())
}

/// The reason `rebuild notification_outbox` is rejected.
///
/// A rebuild replaces a projection's rows with those built from the first event. For the
/// outbox that would drop every row's `sent` or `skipped` state and queue each message
/// again as pending, and the dispatcher would send them all a second time. The dedupe
/// key does not prevent that. It stops a replayed event from adding a second row while
/// the first row exists. But SendGrid documents `custom_args` as used only for tracking
/// (echoed in its Event Webhook), not for dropping a repeated message, and TextUs
/// receives no key at all.
fn outbox_rebuild_refusal() -> String {
    format!(
        "{OUTBOX_PROJECTION} cannot be rebuilt: replaying the events would queue every \
         notification again and send it a second time. Its rows are the record of what \
         was sent; use `referrals projections status` to see how far behind it is"
    )
}
