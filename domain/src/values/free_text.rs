//! Free text for reasons and notes, with the check that keeps government identifiers
//! and payment card numbers out of the platform.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{contains_control, Redacted, ValueError};

/// A reason or note: trimmed, 1 to 1000 characters, no control characters except
/// line breaks and tabs, and nothing shaped like a US Social Security number or a
/// payment card number.
///
/// The platform must never store government identifiers or card numbers, and free
/// text is the one place where a user could type them.
///
/// NOTE: events store free text as plaintext, so erasing a data subject's key does
/// not remove a name that a user typed into a reason.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FreeText(String);

/// Kinds of sensitive number that free text must not contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SensitiveNumber {
    SocialSecurityNumber,
    PaymentCard,
}

impl FreeText {
    /// Maximum length in characters.
    pub const MAX_CHARS: usize = 1000;

    /// Parses and trims a reason or note. Windows line endings become `\n`, since
    /// browsers submit text areas with them.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `text` (rename it with [`ValueError::for_field`])
    /// when the trimmed text:
    ///
    /// - is empty or longer than [`FreeText::MAX_CHARS`];
    /// - contains a control character other than line feed and tab, NUL included;
    /// - contains nine digits grouped 3-2-4 by spaces or dashes (a Social Security number);
    /// - contains 13 to 19 digits, optionally grouped by single spaces or dashes, that
    ///   pass the Luhn check (a payment card number).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let text = raw.replace("\r\n", "\n");
        let text = text.trim();

        if text.is_empty() {
            return Err(ValueError::new(
                "text",
                format!("is required; enter 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        let length = text.chars().count();
        if length > Self::MAX_CHARS {
            return Err(ValueError::new(
                "text",
                format!(
                    "is {length} characters long; the maximum is {}",
                    Self::MAX_CHARS
                ),
            ));
        }
        if contains_control(text, &['\n', '\t']) {
            return Err(ValueError::new(
                "text",
                "contains a control character such as NUL; only line breaks and tabs are allowed",
            ));
        }
        match find_sensitive_number(text) {
            Some(SensitiveNumber::SocialSecurityNumber) => Err(ValueError::new(
                "text",
                "appears to contain a Social Security number; government identifiers and \
                 card numbers must not be entered here, so remove the number and try again",
            )),
            Some(SensitiveNumber::PaymentCard) => Err(ValueError::new(
                "text",
                "appears to contain a payment card number; card numbers and government \
                 identifiers must not be entered here, so remove the number and try again",
            )),
            None => Ok(Self(text.to_owned())),
        }
    }

    /// Returns the trimmed text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FreeText {
    type Error = ValueError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<FreeText> for String {
    fn from(text: FreeText) -> Self {
        text.0
    }
}

impl fmt::Debug for FreeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Redacted("FreeText", self.0.chars().count()).fmt(f)
    }
}

/// Finds the first run of digit groups that looks like an SSN or a card number.
///
/// A run is a sequence of ASCII digit groups joined by exactly one space or dash, so
/// "4111 1111 1111 1111" is one run of four groups, while "160 hours" ends the run at
/// the letter.
fn find_sensitive_number(text: &str) -> Option<SensitiveNumber> {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if !bytes[index].is_ascii_digit() {
            index += 1;
            continue;
        }

        let mut groups: Vec<&[u8]> = Vec::new();
        loop {
            let start = index;
            while index < bytes.len() && bytes[index].is_ascii_digit() {
                index += 1;
            }
            groups.push(&bytes[start..index]);

            let separator_joins_digits = index + 1 < bytes.len()
                && matches!(bytes[index], b' ' | b'-')
                && bytes[index + 1].is_ascii_digit();
            if !separator_joins_digits {
                break;
            }
            index += 1;
        }

        if let Some(found) = classify_run(&groups) {
            return Some(found);
        }
    }
    None
}

/// Checks one run of digit groups for an SSN (three consecutive groups of 3, 2 and 4
/// digits) or a Luhn-valid card number (consecutive whole groups with 13 to 19 digits).
///
/// Card candidates start and end at group boundaries, because a number written with
/// separators is grouped, and one long unseparated number such as an order id longer
/// than 19 digits is not a card number.
fn classify_run(groups: &[&[u8]]) -> Option<SensitiveNumber> {
    let is_ssn = groups
        .windows(3)
        .any(|window| window.iter().map(|g| g.len()).eq([3, 2, 4]));
    if is_ssn {
        return Some(SensitiveNumber::SocialSecurityNumber);
    }

    for first in 0..groups.len() {
        let mut digits: Vec<u8> = Vec::new();
        for group in &groups[first..] {
            digits.extend_from_slice(group);
            if digits.len() > 19 {
                break;
            }
            if digits.len() >= 13 && passes_luhn(&digits) {
                return Some(SensitiveNumber::PaymentCard);
            }
        }
    }
    None
}

/// Luhn check digit test over ASCII digits, as used by payment card numbers.
fn passes_luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, byte)| {
            let digit = u32::from(byte - b'0');
            if position % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                digit
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(text: &str) -> String {
        FreeText::parse(text).unwrap_err().message
    }

    #[test]
    fn ordinary_text_with_numbers_passes() {
        for text in [
            "worked 160 hours",
            "order 12345",
            "Moved to the 2nd shift on 2024-03-15",
            "Call back at 555-123-4567",
            "Candidate preferred site 12 over site 7",
            "Reference 1234567890123456789012345",
        ] {
            assert!(FreeText::parse(text).is_ok(), "{text:?} should pass");
        }
    }

    #[test]
    fn text_is_trimmed_and_keeps_line_breaks_and_tabs() {
        let text = FreeText::parse("  first line\r\n\tsecond line  ").unwrap();

        assert_eq!(text.as_str(), "first line\n\tsecond line");
    }

    #[test]
    fn empty_and_overlong_text_is_rejected() {
        assert!(FreeText::parse("").is_err());
        assert!(FreeText::parse(" \n\t ").is_err());
        assert!(FreeText::parse(&"x".repeat(1000)).is_ok());
        assert!(FreeText::parse(&"x".repeat(1001)).is_err());
    }

    #[test]
    fn nul_and_other_control_characters_are_rejected() {
        assert!(FreeText::parse("no\0show").is_err());
        assert!(FreeText::parse("bell\u{7}").is_err());
        assert!(FreeText::parse("lone\rcarriage return").is_err());
    }

    #[test]
    fn ssn_with_dashes_is_rejected() {
        let message = rejection("Her SSN is 123-45-6789, please file it");

        assert!(message.contains("Social Security number"));
        assert!(message.contains("government identifiers"));
    }

    #[test]
    fn ssn_with_spaces_or_mixed_separators_is_rejected() {
        assert!(FreeText::parse("ssn 123 45 6789").is_err());
        assert!(FreeText::parse("ssn 123-45 6789").is_err());
    }

    #[test]
    fn digits_in_other_groupings_are_not_an_ssn() {
        assert!(FreeText::parse("1234-56-7890").is_ok());
        assert!(FreeText::parse("123-456-789").is_ok());
        assert!(FreeText::parse("123456789").is_ok());
        assert!(FreeText::parse("123--45--6789").is_ok());
    }

    #[test]
    fn luhn_valid_card_numbers_are_rejected() {
        for text in [
            "card 4111111111111111",
            "card 4111 1111 1111 1111",
            "card 4111-1111-1111-1111",
            "amex 3782 822463 10005",
            "ends with 5555555555554444",
            "13 digits 4222222222222",
            "19 digits 6011000990139424009",
        ] {
            let message = rejection(text);
            assert!(message.contains("card number"), "{text:?}: {message}");
        }
    }

    #[test]
    fn card_number_after_another_number_is_rejected() {
        assert!(FreeText::parse("paid 12 4111 1111 1111 1111").is_err());
    }

    #[test]
    fn luhn_invalid_digit_runs_pass() {
        assert!(FreeText::parse("card 4111111111111112").is_ok());
        assert!(FreeText::parse("tracking 4111 1111 1111 1112").is_ok());
    }

    #[test]
    fn luhn_check_matches_known_values() {
        assert!(passes_luhn(b"79927398713"));
        assert!(!passes_luhn(b"79927398710"));
        assert!(passes_luhn(b"4111111111111111"));
    }

    #[test]
    fn rejection_does_not_echo_the_number() {
        let message = rejection("4111 1111 1111 1111");

        assert!(!message.contains("4111"));
    }

    #[test]
    fn deserialization_applies_the_same_checks() {
        assert!(serde_json::from_str::<FreeText>("\"ssn 123-45-6789\"").is_err());
        assert_eq!(
            serde_json::from_str::<FreeText>("\" no show \"")
                .unwrap()
                .as_str(),
            "no show"
        );
    }
}
