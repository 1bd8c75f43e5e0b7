//! Validated value types: money, hours, contact details, free text, and the sealed
//! (encrypted) and keyed-hash forms in which personal data enters the aggregates.
//!
//! Each type is built through a `parse` constructor and deserializes through it too,
//! so an invalid value cannot exist. Several of these types are stored in events, so
//! tightening a rule later needs an upcaster for the stored events that break it.

mod contact;
mod free_text;
mod hours;
mod money;
mod sealed;

use std::fmt;

use serde::Serialize;

pub use contact::{EmailAddress, PersonName, PhoneNumber};
pub use free_text::FreeText;
pub use hours::Hours;
pub use money::{Currency, Money};
pub use sealed::{ContactKeys, KeyedHash, Sealed};

/// A rejected input value: which field, what is wrong and what is accepted.
///
/// The message never repeats the rejected value, because the value may be personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValueError {
    /// Path of the field, such as `email` or `terms.bonus_schedule[1].threshold`.
    pub field: String,
    /// A plain sentence saying what is wrong and what is accepted.
    pub message: String,
}

impl ValueError {
    /// Creates an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Replaces the field path, for a value parsed on behalf of a named field
    /// (`FreeText::parse` reports `text`, the caller knows it was `reason`).
    #[must_use]
    pub fn for_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

/// Returns whether `text` contains a control character other than the allowed ones.
fn contains_control(text: &str, allowed: &[char]) -> bool {
    text.chars()
        .any(|c| c.is_control() && !allowed.contains(&c))
}

/// Trims a one-line label (a name, a title, an external id) and checks that it has
/// 1 to `max_chars` characters and no control characters.
///
/// # Errors
///
/// Returns a [`ValueError`] for `field` when the trimmed text is empty, too long or
/// contains a control character (including NUL, tab and line breaks).
pub fn parse_label(field: &str, raw: &str, max_chars: usize) -> Result<String, ValueError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(ValueError::new(
            field,
            format!("is required; enter 1 to {max_chars} characters"),
        ));
    }
    let length = text.chars().count();
    if length > max_chars {
        return Err(ValueError::new(
            field,
            format!("is {length} characters long; the maximum is {max_chars}"),
        ));
    }
    if contains_control(text, &[]) {
        return Err(ValueError::new(
            field,
            "contains a control character such as a line break or NUL; enter plain text on one line",
        ));
    }
    Ok(text.to_owned())
}

/// Formats a value for `Debug` without its content, which may be personal data.
struct Redacted<'a>(&'a str, usize);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(<redacted, {} characters>)", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_is_trimmed() {
        assert_eq!(
            parse_label("name", "  Night shift  ", 200).unwrap(),
            "Night shift"
        );
    }

    #[test]
    fn label_rejects_empty_and_blank() {
        assert_eq!(parse_label("name", "", 200).unwrap_err().field, "name");
        assert!(parse_label("name", "   ", 200).is_err());
    }

    #[test]
    fn label_counts_characters_not_bytes() {
        let accented = "é".repeat(200);

        assert!(parse_label("name", &accented, 200).is_ok());
        assert!(parse_label("name", &format!("{accented}é"), 200).is_err());
    }

    #[test]
    fn label_rejects_nul_and_line_breaks() {
        assert!(parse_label("name", "Forklift\0driver", 200).is_err());
        assert!(parse_label("name", "Forklift\ndriver", 200).is_err());
    }

    #[test]
    fn value_error_displays_field_and_message() {
        let error = ValueError::new("hours", "must not be negative");

        assert_eq!(error.to_string(), "hours: must not be negative");
        assert_eq!(error.for_field("threshold").field, "threshold");
    }
}
