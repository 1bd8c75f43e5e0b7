//! Operations endpoints outside `/v1`: liveness, readiness, Prometheus metrics and the
//! OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::ApiError;
use super::AppState;

/// Liveness and readiness answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when the check passed.
    pub status: &'static str,
}

/// Reports that the process is up; checks nothing else.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn get_healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Reports whether the service can serve requests: the database answers and every
/// migration this build knows has been applied.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Database unreachable or migrations missing", body = super::problem::Problem)))]
pub async fn get_readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&state.pool)
        .await
        .map_err(|error| ApiError::unavailable(&error))?;
    let known = referrals_store::database::MIGRATOR.iter().count() as i64;
    if applied < known {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "migrations_pending",
            format!(
                "{} of {known} migrations are applied; run `referrals migrate`",
                applied
            ),
        ));
    }
    Ok(Json(Health { status: "ok" }))
}

/// Serves the Prometheus metrics in the text exposition format, with the lag of every
/// projection measured at the time of the scrape.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    record_projection_lag(&state).await;
    record_replica_lag(&state).await;
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Sets `projection_lag_events` and `projection_lag_seconds` for every projection. A
/// failed query leaves the previous figures and is logged: the scrape still answers.
async fn record_projection_lag(state: &AppState) {
    let read_models = referrals_projections::models::all();
    let mut names: Vec<&str> = read_models
        .iter()
        .map(|projection| projection.name())
        .collect();
    names.push(referrals_store::application::PAYOUT_REQUESTER_JOB);
    match referrals_projections::status::projection_status(&state.pool, &names).await {
        Ok(statuses) => {
            for status in statuses {
                let labels = [("projection", status.name.clone())];
                metrics::gauge!("projection_lag_events", &labels).set(status.events_behind as f64);
                metrics::gauge!("projection_lag_seconds", &labels).set(status.seconds_behind);
                metrics::gauge!("projection_stopped", &labels).set(if status.failure.is_some() {
                    1.0
                } else {
                    0.0
                });
            }
        }
        Err(error) => tracing::warn!(%error, "reading projection lag for the metrics failed"),
    }
}

/// Sets `read_replica_lag_bytes` and `read_replica_lag_seconds` when list endpoints read
/// from a streaming replica. Read models seen through the replica are behind the events
/// by the projection lag plus this lag. A failed query is logged and leaves the previous
/// figures.
async fn record_replica_lag(state: &AppState) {
    match referrals_store::replica::replica_lag(&state.pool, &state.read_pool).await {
        Ok(lag) if lag.is_standby => {
            metrics::gauge!("read_replica_lag_bytes").set(lag.bytes);
            metrics::gauge!("read_replica_lag_seconds").set(lag.seconds);
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "reading the replica lag for the metrics failed"),
    }
}

/// Serves the OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn get_openapi(State(state): State<AppState>) -> Response {
    let openapi: Arc<String> = state.openapi.clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi.as_str().to_owned(),
    )
        .into_response()
}
