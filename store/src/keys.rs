//! Storage of data keys and agency keys, wrapped by the master key.
//!
//! Data keys are read from the database on every use and never cached, so that an erasure
//! (destroying a subject's key) takes effect in every running process at once. Agency keys
//! for keyed hashes are cached: they are only removed when an agency is deleted.
//!
//! Master-key rotation ([`rewrap_batch`]) re-wraps the stored keys under a new master key
//! without touching the events, because the ciphertext in events depends only on the data keys.

use std::collections::HashMap;
use std::sync::RwLock;

use referrals_domain::ids::AgencyId;
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::{agency_key_context, data_key_context, CryptoError, MasterKey, SecretKey};

/// Errors of reading or creating keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The subject's data key was destroyed by an erasure: its data is gone for good.
    #[error("the data key of this subject was destroyed by an erasure")]
    Erased,
    /// The subject has no data key: nothing was ever sealed for it.
    #[error("no data key exists for this subject")]
    Missing,
    /// Unwrapping or opening failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The database could not be reached or rejected the query.
    #[error("key storage failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A rotation was asked to re-wrap keys under the master key that already wraps them.
    #[error("the new master key is the current master key ({master_key_id})")]
    SameMasterKey {
        /// Fingerprint of both keys.
        master_key_id: String,
    },
    /// During a rotation, a data key did not unwrap under the old master key.
    #[error(
        "the data key of agency {agency_id}, subject {subject_id} failed to unwrap under the old master key, so the rotation stopped"
    )]
    DataKeyUnwrap {
        /// The agency of the data key.
        agency_id: AgencyId,
        /// The subject of the data key.
        subject_id: Uuid,
        /// The unwrapping error.
        source: CryptoError,
    },
    /// During a rotation, an agency key did not unwrap under the old master key.
    #[error(
        "the agency key of agency {agency_id} failed to unwrap under the old master key, so the rotation stopped"
    )]
    AgencyKeyUnwrap {
        /// The agency of the key.
        agency_id: AgencyId,
        /// The unwrapping error.
        source: CryptoError,
    },
}

/// Reads and creates keys in PostgreSQL, wrapping them with the master key.
#[derive(Debug)]
pub struct KeyVault {
    pool: PgPool,
    master: MasterKey,
    agency_keys: RwLock<HashMap<AgencyId, SecretKey>>,
}

impl KeyVault {
    /// Creates a vault over `pool` that wraps keys with `master`.
    pub fn new(pool: PgPool, master: MasterKey) -> Self {
        Self {
            pool,
            master,
            agency_keys: RwLock::new(HashMap::new()),
        }
    }

    /// The master key this vault wraps with.
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Returns the data key of a subject, creating it when the subject has none yet.
    ///
    /// # Errors
    /// Returns [`KeyError::Erased`] when the key was destroyed: new data for an erased
    /// subject is never sealed under a fresh key behind the erasure's back.
    pub async fn data_key_or_create(
        &self,
        agency_id: AgencyId,
        subject_id: Uuid,
    ) -> Result<SecretKey, KeyError> {
        let key = SecretKey::generate();
        let wrapped = self
            .master
            .wrap(&key, &data_key_context(agency_id, subject_id));
        // One statement inserts a fresh key or returns the stored one (a destroyed key has
        // NULL columns). The second SELECT reads the snapshot taken when the statement
        // started, so it misses a key that a concurrent request committed after that. In
        // that case the insert does nothing, no row comes back, and the key is read again.
        let row: Option<(Option<Vec<u8>>, Option<String>)> = sqlx::query_as(
            "WITH inserted AS (
                 INSERT INTO data_keys (agency_id, subject_id, wrapped_key, master_key_id)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (agency_id, subject_id) DO NOTHING
                 RETURNING wrapped_key, master_key_id)
             SELECT wrapped_key, master_key_id FROM inserted
             UNION ALL
             SELECT wrapped_key, master_key_id FROM data_keys
              WHERE agency_id = $1 AND subject_id = $2",
        )
        .bind(agency_id.0)
        .bind(subject_id)
        .bind(&wrapped)
        .bind(self.master.id())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => self.data_key(agency_id, subject_id).await,
            Some(row) => self.unwrap_data_key(agency_id, subject_id, row),
        }
    }

    /// Returns the existing data key of a subject.
    ///
    /// # Errors
    /// Returns [`KeyError::Missing`] when there is none and [`KeyError::Erased`] when it
    /// was destroyed.
    pub async fn data_key(
        &self,
        agency_id: AgencyId,
        subject_id: Uuid,
    ) -> Result<SecretKey, KeyError> {
        let row: Option<(Option<Vec<u8>>, Option<String>)> = sqlx::query_as(
            "SELECT wrapped_key, master_key_id FROM data_keys
             WHERE agency_id = $1 AND subject_id = $2",
        )
        .bind(agency_id.0)
        .bind(subject_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Err(KeyError::Missing),
            Some(row) => self.unwrap_data_key(agency_id, subject_id, row),
        }
    }

    /// Unwraps a `data_keys` row's key; NULL columns mean the key was destroyed.
    fn unwrap_data_key(
        &self,
        agency_id: AgencyId,
        subject_id: Uuid,
        row: (Option<Vec<u8>>, Option<String>),
    ) -> Result<SecretKey, KeyError> {
        match row {
            (Some(wrapped), Some(master_key_id)) => Ok(self.master.unwrap(
                &wrapped,
                &master_key_id,
                &data_key_context(agency_id, subject_id),
            )?),
            _ => Err(KeyError::Erased),
        }
    }

    /// Drops the cached agency key of a deleted agency, so that this process cannot
    /// compute keyed hashes with it any more.
    pub fn forget_agency(&self, agency_id: AgencyId) {
        self.agency_keys
            .write()
            .expect("agency key cache lock poisoned")
            .remove(&agency_id);
    }

    /// Returns the agency's key for keyed hashes, creating it on first use.
    ///
    /// # Errors
    /// Returns an error when the database fails or the stored key does not unwrap.
    pub async fn agency_key(&self, agency_id: AgencyId) -> Result<SecretKey, KeyError> {
        if let Some(key) = self
            .agency_keys
            .read()
            .expect("agency key cache lock poisoned")
            .get(&agency_id)
        {
            return Ok(key.clone());
        }
        let key = SecretKey::generate();
        let wrapped = self.master.wrap(&key, &agency_key_context(agency_id));
        sqlx::query(
            "INSERT INTO agency_keys (agency_id, wrapped_key, master_key_id)
             VALUES ($1, $2, $3)
             ON CONFLICT (agency_id) DO NOTHING",
        )
        .bind(agency_id.0)
        .bind(&wrapped)
        .bind(self.master.id())
        .execute(&self.pool)
        .await?;
        let (wrapped, master_key_id): (Vec<u8>, String) = sqlx::query_as(
            "SELECT wrapped_key, master_key_id FROM agency_keys WHERE agency_id = $1",
        )
        .bind(agency_id.0)
        .fetch_one(&self.pool)
        .await?;
        let key = self
            .master
            .unwrap(&wrapped, &master_key_id, &agency_key_context(agency_id))?;
        self.agency_keys
            .write()
            .expect("agency key cache lock poisoned")
            .insert(agency_id, key.clone());
        Ok(key)
    }
}

/// Counts of keys re-wrapped by one call to [`rewrap_batch`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RewrapProgress {
    /// Data keys re-wrapped.
    pub data_keys: u64,
    /// Agency keys re-wrapped.
    pub agency_keys: u64,
}

impl RewrapProgress {
    /// Returns the number of keys re-wrapped, of both kinds.
    pub fn total(&self) -> u64 {
        self.data_keys + self.agency_keys
    }
}

/// Numbers of stored keys by the master key that wraps them. Destroyed data keys are not counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WrappedKeyCounts {
    /// Keys wrapped by the old master key.
    pub old: u64,
    /// Keys wrapped by the new master key.
    pub new: u64,
    /// Keys wrapped by any other master key, which a rotation leaves alone.
    pub other: u64,
}

/// Counts the data keys and agency keys wrapped by `old`, by `new` and by other master keys.
///
/// # Errors
/// Returns [`KeyError::Database`] when the query fails.
pub async fn count_wrapped_keys(
    pool: &PgPool,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<WrappedKeyCounts, KeyError> {
    let (old_count, new_count, other_count): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE master_key_id = $1),
                count(*) FILTER (WHERE master_key_id = $2),
                count(*) FILTER (WHERE master_key_id <> $1 AND master_key_id <> $2)
           FROM (SELECT master_key_id FROM data_keys WHERE destroyed_at IS NULL
                 UNION ALL
                 SELECT master_key_id FROM agency_keys) AS wrapped",
    )
    .bind(old.id())
    .bind(new.id())
    .fetch_one(pool)
    .await?;
    let to_u64 = |count: i64| u64::try_from(count).unwrap_or_default();
    Ok(WrappedKeyCounts {
        old: to_u64(old_count),
        new: to_u64(new_count),
        other: to_u64(other_count),
    })
}

/// Re-wraps up to `batch` stored keys that `old` wraps under `new`, in one transaction:
/// data keys first (destroyed ones are skipped), then agency keys.
///
/// Call it until it returns a zero [`RewrapProgress::total`]. Each call commits its batch,
/// so an interrupted rotation resumes with the keys still wrapped by `old`, and keys that
/// `new` already wraps are never touched. The selected rows are locked with
/// `FOR UPDATE SKIP LOCKED`, so two rotations at once share the rows instead of waiting.
///
/// # Errors
/// Returns [`KeyError::SameMasterKey`] when `old` and `new` are the same key. Returns
/// [`KeyError::DataKeyUnwrap`] or [`KeyError::AgencyKeyUnwrap`] when a stored key fails
/// to unwrap under `old` (tampered bytes or a wrong context), and then rolls back the
/// whole batch.
pub async fn rewrap_batch(
    pool: &PgPool,
    old: &MasterKey,
    new: &MasterKey,
    batch: i64,
) -> Result<RewrapProgress, KeyError> {
    if old.id() == new.id() {
        return Err(KeyError::SameMasterKey {
            master_key_id: old.id().to_owned(),
        });
    }
    let mut transaction = pool.begin().await?;
    let mut progress = RewrapProgress::default();

    let data_keys: Vec<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT agency_id, subject_id, wrapped_key FROM data_keys
          WHERE master_key_id = $1 AND destroyed_at IS NULL
          ORDER BY agency_id, subject_id
          LIMIT $2
          FOR UPDATE SKIP LOCKED",
    )
    .bind(old.id())
    .bind(batch)
    .fetch_all(&mut *transaction)
    .await?;
    for (agency_id, subject_id, wrapped) in data_keys {
        let agency_id = AgencyId(agency_id);
        let context = data_key_context(agency_id, subject_id);
        let key =
            old.unwrap(&wrapped, old.id(), &context)
                .map_err(|source| KeyError::DataKeyUnwrap {
                    agency_id,
                    subject_id,
                    source,
                })?;
        sqlx::query(
            "UPDATE data_keys SET wrapped_key = $3, master_key_id = $4
              WHERE agency_id = $1 AND subject_id = $2",
        )
        .bind(agency_id.0)
        .bind(subject_id)
        .bind(new.wrap(&key, &context))
        .bind(new.id())
        .execute(&mut *transaction)
        .await?;
        progress.data_keys += 1;
    }

    let remaining = batch - i64::try_from(progress.data_keys).unwrap_or(batch);
    if remaining > 0 {
        let agency_keys: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT agency_id, wrapped_key FROM agency_keys
              WHERE master_key_id = $1
              ORDER BY agency_id
              LIMIT $2
              FOR UPDATE SKIP LOCKED",
        )
        .bind(old.id())
        .bind(remaining)
        .fetch_all(&mut *transaction)
        .await?;
        for (agency_id, wrapped) in agency_keys {
            let agency_id = AgencyId(agency_id);
            let context = agency_key_context(agency_id);
            let key = old
                .unwrap(&wrapped, old.id(), &context)
                .map_err(|source| KeyError::AgencyKeyUnwrap { agency_id, source })?;
            sqlx::query(
                "UPDATE agency_keys SET wrapped_key = $2, master_key_id = $3
                  WHERE agency_id = $1",
            )
            .bind(agency_id.0)
            .bind(new.wrap(&key, &context))
            .bind(new.id())
            .execute(&mut *transaction)
            .await?;
            progress.agency_keys += 1;
        }
    }

    transaction.commit().await?;
    Ok(progress)
}
