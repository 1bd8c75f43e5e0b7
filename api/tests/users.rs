//! The users endpoints of agency admins, through the real router.

mod common;

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use common::{unique_email, Reply, TestAgency, TestApi, PASSWORD};
use referrals_domain::role::Role;
use serde_json::{json, Value};
use sqlx::PgPool;

async fn invite(api: &TestApi, agency: &TestAgency, email: &str, roles: Value) -> Reply {
    api.call(
        Method::POST,
        "/v1/users",
        Some(&agency.admin_token),
        Some(json!({"email": email, "name": "Morgan Diaz", "roles": roles})),
    )
    .await
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

fn listed<'a>(list: &'a Reply, id: &Value) -> &'a Value {
    list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| &item["id"] == id)
        .unwrap_or_else(|| panic!("user {id} is not in {}", list.body))
}

fn code(reply: &Reply) -> &str {
    reply.body["code"].as_str().unwrap_or_default()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn invited_user_is_listed_until_accepted(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let email = unique_email("invitee");

    let invited = invite(&api, &agency, email.as_str(), json!(["recruiter"])).await;
    let before = api
        .call(Method::GET, "/v1/users", Some(&agency.admin_token), None)
        .await;
    let accepted = accept(&api, invited.body["invite_token"].as_str().unwrap()).await;
    let after = api
        .call(Method::GET, "/v1/users", Some(&agency.admin_token), None)
        .await;

    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.body);
    assert!(invited.body["invite_token"]
        .as_str()
        .unwrap()
        .starts_with("rfi_"));
    assert!(invited.body["invitation_expires_at"].is_string());
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert_eq!(before.body["items"].as_array().unwrap().len(), 2);
    let pending = listed(&before, &invited.body["id"]);
    assert_eq!(pending["email"], json!(email.as_str()));
    assert_eq!(pending["name"], json!("Morgan Diaz"));
    assert_eq!(pending["roles"], json!(["recruiter"]));
    assert_eq!(pending["status"], json!("invited"));
    assert_eq!(pending["active"], json!(false));
    assert!(pending["invited_at"].is_string());
    assert!(pending["invitation_expires_at"].is_string());
    assert!(pending["accepted_at"].is_null());
    assert_eq!(accepted.status, StatusCode::OK);
    let active = listed(&after, &invited.body["id"]);
    assert_eq!(active["status"], json!("active"));
    assert_eq!(active["active"], json!(true));
    assert!(active["accepted_at"].is_string());
    assert!(active["invitation_expires_at"].is_null());
    let admin = listed(&after, &json!(agency.admin_id.0.to_string()));
    assert_eq!(admin["roles"], json!(["agency_admin"]));
    assert_eq!(admin["mfa_enrolled"], json!(true));
    assert_eq!(admin["mfa_required"], json!(true));
    assert!(admin["last_active_at"].is_string());
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn user_list_pages_with_cursor(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    for _ in 0..3 {
        api.user(&agency, &[Role::Analyst]).await;
    }

    let first = api
        .call(
            Method::GET,
            "/v1/users?limit=3",
            Some(&agency.admin_token),
            None,
        )
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = api
        .call(
            Method::GET,
            &format!("/v1/users?limit=3&cursor={cursor}"),
            Some(&agency.admin_token),
            None,
        )
        .await;
    let bad_limit = api
        .call(
            Method::GET,
            "/v1/users?limit=501",
            Some(&agency.admin_token),
            None,
        )
        .await;
    let bad_cursor = api
        .call(
            Method::GET,
            "/v1/users?cursor=xyz",
            Some(&agency.admin_token),
            None,
        )
        .await;

    assert_eq!(first.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert!(second.body["next_cursor"].is_null());
    let mut ids: Vec<&str> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["items"].as_array().unwrap())
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], agency.admin_id.0.to_string(), "oldest first");
    ids.dedup();
    assert_eq!(ids.len(), 4);
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&bad_limit), "invalid_limit");
    assert_eq!(bad_cursor.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&bad_cursor), "invalid_cursor");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn role_change_is_recorded_and_applied(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (user_id, token) = api.user(&agency, &[Role::Recruiter]).await;

    let changed = api
        .call(
            Method::PUT,
            &format!("/v1/users/{user_id}/roles"),
            Some(&agency.admin_token),
            Some(json!({"roles": ["analyst", "recruiter"]})),
        )
        .await;
    let me = api.call(Method::GET, "/v1/me", Some(&token), None).await;

    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["roles"], json!(["recruiter", "analyst"]));
    assert_eq!(changed.body["status"], json!("active"));
    assert_eq!(me.body["roles"], json!(["recruiter", "analyst"]));
    let (payload, metadata): (Value, Value) = sqlx::query_as(
        "SELECT payload::jsonb, metadata::jsonb FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = $1 AND event_type = 'RolesChanged'",
    )
    .bind(user_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    let event = &payload["RolesChanged"];
    assert_eq!(event["previous"], json!(["recruiter"]));
    assert_eq!(event["roles"], json!(["recruiter", "analyst"]));
    assert_eq!(event["by"], json!(agency.admin_id.0.to_string()));
    assert_eq!(metadata["actor_id"], json!(agency.admin_id.0.to_string()));
    assert_eq!(metadata["actor_role"], json!("agency_admin"));
    assert_eq!(metadata["agency_id"], json!(agency.agency_id.0.to_string()));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn deactivation_rejects_sessions_and_tokens(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (user_id, session) = api.user(&agency, &[Role::Recruiter]).await;
    let issued = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/tokens"),
            Some(&agency.admin_token),
            Some(json!({"label": "Timesheet import"})),
        )
        .await;
    let access_token = issued.body["token"].as_str().unwrap();
    let before = api
        .call(Method::GET, "/v1/me", Some(access_token), None)
        .await;

    let deactivated = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/deactivate"),
            Some(&agency.admin_token),
            None,
        )
        .await;
    let with_session = api.call(Method::GET, "/v1/me", Some(&session), None).await;
    let with_token = api
        .call(Method::GET, "/v1/me", Some(access_token), None)
        .await;
    let again = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/deactivate"),
            Some(&agency.admin_token),
            None,
        )
        .await;
    let new_token = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/tokens"),
            Some(&agency.admin_token),
            Some(json!({"label": "Another import"})),
        )
        .await;

    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.body);
    assert_eq!(deactivated.body["status"], json!("deactivated"));
    assert_eq!(with_session.status, StatusCode::UNAUTHORIZED);
    assert_eq!(with_token.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(new_token.status, StatusCode::CONFLICT);
    assert_eq!(code(&new_token), "user_deactivated");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn access_token_acts_as_its_user(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (user_id, _) = api.user(&agency, &[Role::Recruiter]).await;
    let expires_at = (Utc::now() + Duration::days(30)).to_rfc3339();

    let issued = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/tokens"),
            Some(&agency.admin_token),
            Some(json!({"label": "Payroll sync", "expires_at": expires_at})),
        )
        .await;
    let token = issued.body["token"].as_str().unwrap();
    let me = api.call(Method::GET, "/v1/me", Some(token), None).await;
    let past = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/tokens"),
            Some(&agency.admin_token),
            Some(json!({"label": "Too late", "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    let blank = api
        .call(
            Method::POST,
            &format!("/v1/users/{user_id}/tokens"),
            Some(&agency.admin_token),
            Some(json!({"label": "  "})),
        )
        .await;

    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    assert!(token.starts_with("rfp_"));
    assert!(issued.body["token_id"].is_string());
    assert!(issued.body["expires_at"].is_string());
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user_id"], json!(user_id.0.to_string()));
    assert_eq!(me.body["credential"], json!("access_token"));
    assert_eq!(past.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(past.body["field"], json!("expires_at"));
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn admin_cannot_lock_themselves_out(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let admin_id = agency.admin_id;

    let demoted = api
        .call(
            Method::PUT,
            &format!("/v1/users/{admin_id}/roles"),
            Some(&agency.admin_token),
            Some(json!({"roles": ["recruiter"]})),
        )
        .await;
    let deactivated = api
        .call(
            Method::POST,
            &format!("/v1/users/{admin_id}/deactivate"),
            Some(&agency.admin_token),
            None,
        )
        .await;
    let extended = api
        .call(
            Method::PUT,
            &format!("/v1/users/{admin_id}/roles"),
            Some(&agency.admin_token),
            Some(json!({"roles": ["agency_admin", "analyst"]})),
        )
        .await;

    assert_eq!(demoted.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&demoted), "own_admin_role");
    assert_eq!(deactivated.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&deactivated), "own_account");
    assert_eq!(extended.status, StatusCode::OK, "{}", extended.body);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn other_agency_user_is_not_found(pool: PgPool) {
    let api = TestApi::new(&pool);
    let ours = api.agency().await;
    let theirs = api.agency().await;
    let (user_id, _) = api.user(&theirs, &[Role::Recruiter]).await;
    let unknown = uuid::Uuid::now_v7();

    for id in [user_id.0, theirs.admin_id.0, unknown] {
        let roles = api
            .call(
                Method::PUT,
                &format!("/v1/users/{id}/roles"),
                Some(&ours.admin_token),
                Some(json!({"roles": ["analyst"]})),
            )
            .await;
        let deactivate = api
            .call(
                Method::POST,
                &format!("/v1/users/{id}/deactivate"),
                Some(&ours.admin_token),
                None,
            )
            .await;
        let token = api
            .call(
                Method::POST,
                &format!("/v1/users/{id}/tokens"),
                Some(&ours.admin_token),
                Some(json!({"label": "Probe"})),
            )
            .await;
        assert_eq!(roles.status, StatusCode::NOT_FOUND, "{id}: {}", roles.body);
        assert_eq!(deactivate.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(token.status, StatusCode::NOT_FOUND, "{id}");
    }
    let list = api
        .call(Method::GET, "/v1/users", Some(&ours.admin_token), None)
        .await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let me = api
        .call(Method::GET, "/v1/me", Some(&theirs.admin_token), None)
        .await;
    assert_eq!(me.status, StatusCode::OK, "their user is untouched");
    let malformed = api
        .call(
            Method::POST,
            "/v1/users/not-a-uuid/deactivate",
            Some(&ours.admin_token),
            None,
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&malformed), "invalid_id");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn users_endpoints_need_agency_admin(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (user_id, token) = api.user(&agency, &[Role::Recruiter, Role::Analyst]).await;

    let replies = [
        invite(
            &api,
            &TestAgency {
                admin_token: token.clone(),
                ..agency.clone()
            },
            unique_email("x").as_str(),
            json!(["analyst"]),
        )
        .await,
        api.call(Method::GET, "/v1/users", Some(&token), None).await,
        api.call(
            Method::PUT,
            &format!("/v1/users/{user_id}/roles"),
            Some(&token),
            Some(json!({"roles": ["agency_admin"]})),
        )
        .await,
        api.call(
            Method::POST,
            &format!("/v1/users/{user_id}/deactivate"),
            Some(&token),
            None,
        )
        .await,
        api.call(
            Method::POST,
            &format!("/v1/users/{user_id}/tokens"),
            Some(&token),
            Some(json!({"label": "Mine"})),
        )
        .await,
        api.call(Method::GET, "/v1/users", None, None).await,
    ];

    for (index, reply) in replies[..5].iter().enumerate() {
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "request {index}");
        assert_eq!(code(reply), "forbidden", "request {index}");
    }
    assert_eq!(replies[5].status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn invitation_input_is_validated(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let email = unique_email("twice");

    let first = invite(&api, &agency, email.as_str(), json!(["analyst"])).await;
    let taken = invite(&api, &agency, email.as_str(), json!(["analyst"])).await;
    let no_roles = invite(&api, &agency, unique_email("a").as_str(), json!([])).await;
    let platform = invite(
        &api,
        &agency,
        unique_email("b").as_str(),
        json!(["platform_operator"]),
    )
    .await;
    let unknown_role = invite(
        &api,
        &agency,
        unique_email("c").as_str(),
        json!(["superuser"]),
    )
    .await;
    let bad_email = invite(&api, &agency, "not an address", json!(["analyst"])).await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(code(&taken), "email_taken");
    assert!(!taken.body.to_string().contains(email.as_str()));
    assert_eq!(no_roles.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(no_roles.body["field"], json!("roles"));
    assert_eq!(platform.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(platform.body["field"], json!("roles"));
    assert_eq!(unknown_role.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&unknown_role), "invalid_body");
    assert_eq!(bad_email.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_email.body["field"], json!("email"));
    assert!(!bad_email.body.to_string().contains("not an address"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn stale_if_match_on_users_is_a_conflict(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (user_id, _) = api.user(&agency, &[Role::Recruiter]).await;
    let admin = agency.admin_token.as_str();
    let path = format!("/v1/users/{user_id}/roles");
    let body = serde_json::json!({"roles": ["recruiter", "analyst"]});

    let stale = api
        .send(
            Method::PUT,
            &path,
            Some(admin),
            Some(body.clone()),
            &[("If-Match", "\"1\"")],
        )
        .await;
    let listed = api.call(Method::GET, "/v1/users", Some(admin), None).await;
    let version = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == user_id.to_string())
        .unwrap()["version"]
        .to_string();
    let current = api
        .send(
            Method::PUT,
            &path,
            Some(admin),
            Some(body),
            &[("If-Match", &format!("\"{version}\""))],
        )
        .await;

    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert_eq!(stale.body["code"], "version_conflict");
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
}
