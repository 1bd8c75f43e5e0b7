//! Request bodies: strict JSON that names the field and the fix on every mistake.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::problem::ApiError;

/// A JSON body decoded into `T`. Request types reject unknown fields
/// (`#[serde(deny_unknown_fields)]`), so a misspelled field is an error, not a silent
/// default.
///
/// Rejections: 415 for another content type, 413 past the body limit, 400 for text that
/// is not JSON, 422 for JSON of the wrong shape, naming the field.
#[derive(Debug, Clone)]
pub struct StrictJson<T>(pub T);

impl<T, S> FromRequest<S> for StrictJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!(
                            "the request body is larger than {} bytes",
                            super::MAX_JSON_BODY
                        ),
                    )
                } else {
                    ApiError::bad_request("unreadable_body", "the request body could not be read")
                }
            })?;
        decode(&bytes).map(StrictJson)
    }
}

/// Decodes JSON, mapping serde's errors to problems that name the field.
///
/// # Errors
/// 400 `malformed_json` for text that is not JSON, 422 `invalid_body` otherwise.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::bad_request(
                    "malformed_json",
                    format!("the body is not valid JSON: {inner}"),
                )
            }
            _ => {
                // serde's messages quote the offending value for some errors; values can
                // be personal data, so the message keeps only the kind of mistake.
                let reason = describe_data_error(&inner.to_string());
                let field = if path == "." {
                    None
                } else {
                    Some(path.clone())
                };
                let detail = match &field {
                    Some(field) => format!("{field}: {reason}"),
                    None => reason,
                };
                let error = ApiError::unprocessable("invalid_body", detail);
                match field {
                    Some(field) => error.with_field(field),
                    None => error,
                }
            }
        }
    })
}

/// Keeps serde's description of a data error without the value it quotes.
fn describe_data_error(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.split(", expected ").nth(1).unwrap_or("another type");
        return format!("wrong type, expected {expected}");
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let expected = rest.split(", expected ").nth(1).unwrap_or("another value");
        return format!("invalid value, expected {expected}");
    }
    // uuid and chrono describe what was wrong with the text but not what was expected.
    if message.starts_with("UUID parsing failed") {
        return "invalid id, expected a UUID such as 0192d3f4-6a1b-7c2d-8e3f-405162738495"
            .to_owned();
    }
    if CHRONO_PARSE_ERRORS.contains(&message) {
        return format!(
            "{message}, expected a date such as 2026-01-05 (YYYY-MM-DD) or a UTC time such \
             as 2026-01-05T09:30:00Z"
        );
    }
    message.to_owned()
}

/// The messages of chrono's `ParseError` (chrono 0.4), which name no expected format.
const CHRONO_PARSE_ERRORS: [&str; 6] = [
    "input is out of range",
    "no possible date and time matching input",
    "input is not enough for unique date and time",
    "input contains invalid characters",
    "premature end of input",
    "trailing input",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
    }

    #[test]
    fn unknown_field_names_it() {
        let error = decode::<Body>(br#"{"name":"a","count":1,"colour":"red"}"#).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.code(), "invalid_body");
    }

    #[test]
    fn wrong_type_hides_the_value() {
        let error = decode::<Body>(br#"{"name":"secret@example.com","count":"x"}"#).unwrap_err();
        let detail = format!("{error:?}");
        assert!(detail.contains("count"), "{detail}");
        assert!(!detail.contains("\"x\""), "{detail}");
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Dated {
        id: uuid::Uuid,
        start_date: chrono::NaiveDate,
    }

    #[test]
    fn bad_uuid_and_date_say_what_is_expected() {
        let id = format!(
            "{:?}",
            decode::<Dated>(br#"{"id":"prog-1","start_date":"2026-01-05"}"#).unwrap_err()
        );
        assert!(id.contains("expected a UUID such as"), "{id}");
        assert!(!id.contains("prog-1"), "{id}");
        let date = format!(
            "{:?}",
            decode::<Dated>(
                br#"{"id":"0192d3f4-6a1b-7c2d-8e3f-405162738495","start_date":"2026-13-45"}"#
            )
            .unwrap_err()
        );
        assert!(
            date.contains("start_date: input is out of range, expected a date such as"),
            "{date}"
        );
    }

    #[test]
    fn malformed_text_is_bad_request() {
        let error = decode::<Body>(b"{not json").unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }
}
