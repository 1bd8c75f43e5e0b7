//! Audit reads for compliance auditors: the history of one aggregate with its metadata,
//! its replayed state at a past time or version, the agency's event feed and the
//! streaming NDJSON export of that feed.
//!
//! History and state open sealed personal fields and record the read in the access log.
//! The feed and the export leave sealed fields as stored (`v1.` ciphertext), so bulk
//! reads reveal no personal data.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use referrals_domain::ambassador::Ambassador;
use referrals_domain::ids::AgencyId;
use referrals_domain::payout::Payout;
use referrals_domain::program::Program;
use referrals_domain::referral::Referral;
use referrals_domain::user::User;
use referrals_store::application::{AppError, HistoryPoint};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::access_log::{record_access, SubjectType};
use super::audit_events::{
    aggregate_history, export_events, feed_page, open_sealed_fields, AuditEvent, FeedFilter,
    FeedPosition, LineSink,
};
use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{cursor, database_error, parse_id, query_error, Page, PageQuery};
use super::problem::{ApiError, Problem};
use super::referrals::PastStateQuery;
use super::AppState;

/// Routes of the audit reads, the access log and the access review.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_aggregate_history))
        .routes(routes!(get_aggregate_state))
        .routes(routes!(list_events))
        .routes(routes!(export_events_ndjson))
        .merge(super::access_log::routes())
        .merge(super::access_review::routes())
}

/// The aggregate types an auditor can name in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggregateKind {
    Referral,
    Payout,
    Ambassador,
    Program,
    User,
}

impl AggregateKind {
    fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "referral" => Ok(Self::Referral),
            "payout" => Ok(Self::Payout),
            "ambassador" => Ok(Self::Ambassador),
            "program" => Ok(Self::Program),
            "user" => Ok(Self::User),
            _ => Err(ApiError::bad_request(
                "invalid_aggregate_type",
                "aggregate_type must be one of referral, payout, ambassador, program, user",
            )
            .with_field("aggregate_type")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::Payout => "payout",
            Self::Ambassador => "ambassador",
            Self::Program => "program",
            Self::User => "user",
        }
    }

    /// Whose personal data the aggregate holds; `None` for aggregates without any.
    fn subject_type(self) -> Option<SubjectType> {
        match self {
            Self::Referral => Some(SubjectType::Candidate),
            Self::Ambassador => Some(SubjectType::Ambassador),
            Self::User => Some(SubjectType::User),
            Self::Payout | Self::Program => None,
        }
    }
}

/// Every event of one aggregate.
#[derive(Debug, Serialize, ToSchema)]
pub struct AggregateHistory {
    /// The events in sequence order.
    pub items: Vec<AuditEvent>,
}

/// Reads the full history of one aggregate with each event's metadata. Sealed personal
/// fields are shown decrypted, or as `"[erased]"` once the subject was erased; password
/// hashes and TOTP secrets are shown as `"[secret]"`. The read is recorded in the access
/// log.
#[utoipa::path(get, path = "/v1/audit/{aggregate_type}/{id}/events", tag = "audit", security(("bearer" = [])),
    params(
        ("aggregate_type" = String, Path, description = "referral, payout, ambassador, program or user"),
        ("id" = Uuid, Path, description = "The aggregate's id"),
    ),
    responses(
        (status = 200, description = "The events in sequence order", body = AggregateHistory),
        (status = 400, description = "The aggregate type or id is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only compliance auditors read audit history", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such aggregate in the caller's agency", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_aggregate_history(
    State(state): State<AppState>,
    caller: Authenticated,
    Path((aggregate_type, id)): Path<(String, String)>,
) -> Result<Json<AggregateHistory>, ApiError> {
    let permitted = caller.authorize(Action::ReadAudit)?;

    let kind = AggregateKind::parse(&aggregate_type)?;
    let id = parse_id("id", &id)?;

    let mut items = aggregate_history(
        &state.pool,
        permitted.agency_id,
        kind.as_str(),
        &id.to_string(),
    )
    .await
    .map_err(database_error)?;
    if items.is_empty() {
        return Err(ApiError::not_found(kind.as_str()));
    }
    let mut payloads: Vec<&mut Value> = items.iter_mut().map(|event| &mut event.payload).collect();
    open_sealed_fields(
        state.app.personal(),
        permitted.agency_id,
        kind.as_str(),
        id,
        &mut payloads,
    )
    .await
    .map_err(AppError::from)?;
    if let Some(subject_type) = kind.subject_type() {
        let endpoint = "GET /v1/audit/{aggregate_type}/{id}/events";
        record_access(&state, &permitted, subject_type, id, endpoint).await?;
    }

    Ok(Json(AggregateHistory { items }))
}

/// An aggregate's state rebuilt from its events.
#[derive(Debug, Serialize, ToSchema)]
pub struct AggregateState {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: Uuid,
    /// The version of the state: the sequence of the last event applied.
    pub version: usize,
    /// The aggregate's state as the domain stores it in snapshots, with sealed fields
    /// opened as in the history.
    #[schema(value_type = Object)]
    pub state: Value,
}

/// Reads an aggregate's state after every event up to `as_of` or `version`, or its
/// current state when neither is given, rebuilt from its events. Sealed fields are
/// opened as in the history, and the read is recorded in the access log.
#[utoipa::path(get, path = "/v1/audit/{aggregate_type}/{id}/state", tag = "audit", security(("bearer" = [])),
    params(
        ("aggregate_type" = String, Path, description = "referral, payout, ambassador, program or user"),
        ("id" = Uuid, Path, description = "The aggregate's id"),
        PastStateQuery,
    ),
    responses(
        (status = 200, description = "The replayed state", body = AggregateState),
        (status = 400, description = "The aggregate type, id, `as_of` or `version` is invalid, or both of them were given", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only compliance auditors read audit history", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such aggregate in the caller's agency, or none at that time or version", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_aggregate_state(
    State(state): State<AppState>,
    caller: Authenticated,
    Path((aggregate_type, id)): Path<(String, String)>,
    query: Result<Query<PastStateQuery>, QueryRejection>,
) -> Result<Json<AggregateState>, ApiError> {
    let permitted = caller.authorize(Action::ReadAudit)?;

    let kind = AggregateKind::parse(&aggregate_type)?;
    let id = parse_id("id", &id)?;
    let Query(query) = query.map_err(query_error)?;
    let point = query
        .history_point()?
        .unwrap_or_else(|| HistoryPoint::Time(Utc::now()));

    let (mut replayed, version) = replay(&state, permitted.agency_id, kind, id, point)
        .await?
        .ok_or_else(|| ApiError::not_found(kind.as_str()))?;
    open_sealed_fields(
        state.app.personal(),
        permitted.agency_id,
        kind.as_str(),
        id,
        &mut [&mut replayed],
    )
    .await
    .map_err(AppError::from)?;
    if let Some(subject_type) = kind.subject_type() {
        let endpoint = "GET /v1/audit/{aggregate_type}/{id}/state";
        record_access(&state, &permitted, subject_type, id, endpoint).await?;
    }

    Ok(Json(AggregateState {
        aggregate_type: kind.as_str().to_owned(),
        aggregate_id: id,
        version,
        state: replayed,
    }))
}

/// Replays one aggregate up to `point` and returns its state as JSON with its version.
async fn replay(
    state: &AppState,
    agency_id: AgencyId,
    kind: AggregateKind,
    id: Uuid,
    point: HistoryPoint,
) -> Result<Option<(Value, usize)>, ApiError> {
    async fn as_json<A: cqrs_es::Aggregate>(
        state: &AppState,
        agency_id: AgencyId,
        id: Uuid,
        point: HistoryPoint,
    ) -> Result<Option<(Value, usize)>, ApiError> {
        let Some((aggregate, version)) = state
            .app
            .state_at::<A>(agency_id, &id.to_string(), point)
            .await?
        else {
            return Ok(None);
        };
        let json = serde_json::to_value(&aggregate).map_err(|error| ApiError::internal(&error))?;
        Ok(Some((json, version)))
    }
    match kind {
        AggregateKind::Referral => as_json::<Referral>(state, agency_id, id, point).await,
        AggregateKind::Payout => as_json::<Payout>(state, agency_id, id, point).await,
        AggregateKind::Ambassador => as_json::<Ambassador>(state, agency_id, id, point).await,
        AggregateKind::Program => as_json::<Program>(state, agency_id, id, point).await,
        AggregateKind::User => as_json::<User>(state, agency_id, id, point).await,
    }
}

/// Filters of the event feed and the export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Only events recorded at or after this RFC 3339 time.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Only events recorded before this RFC 3339 time.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    /// Only events of this type, such as `ReferralHired`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
}

impl FeedQuery {
    fn filter(&self, agency_id: AgencyId) -> Result<FeedFilter, ApiError> {
        Ok(FeedFilter {
            agency_id: Some(agency_id),
            from: parse_time("from", self.from.as_deref())?,
            to: parse_time("to", self.to.as_deref())?,
            event_type: self.event_type.clone(),
        })
    }
}

fn parse_time(
    parameter: &'static str,
    text: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    // A `+` in a query string arrives as a space unless the client encoded it.
    DateTime::parse_from_rfc3339(&text.trim().replace(' ', "+"))
        .map(|at| Some(at.with_timezone(&Utc)))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_time",
                format!("{parameter} must be an RFC 3339 time such as 2026-03-01T09:30:00Z"),
            )
            .with_field(parameter)
        })
}

/// Lists the agency's events in the order they were stored, optionally filtered by time
/// range and event type. Sealed fields stay sealed; read an aggregate's history to open
/// them.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", security(("bearer" = [])),
    params(FeedQuery, PageQuery),
    responses(
        (status = 200, description = "One page of events in global order", body = Page<AuditEvent>),
        (status = 400, description = "A time, limit or cursor is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only compliance auditors read the event feed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Authenticated,
    feed: Result<Query<FeedQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<AuditEvent>>, ApiError> {
    let permitted = caller.authorize(Action::ReadAudit)?;

    let Query(feed) = feed.map_err(query_error)?;
    let Query(page) = page.map_err(query_error)?;
    let filter = feed.filter(permitted.agency_id)?;
    let limit = page.limit()?;
    let after: Option<FeedPosition> = page.position()?;

    let mut rows = feed_page(&state.pool, &filter, after, limit + 1)
        .await
        .map_err(database_error)?;
    let next_cursor = if rows.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        rows.pop();
        rows.last().map(|(place, _)| cursor(place))
    } else {
        None
    };
    let items = rows.into_iter().map(|(_, event)| event).collect();
    Ok(Json(Page { items, next_cursor }))
}

/// Bytes of NDJSON collected before a chunk is sent to the client.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued between the database reader and the client; bounds the memory an
/// export holds when the client reads slower than the database.
const EXPORT_QUEUED_CHUNKS: usize = 4;

/// Streams the agency's events as NDJSON, one event per line in global order, with the
/// feed's filters. Sealed fields stay sealed.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", security(("bearer" = [])),
    params(FeedQuery),
    responses(
        (status = 200, description = "One JSON event per line, streamed", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "A time is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only compliance auditors export events", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_events_ndjson(
    State(state): State<AppState>,
    caller: Authenticated,
    feed: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ReadAudit)?;

    let Query(feed) = feed.map_err(query_error)?;
    let filter = feed.filter(permitted.agency_id)?;

    let (sender, receiver) = mpsc::channel(EXPORT_QUEUED_CHUNKS);
    let pool = state.pool.clone();
    let agency_id = permitted.agency_id;
    tokio::spawn(async move {
        let mut sink = ChunkSink {
            sender,
            buffer: Vec::with_capacity(EXPORT_CHUNK_BYTES),
        };
        let outcome = export_events(&pool, &filter, &mut sink).await;
        match outcome {
            Ok(events) => {
                if sink.flush().await.is_ok() {
                    tracing::info!(%agency_id, events, "audit export sent");
                }
            }
            // The status line is already sent, so the client sees a truncated body: the
            // last line is incomplete or missing and the chunked stream ends abnormally.
            Err(error) => {
                tracing::error!(%agency_id, error = %error, "audit export failed");
                let _ = sink
                    .sender
                    .send(Err(std::io::Error::other("the export failed")))
                    .await;
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });

    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Collects lines into chunks and hands them to the response body.
struct ChunkSink {
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChunkSink {
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(EXPORT_CHUNK_BYTES),
        ));
        self.sender
            .send(Ok(chunk))
            .await
            .map_err(|_| anyhow::anyhow!("the client closed the export"))
    }
}

impl LineSink for ChunkSink {
    async fn write_line(&mut self, line: Vec<u8>) -> anyhow::Result<()> {
        self.buffer.extend_from_slice(&line);
        if self.buffer.len() >= EXPORT_CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }
}
