//! Property tests of the value parsers: any input returns `Ok` or `Err` without a panic,
//! accepted values parse again to themselves, and well-formed values are accepted.

use proptest::prelude::*;
use referrals_domain::values::{
    Currency, EmailAddress, FreeText, Hours, Money, PersonName, PhoneNumber,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_never_panics(text in any::<String>()) {
        let _ = PersonName::parse(&text);
        let _ = EmailAddress::parse(&text);
        let _ = PhoneNumber::parse(&text);
        let _ = FreeText::parse(&text);
        let _ = Hours::parse(&text);
        let _ = Currency::parse(&text);
    }

    #[test]
    fn number_like_text_never_panics(text in "[ +.0-9eE-]{0,40}") {
        let _ = Hours::parse(&text);
        let _ = PhoneNumber::parse(&text);
        let _ = FreeText::parse(&text);
    }

    #[test]
    fn accepted_values_parse_to_themselves(text in any::<String>()) {
        if let Ok(name) = PersonName::parse(&text) {
            prop_assert_eq!(PersonName::parse(name.as_str()).unwrap(), name);
        }
        if let Ok(email) = EmailAddress::parse(&text) {
            prop_assert_eq!(EmailAddress::parse(email.as_str()).unwrap(), email);
        }
        if let Ok(phone) = PhoneNumber::parse(&text) {
            prop_assert_eq!(PhoneNumber::parse(phone.as_str()).unwrap(), phone);
        }
        if let Ok(free_text) = FreeText::parse(&text) {
            prop_assert_eq!(FreeText::parse(free_text.as_str()).unwrap(), free_text);
        }
        if let Ok(hours) = Hours::parse(&text) {
            prop_assert_eq!(Hours::parse(&hours.to_string()).unwrap(), hours);
        }
    }

    #[test]
    fn email_round_trips_lowercased(
        local in "[a-zA-Z0-9._%+-]{1,64}",
        labels in prop::collection::vec("[a-zA-Z0-9-]{1,20}", 2..4),
    ) {
        let address = format!(" {local}@{} ", labels.join("."));
        let email = EmailAddress::parse(&address).unwrap();
        prop_assert_eq!(email.as_str(), address.trim().to_lowercase());
        prop_assert_eq!(EmailAddress::parse(email.as_str()).unwrap(), email);
    }

    #[test]
    fn phone_round_trips_without_separators(
        first in 1u8..=9,
        rest in prop::collection::vec(0u8..=9, 7..=14),
        separators in prop::collection::vec(prop::sample::select(vec!["", " ", "-", ".", "(", ")"]), 15),
    ) {
        let digits: String = std::iter::once(first)
            .chain(rest)
            .map(|digit| char::from(b'0' + digit))
            .collect();
        let written: String = digits
            .chars()
            .zip(separators.iter().cycle())
            .map(|(digit, separator)| format!("{digit}{separator}"))
            .collect();
        let phone = PhoneNumber::parse(&format!("+{written}")).unwrap();
        prop_assert_eq!(phone.as_str(), format!("+{digits}"));
        prop_assert_eq!(PhoneNumber::parse(phone.as_str()).unwrap(), phone);
    }

    #[test]
    fn hours_round_trip_two_decimals(whole in 0i64..=10_000_000, hundredths in 0i64..100) {
        let written = format!("{whole}.{hundredths:02}");
        let hours = Hours::parse(&written).unwrap();
        prop_assert_eq!(hours.to_string(), written);
        let json = serde_json::to_string(&hours).unwrap();
        prop_assert_eq!(serde_json::from_str::<Hours>(&json).unwrap(), hours);
    }

    #[test]
    fn hours_above_maximum_rejected(hundredths in 1i64..1_000_000) {
        let written = format!("{}.{:02}", 10_000_000 + hundredths / 100, hundredths % 100);
        prop_assert!(Hours::parse(&written).is_err(), "{} was accepted", written);
    }

    #[test]
    fn free_text_without_digits_round_trips(text in "[a-zA-Z ,.!?\n\t'-]{1,1000}") {
        let trimmed = text.trim();
        match FreeText::parse(&text) {
            Ok(parsed) => prop_assert_eq!(parsed.as_str(), trimmed),
            Err(_) => prop_assert!(trimmed.is_empty(), "{:?} was rejected", text),
        }
    }

    #[test]
    fn currency_and_money_round_trip(code in "[A-Z]{3}", amount in 0i64..=i64::MAX) {
        let currency = Currency::parse(&code).unwrap();
        prop_assert_eq!(currency.as_str(), code.as_str());
        let money = Money::new(amount, currency).unwrap();
        let json = serde_json::to_string(&money).unwrap();
        prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
    }

    #[test]
    fn negative_money_rejected(amount in i64::MIN..0) {
        prop_assert!(Money::new(amount, Currency::default()).is_err());
    }
}
