//! `Idempotency-Key`: a command repeated with the same key and body returns the first
//! response and runs nothing; the same key with another body is rejected (422).
//!
//! The first request inserts a pending record before it runs, so a second request with
//! the same key that arrives meanwhile gets 409 instead of running the command twice.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use referrals_domain::values::Sealed;
use referrals_store::accounts::Caller;
use referrals_store::crypto::{open_field, seal_field, Field};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::problem::ApiError;
use super::{AppState, MAX_JSON_BODY};

/// The request header that carries the key.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header that marks a replayed response.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Maximum key length, in bytes.
const MAX_KEY_LEN: usize = 255;
/// Response headers kept with the stored response.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::ETAG, header::LOCATION];

/// Applies the idempotency rules to commands (POST, PUT, PATCH, DELETE) that carry the
/// header and come from an authenticated caller.
pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let is_command = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let key = request.headers().get(&IDEMPOTENCY_KEY).cloned();
    let caller = request.extensions().get::<Caller>().cloned();
    let (Some(key), Some(caller), true) = (key, caller, is_command) else {
        return next.run(request).await;
    };
    match run_once(&state, &caller, &key, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run_once(
    state: &AppState,
    caller: &Caller,
    key: &HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let key = key
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters, such as a UUID"),
            )
            .with_field("Idempotency-Key")
            .into_response()
        })?
        .to_owned();
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_JSON_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {MAX_JSON_BODY} bytes"),
        )
        .into_response()
    })?;
    let mut digest = Sha256::new();
    digest.update(parts.method.as_str());
    digest.update(b"\n");
    digest.update(parts.uri.to_string());
    digest.update(b"\n");
    digest.update(&bytes);
    let request_hash = digest.finalize().to_vec();
    let agency_id = caller.tenant_id();

    let inserted = sqlx::query(
        "INSERT INTO idempotency_records (agency_id, user_id, key, request_hash)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(agency_id.0)
    .bind(caller.user_id.0)
    .bind(&key)
    .bind(&request_hash)
    .execute(&state.pool)
    .await
    .map_err(|error| ApiError::unavailable(&error).into_response())?
    .rows_affected()
        == 1;
    if !inserted {
        return Err(replay(state, caller, &key, &request_hash).await);
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX)
        .await
        .map_err(|error| ApiError::internal(&error).into_response())?;

    let outcome = if parts.status.is_server_error() {
        // A failure of ours: forget the key so that the client's retry runs the command.
        sqlx::query(
            "DELETE FROM idempotency_records WHERE agency_id = $1 AND user_id = $2 AND key = $3",
        )
        .bind(agency_id.0)
        .bind(caller.user_id.0)
        .bind(&key)
        .execute(&state.pool)
        .await
        .map(|_| ())
    } else {
        store(state, caller, &key, parts.status, &parts.headers, &body).await
    };
    if let Err(error) = outcome {
        tracing::warn!(%error, user_id = %caller.user_id, "recording an idempotent response failed");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn body_subject(caller: &Caller) -> Uuid {
    Uuid::new_v5(&caller.tenant_id().0, b"idempotency-records")
}

async fn store(
    state: &AppState,
    caller: &Caller,
    key: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    let agency_id = caller.tenant_id();
    let subject = body_subject(caller);
    let data_key = state
        .app
        .personal()
        .vault()
        .data_key_or_create(agency_id, subject)
        .await
        .map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
    let text = String::from_utf8_lossy(body);
    let sealed = seal_field(&data_key, agency_id, subject, Field::Note, &text);
    let kept: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), serde_json::Value::from(value)))
        })
        .collect();
    sqlx::query(
        "UPDATE idempotency_records SET status = $4, headers = $5, sealed_body = $6
          WHERE agency_id = $1 AND user_id = $2 AND key = $3",
    )
    .bind(agency_id.0)
    .bind(caller.user_id.0)
    .bind(key)
    .bind(i16::try_from(status.as_u16()).unwrap_or(500))
    .bind(serde_json::Value::Object(kept))
    .bind(sealed.0)
    .execute(&state.pool)
    .await
    .map(|_| ())
}

/// A stored record: request hash, status, kept headers and sealed body.
type StoredRecord = (
    Vec<u8>,
    Option<i16>,
    Option<serde_json::Value>,
    Option<String>,
);

/// Builds the response to a repeated key: the stored response, or why there is none.
async fn replay(state: &AppState, caller: &Caller, key: &str, request_hash: &[u8]) -> Response {
    let row: Result<Option<StoredRecord>, _> = sqlx::query_as(
        "SELECT request_hash, status, headers, sealed_body FROM idempotency_records
              WHERE agency_id = $1 AND user_id = $2 AND key = $3",
    )
    .bind(caller.tenant_id().0)
    .bind(caller.user_id.0)
    .bind(key)
    .fetch_optional(&state.pool)
    .await;
    let (stored_hash, status, headers, sealed_body) = match row {
        Ok(Some(row)) => row,
        Ok(None) => {
            return ApiError::version_conflict("request with this Idempotency-Key").into_response()
        }
        Err(error) => return ApiError::unavailable(&error).into_response(),
    };
    if stored_hash != request_hash {
        return ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request; use a new key for a new request",
        )
        .with_field("Idempotency-Key")
        .into_response();
    }
    let (Some(status), Some(sealed_body)) = (status, sealed_body) else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "request_in_progress",
            "the first request with this Idempotency-Key is still running; retry shortly",
        )
        .into_response();
    };

    let agency_id = caller.tenant_id();
    let subject = body_subject(caller);
    let body = match state
        .app
        .personal()
        .vault()
        .data_key(agency_id, subject)
        .await
    {
        Ok(data_key) => open_field(
            &data_key,
            agency_id,
            subject,
            Field::Note,
            &Sealed(sealed_body),
        ),
        Err(error) => return ApiError::internal(&error).into_response(),
    };
    let body = match body {
        Ok(body) => body,
        Err(error) => return ApiError::internal(&error).into_response(),
    };
    let mut response = (
        StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
        body,
    )
        .into_response();
    if let Some(serde_json::Value::Object(headers)) = headers {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response.headers_mut().insert(
        IDEMPOTENT_REPLAYED.clone(),
        HeaderValue::from_static("true"),
    );
    response
}
