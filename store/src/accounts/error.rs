//! Errors of the account use cases. None of their messages contains an e-mail address,
//! a password, a token or a secret, so they may be logged and shown as they are.

use std::fmt;

use referrals_domain::values::ValueError;
use referrals_domain::DomainError;
use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

use crate::accounts::password::PasswordError;
use crate::accounts::totp::TotpError;
use crate::crypto::CryptoError;
use crate::event_store::CommandError;
use crate::keys::KeyError;

/// Failure of an account use case. The intended HTTP status is given for each variant.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A rule rejected the command or a value is invalid (422 or 409, by the
    /// [`DomainError::kind`]).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Another account already signs in with this e-mail address (409).
    #[error("another account already uses this e-mail address; each person has one account")]
    EmailTaken,
    /// The invitation token is unknown (404). Expired and used invitations are
    /// [`DomainError::InvitationExpired`] and [`DomainError::InvitationAlreadyAccepted`].
    #[error("the invitation token is not valid; check that it was copied completely")]
    InvalidInvitation,
    /// The user does not exist in the caller's agency (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Another request changed the account first (409).
    #[error("the {aggregate_type} was changed by another request; reload it and try again")]
    Conflict {
        /// The aggregate's type.
        aggregate_type: &'static str,
    },
    /// The user's personal data was erased, so the account cannot be used (409).
    #[error("the personal data of this user was erased, so the account can no longer be used")]
    Erased,
    /// The database is unavailable (503). The text is for operators.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A failure that is the platform's fault (500). The text is for operators.
    #[error("internal failure: {0}")]
    Internal(String),
}

impl AccountError {
    /// Stable machine-readable code in snake case.
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::Domain(error) => error.code(),
            AccountError::EmailTaken => "email_taken",
            AccountError::InvalidInvitation => "invalid_invitation",
            AccountError::NotFound(_) => "not_found",
            AccountError::Conflict { .. } => "version_conflict",
            AccountError::Erased => "erased",
            AccountError::Unavailable(_) => "unavailable",
            AccountError::Internal(_) => "internal",
        }
    }
}

impl From<ValueError> for AccountError {
    fn from(error: ValueError) -> Self {
        AccountError::Domain(DomainError::Invalid(error))
    }
}

impl From<CommandError<DomainError>> for AccountError {
    fn from(error: CommandError<DomainError>) -> Self {
        match error {
            CommandError::Rejected(error) => Self::Domain(error),
            CommandError::NotFound { aggregate_type } => Self::NotFound(aggregate_type),
            CommandError::Conflict { aggregate_type } => Self::Conflict { aggregate_type },
            CommandError::Unavailable(error) => Self::Unavailable(error.to_string()),
            CommandError::Failed(error) => Self::Internal(error.to_string()),
        }
    }
}

impl From<KeyError> for AccountError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Erased => Self::Erased,
            KeyError::Database(error) => error.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for AccountError {
    fn from(error: sqlx::Error) -> Self {
        if is_connection_error(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

impl From<PasswordError> for AccountError {
    fn from(error: PasswordError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<TotpError> for AccountError {
    fn from(error: TotpError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<CryptoError> for AccountError {
    fn from(error: CryptoError) -> Self {
        Self::Internal(error.to_string())
    }
}

/// Returns true for errors that mean the database is out of reach rather than wrong.
pub(crate) fn is_connection_error(error: &sqlx::Error) -> bool {
    crate::database::is_unavailable(error)
}

/// A secret shown once to its owner: a bearer token, an invitation token or a TOTP
/// secret. `Debug` hides it, and its memory is wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    pub(crate) fn new(text: Zeroizing<String>) -> Self {
        Self(text)
    }

    /// Returns the secret itself, to hand to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Serializes as the plain string, for the one response that hands the secret over.
impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_text_is_hidden_from_debug() {
        let secret = SecretText::new(Zeroizing::new("rfs_abc".to_owned()));

        assert_eq!(format!("{secret:?}"), "SecretText(<redacted>)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"rfs_abc\"");
        assert_eq!(secret.expose(), "rfs_abc");
    }
}
