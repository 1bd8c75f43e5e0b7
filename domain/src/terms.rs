//! Program terms: the bonus schedule and the rules on attribution, deadlines,
//! eligibility, caps and guarantees that a referral keeps from the moment it is
//! submitted.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::values::{Hours, ValueError};

/// Event that makes a milestone due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The candidate is hired; the threshold is always 0.
    Hired,
    /// Total hours worked reach the threshold (in hours).
    HoursWorked,
    /// The placement has lasted the threshold (in whole days) since its start date.
    DaysEmployed,
}

impl Trigger {
    /// Returns the stored name, as used in serde and in milestone keys.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::Hired => "hired",
            Trigger::HoursWorked => "hours_worked",
            Trigger::DaysEmployed => "days_employed",
        }
    }

    fn from_stored(text: &str) -> Option<Self> {
        [Trigger::Hired, Trigger::HoursWorked, Trigger::DaysEmployed]
            .into_iter()
            .find(|trigger| trigger.as_str() == text)
    }
}

/// Recipient of a milestone's bonus.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The ambassador who referred the candidate.
    #[default]
    Ambassador,
    /// The referred candidate, for two-sided bonuses.
    Candidate,
}

impl Recipient {
    /// Returns the stored name, as used in serde, milestone keys and payout ids.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Recipient::Ambassador => "ambassador",
            Recipient::Candidate => "candidate",
        }
    }

    fn from_stored(text: &str) -> Option<Self> {
        [Recipient::Ambassador, Recipient::Candidate]
            .into_iter()
            .find(|recipient| recipient.as_str() == text)
    }
}

/// One entry of a bonus schedule.
///
/// `threshold` is hours for [`Trigger::HoursWorked`], whole days for
/// [`Trigger::DaysEmployed`] (stored as `Hours` with no fraction, such as `90.00`) and
/// 0 for [`Trigger::Hired`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Milestone {
    /// Event that makes the milestone due.
    pub trigger: Trigger,
    /// Hours or days that must be reached, see the type documentation.
    pub threshold: Hours,
    /// Bonus in minor units of the program currency.
    pub amount: i64,
    /// Recipient of the bonus.
    #[serde(default)]
    pub recipient: Recipient,
}

impl Milestone {
    /// Returns the stable key that identifies this milestone within a referral.
    #[must_use]
    pub fn key(&self) -> MilestoneKey {
        MilestoneKey(format!(
            "{}:{}:{}",
            self.trigger.as_str(),
            self.threshold,
            self.recipient.as_str()
        ))
    }
}

/// Stable text key of a milestone: `<trigger>:<threshold>:<recipient>`, with the
/// threshold written with exactly two decimals, such as `hours_worked:160.00:ambassador`,
/// `days_employed:90.00:candidate` or `hired:0.00:ambassador`.
///
/// The key is stored in events and is part of every payout id, so its format must never
/// change. The amount is deliberately not part of it: a milestone paid once is never
/// paid again for another amount.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MilestoneKey(String);

impl MilestoneKey {
    /// Parses a stored key.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `milestone` unless the text has the canonical form
    /// that [`Milestone::key`] produces.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let invalid = || {
            ValueError::new(
                "milestone",
                "must be a milestone key such as hours_worked:160.00:ambassador",
            )
        };
        let mut parts = text.split(':');
        let (Some(trigger), Some(threshold), Some(recipient), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let trigger = Trigger::from_stored(trigger).ok_or_else(invalid)?;
        let threshold = Hours::parse(threshold).map_err(|_| invalid())?;
        let recipient = Recipient::from_stored(recipient).ok_or_else(invalid)?;

        let key = Milestone {
            trigger,
            threshold,
            amount: 0,
            recipient,
        }
        .key();
        // "hours_worked:160:ambassador" would name the same milestone under another
        // text, and would derive another payout id, so only the canonical text is valid.
        if key.0 != text {
            return Err(invalid());
        }
        Ok(key)
    }

    /// Returns the key text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MilestoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MilestoneKey {
    type Error = ValueError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<MilestoneKey> for String {
    fn from(key: MilestoneKey) -> Self {
        key.0
    }
}

/// Kind of ambassador.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmbassadorKind {
    /// A worker the agency has placed.
    FieldWorker,
    /// A worker the agency placed in the past.
    FormerWorker,
    /// Someone outside the agency.
    External,
    /// A recruiter or branch employee: recorded as a source, never paid a bonus.
    AgencyStaff,
}

impl AmbassadorKind {
    /// Returns the stored name, as used in serde.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AmbassadorKind::FieldWorker => "field_worker",
            AmbassadorKind::FormerWorker => "former_worker",
            AmbassadorKind::External => "external",
            AmbassadorKind::AgencyStaff => "agency_staff",
        }
    }
}

/// The terms of a program, copied into each referral when it is submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TermsFields")]
pub struct Terms {
    /// Milestones that earn a bonus, at least one.
    pub bonus_schedule: Vec<Milestone>,
    /// Days after submission during which a referral owns its candidate.
    pub attribution_window_days: u32,
    /// Days after submission by which the hire must be recorded to earn a bonus;
    /// defaults to the attribution window.
    pub hire_deadline_days: u32,
    /// Days back in which an earlier contact with the candidate makes a referral
    /// ineligible.
    pub prior_contact_lookback_days: u32,
    /// Ambassador kinds that can earn a bonus; never includes agency staff.
    pub eligible_ambassador_kinds: Vec<AmbassadorKind>,
    /// Maximum number of paid bonuses per ambassador in a rolling 12 months, if any.
    pub annual_bonus_cap: Option<u32>,
    /// Days a placement must last for its milestones to stay payable, if any.
    pub guarantee_days: Option<u32>,
    /// Whether a payout is forfeited when the ambassador is deactivated before approval.
    pub referrer_must_be_active: bool,
}

/// Maximum period, in days, of a window, deadline, lookback or guarantee (about ten
/// years).
const MAX_PERIOD_DAYS: u32 = 3650;

impl Terms {
    /// Default attribution window in days.
    pub const DEFAULT_ATTRIBUTION_WINDOW_DAYS: u32 = 180;
    /// Default prior-contact lookback in days.
    pub const DEFAULT_PRIOR_CONTACT_LOOKBACK_DAYS: u32 = 365;

    /// Creates terms with `bonus_schedule` and the defaults for everything else.
    #[must_use]
    pub fn with_schedule(bonus_schedule: Vec<Milestone>) -> Self {
        Self {
            bonus_schedule,
            attribution_window_days: Self::DEFAULT_ATTRIBUTION_WINDOW_DAYS,
            hire_deadline_days: Self::DEFAULT_ATTRIBUTION_WINDOW_DAYS,
            prior_contact_lookback_days: Self::DEFAULT_PRIOR_CONTACT_LOOKBACK_DAYS,
            eligible_ambassador_kinds: Self::default_eligible_kinds(),
            annual_bonus_cap: None,
            guarantee_days: None,
            referrer_must_be_active: false,
        }
    }

    /// Returns every ambassador kind except agency staff.
    #[must_use]
    pub fn default_eligible_kinds() -> Vec<AmbassadorKind> {
        vec![
            AmbassadorKind::FieldWorker,
            AmbassadorKind::FormerWorker,
            AmbassadorKind::External,
        ]
    }

    /// Returns whether an ambassador of `kind` can earn a bonus under these terms.
    #[must_use]
    pub fn is_kind_eligible(&self, kind: AmbassadorKind) -> bool {
        kind != AmbassadorKind::AgencyStaff && self.eligible_ambassador_kinds.contains(&kind)
    }

    /// Checks the terms before a program is created or revised.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] naming the first offending field, such as
    /// `terms.bonus_schedule[1].threshold`, when any of these is true:
    ///
    /// - the schedule is empty;
    /// - a `hired` threshold is not 0, or an `hours_worked` threshold is 0;
    /// - a `days_employed` threshold is not a whole number from 1 to 3650;
    /// - an amount is not above 0;
    /// - two milestones share trigger, threshold and recipient;
    /// - the attribution window, hire deadline or guarantee is outside 1 to 3650 days,
    ///   or the lookback is above 3650 days;
    /// - the annual cap is 0;
    /// - the eligible kinds are empty or include agency staff.
    pub fn validate(&self) -> Result<(), ValueError> {
        if self.bonus_schedule.is_empty() {
            return Err(ValueError::new(
                "terms.bonus_schedule",
                "must contain at least one milestone",
            ));
        }
        let mut seen: HashMap<(Trigger, Hours, Recipient), usize> = HashMap::new();
        for (index, milestone) in self.bonus_schedule.iter().enumerate() {
            validate_milestone(index, milestone)?;
            let identity = (milestone.trigger, milestone.threshold, milestone.recipient);
            if let Some(first) = seen.insert(identity, index) {
                return Err(ValueError::new(
                    format!("terms.bonus_schedule[{index}]"),
                    format!(
                        "has the same trigger, threshold and recipient as \
                         terms.bonus_schedule[{first}]; merge them into one milestone"
                    ),
                ));
            }
        }

        check_days(
            "terms.attribution_window_days",
            self.attribution_window_days,
            1,
        )?;
        check_days("terms.hire_deadline_days", self.hire_deadline_days, 1)?;
        check_days(
            "terms.prior_contact_lookback_days",
            self.prior_contact_lookback_days,
            0,
        )?;
        if let Some(days) = self.guarantee_days {
            check_days("terms.guarantee_days", days, 1)?;
        }
        if self.annual_bonus_cap == Some(0) {
            return Err(ValueError::new(
                "terms.annual_bonus_cap",
                "must be at least 1; leave it empty for no cap",
            ));
        }

        if self.eligible_ambassador_kinds.is_empty() {
            return Err(ValueError::new(
                "terms.eligible_ambassador_kinds",
                "must contain at least one kind, otherwise no referral could earn a bonus",
            ));
        }
        if self
            .eligible_ambassador_kinds
            .contains(&AmbassadorKind::AgencyStaff)
        {
            return Err(ValueError::new(
                "terms.eligible_ambassador_kinds",
                "must not include agency_staff: agency staff can be recorded as a source but never earn a bonus",
            ));
        }
        Ok(())
    }
}

fn validate_milestone(index: usize, milestone: &Milestone) -> Result<(), ValueError> {
    let field = |name: &str| format!("terms.bonus_schedule[{index}].{name}");

    match milestone.trigger {
        Trigger::Hired if milestone.threshold != Hours::ZERO => {
            return Err(ValueError::new(
                field("threshold"),
                "must be 0 for a hired milestone",
            ));
        }
        Trigger::HoursWorked if milestone.threshold == Hours::ZERO => {
            return Err(ValueError::new(
                field("threshold"),
                "must be greater than 0 hours for an hours_worked milestone; use the hired trigger for a bonus on hire",
            ));
        }
        Trigger::DaysEmployed => {
            let days_in_range = milestone
                .threshold
                .as_whole()
                .is_some_and(|days| (1..=i64::from(MAX_PERIOD_DAYS)).contains(&days));
            if !days_in_range {
                return Err(ValueError::new(
                    field("threshold"),
                    format!(
                        "must be a whole number of days from 1 to {MAX_PERIOD_DAYS} for a days_employed milestone"
                    ),
                ));
            }
        }
        _ => {}
    }

    if milestone.amount <= 0 {
        return Err(ValueError::new(
            field("amount"),
            "must be greater than 0, in minor units of the program currency (50000 for 500.00)",
        ));
    }
    Ok(())
}

fn check_days(field: &str, days: u32, minimum: u32) -> Result<(), ValueError> {
    if (minimum..=MAX_PERIOD_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(ValueError::new(
            field,
            format!("must be from {minimum} to {MAX_PERIOD_DAYS} days"),
        ))
    }
}

/// Wire form of [`Terms`], which fills in the documented defaults.
#[derive(Deserialize)]
struct TermsFields {
    bonus_schedule: Vec<Milestone>,
    #[serde(default = "default_attribution_window_days")]
    attribution_window_days: u32,
    hire_deadline_days: Option<u32>,
    #[serde(default = "default_prior_contact_lookback_days")]
    prior_contact_lookback_days: u32,
    #[serde(default = "Terms::default_eligible_kinds")]
    eligible_ambassador_kinds: Vec<AmbassadorKind>,
    #[serde(default)]
    annual_bonus_cap: Option<u32>,
    #[serde(default)]
    guarantee_days: Option<u32>,
    #[serde(default)]
    referrer_must_be_active: bool,
}

fn default_attribution_window_days() -> u32 {
    Terms::DEFAULT_ATTRIBUTION_WINDOW_DAYS
}

fn default_prior_contact_lookback_days() -> u32 {
    Terms::DEFAULT_PRIOR_CONTACT_LOOKBACK_DAYS
}

impl From<TermsFields> for Terms {
    fn from(fields: TermsFields) -> Self {
        Self {
            bonus_schedule: fields.bonus_schedule,
            attribution_window_days: fields.attribution_window_days,
            hire_deadline_days: fields
                .hire_deadline_days
                .unwrap_or(fields.attribution_window_days),
            prior_contact_lookback_days: fields.prior_contact_lookback_days,
            eligible_ambassador_kinds: fields.eligible_ambassador_kinds,
            annual_bonus_cap: fields.annual_bonus_cap,
            guarantee_days: fields.guarantee_days,
            referrer_must_be_active: fields.referrer_must_be_active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milestone(trigger: Trigger, threshold: u32, amount: i64) -> Milestone {
        Milestone {
            trigger,
            threshold: Hours::whole(threshold),
            amount,
            recipient: Recipient::Ambassador,
        }
    }

    fn valid_terms() -> Terms {
        Terms::with_schedule(vec![
            milestone(Trigger::Hired, 0, 10_000),
            milestone(Trigger::HoursWorked, 160, 40_000),
            milestone(Trigger::DaysEmployed, 90, 25_000),
        ])
    }

    fn field_of(terms: &Terms) -> String {
        terms.validate().unwrap_err().field
    }

    #[test]
    fn valid_terms_pass() {
        assert_eq!(valid_terms().validate(), Ok(()));
    }

    #[test]
    fn empty_schedule_is_rejected() {
        let terms = Terms::with_schedule(vec![]);

        assert_eq!(field_of(&terms), "terms.bonus_schedule");
    }

    #[test]
    fn hired_threshold_must_be_zero() {
        let mut terms = valid_terms();
        terms.bonus_schedule[0].threshold = Hours::whole(1);

        assert_eq!(field_of(&terms), "terms.bonus_schedule[0].threshold");
    }

    #[test]
    fn hours_threshold_must_be_positive() {
        let mut terms = valid_terms();
        terms.bonus_schedule[1].threshold = Hours::ZERO;

        assert_eq!(field_of(&terms), "terms.bonus_schedule[1].threshold");
    }

    #[test]
    fn days_threshold_must_be_whole_and_in_range() {
        for threshold in ["0", "90.5", "3651"] {
            let mut terms = valid_terms();
            terms.bonus_schedule[2].threshold = Hours::parse(threshold).unwrap();

            assert_eq!(
                field_of(&terms),
                "terms.bonus_schedule[2].threshold",
                "threshold {threshold}"
            );
        }
    }

    #[test]
    fn amount_must_be_positive() {
        let mut terms = valid_terms();
        terms.bonus_schedule[1].amount = 0;

        assert_eq!(field_of(&terms), "terms.bonus_schedule[1].amount");
    }

    #[test]
    fn repeated_milestone_is_rejected() {
        let mut terms = valid_terms();
        terms
            .bonus_schedule
            .push(milestone(Trigger::HoursWorked, 160, 99_000));

        assert_eq!(field_of(&terms), "terms.bonus_schedule[3]");
    }

    #[test]
    fn same_milestone_for_both_recipients_is_allowed() {
        let mut terms = valid_terms();
        let mut for_candidate = terms.bonus_schedule[1].clone();
        for_candidate.recipient = Recipient::Candidate;
        terms.bonus_schedule.push(for_candidate);

        assert_eq!(terms.validate(), Ok(()));
    }

    #[test]
    fn periods_must_be_in_range() {
        let mut terms = valid_terms();
        terms.attribution_window_days = 0;
        assert_eq!(field_of(&terms), "terms.attribution_window_days");

        let mut terms = valid_terms();
        terms.hire_deadline_days = 3651;
        assert_eq!(field_of(&terms), "terms.hire_deadline_days");

        let mut terms = valid_terms();
        terms.prior_contact_lookback_days = 3651;
        assert_eq!(field_of(&terms), "terms.prior_contact_lookback_days");

        let mut terms = valid_terms();
        terms.guarantee_days = Some(0);
        assert_eq!(field_of(&terms), "terms.guarantee_days");
    }

    #[test]
    fn annual_cap_of_zero_is_rejected() {
        let mut terms = valid_terms();
        terms.annual_bonus_cap = Some(0);

        assert_eq!(field_of(&terms), "terms.annual_bonus_cap");
    }

    #[test]
    fn agency_staff_is_never_eligible() {
        let mut terms = valid_terms();
        terms
            .eligible_ambassador_kinds
            .push(AmbassadorKind::AgencyStaff);

        assert_eq!(field_of(&terms), "terms.eligible_ambassador_kinds");
        assert!(!terms.is_kind_eligible(AmbassadorKind::AgencyStaff));
    }

    #[test]
    fn deserialization_fills_defaults() {
        let json =
            r#"{"bonus_schedule":[{"trigger":"hours_worked","threshold":160,"amount":50000}]}"#;

        let terms: Terms = serde_json::from_str(json).unwrap();

        assert_eq!(terms.attribution_window_days, 180);
        assert_eq!(terms.hire_deadline_days, 180);
        assert_eq!(terms.prior_contact_lookback_days, 365);
        assert_eq!(
            terms.eligible_ambassador_kinds,
            Terms::default_eligible_kinds()
        );
        assert_eq!(terms.bonus_schedule[0].recipient, Recipient::Ambassador);
        assert_eq!(terms.annual_bonus_cap, None);
        assert!(!terms.referrer_must_be_active);
    }

    #[test]
    fn hire_deadline_defaults_to_the_window() {
        let json = r#"{"bonus_schedule":[],"attribution_window_days":90}"#;

        let terms: Terms = serde_json::from_str(json).unwrap();

        assert_eq!(terms.hire_deadline_days, 90);
    }

    #[test]
    fn milestone_key_has_the_documented_format() {
        assert_eq!(
            milestone(Trigger::HoursWorked, 160, 1).key().as_str(),
            "hours_worked:160.00:ambassador"
        );
        assert_eq!(
            milestone(Trigger::Hired, 0, 1).key().as_str(),
            "hired:0.00:ambassador"
        );
        let mut days = milestone(Trigger::DaysEmployed, 90, 1);
        days.recipient = Recipient::Candidate;
        assert_eq!(days.key().as_str(), "days_employed:90.00:candidate");
    }

    #[test]
    fn milestone_key_ignores_the_amount() {
        assert_eq!(
            milestone(Trigger::HoursWorked, 160, 1).key(),
            milestone(Trigger::HoursWorked, 160, 2).key()
        );
    }

    #[test]
    fn milestone_key_parses_only_canonical_text() {
        let key = MilestoneKey::parse("hours_worked:37.50:candidate").unwrap();
        assert_eq!(key.as_str(), "hours_worked:37.50:candidate");

        for text in [
            "hours_worked:160:ambassador",
            "hours_worked:160.00",
            "hours_worked:160.00:ambassador:x",
            "HOURS_WORKED:160.00:ambassador",
            "hours:160.00:ambassador",
            "hours_worked:160.00:nobody",
            "",
        ] {
            assert!(MilestoneKey::parse(text).is_err(), "{text:?}");
        }
    }
}
