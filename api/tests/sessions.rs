//! Sign-in, sign-out, invitations, MFA enrollment and `/v1/me`, through the real router.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use chrono::{Duration, Utc};
use common::{unique_email, Reply, TestApi, PASSWORD};
use referrals_domain::ids::PLATFORM_AGENCY;
use referrals_domain::role::Role;
use referrals_domain::values::EmailAddress;
use referrals_store::accounts::totp;
use referrals_store::event_store::{Actor, CommandMetadata};
use serde_json::{json, Value};
use sqlx::PgPool;

fn bootstrap() -> CommandMetadata {
    CommandMetadata::new(
        PLATFORM_AGENCY,
        Actor::System {
            job: "test".to_owned(),
        },
    )
}

/// Creates an agency whose admin accepts the invitation over HTTP, and returns the
/// admin's e-mail address and TOTP secret.
async fn accepted_admin(api: &TestApi) -> (EmailAddress, String) {
    let email = unique_email("admin");
    let created = api
        .accounts
        .create_agency(&bootstrap(), "Sign-in Staffing", &email, None)
        .await
        .unwrap();
    let accepted = accept(api, created.invite_token.expose(), PASSWORD).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(
        accepted.body["user_id"],
        json!(created.admin_user_id.0.to_string())
    );
    let secret = accepted.body["totp_secret"].as_str().unwrap().to_owned();
    (email, secret)
}

/// Invites a recruiter of a new agency, accepts over HTTP and returns the e-mail address.
async fn accepted_recruiter(api: &TestApi) -> EmailAddress {
    let agency = api.agency().await;
    let email = unique_email("recruiter");
    let invited = api
        .call(
            Method::POST,
            "/v1/users",
            Some(&agency.admin_token),
            Some(json!({"email": email.as_str(), "name": "Riley Chen", "roles": ["recruiter"]})),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.body);
    let token = invited.body["invite_token"].as_str().unwrap();
    let accepted = accept(api, token, PASSWORD).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert!(accepted.body.get("totp_secret").is_none());
    email
}

async fn accept(api: &TestApi, invite_token: &str, password: &str) -> Reply {
    api.call(
        Method::POST,
        "/v1/auth/invitations/accept",
        None,
        Some(json!({"invite_token": invite_token, "password": password})),
    )
    .await
}

async fn sign_in(api: &TestApi, email: &str, password: &str, code: Option<&str>) -> Reply {
    let mut body = json!({"email": email, "password": password});
    if let Some(code) = code {
        body["totp"] = json!(code);
    }
    api.call(Method::POST, "/v1/auth/sessions", None, Some(body))
        .await
}

/// Signs in from a given client address, as the server's connection info reports it.
async fn sign_in_from(api: &TestApi, address: &str, email: &str, password: &str) -> Reply {
    let body = json!({"email": email, "password": password}).to_string();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/v1/auth/sessions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let address: SocketAddr = address.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(address));
    api.raw(request).await
}

fn code(reply: &Reply) -> &str {
    reply.body["code"].as_str().unwrap_or_default()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn admin_sign_in_needs_a_fresh_totp_code(pool: PgPool) {
    let api = TestApi::new(&pool);
    let (email, secret) = accepted_admin(&api).await;

    let without_code = sign_in(&api, email.as_str(), PASSWORD, None).await;
    let now = Utc::now();
    let current = totp::code_at(&secret, now).unwrap();
    let signed_in = sign_in(&api, email.as_str(), PASSWORD, Some(&current)).await;
    let replayed = sign_in(&api, email.as_str(), PASSWORD, Some(&current)).await;
    let old = totp::code_at(&secret, now - Duration::seconds(90)).unwrap();
    let stale = sign_in(&api, email.as_str(), PASSWORD, Some(&old)).await;

    assert_eq!(without_code.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&without_code), "mfa_required");
    assert_eq!(signed_in.status, StatusCode::CREATED, "{}", signed_in.body);
    assert!(signed_in.body["token"]
        .as_str()
        .unwrap()
        .starts_with("rfs_"));
    assert!(signed_in.body["expires_at"].is_string());
    assert_eq!(signed_in.body["mfa_enrollment_required"], json!(false));
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&replayed), "invalid_totp");
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&stale), "invalid_totp");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sixth_failed_sign_in_is_rate_limited(pool: PgPool) {
    let api = TestApi::new(&pool);
    let email = accepted_recruiter(&api).await;

    for attempt in 1..=5 {
        let reply = sign_in(&api, email.as_str(), "not the password at all", None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert_eq!(code(&reply), "invalid_credentials", "attempt {attempt}");
    }
    let sixth = sign_in(&api, email.as_str(), "not the password at all", None).await;
    let correct = sign_in(&api, email.as_str(), PASSWORD, None).await;

    assert_eq!(sixth.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&sixth), "rate_limited");
    let retry_after: u64 = sixth.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=900).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(correct.status, StatusCode::TOO_MANY_REQUESTS);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn client_address_limit_counts_per_address(pool: PgPool) {
    let api = TestApi::new(&pool);
    let email = accepted_recruiter(&api).await;

    for attempt in 1..=20 {
        let stranger = unique_email("stranger");
        let reply = sign_in_from(
            &api,
            "203.0.113.7:40000",
            stranger.as_str(),
            "wrong password",
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let blocked = sign_in_from(&api, "203.0.113.7:40001", email.as_str(), PASSWORD).await;
    let elsewhere = sign_in_from(&api, "198.51.100.1:40000", email.as_str(), PASSWORD).await;

    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(blocked.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{}", elsewhere.body);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn unknown_and_deactivated_accounts_look_alike(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let email = unique_email("leaver");
    let invited = api
        .call(
            Method::POST,
            "/v1/users",
            Some(&agency.admin_token),
            Some(json!({"email": email.as_str(), "name": "Sam Ortiz", "roles": ["analyst"]})),
        )
        .await;
    let user_id = invited.body["id"].as_str().unwrap().to_owned();
    accept(
        &api,
        invited.body["invite_token"].as_str().unwrap(),
        PASSWORD,
    )
    .await;
    let deactivated = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/deactivate"),
            Some(&agency.admin_token),
            None,
        )
        .await;
    assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.body);

    let unknown = sign_in(&api, unique_email("nobody").as_str(), PASSWORD, None).await;
    let closed = sign_in(&api, email.as_str(), PASSWORD, None).await;

    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(closed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&closed), "invalid_credentials");
    assert_eq!(unknown.body["detail"], closed.body["detail"]);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sign_out_rejects_the_token(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = agency.admin_token.as_str();

    let before = api.call(Method::GET, "/v1/me", Some(token), None).await;
    let signed_out = api
        .call(
            Method::DELETE,
            "/v1/auth/sessions/current",
            Some(token),
            None,
        )
        .await;
    let after = api.call(Method::GET, "/v1/me", Some(token), None).await;

    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(signed_out.status, StatusCode::NO_CONTENT);
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&after), "unauthenticated");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn me_describes_the_caller(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let email = unique_email("me");
    let invited = api
        .call(
            Method::POST,
            "/v1/users",
            Some(&agency.admin_token),
            Some(json!({"email": email.as_str(), "name": "Avery Brooks", "roles": ["analyst", "recruiter"]})),
        )
        .await;
    accept(
        &api,
        invited.body["invite_token"].as_str().unwrap(),
        PASSWORD,
    )
    .await;
    let session = sign_in(&api, email.as_str(), PASSWORD, None).await;
    let token = session.body["token"].as_str().unwrap();

    let me = api.call(Method::GET, "/v1/me", Some(token), None).await;
    let anonymous = api.call(Method::GET, "/v1/me", None, None).await;

    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["user_id"], invited.body["id"]);
    assert_eq!(me.body["agency_id"], json!(agency.agency_id.0.to_string()));
    assert_eq!(me.body["roles"], json!(["recruiter", "analyst"]));
    assert_eq!(me.body["email"], json!(email.as_str()));
    assert_eq!(me.body["name"], json!("Avery Brooks"));
    assert_eq!(me.body["mfa_enrolled"], json!(false));
    assert_eq!(me.body["mfa_required"], json!(false));
    assert_eq!(me.body["credential"], json!("session"));
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn new_mfa_role_requires_enrollment_first(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (user_id, token) = api.user(&agency, &[Role::Recruiter]).await;
    let promoted = api
        .call(
            Method::PUT,
            &format!("/v1/users/{user_id}/roles"),
            Some(&agency.admin_token),
            Some(json!({"roles": ["recruiter", "payout_approver"]})),
        )
        .await;
    assert_eq!(promoted.status, StatusCode::OK, "{}", promoted.body);

    let blocked = api
        .call(Method::GET, "/v1/payouts", Some(&token), None)
        .await;
    let me = api.call(Method::GET, "/v1/me", Some(&token), None).await;
    let enrolled = api
        .call(Method::POST, "/v1/me/mfa", Some(&token), None)
        .await;
    let unblocked = api
        .call(Method::GET, "/v1/payouts", Some(&token), None)
        .await;
    let again = api
        .call(Method::POST, "/v1/me/mfa", Some(&token), None)
        .await;

    assert_eq!(blocked.status, StatusCode::FORBIDDEN);
    assert_eq!(code(&blocked), "mfa_enrollment_required");
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["mfa_enrollment_required"], json!(true));
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.body);
    let secret = enrolled.body["totp_secret"].as_str().unwrap();
    assert!(totp::code_at(secret, Utc::now()).is_ok());
    assert_eq!(unblocked.status, StatusCode::OK, "{}", unblocked.body);
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(code(&again), "mfa_already_enrolled");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn access_token_has_no_session_to_end(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (user_id, _) = api.user(&agency, &[Role::Recruiter]).await;
    let issued = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/tokens"),
            Some(&agency.admin_token),
            Some(json!({"label": "Timesheet import"})),
        )
        .await;
    let token = issued.body["token"].as_str().unwrap();

    let signed_out = api
        .call(
            Method::DELETE,
            "/v1/auth/sessions/current",
            Some(token),
            None,
        )
        .await;
    let still_valid = api.call(Method::GET, "/v1/me", Some(token), None).await;

    assert_eq!(signed_out.status, StatusCode::NOT_FOUND);
    assert_eq!(code(&signed_out), "not_a_session");
    assert_eq!(still_valid.status, StatusCode::OK);
    assert_eq!(still_valid.body["credential"], json!("access_token"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn invitation_acceptance_rejects_bad_input(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let invited = api
        .call(
            Method::POST,
            "/v1/users",
            Some(&agency.admin_token),
            Some(json!({"email": unique_email("new").as_str(), "name": "Kai Young", "roles": ["analyst"]})),
        )
        .await;
    let invite_token = invited.body["invite_token"].as_str().unwrap();

    let unknown = accept(&api, "rfi_not-a-real-invitation", PASSWORD).await;
    let short = accept(&api, invite_token, "short").await;
    let accepted = accept(&api, invite_token, PASSWORD).await;
    let twice = accept(&api, invite_token, PASSWORD).await;
    let extra_field = api
        .call(
            Method::POST,
            "/v1/auth/invitations/accept",
            None,
            Some(json!({"invite_token": invite_token, "password": PASSWORD, "admin": true})),
        )
        .await;

    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(code(&unknown), "invalid_invitation");
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(short.body["field"], json!("password"));
    assert_eq!(accepted.status, StatusCode::OK);
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(code(&twice), "invitation_already_accepted");
    assert_eq!(extra_field.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&extra_field), "invalid_body");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sign_in_errors_reveal_no_secrets(pool: PgPool) {
    let api = TestApi::new(&pool);
    let email = accepted_recruiter(&api).await;

    let wrong = sign_in(&api, email.as_str(), "a guessed password", None).await;

    let text = wrong.body.to_string();
    assert!(!text.contains(email.as_str()), "{text}");
    assert!(!text.contains("a guessed password"), "{text}");
    assert_eq!(wrong.body["status"], json!(401));
    assert_eq!(
        wrong.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(matches!(wrong.body["detail"], Value::String(_)));
}
