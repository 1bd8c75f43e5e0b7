//! Measurements on stored events: generating them through the command path, projection
//! catch-up and rebuild, as-of reconstruction and the audit export.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use referrals_domain::ids::{AgencyId, AmbassadorId, ProgramId, ReferralId, UserId};
use referrals_domain::referral::{
    MarkContacted, MarkInterviewing, RecordHire, RecordHours, Referral, ReferralCommand,
};
use referrals_domain::terms::{Milestone, Recipient, Terms, Trigger};
use referrals_domain::values::{Currency, EmailAddress, Hours, PersonName};
use referrals_projections::models;
use referrals_projections::runner::ProjectionRunner;
use referrals_store::application::{Application, HistoryPoint, NewProgram, NewReferral};
use referrals_store::event_store::{Actor, CommandMetadata};
use referrals_store::personal::ContactDetails;
use serde_json::Value;
use sqlx::PgPool;

use super::{Profile, Progress};

/// Concurrent tasks that generate events, each on its own referrals.
pub(crate) const GENERATION_WORKERS: usize = 8;
/// Weeks of hours each generated referral records: with the four pipeline events, the
/// hire, its milestone and the payout requests, about 46 events per referral.
const GENERATED_WEEKS: i64 = 40;
/// Distinct weeks the long referral of the as-of measurement cycles through.
const LONG_REFERRAL_WEEKS: i64 = 100;
/// Times each as-of point is reconstructed.
const AS_OF_REPEATS: usize = 20;

/// Events generated through the command path.
#[derive(Debug, Clone)]
pub(crate) struct GenerationResult {
    /// Events in the store after generation, of every agency.
    pub events: u64,
    /// Commands executed to generate them.
    pub commands: u64,
    pub seconds: f64,
    /// True when the time budget ended generation before the requested count.
    pub budget_exhausted: bool,
    pub requested: u64,
}

/// One projection's catch-up or rebuild.
#[derive(Debug, Clone)]
pub(crate) struct ProjectionRate {
    pub name: String,
    pub events: u64,
    pub seconds: f64,
}

impl ProjectionRate {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// Catch-up and rebuild of every read model.
#[derive(Debug, Clone)]
pub(crate) struct ProjectionResults {
    pub catch_up: Vec<ProjectionRate>,
    pub rebuild: Vec<ProjectionRate>,
}

/// One `referrals audit export` run.
#[derive(Debug, Clone)]
pub(crate) struct ExportRun {
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub peak_rss_kib: u64,
}

/// The export of one agency's events and of all events.
#[derive(Debug, Clone)]
pub(crate) struct ExportResults {
    pub small: ExportRun,
    pub full: ExportRun,
}

impl ExportResults {
    /// Memory counts as flat when the full export's peak is at most 1.5 times the small
    /// export's, the bound the export memory test in the suite also uses.
    pub fn memory_flat(&self) -> bool {
        self.full.peak_rss_kib * 2 <= self.small.peak_rss_kib * 3
    }
}

/// The aggregate whose past states are reconstructed.
#[derive(Debug, Clone)]
pub(crate) struct LongReferral {
    agency_id: AgencyId,
    referral_id: ReferralId,
    version: usize,
    /// A time after about half of its events.
    midpoint: DateTime<Utc>,
}

/// Reconstruction times at each point of one aggregate's history.
#[derive(Debug, Clone)]
pub(crate) struct AsOfResult {
    pub aggregate_events: usize,
    pub snapshots: i64,
    /// The point, the median and the maximum in milliseconds.
    pub points: Vec<(String, f64, f64)>,
}

impl AsOfResult {
    pub fn max_ms(&self) -> f64 {
        self.points
            .iter()
            .map(|(_, _, max)| *max)
            .fold(0.0, f64::max)
    }
}

/// Metadata of a recruiter of `agency_id` acting now.
fn recruiter(agency_id: AgencyId) -> CommandMetadata {
    CommandMetadata::new(
        agency_id,
        Actor::User {
            id: UserId(uuid::Uuid::now_v7()),
            role: "recruiter".to_owned(),
        },
    )
}

/// Returns the most recent Sunday on or before today, the end of the last complete week.
fn last_sunday() -> NaiveDate {
    let today = Utc::now().date_naive();
    today - chrono::Duration::days(i64::from(today.weekday().num_days_from_sunday()))
}

/// Creates a program paying $500 at hire and $1,000 after 160 hours, and enrolls one
/// ambassador.
async fn program_and_ambassador(
    app: &Application,
    metadata: &CommandMetadata,
) -> anyhow::Result<(ProgramId, AmbassadorId)> {
    let terms = Terms::with_schedule(vec![
        Milestone {
            trigger: Trigger::Hired,
            threshold: Hours::whole(0),
            amount: 50_000,
            recipient: Recipient::Ambassador,
        },
        Milestone {
            trigger: Trigger::HoursWorked,
            threshold: Hours::whole(160),
            amount: 100_000,
            recipient: Recipient::Ambassador,
        },
    ]);
    let program = app
        .create_program(
            metadata,
            NewProgram {
                name: "Bench generated referrals".to_owned(),
                currency: Currency::parse("USD").map_err(|error| anyhow!("{}", error.message))?,
                terms,
            },
        )
        .await
        .context("creating the generator's program")?;
    let program_id = program
        .aggregate
        .program_id()
        .ok_or_else(|| anyhow!("the created program has no id"))?;
    let ambassadors = super::http_load::enroll_ambassadors(app, metadata, 1).await?;
    Ok((program_id, ambassadors[0]))
}

/// Submits a referral of a new candidate and records the hire with `start_date`.
async fn hired_referral(
    app: &Application,
    metadata: &CommandMetadata,
    program_id: ProgramId,
    ambassador_id: AmbassadorId,
    start_date: NaiveDate,
) -> anyhow::Result<(ReferralId, u64)> {
    let email = format!(
        "candidate-{}@bench.example.com",
        uuid::Uuid::now_v7().simple()
    );
    let candidate = ContactDetails {
        name: PersonName::parse("Bench Candidate").map_err(|error| anyhow!("{}", error.message))?,
        email: Some(EmailAddress::parse(&email).map_err(|error| anyhow!("{}", error.message))?),
        phone: None,
    };
    let submitted = app
        .submit_referral(
            metadata,
            NewReferral {
                program_id,
                ambassador_id,
                candidate,
                job_reference: None,
                note: None,
            },
        )
        .await
        .context("submitting a generated referral")?;
    let referral_id = submitted
        .aggregate
        .referral_id()
        .ok_or_else(|| anyhow!("the submitted referral has no id"))?;
    let mut events = submitted.events.len() as u64;
    let commands: [ReferralCommand; 3] = [
        MarkContacted { at: Utc::now() }.into(),
        MarkInterviewing { at: Utc::now() }.into(),
        RecordHire {
            start_date,
            job_title: "Forklift Operator".to_owned(),
            client_name: "Northwind Logistics".to_owned(),
            external_worker_id: None,
            at: Utc::now(),
        }
        .into(),
    ];
    for command in commands {
        let executed = app
            .execute_referral(metadata, referral_id, command, None)
            .await
            .context("moving a generated referral through the pipeline")?;
        events += executed.events.len() as u64;
    }
    Ok((referral_id, events))
}

/// Records `hours` for the week ending `week_ending` and returns the referral's version
/// with the number of events recorded.
async fn record_hours(
    app: &Application,
    metadata: &CommandMetadata,
    referral_id: ReferralId,
    week_ending: NaiveDate,
    hours: &str,
) -> anyhow::Result<(usize, u64)> {
    let command = RecordHours {
        week_ending,
        hours: Hours::parse(hours).map_err(|error| anyhow!("{}", error.message))?,
        at: Utc::now(),
    };
    let executed = app
        .execute_referral(metadata, referral_id, command.into(), None)
        .await
        .context("recording hours")?;
    Ok((executed.version, executed.events.len() as u64))
}

/// Builds a referral with `events` events: the pipeline, then hours reported again and
/// again for the same weeks with alternating figures, as corrections would.
pub(crate) async fn build_long_referral(
    app: &Application,
    events: usize,
) -> anyhow::Result<LongReferral> {
    let agency_id = AgencyId::new();
    let metadata = recruiter(agency_id);
    let (program_id, ambassador_id) = program_and_ambassador(app, &metadata).await?;
    let last_sunday = last_sunday();
    let start_date = last_sunday - chrono::Duration::days(7 * LONG_REFERRAL_WEEKS + 6);
    let (referral_id, _) =
        hired_referral(app, &metadata, program_id, ambassador_id, start_date).await?;

    let mut version = 0;
    let mut midpoint = Utc::now();
    // Each command adds at least one event unless the figure is unchanged, which the
    // alternation rules out, so three times the target is a generous bound.
    for command in 0..events * 3 {
        let week = i64::try_from(command).unwrap_or(0) % LONG_REFERRAL_WEEKS;
        let round = command / LONG_REFERRAL_WEEKS as usize;
        let hours = if round % 2 == 0 { "8.00" } else { "9.00" };
        let week_ending = last_sunday - chrono::Duration::days(7 * week);
        (version, _) = record_hours(app, &metadata, referral_id, week_ending, hours).await?;
        if version <= events / 2 {
            midpoint = Utc::now();
        }
        if version >= events {
            break;
        }
    }
    if version < events {
        bail!("the as-of referral reached only {version} events of {events}");
    }
    Ok(LongReferral {
        agency_id,
        referral_id,
        version,
        midpoint,
    })
}

/// Generates about `profile.events` events through [`Application`] with several
/// concurrent workers, each taking referrals through the pipeline and recording weeks of
/// hours, so every event has real metadata and a chain hash from the insert trigger.
pub(crate) async fn generate(
    app: &Arc<Application>,
    profile: &Profile,
    progress: Progress,
) -> anyhow::Result<GenerationResult> {
    let agency_id = AgencyId::new();
    let setup = recruiter(agency_id);
    let (program_id, ambassador_id) = program_and_ambassador(app, &setup).await?;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.pool())
        .await?;
    let target = profile.events;
    let produced = Arc::new(AtomicU64::new(u64::try_from(before).unwrap_or(0)));
    let commands = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + profile.generation_budget;

    let mut workers = Vec::new();
    for _ in 0..GENERATION_WORKERS {
        let app = app.clone();
        let produced = produced.clone();
        let commands = commands.clone();
        workers.push(tokio::spawn(async move {
            let metadata = recruiter(agency_id);
            let last_sunday = last_sunday();
            let start_date = last_sunday - chrono::Duration::days(7 * GENERATED_WEEKS + 6);
            while produced.load(Ordering::Relaxed) < target && Instant::now() < deadline {
                let (referral_id, events) =
                    hired_referral(&app, &metadata, program_id, ambassador_id, start_date).await?;
                produced.fetch_add(events, Ordering::Relaxed);
                commands.fetch_add(4, Ordering::Relaxed);
                for week in 0..GENERATED_WEEKS {
                    let week_ending =
                        last_sunday - chrono::Duration::days(7 * (GENERATED_WEEKS - 1 - week));
                    let (_, events) =
                        record_hours(&app, &metadata, referral_id, week_ending, "38.50").await?;
                    produced.fetch_add(events, Ordering::Relaxed);
                    commands.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }

    let reporter = {
        let produced = produced.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = produced.load(Ordering::Relaxed);
                progress.count(&format!("{now} of {target} events"));
                if now >= target || Instant::now() >= deadline {
                    break;
                }
            }
        })
    };
    for worker in workers {
        worker.await.context("an event generator task failed")??;
    }
    reporter.abort();
    progress.end_count();
    let seconds = started.elapsed().as_secs_f64();

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.pool())
        .await?;
    let events = u64::try_from(events).unwrap_or(0);
    Ok(GenerationResult {
        events,
        commands: commands.load(Ordering::Relaxed),
        seconds,
        budget_exhausted: events < target,
        requested: target,
    })
}

/// Catches every read model up with the events written since the server stopped, one
/// after another, then rebuilds each from the whole event store.
pub(crate) async fn measure_projections(
    pool: &PgPool,
    progress: Progress,
) -> anyhow::Result<ProjectionResults> {
    let runner = ProjectionRunner::new(pool.clone());
    let read_models = models::all();
    let mut catch_up = Vec::new();
    for projection in &read_models {
        progress.step(&format!("catching up {}", projection.name()));
        let started = Instant::now();
        let events = runner
            .catch_up(projection.as_ref())
            .await
            .with_context(|| format!("catching up {}", projection.name()))?;
        catch_up.push(ProjectionRate {
            name: projection.name().to_owned(),
            events,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    let mut rebuild = Vec::new();
    for projection in &read_models {
        let name = projection.name();
        progress.step(&format!("rebuilding {name}"));
        let mut report_progress =
            |applied: u64| progress.count(&format!("rebuilding {name}: {applied} events applied"));
        let report = runner
            .rebuild(projection.as_ref(), &mut report_progress)
            .await
            .with_context(|| format!("rebuilding {name}"))?;
        progress.end_count();
        rebuild.push(ProjectionRate {
            name: name.to_owned(),
            events: report.events,
            seconds: report.elapsed.as_secs_f64(),
        });
    }
    Ok(ProjectionResults { catch_up, rebuild })
}

/// Reconstructs the long referral at its last version, between two kept states, at its
/// middle and at a past time, each [`AS_OF_REPEATS`] times.
pub(crate) async fn measure_as_of(
    app: &Application,
    referral: &LongReferral,
) -> anyhow::Result<AsOfResult> {
    let id = referral.referral_id.to_string();
    let snapshots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM read_models.aggregate_snapshots
          WHERE aggregate_type = 'referral' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(app.pool())
    .await?;
    let last = referral.version;
    let points = [
        (
            format!("version {last} (the last)"),
            HistoryPoint::Version(last),
        ),
        (
            format!(
                "version {} (49 events after a kept state)",
                last - last % 50 - 1
            ),
            HistoryPoint::Version(last - last % 50 - 1),
        ),
        (
            format!("version {}", last / 2 + 1),
            HistoryPoint::Version(last / 2 + 1),
        ),
        (
            "a time halfway through".to_owned(),
            HistoryPoint::Time(referral.midpoint),
        ),
    ];

    let mut results = Vec::new();
    for (label, point) in points {
        let mut micros = Vec::with_capacity(AS_OF_REPEATS);
        for _ in 0..AS_OF_REPEATS {
            let started = Instant::now();
            let state = app
                .state_at::<Referral>(referral.agency_id, &id, point)
                .await
                .with_context(|| format!("reconstructing the referral at {label}"))?;
            micros.push(started.elapsed().as_micros() as f64);
            if state.is_none() {
                bail!("the referral has no state at {label}");
            }
        }
        micros.sort_by(f64::total_cmp);
        let median = micros[micros.len() / 2] / 1000.0;
        let max = micros[micros.len() - 1] / 1000.0;
        results.push((label, median, max));
    }
    Ok(AsOfResult {
        aggregate_events: referral.version,
        snapshots,
        points: results,
    })
}

/// Runs `referrals audit export` for the HTTP agency's events and for every event, with
/// standard output discarded, and reads rate and peak memory from its final log line.
pub(crate) async fn measure_export(
    database_url: &str,
    small_agency: AgencyId,
    expected_events: u64,
) -> anyhow::Result<ExportResults> {
    let small = run_export(database_url, Some(small_agency)).await?;
    let full = run_export(database_url, None).await?;
    if full.events != expected_events {
        tracing::warn!(
            exported = full.events,
            stored = expected_events,
            "the export wrote another number of events than the store holds"
        );
    }
    Ok(ExportResults { small, full })
}

async fn run_export(database_url: &str, agency: Option<AgencyId>) -> anyhow::Result<ExportRun> {
    let executable = std::env::current_exe().context("finding the referrals binary")?;
    let mut command = Command::new(executable);
    command
        .args(["audit", "export"])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(agency) = agency {
        command.args(["--agency", &agency.0.to_string()]);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running `referrals audit export`")?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("`referrals audit export` failed: {}", log.trim());
    }
    let finished = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["fields"]["message"] == "export finished")
        .ok_or_else(|| anyhow!("`referrals audit export` logged no \"export finished\" line"))?;
    let fields = &finished["fields"];
    Ok(ExportRun {
        events: fields["events"].as_u64().unwrap_or(0),
        seconds: fields["seconds"].as_f64().unwrap_or(0.0),
        events_per_second: fields["events_per_second"].as_f64().unwrap_or(0.0),
        peak_rss_kib: fields["peak_rss_kib"].as_u64().unwrap_or(0),
    })
}
