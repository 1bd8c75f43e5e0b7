//! A stand-in for the SendGrid Mail Send API on loopback: accepts every
//! `POST /v3/mail/send` with 202 and records the `custom_args.dedupe_key` of each
//! request, in arrival order, repeats included.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

/// A running mock; the server task stops when the test's runtime ends.
pub struct MockSendGrid {
    /// `http://127.0.0.1:PORT`, for `SENDGRID_BASE_URL`.
    pub base_url: String,
    received: Arc<Mutex<Vec<String>>>,
}

impl MockSendGrid {
    /// Binds a free loopback port and starts serving.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v3/mail/send", post(accept))
            .with_state(received.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base_url: format!("http://{address}"),
            received,
        }
    }

    /// Returns the dedupe keys received so far, one per request.
    pub fn dedupe_keys(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Returns the environment that points `referrals serve` at this mock.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SENDGRID_BASE_URL", self.base_url.clone()),
            ("SENDGRID_API_KEY", "test-key".to_owned()),
            ("SENDGRID_FROM_EMAIL", "referrals@example.com".to_owned()),
        ]
    }
}

/// Records the request's dedupe key. A request without one is recorded as an empty key,
/// which the check then reports as a key that matches no outbox row.
async fn accept(
    State(received): State<Arc<Mutex<Vec<String>>>>,
    Json(body): Json<Value>,
) -> StatusCode {
    let key = body["personalizations"][0]["custom_args"]["dedupe_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    received.lock().unwrap().push(key);
    StatusCode::ACCEPTED
}
