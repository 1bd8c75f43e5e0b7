//! `referrals audit verify`: recomputes the hash chain of the event store.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use clap::Subcommand;
use referrals_domain::ids::AgencyId;
use referrals_store::audit::verify_chain_with_progress;
use referrals_store::database;
use uuid::Uuid;

/// How often a verification without a terminal logs its progress, in events.
const LOG_EVERY_EVENTS: u64 = 50_000;

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of every event, or of one agency's events, and print a JSON
    /// report naming the first broken link. Exits with status 1 when the chain is broken.
    Verify {
        /// Verify only this agency's events (a UUID). Without it, every event is verified
        /// in full and no checkpoint is kept.
        #[arg(long)]
        agency: Option<Uuid>,
        /// Verify every event of the agency instead of continuing after the checkpoint
        /// that the last successful verification left.
        #[arg(long)]
        full: bool,
    },
    /// Write events as NDJSON to standard output, one JSON object per line in the order
    /// they were stored, with sealed personal fields left sealed.
    Export {
        /// Export only this agency's events (a UUID); every agency's without it.
        #[arg(long)]
        agency: Option<Uuid>,
        /// Only events recorded at or after this RFC 3339 time.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events recorded before this RFC 3339 time.
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events of this type, such as `ReferralHired`.
        #[arg(long = "type")]
        event_type: Option<String>,
    },
}

/// Runs an `audit` subcommand.
///
/// # Errors
/// Returns an error when the database cannot be reached or a query fails, and, after
/// printing the report, when the chain is broken.
pub async fn run(database_url: &str, command: AuditCommand) -> anyhow::Result<()> {
    let (agency, full) = match command {
        AuditCommand::Verify { agency, full } => (agency, full),
        AuditCommand::Export {
            agency,
            from,
            to,
            event_type,
        } => {
            return crate::audit_export_cli::export(database_url, agency, from, to, event_type)
                .await
        }
    };
    let pool = database::connect(&database::parse_url(database_url)?, 2).await?;

    let on_terminal = std::io::stderr().is_terminal();
    let mut next_log = LOG_EVERY_EVENTS;
    let mut progress = |checked: u64| {
        if on_terminal {
            eprint!("\rverifying the event hash chain: {checked} events checked");
            let _ = std::io::stderr().flush();
        } else if checked >= next_log {
            tracing::info!(checked, "hash chain verification in progress");
            next_log = checked + LOG_EVERY_EVENTS;
        }
    };
    let report = verify_chain_with_progress(&pool, agency.map(AgencyId), !full, &mut progress)
        .await
        .context("verifying the event hash chain")?;
    if on_terminal {
        eprintln!();
    }

    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(broken) = &report.first_broken {
        bail!(
            "the event hash chain is broken at position {} ({} {}, sequence {}): {}",
            broken.position,
            broken.aggregate_type,
            broken.aggregate_id,
            broken.sequence,
            broken.reason.describe()
        );
    }
    tracing::info!(
        events_checked = report.events_checked,
        "event hash chain verified"
    );
    Ok(())
}
