//! Agency creation by platform operators, through the real router.

mod common;

use axum::http::{Method, StatusCode};
use chrono::Utc;
use common::{unique_email, Reply, TestApi, PASSWORD};
use referrals_domain::ids::PLATFORM_AGENCY;
use referrals_store::accounts::totp;
use referrals_store::event_store::{Actor, CommandMetadata};
use serde_json::json;
use sqlx::PgPool;

/// Invites a platform operator, accepts and signs in over HTTP, and returns the token.
async fn operator_token(api: &TestApi) -> String {
    let email = unique_email("operator");
    let bootstrap = CommandMetadata::new(
        PLATFORM_AGENCY,
        Actor::System {
            job: "test".to_owned(),
        },
    );
    let invited = api
        .accounts
        .create_operator(&bootstrap, &email)
        .await
        .unwrap();
    let secret = accept(api, invited.invite_token.expose()).await.body["totp_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = totp::code_at(&secret, Utc::now()).unwrap();
    let session = api
        .call(
            Method::POST,
            "/v1/auth/sessions",
            None,
            Some(json!({"email": email.as_str(), "password": PASSWORD, "totp": code})),
        )
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
    session.body["token"].as_str().unwrap().to_owned()
}

async fn accept(api: &TestApi, invite_token: &str) -> Reply {
    api.call(
        Method::POST,
        "/v1/auth/invitations/accept",
        None,
        Some(json!({"invite_token": invite_token, "password": PASSWORD})),
    )
    .await
}

async fn create_agency(api: &TestApi, token: &str, admin_email: &str) -> Reply {
    api.call(
        Method::POST,
        "/v1/platform/agencies",
        Some(token),
        Some(json!({"name": "Harbor Staffing", "admin_email": admin_email, "admin_name": "Dana Park"})),
    )
    .await
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn operator_creates_agency_with_admin_invite(pool: PgPool) {
    let api = TestApi::new(&pool);
    let token = operator_token(&api).await;
    let admin_email = unique_email("first-admin");

    let created = create_agency(&api, &token, admin_email.as_str()).await;
    let accepted = accept(&api, created.body["invite_token"].as_str().unwrap()).await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(created.body["agency_id"].is_string());
    assert!(created.body["invitation_expires_at"].is_string());
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(accepted.body["user_id"], created.body["admin_user_id"]);
    assert!(accepted.body["totp_secret"].is_string(), "admins need MFA");
    let agency_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type = 'agency' AND aggregate_id = $1
            AND agency_id = $1::uuid AND metadata::jsonb ->> 'actor_role' = 'platform_operator'",
    )
    .bind(created.body["agency_id"].as_str().unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(agency_events, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn agency_admin_cannot_create_agencies(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;

    let reply = create_agency(&api, &agency.admin_token, unique_email("x").as_str()).await;

    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body["code"], json!("forbidden"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn operator_has_no_agency_access(pool: PgPool) {
    let api = TestApi::new(&pool);
    let token = operator_token(&api).await;

    let users = api.call(Method::GET, "/v1/users", Some(&token), None).await;
    let payouts = api
        .call(Method::GET, "/v1/payouts", Some(&token), None)
        .await;
    let me = api.call(Method::GET, "/v1/me", Some(&token), None).await;

    assert_eq!(users.status, StatusCode::FORBIDDEN);
    assert_eq!(payouts.status, StatusCode::FORBIDDEN);
    assert_eq!(me.status, StatusCode::OK);
    assert!(me.body["agency_id"].is_null());
    assert_eq!(me.body["roles"], json!(["platform_operator"]));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn agency_input_is_validated(pool: PgPool) {
    let api = TestApi::new(&pool);
    let token = operator_token(&api).await;
    let taken = unique_email("taken");
    create_agency(&api, &token, taken.as_str()).await;

    let again = create_agency(&api, &token, taken.as_str()).await;
    let bad_email = create_agency(&api, &token, "no-at-sign").await;
    let blank_name = api
        .call(
            Method::POST,
            "/v1/platform/agencies",
            Some(&token),
            Some(json!({"name": " ", "admin_email": unique_email("y").as_str()})),
        )
        .await;
    let anonymous = api
        .call(
            Method::POST,
            "/v1/platform/agencies",
            None,
            Some(json!({"name": "Harbor", "admin_email": unique_email("z").as_str()})),
        )
        .await;

    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["code"], json!("email_taken"));
    assert_eq!(bad_email.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_email.body["field"], json!("admin_email"));
    assert_eq!(blank_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
