//! Statements per command: each request of a referral's journey, counted through sqlx's
//! statement log, stays within a budget. Every statement is a round trip to PostgreSQL and
//! work for it, and the database's work dominates a command's cost (see BENCHMARKS.md).
//! The budgets are the counts measured when they were set. A change that adds a statement
//! to a command has to raise its budget here, on purpose.
//!
//! This file contains one test because the counter is process-wide, so a second test
//! running in parallel would add its statements to the count.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::{Reply, TestApi};
use referrals_domain::role::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Counts the statements sqlx logs (target `sqlx::query`, one event per statement).
#[derive(Clone, Default)]
struct StatementCounter(Arc<AtomicUsize>);

impl<S: Subscriber> Layer<S> for StatementCounter {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl StatementCounter {
    /// Runs `request` and returns its reply with the number of statements it sent.
    async fn count(&self, request: impl std::future::Future<Output = Reply>) -> (Reply, usize) {
        let before = self.0.load(Ordering::Relaxed);
        let reply = request.await;
        (reply, self.0.load(Ordering::Relaxed) - before)
    }
}

/// Statement budgets per request, as measured when they were set.
const SUBMIT_BUDGET: usize = 11;
const MOVE_STAGE_BUDGET: usize = 5;
const HIRE_BUDGET: usize = 6;
const RECORD_HOURS_BUDGET: usize = 5;
const APPROVE_BUDGET: usize = 6;

async fn post(api: &TestApi, token: &str, path: String, body: Option<Value>) -> Reply {
    api.call(Method::POST, &path, Some(token), body).await
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().expect("an id").to_owned()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn journey_commands_stay_within_their_statement_budgets(pool: PgPool) {
    let counter = StatementCounter::default();
    // sqlx logs statements at DEBUG; the filter keeps every other target quiet.
    let subscriber = tracing_subscriber::registry().with(
        counter.clone().with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::DEBUG),
        ),
    );
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per process");

    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, recruiter) = api.user(&agency, &[Role::Recruiter]).await;
    let (_, approver) = api.user(&agency, &[Role::PayoutApprover]).await;
    let program_id = api
        .create_program(
            &agency,
            json!([
                {"trigger": "hired", "threshold": 0, "amount": 10000},
                {"trigger": "hours_worked", "threshold": 160, "amount": 50000}
            ]),
        )
        .await;
    let ambassador_id = api.enroll_ambassador(&recruiter, "amb@example.com").await;

    // A first referral fills what a running server has filled already: the agency key
    // cache and the pool's connections.
    let submit = |email: &str| {
        let body = json!({
            "program_id": program_id,
            "ambassador_id": ambassador_id,
            "candidate": {"name": "Casey Candidate", "email": email},
            "note": "Worked with Avery at the depot"
        });
        api.call(Method::POST, "/v1/referrals", Some(&recruiter), Some(body))
    };
    let warm = submit("first@example.com").await;
    assert_eq!(warm.status, StatusCode::CREATED, "{}", warm.body);

    let (submitted, submit_statements) = counter.count(submit("casey@example.com")).await;
    assert_eq!(submitted.status, StatusCode::CREATED, "{}", submitted.body);
    let referral = id_of(&submitted);
    let step = |step: &str| format!("/v1/referrals/{referral}/{step}");
    let (contacted, move_statements) = counter
        .count(post(&api, &recruiter, step("contacted"), None))
        .await;
    assert_eq!(contacted.status, StatusCode::OK, "{}", contacted.body);
    let (hired, hire_statements) = counter
        .count(post(
            &api,
            &recruiter,
            step("hire"),
            Some(json!({"start_date": "2026-01-05", "job_title": "Picker",
                        "client_name": "Depot"})),
        ))
        .await;
    assert_eq!(hired.status, StatusCode::OK, "{}", hired.body);
    let (hours, hours_statements) = counter
        .count(post(
            &api,
            &recruiter,
            step("hours"),
            Some(json!({"week_ending": "2026-01-11", "hours": 30})),
        ))
        .await;
    assert_eq!(hours.status, StatusCode::OK, "{}", hours.body);

    common::catch_up(&pool).await;
    let payouts = api
        .call(
            Method::GET,
            &format!("/v1/payouts?referral_id={referral}"),
            Some(&approver),
            None,
        )
        .await;
    assert_eq!(payouts.status, StatusCode::OK, "{}", payouts.body);
    let payout = payouts.body["items"][0]["id"]
        .as_str()
        .expect("the hire's payout")
        .to_owned();
    let (approved, approve_statements) = counter
        .count(api.call(
            Method::POST,
            &format!("/v1/payouts/{payout}/approve"),
            Some(&approver),
            None,
        ))
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);

    let counts = [
        ("submit", submit_statements, SUBMIT_BUDGET),
        ("move stage", move_statements, MOVE_STAGE_BUDGET),
        ("hire", hire_statements, HIRE_BUDGET),
        ("record hours", hours_statements, RECORD_HOURS_BUDGET),
        ("approve", approve_statements, APPROVE_BUDGET),
    ];
    println!("statements per request: {counts:?}");
    for (request, statements, budget) in counts {
        assert!(
            statements > 0,
            "no statement counted for {request}: is sqlx's statement log still at DEBUG?"
        );
        assert!(
            statements <= budget,
            "{request} sent {statements} statements, over its budget of {budget}"
        );
    }
}
