//! The ambassador endpoints through the real router: enroll, read, list, update and
//! deactivate, with contact details decrypted only in responses.

mod common;

use axum::http::{header, Method, StatusCode};
use common::{catch_up, Reply, TestAgency, TestApi};
use referrals_domain::role::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn enrollment(name: &str, email: &str) -> Value {
    json!({
        "name": name,
        "email": email,
        "phone": "(415) 555-0123",
        "kind": "field_worker",
        "external_id": "PAY-1001",
        "sms_consent": true
    })
}

async fn recruiter(api: &TestApi, agency: &TestAgency) -> String {
    api.user(agency, &[Role::Recruiter]).await.1
}

async fn enroll(api: &TestApi, token: &str, name: &str, email: &str) -> Value {
    let reply = api
        .call(
            Method::POST,
            "/v1/ambassadors",
            Some(token),
            Some(enrollment(name, email)),
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

async fn ambassador_events(pool: &PgPool, agency: &TestAgency) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'ambassador' AND agency_id = $1",
    )
    .bind(agency.agency_id.0)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn enroll_returns_opened_contact(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;

    let reply = api
        .call(
            Method::POST,
            "/v1/ambassadors",
            Some(&token),
            Some(enrollment(
                " Dana Whitfield ",
                " Dana.Whitfield@Example.COM ",
            )),
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.headers[header::ETAG], "\"1\"");
    assert_eq!(
        reply.headers[header::LOCATION],
        format!("/v1/ambassadors/{id}")
    );
    assert_eq!(
        reply.body,
        json!({
            "id": id,
            "version": 1,
            "name": "Dana Whitfield",
            "email": "dana.whitfield@example.com",
            "phone": "+14155550123",
            "erased": false,
            "kind": "field_worker",
            "external_id": "PAY-1001",
            "sms_consent": true,
            "active": true
        })
    );
    let payload: String = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_type = 'ambassador' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!payload.contains("Dana"), "{payload}");
    assert!(!payload.contains("example.com"), "{payload}");
    assert!(!payload.contains("5550123"), "{payload}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn read_model_holds_no_plaintext(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let created = enroll(&api, &token, "Dana Whitfield", "dana@example.com").await;
    catch_up(&pool).await;

    let row: String = sqlx::query_scalar(
        "SELECT row_to_json(a)::text FROM read_models.ambassadors a WHERE ambassador_id = $1",
    )
    .bind(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();

    assert!(!row.contains("Dana"), "{row}");
    assert!(!row.contains("dana@example.com"), "{row}");
    assert!(!row.contains("5550123"), "{row}");
    assert!(row.contains("\"name_sealed\":\"v1."), "{row}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn get_ambassador_reads_its_own_write(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let created = enroll(&api, &token, "Dana Whitfield", "dana@example.com").await;

    let reply = api
        .call(
            Method::GET,
            &format!("/v1/ambassadors/{}", created["id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers[header::ETAG], "\"1\"");
    assert_eq!(reply.body, created);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn list_opens_names_and_pages(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let other = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let other_token = recruiter(&api, &other).await;
    for (name, email) in [
        ("Ana Ruiz", "ana@example.com"),
        ("Ben Okafor", "ben@example.com"),
        ("Cleo Park", "cleo@example.com"),
    ] {
        enroll(&api, &token, name, email).await;
    }
    enroll(&api, &other_token, "Outsider", "out@example.com").await;
    catch_up(&pool).await;

    let first = api
        .call(Method::GET, "/v1/ambassadors?limit=2", Some(&token), None)
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = api
        .call(
            Method::GET,
            &format!("/v1/ambassadors?limit=2&cursor={cursor}"),
            Some(&token),
            None,
        )
        .await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let names: Vec<&str> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["items"].as_array().unwrap())
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ana Ruiz", "Ben Okafor", "Cleo Park"]);
    assert_eq!(first.body["items"][0]["email"], "ana@example.com");
    assert_eq!(second.body["next_cursor"], Value::Null);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn erased_ambassador_shows_no_contact(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let created = enroll(&api, &token, "Dana Whitfield", "dana@example.com").await;
    let id = created["id"].as_str().unwrap();
    catch_up(&pool).await;
    sqlx::query(
        "UPDATE data_keys SET wrapped_key = NULL, master_key_id = NULL, destroyed_at = now()
          WHERE subject_id = $1",
    )
    .bind(Uuid::parse_str(id).unwrap())
    .execute(&pool)
    .await
    .unwrap();

    let one = api
        .call(
            Method::GET,
            &format!("/v1/ambassadors/{id}"),
            Some(&token),
            None,
        )
        .await;
    let list = api
        .call(Method::GET, "/v1/ambassadors", Some(&token), None)
        .await;
    let new_contact = api
        .call(
            Method::PATCH,
            &format!("/v1/ambassadors/{id}"),
            Some(&token),
            Some(json!({"email": "again@example.com"})),
        )
        .await;

    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["name"], "[erased]");
    assert_eq!(one.body["email"], Value::Null);
    assert_eq!(one.body["phone"], Value::Null);
    assert_eq!(one.body["erased"], true);
    assert_eq!(list.body["items"][0]["name"], "[erased]");
    assert_problem(&new_contact, StatusCode::CONFLICT, "invalid_transition");
    assert_eq!(ambassador_events(&pool, &agency).await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn update_changes_only_given_fields(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let created = enroll(&api, &token, "Dana Whitfield", "dana@example.com").await;
    let path = format!("/v1/ambassadors/{}", created["id"].as_str().unwrap());

    let reply = api
        .send(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"email": "dana.w@example.org", "kind": "former_worker", "sms_consent": false})),
            &[("If-Match", "\"1\"")],
        )
        .await;
    let stale = api
        .send(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"sms_consent": true})),
            &[("If-Match", "\"1\"")],
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers[header::ETAG], "\"2\"");
    assert_eq!(reply.body["email"], "dana.w@example.org");
    assert_eq!(reply.body["kind"], "former_worker");
    assert_eq!(reply.body["sms_consent"], false);
    assert_eq!(reply.body["name"], "Dana Whitfield");
    assert_eq!(reply.body["phone"], "+14155550123");
    assert_problem(&stale, StatusCode::CONFLICT, "version_conflict");
    let event_type: String = sqlx::query_scalar(
        "SELECT event_type FROM events
          WHERE aggregate_type = 'ambassador' AND agency_id = $1 AND sequence = 2",
    )
    .bind(agency.agency_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(event_type, "AmbassadorUpdated");
    assert_eq!(ambassador_events(&pool, &agency).await, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn deactivate_is_idempotent(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let created = enroll(&api, &token, "Dana Whitfield", "dana@example.com").await;
    let path = format!(
        "/v1/ambassadors/{}/deactivate",
        created["id"].as_str().unwrap()
    );

    let first = api.call(Method::POST, &path, Some(&token), None).await;
    let second = api.call(Method::POST, &path, Some(&token), None).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["active"], false);
    assert_eq!(first.headers[header::ETAG], "\"2\"");
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.headers[header::ETAG], "\"2\"");
    assert_eq!(ambassador_events(&pool, &agency).await, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn malformed_input_names_the_field(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let with = |field: &str, value: Value| {
        let mut body = enrollment("Dana Whitfield", "dana@example.com");
        body[field] = value;
        body
    };
    let cases = [
        (
            with("email", json!("dana-at-example.com")),
            "invalid_value",
            "email",
        ),
        (with("phone", json!("555-0123")), "invalid_value", "phone"),
        (
            with("name", json!("Dana\u{0}Whitfield")),
            "invalid_value",
            "name",
        ),
        (with("name", json!("   ")), "invalid_value", "name"),
        (with("kind", json!("manager")), "invalid_body", "kind"),
        (
            with("sms_consent", json!("yes")),
            "invalid_body",
            "sms_consent",
        ),
        (
            with("external_id", json!("a\nb")),
            "invalid_value",
            "external_id",
        ),
        (with("ssn", json!("123-45-6789")), "invalid_body", "ssn"),
    ];

    for (body, code, field) in cases {
        let reply = api
            .call(Method::POST, "/v1/ambassadors", Some(&token), Some(body))
            .await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, code);
        assert_eq!(reply.body["field"], field, "{}", reply.body);
        assert!(!reply.body.to_string().contains("Dana"), "{}", reply.body);
    }
    let huge = api
        .call(
            Method::POST,
            "/v1/ambassadors",
            Some(&token),
            Some(with("name", json!("x".repeat(10 * 1024 * 1024)))),
        )
        .await;
    let created = enroll(&api, &token, "Dana Whitfield", "dana@example.com").await;
    let bad_update = api
        .call(
            Method::PATCH,
            &format!("/v1/ambassadors/{}", created["id"].as_str().unwrap()),
            Some(&token),
            Some(json!({"email": "not an address"})),
        )
        .await;

    assert_problem(&huge, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_problem(
        &bad_update,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    );
    assert_eq!(bad_update.body["field"], "email");
    assert_eq!(ambassador_events(&pool, &agency).await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn another_agency_sees_not_found(pool: PgPool) {
    let api = TestApi::new(&pool);
    let owner = api.agency().await;
    let stranger = api.agency().await;
    let owner_token = recruiter(&api, &owner).await;
    let stranger_token = recruiter(&api, &stranger).await;
    let created = enroll(&api, &owner_token, "Dana Whitfield", "dana@example.com").await;
    let id = created["id"].as_str().unwrap();
    catch_up(&pool).await;

    let replies = [
        api.call(
            Method::GET,
            &format!("/v1/ambassadors/{id}"),
            Some(&stranger_token),
            None,
        )
        .await,
        api.call(
            Method::PATCH,
            &format!("/v1/ambassadors/{id}"),
            Some(&stranger_token),
            Some(json!({"name": "Taken Over"})),
        )
        .await,
        api.call(
            Method::POST,
            &format!("/v1/ambassadors/{id}/deactivate"),
            Some(&stranger_token),
            None,
        )
        .await,
    ];
    let list = api
        .call(Method::GET, "/v1/ambassadors", Some(&stranger_token), None)
        .await;

    for reply in &replies {
        assert_problem(reply, StatusCode::NOT_FOUND, "not_found");
        assert!(!reply.body.to_string().contains("Dana"), "{}", reply.body);
    }
    assert_eq!(list.body["items"], json!([]));
    assert_eq!(ambassador_events(&pool, &owner).await, 1);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM data_keys WHERE subject_id = $1")
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        keys, 1,
        "the other agency's request made no data key for the id"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn only_recruiters_manage_ambassadors(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let (_, analyst) = api.user(&agency, &[Role::Analyst]).await;
    let created = enroll(&api, &token, "Dana Whitfield", "dana@example.com").await;
    let id = created["id"].as_str().unwrap();

    for caller in [&analyst, &agency.admin_token] {
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/ambassadors".to_owned(),
                Some(enrollment("Eve", "eve@example.com")),
            ),
            (Method::GET, "/v1/ambassadors".to_owned(), None),
            (Method::GET, format!("/v1/ambassadors/{id}"), None),
            (
                Method::PATCH,
                format!("/v1/ambassadors/{id}"),
                Some(json!({"sms_consent": false})),
            ),
            (
                Method::POST,
                format!("/v1/ambassadors/{id}/deactivate"),
                None,
            ),
        ] {
            let reply = api.call(method.clone(), &path, Some(caller), body).await;
            assert_problem(&reply, StatusCode::FORBIDDEN, "forbidden");
            assert!(!reply.body.to_string().contains("Dana"), "{method} {path}");
        }
    }
    assert_eq!(ambassador_events(&pool, &agency).await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn invalid_id_names_the_parameter(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;

    let malformed = api
        .call(Method::GET, "/v1/ambassadors/12345", Some(&token), None)
        .await;
    let unknown = api
        .call(
            Method::PATCH,
            &format!("/v1/ambassadors/{}", Uuid::now_v7()),
            Some(&token),
            Some(json!({"sms_consent": false})),
        )
        .await;

    assert_problem(&malformed, StatusCode::BAD_REQUEST, "invalid_id");
    assert_eq!(malformed.body["field"], "id");
    assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");
}
