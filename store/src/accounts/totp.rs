//! Time-based one-time passwords (RFC 6238) as authenticator apps generate them:
//! HMAC-SHA-1, 6 digits, a 30-second step, and a 160-bit secret shown in base32.
//!
//! A code is accepted for the current step and one step either side, which absorbs clock
//! drift and the time a person needs to type it. Which step matched is returned, so the
//! caller can refuse a step that was already used.

use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::RngCore;
use totp_rs::{Algorithm, Secret, TOTP};
use zeroize::Zeroizing;

/// Length of one time step in seconds.
pub const TOTP_STEP_SECONDS: u64 = 30;
/// Number of digits in a code.
pub const TOTP_DIGITS: usize = 6;
/// Steps accepted before and after the current one.
pub const TOTP_SKEW_STEPS: u64 = 1;
/// Secret length in bytes: 160 bits, the length RFC 4226 recommends.
const SECRET_BYTES: usize = 20;

/// Errors of TOTP secrets. The text never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    /// The stored secret is not base32 or is shorter than 128 bits.
    #[error("the stored TOTP secret is invalid: {0}")]
    InvalidSecret(String),
    /// The time is before 1970, which no code can be made for.
    #[error("cannot compute a TOTP code for a time before 1970")]
    TimeBeforeEpoch,
}

/// Generates a new secret and returns it in unpadded base32 (RFC 4648), as authenticator
/// apps expect it to be typed or scanned.
pub fn generate_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    OsRng.fill_bytes(&mut bytes);
    match Secret::Raw(bytes.to_vec()).to_encoded() {
        Secret::Encoded(ref encoded) => Zeroizing::new(encoded.clone()),
        Secret::Raw(_) => unreachable!("to_encoded always returns Secret::Encoded"),
    }
}

/// Returns the time step that `code` is valid for at `now`, searching the current step
/// and [`TOTP_SKEW_STEPS`] either side, or `None` when no step matches.
///
/// Spaces in the code are ignored; anything but 6 digits never matches.
///
/// # Errors
/// Returns [`TotpError`] when the secret is invalid or `now` is before 1970.
pub fn matching_step(
    secret_base32: &str,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Option<u64>, TotpError> {
    let totp = totp(secret_base32)?;
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let current = unix_seconds(now)? / TOTP_STEP_SECONDS;
    let first = current.saturating_sub(TOTP_SKEW_STEPS);
    // Every candidate step is checked, with no early exit, so the time taken does not
    // depend on which step matched. `check` compares in constant time.
    let mut matched = None;
    for step in first..=current + TOTP_SKEW_STEPS {
        if totp.check(&code, step * TOTP_STEP_SECONDS) && matched.is_none() {
            matched = Some(step);
        }
    }
    Ok(matched)
}

/// Computes the code an authenticator shows at `at`, as a client or a test does.
///
/// # Errors
/// Returns [`TotpError`] when the secret is invalid or `at` is before 1970.
pub fn code_at(secret_base32: &str, at: DateTime<Utc>) -> Result<String, TotpError> {
    Ok(totp(secret_base32)?.generate(unix_seconds(at)?))
}

fn totp(secret_base32: &str) -> Result<TOTP, TotpError> {
    let bytes = Secret::Encoded(secret_base32.to_owned())
        .to_bytes()
        .map_err(|_| TotpError::InvalidSecret("it is not unpadded base32".to_owned()))?;
    // Skew 0: `matching_step` walks the accepted steps itself to learn which one matched.
    TOTP::new(Algorithm::SHA1, TOTP_DIGITS, 0, TOTP_STEP_SECONDS, bytes)
        .map_err(|error| TotpError::InvalidSecret(error.to_string()))
}

fn unix_seconds(at: DateTime<Utc>) -> Result<u64, TotpError> {
    u64::try_from(at.timestamp()).map_err(|_| TotpError::TimeBeforeEpoch)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    /// The SHA-1 secret of RFC 6238, appendix B: the ASCII bytes "12345678901234567890".
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn codes_match_rfc_6238_test_vectors() {
        // Appendix B lists 8-digit codes; a 6-digit code is their last 6 digits.
        let vectors = [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ];
        for (seconds, expected) in vectors {
            let at = Utc.timestamp_opt(seconds, 0).unwrap();
            assert_eq!(code_at(RFC_SECRET, at).unwrap(), expected, "at {seconds}");
        }
    }

    #[test]
    fn code_matches_its_own_step_and_neighbours() {
        let secret = generate_secret();
        let now = Utc.timestamp_opt(1_700_000_015, 0).unwrap();
        let step = 1_700_000_015 / 30;

        let current = code_at(&secret, now).unwrap();
        let previous = code_at(&secret, now - Duration::seconds(30)).unwrap();
        let next = code_at(&secret, now + Duration::seconds(30)).unwrap();

        assert_eq!(matching_step(&secret, &current, now).unwrap(), Some(step));
        assert_eq!(
            matching_step(&secret, &previous, now).unwrap(),
            Some(step - 1)
        );
        assert_eq!(matching_step(&secret, &next, now).unwrap(), Some(step + 1));
    }

    #[test]
    fn code_from_two_steps_ago_does_not_match() {
        let secret = generate_secret();
        let now = Utc.timestamp_opt(1_700_000_015, 0).unwrap();
        let old = code_at(&secret, now - Duration::seconds(60)).unwrap();

        // A collision with a code of the accepted steps is possible (about 3 in a
        // million), so the assertion allows only that case.
        let accepted: Vec<String> = [-30, 0, 30]
            .into_iter()
            .map(|offset| code_at(&secret, now + Duration::seconds(offset)).unwrap())
            .collect();
        if !accepted.contains(&old) {
            assert_eq!(matching_step(&secret, &old, now).unwrap(), None);
        }
    }

    #[test]
    fn code_with_spaces_matches() {
        let secret = generate_secret();
        let now = Utc.timestamp_opt(1_700_000_015, 0).unwrap();
        let code = code_at(&secret, now).unwrap();
        let spaced = format!("{} {}", &code[..3], &code[3..]);

        assert!(matching_step(&secret, &spaced, now).unwrap().is_some());
    }

    #[test]
    fn malformed_code_never_matches() {
        let secret = generate_secret();
        let now = Utc.timestamp_opt(1_700_000_015, 0).unwrap();

        assert_eq!(matching_step(&secret, "12345", now).unwrap(), None);
        assert_eq!(matching_step(&secret, "12345a", now).unwrap(), None);
        assert_eq!(matching_step(&secret, "1234567", now).unwrap(), None);
    }

    #[test]
    fn generated_secret_is_160_bits_of_base32() {
        let secret = generate_secret();

        assert_eq!(secret.len(), 32);
        assert!(secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    }

    #[test]
    fn invalid_secret_is_an_error() {
        let now = Utc.timestamp_opt(1_700_000_015, 0).unwrap();

        assert!(matches!(
            code_at("not base32!", now),
            Err(TotpError::InvalidSecret(_))
        ));
        assert!(matches!(
            code_at("GEZDGNBV", now),
            Err(TotpError::InvalidSecret(_))
        ));
    }
}
