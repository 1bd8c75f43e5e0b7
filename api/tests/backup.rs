//! `scripts/backup-restore.sh` on a small generated data set: the dump restores, the
//! audit chain verifies and a rebuild reproduces every read model.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::TestApi;
use referrals_domain::role::Role;
use referrals_projections::models;
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::status::projection_status;
use serde_json::json;
use sqlx::PgPool;

/// Creates a program, two ambassadors and four referrals, and projects them.
async fn generate_data(pool: &PgPool) {
    let api = TestApi::new(pool);
    let agency = api.agency().await;
    let (_, token) = api.user(&agency, &[Role::Recruiter]).await;
    let program = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(json!({
                "name": "Warehouse referrals",
                "terms": {"bonus_schedule": [
                    {"trigger": "hired", "threshold": 0, "amount": 10000}
                ]}
            })),
        )
        .await;
    assert_eq!(program.status, StatusCode::CREATED, "{}", program.body);
    let program_id = program.body["id"].as_str().unwrap().to_owned();

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
        assert_eq!(enrolled.status, StatusCode::CREATED, "{}", enrolled.body);
        let ambassador_id = enrolled.body["id"].as_str().unwrap().to_owned();
        for candidate in 0..2 {
            let referral = api
                .call(
                    Method::POST,
                    "/v1/referrals",
                    Some(&token),
                    Some(json!({
                        "program_id": program_id,
                        "ambassador_id": ambassador_id,
                        "candidate": {
                            "name": "Casey Candidate",
                            "email": format!("candidate{ambassador}-{candidate}@example.com")
                        },
                        "job_reference": "Forklift driver"
                    })),
                )
                .await;
            assert_eq!(referral.status, StatusCode::CREATED, "{}", referral.body);
        }
    }

    // One pass may stop short while other transactions on the cluster hold the read
    // horizon back, so each projection repeats until nothing is behind, for up to 15 s.
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
    let board_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM read_models.referral_board")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(board_rows, 4, "the referral board was not projected");
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
