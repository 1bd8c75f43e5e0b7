//! The agency texting setting, through the real router.

mod common;

use axum::http::{Method, StatusCode};
use common::TestApi;
use referrals_domain::role::Role;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn admin_enables_and_disables_texting(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = Some(agency.admin_token.as_str());

    let initial = api
        .call(Method::GET, "/v1/agency/texting", token, None)
        .await;
    let enabled = api
        .call(
            Method::PUT,
            "/v1/agency/texting",
            token,
            Some(json!({"enabled": true})),
        )
        .await;
    let read_back = api
        .call(Method::GET, "/v1/agency/texting", token, None)
        .await;
    let disabled = api
        .call(
            Method::PUT,
            "/v1/agency/texting",
            token,
            Some(json!({"enabled": false})),
        )
        .await;

    assert_eq!(initial.status, StatusCode::OK);
    assert_eq!(initial.body, json!({"enabled": false}));
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
    assert_eq!(enabled.body, json!({"enabled": true}));
    assert_eq!(read_back.body, json!({"enabled": true}));
    assert_eq!(disabled.body, json!({"enabled": false}));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn recruiter_cannot_set_texting(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, recruiter) = api.user(&agency, &[Role::Recruiter]).await;

    let reply = api
        .call(
            Method::PUT,
            "/v1/agency/texting",
            Some(&recruiter),
            Some(json!({"enabled": true})),
        )
        .await;

    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn texting_body_without_enabled_is_rejected(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;

    let reply = api
        .call(
            Method::PUT,
            "/v1/agency/texting",
            Some(&agency.admin_token),
            Some(json!({"enable": true})),
        )
        .await;

    assert!(reply.status.is_client_error(), "{}", reply.status);
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("enable"),
        "{}",
        reply.body
    );
}
