//! The program endpoints through the real router: create, read, list, revise and close,
//! with the tenancy, role and input rules that apply to each.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{catch_up, Reply, TestAgency, TestApi};
use referrals_domain::role::Role;
use serde_json::{json, Value};
use sqlx::PgPool;

fn terms() -> Value {
    json!({
        "bonus_schedule": [
            {"trigger": "hired", "threshold": 0, "amount": 10000},
            {"trigger": "hours_worked", "threshold": "160", "amount": 50000}
        ]
    })
}

fn program_body(name: &str) -> Value {
    json!({"name": name, "terms": terms()})
}

async fn create_program(api: &TestApi, agency: &TestAgency, name: &str) -> Value {
    let reply = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(program_body(name)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body
}

fn assert_problem(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(reply.body["code"], code, "{}", reply.body);
}

async fn program_events(pool: &PgPool, agency: &TestAgency) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'program' AND agency_id = $1",
    )
    .bind(agency.agency_id.0)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn create_program_fills_defaults(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;

    let reply = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(program_body("  Warehouse referrals ")),
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.headers[header::ETAG], "\"1\"");
    assert_eq!(
        reply.headers[header::LOCATION],
        format!("/v1/programs/{id}")
    );
    let body = &reply.body;
    assert_eq!(body["version"], 1);
    assert_eq!(body["name"], "Warehouse referrals");
    assert_eq!(body["currency"], "USD");
    assert_eq!(body["terms_version"], 1);
    assert_eq!(body["open"], true);
    assert_eq!(body["terms"]["attribution_window_days"], 180);
    assert_eq!(body["terms"]["hire_deadline_days"], 180);
    assert_eq!(body["terms"]["prior_contact_lookback_days"], 365);
    assert_eq!(
        body["terms"]["eligible_ambassador_kinds"],
        json!(["field_worker", "former_worker", "external"])
    );
    assert_eq!(body["terms"]["annual_bonus_cap"], Value::Null);
    assert_eq!(body["terms"]["referrer_must_be_active"], false);
    assert_eq!(
        body["terms"]["bonus_schedule"][1],
        json!({"trigger": "hours_worked", "threshold": "160.00", "amount": 50000, "recipient": "ambassador"})
    );
    assert_eq!(program_events(&pool, &agency).await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn create_program_keeps_given_terms(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let body = json!({
        "name": "Two-sided",
        "currency": "EUR",
        "terms": {
            "bonus_schedule": [
                {"trigger": "days_employed", "threshold": 90, "amount": 25000, "recipient": "candidate"}
            ],
            "attribution_window_days": 90,
            "prior_contact_lookback_days": 30,
            "eligible_ambassador_kinds": ["external"],
            "annual_bonus_cap": 3,
            "guarantee_days": 60,
            "referrer_must_be_active": true
        }
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
    let terms = &reply.body["terms"];
    assert_eq!(reply.body["currency"], "EUR");
    assert_eq!(terms["attribution_window_days"], 90);
    assert_eq!(
        terms["hire_deadline_days"], 90,
        "the deadline follows the window"
    );
    assert_eq!(terms["prior_contact_lookback_days"], 30);
    assert_eq!(terms["eligible_ambassador_kinds"], json!(["external"]));
    assert_eq!(terms["annual_bonus_cap"], 3);
    assert_eq!(terms["guarantee_days"], 60);
    assert_eq!(terms["referrer_must_be_active"], true);
    assert_eq!(terms["bonus_schedule"][0]["recipient"], "candidate");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn get_program_reads_its_own_write(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, recruiter) = api.user(&agency, &[Role::Recruiter]).await;
    let created = create_program(&api, &agency, "Drivers").await;
    let path = format!("/v1/programs/{}", created["id"].as_str().unwrap());

    let reply = api.call(Method::GET, &path, Some(&recruiter), None).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers[header::ETAG], "\"1\"");
    assert_eq!(reply.body, created);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn list_programs_pages_with_a_cursor(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let other = api.agency().await;
    for name in ["First", "Second", "Third"] {
        create_program(&api, &agency, name).await;
    }
    create_program(&api, &other, "Another agency's").await;
    catch_up(&pool).await;

    let first = api
        .call(
            Method::GET,
            "/v1/programs?limit=2",
            Some(&agency.admin_token),
            None,
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = api
        .call(
            Method::GET,
            &format!("/v1/programs?limit=2&cursor={cursor}"),
            Some(&agency.admin_token),
            None,
        )
        .await;

    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let names: Vec<&str> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["items"].as_array().unwrap())
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["First", "Second", "Third"]);
    assert_eq!(second.body["next_cursor"], Value::Null);
    assert_eq!(
        first.body["items"][0]["terms"]["bonus_schedule"][0]["trigger"],
        "hired"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn list_programs_rejects_bad_paging(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=501", "invalid_limit"),
        ("limit=ten", "invalid_query"),
        ("cursor=not-a-cursor", "invalid_cursor"),
    ] {
        let reply = api
            .call(
                Method::GET,
                &format!("/v1/programs?{query}"),
                Some(&agency.admin_token),
                None,
            )
            .await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, code);
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn revise_terms_adds_a_version(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let created = create_program(&api, &agency, "Drivers").await;
    let path = format!("/v1/programs/{}/terms", created["id"].as_str().unwrap());
    let revised = json!({
        "bonus_schedule": [{"trigger": "hours_worked", "threshold": 200, "amount": 75000}]
    });

    let reply = api
        .send(
            Method::PUT,
            &path,
            Some(&agency.admin_token),
            Some(revised.clone()),
            &[("If-Match", "\"1\"")],
        )
        .await;
    let stale = api
        .send(
            Method::PUT,
            &path,
            Some(&agency.admin_token),
            Some(revised),
            &[("If-Match", "\"1\"")],
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers[header::ETAG], "\"2\"");
    assert_eq!(reply.body["terms_version"], 2);
    assert_eq!(
        reply.body["terms"]["bonus_schedule"][0]["threshold"],
        "200.00"
    );
    assert_eq!(reply.body["terms"]["bonus_schedule"][0]["amount"], 75000);
    assert_problem(&stale, StatusCode::CONFLICT, "version_conflict");
    assert_eq!(program_events(&pool, &agency).await, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn revise_terms_names_fields_of_the_body(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let created = create_program(&api, &agency, "Drivers").await;
    let path = format!("/v1/programs/{}/terms", created["id"].as_str().unwrap());

    let reply = api
        .call(
            Method::PUT,
            &path,
            Some(&agency.admin_token),
            Some(json!({"bonus_schedule": [{"trigger": "hired", "threshold": 0, "amount": 0}]})),
        )
        .await;

    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(reply.body["field"], "bonus_schedule[0].amount");
    assert_eq!(program_events(&pool, &agency).await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn closed_program_rejects_revisions(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let created = create_program(&api, &agency, "Drivers").await;
    let id = created["id"].as_str().unwrap();

    let closed = api
        .call(
            Method::POST,
            &format!("/v1/programs/{id}/close"),
            Some(&agency.admin_token),
            None,
        )
        .await;
    let closed_again = api
        .call(
            Method::POST,
            &format!("/v1/programs/{id}/close"),
            Some(&agency.admin_token),
            None,
        )
        .await;
    let revised = api
        .call(
            Method::PUT,
            &format!("/v1/programs/{id}/terms"),
            Some(&agency.admin_token),
            Some(terms()),
        )
        .await;

    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["open"], false);
    assert_eq!(closed.headers[header::ETAG], "\"2\"");
    assert_eq!(closed_again.status, StatusCode::OK, "{}", closed_again.body);
    assert_eq!(closed_again.headers[header::ETAG], "\"2\"");
    assert_problem(&revised, StatusCode::CONFLICT, "program_closed");
    assert_eq!(program_events(&pool, &agency).await, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn create_program_rejects_malformed_input(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let milestone = |amount: Value, threshold: Value| {
        json!({"name": "Drivers", "terms": {"bonus_schedule": [
            {"trigger": "hours_worked", "threshold": threshold, "amount": amount}
        ]}})
    };
    let cases = [
        (
            milestone(json!(500.5), json!(160)),
            "invalid_body",
            "terms.bonus_schedule[0].amount",
        ),
        (
            milestone(json!(-1), json!(160)),
            "invalid_value",
            "terms.bonus_schedule[0].amount",
        ),
        (
            milestone(json!(100), json!("160.125")),
            "invalid_body",
            "terms.bonus_schedule[0].threshold",
        ),
        (
            milestone(json!(100), json!(-5)),
            "invalid_body",
            "terms.bonus_schedule[0].threshold",
        ),
        (
            json!({"name": "Drivers", "terms": {"bonus_schedule": []}}),
            "invalid_value",
            "terms.bonus_schedule",
        ),
        (
            json!({"name": "Drivers", "terms": terms(), "colour": "red"}),
            "invalid_body",
            "colour",
        ),
        (
            json!({"name": "Drivers", "currency": "usd", "terms": terms()}),
            "invalid_value",
            "currency",
        ),
        (
            json!({"name": "Night\u{0}shift", "terms": terms()}),
            "invalid_value",
            "name",
        ),
        (json!({"name": 5, "terms": terms()}), "invalid_body", "name"),
        (
            json!({"name": "Drivers", "terms": {"bonus_schedule": [
                {"trigger": "sunrise", "threshold": 0, "amount": 1}
            ]}}),
            "invalid_body",
            "terms.bonus_schedule[0].trigger",
        ),
        (
            json!({"name": "Drivers", "terms": {"bonus_schedule": [
                {"trigger": "hired", "threshold": 0, "amount": 1}
            ], "eligible_ambassador_kinds": ["agency_staff"]}}),
            "invalid_value",
            "terms.eligible_ambassador_kinds",
        ),
    ];

    for (body, code, field) in cases {
        let reply = api
            .call(
                Method::POST,
                "/v1/programs",
                Some(&agency.admin_token),
                Some(body),
            )
            .await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, code);
        assert_eq!(reply.body["field"], field, "{}", reply.body);
    }
    assert_eq!(program_events(&pool, &agency).await, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn create_program_rejects_unreadable_bodies(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let request = |content_type: &str, body: String| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/programs")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", agency.admin_token),
            )
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };

    let not_json = api
        .raw(request("application/json", "{\"name\": ".to_owned()))
        .await;
    let wrong_type = api
        .raw(request("text/plain", program_body("Drivers").to_string()))
        .await;
    let huge = api
        .raw(request(
            "application/json",
            json!({"name": "x".repeat(10 * 1024 * 1024), "terms": terms()}).to_string(),
        ))
        .await;

    assert_problem(&not_json, StatusCode::BAD_REQUEST, "malformed_json");
    assert_problem(
        &wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_problem(&huge, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(program_events(&pool, &agency).await, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn another_agency_sees_not_found(pool: PgPool) {
    let api = TestApi::new(&pool);
    let owner = api.agency().await;
    let stranger = api.agency().await;
    let created = create_program(&api, &owner, "Drivers").await;
    let id = created["id"].as_str().unwrap();
    catch_up(&pool).await;

    let replies = [
        api.call(
            Method::GET,
            &format!("/v1/programs/{id}"),
            Some(&stranger.admin_token),
            None,
        )
        .await,
        api.call(
            Method::PUT,
            &format!("/v1/programs/{id}/terms"),
            Some(&stranger.admin_token),
            Some(terms()),
        )
        .await,
        api.call(
            Method::POST,
            &format!("/v1/programs/{id}/close"),
            Some(&stranger.admin_token),
            None,
        )
        .await,
    ];
    let list = api
        .call(
            Method::GET,
            "/v1/programs",
            Some(&stranger.admin_token),
            None,
        )
        .await;

    for reply in &replies {
        assert_problem(reply, StatusCode::NOT_FOUND, "not_found");
        assert!(
            !reply.body.to_string().contains("Drivers"),
            "{}",
            reply.body
        );
    }
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["items"], json!([]));
    assert_eq!(program_events(&pool, &owner).await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn roles_decide_who_writes_and_reads(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, analyst) = api.user(&agency, &[Role::Analyst]).await;
    let (_, recruiter) = api.user(&agency, &[Role::Recruiter]).await;
    let created = create_program(&api, &agency, "Drivers").await;
    let id = created["id"].as_str().unwrap();

    for (method, path, body) in [
        (
            Method::POST,
            "/v1/programs".to_owned(),
            Some(program_body("X")),
        ),
        (Method::GET, "/v1/programs".to_owned(), None),
        (Method::GET, format!("/v1/programs/{id}"), None),
        (
            Method::PUT,
            format!("/v1/programs/{id}/terms"),
            Some(terms()),
        ),
        (Method::POST, format!("/v1/programs/{id}/close"), None),
    ] {
        let reply = api.call(method.clone(), &path, Some(&analyst), body).await;
        assert_problem(&reply, StatusCode::FORBIDDEN, "forbidden");
        assert!(reply.body["detail"].is_string(), "{method} {path}");
    }
    let recruiter_creates = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&recruiter),
            Some(program_body("X")),
        )
        .await;
    let recruiter_reads = api
        .call(
            Method::GET,
            &format!("/v1/programs/{id}"),
            Some(&recruiter),
            None,
        )
        .await;
    let anonymous = api.call(Method::GET, "/v1/programs", None, None).await;

    assert_problem(&recruiter_creates, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(recruiter_reads.status, StatusCode::OK);
    assert_problem(&anonymous, StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(program_events(&pool, &agency).await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn invalid_ids_name_the_parameter(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;

    let unknown = api
        .call(
            Method::GET,
            "/v1/programs/0190f6d2-7c4e-7a35-9d4b-2f1e8c3a5b60",
            Some(&agency.admin_token),
            None,
        )
        .await;
    let malformed = api
        .call(
            Method::GET,
            "/v1/programs/not-a-uuid",
            Some(&agency.admin_token),
            None,
        )
        .await;
    let bad_if_match = api
        .send(
            Method::POST,
            "/v1/programs/0190f6d2-7c4e-7a35-9d4b-2f1e8c3a5b60/close",
            Some(&agency.admin_token),
            None,
            &[("If-Match", "yesterday")],
        )
        .await;

    assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");
    assert_problem(&malformed, StatusCode::BAD_REQUEST, "invalid_id");
    assert_eq!(malformed.body["field"], "id");
    assert_problem(&bad_if_match, StatusCode::BAD_REQUEST, "invalid_if_match");
}
