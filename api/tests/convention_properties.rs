//! Property tests of the HTTP parsers shared by every route: ids, cursors, page limits and
//! `If-Match`. Any input gets a value or a 400 without a panic, and what the API writes
//! (ids, cursors, ETags) parses back to the same value.

use axum::extract::FromRequestParts;
use axum::http::{header, HeaderValue, Request, StatusCode};
use proptest::prelude::*;
use referrals_api::http::conventions::{cursor, etag, parse_id, IfMatch, PageQuery, MAX_LIMIT};
use uuid::Uuid;

/// A list position like the ones the lists encode: a timestamp-like number, text and an id.
type Position = (i64, String, Uuid);

fn if_match(value: HeaderValue) -> Result<Option<usize>, StatusCode> {
    let (mut parts, ()) = Request::builder()
        .header(header::IF_MATCH, value)
        .body(())
        .unwrap()
        .into_parts();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(IfMatch::from_request_parts(&mut parts, &()))
        .map(|IfMatch(version)| version)
        .map_err(|error| error.status())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn id_parser_never_panics(text in any::<String>()) {
        if let Err(error) = parse_id("id", &text) {
            prop_assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            prop_assert_eq!(error.code(), "invalid_id");
        }
    }

    #[test]
    fn ids_round_trip(bytes in any::<[u8; 16]>()) {
        let id = Uuid::from_bytes(bytes);
        prop_assert_eq!(parse_id("id", &id.to_string()).unwrap(), id);
        prop_assert_eq!(parse_id("id", &format!(" {} ", id.simple())).unwrap(), id);
    }

    #[test]
    fn cursor_parser_never_panics(text in any::<String>()) {
        let query = PageQuery { limit: None, cursor: Some(text) };
        if let Err(error) = query.position::<Position>() {
            prop_assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            prop_assert_eq!(error.code(), "invalid_cursor");
        }
    }

    #[test]
    fn base64_cursor_parser_never_panics(text in "[A-Za-z0-9_-]{0,200}") {
        let query = PageQuery { limit: None, cursor: Some(text) };
        let _ = query.position::<Position>();
        let _ = query.position::<(String, i64)>();
    }

    #[test]
    fn cursors_round_trip(number in any::<i64>(), text in any::<String>(), bytes in any::<[u8; 16]>()) {
        let position: Position = (number, text, Uuid::from_bytes(bytes));
        let query = PageQuery { limit: None, cursor: Some(cursor(&position)) };
        prop_assert_eq!(query.position::<Position>().unwrap(), Some(position));
    }

    #[test]
    fn limit_accepts_only_page_sizes(limit in any::<i64>()) {
        let query = PageQuery { limit: Some(limit), cursor: None };
        match query.limit() {
            Ok(accepted) => prop_assert!((1..=MAX_LIMIT).contains(&accepted) && accepted == limit),
            Err(error) => {
                prop_assert!(!(1..=MAX_LIMIT).contains(&limit));
                prop_assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            }
        }
    }

    #[test]
    fn if_match_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            if let Err(status) = if_match(value) {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
            }
        }
    }

    #[test]
    fn etags_round_trip_through_if_match(version in any::<usize>(), weak in any::<bool>()) {
        let tag = etag(version);
        let value = if weak {
            HeaderValue::from_str(&format!("W/{}", tag.to_str().unwrap())).unwrap()
        } else {
            tag
        };
        prop_assert_eq!(if_match(value).unwrap(), Some(version));
    }
}
