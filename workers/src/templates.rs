//! The texts of the notifications, rendered at send time from the outbox row.
//!
//! Texts name the referral or payout by id and never the candidate, so a message
//! carries no personal data beyond the recipient's own name.

use serde_json::Value;
use uuid::Uuid;

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// E-mail subject.
    pub subject: String,
    /// E-mail body.
    pub body: String,
    /// SMS text, one line.
    pub short: String,
}

/// Renders the template named `template` for a recipient called `name`.
pub fn render(
    template: &str,
    name: Option<&str>,
    referral_id: Option<Uuid>,
    payout_id: Option<Uuid>,
    params: &Value,
) -> Rendered {
    let greeting = name.map_or_else(|| "Hello,".to_owned(), |name| format!("Hello {name},"));
    let referral = referral_id.map_or_else(String::new, |id| id.to_string());
    let payout = payout_id.map_or_else(String::new, |id| id.to_string());
    let text = |key: &str| {
        params
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };

    let (subject, line) = match template {
        "referral_received" => (
            "We received your referral".to_owned(),
            format!("Thank you: your referral {referral} was received."),
        ),
        "status_changed" => {
            let status = text("status");
            (
                format!("Your referral is now {status}"),
                format!("Your referral {referral} is now {status}."),
            )
        }
        "bonus_earned" => {
            let amount = params.get("amount").and_then(Value::as_i64).unwrap_or(0);
            let money = format!("{} {}.{:02}", text("currency"), amount / 100, amount % 100);
            (
                "You earned a referral bonus".to_owned(),
                format!(
                    "Your referral {referral} earned a bonus of {money}, now waiting for approval."
                ),
            )
        }
        "payout_paid" => (
            "Your referral bonus was paid".to_owned(),
            format!(
                "Your referral bonus {payout} was paid on {}.",
                text("paid_on")
            ),
        ),
        "referral_assigned" => (
            "A referral was assigned to you".to_owned(),
            format!("Referral {referral} was assigned to you."),
        ),
        other => (
            "Staffing Referrals notification".to_owned(),
            format!("You have a new notification ({other})."),
        ),
    };
    Rendered {
        subject,
        body: format!("{greeting}\n\n{line}\n"),
        short: line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bonus_amount_shows_minor_units_as_decimal() {
        let rendered = render(
            "bonus_earned",
            Some("Ada"),
            Some(Uuid::nil()),
            None,
            &json!({"amount": 50_005, "currency": "USD"}),
        );
        assert!(rendered.short.contains("USD 500.05"), "{}", rendered.short);
        assert!(rendered.body.starts_with("Hello Ada,"), "{}", rendered.body);
    }

    #[test]
    fn status_change_names_the_status() {
        let rendered = render(
            "status_changed",
            None,
            Some(Uuid::nil()),
            None,
            &json!({"status": "hired"}),
        );
        assert_eq!(rendered.subject, "Your referral is now hired");
        assert!(rendered.body.starts_with("Hello,"));
    }
}
