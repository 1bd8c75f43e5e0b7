//! A test harness for the HTTP API: the real router over a fresh, migrated database, with
//! agencies and users of any role created through the account use cases.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use referrals_api::http;
use referrals_domain::ids::{AgencyId, UserId, PLATFORM_AGENCY};
use referrals_domain::role::Role;
use referrals_domain::values::EmailAddress;
use referrals_store::accounts::{totp, Accounts};
use referrals_store::application::Application;
use referrals_store::crypto::MasterKey;
use referrals_store::event_store::{Actor, CommandMetadata};
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// The API over one test database.
pub struct TestApi {
    /// The router with all middleware.
    pub router: Router,
    /// The test database.
    pub pool: PgPool,
    /// Account use cases over the same keys as the router.
    pub accounts: Arc<Accounts>,
    /// The application behind the router.
    pub app: Arc<Application>,
}

/// An agency with a signed-in admin.
#[derive(Debug, Clone)]
pub struct TestAgency {
    /// The agency.
    pub agency_id: AgencyId,
    /// Its first admin.
    pub admin_id: UserId,
    /// The admin's session token.
    pub admin_token: String,
}

/// A response, with the body parsed as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Value,
}

impl TestApi {
    /// Builds the API over `pool` with a fresh master key.
    pub fn new(pool: &PgPool) -> Self {
        Self::with_master_key(pool, MasterKey::generate().0)
    }

    /// Builds the API over `pool` with `master`, for tests that also start the binary
    /// with the same key.
    pub fn with_master_key(pool: &PgPool, master: MasterKey) -> Self {
        let app = Arc::new(Application::new(pool.clone(), master));
        let accounts = Arc::new(Accounts::new(pool.clone(), app.personal().vault().clone()));
        let router = http::application(app.clone(), pool.clone());
        Self {
            router,
            pool: pool.clone(),
            accounts,
            app,
        }
    }

    /// Builds the API over `pool` with list and report queries on `read_pool`, a
    /// streaming replica of `pool`.
    pub fn with_read_pool(pool: &PgPool, read_pool: &PgPool) -> Self {
        let app = Arc::new(Application::new(pool.clone(), MasterKey::generate().0));
        let accounts = Arc::new(Accounts::new(pool.clone(), app.personal().vault().clone()));
        let router = http::application_with_read_pool(app.clone(), pool.clone(), read_pool.clone());
        Self {
            router,
            pool: pool.clone(),
            accounts,
            app,
        }
    }

    /// Creates an agency and signs its admin in.
    pub async fn agency(&self) -> TestAgency {
        let operator = CommandMetadata::new(
            PLATFORM_AGENCY,
            Actor::System {
                job: "test".to_owned(),
            },
        );
        let email = unique_email("admin");
        let created = self
            .accounts
            .create_agency(&operator, "Test Staffing", &email, None)
            .await
            .expect("creating an agency");
        let admin_token = self
            .accept_and_sign_in(created.invite_token.expose(), &email)
            .await;
        TestAgency {
            agency_id: created.agency_id,
            admin_id: created.admin_user_id,
            admin_token,
        }
    }

    /// Creates a program named "Warehouse referrals" with `bonus_schedule` as the admin of
    /// `agency` and returns its id.
    pub async fn create_program(&self, agency: &TestAgency, bonus_schedule: Value) -> String {
        let reply = self
            .call(
                Method::POST,
                "/v1/programs",
                Some(&agency.admin_token),
                Some(serde_json::json!({
                    "name": "Warehouse referrals",
                    "terms": {"bonus_schedule": bonus_schedule}
                })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().expect("a program id").to_owned()
    }

    /// Enrolls the field worker Avery Ambassador with `email`, using `token`, and returns
    /// the ambassador's id.
    pub async fn enroll_ambassador(&self, token: &str, email: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                "/v1/ambassadors",
                Some(token),
                Some(serde_json::json!({
                    "name": "Avery Ambassador", "email": email, "kind": "field_worker"
                })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"]
            .as_str()
            .expect("an ambassador id")
            .to_owned()
    }

    /// Invites a user with `roles` into `agency`, accepts and signs in; returns the token.
    pub async fn user(&self, agency: &TestAgency, roles: &[Role]) -> (UserId, String) {
        let admin = CommandMetadata::new(
            agency.agency_id,
            Actor::User {
                id: agency.admin_id,
                role: Role::AgencyAdmin.as_str().to_owned(),
            },
        );
        let email = unique_email("user");
        let invited = self
            .accounts
            .invite_user(&admin, &email, None, roles)
            .await
            .expect("inviting a user");
        let token = self
            .accept_and_sign_in(invited.invite_token.expose(), &email)
            .await;
        (invited.user_id, token)
    }

    async fn accept_and_sign_in(&self, invite_token: &str, email: &EmailAddress) -> String {
        let accepted = self
            .accounts
            .accept_invitation(invite_token, PASSWORD)
            .await
            .expect("accepting the invitation");
        let code = accepted
            .totp_secret
            .as_ref()
            .map(|secret| totp::code_at(secret.expose(), Utc::now()).expect("a TOTP code"));
        let session = self
            .accounts
            .login(
                email.as_str(),
                PASSWORD,
                code.as_deref(),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            )
            .await
            .expect("signing in");
        session.token.expose().to_owned()
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.send(method, path, token, body, &[]).await
    }

    /// Sends a request with extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        self.raw(request).await
    }

    /// Sends a prepared request.
    pub async fn raw(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A fresh e-mail address on a reserved domain.
pub fn unique_email(prefix: &str) -> EmailAddress {
    EmailAddress::parse(&format!("{prefix}.{}@example.com", Uuid::now_v7().simple())).unwrap()
}

/// Applies every committed event to every read model. Other tests' transactions can hold
/// the cluster's read horizon back, so it repeats until no projection is behind (at most
/// 300 passes of 50 ms each).
pub async fn catch_up(pool: &sqlx::PgPool) {
    let runner = referrals_projections::runner::ProjectionRunner::new(pool.clone());
    for projection in referrals_projections::models::all() {
        let mut caught_up = false;
        for _ in 0..300 {
            runner.catch_up(projection.as_ref()).await.unwrap();
            let names = [projection.name()];
            let status = &referrals_projections::status::projection_status(pool, &names)
                .await
                .unwrap()[0];
            if status.events_behind == 0 {
                caught_up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(caught_up, "{} did not catch up", projection.name());
    }
}
