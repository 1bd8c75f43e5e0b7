//! Personal data in the form the aggregates hold it: sealed ciphertext for reading
//! back, keyed hashes for matching.

use serde::{Deserialize, Serialize};

/// Opaque ciphertext of one personal field, produced and opened by the store's
/// encryption layer.
///
/// The domain never looks inside. Destroying the data subject's key makes every
/// `Sealed` value of that person unreadable while the events that contain it stay intact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

/// Hex-encoded HMAC of a normalized e-mail address or phone number (a blind index).
///
/// Two equal keyed hashes mean the same address or number within one agency, which
/// lets duplicate and self-referral checks run without plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyedHash(pub String);

/// Keyed hashes of a person's e-mail address and phone number, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContactKeys {
    /// Keyed hash of the normalized e-mail address.
    pub email: Option<KeyedHash>,
    /// Keyed hash of the E.164 phone number.
    pub phone: Option<KeyedHash>,
}

impl ContactKeys {
    /// Returns whether both sets have an equal e-mail hash or an equal phone hash.
    /// An e-mail hash is never compared with a phone hash.
    #[must_use]
    pub fn matches_any(&self, other: &ContactKeys) -> bool {
        let same = |a: &Option<KeyedHash>, b: &Option<KeyedHash>| matches!((a, b), (Some(a), Some(b)) if a == b);
        same(&self.email, &other.email) || same(&self.phone, &other.phone)
    }

    /// Returns whether neither an e-mail nor a phone hash is present.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.phone.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(email: Option<&str>, phone: Option<&str>) -> ContactKeys {
        ContactKeys {
            email: email.map(|h| KeyedHash(h.to_owned())),
            phone: phone.map(|h| KeyedHash(h.to_owned())),
        }
    }

    #[test]
    fn keys_match_on_equal_email() {
        assert!(keys(Some("e1"), None).matches_any(&keys(Some("e1"), Some("p9"))));
    }

    #[test]
    fn keys_match_on_equal_phone() {
        assert!(keys(Some("e1"), Some("p1")).matches_any(&keys(Some("e2"), Some("p1"))));
    }

    #[test]
    fn keys_never_match_across_kinds() {
        assert!(!keys(Some("same"), None).matches_any(&keys(None, Some("same"))));
    }

    #[test]
    fn missing_keys_never_match() {
        assert!(!keys(None, None).matches_any(&keys(None, None)));
        assert!(!keys(Some("e1"), None).matches_any(&keys(Some("e2"), None)));
    }

    #[test]
    fn keys_are_empty_without_email_and_phone() {
        assert!(ContactKeys::default().is_empty());
        assert!(!keys(None, Some("p1")).is_empty());
    }

    #[test]
    fn sealed_serializes_as_a_bare_string() {
        let sealed = Sealed("v1:abc".to_owned());

        assert_eq!(serde_json::to_string(&sealed).unwrap(), "\"v1:abc\"");
    }
}
