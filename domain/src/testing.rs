//! In-memory implementations of the service traits, for tests of this crate and of
//! crates that enable the `testing` feature.
//!
//! They keep the contracts of the traits (atomic claims, idempotent reservations) but
//! not their time rules: the candidate registry never lets an owner's window lapse by
//! itself, so a test releases the owner explicitly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Months, Utc};

use crate::ids::{AgencyId, AmbassadorId, PayoutId, ReferralId};
use crate::services::{
    BonusCapLedger, CandidateClaim, CandidateRegistry, ClaimOutcome, PayoutServices,
    ReferralServices, ServiceError,
};
use crate::values::KeyedHash;

/// Locks a mutex, ignoring poisoning: a panicking test must not hide the others' results.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kind of contact that a keyed hash belongs to, so that equal e-mail and phone
/// hashes never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ContactKind {
    Email,
    Phone,
}

/// Candidate registry that keeps owners in a map; the first claim on a key wins
/// until [`InMemoryCandidateRegistry::release`] removes it.
#[derive(Debug, Default)]
pub struct InMemoryCandidateRegistry {
    owners: Mutex<HashMap<(AgencyId, ContactKind, KeyedHash), ReferralId>>,
    failing: AtomicBool,
}

impl InMemoryCandidateRegistry {
    /// Creates an empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call fail with a [`ServiceError`] (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Removes every key owned by `referral_id`, as if its window had lapsed.
    pub fn release(&self, referral_id: ReferralId) {
        lock(&self.owners).retain(|_, owner| *owner != referral_id);
    }

    /// Wraps the registry in [`ReferralServices`] and returns both.
    #[must_use]
    pub fn services() -> (ReferralServices, Arc<InMemoryCandidateRegistry>) {
        let registry = Arc::new(Self::new());
        let services = ReferralServices {
            candidates: registry.clone(),
        };
        (services, registry)
    }
}

#[async_trait]
impl CandidateRegistry for InMemoryCandidateRegistry {
    async fn claim(&self, claim: &CandidateClaim) -> Result<ClaimOutcome, ServiceError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(ServiceError("candidate registry is unavailable".to_owned()));
        }

        let entries: Vec<(AgencyId, ContactKind, KeyedHash)> = [
            (ContactKind::Email, &claim.keys.email),
            (ContactKind::Phone, &claim.keys.phone),
        ]
        .into_iter()
        .filter_map(|(kind, key)| key.clone().map(|key| (claim.agency_id, kind, key)))
        .collect();

        // One lock across the check and the insert makes the claim atomic.
        let mut owners = lock(&self.owners);
        let other_owner = entries
            .iter()
            .filter_map(|entry| owners.get(entry))
            .find(|owner| **owner != claim.referral_id);
        if let Some(owner) = other_owner {
            return Ok(ClaimOutcome::OwnedBy(*owner));
        }
        for entry in entries {
            owners.insert(entry, claim.referral_id);
        }
        Ok(ClaimOutcome::Owner)
    }
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    agency_id: AgencyId,
    ambassador_id: AmbassadorId,
    at: DateTime<Utc>,
}

/// Bonus cap ledger that keeps reservations in a map.
#[derive(Debug, Default)]
pub struct InMemoryBonusCapLedger {
    reservations: Mutex<HashMap<PayoutId, Reservation>>,
    released: Mutex<Vec<PayoutId>>,
    failing: AtomicBool,
}

impl InMemoryBonusCapLedger {
    /// Creates an empty ledger.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call fail with a [`ServiceError`] (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Records a reservation directly, to set up an ambassador who already earned bonuses.
    pub fn insert(
        &self,
        agency_id: AgencyId,
        ambassador_id: AmbassadorId,
        payout_id: PayoutId,
        at: DateTime<Utc>,
    ) {
        let reservation = Reservation {
            agency_id,
            ambassador_id,
            at,
        };
        lock(&self.reservations).insert(payout_id, reservation);
    }

    /// Returns whether `payout_id` has a reservation.
    #[must_use]
    pub fn is_reserved(&self, payout_id: PayoutId) -> bool {
        lock(&self.reservations).contains_key(&payout_id)
    }

    /// Returns the payout ids passed to `release`, in call order.
    #[must_use]
    pub fn released(&self) -> Vec<PayoutId> {
        lock(&self.released).clone()
    }

    /// Wraps the ledger in [`PayoutServices`] and returns both.
    #[must_use]
    pub fn services() -> (PayoutServices, Arc<InMemoryBonusCapLedger>) {
        let ledger = Arc::new(Self::new());
        let services = PayoutServices {
            bonus_caps: ledger.clone(),
        };
        (services, ledger)
    }

    fn check_available(&self) -> Result<(), ServiceError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(ServiceError("bonus cap ledger is unavailable".to_owned()));
        }
        Ok(())
    }
}

#[async_trait]
impl BonusCapLedger for InMemoryBonusCapLedger {
    async fn reserve(
        &self,
        agency_id: AgencyId,
        ambassador_id: AmbassadorId,
        payout_id: PayoutId,
        at: DateTime<Utc>,
        cap: u32,
    ) -> Result<bool, ServiceError> {
        self.check_available()?;

        let mut reservations = lock(&self.reservations);
        if reservations.contains_key(&payout_id) {
            return Ok(true);
        }
        let window_start = at.checked_sub_months(Months::new(12)).unwrap_or(at);
        let used = reservations
            .values()
            .filter(|r| r.agency_id == agency_id && r.ambassador_id == ambassador_id)
            .filter(|r| r.at > window_start && r.at <= at)
            .count();
        if used >= usize::try_from(cap).unwrap_or(usize::MAX) {
            return Ok(false);
        }
        let reservation = Reservation {
            agency_id,
            ambassador_id,
            at,
        };
        reservations.insert(payout_id, reservation);
        Ok(true)
    }

    async fn release(&self, agency_id: AgencyId, payout_id: PayoutId) -> Result<(), ServiceError> {
        self.check_available()?;

        let mut reservations = lock(&self.reservations);
        if reservations
            .get(&payout_id)
            .is_some_and(|r| r.agency_id == agency_id)
        {
            reservations.remove(&payout_id);
        }
        lock(&self.released).push(payout_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::values::ContactKeys;

    fn claim(agency_id: AgencyId, referral_id: ReferralId, email: &str) -> CandidateClaim {
        CandidateClaim {
            agency_id,
            referral_id,
            keys: ContactKeys {
                email: Some(KeyedHash(email.to_owned())),
                phone: None,
            },
            submitted_at: Utc.with_ymd_and_hms(2025, 1, 6, 9, 0, 0).unwrap(),
        }
    }

    #[tokio::test]
    async fn first_claim_wins_and_repeats_are_idempotent() {
        let registry = InMemoryCandidateRegistry::new();
        let agency = AgencyId::new();
        let first = ReferralId::new();
        let second = ReferralId::new();

        let outcome = registry.claim(&claim(agency, first, "h1")).await.unwrap();
        let repeat = registry.claim(&claim(agency, first, "h1")).await.unwrap();
        let other = registry.claim(&claim(agency, second, "h1")).await.unwrap();

        assert_eq!(outcome, ClaimOutcome::Owner);
        assert_eq!(repeat, ClaimOutcome::Owner);
        assert_eq!(other, ClaimOutcome::OwnedBy(first));
    }

    #[tokio::test]
    async fn claims_never_cross_agencies() {
        let registry = InMemoryCandidateRegistry::new();

        registry
            .claim(&claim(AgencyId::new(), ReferralId::new(), "h1"))
            .await
            .unwrap();
        let outcome = registry
            .claim(&claim(AgencyId::new(), ReferralId::new(), "h1"))
            .await
            .unwrap();

        assert_eq!(outcome, ClaimOutcome::Owner);
    }

    #[tokio::test]
    async fn ledger_counts_a_rolling_twelve_months() {
        let ledger = InMemoryBonusCapLedger::new();
        let agency = AgencyId::new();
        let ambassador = AmbassadorId::new();
        let january = Utc.with_ymd_and_hms(2025, 1, 10, 0, 0, 0).unwrap();
        let december = Utc.with_ymd_and_hms(2025, 12, 10, 0, 0, 0).unwrap();
        let next_february = Utc.with_ymd_and_hms(2026, 2, 10, 0, 0, 0).unwrap();

        assert!(ledger
            .reserve(agency, ambassador, PayoutId::new(), january, 1)
            .await
            .unwrap());
        assert!(!ledger
            .reserve(agency, ambassador, PayoutId::new(), december, 1)
            .await
            .unwrap());
        assert!(ledger
            .reserve(agency, ambassador, PayoutId::new(), next_february, 1)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn ledger_reservation_is_idempotent_per_payout() {
        let ledger = InMemoryBonusCapLedger::new();
        let agency = AgencyId::new();
        let ambassador = AmbassadorId::new();
        let payout = PayoutId::new();
        let at = Utc.with_ymd_and_hms(2025, 1, 10, 0, 0, 0).unwrap();

        assert!(ledger
            .reserve(agency, ambassador, payout, at, 1)
            .await
            .unwrap());
        assert!(ledger
            .reserve(agency, ambassador, payout, at, 1)
            .await
            .unwrap());
        ledger.release(agency, payout).await.unwrap();

        assert!(!ledger.is_reserved(payout));
    }
}
