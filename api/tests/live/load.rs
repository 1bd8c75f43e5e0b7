//! A mixed command load from several client tasks: enroll an ambassador, then per
//! referral submit, mark contacted and interviewing, hire, record two weeks of hours and
//! approve the two payouts this earns. Every accepted command is recorded with the
//! aggregate version it produced, so checks can find its event.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use referrals_domain::ids::{PayoutId, ReferralId};
use referrals_domain::terms::{MilestoneKey, Recipient};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use super::Agency;

/// What the load does and for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Client tasks running at once.
    pub tasks: usize,
    /// Referrals each task takes through the whole flow, at most.
    pub referrals_per_task: usize,
    /// The tasks stop starting new referrals after this.
    pub duration: Duration,
    /// Every `shared_every`-th referral of a task refers one of `shared_candidates`
    /// candidates that all tasks refer, so submissions race for the same candidate.
    pub shared_every: usize,
    /// Candidates that all tasks refer.
    pub shared_candidates: usize,
    /// Pause after each request, to set a moderate rate; zero for full speed.
    pub pause: Duration,
    /// How long a task keeps retrying the approval of a payout that the server has not
    /// requested yet (404) or cannot reach its database for (503).
    pub approval_patience: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            tasks: 4,
            referrals_per_task: 1_000,
            duration: Duration::from_secs(10),
            shared_every: 4,
            shared_candidates: 5,
            pause: Duration::ZERO,
            approval_patience: Duration::from_secs(15),
        }
    }
}

/// A command that got a 2xx response, and the aggregate version it produced.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The command, such as `hire`.
    pub command: &'static str,
    /// `aggregate_type` in the events table.
    pub aggregate_type: &'static str,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The aggregate's version after the command (the sequence of its last event).
    pub version: i64,
}

/// What the load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Commands with a 2xx response.
    pub accepted: Vec<Accepted>,
    /// Responses that were not 2xx, by status code.
    pub rejected: BTreeMap<u16, u64>,
    /// Non-2xx responses that were not `application/problem+json`, as "STATUS PATH".
    pub not_problem_json: Vec<String>,
    /// Requests that got no response (connection refused or reset, timeout).
    pub transport_errors: u64,
    /// Per candidate e-mail address, the referral ids of accepted submissions with their
    /// status (`submitted` or `duplicate`).
    pub submissions: HashMap<String, Vec<(String, String)>>,
    /// Wall time of the load.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Accepted commands per second.
    pub fn throughput(&self) -> f64 {
        self.accepted.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Accepted commands of one kind.
    pub fn count(&self, command: &str) -> usize {
        self.accepted
            .iter()
            .filter(|accepted| accepted.command == command)
            .count()
    }

    fn merge(&mut self, other: LoadReport) {
        self.accepted.extend(other.accepted);
        for (status, count) in other.rejected {
            *self.rejected.entry(status).or_default() += count;
        }
        self.not_problem_json.extend(other.not_problem_json);
        self.transport_errors += other.transport_errors;
        for (email, referrals) in other.submissions {
            self.submissions.entry(email).or_default().extend(referrals);
        }
    }
}

/// Runs the load against `base_urls`, task `i` sending to `base_urls[i % len]`, and
/// returns once every task has finished its last referral.
pub async fn run(base_urls: &[String], agency: &Agency, options: &LoadOptions) -> LoadReport {
    let started = Instant::now();
    let deadline = started + options.duration;
    let tasks: Vec<_> = (0..options.tasks)
        .map(|index| {
            let mut task = Task {
                client: Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap(),
                base_url: base_urls[index % base_urls.len()].clone(),
                agency: agency.clone(),
                options: options.clone(),
                index,
                report: LoadReport::default(),
            };
            tokio::spawn(async move {
                task.run(deadline).await;
                task.report
            })
        })
        .collect();
    let mut report = LoadReport::default();
    for task in tasks {
        report.merge(task.await.unwrap());
    }
    report.elapsed = started.elapsed();
    report
}

/// Runs the load in the background.
pub fn spawn(
    base_urls: Vec<String>,
    agency: Agency,
    options: LoadOptions,
) -> tokio::task::JoinHandle<LoadReport> {
    tokio::spawn(async move { run(&base_urls, &agency, &options).await })
}

/// One response: its status and its body parsed as JSON (`Null` when not JSON).
struct Response {
    status: StatusCode,
    body: Value,
}

struct Task {
    client: Client,
    base_url: String,
    agency: Agency,
    options: LoadOptions,
    index: usize,
    report: LoadReport,
}

impl Task {
    async fn run(&mut self, deadline: Instant) {
        let mut ambassador = None;
        for number in 0..self.options.referrals_per_task {
            if Instant::now() > deadline {
                return;
            }
            if ambassador.is_none() {
                ambassador = self.enroll_ambassador().await;
                if ambassador.is_none() {
                    continue;
                }
            }
            let ambassador_id = ambassador.clone().unwrap();
            self.referral_flow(&ambassador_id, number).await;
        }
    }

    async fn enroll_ambassador(&mut self) -> Option<String> {
        let email = format!("ambassador.{}@example.com", uuid::Uuid::now_v7().simple());
        let body = json!({"name": "Avery Ambassador", "email": email, "kind": "field_worker"});
        let response = self
            .command(
                "enroll",
                "ambassador",
                Method::POST,
                "/v1/ambassadors".to_owned(),
                Some(body),
            )
            .await?;
        Some(response.body["id"].as_str()?.to_owned())
    }

    fn candidate_email(&self, number: usize) -> String {
        if self.options.shared_every > 0 && number % self.options.shared_every == 0 {
            let shared = (number / self.options.shared_every) % self.options.shared_candidates;
            format!("shared.candidate.{shared}@example.org")
        } else {
            format!("candidate.{}@example.org", uuid::Uuid::now_v7().simple())
        }
    }

    /// Takes one referral as far through the flow as the server accepts.
    async fn referral_flow(&mut self, ambassador_id: &str, number: usize) {
        let email = self.candidate_email(number);
        let body = json!({
            "program_id": self.agency.program_id,
            "ambassador_id": ambassador_id,
            "candidate": {"name": "Casey Candidate", "email": email},
        });
        let Some(submitted) = self
            .command(
                "submit",
                "referral",
                Method::POST,
                "/v1/referrals".to_owned(),
                Some(body),
            )
            .await
        else {
            return;
        };
        let Some(id) = submitted.body["id"].as_str().map(str::to_owned) else {
            return;
        };
        let status = submitted.body["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.report
            .submissions
            .entry(email)
            .or_default()
            .push((id.clone(), status.clone()));
        if status != "submitted" {
            return;
        }

        let steps = [
            ("contacted", None),
            ("interviewing", None),
            (
                "hire",
                Some(
                    json!({"start_date": "2026-01-05", "job_title": "Picker", "client_name": "Depot"}),
                ),
            ),
            (
                "hours",
                Some(json!({"week_ending": "2026-01-11", "hours": "25"})),
            ),
            (
                "hours",
                Some(json!({"week_ending": "2026-01-18", "hours": "25"})),
            ),
        ];
        let mut last = submitted;
        for (step, body) in steps {
            let path = format!("/v1/referrals/{id}/{step}");
            match self
                .command(step_name(step), "referral", Method::POST, path, body)
                .await
            {
                Some(response) => last = response,
                None => return,
            }
        }

        let referral_id = ReferralId(id.parse().unwrap());
        let keys: Vec<String> = last.body["milestones_reached"]
            .as_array()
            .map(|reached| {
                reached
                    .iter()
                    .filter_map(|milestone| milestone["key"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for key in keys {
            let Ok(key) = MilestoneKey::parse(&key) else {
                continue;
            };
            let payout_id = PayoutId::for_milestone(referral_id, &key, Recipient::Ambassador);
            self.approve(&payout_id.to_string()).await;
        }
    }

    /// Approves a payout, retrying while the server's reactor has not requested it yet.
    async fn approve(&mut self, payout_id: &str) {
        let give_up = Instant::now() + self.options.approval_patience;
        let path = format!("/v1/payouts/{payout_id}/approve");
        loop {
            let Some(response) = self.send(Method::POST, &path, None).await else {
                if Instant::now() > give_up {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if response.status.is_success() {
                self.accept("approve", "payout", payout_id, &response);
                return;
            }
            let retry = matches!(
                response.status,
                StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE
            );
            if !retry || Instant::now() > give_up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a command; returns the response when it is 2xx and records it as accepted.
    async fn command(
        &mut self,
        command: &'static str,
        aggregate_type: &'static str,
        method: Method,
        path: String,
        body: Option<Value>,
    ) -> Option<Response> {
        let response = self.send(method, &path, body).await?;
        if !response.status.is_success() {
            return None;
        }
        let id = response.body["id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| path.split('/').nth(3).map(str::to_owned))?;
        self.accept(command, aggregate_type, &id, &response);
        Some(response)
    }

    fn accept(
        &mut self,
        command: &'static str,
        aggregate_type: &'static str,
        id: &str,
        response: &Response,
    ) {
        let version = response.body["version"]
            .as_i64()
            .unwrap_or_else(|| panic!("{command} response without a version: {}", response.body));
        self.report.accepted.push(Accepted {
            command,
            aggregate_type,
            aggregate_id: id.to_owned(),
            version,
        });
    }

    /// Sends one request; `None` when no response came. Records non-2xx statuses.
    async fn send(&mut self, method: Method, path: &str, body: Option<Value>) -> Option<Response> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.agency.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let result = request.send().await;
        if !self.options.pause.is_zero() {
            tokio::time::sleep(self.options.pause).await;
        }
        let response = match result {
            Ok(response) => response,
            Err(_) => {
                self.report.transport_errors += 1;
                // A server that is down refuses at once; do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return None;
            }
        };
        let status = response.status();
        let problem_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|value| value == "application/problem+json");
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(_) if status.is_success() => {
                // The connection broke after the status line: the outcome is unknown.
                self.report.transport_errors += 1;
                return None;
            }
            Err(_) => Value::Null,
        };
        if !status.is_success() {
            *self.report.rejected.entry(status.as_u16()).or_default() += 1;
            if !problem_json {
                self.report.not_problem_json.push(format!(
                    "{} {path} (task {})",
                    status.as_u16(),
                    self.index
                ));
            }
        }
        Some(Response { status, body })
    }
}

fn step_name(step: &str) -> &'static str {
    match step {
        "contacted" => "contacted",
        "interviewing" => "interviewing",
        "hire" => "hire",
        _ => "hours",
    }
}
