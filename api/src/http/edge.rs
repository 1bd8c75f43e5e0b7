//! Headers for browsers that depend on how the server is deployed: HSTS under TLS, and
//! CORS for the origins the operator lists. `X-Content-Type-Options` and `Cache-Control`
//! do not depend on the deployment and are set for every response in this module's
//! parent.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// `Strict-Transport-Security` sent under TLS: browsers use HTTPS for this host for one
/// year. Subdomains are left out because they may be served by other systems.
pub const HSTS: &str = "max-age=31536000";

/// How long a browser may cache a CORS preflight response, in seconds.
const PREFLIGHT_MAX_AGE_SECONDS: u64 = 600;

/// Deployment-dependent response headers.
#[derive(Debug, Clone, Default)]
pub struct EdgeOptions {
    /// Whether the server speaks HTTPS, which turns on HSTS.
    pub https: bool,
    /// Origins that browsers may call the API from. CORS is closed when empty: the server
    /// sends no `Access-Control-Allow-Origin`, so browsers block cross-origin reads.
    pub cors_origins: Vec<HeaderValue>,
}

/// Errors in `CORS_ALLOWED_ORIGINS`.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// `*` was given.
    #[error(
        "CORS_ALLOWED_ORIGINS: \"*\" is not accepted because it would let any web page call \
         the API with a user's token; list the origins, e.g. https://app.example.com"
    )]
    Wildcard,
    /// An entry is not `scheme://host[:port]`.
    #[error(
        "CORS_ALLOWED_ORIGINS: {origin:?} is not an origin; write scheme://host[:port] \
         with no path or trailing slash, e.g. https://app.example.com"
    )]
    Invalid {
        /// The entry as given.
        origin: String,
    },
}

/// Parses the comma-separated entries of `CORS_ALLOWED_ORIGINS`. Blank entries are
/// skipped, so an empty variable means no origin.
///
/// # Errors
/// Returns an error for `*` or an entry that is not an `http` or `https` origin.
pub fn parse_cors_origins(entries: &[String]) -> Result<Vec<HeaderValue>, OriginError> {
    let mut origins = Vec::new();
    for entry in entries.iter().map(|entry| entry.trim()) {
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            return Err(OriginError::Wildcard);
        }
        let invalid = || OriginError::Invalid {
            origin: entry.to_owned(),
        };
        let host = entry
            .strip_prefix("https://")
            .or_else(|| entry.strip_prefix("http://"))
            .ok_or_else(invalid)?;
        // Browsers send the origin without path, query or user info.
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(invalid());
        }
        origins.push(HeaderValue::from_str(entry).map_err(|_| invalid())?);
    }
    Ok(origins)
}

/// Wraps the whole application in the HSTS and CORS layers that `options` ask for. They
/// sit outside every other layer, so the CORS layer replies to a preflight before authentication runs.
pub fn with_edge_layers(router: Router, options: &EdgeOptions) -> Router {
    let router = if options.https {
        router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ))
    } else {
        router
    };
    if options.cors_origins.is_empty() {
        return router;
    }
    router.layer(cors_layer(options.cors_origins.clone()))
}

fn cors_layer(origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            HeaderName::from_static("idempotency-key"),
            super::CORRELATION_ID.clone(),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            super::REQUEST_ID.clone(),
            super::CORRELATION_ID.clone(),
        ])
        .max_age(Duration::from_secs(PREFLIGHT_MAX_AGE_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<String> {
        list.iter().map(|entry| (*entry).to_owned()).collect()
    }

    #[test]
    fn origins_parse_and_skip_blanks() {
        let origins = parse_cors_origins(&entries(&[
            "https://app.example.com",
            " ",
            "http://localhost:3000",
        ]))
        .unwrap();
        assert_eq!(
            origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
    }

    #[test]
    fn origins_reject_wildcard() {
        assert!(matches!(
            parse_cors_origins(&entries(&["*"])),
            Err(OriginError::Wildcard)
        ));
    }

    #[test]
    fn origins_reject_paths_and_schemes() {
        for entry in [
            "https://app.example.com/",
            "app.example.com",
            "ftp://x",
            "https://",
        ] {
            assert!(
                matches!(
                    parse_cors_origins(&entries(&[entry])),
                    Err(OriginError::Invalid { .. })
                ),
                "{entry} was accepted"
            );
        }
    }
}
