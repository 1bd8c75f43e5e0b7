//! Delivery providers: SendGrid for e-mail, TextUs for SMS, and a JSON Lines file sink
//! that replaces either one when it is not configured.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::outbox::Channel;

/// How long one provider request may take before it counts as a failed attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A message ready to send, with the resolved address.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The outbox row's dedupe key, passed to providers that accept one.
    pub dedupe_key: String,
    /// The channel.
    pub channel: Channel,
    /// E-mail address or E.164 phone number.
    pub to: String,
    /// Subject line; e-mail only.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Failure of one attempt. The text names the provider status or transport error and
/// never the address.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(pub String);

/// Sends messages of one channel.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Sends one message; `Ok` means the provider accepted it.
    ///
    /// # Errors
    /// Returns a [`SendError`] for a transport failure or a non-2xx response.
    async fn send(&self, message: &OutgoingMessage) -> Result<(), SendError>;
}

fn http_client() -> Result<reqwest::Client, SendError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|error| SendError(format!("building the HTTP client failed: {error}")))
}

/// Turns a response into the attempt's outcome; the body is not read, because
/// providers may echo the address in it.
fn check_status(
    provider: &str,
    response: reqwest::Result<reqwest::Response>,
) -> Result<(), SendError> {
    match response {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(SendError(format!(
            "{provider} returned HTTP {}",
            response.status().as_u16()
        ))),
        // Without the URL, which is configuration and would only lengthen the logs.
        Err(error) => Err(SendError(format!(
            "{provider} request failed: {}",
            error.without_url()
        ))),
    }
}

/// E-mail through the SendGrid v3 Mail Send API: `POST {base}/v3/mail/send` with a
/// Bearer API key and a JSON body of `personalizations`, `from`, `subject` and
/// `content`. SendGrid returns 202 when it accepts the message.
pub struct SendGrid {
    client: reqwest::Client,
    url: String,
    api_key: String,
    from: String,
}

impl SendGrid {
    /// Creates the provider for `base_url` (such as `https://api.sendgrid.com`).
    ///
    /// # Errors
    /// Returns a [`SendError`] when the HTTP client cannot be built.
    pub fn new(base_url: &str, api_key: String, from: String) -> Result<Self, SendError> {
        Ok(Self {
            client: http_client()?,
            url: format!("{}/v3/mail/send", base_url.trim_end_matches('/')),
            api_key,
            from,
        })
    }
}

#[async_trait]
impl Provider for SendGrid {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), SendError> {
        let body = json!({
            "personalizations": [{
                "to": [{ "email": message.to }],
                // Echoed in SendGrid's event webhooks, to match them to the outbox row.
                "custom_args": { "dedupe_key": message.dedupe_key },
            }],
            "from": { "email": self.from },
            "subject": message.subject,
            "content": [{ "type": "text/plain", "value": message.body }],
        });
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await;
        check_status("SendGrid", response)
    }
}

/// SMS through the TextUs API.
///
/// The request shape follows the "Create and send a message" section of the TextUs v2
/// API reference, published in the TextUsBiz/slate repository on GitHub. The request is
/// `POST {base}/api/messages` with the JSON fields `content`, `receiver` and `sender`.
/// `receiver` is a phone number in international format, starting with `+`, and
/// `sender` is the sending TextUs user's id or e-mail address. The request carries
/// `Accept: application/vnd.textus-v2` and HTTP Basic authentication with the account's
/// username and API key.
pub struct TextUs {
    client: reqwest::Client,
    url: String,
    username: String,
    api_key: String,
    sender: String,
}

impl TextUs {
    /// Creates the provider for `base_url` (such as `https://app.textus.com`).
    ///
    /// # Errors
    /// Returns a [`SendError`] when the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        username: String,
        api_key: String,
        sender: String,
    ) -> Result<Self, SendError> {
        Ok(Self {
            client: http_client()?,
            url: format!("{}/api/messages", base_url.trim_end_matches('/')),
            username,
            api_key,
            sender,
        })
    }
}

#[async_trait]
impl Provider for TextUs {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), SendError> {
        let body = json!({
            "content": message.body,
            "receiver": message.to,
            "sender": self.sender,
        });
        let response = self
            .client
            .post(&self.url)
            .basic_auth(&self.username, Some(&self.api_key))
            .header(reqwest::header::ACCEPT, "application/vnd.textus-v2")
            .json(&body)
            .send()
            .await;
        check_status("TextUs", response)
    }
}

/// Appends each message as one JSON line to `{directory}/{channel}.jsonl`, the local
/// stand-in for the providers. The lines contain the address, as a provider request
/// would.
pub struct FileSink {
    directory: PathBuf,
}

impl FileSink {
    /// Creates a sink that writes under `directory`, created on the first message.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
        }
    }
}

#[async_trait]
impl Provider for FileSink {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), SendError> {
        let line = json!({
            "dedupe_key": message.dedupe_key,
            "channel": message.channel.as_str(),
            "to": message.to,
            "subject": message.subject,
            "body": message.body,
        });
        let path = self
            .directory
            .join(format!("{}.jsonl", message.channel.as_str()));
        let directory = self.directory.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&directory)?;
            // The lines hold addresses and names, so only the service's user may read them.
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(file, "{line}")
        })
        .await
        .map_err(|error| SendError(format!("the file sink task failed: {error}")))?
        .map_err(|error| SendError(format!("writing to the outbox file failed: {error}")))
    }
}
