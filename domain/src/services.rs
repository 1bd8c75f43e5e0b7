//! Services that aggregates call while handling a command, for decisions that span
//! more than one aggregate. The store crate implements them with PostgreSQL; the
//! `testing` module has in-memory versions.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ids::{AgencyId, AmbassadorId, PayoutId, ReferralId};
use crate::values::ContactKeys;

/// Infrastructure failure of a service, such as a lost database connection.
///
/// Kept apart from rule violations: it becomes [`crate::DomainError::ServiceFailed`],
/// which the API reports as temporarily unavailable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ServiceError(pub String);

/// A referral's request to own a candidate, identified by keyed hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateClaim {
    /// Agency in which the candidate is matched; claims never cross agencies.
    pub agency_id: AgencyId,
    /// The referral that wants to own the candidate.
    pub referral_id: ReferralId,
    /// Keyed hashes of the candidate's e-mail address and phone number.
    pub keys: ContactKeys,
    /// Submission time, from which the claimant's attribution window runs.
    pub submitted_at: DateTime<Utc>,
}

/// Result of a [`CandidateClaim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The claimant now owns the candidate.
    Owner,
    /// Another referral still owns a candidate with a matching e-mail or phone hash.
    OwnedBy(ReferralId),
}

/// Decides which referral owns a candidate ("first referral wins").
#[async_trait]
pub trait CandidateRegistry: Send + Sync {
    /// Claims the candidate for `claim.referral_id`.
    ///
    /// Implementations must be atomic: of several concurrent claims on matching keys,
    /// exactly one gets [`ClaimOutcome::Owner`]. A claim by the referral that already
    /// owns the candidate returns `Owner` again, so a retried command succeeds. An
    /// earlier owner loses the candidate once `Referral::owns_candidate_at` is false.
    ///
    /// # Errors
    ///
    /// Returns a [`ServiceError`] when the registry cannot be read or written.
    async fn claim(&self, claim: &CandidateClaim) -> Result<ClaimOutcome, ServiceError>;
}

/// Counts paid bonuses per ambassador against the program's annual cap.
#[async_trait]
pub trait BonusCapLedger: Send + Sync {
    /// Reserves one bonus of the ambassador's rolling-12-month cap for `payout_id`.
    ///
    /// Returns `Ok(false)` when `cap` bonuses are already reserved in the 12 months up
    /// to `at`. Idempotent per payout: reserving the same payout again returns
    /// `Ok(true)` and counts it once.
    ///
    /// # Errors
    ///
    /// Returns a [`ServiceError`] when the ledger cannot be read or written.
    async fn reserve(
        &self,
        agency_id: AgencyId,
        ambassador_id: AmbassadorId,
        payout_id: PayoutId,
        at: DateTime<Utc>,
        cap: u32,
    ) -> Result<bool, ServiceError>;

    /// Releases the reservation of `payout_id`; releasing a payout without one is a
    /// no-op.
    ///
    /// # Errors
    ///
    /// Returns a [`ServiceError`] when the ledger cannot be written.
    async fn release(&self, agency_id: AgencyId, payout_id: PayoutId) -> Result<(), ServiceError>;
}

/// Services of the referral aggregate.
#[derive(Clone)]
pub struct ReferralServices {
    /// Registry that decides candidate ownership.
    pub candidates: Arc<dyn CandidateRegistry>,
}

/// Services of the payout aggregate.
#[derive(Clone)]
pub struct PayoutServices {
    /// Ledger of reserved bonuses per ambassador.
    pub bonus_caps: Arc<dyn BonusCapLedger>,
}
