//! Conventions shared by the resource endpoints: `ETag` and `If-Match` for versions,
//! opaque cursors for lists, ids in paths, and the responses that carry a version.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use referrals_domain::values::FreeText;
use referrals_domain::DomainError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::problem::ApiError;

/// The `ETag` of an aggregate at `version`.
pub fn etag(version: usize) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes are a valid header")
}

/// The version a command expects, from `If-Match: "<version>"`; `None` without the header.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<usize>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let version = value
            .to_str()
            .ok()
            .map(|text| text.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|text| text.parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_if_match",
                    "If-Match must be the ETag of a previous read, such as \"3\"",
                )
                .with_field("If-Match")
            })?;
        Ok(Self(Some(version)))
    }
}

/// Default number of items in a list page.
pub const DEFAULT_LIMIT: i64 = 50;
/// Maximum number of items in a list page.
pub const MAX_LIMIT: i64 = 500;

/// Paging parameters of every list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size.
    ///
    /// # Errors
    /// 400 when the limit is outside 1 to 500.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
            Some(limit) => Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit {limit} is out of range; use 1 to {MAX_LIMIT}"),
            )
            .with_field("limit")),
        }
    }

    /// Decodes the cursor into the position type of a list.
    ///
    /// # Errors
    /// 400 when the cursor was not produced by this API.
    pub fn position<T: DeserializeOwned>(&self) -> Result<Option<T>, ApiError> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "cursor is not one this API returned; start again without it",
                )
                .with_field("cursor")
            })
    }
}

/// Encodes a list position as an opaque cursor.
pub fn cursor<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).expect("positions serialize"))
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Parses a UUID from a path or query parameter.
///
/// # Errors
/// 400 `invalid_id` naming `parameter` when the text is not a UUID.
pub fn parse_id(parameter: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("{parameter} must be a UUID such as 0190f6d2-7c4e-7a35-9d4b-2f1e8c3a5b60"),
        )
        .with_field(parameter)
    })
}

/// Turns axum's plain-text query rejection into a problem. axum's message names the
/// parameter and the expected type; query values here are ids, limits and cursors, never
/// personal data.
pub fn query_error(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(
        "invalid_query",
        format!(
            "the query string is invalid ({}); see /openapi.json for the parameters",
            rejection.body_text()
        ),
    )
}

/// Maps a failed read-model query: 503 when the database is out of reach, 500 otherwise.
pub fn database_error(error: sqlx::Error) -> ApiError {
    if referrals_store::database::is_unavailable(&error) {
        ApiError::unavailable(&error)
    } else {
        ApiError::internal(&error)
    }
}

/// A 200 response with the resource's version as its `ETag`.
pub fn respond<T: Serialize>(version: usize, body: T) -> Result<Response, ApiError> {
    Ok(([(header::ETAG, etag(version))], Json(body)).into_response())
}

/// A 201 response with the new resource's URL as `Location` and its version as `ETag`.
pub fn created<T: Serialize>(
    location: &str,
    version: usize,
    body: T,
) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(location).map_err(|error| ApiError::internal(&error))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::ETAG, etag(version))],
        Json(body),
    )
        .into_response())
}

/// Takes a UUID from a typed path, naming `parameter` when it is not one.
///
/// # Errors
/// 400 `invalid_id` naming `parameter`.
pub fn path_id(path: Result<Path<Uuid>, PathRejection>, parameter: &str) -> Result<Uuid, ApiError> {
    let Path(id) = path.map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("{parameter} must be a UUID such as 0190f6d2-7c4e-7a35-9d4b-2f1e8c3a5b60"),
        )
        .with_field(parameter)
    })?;
    Ok(id)
}

/// Parses a free-text field (a reason or note), naming `field` when it is invalid or contains
/// something that must not be stored, such as a card number.
///
/// # Errors
/// 422 naming `field`.
pub fn parse_free_text(field: &str, text: &str) -> Result<FreeText, ApiError> {
    FreeText::parse(text).map_err(|error| DomainError::from(error.for_field(field)).into())
}
