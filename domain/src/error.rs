//! The one error type of every aggregate, with a stable code and an outcome class
//! that the API maps to an HTTP status.
//!
//! Messages are plain sentences that name the rule and the fix. They never contain
//! personal data, so the API may show them to clients and write them to logs.

use chrono::{DateTime, Utc};

use crate::services::ServiceError;
use crate::values::ValueError;

/// Outcome class of a [`DomainError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A rule was violated or a value is malformed (HTTP 422).
    Invalid,
    /// The current state of a record conflicts with the request (HTTP 409).
    Conflict,
    /// The record does not exist (HTTP 404).
    NotFound,
    /// A service the command depends on failed; retrying may succeed (HTTP 503).
    Unavailable,
}

/// Rejection of a command by an aggregate, or failure of a service it called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A value in the command is malformed.
    #[error("invalid value for {0}")]
    Invalid(#[from] ValueError),

    /// The command is not allowed in the record's current status.
    #[error(
        "cannot {action} because the {aggregate} is {from}; reload it to see its current status"
    )]
    InvalidTransition {
        /// Aggregate type, such as `referral`.
        aggregate: &'static str,
        /// Current status, such as `hired` or `approved, on hold`.
        from: String,
        /// Action the command attempted, such as `mark the referral contacted`.
        action: &'static str,
    },

    /// The command addresses a record that was never created.
    #[error("the {aggregate} does not exist; check the id")]
    NotFound {
        /// Aggregate type, such as `program`.
        aggregate: &'static str,
    },

    /// A create command used the id of an existing record.
    #[error("a {aggregate} with this id already exists; use a new id to create another")]
    AlreadyExists {
        /// Aggregate type, such as `ambassador`.
        aggregate: &'static str,
    },

    /// A service such as the candidate registry failed. The text is for operators.
    #[error("a service the command depends on failed ({0}); retry later")]
    ServiceFailed(String),

    /// The program is closed.
    #[error(
        "the program is closed and accepts no referrals or term revisions; use an open program"
    )]
    ProgramClosed,

    /// The ambassador is deactivated.
    #[error(
        "the ambassador is deactivated and cannot refer candidates; choose an active ambassador"
    )]
    AmbassadorInactive,

    /// The candidate has neither an e-mail address nor a phone number.
    #[error("the candidate needs an e-mail address or a phone number so that duplicates can be detected; add at least one")]
    CandidateContactMissing,

    /// The candidate's e-mail address or phone number is the ambassador's own.
    #[error("an ambassador cannot refer themselves: the candidate's e-mail address or phone number matches the ambassador's")]
    SelfReferral,

    /// The user who requested a payout tried to approve it.
    #[error(
        "the payout was requested by the approving user; another payout approver must approve it"
    )]
    SameRequesterAndApprover,

    /// The command is valid but its time has not come.
    #[error("cannot {action} before {due}; retry after that time")]
    NotDueYet {
        /// Action the command attempted, such as `expire the referral`.
        action: &'static str,
        /// The earliest time at which the command succeeds.
        due: DateTime<Utc>,
    },

    /// The invitation's acceptance deadline has passed.
    #[error("the invitation expired at {expired_at}; ask an administrator to invite you again")]
    InvitationExpired {
        /// When the invitation expired.
        expired_at: DateTime<Utc>,
    },

    /// The invitation was accepted before.
    #[error("the invitation was already accepted; sign in with your password instead")]
    InvitationAlreadyAccepted,

    /// The user account is deactivated.
    #[error("the user is deactivated, and a deactivated account stays closed; invite the person again to give them a new account")]
    UserDeactivated,

    /// The user already has a TOTP secret.
    #[error("multi-factor authentication is already enrolled for this user; sign in with a code from the enrolled authenticator")]
    MfaAlreadyEnrolled,

    /// The payout is already recorded as paid under another payroll reference.
    #[error("the payout is already marked paid with a different payroll reference; reverse it first if that payment was recorded in error")]
    AlreadyPaid,
}

impl DomainError {
    /// Stable machine-readable code, in snake case. Clients match on it, so a code
    /// never changes once released.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Invalid(_) => "invalid_value",
            DomainError::InvalidTransition { .. } => "invalid_transition",
            DomainError::NotFound { .. } => "not_found",
            DomainError::AlreadyExists { .. } => "already_exists",
            DomainError::ServiceFailed(_) => "service_failed",
            DomainError::ProgramClosed => "program_closed",
            DomainError::AmbassadorInactive => "ambassador_inactive",
            DomainError::CandidateContactMissing => "candidate_contact_missing",
            DomainError::SelfReferral => "self_referral",
            DomainError::SameRequesterAndApprover => "same_requester_and_approver",
            DomainError::NotDueYet { .. } => "not_due_yet",
            DomainError::AlreadyPaid => "already_paid",
            DomainError::InvitationExpired { .. } => "invitation_expired",
            DomainError::InvitationAlreadyAccepted => "invitation_already_accepted",
            DomainError::UserDeactivated => "user_deactivated",
            DomainError::MfaAlreadyEnrolled => "mfa_already_enrolled",
        }
    }

    /// Returns the outcome class, which decides the HTTP status.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            DomainError::Invalid(_)
            | DomainError::CandidateContactMissing
            | DomainError::SelfReferral
            | DomainError::SameRequesterAndApprover
            | DomainError::InvitationExpired { .. } => ErrorKind::Invalid,
            DomainError::InvalidTransition { .. }
            | DomainError::AlreadyExists { .. }
            | DomainError::ProgramClosed
            | DomainError::AmbassadorInactive
            | DomainError::NotDueYet { .. }
            | DomainError::AlreadyPaid
            | DomainError::InvitationAlreadyAccepted
            | DomainError::UserDeactivated
            | DomainError::MfaAlreadyEnrolled => ErrorKind::Conflict,
            DomainError::NotFound { .. } => ErrorKind::NotFound,
            DomainError::ServiceFailed(_) => ErrorKind::Unavailable,
        }
    }
}

impl From<ServiceError> for DomainError {
    fn from(error: ServiceError) -> Self {
        DomainError::ServiceFailed(error.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_value_names_the_field() {
        let error = DomainError::from(ValueError::new("hours", "must not be negative"));

        assert_eq!(
            error.to_string(),
            "invalid value for hours: must not be negative"
        );
        assert_eq!(error.code(), "invalid_value");
        assert_eq!(error.kind(), ErrorKind::Invalid);
    }

    #[test]
    fn invalid_transition_is_a_conflict() {
        let error = DomainError::InvalidTransition {
            aggregate: "payout",
            from: "paid".to_owned(),
            action: "approve the payout",
        };

        assert_eq!(error.kind(), ErrorKind::Conflict);
        assert_eq!(
            error.to_string(),
            "cannot approve the payout because the payout is paid; reload it to see its current status"
        );
    }

    #[test]
    fn service_failure_is_unavailable() {
        let error = DomainError::from(ServiceError("connection refused".to_owned()));

        assert_eq!(error.code(), "service_failed");
        assert_eq!(error.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn codes_are_snake_case() {
        let errors = [
            DomainError::ProgramClosed,
            DomainError::AmbassadorInactive,
            DomainError::CandidateContactMissing,
            DomainError::SelfReferral,
            DomainError::SameRequesterAndApprover,
            DomainError::AlreadyPaid,
            DomainError::InvitationAlreadyAccepted,
            DomainError::UserDeactivated,
            DomainError::MfaAlreadyEnrolled,
            DomainError::NotFound {
                aggregate: "program",
            },
        ];
        for error in errors {
            let code = error.code();
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
    }
}
