//! Verifying the event hash chain through `POST /v1/audit/verify` and through
//! `referrals audit verify`.

mod common;

use std::process::Command;

use axum::http::{Method, StatusCode};
use common::{TestAgency, TestApi};
use referrals_domain::role::Role;
use serde_json::{json, Value};
use sqlx::PgPool;

async fn create_program(api: &TestApi, agency: &TestAgency) {
    let body = json!({
        "name": "Warehouse referrals",
        "terms": {"bonus_schedule": [{"trigger": "hired", "threshold": 0, "amount": 10000}]}
    });
    let reply = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

async fn agency_events(pool: &PgPool, agency: &TestAgency) -> u64 {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE agency_id = $1")
        .bind(agency.agency_id.0)
        .fetch_one(pool)
        .await
        .unwrap();
    u64::try_from(count).unwrap()
}

/// Changes the payload of the agency's program event, as a superuser would, and returns
/// its position.
async fn tamper_with_program(pool: &PgPool, agency: &TestAgency) -> i64 {
    let mut transaction = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_reject_update_delete")
        .execute(&mut *transaction)
        .await
        .unwrap();
    let position: i64 = sqlx::query_scalar(
        "UPDATE events SET payload = replace(payload::text, 'Warehouse', 'Warehousf')::json
          WHERE agency_id = $1 AND aggregate_type = 'program'
         RETURNING position",
    )
    .bind(agency.agency_id.0)
    .fetch_one(&mut *transaction)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_reject_update_delete")
        .execute(&mut *transaction)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    position
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn auditor_gets_ok_report(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    create_program(&api, &agency).await;
    let (_, auditor) = api.user(&agency, &[Role::ComplianceAuditor]).await;

    let reply = api
        .call(
            Method::POST,
            "/v1/audit/verify?full=true",
            Some(&auditor),
            None,
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["ok"], json!(true));
    assert_eq!(
        reply.body["events_checked"],
        json!(agency_events(&pool, &agency).await)
    );
    assert_eq!(reply.body.get("first_broken"), None);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn auditor_sees_first_broken_link(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    create_program(&api, &agency).await;
    let (_, auditor) = api.user(&agency, &[Role::ComplianceAuditor]).await;
    let position = tamper_with_program(&pool, &agency).await;

    let reply = api
        .call(Method::POST, "/v1/audit/verify", Some(&auditor), None)
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["ok"], json!(false));
    let broken = &reply.body["first_broken"];
    assert_eq!(broken["position"], json!(position));
    assert_eq!(broken["aggregate_type"], json!("program"));
    assert_eq!(broken["sequence"], json!(1));
    assert_eq!(broken["reason"], json!("hash_mismatch"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn other_agency_tampering_is_not_reported(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let other = api.agency().await;
    create_program(&api, &other).await;
    tamper_with_program(&pool, &other).await;
    let (_, auditor) = api.user(&agency, &[Role::ComplianceAuditor]).await;

    let reply = api
        .call(
            Method::POST,
            "/v1/audit/verify?full=true",
            Some(&auditor),
            None,
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["ok"], json!(true));
    assert_eq!(
        reply.body["events_checked"],
        json!(agency_events(&pool, &agency).await)
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn recruiter_is_forbidden(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, recruiter) = api.user(&agency, &[Role::Recruiter]).await;

    let reply = api
        .call(Method::POST, "/v1/audit/verify", Some(&recruiter), None)
        .await;

    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn unknown_query_parameter_is_rejected(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, auditor) = api.user(&agency, &[Role::ComplianceAuditor]).await;

    let reply = api
        .call(
            Method::POST,
            "/v1/audit/verify?fully=true",
            Some(&auditor),
            None,
        )
        .await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
}

/// Returns the URL of the test database behind `pool`, on the `DATABASE_URL` server.
async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL must name the test server");
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL ends in /DATABASE");
    format!("{server}/{name}")
}

fn audit_verify(url: &str, agency: &TestAgency) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_referrals"))
        .args(["audit", "verify", "--full", "--agency"])
        .arg(agency.agency_id.0.to_string())
        .env("DATABASE_URL", url)
        .output()
        .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn cli_exits_1_on_broken_chain(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    create_program(&api, &agency).await;
    let url = database_url(&pool).await;

    let intact = audit_verify(&url, &agency);
    assert_eq!(
        intact.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    let report: Value = serde_json::from_slice(&intact.stdout).unwrap();
    assert_eq!(report["ok"], json!(true));

    let position = tamper_with_program(&pool, &agency).await;
    let broken = audit_verify(&url, &agency);

    assert_eq!(broken.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(report["ok"], json!(false));
    assert_eq!(report["first_broken"]["position"], json!(position));
    let stderr = String::from_utf8_lossy(&broken.stderr);
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("referrals:"))
        .collect();
    assert_eq!(reasons.len(), 1, "{stderr}");
    assert!(
        reasons[0].contains(&format!("position {position}")),
        "{stderr}"
    );
}
