//! Configuration of the providers and the retry policy from environment variables.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::{RetryPolicy, CLAIM_LEASE};
use crate::providers::{FileSink, Provider, SendGrid, TextUs};

/// Errors of reading the notification configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A variable that the configured provider needs is not set.
    #[error("{variable} is not set; {provider} needs it when {trigger} is set")]
    Missing {
        /// The missing variable.
        variable: &'static str,
        /// The provider that needs it.
        provider: &'static str,
        /// The variable that selected the provider.
        trigger: &'static str,
    },
    /// A variable has a value that cannot be used.
    #[error("{variable} is invalid: {reason}")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// Description of the problem and of the value to set instead.
        reason: String,
    },
}

/// The providers of both channels and the retry policy.
pub struct NotificationSettings {
    /// Provider of e-mail.
    pub email: Arc<dyn Provider>,
    /// Provider of SMS.
    pub sms: Arc<dyn Provider>,
    /// Names of the chosen providers, for the start-up log: `sendgrid` or `file` for
    /// e-mail, `textus` or `file` for SMS.
    pub description: String,
    /// Retries and dead-lettering.
    pub retry: RetryPolicy,
    /// How long a claimed row stays invisible to other dispatchers, and so how long
    /// rows claimed by a process that died wait before they are sent again.
    pub claim_lease: Duration,
}

impl NotificationSettings {
    /// Reads the settings through `lookup` (the environment in production).
    ///
    /// - `SENDGRID_BASE_URL` and `SENDGRID_API_KEY` select SendGrid for e-mail; then
    ///   `SENDGRID_FROM_EMAIL` (the sender address) is required.
    /// - `TEXTUS_BASE_URL` and `TEXTUS_API_KEY` select TextUs for SMS; then
    ///   `TEXTUS_USERNAME` (the Basic authentication user) and `TEXTUS_SENDER` (the
    ///   sending TextUs user's id or e-mail address) are required.
    /// - A channel without its provider writes to `{data_dir}/outbox/{channel}.jsonl`.
    /// - `NOTIFICATION_MAX_ATTEMPTS` (default 8) and `NOTIFICATION_RETRY_BASE_MS`
    ///   (default 10000, doubled after each failure) set the retries.
    /// - `NOTIFICATION_CLAIM_LEASE_SECONDS` (default 300, at least 1) sets the claim
    ///   lease.
    ///
    /// # Errors
    /// Returns [`SettingsError`] for a missing companion variable or an invalid number.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        data_dir: &Path,
    ) -> Result<Self, SettingsError> {
        let sink = Arc::new(FileSink::new(data_dir.join("outbox")));
        let require = |variable, provider, trigger| {
            lookup(variable).ok_or(SettingsError::Missing {
                variable,
                provider,
                trigger,
            })
        };
        let invalid = |variable, reason: String| SettingsError::Invalid { variable, reason };

        let (email, email_name): (Arc<dyn Provider>, _) =
            match (lookup("SENDGRID_BASE_URL"), lookup("SENDGRID_API_KEY")) {
                (Some(base), Some(key)) => {
                    let from = require("SENDGRID_FROM_EMAIL", "SendGrid", "SENDGRID_BASE_URL")?;
                    let provider = SendGrid::new(&base, key, from)
                        .map_err(|error| invalid("SENDGRID_BASE_URL", error.0))?;
                    (Arc::new(provider), "sendgrid")
                }
                _ => (sink.clone(), "file"),
            };
        let (sms, sms_name): (Arc<dyn Provider>, _) =
            match (lookup("TEXTUS_BASE_URL"), lookup("TEXTUS_API_KEY")) {
                (Some(base), Some(key)) => {
                    let username = require("TEXTUS_USERNAME", "TextUs", "TEXTUS_BASE_URL")?;
                    let sender = require("TEXTUS_SENDER", "TextUs", "TEXTUS_BASE_URL")?;
                    let provider = TextUs::new(&base, username, key, sender)
                        .map_err(|error| invalid("TEXTUS_BASE_URL", error.0))?;
                    (Arc::new(provider), "textus")
                }
                _ => (sink, "file"),
            };

        let mut retry = RetryPolicy::default();
        if let Some(text) = lookup("NOTIFICATION_MAX_ATTEMPTS") {
            retry.max_attempts = text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|attempts| *attempts >= 1)
                .ok_or_else(|| {
                    invalid(
                        "NOTIFICATION_MAX_ATTEMPTS",
                        format!("`{text}` is not a whole number of at least 1"),
                    )
                })?;
        }
        if let Some(text) = lookup("NOTIFICATION_RETRY_BASE_MS") {
            let millis = text.trim().parse::<u64>().map_err(|_| {
                invalid(
                    "NOTIFICATION_RETRY_BASE_MS",
                    format!("`{text}` is not a whole number of milliseconds"),
                )
            })?;
            retry.base_backoff = Duration::from_millis(millis);
        }
        let mut claim_lease = CLAIM_LEASE.to_std().unwrap_or(Duration::from_secs(300));
        if let Some(text) = lookup("NOTIFICATION_CLAIM_LEASE_SECONDS") {
            let seconds = text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|seconds| *seconds >= 1)
                .ok_or_else(|| {
                    invalid(
                        "NOTIFICATION_CLAIM_LEASE_SECONDS",
                        format!("`{text}` is not a whole number of seconds of at least 1"),
                    )
                })?;
            claim_lease = Duration::from_secs(seconds);
        }

        Ok(Self {
            email,
            sms,
            description: format!("email={email_name} sms={sms_name}"),
            retry,
            claim_lease,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<NotificationSettings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        NotificationSettings::from_lookup(|key| map.get(key).cloned(), Path::new("/tmp/unused"))
    }

    #[test]
    fn no_configuration_uses_the_file_sink() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.description, "email=file sms=file");
        assert_eq!(settings.retry, RetryPolicy::default());
        assert_eq!(settings.claim_lease, Duration::from_secs(300));
    }

    #[test]
    fn claim_lease_is_read_in_seconds() {
        let settings = settings(&[("NOTIFICATION_CLAIM_LEASE_SECONDS", "3")]).unwrap();
        assert_eq!(settings.claim_lease, Duration::from_secs(3));
    }

    #[test]
    fn invalid_claim_lease_is_rejected() {
        for value in ["0", "-5", "2.5", "five"] {
            let error = settings(&[("NOTIFICATION_CLAIM_LEASE_SECONDS", value)])
                .err()
                .unwrap();
            let message = error.to_string();
            assert!(
                message.contains("NOTIFICATION_CLAIM_LEASE_SECONDS"),
                "{message}"
            );
            assert!(message.contains(value), "{message}");
        }
    }

    #[test]
    fn sendgrid_without_sender_is_rejected() {
        let error = settings(&[
            ("SENDGRID_BASE_URL", "http://127.0.0.1:9"),
            ("SENDGRID_API_KEY", "k"),
        ])
        .err()
        .unwrap();
        assert!(error.to_string().contains("SENDGRID_FROM_EMAIL"), "{error}");
    }

    #[test]
    fn zero_attempts_is_rejected() {
        let error = settings(&[("NOTIFICATION_MAX_ATTEMPTS", "0")])
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("NOTIFICATION_MAX_ATTEMPTS"),
            "{error}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(35),
        };
        assert_eq!(policy.backoff(1), Duration::from_secs(10));
        assert_eq!(policy.backoff(2), Duration::from_secs(20));
        assert_eq!(policy.backoff(3), Duration::from_secs(35));
        assert_eq!(policy.backoff(40), Duration::from_secs(35));
    }
}
