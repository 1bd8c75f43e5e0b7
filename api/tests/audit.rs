//! The audit reads through the real router: aggregate history with opened personal
//! fields, past states, the event feed, the NDJSON export, the access log and the access
//! review.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use chrono::{SecondsFormat, Utc};
use common::{Reply, TestAgency, TestApi};
use referrals_domain::ids::UserId;
use referrals_domain::role::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// An agency with a recruiter, an auditor, a program, an ambassador and one referral.
struct Setup {
    api: TestApi,
    agency: TestAgency,
    recruiter_id: UserId,
    recruiter: String,
    auditor_id: UserId,
    auditor: String,
    ambassador_id: String,
    referral_id: String,
}

async fn setup(pool: &PgPool) -> Setup {
    let api = TestApi::new(pool);
    let agency = api.agency().await;
    let (recruiter_id, recruiter) = api.user(&agency, &[Role::Recruiter]).await;
    let (auditor_id, auditor) = api.user(&agency, &[Role::ComplianceAuditor]).await;

    let program = json!({
        "name": "Warehouse referrals",
        "terms": {"bonus_schedule": [{"trigger": "hired", "threshold": 0, "amount": 10000}]}
    });
    let reply = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(program),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let program_id = id_of(&reply);

    let ambassador_id = enroll(&api, &recruiter, "Avery Ambassador", "avery@example.com").await;
    let referral = json!({
        "program_id": program_id,
        "ambassador_id": ambassador_id,
        "candidate": {"name": "Casey Candidate", "email": "casey@example.com"},
        "job_reference": "Forklift driver",
        "note": "Worked with Avery at the depot"
    });
    let reply = api
        .call(
            Method::POST,
            "/v1/referrals",
            Some(&recruiter),
            Some(referral),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let referral_id = id_of(&reply);

    Setup {
        api,
        agency,
        recruiter_id,
        recruiter,
        auditor_id,
        auditor,
        ambassador_id,
        referral_id,
    }
}

async fn enroll(api: &TestApi, token: &str, name: &str, email: &str) -> String {
    let body = json!({"name": name, "email": email, "kind": "field_worker"});
    let reply = api
        .call(Method::POST, "/v1/ambassadors", Some(token), Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    id_of(&reply)
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap().to_owned()
}

impl Setup {
    async fn audit(&self, path: &str) -> Reply {
        self.api
            .call(Method::GET, path, Some(&self.auditor), None)
            .await
    }

    /// Access-log rows of a subject, leaving out the response to the submission in
    /// `setup`, which every test has.
    async fn access_log_rows(&self, subject_id: &str) -> Vec<(Uuid, String, String, String)> {
        sqlx::query_as(
            "SELECT user_id, role, subject_type, endpoint FROM access_log
              WHERE subject_id = $1 AND endpoint <> 'POST /v1/referrals'
              ORDER BY accessed_at",
        )
        .bind(Uuid::parse_str(subject_id).unwrap())
        .fetch_all(&self.api.pool)
        .await
        .unwrap()
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn history_opens_sealed_fields_with_metadata(pool: PgPool) {
    let setup = setup(&pool).await;

    let reply = setup
        .audit(&format!("/v1/audit/referral/{}/events", setup.referral_id))
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let first = &reply.body["items"][0];
    assert_eq!(first["aggregate_type"], "referral");
    assert_eq!(first["aggregate_id"], setup.referral_id.as_str());
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["event_type"], "ReferralSubmitted");
    assert_eq!(first["event_version"], "1.0");
    assert_eq!(first["actor_id"], setup.recruiter_id.to_string());
    assert_eq!(first["actor_role"], "recruiter");
    assert!(first["correlation_id"].is_string(), "{first}");
    assert!(first["causation_id"].is_string(), "{first}");
    assert!(first["recorded_at"].is_string(), "{first}");
    assert_eq!(first["hash"].as_str().unwrap().len(), 64, "{first}");
    let submitted = &first["payload"]["ReferralSubmitted"];
    assert_eq!(submitted["candidate"]["name"], "Casey Candidate");
    assert_eq!(submitted["candidate"]["email"], "casey@example.com");
    assert_eq!(submitted["note"], "Worked with Avery at the depot");
    assert_eq!(submitted["job_reference"], "Forklift driver");

    let logged = setup.access_log_rows(&setup.referral_id).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].0, setup.auditor_id.0);
    assert_eq!(logged[0].1, "compliance_auditor");
    assert_eq!(logged[0].2, "candidate");
    assert_eq!(logged[0].3, "GET /v1/audit/{aggregate_type}/{id}/events");
}

#[sqlx::test(migrations = "../migrations")]
async fn erased_subject_shows_erased(pool: PgPool) {
    let setup = setup(&pool).await;
    sqlx::query(
        "UPDATE data_keys SET wrapped_key = NULL, master_key_id = NULL, destroyed_at = now()
          WHERE subject_id = $1",
    )
    .bind(Uuid::parse_str(&setup.referral_id).unwrap())
    .execute(&pool)
    .await
    .unwrap();

    let reply = setup
        .audit(&format!("/v1/audit/referral/{}/events", setup.referral_id))
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let submitted = &reply.body["items"][0]["payload"]["ReferralSubmitted"];
    assert_eq!(submitted["candidate"]["name"], "[erased]");
    assert_eq!(submitted["candidate"]["email"], "[erased]");
    assert_eq!(submitted["note"], "[erased]");
    let ambassador = setup
        .audit(&format!(
            "/v1/audit/ambassador/{}/events",
            setup.ambassador_id
        ))
        .await;
    assert_eq!(
        ambassador.body["items"][0]["payload"]["AmbassadorEnrolled"]["name"],
        "Avery Ambassador"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn user_history_hides_credentials(pool: PgPool) {
    let setup = setup(&pool).await;

    let reply = setup
        .audit(&format!("/v1/audit/user/{}/events", setup.recruiter_id))
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let text = reply.body.to_string();
    assert!(!text.contains("\"v1."), "{text}");
    assert!(!text.contains("$argon2"), "{text}");
    let accepted = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event_type"] == "InvitationAccepted")
        .expect("an InvitationAccepted event");
    assert_eq!(
        accepted["payload"]["InvitationAccepted"]["password_hash"],
        "[secret]"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn state_as_of_time_between_events(pool: PgPool) {
    let setup = setup(&pool).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reply = setup
        .api
        .call(
            Method::POST,
            &format!("/v1/referrals/{}/contacted", setup.referral_id),
            Some(&setup.recruiter),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let path = format!("/v1/audit/referral/{}/state", setup.referral_id);

    let past = setup.audit(&format!("{path}?as_of={between}")).await;
    let by_version = setup.audit(&format!("{path}?version=2")).await;
    let before = setup
        .audit(&format!("{path}?as_of=2000-01-01T00:00:00Z"))
        .await;

    assert_eq!(past.status, StatusCode::OK, "{}", past.body);
    assert_eq!(past.body["version"], 1);
    let candidate = past.body["state"].to_string();
    assert!(candidate.contains("Casey Candidate"), "{candidate}");
    assert!(!candidate.contains("\"v1."), "{candidate}");
    assert_eq!(by_version.status, StatusCode::OK, "{}", by_version.body);
    assert_eq!(by_version.body["version"], 2);
    assert_eq!(before.status, StatusCode::NOT_FOUND, "{}", before.body);
}

#[sqlx::test(migrations = "../migrations")]
async fn feed_filters_by_type_and_pages(pool: PgPool) {
    let setup = setup(&pool).await;
    let started = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    enroll(
        &setup.api,
        &setup.recruiter,
        "Blake Ambassador",
        "blake@example.com",
    )
    .await;
    // The feed reads only below the oldest transaction still running in the cluster, and
    // other tests open transactions too: wait until the new event is readable.
    for _ in 0..300 {
        let visible = setup
            .audit(&format!("/v1/audit/events?from={started}"))
            .await;
        if !visible.body["items"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let first = setup
        .audit("/v1/audit/events?type=AmbassadorEnrolled&limit=1")
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        first.body["items"][0]["aggregate_id"],
        setup.ambassador_id.as_str()
    );
    let cursor = first.body["next_cursor"].as_str().expect("a next page");
    let second = setup
        .audit(&format!(
            "/v1/audit/events?type=AmbassadorEnrolled&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert_ne!(
        second.body["items"][0]["aggregate_id"],
        setup.ambassador_id.as_str()
    );
    assert!(second.body["next_cursor"].is_null(), "{}", second.body);

    let recent = setup
        .audit(&format!("/v1/audit/events?from={started}"))
        .await;
    let types: Vec<&str> = recent.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["AmbassadorEnrolled"]);
    let none = setup
        .audit("/v1/audit/events?to=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(none.body["items"], json!([]));
    let invalid = setup.audit("/v1/audit/events?from=yesterday").await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST, "{}", invalid.body);
}

#[sqlx::test(migrations = "../migrations")]
async fn export_streams_one_line_per_event(pool: PgPool) {
    let setup = setup(&pool).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE agency_id = $1")
        .bind(setup.agency.agency_id.0)
        .fetch_one(&pool)
        .await
        .unwrap();

    let request = Request::builder()
        .uri("/v1/audit/export")
        .header(header::AUTHORIZATION, format!("Bearer {}", setup.auditor))
        .body(Body::empty())
        .unwrap();
    let response = setup.api.router.clone().oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), usize::try_from(stored).unwrap());
    for line in &lines {
        let event: Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(event["event_type"].is_string(), "{line}");
    }
    assert!(text.ends_with('\n'));
}

#[sqlx::test(migrations = "../migrations")]
async fn referral_read_logged_analyst_forbidden(pool: PgPool) {
    let setup = setup(&pool).await;
    let (_, analyst) = setup.api.user(&setup.agency, &[Role::Analyst]).await;

    let read = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/referrals/{}", setup.referral_id),
            Some(&setup.recruiter),
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let log = setup
        .audit(&format!(
            "/v1/audit/access-log?subject_id={}",
            setup.referral_id
        ))
        .await;
    let forbidden = setup
        .api
        .call(Method::GET, "/v1/audit/access-log", Some(&analyst), None)
        .await;

    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    let items: Vec<&Value> = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["endpoint"] != "POST /v1/referrals")
        .collect();
    assert_eq!(items.len(), 1, "{}", log.body);
    assert_eq!(items[0]["user_id"], setup.recruiter_id.to_string());
    assert_eq!(items[0]["role"], "recruiter");
    assert_eq!(items[0]["subject_type"], "candidate");
    assert_eq!(items[0]["endpoint"], "GET /v1/referrals/{id}");
    assert_eq!(
        items[0]["request_id"].as_str().unwrap(),
        read.headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(
        forbidden.status,
        StatusCode::FORBIDDEN,
        "{}",
        forbidden.body
    );
    let rejected = sqlx::query("DELETE FROM access_log").execute(&pool).await;
    assert!(rejected.is_err(), "the access log is append-only");
}

#[sqlx::test(migrations = "../migrations")]
async fn access_review_as_json_and_csv(pool: PgPool) {
    let setup = setup(&pool).await;
    let change = setup
        .api
        .call(
            Method::PUT,
            &format!("/v1/users/{}/roles", setup.recruiter_id),
            Some(&setup.agency.admin_token),
            Some(json!({"roles": ["recruiter", "payout_approver"]})),
        )
        .await;
    assert_eq!(change.status, StatusCode::OK, "{}", change.body);

    let review = setup
        .api
        .call(
            Method::GET,
            "/v1/audit/access-review",
            Some(&setup.agency.admin_token),
            None,
        )
        .await;
    let request = Request::builder()
        .uri("/v1/audit/access-review?format=csv")
        .header(header::AUTHORIZATION, format!("Bearer {}", setup.auditor))
        .body(Body::empty())
        .unwrap();
    let csv = setup.api.router.clone().oneshot(request).await.unwrap();

    assert_eq!(review.status, StatusCode::OK, "{}", review.body);
    let users = review.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 3, "{}", review.body);
    let recruiter = users
        .iter()
        .find(|user| user["user_id"] == setup.recruiter_id.to_string())
        .unwrap();
    assert!(recruiter["email"]
        .as_str()
        .unwrap()
        .ends_with("@example.com"));
    assert_eq!(recruiter["status"], "active");
    assert_eq!(recruiter["mfa_enrolled"], false);
    assert!(recruiter["last_active_at"].is_string(), "{recruiter}");
    assert_eq!(recruiter["roles"], json!(["recruiter", "payout_approver"]));
    let changes = recruiter["role_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["previous"], json!(["recruiter"]));
    assert_eq!(changes[0]["by"], setup.agency.admin_id.to_string());
    let auditor = users
        .iter()
        .find(|user| user["user_id"] == setup.auditor_id.to_string())
        .unwrap();
    let enrolled: bool =
        sqlx::query_scalar("SELECT mfa_enrolled FROM user_accounts WHERE user_id = $1")
            .bind(setup.auditor_id.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(auditor["mfa_enrolled"], enrolled);

    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let bytes = axum::body::to_bytes(csv.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "user_id,email,name,roles,status,mfa_enrolled,last_active_at,role_changes"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        text.contains("recruiter -> recruiter|payout_approver"),
        "{text}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn another_agency_gets_not_found(pool: PgPool) {
    let setup = setup(&pool).await;
    let other = setup.api.agency().await;
    let (_, other_auditor) = setup.api.user(&other, &[Role::ComplianceAuditor]).await;

    let foreign = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/audit/referral/{}/events", setup.referral_id),
            Some(&other_auditor),
            None,
        )
        .await;
    let foreign_state = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/audit/referral/{}/state", setup.referral_id),
            Some(&other_auditor),
            None,
        )
        .await;
    let unknown_type = setup
        .audit(&format!("/v1/audit/invoice/{}/events", setup.referral_id))
        .await;

    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
    assert_eq!(
        foreign_state.status,
        StatusCode::NOT_FOUND,
        "{}",
        foreign_state.body
    );
    assert_eq!(
        unknown_type.status,
        StatusCode::BAD_REQUEST,
        "{}",
        unknown_type.body
    );
    assert!(setup.access_log_rows(&setup.referral_id).await.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn lists_with_names_are_logged(pool: PgPool) {
    let setup = setup(&pool).await;
    let runner = referrals_projections::runner::ProjectionRunner::new(pool.clone());
    for projection in referrals_projections::models::all() {
        for _ in 0..100 {
            runner.catch_up(projection.as_ref()).await.unwrap();
            let status =
                referrals_projections::status::projection_status(&pool, &[projection.name()])
                    .await
                    .unwrap();
            if status[0].events_behind == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    let listed = setup
        .api
        .call(Method::GET, "/v1/ambassadors", Some(&setup.recruiter), None)
        .await;

    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let entries: Vec<(String, String)> =
        sqlx::query_as("SELECT subject_type, endpoint FROM access_log WHERE subject_id = $1::uuid")
            .bind(&setup.ambassador_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        entries.contains(&("ambassador".to_owned(), "GET /v1/ambassadors".to_owned())),
        "{entries:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn command_responses_are_logged(pool: PgPool) {
    let setup = setup(&pool).await;

    let contacted = setup
        .api
        .call(
            Method::POST,
            &format!("/v1/referrals/{}/contacted", setup.referral_id),
            Some(&setup.recruiter),
            None,
        )
        .await;

    assert_eq!(contacted.status, StatusCode::OK, "{}", contacted.body);
    let endpoints: Vec<String> = sqlx::query_scalar(
        "SELECT endpoint FROM access_log WHERE subject_id = $1::uuid ORDER BY accessed_at",
    )
    .bind(&setup.referral_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        endpoints.contains(&"POST /v1/referrals".to_owned()),
        "{endpoints:?}"
    );
    assert!(
        endpoints.contains(&"POST /v1/referrals/{id}/contacted".to_owned()),
        "{endpoints:?}"
    );
}
