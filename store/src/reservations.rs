//! PostgreSQL implementations of the rules that span aggregates: one owner per candidate,
//! and the annual bonus cap per ambassador. Both hold across processes because PostgreSQL
//! serializes the competing writers (a primary key and row locks for candidates, an
//! advisory lock per ambassador for caps).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore;
use referrals_domain::ids::{AgencyId, AmbassadorId, PayoutId, ReferralId};
use referrals_domain::referral::Referral;
use referrals_domain::services::{
    BonusCapLedger, CandidateClaim, CandidateRegistry, ClaimOutcome, ServiceError,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::event_store::{EventRepository, SNAPSHOT_EVERY};

/// How long a claim whose referral has no events yet counts as held by a submission still
/// in flight. After that, a claim without events is a leftover of a submission that failed
/// after claiming, and the next referral may take it over.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(300);

/// How many times a claim is retried when another submission changes the claim rows
/// between the ownership check and the update.
const CLAIM_ATTEMPTS: usize = 8;

/// Decides which referral owns a candidate, using `candidate_claims` as the lock and the
/// claiming referral's events as the truth.
pub struct PgCandidateRegistry {
    pool: PgPool,
    referrals: PersistedEventStore<EventRepository, Referral>,
}

impl PgCandidateRegistry {
    /// Creates the registry over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            referrals: PersistedEventStore::new_snapshot_store(
                EventRepository::new(pool.clone()),
                SNAPSHOT_EVERY,
            ),
            pool,
        }
    }

    /// Returns true when the referral named by a claim still owns the candidate at `at`.
    async fn still_owns(
        &self,
        owner: Uuid,
        claim_is_fresh: bool,
        at: DateTime<Utc>,
    ) -> Result<bool, ServiceError> {
        let context = self
            .referrals
            .load_aggregate(&owner.to_string())
            .await
            .map_err(|error| {
                ServiceError(format!("loading the owning referral failed: {error}"))
            })?;
        if context.current_sequence == 0 {
            return Ok(claim_is_fresh);
        }
        Ok(context.aggregate.owns_candidate_at(at))
    }

    /// Claims a candidate that has no claim yet, the common case, in one statement.
    /// Returns false, having inserted nothing, when any key is claimed already: then the
    /// general path decides. A plain INSERT (no ON CONFLICT) is all or nothing: when a
    /// concurrent submission commits one of the keys first, the unique violation rolls
    /// back every row of this statement.
    async fn try_claim_new(
        &self,
        claim: &CandidateClaim,
        keys: &[String],
    ) -> Result<bool, ServiceError> {
        // Keys are sorted, so statements that share keys wait on them in the same order.
        let inserted = sqlx::query(
            "INSERT INTO candidate_claims (agency_id, contact_key, referral_id, claimed_at)
             SELECT $1, contact_key, $3, now() FROM unnest($2::text[]) AS contact_key
              WHERE NOT EXISTS (SELECT 1 FROM candidate_claims
                                 WHERE agency_id = $1 AND contact_key = ANY($2))",
        )
        .bind(claim.agency_id.0)
        .bind(keys)
        .bind(claim.referral_id.0)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(result) => Ok(usize::try_from(result.rows_affected()).ok() == Some(keys.len())),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
                Ok(false)
            }
            Err(error) => Err(database_error(error)),
        }
    }

    /// One attempt: check the current claims without locks, then take the free ones under
    /// row locks if no other submission changed them meanwhile. `None` means "changed, try again".
    async fn try_claim(
        &self,
        claim: &CandidateClaim,
        keys: &[String],
    ) -> Result<Option<ClaimOutcome>, ServiceError> {
        let me = claim.referral_id.0;
        let current: Vec<(String, Uuid, bool)> = sqlx::query_as(
            "SELECT contact_key, referral_id, claimed_at > now() - make_interval(secs => $3)
               FROM candidate_claims
              WHERE agency_id = $1 AND contact_key = ANY($2)
              ORDER BY contact_key",
        )
        .bind(claim.agency_id.0)
        .bind(keys)
        .bind(IN_FLIGHT_GRACE.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;

        for (_, owner, fresh) in current.iter().filter(|(_, owner, _)| *owner != me) {
            if self.still_owns(*owner, *fresh, claim.submitted_at).await? {
                return Ok(Some(ClaimOutcome::OwnedBy(ReferralId(*owner))));
            }
        }

        let mut tx = self.pool.begin().await.map_err(database_error)?;
        // Keys are sorted, so two submissions that share several keys lock them in the
        // same order and cannot deadlock.
        for key in keys {
            sqlx::query(
                "INSERT INTO candidate_claims (agency_id, contact_key, referral_id, claimed_at)
                 VALUES ($1, $2, $3, now())
                 ON CONFLICT (agency_id, contact_key) DO NOTHING",
            )
            .bind(claim.agency_id.0)
            .bind(key)
            .bind(me)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        }
        let locked: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT contact_key, referral_id FROM candidate_claims
              WHERE agency_id = $1 AND contact_key = ANY($2)
              ORDER BY contact_key
                FOR UPDATE",
        )
        .bind(claim.agency_id.0)
        .bind(keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(database_error)?;

        let unchanged = locked.iter().all(|(key, owner)| {
            *owner == me
                || current
                    .iter()
                    .any(|(seen_key, seen_owner, _)| seen_key == key && seen_owner == owner)
        });
        if !unchanged {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE candidate_claims SET referral_id = $3, claimed_at = now()
              WHERE agency_id = $1 AND contact_key = ANY($2) AND referral_id <> $3",
        )
        .bind(claim.agency_id.0)
        .bind(keys)
        .bind(me)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
        tx.commit().await.map_err(database_error)?;
        Ok(Some(ClaimOutcome::Owner))
    }
}

#[async_trait]
impl CandidateRegistry for PgCandidateRegistry {
    async fn claim(&self, claim: &CandidateClaim) -> Result<ClaimOutcome, ServiceError> {
        let mut keys: Vec<String> = [&claim.keys.email, &claim.keys.phone]
            .into_iter()
            .flatten()
            .map(|key| key.0.clone())
            .collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Err(ServiceError(
                "a candidate claim needs an e-mail or phone key".to_owned(),
            ));
        }
        if self.try_claim_new(claim, &keys).await? {
            return Ok(ClaimOutcome::Owner);
        }
        for _ in 0..CLAIM_ATTEMPTS {
            if let Some(outcome) = self.try_claim(claim, &keys).await? {
                return Ok(outcome);
            }
        }
        Err(ServiceError(format!(
            "the candidate claim for referral {} kept changing under concurrent submissions; \
             retry the request",
            claim.referral_id
        )))
    }
}

/// Counts approved bonuses against each ambassador's rolling twelve-month cap.
pub struct PgBonusCapLedger {
    pool: PgPool,
}

impl PgBonusCapLedger {
    /// Creates the ledger over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl BonusCapLedger for PgBonusCapLedger {
    async fn reserve(
        &self,
        agency_id: AgencyId,
        ambassador_id: AmbassadorId,
        payout_id: PayoutId,
        at: DateTime<Utc>,
        cap: u32,
    ) -> Result<bool, ServiceError> {
        let mut tx = self.pool.begin().await.map_err(database_error)?;
        // One lock per ambassador for the rest of the transaction: two approvals for the
        // same ambassador count and insert one after the other.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7031))")
            .bind(format!("bonus-cap:{agency_id}:{ambassador_id}"))
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        let already: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM bonus_cap_reservations WHERE payout_id = $1)",
        )
        .bind(payout_id.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(database_error)?;
        if already {
            return Ok(true);
        }
        let counted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM bonus_cap_reservations
              WHERE agency_id = $1 AND ambassador_id = $2
                AND reserved_at > $3 - interval '365 days' AND reserved_at <= $3",
        )
        .bind(agency_id.0)
        .bind(ambassador_id.0)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(database_error)?;
        if counted >= i64::from(cap) {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO bonus_cap_reservations (agency_id, ambassador_id, payout_id, reserved_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(agency_id.0)
        .bind(ambassador_id.0)
        .bind(payout_id.0)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
        tx.commit().await.map_err(database_error)?;
        Ok(true)
    }

    async fn release(&self, agency_id: AgencyId, payout_id: PayoutId) -> Result<(), ServiceError> {
        sqlx::query("DELETE FROM bonus_cap_reservations WHERE agency_id = $1 AND payout_id = $2")
            .bind(agency_id.0)
            .bind(payout_id.0)
            .execute(&self.pool)
            .await
            .map_err(database_error)?;
        Ok(())
    }
}

fn database_error(error: sqlx::Error) -> ServiceError {
    ServiceError(format!("database error: {error}"))
}
