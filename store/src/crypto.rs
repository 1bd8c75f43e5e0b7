//! Field encryption and keyed hashes for personal data.
//!
//! Every personal field (a name, an e-mail address, a phone number, a note) is sealed with
//! AES-256-GCM-SIV under the data key of its subject before it enters an event. Data keys
//! are random, one per subject, and stored only wrapped by the master key. The associated
//! data of every ciphertext names the agency, the subject and the field, so a ciphertext
//! copied into another record, subject or agency fails to open instead of yielding
//! another person's data.
//!
//! E-mail addresses and phone numbers also get a keyed hash (HMAC-SHA-256 under a key of
//! the agency), which is what duplicate checks compare; the plaintext is never compared.

use std::fmt;

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use referrals_domain::ids::AgencyId;
use referrals_domain::values::{KeyedHash, Sealed};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of every key: AES-256 and the HMAC keys alike.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// Prefix of a sealed field: the format version, so that a later format can be recognized.
const SEALED_PREFIX: &str = "v1.";

/// Errors of sealing, opening, wrapping and unwrapping.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The master key given in the configuration cannot be used.
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    /// Authentication failed: wrong key, tampered ciphertext, or a ciphertext moved to
    /// another agency, subject or field. Never returned as garbage plaintext.
    #[error("decryption failed: the ciphertext does not match its key and context")]
    DecryptionFailed,
    /// The stored value is not in the sealed format.
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// The wrapped key was made under another master key than the one configured.
    #[error("key is wrapped by master key {found}, but the configured master key is {expected}")]
    WrongMasterKey {
        /// Fingerprint of the master key that wrapped the stored key.
        found: String,
        /// Fingerprint of the configured master key.
        expected: String,
    },
}

/// A 256-bit secret key. Its bytes are wiped from memory when it is dropped and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Generates a new random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Builds a key from exactly 32 bytes.
    ///
    /// # Errors
    /// Returns [`CryptoError::Malformed`] when `bytes` is not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("a key must be exactly 32 bytes"))?;
        Ok(Self(array))
    }

    /// The raw key bytes, for wrapping.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretKey(..)")
    }
}

/// The key that wraps every data key and agency key. It comes from the configuration
/// (`REFERRALS_MASTER_KEY` or `REFERRALS_MASTER_KEY_FILE`) and is never stored in the database.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: Aes256GcmSiv,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Builds the master key from its standard base64 text (32 bytes once decoded).
    ///
    /// # Errors
    /// Returns [`CryptoError::InvalidMasterKey`] when the text is not base64 or not 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            CryptoError::InvalidMasterKey(
                "it is not standard base64; generate one with `openssl rand -base64 32`".into(),
            )
        })?;
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidMasterKey(format!(
                "it decodes to {} bytes, but 32 are needed; generate one with `openssl rand -base64 32`",
                bytes.len()
            )));
        }
        Ok(Self::from_key(&SecretKey::from_slice(&bytes)?))
    }

    /// Builds the master key from raw key bytes.
    pub fn from_key(key: &SecretKey) -> Self {
        // The fingerprint is a hash of the key under a fixed label: it identifies which
        // master key wrapped a row without revealing anything usable about the key.
        let mut digest = Sha256::new();
        digest.update(b"referrals master key fingerprint v1");
        digest.update(key.as_bytes());
        let id = hex(&digest.finalize()[..8]);
        Self {
            id,
            cipher: Aes256GcmSiv::new(key.as_bytes().into()),
        }
    }

    /// Generates a new random master key and returns it with its base64 text.
    pub fn generate() -> (Self, String) {
        let key = SecretKey::generate();
        (Self::from_key(&key), STANDARD.encode(key.as_bytes()))
    }

    /// The fingerprint stored next to every key this master key wraps.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps a key for storage; `context` binds it to its row (agency and subject).
    pub fn wrap(&self, key: &SecretKey, context: &str) -> Vec<u8> {
        seal_bytes(&self.cipher, key.as_bytes(), context.as_bytes())
    }

    /// Unwraps a stored key; `context` must be the one it was wrapped with.
    ///
    /// # Errors
    /// Returns [`CryptoError::WrongMasterKey`] when another master key wrapped it, and
    /// [`CryptoError::DecryptionFailed`] when the bytes or the context do not match.
    pub fn unwrap(
        &self,
        wrapped: &[u8],
        master_key_id: &str,
        context: &str,
    ) -> Result<SecretKey, CryptoError> {
        if master_key_id != self.id {
            return Err(CryptoError::WrongMasterKey {
                found: master_key_id.to_owned(),
                expected: self.id.clone(),
            });
        }
        let bytes = open_bytes(&self.cipher, wrapped, context.as_bytes())?;
        SecretKey::from_slice(&bytes)
    }
}

/// The personal field a ciphertext contains, which is part of its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A person's name.
    Name,
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A free-text note about the person.
    Note,
    /// A user's password hash (a PHC string, never the password).
    PasswordHash,
    /// A user's TOTP secret in base32.
    TotpSecret,
}

impl Field {
    /// The field's name in associated data; stored forever inside ciphertexts, never renamed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Note => "note",
            Self::PasswordHash => "password_hash",
            Self::TotpSecret => "totp_secret",
        }
    }
}

/// The associated data of one sealed field: agency, subject and field.
fn field_context(agency_id: AgencyId, subject_id: Uuid, field: Field) -> String {
    format!(
        "referrals/field/v1|agency={}|subject={}|field={}",
        agency_id,
        subject_id,
        field.as_str()
    )
}

/// The associated data of a wrapped data key.
pub(crate) fn data_key_context(agency_id: AgencyId, subject_id: Uuid) -> String {
    format!("referrals/data-key/v1|agency={agency_id}|subject={subject_id}")
}

/// The associated data of a wrapped agency key.
pub(crate) fn agency_key_context(agency_id: AgencyId) -> String {
    format!("referrals/agency-key/v1|agency={agency_id}")
}

/// Seals one personal field of a subject under that subject's data key.
pub fn seal_field(
    key: &SecretKey,
    agency_id: AgencyId,
    subject_id: Uuid,
    field: Field,
    plaintext: &str,
) -> Sealed {
    let cipher = Aes256GcmSiv::new(key.as_bytes().into());
    let context = field_context(agency_id, subject_id, field);
    let bytes = seal_bytes(&cipher, plaintext.as_bytes(), context.as_bytes());
    Sealed(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Opens one sealed field.
///
/// # Errors
/// Returns [`CryptoError::Malformed`] when the value is not a sealed field, and
/// [`CryptoError::DecryptionFailed`] when the key, agency, subject or field do not match.
pub fn open_field(
    key: &SecretKey,
    agency_id: AgencyId,
    subject_id: Uuid,
    field: Field,
    sealed: &Sealed,
) -> Result<String, CryptoError> {
    let encoded = sealed
        .0
        .strip_prefix(SEALED_PREFIX)
        .ok_or(CryptoError::Malformed("a sealed field starts with \"v1.\""))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| CryptoError::Malformed("a sealed field is base64url after its prefix"))?;
    let cipher = Aes256GcmSiv::new(key.as_bytes().into());
    let context = field_context(agency_id, subject_id, field);
    let plaintext = open_bytes(&cipher, &bytes, context.as_bytes())?;
    String::from_utf8(plaintext).map_err(|_| CryptoError::Malformed("plaintext is not UTF-8"))
}

/// The kind of contact value a keyed hash covers. The kind is hashed too, so an e-mail
/// address and a phone number can never produce the same hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactKind {
    /// A normalized e-mail address.
    Email,
    /// A phone number in E.164 form.
    Phone,
}

/// Computes the keyed hash of a normalized contact value under the agency's key.
pub fn keyed_hash(agency_key: &SecretKey, kind: ContactKind, normalized: &str) -> KeyedHash {
    let label: &[u8] = match kind {
        ContactKind::Email => b"email\0",
        ContactKind::Phone => b"phone\0",
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(agency_key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(label);
    mac.update(normalized.as_bytes());
    KeyedHash(hex(&mac.finalize().into_bytes()))
}

/// Encrypts with a fresh random nonce; the result is the nonce followed by the ciphertext.
fn seal_bytes(cipher: &Aes256GcmSiv, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM-SIV encryption fails only for inputs over 64 GiB");
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    sealed
}

fn open_bytes(cipher: &Aes256GcmSiv, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Malformed(
            "ciphertext is shorter than its nonce and tag",
        ));
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Malformed("nonce length"))?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::DecryptionFailed)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency() -> AgencyId {
        AgencyId(Uuid::now_v7())
    }

    #[test]
    fn sealed_field_opens_with_same_context() {
        let key = SecretKey::generate();
        let (agency, subject) = (agency(), Uuid::now_v7());
        let sealed = seal_field(&key, agency, subject, Field::Email, "ada@example.com");

        assert!(!sealed.0.contains("ada"));
        let opened = open_field(&key, agency, subject, Field::Email, &sealed).unwrap();
        assert_eq!(opened, "ada@example.com");
    }

    #[test]
    fn sealed_field_moved_to_other_context_fails() {
        let key = SecretKey::generate();
        let (agency_a, subject) = (agency(), Uuid::now_v7());
        let sealed = seal_field(&key, agency_a, subject, Field::Name, "Ada Lovelace");

        let other_agency = open_field(&key, agency(), subject, Field::Name, &sealed);
        assert!(matches!(other_agency, Err(CryptoError::DecryptionFailed)));
        let other_subject = open_field(&key, agency_a, Uuid::now_v7(), Field::Name, &sealed);
        assert!(matches!(other_subject, Err(CryptoError::DecryptionFailed)));
        let other_field = open_field(&key, agency_a, subject, Field::Email, &sealed);
        assert!(matches!(other_field, Err(CryptoError::DecryptionFailed)));
    }

    #[test]
    fn tampered_or_wrong_key_fails() {
        let key = SecretKey::generate();
        let (agency, subject) = (agency(), Uuid::now_v7());
        let sealed = seal_field(&key, agency, subject, Field::Phone, "+15555550123");

        let wrong_key = open_field(
            &SecretKey::generate(),
            agency,
            subject,
            Field::Phone,
            &sealed,
        );
        assert!(matches!(wrong_key, Err(CryptoError::DecryptionFailed)));

        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed.0[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let tampered = Sealed(format!("v1.{}", URL_SAFE_NO_PAD.encode(bytes)));
        let result = open_field(&key, agency, subject, Field::Phone, &tampered);
        assert!(matches!(result, Err(CryptoError::DecryptionFailed)));
    }

    #[test]
    fn same_plaintext_seals_differently() {
        let key = SecretKey::generate();
        let (agency, subject) = (agency(), Uuid::now_v7());
        let first = seal_field(&key, agency, subject, Field::Name, "Ada");
        let second = seal_field(&key, agency, subject, Field::Name, "Ada");
        assert_ne!(first, second);
    }

    #[test]
    fn wrapped_key_needs_same_master_and_context() {
        let (master, _) = MasterKey::generate();
        let key = SecretKey::generate();
        let wrapped = master.wrap(&key, "context-a");

        let unwrapped = master.unwrap(&wrapped, master.id(), "context-a").unwrap();
        assert_eq!(unwrapped.as_bytes(), key.as_bytes());
        let other_context = master.unwrap(&wrapped, master.id(), "context-b");
        assert!(matches!(other_context, Err(CryptoError::DecryptionFailed)));

        let (other_master, _) = MasterKey::generate();
        let result = other_master.unwrap(&wrapped, master.id(), "context-a");
        assert!(matches!(result, Err(CryptoError::WrongMasterKey { .. })));
    }

    #[test]
    fn master_key_parse_rejects_bad_input() {
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64(&STANDARD.encode([0u8; 16])).is_err());
        let (generated, text) = MasterKey::generate();
        assert_eq!(MasterKey::from_base64(&text).unwrap().id(), generated.id());
    }

    #[test]
    fn keyed_hash_depends_on_key_and_kind() {
        let key = SecretKey::generate();
        let email = keyed_hash(&key, ContactKind::Email, "ada@example.com");
        assert_eq!(
            email,
            keyed_hash(&key, ContactKind::Email, "ada@example.com")
        );
        assert_ne!(
            email,
            keyed_hash(
                &SecretKey::generate(),
                ContactKind::Email,
                "ada@example.com"
            )
        );
        assert_ne!(
            email,
            keyed_hash(&key, ContactKind::Phone, "ada@example.com")
        );
        assert_eq!(email.0.len(), 64);
    }
}
