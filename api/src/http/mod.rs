//! The HTTP API: router, shared state and the middleware every request passes through.
//!
//! Every request gets a request id (`X-Request-Id`, echoed back) and a correlation id
//! (`X-Correlation-Id` from the client, or else the request id). A span carries both.
//! Requests also get a body limit, metrics by route and status, and headers that keep
//! responses out of caches.
//! Every error, including a panic, an unknown route and a wrong method, is problem+json.

pub mod access_log;
pub mod access_review;
pub mod agency_settings;
pub mod ambassadors;
pub mod analytics;
pub mod audit;
pub mod audit_chain;
pub mod audit_events;
pub mod auth;
pub mod authorization;
pub mod conventions;
pub mod edge;
pub mod idempotency;
pub mod json;
pub mod known_candidates;
pub mod offboarding;
pub mod operations;
pub mod payout_exports;
pub mod payouts;
pub mod platform;
pub mod privacy;
pub mod problem;
pub mod programs;
pub mod referrals;
pub mod sessions;
pub mod timesheets;
pub mod users;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use referrals_store::accounts::Accounts;
use referrals_store::application::Application;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use self::problem::ApiError;

/// Largest JSON request body accepted, in bytes. CSV uploads have their own limit.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// The header that carries the request id.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The header that carries the correlation id.
pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The state shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// Aggregate stores and use cases.
    pub app: Arc<Application>,
    /// Users, sessions and tokens.
    pub accounts: Arc<Accounts>,
    /// The primary database: commands, and every read that must see the request's own
    /// writes or other data written outside the projections.
    pub pool: PgPool,
    /// The database that list and report endpoints read read models from: a streaming
    /// replica when `DATABASE_READ_URL` is set, else the same pool as `pool`. Its rows lag
    /// the primary by the replica's replay lag on top of the projection lag.
    pub read_pool: PgPool,
    /// Renders the Prometheus metrics.
    pub metrics: PrometheusHandle,
    /// The OpenAPI document, serialized once.
    pub openapi: Arc<String>,
}

/// Ids of the request being handled, set by the middleware for handlers to read.
#[derive(Debug, Clone, Copy)]
pub struct RequestIds {
    /// This request's id.
    pub request_id: Uuid,
    /// The id tying this request to others of one business operation.
    pub correlation_id: Uuid,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Staffing Referrals API",
        description = "Referral programs for staffing agencies: programs, ambassadors, referrals, payouts, analytics and audit.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "auth", description = "Invitations, sessions and multi-factor authentication"),
        (name = "users", description = "Users of an agency and their roles"),
        (name = "platform", description = "Agencies, for platform operators"),
        (name = "programs", description = "Referral programs and their versioned terms"),
        (name = "ambassadors", description = "People who refer candidates"),
        (name = "referrals", description = "Referrals through the hiring pipeline"),
        (name = "payouts", description = "Bonuses from request to payment"),
        (name = "imports", description = "CSV imports of timesheets and known candidates"),
        (name = "analytics", description = "Read models without personal data"),
        (name = "audit", description = "Event history and tamper evidence, for compliance auditors"),
        (name = "privacy", description = "Subject requests: access and erasure, for compliance auditors"),
    )
)]
struct ApiDoc;

/// Declares the bearer token scheme that secured endpoints name as `bearer`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Builds the router with every route, and the OpenAPI document that describes them.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(operations::get_healthz))
        .routes(routes!(operations::get_readyz))
        .routes(routes!(operations::get_metrics))
        .routes(routes!(operations::get_openapi))
        .merge(sessions::routes())
        .merge(users::routes())
        .merge(platform::routes())
        .merge(offboarding::routes())
        .merge(privacy::routes())
        .merge(agency_settings::routes())
        .merge(programs::routes())
        .merge(ambassadors::routes())
        .merge(referrals::routes())
        .merge(payouts::routes())
        .merge(timesheets::routes())
        .merge(known_candidates::routes())
        .merge(payout_exports::routes())
        .merge(analytics::routes())
        .merge(audit::routes())
        .merge(audit_chain::routes())
        .route_layer(middleware::from_fn(authorization::enforce_permissions))
        .split_for_parts();
    problem::document_client_errors(&mut openapi);
    (router, openapi)
}

/// Builds the whole application: routes, state and middleware, with every query on
/// `pool`.
///
/// # Panics
/// Panics when the OpenAPI document cannot be serialized, which is a programming error.
pub fn application(app: Arc<Application>, pool: PgPool) -> Router {
    application_with_read_pool(app, pool.clone(), pool)
}

/// Builds the whole application like [`application`], with list and report queries on
/// `read_pool`, typically a streaming replica of `pool`.
///
/// # Panics
/// Panics when the OpenAPI document cannot be serialized, which is a programming error.
pub fn application_with_read_pool(
    app: Arc<Application>,
    pool: PgPool,
    read_pool: PgPool,
) -> Router {
    let (router, openapi) = routes();
    let accounts = Arc::new(Accounts::new(pool.clone(), app.personal().vault().clone()));
    let state = AppState {
        app,
        accounts,
        pool,
        read_pool,
        metrics: metrics_handle(),
        openapi: Arc::new(openapi.to_json().expect("the OpenAPI document serializes")),
    };
    router
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal(&"a handler panicked").into_response()
        }))
        .layer(middleware::from_fn(request_context))
}

/// Returns the process-wide Prometheus recorder, installing it on first use.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

async fn unknown_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_route",
        "no endpoint has this path; see /openapi.json for the ones that exist",
    )
}

/// Assigns the request and correlation ids, opens the request span and sets the headers
/// every response carries.
async fn request_context(mut request: Request, next: Next) -> Response {
    let request_id = Uuid::now_v7();
    let correlation_id = request
        .headers()
        .get(&CORRELATION_ID)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| Uuid::parse_str(text).ok())
        .unwrap_or(request_id);
    request.extensions_mut().insert(RequestIds {
        request_id,
        correlation_id,
    });
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        %request_id,
        %correlation_id,
    );
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;

    let headers = response.headers_mut();
    headers.insert(REQUEST_ID.clone(), header_value(request_id));
    headers.insert(CORRELATION_ID.clone(), header_value(correlation_id));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Responses may carry personal data, so no cache along the way may keep them.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn header_value(id: Uuid) -> HeaderValue {
    HeaderValue::from_str(&id.to_string()).expect("a UUID is a valid header value")
}

/// Counts requests and measures their latency by route, method and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Turns the plain-text errors that axum produces itself (wrong method, body too large,
/// wrong content type) into problem responses, so clients see one error format.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| {
            value
                .as_bytes()
                .starts_with(problem::PROBLEM_JSON.as_bytes())
        });
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "this path does not accept this method; see /openapi.json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "body_too_large",
            format!("the request body is larger than {MAX_JSON_BODY} bytes"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        _ if status.is_server_error() => ApiError::internal(&format!("bare {status} response")),
        _ => ApiError::new(status, "bad_request", "the request was rejected"),
    };
    let mut problem = error.into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = response.headers().get(&name) {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    let _: Body = response.into_body();
    problem
}
