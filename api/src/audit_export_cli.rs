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
/// Events between two progress log lines when standard error is not a terminal.
const LOG_EVERY_EVENTS: u64 = 100_000;

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
    let started = std::time::Instant::now();
    let written = export_events(&pool, &filter, &mut sink)
        .await
        .context("exporting events")?;
    sink.output.flush().context("writing to standard output")?;
    if sink.progress {
        eprintln!("\rexported {written} events");
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        events = written,
        seconds,
        events_per_second = written as f64 / seconds.max(f64::EPSILON),
        peak_rss_kib = peak_rss_kib(),
        "export finished"
    );
    Ok(())
}

/// The process's peak resident memory in KiB (`VmHWM` of `/proc/self/status`), where the
/// system provides it; for the export's log line, which shows that memory stays flat.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
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
        } else if !self.progress && self.written % LOG_EVERY_EVENTS == 0 {
            tracing::info!(events = self.written, "export in progress");
        }
        Ok(())
    }
}
