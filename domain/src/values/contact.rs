//! Plaintext contact details as they arrive at the edge: person names, e-mail
//! addresses and phone numbers.
//!
//! These types exist only between parsing a request and sealing the value; the
//! aggregates hold [`super::Sealed`] ciphertext and [`super::KeyedHash`] values instead.
//! Their `Debug` output hides the content so that a stray `{:?}` cannot log it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{contains_control, parse_label, Redacted, ValueError};

/// A person's name: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonName(String);

impl PersonName {
    /// Maximum length in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses and trims a name.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `name` when the trimmed name is empty, longer than
    /// [`PersonName::MAX_CHARS`] or contains a control character such as NUL.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        parse_label("name", raw, Self::MAX_CHARS).map(Self)
    }

    /// Returns the trimmed name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A normalized e-mail address: trimmed and lowercased, used as a duplicate-check key.
///
/// The check is deliberately simple: one `@`, a local part, and a domain with a dot.
/// Whether the address exists is only known once a message is delivered to it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Maximum length in characters (RFC 5321 limit for a forward path).
    pub const MAX_CHARS: usize = 254;
    /// Maximum length of the part before the `@` (RFC 5321).
    pub const MAX_LOCAL_CHARS: usize = 64;

    /// Parses an address, trimming it and converting it to lowercase.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `email` when the address is empty, longer than
    /// [`EmailAddress::MAX_CHARS`], or contains whitespace or a control character.
    /// It is also rejected without exactly one `@`, with an empty or too long local
    /// part, or with a domain that has no dot or an empty label (`a..b`, `.com`).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let address = raw.trim().to_lowercase();
        let invalid = |message: &str| Err(ValueError::new("email", message));

        if address.is_empty() {
            return invalid("is required; enter an address such as name@example.com");
        }
        if address.chars().count() > Self::MAX_CHARS {
            return invalid("is longer than 254 characters; enter a shorter address");
        }
        if address.chars().any(char::is_whitespace) || contains_control(&address, &[]) {
            return invalid(
                "contains a space or a control character; enter the address without them",
            );
        }
        let Some((local, domain)) = address.split_once('@') else {
            return invalid("is missing the @; enter an address such as name@example.com");
        };
        if domain.contains('@') {
            return invalid("contains more than one @; enter a single address");
        }
        if local.is_empty() {
            return invalid("has nothing before the @; enter an address such as name@example.com");
        }
        if local.chars().count() > Self::MAX_LOCAL_CHARS {
            return invalid("has more than 64 characters before the @");
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return invalid("needs a domain with a dot after the @, such as example.com");
        }
        Ok(Self(address))
    }

    /// Returns the normalized address.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form: `+`, the country code and the subscriber number,
/// 8 to 15 digits in all, used as a duplicate-check key.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a phone number, removing spaces, dashes, dots and parentheses.
    ///
    /// A number with a leading `+` keeps its country code. A bare 10-digit number is
    /// taken as a North American number written without its country code and gets
    /// `+1`. Any other number without `+` is ambiguous and rejected.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `phone` when, after removing separators, the
    /// number is not `+` followed by 8 to 15 digits with a non-zero first digit, and
    /// is not a 10-digit North American number (area code starting with 2 to 9).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let all_digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());

        if let Some(digits) = compact.strip_prefix('+') {
            // Country codes never start with 0, so "+0..." is a typing error.
            if all_digits(digits) && (8..=15).contains(&digits.len()) && !digits.starts_with('0') {
                return Ok(Self(compact));
            }
        } else if compact.len() == 10 && all_digits(&compact) && !compact.starts_with(['0', '1']) {
            // North American area codes start with 2 to 9.
            return Ok(Self(format!("+1{compact}")));
        }
        Err(ValueError::new(
            "phone",
            "must be an international number starting with + and the country code \
             (8 to 15 digits, such as +44 20 7946 0958) or a 10-digit North American \
             number such as (415) 555-0123",
        ))
    }

    /// Returns the number in E.164 form, such as `+14155550123`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_conversions {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = ValueError;

            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                Redacted(stringify!($name), self.0.chars().count()).fmt(f)
            }
        }
    };
}

string_conversions!(PersonName);
string_conversions!(EmailAddress);
string_conversions!(PhoneNumber);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(
            PersonName::parse("  Ada Lovelace ").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert!(PersonName::parse("").is_err());
        assert!(PersonName::parse(&"a".repeat(201)).is_err());
        assert!(PersonName::parse(&"a".repeat(200)).is_ok());
    }

    #[test]
    fn name_rejects_nul_bytes() {
        let error = PersonName::parse("Ada\0Lovelace").unwrap_err();

        assert_eq!(error.field, "name");
    }

    #[test]
    fn debug_output_hides_the_value() {
        let name = PersonName::parse("Ada Lovelace").unwrap();

        let debug = format!("{name:?}");

        assert!(!debug.contains("Ada"), "{debug}");
    }

    #[test]
    fn email_is_trimmed_and_lowercased() {
        let email = EmailAddress::parse("  Ada.Lovelace@Example.COM ").unwrap();

        assert_eq!(email.as_str(), "ada.lovelace@example.com");
    }

    #[test]
    fn email_accepts_plus_tags_and_subdomains() {
        assert!(EmailAddress::parse("ada+jobs@mail.example.co.uk").is_ok());
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        for address in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "ada@b@example.com",
            "ada lovelace@example.com",
            "ada@example..com",
            "ada@.example.com",
            "ada@example.com.",
            "ada\0@example.com",
            "ada\t@example.com",
        ] {
            let error = EmailAddress::parse(address).unwrap_err();
            assert_eq!(error.field, "email", "address {address:?}");
        }
    }

    #[test]
    fn email_rejects_overlong_parts() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("ada@{}.com", "b".repeat(250));

        assert!(EmailAddress::parse(&long_local).is_err());
        assert!(EmailAddress::parse(&long_total).is_err());
    }

    #[test]
    fn email_error_does_not_echo_the_address() {
        let error = EmailAddress::parse("secret-person@nowhere").unwrap_err();

        assert!(!error.message.contains("secret-person"));
    }

    #[test]
    fn phone_normalizes_international_formats() {
        let cases = [
            ("+44 20 7946 0958", "+442079460958"),
            ("+1 (415) 555-0123", "+14155550123"),
            ("+49.30.1234567", "+49301234567"),
            ("  +33 1 23 45 67 89 ", "+33123456789"),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                PhoneNumber::parse(raw).unwrap().as_str(),
                expected,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn phone_takes_ten_digits_as_north_american() {
        assert_eq!(
            PhoneNumber::parse("(415) 555-0123").unwrap().as_str(),
            "+14155550123"
        );
        assert_eq!(
            PhoneNumber::parse("415.555.0123").unwrap().as_str(),
            "+14155550123"
        );
    }

    #[test]
    fn phone_rejects_ambiguous_or_malformed_numbers() {
        for raw in [
            "",
            "555-0123",
            "1 415 555 0123",
            "0123456789",
            "1234567890",
            "+1234567",
            "+1234567890123456",
            "+0 20 7946 0958",
            "+44 20 7946 095x",
            "++442079460958",
            "44+2079460958",
            "+44/20/7946/0958",
        ] {
            let error = PhoneNumber::parse(raw).unwrap_err();
            assert_eq!(error.field, "phone", "number {raw:?}");
        }
    }

    #[test]
    fn phone_accepts_the_e164_length_limits() {
        assert!(PhoneNumber::parse("+12345678").is_ok());
        assert!(PhoneNumber::parse("+123456789012345").is_ok());
    }

    #[test]
    fn contact_types_deserialize_through_parse() {
        let email: EmailAddress = serde_json::from_str("\" Ada@Example.com\"").unwrap();

        assert_eq!(email.as_str(), "ada@example.com");
        assert!(serde_json::from_str::<PhoneNumber>("\"12\"").is_err());
    }
}
