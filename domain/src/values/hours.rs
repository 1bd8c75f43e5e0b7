//! Exact decimal hours with two decimals.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Sub};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ValueError;

/// A non-negative number of hours, exact to the hundredth.
///
/// Stored as an integer count of hundredths, so `37.50 + 2.50` is exactly `40.00`.
/// Serializes as a string with two decimals (`"37.50"`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hours(i64);

impl Hours {
    /// Zero hours.
    pub const ZERO: Hours = Hours(0);

    /// Largest value that [`Hours::parse`] accepts: ten million hours, far beyond any
    /// real total, which keeps sums of many values far from integer overflow.
    pub const MAX_PARSED: Hours = Hours(1_000_000_000);

    /// Parses a decimal such as `37.5`, `37.50` or `40`, ignoring surrounding spaces.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `hours` when the text is empty, has a sign, an
    /// exponent, more than two decimals, a dot without digits on both sides, any other
    /// character, or a value above [`Hours::MAX_PARSED`].
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ValueError::new(
                "hours",
                "is required; enter a number of hours such as 37.5",
            ));
        }

        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let is_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !is_digits(whole) || fraction.is_some_and(|part| !is_digits(part)) {
            return Err(ValueError::new(
                "hours",
                "must be a plain decimal number such as 37.5 or 40; signs, exponents and separators are not accepted",
            ));
        }
        let fraction = fraction.unwrap_or("");
        if fraction.len() > 2 {
            return Err(ValueError::new(
                "hours",
                "has more than two decimals; round it to the hundredth, such as 37.25",
            ));
        }

        // Pads "5" to "50" so that "37.5" means 37.50, not 37.05.
        let fraction_hundredths: i64 = format!("{fraction:0<2}").parse().unwrap_or(0);
        let hundredths = whole
            .parse::<i64>()
            .ok()
            .and_then(|whole| whole.checked_mul(100))
            .and_then(|whole| whole.checked_add(fraction_hundredths))
            .filter(|&value| value <= Self::MAX_PARSED.0)
            .ok_or_else(Self::too_large)?;
        Ok(Self(hundredths))
    }

    /// Creates a value from a count of hundredths of an hour.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `hours` when `hundredths` is negative.
    pub fn from_hundredths(hundredths: i64) -> Result<Self, ValueError> {
        if hundredths < 0 {
            return Err(ValueError::new("hours", "must not be negative"));
        }
        Ok(Self(hundredths))
    }

    /// Creates a whole number of hours (or days, for a `days_employed` threshold).
    #[must_use]
    pub fn whole(units: u32) -> Self {
        Self(i64::from(units) * 100)
    }

    /// Returns the value in hundredths of an hour.
    #[must_use]
    pub fn hundredths(self) -> i64 {
        self.0
    }

    /// Returns the whole number, or `None` when the value has a fractional part.
    #[must_use]
    pub fn as_whole(self) -> Option<i64> {
        (self.0 % 100 == 0).then_some(self.0 / 100)
    }

    /// Adds two values, or returns `None` on integer overflow.
    #[must_use]
    pub fn checked_add(self, other: Hours) -> Option<Hours> {
        self.0.checked_add(other.0).map(Hours)
    }

    /// Subtracts `other`, or returns `None` when the result would be negative.
    #[must_use]
    pub fn checked_sub(self, other: Hours) -> Option<Hours> {
        self.0.checked_sub(other.0).filter(|&v| v >= 0).map(Hours)
    }

    fn too_large() -> ValueError {
        ValueError::new(
            "hours",
            format!("is too large; the maximum is {}", Self::MAX_PARSED),
        )
    }
}

impl Add for Hours {
    type Output = Hours;

    /// # Panics
    ///
    /// Panics on integer overflow, which needs about 9 × 10¹⁶ hours.
    fn add(self, other: Hours) -> Hours {
        self.checked_add(other).expect("hours overflow")
    }
}

impl Sub for Hours {
    type Output = Hours;

    /// # Panics
    ///
    /// Panics when `other` is larger than `self`, because hours are never negative.
    /// Use [`Hours::checked_sub`] when that can happen.
    fn sub(self, other: Hours) -> Hours {
        self.checked_sub(other)
            .expect("subtracted more hours than there are")
    }
}

impl Sum for Hours {
    fn sum<I: Iterator<Item = Hours>>(iter: I) -> Hours {
        iter.fold(Hours::ZERO, Add::add)
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl fmt::Debug for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hours({self})")
    }
}

impl Serialize for Hours {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HoursVisitor)
    }
}

/// Accepts a string (the canonical form) or a JSON number.
struct HoursVisitor;

impl Visitor<'_> for HoursVisitor {
    type Value = Hours;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative number of hours with at most two decimals, such as \"37.50\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Hours, E> {
        Hours::parse(text).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Hours, E> {
        i64::try_from(value)
            .ok()
            .and_then(|value| value.checked_mul(100))
            .filter(|&value| value <= Hours::MAX_PARSED.0)
            .map(Hours)
            .ok_or_else(|| E::custom(Hours::too_large()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Hours, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(E::custom(ValueError::new("hours", "must not be negative"))),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Hours, E> {
        if !value.is_finite() || value.is_sign_negative() {
            return Err(E::custom(ValueError::new(
                "hours",
                "must be a finite number that is not negative",
            )));
        }
        // serde_json hands decimal numbers over as f64 and its number text is not
        // available without the `arbitrary_precision` feature. Rust prints the shortest
        // decimal that converts back to the same f64, so `37.5` prints as "37.5" and
        // `0.005` as "0.005", which the exact parser then accepts or rejects.
        // NOTE: a number with more than 15 significant digits, such as
        // 37.499999999999999999, rounds to a nearby f64 before this check runs.
        Hours::parse(&value.to_string()).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(text: &str) -> Hours {
        Hours::parse(text).unwrap()
    }

    #[test]
    fn parse_accepts_whole_and_two_decimal_forms() {
        assert_eq!(hours("37.5").hundredths(), 3750);
        assert_eq!(hours("37.50").hundredths(), 3750);
        assert_eq!(hours("37.05").hundredths(), 3705);
        assert_eq!(hours("40").hundredths(), 4000);
        assert_eq!(hours("0").hundredths(), 0);
        assert_eq!(hours(" 8.25 ").hundredths(), 825);
        assert_eq!(hours("007.5").hundredths(), 750);
    }

    #[test]
    fn parse_rejects_more_than_two_decimals() {
        let error = Hours::parse("0.005").unwrap_err();

        assert_eq!(error.field, "hours");
        assert!(error.message.contains("two decimals"));
        assert!(Hours::parse("37.505").is_err());
    }

    #[test]
    fn parse_rejects_signs_exponents_and_separators() {
        for text in [
            "-1", "+1", "1e2", "1E2", "1,5", "1_000", "1 000", ".5", "40.", "", "  ", "abc",
            "1.2.3", "٣", "NaN", "inf",
        ] {
            assert!(Hours::parse(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn parse_rejects_values_above_the_maximum() {
        assert_eq!(Hours::parse("10000000").unwrap(), Hours::MAX_PARSED);
        assert!(Hours::parse("10000000.01").is_err());
        assert!(Hours::parse("99999999999999999999999").is_err());
    }

    #[test]
    fn display_has_two_decimals() {
        assert_eq!(hours("37.5").to_string(), "37.50");
        assert_eq!(hours("0").to_string(), "0.00");
        assert_eq!(hours("0.07").to_string(), "0.07");
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(hours("0.1") + hours("0.2"), hours("0.3"));
        assert_eq!(hours("40") - hours("2.5"), hours("37.5"));
        assert_eq!(hours("1").checked_sub(hours("2")), None);
        let total: Hours = [hours("8"), hours("7.75"), hours("0.25")].into_iter().sum();
        assert_eq!(total, hours("16"));
    }

    #[test]
    fn from_hundredths_rejects_negative() {
        assert!(Hours::from_hundredths(-1).is_err());
        assert_eq!(Hours::from_hundredths(125).unwrap(), hours("1.25"));
    }

    #[test]
    fn as_whole_returns_only_whole_numbers() {
        assert_eq!(hours("90").as_whole(), Some(90));
        assert_eq!(hours("90.5").as_whole(), None);
    }

    #[test]
    fn serializes_as_a_two_decimal_string() {
        assert_eq!(serde_json::to_string(&hours("37.5")).unwrap(), "\"37.50\"");
    }

    #[test]
    fn deserializes_from_strings() {
        assert_eq!(
            serde_json::from_str::<Hours>("\"37.5\"").unwrap(),
            hours("37.5")
        );
        assert!(serde_json::from_str::<Hours>("\"0.005\"").is_err());
        assert!(serde_json::from_str::<Hours>("\"-1\"").is_err());
    }

    #[test]
    fn deserializes_from_numbers_with_at_most_two_decimals() {
        assert_eq!(serde_json::from_str::<Hours>("40").unwrap(), hours("40"));
        assert_eq!(
            serde_json::from_str::<Hours>("37.5").unwrap(),
            hours("37.5")
        );
        assert_eq!(serde_json::from_str::<Hours>("0.1").unwrap(), hours("0.1"));
        assert_eq!(serde_json::from_str::<Hours>("1e2").unwrap(), hours("100"));
        assert!(serde_json::from_str::<Hours>("0.005").is_err());
        assert!(serde_json::from_str::<Hours>("-1").is_err());
        assert!(serde_json::from_str::<Hours>("-0.5").is_err());
        assert!(serde_json::from_str::<Hours>("1e30").is_err());
        assert!(serde_json::from_str::<Hours>("1e-7").is_err());
    }
}
