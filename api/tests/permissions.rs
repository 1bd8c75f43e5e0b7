//! The role-by-endpoint matrix: every route of the OpenAPI document, called with a token
//! of each role, is allowed or denied exactly as the permission table says.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use axum::http::{Method, StatusCode};
use chrono::Utc;
use common::{unique_email, TestApi, PASSWORD};
use referrals_api::http::authorization::{allowed_roles, route_action, PUBLIC_ROUTES};
use referrals_domain::ids::PLATFORM_AGENCY;
use referrals_domain::role::Role;
use referrals_store::accounts::totp;
use referrals_store::event_store::{Actor, CommandMetadata};
use serde_json::json;
use sqlx::PgPool;

/// Every (method, path) of the OpenAPI document.
async fn documented_routes(api: &TestApi) -> Vec<(String, String)> {
    let document = api
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    // Signing out ends the session, so it goes last.
    routes.sort_by_key(|(method, path)| {
        (
            path == "/v1/auth/sessions/current",
            method.clone(),
            path.clone(),
        )
    });
    routes
}

async fn operator_token(api: &TestApi) -> String {
    let system = CommandMetadata::new(
        PLATFORM_AGENCY,
        Actor::System {
            job: "test".to_owned(),
        },
    );
    let email = unique_email("operator");
    let invited = api.accounts.create_operator(&system, &email).await.unwrap();
    let accepted = api
        .accounts
        .accept_invitation(invited.invite_token.expose(), PASSWORD)
        .await
        .unwrap();
    let code = totp::code_at(accepted.totp_secret.unwrap().expose(), Utc::now()).unwrap();
    let session = api
        .accounts
        .login(
            email.as_str(),
            PASSWORD,
            Some(&code),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        )
        .await
        .unwrap();
    session.token.expose().to_owned()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn every_route_allows_exactly_its_roles(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let mut tokens = vec![(Role::PlatformOperator, operator_token(&api).await)];
    for role in Role::ALL
        .iter()
        .copied()
        .filter(|role| *role != Role::PlatformOperator)
    {
        tokens.push((role, api.user(&agency, &[role]).await.1));
    }
    let routes = documented_routes(&api).await;
    assert!(routes.len() > 10, "the document lists the API: {routes:?}");

    let mut checked = 0;
    for (method, path) in &routes {
        if PUBLIC_ROUTES.contains(&(method.as_str(), path.as_str())) {
            continue;
        }
        let action = route_action(method, path).unwrap_or_else(|| {
            panic!("{method} {path} is neither public nor in the permission table")
        });
        let concrete = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));

        for (role, token) in &tokens {
            let reply = api
                .call(method.clone(), &concrete, Some(token), body.clone())
                .await;
            let allowed = allowed_roles(action).contains(role);
            if allowed {
                assert!(
                    reply.status != StatusCode::FORBIDDEN
                        && reply.status != StatusCode::UNAUTHORIZED,
                    "{role:?} may {method} {path} but got {}: {}",
                    reply.status,
                    reply.body
                );
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{role:?} on {method} {path}: {}",
                    reply.body
                );
                assert_eq!(reply.body["code"], "forbidden");
            }
            assert!(
                !reply.status.is_server_error(),
                "{role:?} on {method} {path}: {}",
                reply.body
            );
            checked += 1;
        }

        let anonymous = api
            .call(method.clone(), &concrete, None, body.clone())
            .await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "no token on {method} {path}"
        );
    }
    assert!(checked > 60, "{checked} calls checked");
}
