//! Password rules and hashing with Argon2id.
//!
//! Hashes use the argon2 crate's defaults (version 0.5): Argon2id, version 0x13, 19 MiB of
//! memory, 2 passes, 1 lane, a 16-byte random salt, all written into the PHC string.
//! That is the minimum the OWASP Password Storage Cheat Sheet gives for Argon2id (as
//! revised in 2023).
//! Verification reads the parameters from the stored string, so raising them later
//! leaves existing hashes valid.
//!
//! Hashing takes tens of milliseconds of CPU on purpose, so it runs on Tokio's blocking
//! threads instead of stalling the async workers.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::rngs::OsRng;
use referrals_domain::values::ValueError;
use zeroize::Zeroizing;

/// Minimum length of a password in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Maximum length of a password in characters; it bounds the work of hashing.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Errors of hashing and verifying, which are failures of the platform, never of the
/// password. Their text names no password or hash.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Argon2 rejected its input, or a stored hash is not a valid PHC string.
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The blocking task running Argon2 panicked or was cancelled.
    #[error("the password hashing task did not finish: {0}")]
    Task(String),
}

/// Checks the length rules of a new password: 12 to 256 characters.
///
/// Length is the only rule: composition rules make passwords harder to remember without
/// making them harder to guess.
///
/// # Errors
/// Returns a [`ValueError`] for `password` saying which bound was missed.
pub fn check_password_rules(password: &str) -> Result<(), ValueError> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        return Err(ValueError::new(
            "password",
            format!("is shorter than {MIN_PASSWORD_CHARS} characters; choose a longer password"),
        ));
    }
    if length > MAX_PASSWORD_CHARS {
        return Err(ValueError::new(
            "password",
            format!("is longer than {MAX_PASSWORD_CHARS} characters; choose a shorter password"),
        ));
    }
    Ok(())
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
///
/// # Errors
/// Returns [`PasswordError`] when Argon2 fails or the blocking task does not finish.
pub async fn hash_password(password: &str) -> Result<String, PasswordError> {
    let password = Zeroizing::new(password.to_owned());
    run_blocking(move || hash_blocking(&password)).await?
}

/// Returns whether `password` matches the PHC string `phc`.
///
/// # Errors
/// Returns [`PasswordError::Hashing`] when `phc` is not a valid PHC string.
pub async fn verify_password(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let password = Zeroizing::new(password.to_owned());
    let phc = phc.to_owned();
    run_blocking(move || verify_blocking(&password, &phc)).await?
}

/// Verifies `password` against a hash of a random password, for sign-ins with an unknown
/// e-mail address: they then take as long as a wrong password for a real account, so
/// the response time does not reveal which addresses have accounts.
///
/// # Errors
/// Returns [`PasswordError`] when hashing fails.
pub async fn verify_against_dummy(password: &str) -> Result<(), PasswordError> {
    let password = Zeroizing::new(password.to_owned());
    run_blocking(move || {
        let dummy = dummy_hash()?;
        verify_blocking(&password, dummy).map(|_| ())
    })
    .await?
}

fn dummy_hash() -> Result<&'static str, PasswordError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let random = crate::accounts::tokens::generate(crate::accounts::tokens::TokenKind::Session);
    let hash = hash_blocking(&random.text)?;
    Ok(DUMMY.get_or_init(|| hash))
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| PasswordError::Hashing(error.to_string()))
}

fn verify_blocking(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|error| {
        PasswordError::Hashing(format!("the stored hash is not a PHC string: {error}"))
    })?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(error) => Err(PasswordError::Hashing(error.to_string())),
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| PasswordError::Task(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_length_bounds_are_inclusive() {
        assert!(check_password_rules(&"a".repeat(11)).is_err());
        assert!(check_password_rules(&"a".repeat(12)).is_ok());
        assert!(check_password_rules(&"é".repeat(256)).is_ok());
        assert!(check_password_rules(&"a".repeat(257)).is_err());
    }

    #[tokio::test]
    async fn hash_is_argon2id_and_verifies() {
        let hash = hash_password("correct horse battery").await.unwrap();

        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password("correct horse battery", &hash)
            .await
            .unwrap());
        assert!(!verify_password("wrong horse battery", &hash).await.unwrap());
    }

    #[tokio::test]
    async fn same_password_hashes_differently() {
        let first = hash_password("correct horse battery").await.unwrap();
        let second = hash_password("correct horse battery").await.unwrap();

        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn malformed_stored_hash_is_an_error() {
        let outcome = verify_password("correct horse battery", "not a hash").await;

        assert!(matches!(outcome, Err(PasswordError::Hashing(_))));
    }

    #[tokio::test]
    async fn dummy_verification_succeeds_quietly() {
        verify_against_dummy("anything at all").await.unwrap();
    }
}
