//! The referral endpoints through the real router: the pre-check, submission with
//! duplicate detection, the board, past states, and the pipeline up to the payouts of
//! reached milestones.

mod common;

use axum::http::{header, Method, StatusCode};
use chrono::{DateTime, Utc};
use common::{catch_up, Reply, TestAgency, TestApi};
use referrals_domain::ids::UserId;
use referrals_domain::role::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// An agency with a recruiter, a program paying on hire and at 160 hours, and an
/// ambassador.
struct Setup {
    api: TestApi,
    agency: TestAgency,
    recruiter_id: UserId,
    token: String,
    program_id: String,
    ambassador_id: String,
}

async fn setup(pool: &PgPool) -> Setup {
    let api = TestApi::new(pool);
    let agency = api.agency().await;
    let (recruiter_id, token) = api.user(&agency, &[Role::Recruiter]).await;
    let program_id = create_program(&api, &agency).await;
    let ambassador_id = enroll(&api, &token, "amb@example.com").await;
    Setup {
        api,
        agency,
        recruiter_id,
        token,
        program_id,
        ambassador_id,
    }
}

async fn create_program(api: &TestApi, agency: &TestAgency) -> String {
    let body = json!({
        "name": "Warehouse referrals",
        "terms": {"bonus_schedule": [
            {"trigger": "hired", "threshold": 0, "amount": 10000},
            {"trigger": "hours_worked", "threshold": 160, "amount": 50000}
        ]}
    });
    let reply = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    id_of(&reply)
}

async fn enroll(api: &TestApi, token: &str, email: &str) -> String {
    let body = json!({"name": "Avery Ambassador", "email": email, "kind": "field_worker"});
    let reply = api
        .call(Method::POST, "/v1/ambassadors", Some(token), Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    id_of(&reply)
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap().to_owned()
}

fn referral_body(program_id: &str, ambassador_id: &str, email: &str) -> Value {
    json!({
        "program_id": program_id,
        "ambassador_id": ambassador_id,
        "candidate": {"name": "Casey Candidate", "email": email},
        "job_reference": "Forklift driver, night shift",
        "note": "Worked with Avery at the depot"
    })
}

impl Setup {
    fn body(&self, email: &str) -> Value {
        referral_body(&self.program_id, &self.ambassador_id, email)
    }

    async fn submit(&self, email: &str) -> Reply {
        self.call(Method::POST, "/v1/referrals", Some(self.body(email)))
            .await
    }

    async fn submitted(&self, email: &str) -> String {
        let reply = self.submit(email).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        id_of(&reply)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.api.call(method, path, Some(&self.token), body).await
    }

    async fn step(&self, id: &str, step: &str, body: Option<Value>) -> Reply {
        self.call(Method::POST, &format!("/v1/referrals/{id}/{step}"), body)
            .await
    }

    async fn events(&self, aggregate_type: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = $1 AND agency_id = $2",
        )
        .bind(aggregate_type)
        .bind(self.agency.agency_id.0)
        .fetch_one(&self.api.pool)
        .await
        .unwrap()
    }
}

fn assert_problem(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(reply.body["code"], code, "{}", reply.body);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn submit_returns_the_referral(pool: PgPool) {
    let setup = setup(&pool).await;

    let mut body = setup.body(" Casey@Example.com ");
    body["candidate"]["phone"] = json!("+44 20 7946 0958");

    let reply = setup.call(Method::POST, "/v1/referrals", Some(body)).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = id_of(&reply);
    assert_eq!(reply.headers[header::ETAG], "\"1\"");
    assert_eq!(
        reply.headers[header::LOCATION],
        format!("/v1/referrals/{id}")
    );
    let body = &reply.body;
    assert_eq!(body["status"], "submitted");
    assert_eq!(
        body["eligibility"],
        json!({"eligible": true, "reason": null})
    );
    assert_eq!(body["duplicate_of"], Value::Null);
    assert_eq!(
        body["candidate"],
        json!({"name": "Casey Candidate", "email": "casey@example.com", "phone": "+442079460958", "erased": false})
    );
    assert_eq!(body["note"], "Worked with Avery at the depot");
    assert_eq!(body["job_reference"], "Forklift driver, night shift");
    assert_eq!(body["program_id"], setup.program_id.as_str());
    assert_eq!(body["ambassador_id"], setup.ambassador_id.as_str());
    assert_eq!(body["hours_total"], "0.00");
    assert_eq!(body["milestones_reached"], json!([]));
    assert_eq!(body["terms_version"], 1);
    assert_eq!(body["version"], 1);
    let payload: String = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_type = 'referral' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!payload.contains("Casey"), "{payload}");
    assert!(!payload.contains("casey@example.com"), "{payload}");
    assert!(!payload.contains("depot"), "{payload}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn second_referral_of_a_candidate_is_a_duplicate(pool: PgPool) {
    let setup = setup(&pool).await;
    let other_ambassador = enroll(&setup.api, &setup.token, "other@example.com").await;
    let first = setup.submitted("casey@example.com").await;

    let reply = setup
        .call(
            Method::POST,
            "/v1/referrals",
            Some(referral_body(
                &setup.program_id,
                &other_ambassador,
                "CASEY@example.com",
            )),
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["status"], "duplicate");
    assert_eq!(reply.body["duplicate_of"], first.as_str());
    assert_eq!(
        reply.body["eligibility"],
        json!({"eligible": false, "reason": "duplicate"})
    );
    let owner: Uuid = sqlx::query_scalar(
        "SELECT DISTINCT referral_id FROM candidate_claims WHERE agency_id = $1",
    )
    .bind(setup.agency.agency_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(owner.to_string(), first);
    assert_eq!(setup.events("referral").await, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn self_referral_is_rejected(pool: PgPool) {
    let setup = setup(&pool).await;

    let reply = setup.submit("AMB@example.com").await;
    let check = setup
        .call(
            Method::POST,
            "/v1/referrals/eligibility-check",
            Some(setup.body("amb@example.com")),
        )
        .await;

    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "self_referral");
    assert_problem(&check, StatusCode::UNPROCESSABLE_ENTITY, "self_referral");
    assert_eq!(setup.events("referral").await, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn eligibility_check_has_no_side_effects(pool: PgPool) {
    let setup = setup(&pool).await;
    let claims = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM candidate_claims")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let all_events = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let data_keys = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM data_keys")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let events_before = all_events().await;
    let data_keys_before = data_keys().await;

    let fresh = setup
        .call(
            Method::POST,
            "/v1/referrals/eligibility-check",
            Some(setup.body("casey@example.com")),
        )
        .await;

    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    assert_eq!(fresh.body, json!({"eligible": true, "reason": null}));
    assert_eq!(all_events().await, events_before);
    assert_eq!(claims().await, 0);
    assert_eq!(data_keys().await, data_keys_before);

    let owner = setup.submitted("casey@example.com").await;
    let events_after_submit = all_events().await;
    let claims_after_submit = claims().await;
    let taken = setup
        .call(
            Method::POST,
            "/v1/referrals/eligibility-check",
            Some(setup.body("casey@example.com")),
        )
        .await;

    assert_eq!(taken.status, StatusCode::OK, "{}", taken.body);
    assert_eq!(
        taken.body,
        json!({"eligible": false, "reason": "duplicate"})
    );
    assert!(!taken.body.to_string().contains(&owner), "{}", taken.body);
    assert_eq!(all_events().await, events_after_submit);
    assert_eq!(claims().await, claims_after_submit);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_filters_and_pages(pool: PgPool) {
    let setup = setup(&pool).await;
    let other_ambassador = enroll(&setup.api, &setup.token, "other@example.com").await;
    let mut mine = Vec::new();
    for n in 0..3 {
        mine.push(setup.submitted(&format!("mine{n}@example.com")).await);
    }
    for n in 0..2 {
        let reply = setup
            .call(
                Method::POST,
                "/v1/referrals",
                Some(referral_body(
                    &setup.program_id,
                    &other_ambassador,
                    &format!("theirs{n}@example.com"),
                )),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let contacted = setup.step(&mine[0], "contacted", None).await;
    assert_eq!(contacted.status, StatusCode::OK, "{}", contacted.body);
    let assigned = setup
        .step(
            &mine[1],
            "assign",
            Some(json!({"recruiter_id": setup.recruiter_id.0})),
        )
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
    catch_up(&pool).await;

    let mut pages = Vec::new();
    let mut path = format!(
        "/v1/referrals?ambassador_id={}&limit=1",
        setup.ambassador_id
    );
    loop {
        let page = setup.call(Method::GET, &path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages.push(page.body.clone());
        match page.body["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!(
                    "/v1/referrals?ambassador_id={}&limit=1&cursor={cursor}",
                    setup.ambassador_id
                )
            }
            None => break,
        }
        assert!(pages.len() <= 3, "more pages than referrals");
    }
    let listed: Vec<&str> = pages
        .iter()
        .map(|page| page["items"][0]["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = mine.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(pages[2]["items"][0]["candidate_name"], "Casey Candidate");

    let by_status = setup
        .call(Method::GET, "/v1/referrals?status=contacted", None)
        .await;
    let by_recruiter = setup
        .call(
            Method::GET,
            &format!("/v1/referrals?recruiter_id={}", setup.recruiter_id.0),
            None,
        )
        .await;
    let by_program = setup
        .call(
            Method::GET,
            &format!("/v1/referrals?program_id={}", setup.program_id),
            None,
        )
        .await;
    let everything = setup.call(Method::GET, "/v1/referrals", None).await;

    assert_eq!(by_status.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_status.body["items"][0]["id"], mine[0].as_str());
    assert!(by_status.body["items"][0]["contacted_at"].is_string());
    assert_eq!(by_recruiter.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_recruiter.body["items"][0]["id"], mine[1].as_str());
    assert_eq!(by_program.body["items"].as_array().unwrap().len(), 5);
    assert_eq!(everything.body["items"].as_array().unwrap().len(), 5);
    assert_eq!(everything.body["next_cursor"], Value::Null);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_rejects_bad_filters(pool: PgPool) {
    let setup = setup(&pool).await;

    for (query, code, field) in [
        ("status=pending", "invalid_status", Some("status")),
        ("program_id=42", "invalid_id", Some("program_id")),
        ("ambassador_id=x", "invalid_id", Some("ambassador_id")),
        ("recruiter_id=", "invalid_id", Some("recruiter_id")),
        ("cursor=abc", "invalid_cursor", Some("cursor")),
        ("limit=-1", "invalid_limit", Some("limit")),
        ("limit=1.5", "invalid_query", None),
    ] {
        let reply = setup
            .call(Method::GET, &format!("/v1/referrals?{query}"), None)
            .await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, code);
        assert_eq!(reply.body["field"].as_str(), field, "{query}");
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn pipeline_to_160_hours_requests_payouts(pool: PgPool) {
    let setup = setup(&pool).await;
    let id = setup.submitted("casey@example.com").await;

    let assigned = setup
        .step(
            &id,
            "assign",
            Some(json!({"recruiter_id": setup.recruiter_id.0})),
        )
        .await;
    let contacted = setup.step(&id, "contacted", None).await;
    let interviewing = setup.step(&id, "interviewing", None).await;
    let hired = setup
        .step(
            &id,
            "hire",
            Some(json!({
                "start_date": "2026-01-05",
                "job_title": "Forklift driver",
                "client_name": "Northside Logistics",
                "external_worker_id": "W-778"
            })),
        )
        .await;
    let mut last = None;
    for (week_ending, hours) in [
        ("2026-01-11", json!("40")),
        ("2026-01-18", json!(40)),
        ("2026-01-25", json!(37.5)),
        ("2026-02-01", json!("42.50")),
    ] {
        let reply = setup
            .step(
                &id,
                "hours",
                Some(json!({"week_ending": week_ending, "hours": hours})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        last = Some(reply);
    }
    let last = last.unwrap();

    assert_eq!(
        assigned.body["recruiter_id"],
        setup.recruiter_id.0.to_string()
    );
    assert_eq!(contacted.body["status"], "contacted");
    assert_eq!(interviewing.body["status"], "interviewing");
    assert_eq!(hired.status, StatusCode::OK, "{}", hired.body);
    assert_eq!(hired.body["status"], "hired");
    assert_eq!(
        hired.body["placement"]["client_name"],
        "Northside Logistics"
    );
    assert_eq!(
        hired.body["milestones_reached"][0]["key"],
        "hired:0.00:ambassador"
    );
    assert_eq!(last.body["hours_total"], "160.00");
    assert_eq!(last.body["status"], "completed");
    assert_eq!(last.body["milestones_reached"].as_array().unwrap().len(), 2);
    assert_eq!(
        last.body["milestones_reached"][1]["key"],
        "hours_worked:160.00:ambassador"
    );
    assert_eq!(
        last.body["milestones_reached"][1]["reached_on"],
        "2026-02-01"
    );
    assert_eq!(last.body["milestones_reached"][1]["payable"], true);
    assert_eq!(
        last.headers[header::ETAG],
        format!("\"{}\"", last.body["version"])
    );
    let payouts: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, payload::text FROM events
          WHERE aggregate_type = 'payout' AND agency_id = $1 ORDER BY position",
    )
    .bind(setup.agency.agency_id.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(payouts.len(), 2);
    assert!(payouts
        .iter()
        .all(|(event_type, _)| event_type == "PayoutRequested"));
    assert!(payouts[0].1.contains("10000"), "{}", payouts[0].1);
    assert!(payouts[1].1.contains("50000"), "{}", payouts[1].1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn hours_are_corrected_not_added(pool: PgPool) {
    let setup = setup(&pool).await;
    let id = setup.submitted("casey@example.com").await;
    let hired = setup
        .step(
            &id,
            "hire",
            Some(
                json!({"start_date": "2026-01-05", "job_title": "Picker", "client_name": "Depot"}),
            ),
        )
        .await;
    assert_eq!(hired.status, StatusCode::OK, "{}", hired.body);

    setup
        .step(
            &id,
            "hours",
            Some(json!({"week_ending": "2026-01-11", "hours": 30})),
        )
        .await;
    let corrected = setup
        .step(
            &id,
            "hours",
            Some(json!({"week_ending": "2026-01-11", "hours": "32.25"})),
        )
        .await;

    assert_eq!(corrected.status, StatusCode::OK, "{}", corrected.body);
    assert_eq!(corrected.body["hours_total"], "32.25");
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events
          WHERE aggregate_type = 'referral' AND aggregate_id = $1 AND event_type LIKE 'Hours%'
          ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kinds, ["HoursRecorded", "HoursCorrected"]);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn stale_if_match_is_a_conflict(pool: PgPool) {
    let setup = setup(&pool).await;
    let id = setup.submitted("casey@example.com").await;
    let path = format!("/v1/referrals/{id}/contacted");

    let stale = setup
        .api
        .send(
            Method::POST,
            &path,
            Some(&setup.token),
            None,
            &[("If-Match", "\"7\"")],
        )
        .await;
    let current = setup
        .api
        .send(
            Method::POST,
            &path,
            Some(&setup.token),
            None,
            &[("If-Match", "\"1\"")],
        )
        .await;
    let again = setup.step(&id, "contacted", None).await;

    assert_problem(&stale, StatusCode::CONFLICT, "version_conflict");
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    assert_eq!(current.headers[header::ETAG], "\"2\"");
    assert_problem(&again, StatusCode::CONFLICT, "invalid_transition");
    assert_eq!(setup.events("referral").await, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn past_state_by_time_and_version(pool: PgPool) {
    let setup = setup(&pool).await;
    let id = setup.submitted("casey@example.com").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let contacted = setup.step(&id, "contacted", None).await;
    assert_eq!(contacted.status, StatusCode::OK, "{}", contacted.body);
    let times: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT recorded_at FROM events
          WHERE aggregate_type = 'referral' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let between = times[0] + (times[1] - times[0]) / 2;
    let read = |query: String| {
        let path = format!("/v1/referrals/{id}?{query}");
        let setup = &setup;
        async move { setup.call(Method::GET, &path, None).await }
    };

    // An unencoded `+` arrives as a space; the API reads it as the offset sign.
    let at_between = read(format!("as_of={}", between.to_rfc3339())).await;
    let at_first = read(format!(
        "as_of={}",
        times[0].to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    ))
    .await;
    let version_one = read("version=1".to_owned()).await;
    let version_two = read("version=2".to_owned()).await;
    let current = read(String::new()).await;

    for reply in [&at_between, &at_first, &version_one] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["status"], "submitted");
        assert_eq!(reply.body["version"], 1);
        assert_eq!(reply.headers[header::ETAG], "\"1\"");
        assert_eq!(reply.body["candidate"]["name"], "Casey Candidate");
    }
    assert_eq!(version_two.body["status"], "contacted");
    assert_eq!(version_two.headers[header::ETAG], "\"2\"");
    assert_eq!(current.body, version_two.body);

    let before = read(format!(
        "as_of={}",
        (times[0] - chrono::Duration::seconds(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ))
    .await;
    let unknown_version = read("version=3".to_owned()).await;
    let both = read("version=1&as_of=2026-01-01T00:00:00Z".to_owned()).await;
    let bad_time = read("as_of=yesterday".to_owned()).await;
    let bad_version = read("version=0".to_owned()).await;

    assert_problem(&before, StatusCode::NOT_FOUND, "not_found");
    assert_problem(&unknown_version, StatusCode::NOT_FOUND, "not_found");
    assert_problem(&both, StatusCode::BAD_REQUEST, "conflicting_parameters");
    assert_problem(&bad_time, StatusCode::BAD_REQUEST, "invalid_as_of");
    assert_eq!(bad_time.body["field"], "as_of");
    assert_problem(&bad_version, StatusCode::BAD_REQUEST, "invalid_version");
    assert_eq!(bad_version.body["field"], "version");
}

/// Lists every referral endpoint with a valid body, for the referral `id`.
fn every_endpoint(setup: &Setup, id: &str) -> Vec<(Method, String, Option<Value>)> {
    let reason = Some(json!({"reason": "Candidate took another offer"}));
    vec![
        (
            Method::POST,
            "/v1/referrals/eligibility-check".to_owned(),
            Some(setup.body("new@example.com")),
        ),
        (
            Method::POST,
            "/v1/referrals".to_owned(),
            Some(setup.body("new@example.com")),
        ),
        (Method::GET, format!("/v1/referrals/{id}"), None),
        (Method::GET, format!("/v1/referrals/{id}?version=1"), None),
        (
            Method::POST,
            format!("/v1/referrals/{id}/assign"),
            Some(json!({"recruiter_id": setup.recruiter_id.0})),
        ),
        (Method::POST, format!("/v1/referrals/{id}/contacted"), None),
        (
            Method::POST,
            format!("/v1/referrals/{id}/interviewing"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/referrals/{id}/hire"),
            Some(
                json!({"start_date": "2026-01-05", "job_title": "Picker", "client_name": "Depot"}),
            ),
        ),
        (
            Method::POST,
            format!("/v1/referrals/{id}/hours"),
            Some(json!({"week_ending": "2026-01-11", "hours": 8})),
        ),
        (
            Method::POST,
            format!("/v1/referrals/{id}/placement-end"),
            Some(json!({"end_date": "2026-02-01", "reason": "Contract ended"})),
        ),
        (
            Method::POST,
            format!("/v1/referrals/{id}/decline"),
            reason.clone(),
        ),
        (Method::POST, format!("/v1/referrals/{id}/withdraw"), reason),
    ]
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn another_agency_sees_not_found(pool: PgPool) {
    let owner = setup(&pool).await;
    let id = owner.submitted("casey@example.com").await;
    let stranger = owner.api.agency().await;
    let (_, stranger_token) = owner.api.user(&stranger, &[Role::Recruiter]).await;
    let events_before = owner.events("referral").await;
    catch_up(&pool).await;

    for (method, path, body) in every_endpoint(&owner, &id) {
        let reply = owner
            .api
            .call(method.clone(), &path, Some(&stranger_token), body)
            .await;
        assert_problem(&reply, StatusCode::NOT_FOUND, "not_found");
        assert!(
            !reply.body.to_string().contains("Casey"),
            "{method} {path}: {}",
            reply.body
        );
    }
    let board = owner
        .api
        .call(Method::GET, "/v1/referrals", Some(&stranger_token), None)
        .await;

    assert_eq!(board.body["items"], json!([]));
    assert_eq!(owner.events("referral").await, events_before);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn only_recruiters_handle_referrals(pool: PgPool) {
    let setup = setup(&pool).await;
    let id = setup.submitted("casey@example.com").await;
    let (_, analyst) = setup.api.user(&setup.agency, &[Role::Analyst]).await;
    let mut endpoints = every_endpoint(&setup, &id);
    endpoints.push((Method::GET, "/v1/referrals".to_owned(), None));

    for (method, path, body) in endpoints {
        let reply = setup
            .api
            .call(method.clone(), &path, Some(&analyst), body)
            .await;
        assert_problem(&reply, StatusCode::FORBIDDEN, "forbidden");
        assert!(!reply.body.to_string().contains("Casey"), "{method} {path}");
    }
    assert_eq!(setup.events("referral").await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn malformed_submissions_name_the_field(pool: PgPool) {
    let setup = setup(&pool).await;
    let with = |pointer: &str, value: Value| {
        let mut body = setup.body("casey@example.com");
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    let cases = [
        (
            with("/candidate/email", json!("casey.example.com")),
            "invalid_value",
            "candidate.email",
        ),
        (
            with("/candidate", json!({"name": "Casey", "phone": "12"})),
            "invalid_value",
            "candidate.phone",
        ),
        (
            with("/candidate/name", json!("Casey\u{0}")),
            "invalid_value",
            "candidate.name",
        ),
        (
            with("/candidate/name", json!(["Casey"])),
            "invalid_body",
            "candidate.name",
        ),
        (
            with("/note", json!("SSN 123-45-6789")),
            "invalid_value",
            "note",
        ),
        (
            with("/note", json!("card 4111 1111 1111 1111")),
            "invalid_value",
            "note",
        ),
        (
            with("/job_reference", json!("a\u{0}b")),
            "invalid_value",
            "job_reference",
        ),
        (
            with("/program_id", json!("not-a-uuid")),
            "invalid_body",
            "program_id",
        ),
        (
            with("/ambassador_id", json!(17)),
            "invalid_body",
            "ambassador_id",
        ),
        (
            with("/candidate", json!({"name": "Casey", "age": 30})),
            "invalid_body",
            "candidate.age",
        ),
        (
            with("/candidate", json!({"name": "Casey"})),
            "candidate_contact_missing",
            "",
        ),
    ];

    for (body, code, field) in cases {
        for path in ["/v1/referrals", "/v1/referrals/eligibility-check"] {
            let reply = setup.call(Method::POST, path, Some(body.clone())).await;
            assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, code);
            assert_eq!(reply.body["field"].as_str().unwrap_or(""), field, "{path}");
            assert!(!reply.body.to_string().contains("Casey"), "{}", reply.body);
        }
    }
    let huge = setup
        .call(
            Method::POST,
            "/v1/referrals",
            Some(with("/note", json!("n".repeat(10 * 1024 * 1024)))),
        )
        .await;
    let unknown_program = setup
        .call(
            Method::POST,
            "/v1/referrals",
            Some(with("/program_id", json!(Uuid::now_v7()))),
        )
        .await;

    assert_problem(&huge, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_problem(&unknown_program, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(setup.events("referral").await, 0);
}

/// A Social Security number and a Luhn-valid card number, each inside a sentence.
const SENSITIVE_TEXTS: [&str; 2] = [
    "Candidate gave SSN 123-45-6789 on the phone",
    "Paid the fee with card 4111 1111 1111 1111",
];

/// Asserts a 422 that names `field` and whose message asks the user to leave such numbers
/// out.
fn assert_sensitive_rejected(reply: &Reply, field: &str, context: &str) {
    assert_problem(reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(
        reply.body["field"],
        json!(field),
        "{context}: {}",
        reply.body
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("must not be entered here"),
        "{context}: the message does not tell the user to leave the number out: {detail}"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sensitive_numbers_rejected_in_reasons(pool: PgPool) {
    let setup = setup(&pool).await;
    let mut ordinary = setup.body("casey@example.com");
    ordinary["note"] = json!("Call back at 555-0123, shift 3");
    let accepted = setup
        .call(Method::POST, "/v1/referrals", Some(ordinary))
        .await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);
    assert_eq!(
        accepted.body["note"],
        json!("Call back at 555-0123, shift 3"),
        "{}",
        accepted.body
    );
    let submitted = id_of(&accepted);
    let hired = setup.submitted("drew@example.com").await;
    let hire = json!({"start_date": "2026-01-05", "job_title": "Picker", "client_name": "Depot"});
    let reply = setup.step(&hired, "hire", Some(hire)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let events_before = setup.events("referral").await;

    for text in SENSITIVE_TEXTS {
        let mut body = setup.body("erin@example.com");
        body["note"] = json!(text);
        let reply = setup.call(Method::POST, "/v1/referrals", Some(body)).await;
        assert_sensitive_rejected(&reply, "note", "submit");
        for step in ["decline", "withdraw"] {
            let reply = setup
                .step(&submitted, step, Some(json!({"reason": text})))
                .await;
            assert_sensitive_rejected(&reply, "reason", step);
        }
        let end = json!({"end_date": "2026-02-06", "reason": text});
        let reply = setup.step(&hired, "placement-end", Some(end)).await;
        assert_sensitive_rejected(&reply, "reason", "placement-end");
    }
    assert_eq!(setup.events("referral").await, events_before);

    let declined = setup
        .step(
            &submitted,
            "decline",
            Some(json!({"reason": "Needs 2 references; has 1"})),
        )
        .await;
    assert_eq!(declined.status, StatusCode::OK, "{}", declined.body);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn malformed_commands_name_the_field(pool: PgPool) {
    let setup = setup(&pool).await;
    let id = setup.submitted("casey@example.com").await;
    let hired = setup
        .step(
            &id,
            "hire",
            Some(
                json!({"start_date": "2026-01-05", "job_title": "Picker", "client_name": "Depot"}),
            ),
        )
        .await;
    assert_eq!(hired.status, StatusCode::OK, "{}", hired.body);
    let events_before = setup.events("referral").await;
    let cases = [
        (
            "hours",
            json!({"week_ending": "2026-01-11", "hours": -4}),
            "invalid_body",
            "hours",
        ),
        (
            "hours",
            json!({"week_ending": "2026-01-11", "hours": "-4"}),
            "invalid_body",
            "hours",
        ),
        (
            "hours",
            json!({"week_ending": "2026-01-11", "hours": "8.125"}),
            "invalid_body",
            "hours",
        ),
        (
            "hours",
            json!({"week_ending": "2026-01-11", "hours": 8.125}),
            "invalid_body",
            "hours",
        ),
        (
            "hours",
            json!({"week_ending": "2026-01-11", "hours": 200}),
            "invalid_value",
            "hours",
        ),
        (
            "hours",
            json!({"week_ending": "11/01/2026", "hours": 8}),
            "invalid_body",
            "week_ending",
        ),
        (
            "hours",
            json!({"week_ending": "2025-12-28", "hours": 8}),
            "invalid_value",
            "week_ending",
        ),
        (
            "hours",
            json!({"week_ending": "2026-01-11"}),
            "invalid_body",
            "",
        ),
        (
            "placement-end",
            json!({"end_date": "2026-02-01", "reason": ""}),
            "invalid_value",
            "reason",
        ),
        (
            "placement-end",
            json!({"end_date": "2025-01-01", "reason": "Ended"}),
            "invalid_value",
            "end_date",
        ),
        (
            "assign",
            json!({"recruiter_id": Uuid::now_v7()}),
            "unknown_recruiter",
            "recruiter_id",
        ),
        (
            "assign",
            json!({"recruiter_id": setup.agency.admin_id.0}),
            "unknown_recruiter",
            "recruiter_id",
        ),
        (
            "decline",
            json!({"reason": "nope", "extra": true}),
            "invalid_body",
            "extra",
        ),
    ];

    for (step, body, code, field) in cases {
        let reply = setup.step(&id, step, Some(body.clone())).await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, code);
        assert_eq!(
            reply.body["field"].as_str().unwrap_or(""),
            field,
            "{step} {body}"
        );
    }
    let bad_id = setup.step("12345", "contacted", None).await;
    let unknown = setup
        .step(&Uuid::now_v7().to_string(), "contacted", None)
        .await;

    assert_problem(&bad_id, StatusCode::BAD_REQUEST, "invalid_id");
    assert_eq!(bad_id.body["field"], "id");
    assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(setup.events("referral").await, events_before);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn withdrawn_referral_frees_nothing_but_ends(pool: PgPool) {
    let setup = setup(&pool).await;
    let id = setup.submitted("casey@example.com").await;

    let withdrawn = setup
        .step(
            &id,
            "withdraw",
            Some(json!({"reason": "Candidate moved away"})),
        )
        .await;
    let declined = setup
        .step(&id, "decline", Some(json!({"reason": "Not a fit"})))
        .await;

    assert_eq!(withdrawn.status, StatusCode::OK, "{}", withdrawn.body);
    assert_eq!(withdrawn.body["status"], "withdrawn");
    assert_problem(&declined, StatusCode::CONFLICT, "invalid_transition");
    assert_eq!(setup.events("referral").await, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn openapi_describes_every_endpoint(pool: PgPool) {
    let api = TestApi::new(&pool);

    let reply = api.call(Method::GET, "/openapi.json", None, None).await;

    assert_eq!(reply.status, StatusCode::OK);
    let document = &reply.body;
    for (method, path) in [
        ("post", "/v1/programs"),
        ("get", "/v1/programs"),
        ("get", "/v1/programs/{id}"),
        ("put", "/v1/programs/{id}/terms"),
        ("post", "/v1/programs/{id}/close"),
        ("post", "/v1/ambassadors"),
        ("get", "/v1/ambassadors"),
        ("get", "/v1/ambassadors/{id}"),
        ("patch", "/v1/ambassadors/{id}"),
        ("post", "/v1/ambassadors/{id}/deactivate"),
        ("post", "/v1/referrals/eligibility-check"),
        ("post", "/v1/referrals"),
        ("get", "/v1/referrals"),
        ("get", "/v1/referrals/{id}"),
        ("post", "/v1/referrals/{id}/assign"),
        ("post", "/v1/referrals/{id}/contacted"),
        ("post", "/v1/referrals/{id}/interviewing"),
        ("post", "/v1/referrals/{id}/hire"),
        ("post", "/v1/referrals/{id}/hours"),
        ("post", "/v1/referrals/{id}/placement-end"),
        ("post", "/v1/referrals/{id}/decline"),
        ("post", "/v1/referrals/{id}/withdraw"),
    ] {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not described");
        assert_eq!(
            operation["security"],
            json!([{"bearer": []}]),
            "{method} {path}"
        );
        for status in ["200", "401", "403"] {
            let described = operation["responses"][status].is_object()
                || (status == "200" && operation["responses"]["201"].is_object());
            assert!(described, "{method} {path} does not describe {status}");
        }
    }
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            document["components"]["schemas"][name].is_object(),
            "schema {name} is referenced but not defined"
        );
    }
}
