//! Currency codes and money amounts in integer minor units.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ValueError;

/// An ISO 4217 currency code: exactly three ASCII uppercase letters.
///
/// Only the shape is checked, not membership in the ISO list, so a newly issued code
/// works without a release.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// US dollar, the default currency of a program.
    pub const USD: Currency = Currency(*b"USD");

    /// Parses a currency code such as `USD` or `EUR`.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] unless the code is exactly three ASCII uppercase
    /// letters. Lowercase codes are rejected rather than converted, so that the stored
    /// code is always the one the caller sent.
    pub fn parse(code: &str) -> Result<Self, ValueError> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|byte| byte.is_ascii_uppercase()) => {
                Ok(Self([*a, *b, *c]))
            }
            _ => Err(ValueError::new(
                "currency",
                "must be an ISO 4217 code of three uppercase letters, such as USD or EUR",
            )),
        }
    }

    /// Returns the three-letter code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // `parse` admits only ASCII letters, so the bytes are always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Default for Currency {
    fn default() -> Self {
        Self::USD
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// A non-negative amount of money in the minor unit of its currency (cents for USD).
///
/// Integers avoid the rounding errors of floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyFields")]
pub struct Money {
    amount: i64,
    currency: Currency,
}

impl Money {
    /// Creates an amount of `amount` minor units.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `amount` when it is negative. Refunds and
    /// clawbacks are separate events, never negative amounts.
    pub fn new(amount: i64, currency: Currency) -> Result<Self, ValueError> {
        if amount < 0 {
            return Err(ValueError::new(
                "amount",
                "must not be negative; give the amount in minor units, such as 50000 for 500.00",
            ));
        }
        Ok(Self { amount, currency })
    }

    /// Returns the amount in minor units.
    #[must_use]
    pub fn amount(&self) -> i64 {
        self.amount
    }

    /// Returns the currency of the amount.
    #[must_use]
    pub fn currency(&self) -> Currency {
        self.currency
    }
}

/// Wire form of [`Money`], validated by `Money::new` on deserialization.
#[derive(Deserialize)]
struct MoneyFields {
    amount: i64,
    currency: Currency,
}

impl TryFrom<MoneyFields> for Money {
    type Error = ValueError;

    fn try_from(fields: MoneyFields) -> Result<Self, Self::Error> {
        Money::new(fields.amount, fields.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_accepts_uppercase_codes() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        assert_eq!(Currency::parse("USD").unwrap(), Currency::USD);
    }

    #[test]
    fn currency_rejects_lowercase_and_wrong_length() {
        for code in ["usd", "Usd", "US", "USDD", "", " USD", "US1", "ÜSD"] {
            let error = Currency::parse(code).unwrap_err();
            assert_eq!(error.field, "currency", "code {code:?}");
        }
    }

    #[test]
    fn currency_defaults_to_usd() {
        assert_eq!(Currency::default(), Currency::USD);
    }

    #[test]
    fn currency_round_trips_through_json() {
        let json = serde_json::to_string(&Currency::USD).unwrap();

        assert_eq!(json, "\"USD\"");
        assert_eq!(
            serde_json::from_str::<Currency>(&json).unwrap(),
            Currency::USD
        );
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
    }

    #[test]
    fn money_rejects_negative_amounts() {
        assert!(Money::new(-1, Currency::USD).is_err());
        assert_eq!(Money::new(0, Currency::USD).unwrap().amount(), 0);
    }

    #[test]
    fn money_deserialization_validates_the_amount() {
        let money: Money = serde_json::from_str(r#"{"amount":50000,"currency":"USD"}"#).unwrap();

        assert_eq!(money, Money::new(50_000, Currency::USD).unwrap());
        assert!(serde_json::from_str::<Money>(r#"{"amount":-5,"currency":"USD"}"#).is_err());
    }
}
