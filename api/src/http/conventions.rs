//! Conventions shared by the resource endpoints: `ETag` and `If-Match` for versions, and
//! opaque cursors for lists.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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
