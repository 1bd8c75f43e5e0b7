//! `referrals bench`: measures the product on this machine and writes a Markdown report.
//!
//! One run creates a scratch database and measures PostgreSQL's own append limit with the
//! vendored pgbench kit. It then drives the real server over HTTP, generates events
//! through the store's command path, and times projection catch-up and rebuild, the audit
//! export and as-of reconstruction. The database is dropped at the end. Absolute figures drift on a
//! shared machine, so the report compares HTTP throughput with PostgreSQL's
//! `read_then_append` limit measured in the same run.

mod events;
mod http_load;
mod limit;
mod machine;
mod report;
mod scratch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use referrals_store::application::Application;
use referrals_store::crypto::MasterKey;
use referrals_store::database;

/// Events the full profile generates for the projection and export measurements.
pub(crate) const FULL_EVENTS: u64 = 1_000_000;

/// Connections the bench process keeps to the scratch database.
const POOL_SIZE: u32 = 16;

/// Options of `referrals bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Run the short profile: seconds per level instead of tens of seconds, and thousands
    /// of events instead of a million.
    pub quick: bool,
    /// The file the Markdown report is written to.
    pub output: PathBuf,
    /// Events to generate for the projection and export measurements, overriding the
    /// profile's count.
    pub events: Option<u64>,
}

/// Durations and sizes of one run.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub name: &'static str,
    /// Seconds pgbench runs per workload and client count.
    pub limit_seconds: u64,
    /// Client counts of the PostgreSQL limit and the HTTP load.
    pub client_levels: Vec<usize>,
    /// How long each HTTP client level runs.
    pub http_duration: Duration,
    /// Events to generate for the projection and export measurements.
    pub events: u64,
    /// Upper bound on the time spent generating them.
    pub generation_budget: Duration,
    /// Events in the aggregate reconstructed as of past points.
    pub as_of_events: usize,
}

impl Profile {
    fn new(options: &BenchOptions) -> Self {
        let mut profile = if options.quick {
            Self {
                name: "quick",
                limit_seconds: 2,
                client_levels: vec![1, 16, 64],
                http_duration: Duration::from_secs(2),
                events: 1_000,
                generation_budget: Duration::from_secs(30),
                as_of_events: 100,
            }
        } else {
            Self {
                name: "full",
                limit_seconds: 15,
                client_levels: vec![1, 16, 64],
                http_duration: Duration::from_secs(15),
                events: FULL_EVENTS,
                generation_budget: Duration::from_secs(30 * 60),
                as_of_events: 1_000,
            }
        };
        if let Some(events) = options.events {
            profile.events = events;
        }
        profile
    }
}

/// The shortest time between two logged counts of [`Progress::count`].
const COUNT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// When [`Progress::count`] last logged a count, shared by every copy of [`Progress`].
static LAST_COUNT_LOGGED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// Progress for a person at a terminal, or log lines when standard error is redirected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    terminal: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Reports the start of a step.
    pub fn step(&self, message: &str) {
        if self.terminal {
            eprintln!("bench: {message}");
        } else {
            tracing::info!(step = message, "bench step");
        }
    }

    /// Overwrites the current terminal line with a running count. Without a terminal, it
    /// logs the count at most once per [`COUNT_LOG_INTERVAL`], so a long generation or
    /// rebuild shows it is moving without a line per batch.
    pub fn count(&self, message: &str) {
        if self.terminal {
            eprint!("\rbench: {message}");
            return;
        }
        let mut last_logged = LAST_COUNT_LOGGED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last_logged.is_none_or(|logged| logged.elapsed() >= COUNT_LOG_INTERVAL) {
            tracing::info!(progress = message, "bench progress");
            *last_logged = Some(Instant::now());
        }
    }

    /// Ends a line written by `count`.
    pub fn end_count(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// Runs the whole benchmark against a scratch database on the server of `database_url`
/// and writes the report to `options.output`. The scratch database is dropped at the end,
/// also when a measurement fails.
///
/// # Errors
/// Returns an error when the server cannot be reached, a measurement fails, or the report
/// cannot be written.
pub async fn run(database_url: &str, options: BenchOptions) -> anyhow::Result<()> {
    let profile = Profile::new(&options);
    let progress = Progress::new();
    let started = Instant::now();
    let scratch = scratch::ScratchDatabase::create(database_url).await?;
    progress.step(&format!(
        "created scratch database {} ({} profile)",
        scratch.name, profile.name
    ));

    // Ctrl-C ends the run early but still drops the scratch database.
    let outcome = tokio::select! {
        outcome = measure(&scratch, &profile, progress) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; no report was written")),
    };
    let dropped = scratch.drop_database().await;
    let mut results = outcome?;
    dropped?;

    results.total_duration = started.elapsed();
    let previous = match std::fs::read_to_string(&options.output) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error).with_context(|| {
                format!("reading the earlier report {}", options.output.display())
            })
        }
    };
    let markdown = report::keep_hand_written(report::render(&results), previous.as_deref());
    std::fs::write(&options.output, markdown)
        .with_context(|| format!("writing the report to {}", options.output.display()))?;
    progress.step(&format!(
        "wrote {} after {:.0} s",
        options.output.display(),
        results.total_duration.as_secs_f64()
    ));
    Ok(())
}

/// Every measurement of one run, in the order the report shows them.
#[derive(Debug)]
pub(crate) struct Results {
    pub profile: Profile,
    pub machine: machine::Machine,
    pub limit: Vec<limit::LimitResult>,
    pub http: http_load::HttpResults,
    pub generation: events::GenerationResult,
    pub projections: events::ProjectionResults,
    pub export: events::ExportResults,
    pub as_of: events::AsOfResult,
    pub total_duration: Duration,
}

async fn measure(
    scratch: &scratch::ScratchDatabase,
    profile: &Profile,
    progress: Progress,
) -> anyhow::Result<Results> {
    let pool = database::connect(&database::parse_url(&scratch.url)?, POOL_SIZE).await?;
    database::migrate(&pool).await?;
    let machine = machine::describe(&pool).await?;

    progress.step("measuring PostgreSQL's own limit with pgbench");
    let limit = limit::measure(&scratch.url, profile).await?;

    let (master_key, master_key_text) = MasterKey::generate();
    let app = Arc::new(Application::new(pool.clone(), master_key));

    progress.step("measuring HTTP commands against `referrals serve`");
    let http = http_load::measure(&scratch.url, &master_key_text, &app, profile, progress).await?;

    progress.step("building an aggregate for the as-of measurement");
    let as_of_referral = events::build_long_referral(&app, profile.as_of_events).await?;

    progress.step(&format!(
        "generating {} events through the command path",
        profile.events
    ));
    let generation = events::generate(&app, profile, progress).await?;

    progress.step("measuring projection catch-up and rebuild");
    let projections = events::measure_projections(&pool, progress).await?;

    progress.step("measuring as-of reconstruction");
    let as_of = events::measure_as_of(&app, &as_of_referral).await?;

    progress.step("measuring the audit export");
    let export = events::measure_export(&scratch.url, http.agency_id, generation.events).await?;

    pool.close().await;
    Ok(Results {
        profile: profile.clone(),
        machine,
        limit,
        http,
        generation,
        projections,
        export,
        as_of,
        total_duration: Duration::ZERO,
    })
}
