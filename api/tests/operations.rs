//! The operations endpoints, the error format and the headers every response carries,
//! through the real router against a fresh, migrated database.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use referrals_api::http;
use referrals_domain::role::Role;
use referrals_store::application::Application;
use referrals_store::crypto::MasterKey;
use serde_json::json;
use sqlx::PgPool;
use tower::ServiceExt;

fn app(pool: &PgPool) -> Router {
    let application = Arc::new(Application::new(pool.clone(), MasterKey::generate().0));
    http::application(application, pool.clone())
}

async fn call(
    router: &Router,
    method: &str,
    path: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn health_and_readiness_answer(pool: PgPool) {
    let router = app(&pool);

    let (health, _, _) = call(&router, "GET", "/healthz").await;
    let (ready, headers, body) = call(&router, "GET", "/readyz").await;

    assert_eq!(health, StatusCode::OK);
    assert_eq!(ready, StatusCode::OK, "{body}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(headers.contains_key("x-request-id"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn readiness_fails_without_migrations(pool: PgPool) {
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let (status, headers, body) = call(&app(&pool), "GET", "/readyz").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(body.contains("migrations_pending"), "{body}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn unknown_route_and_method_are_problems(pool: PgPool) {
    let router = app(&pool);

    let (missing, missing_headers, missing_body) = call(&router, "GET", "/v1/nothing-here").await;
    let (wrong_method, method_headers, method_body) = call(&router, "DELETE", "/healthz").await;

    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_eq!(
        missing_headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: serde_json::Value = serde_json::from_str(&missing_body).unwrap();
    assert_eq!(problem["code"], "unknown_route");
    assert_eq!(problem["status"], 404);
    assert_eq!(wrong_method, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        method_headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(method_headers.contains_key(header::ALLOW));
    assert!(method_body.contains("method_not_allowed"), "{method_body}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn metrics_report_requests_and_lag(pool: PgPool) {
    let router = app(&pool);
    call(&router, "GET", "/healthz").await;

    let (status, _, body) = call(&router, "GET", "/metrics").await;

    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("http_requests_total"), "{body}");
    assert!(
        body.contains(r#"projection_lag_events{projection="referral_board"}"#),
        "{body}"
    );
    assert!(body.contains("projection_lag_seconds"), "{body}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn openapi_lists_every_route(pool: PgPool) {
    let (status, _, body) = call(&app(&pool), "GET", "/openapi.json").await;

    assert_eq!(status, StatusCode::OK);
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} missing from the document"
        );
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn personal_data_is_never_cached(pool: PgPool) {
    let api = common::TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, recruiter) = api.user(&agency, &[Role::Recruiter]).await;
    let program_id = api
        .create_program(
            &agency,
            json!([{"trigger": "hired", "threshold": 0, "amount": 10000}]),
        )
        .await;
    let ambassador_id = api.enroll_ambassador(&recruiter, "amb@example.com").await;
    let referral = api
        .call(
            Method::POST,
            "/v1/referrals",
            Some(&recruiter),
            Some(json!({
                "program_id": program_id,
                "ambassador_id": ambassador_id,
                "candidate": {"name": "Casey Candidate", "email": "casey@example.com"},
                "job_reference": "Forklift driver"
            })),
        )
        .await;
    assert_eq!(referral.status, StatusCode::CREATED, "{}", referral.body);
    let referral_id = referral.body["id"].as_str().unwrap();
    common::catch_up(&pool).await;

    let read = api
        .call(
            Method::GET,
            &format!("/v1/referrals/{referral_id}"),
            Some(&recruiter),
            None,
        )
        .await;
    let list = api
        .call(Method::GET, "/v1/referrals", Some(&recruiter), None)
        .await;
    let review_csv = api
        .call(
            Method::GET,
            "/v1/audit/access-review?format=csv",
            Some(&agency.admin_token),
            None,
        )
        .await;

    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(
        read.body["candidate"]["name"], "Casey Candidate",
        "{}",
        read.body
    );
    assert_eq!(read.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(
        list.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.body
    );
    assert_eq!(list.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(review_csv.status, StatusCode::OK);
    assert!(
        review_csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv"),
        "{:?}",
        review_csv.headers
    );
    assert_eq!(review_csv.headers[header::CACHE_CONTROL], "no-store");
}
