//! Personal data of one subject: sealing it for events, opening it for authorized
//! readers, and computing the keyed hashes that duplicate checks compare.

use std::fmt;
use std::sync::Arc;

use referrals_domain::ids::AgencyId;
use referrals_domain::values::{
    ContactKeys, EmailAddress, FreeText, PersonName, PhoneNumber, Sealed,
};
use uuid::Uuid;

use crate::crypto::{keyed_hash, open_field, seal_field, ContactKind, Field, SecretKey};
use crate::keys::{KeyError, KeyVault};

/// A person's contact details, validated and normalized, before sealing.
#[derive(Debug, Clone)]
pub struct ContactDetails {
    /// The person's name.
    pub name: PersonName,
    /// The normalized e-mail address, if known.
    pub email: Option<EmailAddress>,
    /// The phone number in E.164 form, if known.
    pub phone: Option<PhoneNumber>,
}

/// Sealed contact details as they enter events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedDetails {
    /// The sealed name.
    pub name: Sealed,
    /// The sealed e-mail address.
    pub email: Option<Sealed>,
    /// The sealed phone number.
    pub phone: Option<Sealed>,
}

/// Opened contact details, or the mark that the subject was erased. `Debug` shows which
/// fields are present but none of their values, so `{:?}` in a log line or panic message
/// does not reveal them.
#[derive(Clone, PartialEq, Eq)]
pub enum OpenedDetails {
    /// The subject's data, decrypted.
    Present {
        /// The name.
        name: String,
        /// The e-mail address.
        email: Option<String>,
        /// The phone number.
        phone: Option<String>,
    },
    /// The subject's data key was destroyed: nothing can be shown.
    Erased,
}

impl fmt::Debug for OpenedDetails {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Present {
                name: _,
                email,
                phone,
            } => formatter
                .debug_struct("Present")
                .field("name", &RedactedValue)
                .field("email", &email.as_ref().map(|_| RedactedValue))
                .field("phone", &phone.as_ref().map(|_| RedactedValue))
                .finish(),
            Self::Erased => formatter.write_str("Erased"),
        }
    }
}

/// The `Debug` stand-in for a personal value.
struct RedactedValue;

impl fmt::Debug for RedactedValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

/// Seals and opens personal fields through the key vault.
#[derive(Debug, Clone)]
pub struct PersonalData {
    vault: Arc<KeyVault>,
}

impl PersonalData {
    /// Creates the service over a key vault.
    pub fn new(vault: Arc<KeyVault>) -> Self {
        Self { vault }
    }

    /// The key vault, for key rotation and erasure.
    pub fn vault(&self) -> &Arc<KeyVault> {
        &self.vault
    }

    /// Seals a subject's contact details under the subject's data key, creating the key
    /// on first use.
    ///
    /// # Errors
    /// Returns [`KeyError::Erased`] for an erased subject, or a storage error.
    pub async fn seal_contact(
        &self,
        agency_id: AgencyId,
        subject_id: Uuid,
        details: &ContactDetails,
    ) -> Result<SealedDetails, KeyError> {
        let key = self.vault.data_key_or_create(agency_id, subject_id).await?;
        Ok(seal_details(&key, agency_id, subject_id, details))
    }

    /// Seals a subject's contact details and a note about them with one read of the
    /// subject's data key, creating the key on first use.
    ///
    /// # Errors
    /// Returns [`KeyError::Erased`] for an erased subject, or a storage error.
    pub async fn seal_contact_with_note(
        &self,
        agency_id: AgencyId,
        subject_id: Uuid,
        details: &ContactDetails,
        note: Option<&FreeText>,
    ) -> Result<(SealedDetails, Option<Sealed>), KeyError> {
        let key = self.vault.data_key_or_create(agency_id, subject_id).await?;
        let note =
            note.map(|note| seal_field(&key, agency_id, subject_id, Field::Note, note.as_str()));
        Ok((seal_details(&key, agency_id, subject_id, details), note))
    }

    /// Opens a subject's sealed contact details.
    ///
    /// # Errors
    /// Returns an error when the key is missing or a ciphertext fails to open; an erased
    /// subject is not an error but [`OpenedDetails::Erased`].
    pub async fn open_contact(
        &self,
        agency_id: AgencyId,
        subject_id: Uuid,
        sealed: &SealedDetails,
    ) -> Result<OpenedDetails, KeyError> {
        let (contact, _) = self
            .open_contact_with_note(agency_id, subject_id, sealed, None)
            .await?;
        Ok(contact)
    }

    /// Opens a subject's sealed contact details and a sealed note about them with one
    /// read of the subject's data key. An erased subject gives
    /// [`OpenedDetails::Erased`] and no note.
    ///
    /// # Errors
    /// Returns an error when the key is missing or a ciphertext fails to open.
    pub async fn open_contact_with_note(
        &self,
        agency_id: AgencyId,
        subject_id: Uuid,
        sealed: &SealedDetails,
        note: Option<&Sealed>,
    ) -> Result<(OpenedDetails, Option<String>), KeyError> {
        let key = match self.vault.data_key(agency_id, subject_id).await {
            Ok(key) => key,
            Err(KeyError::Erased) => return Ok((OpenedDetails::Erased, None)),
            Err(error) => return Err(error),
        };
        let open = |field, value: &Sealed| open_field(&key, agency_id, subject_id, field, value);
        let contact = OpenedDetails::Present {
            name: open(Field::Name, &sealed.name)?,
            email: sealed
                .email
                .as_ref()
                .map(|value| open(Field::Email, value))
                .transpose()?,
            phone: sealed
                .phone
                .as_ref()
                .map(|value| open(Field::Phone, value))
                .transpose()?,
        };
        let note = note.map(|value| open(Field::Note, value)).transpose()?;
        Ok((contact, note))
    }

    /// Computes the keyed hashes of a normalized e-mail address and phone number.
    ///
    /// # Errors
    /// Returns an error when the agency's key cannot be read or created.
    pub async fn contact_keys(
        &self,
        agency_id: AgencyId,
        email: Option<&EmailAddress>,
        phone: Option<&PhoneNumber>,
    ) -> Result<ContactKeys, KeyError> {
        let key = self.vault.agency_key(agency_id).await?;
        Ok(ContactKeys {
            email: email.map(|email| keyed_hash(&key, ContactKind::Email, email.as_str())),
            phone: phone.map(|phone| keyed_hash(&key, ContactKind::Phone, phone.as_str())),
        })
    }

    /// Computes the keyed hashes of a subject whose contact details are sealed, such as an
    /// ambassador being compared with the candidate they refer. An erased subject has none.
    ///
    /// # Errors
    /// Returns an error when a key cannot be read or a ciphertext fails to open.
    pub async fn sealed_contact_keys(
        &self,
        agency_id: AgencyId,
        subject_id: Uuid,
        email: Option<&Sealed>,
        phone: Option<&Sealed>,
    ) -> Result<ContactKeys, KeyError> {
        let key = match self.vault.data_key(agency_id, subject_id).await {
            Ok(key) => key,
            Err(KeyError::Erased | KeyError::Missing) => return Ok(ContactKeys::default()),
            Err(error) => return Err(error),
        };
        let agency_key = self.vault.agency_key(agency_id).await?;
        let hash = |field, kind, value: &Sealed| -> Result<_, KeyError> {
            let plaintext = open_field(&key, agency_id, subject_id, field, value)?;
            Ok(keyed_hash(&agency_key, kind, &plaintext))
        };
        Ok(ContactKeys {
            email: email
                .map(|value| hash(Field::Email, ContactKind::Email, value))
                .transpose()?,
            phone: phone
                .map(|value| hash(Field::Phone, ContactKind::Phone, value))
                .transpose()?,
        })
    }
}

/// Seals each present field of `details` under `key`.
fn seal_details(
    key: &SecretKey,
    agency_id: AgencyId,
    subject_id: Uuid,
    details: &ContactDetails,
) -> SealedDetails {
    let seal = |field, text: &str| seal_field(key, agency_id, subject_id, field, text);
    SealedDetails {
        name: seal(Field::Name, details.name.as_str()),
        email: details
            .email
            .as_ref()
            .map(|email| seal(Field::Email, email.as_str())),
        phone: details
            .phone
            .as_ref()
            .map(|phone| seal(Field::Phone, phone.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opened_details_debug_hides_values() {
        let details = OpenedDetails::Present {
            name: "Zoë Quill".to_owned(),
            email: Some("zoe.quill@example.org".to_owned()),
            phone: None,
        };

        let text = format!("{details:?}");

        assert_eq!(
            text,
            r#"Present { name: [redacted], email: Some([redacted]), phone: None }"#
        );
    }

    #[test]
    fn opened_details_pretty_debug_hides_values() {
        let details = OpenedDetails::Present {
            name: "Zoë Quill".to_owned(),
            email: None,
            phone: Some("+12025550143".to_owned()),
        };

        let text = format!("{details:#?}");

        assert!(!text.contains("Zoë"), "{text}");
        assert!(!text.contains("2025550143"), "{text}");
        assert!(text.contains("phone: Some("), "{text}");
    }

    #[test]
    fn erased_details_debug_names_variant() {
        assert_eq!(format!("{:?}", OpenedDetails::Erased), "Erased");
    }
}
