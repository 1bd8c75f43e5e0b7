//! `referrals audit export`: the agency's events, or every agency's, as NDJSON on
//! standard output, in the same shape as `GET /v1/audit/export`.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use chrono::{DateTime, Utc};
use referrals_domain::ids::AgencyId;
use referrals_store::database;
use uuid::Uuid;

use crate::http::audit_events::{export_events, FeedFilter, LineSink};

/// Events between two progress updates on a terminal.
const PROGRESS_EVERY_EVENTS: u64 = 10_000;

/// Writes the events matching the filters to standard output, one JSON object per line,
/// with progress on standard error when it is a terminal.
///
/// # Errors
/// Returns an error when the database cannot be reached, a query fails or standard
/// output is closed.
pub async fn export(
    database_url: &str,
    agency: Option<Uuid>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    event_type: Option<String>,
) -> anyhow::Result<()> {
    let pool = database::connect(&database::parse_url(database_url)?, 2).await?;
    let filter = FeedFilter {
        agency_id: agency.map(AgencyId),
        from,
        to,
        event_type,
    };
    let mut sink = StdoutSink {
        output: std::io::BufWriter::new(std::io::stdout().lock()),
        written: 0,
        progress: std::io::stderr().is_terminal(),
    };
    let written = export_events(&pool, &filter, &mut sink)
        .await
        .context("exporting events")?;
    sink.output.flush().context("writing to standard output")?;
    if sink.progress {
        eprintln!("\rexported {written} events");
    }
    Ok(())
}

struct StdoutSink<W: Write> {
    output: W,
    written: u64,
    progress: bool,
}

impl<W: Write> LineSink for StdoutSink<W> {
    async fn write_line(&mut self, line: Vec<u8>) -> anyhow::Result<()> {
        self.output
            .write_all(&line)
            .context("writing to standard output")?;
        self.written += 1;
        if self.progress && self.written % PROGRESS_EVERY_EVENTS == 0 {
            eprint!("\rexported {} events", self.written);
        }
        Ok(())
    }
}
