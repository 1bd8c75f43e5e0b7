//! HTTP command throughput and latency against the real server: `referrals serve` runs as
//! a child process on a free loopback port, and clients with real session tokens drive
//! referrals through the pipeline.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{Datelike, Utc};
use referrals_domain::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, ReferralId, UserId};
use referrals_domain::role::Role;
use referrals_domain::terms::{AmbassadorKind, Milestone, MilestoneKey, Recipient, Terms, Trigger};
use referrals_domain::values::{Currency, EmailAddress, Hours};
use referrals_store::accounts::{totp, Accounts};
use referrals_store::application::{Application, NewAmbassador, NewProgram};
use referrals_store::event_store::{Actor, CommandMetadata};
use serde_json::{json, Value};

use super::{Profile, Progress};

/// The password of the bench's users.
const PASSWORD: &str = "bench passphrase for scratch users";
/// Ambassadors the clients refer for, round robin.
const AMBASSADORS: usize = 16;
/// Weeks of hours each referral records after the hire.
const HOURS_WEEKS: i64 = 4;
/// Upper bound on requests per client and level, on top of the level's duration.
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;
/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to bind and log its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval of the server memory samples under load.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// The commands of the mix, one referral's journey in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CommandKind {
    Submit,
    MoveStage,
    Hire,
    RecordHours,
    ApprovePayout,
}

impl CommandKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Submit => "submit referral",
            Self::MoveStage => "move stage (contacted, interviewing)",
            Self::Hire => "record hire",
            Self::RecordHours => "record hours",
            Self::ApprovePayout => "approve payout",
        }
    }
}

/// Latency percentiles of a set of requests, in milliseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Latency {
    fn of(mut micros: Vec<u64>) -> Self {
        micros.sort_unstable();
        let at = |quantile: f64| {
            if micros.is_empty() {
                return 0.0;
            }
            let rank = (quantile * micros.len() as f64).ceil() as usize;
            micros[rank.clamp(1, micros.len()) - 1] as f64 / 1000.0
        };
        Self {
            count: micros.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
        }
    }
}

/// One client level.
#[derive(Debug, Clone)]
pub(crate) struct LevelResult {
    pub clients: usize,
    /// Commands that returned a 2xx status, per second.
    pub commands_per_second: f64,
    /// Latency of the successful commands.
    pub latency: Latency,
    pub by_kind: Vec<(CommandKind, Latency)>,
    /// Failed requests by HTTP status; 0 for a transport error or timeout.
    pub failures: BTreeMap<u16, u64>,
    pub server_peak_rss_kib: Option<u64>,
}

/// The HTTP measurements.
#[derive(Debug, Clone)]
pub(crate) struct HttpResults {
    /// The agency the clients worked in; its events are the small audit export.
    pub agency_id: AgencyId,
    pub levels: Vec<LevelResult>,
    pub server_idle_rss_kib: Option<u64>,
    pub server_idle_after_load_rss_kib: Option<u64>,
}

/// The tokens, ids and base URL that every client uses.
struct Fixture {
    base: String,
    recruiter_token: String,
    approver_token: String,
    program_id: ProgramId,
    ambassadors: Vec<AmbassadorId>,
    hire_milestone: MilestoneKey,
}

/// Sets up an agency, starts the server and runs every client level.
pub(crate) async fn measure(
    database_url: &str,
    master_key_text: &str,
    app: &Arc<Application>,
    profile: &Profile,
    progress: Progress,
) -> anyhow::Result<HttpResults> {
    let accounts = Accounts::new(app.pool().clone(), app.personal().vault().clone());
    let agency = create_agency(&accounts).await?;
    let recruiter_token = sign_in_new_user(&accounts, &agency, Role::Recruiter).await?;
    let approver_token = sign_in_new_user(&accounts, &agency, Role::PayoutApprover).await?;
    let recruiter = CommandMetadata::new(
        agency.agency_id,
        Actor::User {
            id: agency.admin_id,
            role: Role::AgencyAdmin.as_str().to_owned(),
        },
    );
    let (program_id, hire_milestone) = create_program(app, &recruiter).await?;
    let ambassadors = enroll_ambassadors(app, &recruiter, AMBASSADORS).await?;

    let mut server = ServerProcess::start(database_url, master_key_text).await?;
    let fixture = Arc::new(Fixture {
        base: format!("http://{}", server.address),
        recruiter_token,
        approver_token,
        program_id,
        ambassadors,
        hire_milestone,
    });
    let outcome = run_levels(&mut server, &fixture, profile, progress).await;
    server.stop();
    let (levels, idle, idle_after) = outcome?;
    Ok(HttpResults {
        agency_id: agency.agency_id,
        levels,
        server_idle_rss_kib: idle,
        server_idle_after_load_rss_kib: idle_after,
    })
}

type LevelsOutcome = (Vec<LevelResult>, Option<u64>, Option<u64>);

async fn run_levels(
    server: &mut ServerProcess,
    fixture: &Arc<Fixture>,
    profile: &Profile,
    progress: Progress,
) -> anyhow::Result<LevelsOutcome> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    // The server's first requests warm its pools and caches; one short journey keeps
    // that out of the first level's latencies and proves the setup works.
    let mut warm_up = Vec::new();
    journey(&client, fixture, 0, 0, &mut warm_up).await;
    if let Some(failure) = warm_up
        .iter()
        .find(|sample| sample.status >= 300 || sample.status == 0)
    {
        bail!(
            "the warm-up {} failed with HTTP status {} ({})",
            failure.kind.label(),
            failure.status,
            failure.detail
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = server.rss_kib();

    let mut levels = Vec::new();
    for &clients in &profile.client_levels {
        progress.step(&format!(
            "HTTP load: {clients} clients for {} s",
            profile.http_duration.as_secs()
        ));
        levels.push(run_level(server, &client, fixture, clients, profile.http_duration).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_after = server.rss_kib();
    Ok((levels, idle, idle_after))
}

/// One request's outcome.
struct Sample {
    kind: CommandKind,
    micros: u64,
    /// The HTTP status, or 0 when no response arrived.
    status: u16,
    /// The problem's `code`, or the transport error, for failures.
    detail: String,
}

async fn run_level(
    server: &ServerProcess,
    client: &reqwest::Client,
    fixture: &Arc<Fixture>,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<LevelResult> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let client = client.clone();
        let fixture = fixture.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut round = 0usize;
            while Instant::now() < deadline && samples.len() < MAX_REQUESTS_PER_CLIENT {
                journey_until(
                    &client,
                    &fixture,
                    client_index,
                    round,
                    &mut samples,
                    deadline,
                )
                .await;
                round += 1;
            }
            samples
        }));
    }

    let pid = server.pid();
    let sampler = tokio::spawn(async move {
        let mut peak = None;
        while Instant::now() < deadline {
            peak = peak.max(process_rss_kib(pid));
            tokio::time::sleep(RSS_SAMPLE_INTERVAL).await;
        }
        peak
    });

    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.context("an HTTP client task failed")?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_peak_rss_kib = sampler.await.context("the memory sampler failed")?;
    Ok(summarize(clients, seconds, samples, server_peak_rss_kib))
}

fn summarize(
    clients: usize,
    seconds: f64,
    samples: Vec<Sample>,
    server_peak_rss_kib: Option<u64>,
) -> LevelResult {
    let mut failures = BTreeMap::new();
    let mut all = Vec::new();
    let mut by_kind: BTreeMap<CommandKind, Vec<u64>> = BTreeMap::new();
    let mut logged = 0;
    for sample in samples {
        if (200..300).contains(&sample.status) {
            all.push(sample.micros);
            by_kind.entry(sample.kind).or_default().push(sample.micros);
        } else {
            *failures.entry(sample.status).or_insert(0) += 1;
            // The first few failures of a level are enough to see the cause.
            if logged < 3 {
                tracing::warn!(
                    clients,
                    command = sample.kind.label(),
                    status = sample.status,
                    detail = %sample.detail,
                    "bench request failed"
                );
                logged += 1;
            }
        }
    }
    let ok = all.len();
    LevelResult {
        clients,
        commands_per_second: ok as f64 / seconds.max(f64::EPSILON),
        latency: Latency::of(all),
        by_kind: by_kind
            .into_iter()
            .map(|(kind, micros)| (kind, Latency::of(micros)))
            .collect(),
        failures,
        server_peak_rss_kib,
    }
}

/// Runs one referral's journey, stopping early at the deadline.
async fn journey_until(
    client: &reqwest::Client,
    fixture: &Fixture,
    client_index: usize,
    round: usize,
    samples: &mut Vec<Sample>,
    deadline: Instant,
) {
    let mut steps = vec![submit_step(fixture, client_index, round)];
    let mut next = 0;
    while next < steps.len() {
        if Instant::now() >= deadline {
            return;
        }
        let step = &steps[next];
        let Some(body) = send(client, fixture, step, samples).await else {
            return;
        };
        // The server chooses the referral's id, so the later steps are built once the
        // submission has returned.
        if step.kind == CommandKind::Submit {
            let Some(id) = body["id"].as_str().and_then(|id| id.parse().ok()) else {
                return;
            };
            steps.extend(follow_up_steps(fixture, ReferralId(id)));
        }
        next += 1;
    }
}

/// Runs one referral's whole journey, for the warm-up.
async fn journey(
    client: &reqwest::Client,
    fixture: &Fixture,
    client_index: usize,
    round: usize,
    samples: &mut Vec<Sample>,
) {
    let deadline = Instant::now() + REQUEST_TIMEOUT * 20;
    journey_until(client, fixture, client_index, round, samples, deadline).await;
}

/// One request of a journey.
struct Step {
    kind: CommandKind,
    path: String,
    body: Option<Value>,
    approver: bool,
}

/// Builds the first step of a referral's journey through the mix. The whole journey is nine
/// commands: submit, contacted, interviewing, hire, hours for four weeks, and the
/// approval of the hire bonus.
fn submit_step(fixture: &Fixture, client_index: usize, round: usize) -> Step {
    let candidate_email = format!(
        "candidate-{}-{client_index}-{round}@bench.example.com",
        uuid::Uuid::now_v7().simple()
    );
    let ambassador = fixture.ambassadors[(client_index + round) % fixture.ambassadors.len()];
    Step {
        kind: CommandKind::Submit,
        path: "/v1/referrals".to_owned(),
        body: Some(json!({
            "program_id": fixture.program_id.0,
            "ambassador_id": ambassador.0,
            "candidate": {"name": "Bench Candidate", "email": candidate_email},
        })),
        approver: false,
    }
}

/// Builds the steps after the submission of `referral_id`.
fn follow_up_steps(fixture: &Fixture, referral_id: ReferralId) -> Vec<Step> {
    let referral = format!("/v1/referrals/{}", referral_id.0);
    let last_sunday = {
        let today = Utc::now().date_naive();
        today - chrono::Duration::days(i64::from(today.weekday().num_days_from_sunday()))
    };
    let start_date = last_sunday - chrono::Duration::days(7 * HOURS_WEEKS + 6);
    let step = |kind, path: String, body| Step {
        kind,
        path,
        body,
        approver: false,
    };
    let mut steps = vec![
        step(
            CommandKind::MoveStage,
            format!("{referral}/contacted"),
            None,
        ),
        step(
            CommandKind::MoveStage,
            format!("{referral}/interviewing"),
            None,
        ),
        step(
            CommandKind::Hire,
            format!("{referral}/hire"),
            Some(json!({
                "start_date": start_date,
                "job_title": "Forklift Operator",
                "client_name": "Northwind Logistics",
            })),
        ),
    ];
    for week in 0..HOURS_WEEKS {
        let week_ending = last_sunday - chrono::Duration::days(7 * (HOURS_WEEKS - 1 - week));
        steps.push(step(
            CommandKind::RecordHours,
            format!("{referral}/hours"),
            Some(json!({"week_ending": week_ending, "hours": "38.50"})),
        ));
    }
    let payout =
        PayoutId::for_milestone(referral_id, &fixture.hire_milestone, Recipient::Ambassador);
    steps.push(Step {
        kind: CommandKind::ApprovePayout,
        path: format!("/v1/payouts/{}/approve", payout.0),
        body: None,
        approver: true,
    });
    steps
}

/// Sends one step and records its sample; returns the response body of a success.
async fn send(
    client: &reqwest::Client,
    fixture: &Fixture,
    step: &Step,
    samples: &mut Vec<Sample>,
) -> Option<Value> {
    let token = if step.approver {
        &fixture.approver_token
    } else {
        &fixture.recruiter_token
    };
    let mut request = client
        .post(format!("{}{}", fixture.base, step.path))
        .bearer_auth(token);
    if let Some(body) = &step.body {
        request = request.json(body);
    }
    let started = Instant::now();
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            Ok((status, body))
        }
        Err(error) => Err(error),
    };
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match outcome {
        Ok((status, body)) if (200..300).contains(&status) => {
            samples.push(Sample {
                kind: step.kind,
                micros,
                status,
                detail: String::new(),
            });
            Some(body)
        }
        Ok((status, body)) => {
            samples.push(Sample {
                kind: step.kind,
                micros,
                status,
                detail: body["code"]
                    .as_str()
                    .unwrap_or("no problem code")
                    .to_owned(),
            });
            None
        }
        Err(error) => {
            samples.push(Sample {
                kind: step.kind,
                micros,
                status: 0,
                detail: error.to_string(),
            });
            None
        }
    }
}

/// The bench agency and its admin.
struct BenchAgency {
    agency_id: AgencyId,
    admin_id: UserId,
}

async fn create_agency(accounts: &Accounts) -> anyhow::Result<BenchAgency> {
    let operator = CommandMetadata::new(
        referrals_domain::ids::PLATFORM_AGENCY,
        Actor::System {
            job: "bench".to_owned(),
        },
    );
    let email = bench_email("admin")?;
    let created = accounts
        .create_agency(&operator, "Bench Staffing", &email, None)
        .await
        .context("creating the bench agency")?;
    Ok(BenchAgency {
        agency_id: created.agency_id,
        admin_id: created.admin_user_id,
    })
}

/// Invites a user with `role`, accepts the invitation and signs in with a TOTP code when
/// the role needs one; returns the session token.
async fn sign_in_new_user(
    accounts: &Accounts,
    agency: &BenchAgency,
    role: Role,
) -> anyhow::Result<String> {
    let admin = CommandMetadata::new(
        agency.agency_id,
        Actor::User {
            id: agency.admin_id,
            role: Role::AgencyAdmin.as_str().to_owned(),
        },
    );
    let email = bench_email(role.as_str())?;
    let invited = accounts
        .invite_user(&admin, &email, None, &[role])
        .await
        .with_context(|| format!("inviting a {}", role.as_str()))?;
    let accepted = accounts
        .accept_invitation(invited.invite_token.expose(), PASSWORD)
        .await
        .context("accepting the bench user's invitation")?;
    let code = match &accepted.totp_secret {
        Some(secret) => {
            Some(totp::code_at(secret.expose(), Utc::now()).map_err(|error| anyhow!("{error}"))?)
        }
        None => None,
    };
    let session = accounts
        .login(
            email.as_str(),
            PASSWORD,
            code.as_deref(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        )
        .await
        .context("signing the bench user in")?;
    Ok(session.token.expose().to_owned())
}

fn bench_email(prefix: &str) -> anyhow::Result<EmailAddress> {
    let text = format!(
        "{prefix}-{}@bench.example.com",
        uuid::Uuid::now_v7().simple()
    );
    EmailAddress::parse(&text)
        .map_err(|error| anyhow!("invalid bench address {text}: {}", error.message))
}

/// Creates a program paying $500 at hire and $1,000 after 160 hours. Returns the program
/// and the hire milestone's key, from which the clients derive the payout ids.
async fn create_program(
    app: &Application,
    metadata: &CommandMetadata,
) -> anyhow::Result<(ProgramId, MilestoneKey)> {
    let hire = Milestone {
        trigger: Trigger::Hired,
        threshold: Hours::whole(0),
        amount: 50_000,
        recipient: Recipient::Ambassador,
    };
    let hours = Milestone {
        trigger: Trigger::HoursWorked,
        threshold: Hours::whole(160),
        amount: 100_000,
        recipient: Recipient::Ambassador,
    };
    let hire_key = hire.key();
    let executed = app
        .create_program(
            metadata,
            NewProgram {
                name: "Bench warehouse referrals".to_owned(),
                currency: Currency::parse("USD").map_err(|error| anyhow!("{}", error.message))?,
                terms: Terms::with_schedule(vec![hire, hours]),
            },
        )
        .await
        .context("creating the bench program")?;
    let program_id = executed
        .aggregate
        .program_id()
        .ok_or_else(|| anyhow!("the created program has no id"))?;
    Ok((program_id, hire_key))
}

pub(crate) async fn enroll_ambassadors(
    app: &Application,
    metadata: &CommandMetadata,
    count: usize,
) -> anyhow::Result<Vec<AmbassadorId>> {
    let mut ambassadors = Vec::with_capacity(count);
    for _ in 0..count {
        let executed = app
            .enroll_ambassador(
                metadata,
                NewAmbassador {
                    contact: referrals_store::personal::ContactDetails {
                        name: referrals_domain::values::PersonName::parse("Bench Ambassador")
                            .map_err(|error| anyhow!("{}", error.message))?,
                        email: Some(bench_email("ambassador")?),
                        phone: None,
                    },
                    kind: AmbassadorKind::FieldWorker,
                    external_id: None,
                    sms_consent: false,
                },
            )
            .await
            .context("enrolling a bench ambassador")?;
        ambassadors.push(
            executed
                .aggregate
                .ambassador_id()
                .ok_or_else(|| anyhow!("the enrolled ambassador has no id"))?,
        );
    }
    Ok(ambassadors)
}

/// `referrals serve` as a child process of the bench.
struct ServerProcess {
    child: Child,
    address: SocketAddr,
}

impl ServerProcess {
    /// Starts the server on a free loopback port and waits for its "serving" log line,
    /// which names the bound address.
    async fn start(database_url: &str, master_key_text: &str) -> anyhow::Result<Self> {
        let executable = std::env::current_exe().context("finding the referrals binary")?;
        let mut child = Command::new(executable)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env("REFERRALS_MASTER_KEY", master_key_text)
            .env_remove("REFERRALS_MASTER_KEY_FILE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting `referrals serve`")?;
        let stderr = child.stderr.take().context("reading the server's log")?;
        let (found, address) = std::sync::mpsc::channel();
        // The thread reads the log to its end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut found = Some(found);
            let mut recent = Vec::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(sender) = &found {
                    if let Some(address) = serving_address(&line) {
                        let _ = sender.send(Ok(address));
                        found = None;
                    } else if recent.len() < 20 {
                        recent.push(line);
                    }
                }
            }
            if let Some(sender) = found {
                let _ = sender.send(Err(recent.join("\n")));
            }
        });
        let waited =
            tokio::task::spawn_blocking(move || address.recv_timeout(STARTUP_TIMEOUT)).await?;
        match waited {
            Ok(Ok(address)) => Ok(Self { child, address }),
            Ok(Err(log)) => {
                let _ = child.wait();
                bail!("`referrals serve` exited before serving: {log}")
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`referrals serve` did not log its address within {} s",
                    STARTUP_TIMEOUT.as_secs()
                )
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> Option<u64> {
        process_rss_kib(self.pid())
    }

    /// Stops the server with SIGTERM, as an operator would, and kills it when it has not
    /// exited after ten seconds.
    fn stop(&mut self) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if terminated {
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            tracing::warn!(
                pid = self.pid(),
                "the bench server ignored SIGTERM; killing it"
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses the `address` field of the server's JSON "serving" log line.
fn serving_address(line: &str) -> Option<SocketAddr> {
    let entry: Value = serde_json::from_str(line).ok()?;
    if entry["fields"]["message"] != "serving" {
        return None;
    }
    entry["fields"]["address"].as_str()?.parse().ok()
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`), where the system
/// provides it.
pub(crate) fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::{serving_address, Latency};

    #[test]
    fn latency_percentiles_use_nearest_rank() {
        let latency = Latency::of((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(latency.count, 100);
        assert_eq!(latency.p50_ms, 50.0);
        assert_eq!(latency.p95_ms, 95.0);
        assert_eq!(latency.p99_ms, 99.0);
    }

    #[test]
    fn serving_line_names_address() {
        let line = r#"{"level":"INFO","fields":{"message":"serving","address":"127.0.0.1:4100"}}"#;
        assert_eq!(
            serving_address(line),
            Some("127.0.0.1:4100".parse().unwrap())
        );
        assert_eq!(serving_address(r#"{"fields":{"message":"stopped"}}"#), None);
    }
}
