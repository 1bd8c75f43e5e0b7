//! Storage of data keys and agency keys, wrapped by the master key.
//!
//! Data keys are read from the database on every use and never cached, so that an erasure
//! (destroying a subject's key) takes effect in every running process at once. Agency keys
//! for keyed hashes are cached: they are only removed when an agency is deleted.

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
        match self.data_key(agency_id, subject_id).await {
            Err(KeyError::Missing) => {}
            other => return other,
        }
        let key = SecretKey::generate();
        let wrapped = self
            .master
            .wrap(&key, &data_key_context(agency_id, subject_id));
        // Two requests may create the first key of a subject at once: the first insert
        // wins and both then read the winner's key.
        sqlx::query(
            "INSERT INTO data_keys (agency_id, subject_id, wrapped_key, master_key_id)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (agency_id, subject_id) DO NOTHING",
        )
        .bind(agency_id.0)
        .bind(subject_id)
        .bind(&wrapped)
        .bind(self.master.id())
        .execute(&self.pool)
        .await?;
        self.data_key(agency_id, subject_id).await
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
            Some((Some(wrapped), Some(master_key_id))) => Ok(self.master.unwrap(
                &wrapped,
                &master_key_id,
                &data_key_context(agency_id, subject_id),
            )?),
            Some(_) => Err(KeyError::Erased),
        }
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
