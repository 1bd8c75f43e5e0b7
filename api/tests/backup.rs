//! `scripts/backup-restore.sh` on a small generated data set: the dump restores, the
//! audit chain verifies, and a rebuild reproduces every read model, even though the dump
//! is taken while the read models lag the event store.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{Reply, TestApi};
use referrals_domain::role::Role;
use referrals_projections::models;
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::status::projection_status;
use serde_json::json;
use sqlx::PgPool;

fn created_id(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn assert_ok(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

/// Applies every event to every read model. One pass may stop short while other
/// transactions on the cluster hold the read horizon back, so each projection repeats
/// until nothing is behind, for up to 15 s.
async fn project_everything(pool: &PgPool) {
    let runner = ProjectionRunner::new(pool.clone());
    for projection in models::all() {
        for _ in 0..300 {
            runner.catch_up(projection.as_ref()).await.unwrap();
            let status = &projection_status(pool, &[projection.name()]).await.unwrap()[0];
            if status.events_behind == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn count(pool: &PgPool, query: &str) -> i64 {
    sqlx::query_scalar(query).fetch_one(pool).await.unwrap()
}

/// Creates a program paying on hire and at 40 hours, two ambassadors and four
/// referrals, takes one referral through hire and 40 hours, approves its hire payout and
/// projects all of it. Then submits a fifth referral without projecting it, so the
/// read models lag the event store when the dump is taken.
async fn generate_data(pool: &PgPool) {
    let api = TestApi::new(pool);
    let agency = api.agency().await;
    let (_, token) = api.user(&agency, &[Role::Recruiter]).await;
    let (_, approver) = api.user(&agency, &[Role::PayoutApprover]).await;
    let program = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(json!({
                "name": "Warehouse referrals",
                "terms": {"bonus_schedule": [
                    {"trigger": "hired", "threshold": 0, "amount": 10000},
                    {"trigger": "hours_worked", "threshold": 40, "amount": 20000}
                ]}
            })),
        )
        .await;
    let program_id = created_id(&program);
    let submit = |ambassador_id: String, email: String| {
        api.call(
            Method::POST,
            "/v1/referrals",
            Some(&token),
            Some(json!({
                "program_id": program_id,
                "ambassador_id": ambassador_id,
                "candidate": {"name": "Casey Candidate", "email": email},
                "job_reference": "Forklift driver"
            })),
        )
    };

    let mut referral_ids = Vec::new();
    let mut ambassador_ids = Vec::new();
    for ambassador in 0..2 {
        let enrolled = api
            .call(
                Method::POST,
                "/v1/ambassadors",
                Some(&token),
                Some(json!({
                    "name": format!("Ambassador {ambassador}"),
                    "email": format!("ambassador{ambassador}@example.com"),
                    "kind": "field_worker"
                })),
            )
            .await;
        let ambassador_id = created_id(&enrolled);
        for candidate in 0..2 {
            let email = format!("candidate{ambassador}-{candidate}@example.com");
            let referral = submit(ambassador_id.clone(), email).await;
            referral_ids.push(created_id(&referral));
        }
        ambassador_ids.push(ambassador_id);
    }

    let hired_id = &referral_ids[0];
    let pipeline = [
        ("contacted", None),
        ("interviewing", None),
        (
            "hire",
            Some(json!({
                "start_date": "2026-01-05",
                "job_title": "Forklift driver",
                "client_name": "Northside Logistics",
                "external_worker_id": "W-100"
            })),
        ),
        (
            "hours",
            Some(json!({"week_ending": "2026-01-11", "hours": "40"})),
        ),
    ];
    for (step, body) in pipeline {
        let path = format!("/v1/referrals/{hired_id}/{step}");
        let reply = api.call(Method::POST, &path, Some(&token), body).await;
        assert_ok(&reply);
    }

    let payout_ids: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE aggregate_type = 'payout' AND event_type = 'PayoutRequested'
          ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        payout_ids.len(),
        2,
        "the hire and the 40 hours request a payout each"
    );
    let approved = api
        .call(
            Method::POST,
            &format!("/v1/payouts/{}/approve", payout_ids[0]),
            Some(&approver),
            None,
        )
        .await;
    assert_ok(&approved);

    project_everything(pool).await;
    let board_rows = count(pool, "SELECT count(*) FROM read_models.referral_board").await;
    assert_eq!(board_rows, 4, "the referral board was not projected");
    let ledger_rows = count(pool, "SELECT count(*) FROM read_models.payout_ledger").await;
    assert_eq!(ledger_rows, 2, "the payout ledger was not projected");

    let late = submit(
        ambassador_ids[1].clone(),
        "candidate-late@example.com".to_owned(),
    )
    .await;
    created_id(&late);
    let board = &projection_status(pool, &["referral_board"]).await.unwrap()[0];
    assert!(
        board.events_behind > 0,
        "the referral board must lag the events when the dump is taken"
    );
}

/// Builds the URL of the pool's database on the server that `DATABASE_URL` names.
fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL must name the test server");
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL ends in /DATABASE");
    let options = pool.connect_options();
    format!("{server}/{}", options.get_database().unwrap())
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn backup_restores_and_rebuilds_identically(pool: PgPool) {
    generate_data(&pool).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/backup-restore.sh");
    let restore_database = format!("referrals_restore_{}", uuid::Uuid::now_v7().simple());

    let output = std::process::Command::new("bash")
        .arg(script)
        .arg(database_url(&pool))
        .arg(&restore_database)
        .env("REFERRALS_BIN", env!("CARGO_BIN_EXE_referrals"))
        .env_remove("KEEP_RESTORED")
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("rebuild reproduced all"),
        "no success line: {stderr}"
    );
    let left_over: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&restore_database)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left_over, 0, "the restored database was not dropped");
}
