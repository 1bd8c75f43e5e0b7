//! Given/when/then tests of the referral aggregate, one rule per test, with the
//! shared fixtures they start from.

mod hours;
mod pipeline;
mod placement;
mod submit;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::uuid;

use super::*;
use crate::ids::{AgencyId, AmbassadorId, ProgramId, ReferralId, UserId};
use crate::terms::{AmbassadorKind, Milestone, Recipient, Terms, Trigger};
use crate::testing::InMemoryCandidateRegistry;
use crate::values::{ContactKeys, Currency, FreeText, Hours, KeyedHash, Sealed};

type ReferralTest = TestFramework<Referral>;

fn referral_id() -> ReferralId {
    ReferralId(uuid!("0194a0b0-0000-7000-8000-000000000001"))
}

fn other_referral_id() -> ReferralId {
    ReferralId(uuid!("0194a0b0-0000-7000-8000-000000000002"))
}

fn agency_id() -> AgencyId {
    AgencyId(uuid!("0194a0b0-0000-7000-8000-0000000000a1"))
}

fn program_id() -> ProgramId {
    ProgramId(uuid!("0194a0b0-0000-7000-8000-0000000000c1"))
}

fn ambassador_id() -> AmbassadorId {
    AmbassadorId(uuid!("0194a0b0-0000-7000-8000-0000000000b1"))
}

fn recruiter_id() -> UserId {
    UserId(uuid!("0194a0b0-0000-7000-8000-0000000000d1"))
}

/// Submission time: Monday 6 January 2025, 09:00 UTC.
fn submitted_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 6, 9, 0, 0).unwrap()
}

/// `days` whole days after submission.
fn day(days: i64) -> DateTime<Utc> {
    submitted_at() + TimeDelta::days(days)
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

/// First day of work in the hired fixtures: Monday 3 February 2025.
fn start_date() -> NaiveDate {
    date(2025, 2, 3)
}

fn hours(text: &str) -> Hours {
    Hours::parse(text).unwrap()
}

fn text(text: &str) -> FreeText {
    FreeText::parse(text).unwrap()
}

fn milestone(trigger: Trigger, threshold: u32, amount: i64) -> Milestone {
    Milestone {
        trigger,
        threshold: Hours::whole(threshold),
        amount,
        recipient: Recipient::Ambassador,
    }
}

fn hired_milestone() -> Milestone {
    milestone(Trigger::Hired, 0, 10_000)
}

fn hours_milestone() -> Milestone {
    milestone(Trigger::HoursWorked, 160, 40_000)
}

fn days_milestone() -> Milestone {
    milestone(Trigger::DaysEmployed, 90, 25_000)
}

/// Bonus on hire, at 160 hours and at 90 days; 30-day guarantee.
fn terms() -> Terms {
    let mut terms =
        Terms::with_schedule(vec![hired_milestone(), hours_milestone(), days_milestone()]);
    terms.guarantee_days = Some(30);
    terms
}

fn program() -> ProgramSnapshot {
    ProgramSnapshot {
        program_id: program_id(),
        terms_version: 3,
        terms: terms(),
        currency: Currency::USD,
        open: true,
    }
}

fn keys(email: &str, phone: &str) -> ContactKeys {
    ContactKeys {
        email: Some(KeyedHash(email.to_owned())),
        phone: Some(KeyedHash(phone.to_owned())),
    }
}

fn ambassador() -> AmbassadorSnapshot {
    AmbassadorSnapshot {
        ambassador_id: ambassador_id(),
        kind: AmbassadorKind::FieldWorker,
        active: true,
        contact_keys: keys("ambassador-email-hash", "ambassador-phone-hash"),
    }
}

fn candidate_keys() -> ContactKeys {
    keys("candidate-email-hash", "candidate-phone-hash")
}

fn candidate() -> SealedContact {
    SealedContact {
        name: Sealed("sealed-candidate-name".to_owned()),
        email: Some(Sealed("sealed-candidate-email".to_owned())),
        phone: Some(Sealed("sealed-candidate-phone".to_owned())),
    }
}

fn submit_command() -> SubmitReferral {
    SubmitReferral {
        referral_id: referral_id(),
        agency_id: agency_id(),
        program: program(),
        ambassador: ambassador(),
        candidate: candidate(),
        candidate_keys: candidate_keys(),
        prior_contact: false,
        job_reference: Some("Forklift operator, night shift".to_owned()),
        note: None,
        at: submitted_at(),
    }
}

/// `ReferralSubmitted` for an eligible owner of the candidate under `terms`.
fn submitted_under(terms: Terms) -> ReferralEvent {
    ReferralEvent::ReferralSubmitted {
        referral_id: referral_id(),
        agency_id: agency_id(),
        program_id: program_id(),
        terms_version: 3,
        terms,
        currency: Currency::USD,
        ambassador_id: ambassador_id(),
        ambassador_kind: AmbassadorKind::FieldWorker,
        candidate: candidate(),
        prior_contact: false,
        job_reference: Some("Forklift operator, night shift".to_owned()),
        note: None,
        status: ReferralStatus::Submitted,
        duplicate_of: None,
        eligibility: Eligibility::ELIGIBLE,
        at: submitted_at(),
    }
}

fn submitted() -> ReferralEvent {
    submitted_under(terms())
}

/// Hire recorded 20 days after submission, starting on [`start_date`].
fn hired() -> ReferralEvent {
    ReferralEvent::ReferralHired {
        start_date: start_date(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northside Logistics".to_owned(),
        external_worker_id: None,
        at: day(20),
    }
}

fn reached(
    milestone: Milestone,
    payable: bool,
    reached_on: NaiveDate,
    at: DateTime<Utc>,
) -> ReferralEvent {
    ReferralEvent::MilestoneReached {
        key: milestone.key(),
        milestone,
        payable,
        reached_on,
        at,
    }
}

/// Returns the history of a hired, eligible referral whose hire milestone was reached.
fn hired_history() -> Vec<ReferralEvent> {
    vec![
        submitted(),
        hired(),
        reached(hired_milestone(), true, start_date(), day(20)),
    ]
}

fn services() -> ReferralServices {
    InMemoryCandidateRegistry::services().0
}

fn invalid_transition(from: &str, action: &'static str) -> DomainError {
    DomainError::InvalidTransition {
        aggregate: "referral",
        from: from.to_owned(),
        action,
    }
}

/// Returns the field of an `Invalid` error, and panics on any other result.
fn invalid_field(result: Result<Vec<ReferralEvent>, DomainError>) -> String {
    match result {
        Err(DomainError::Invalid(error)) => error.field,
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

/// `ReferralSubmitted` for an owner of the candidate that is ineligible for `reason`.
fn submitted_ineligible(reason: IneligibleReason) -> ReferralEvent {
    let mut event = submitted();
    if let ReferralEvent::ReferralSubmitted {
        eligibility,
        prior_contact,
        ..
    } = &mut event
    {
        *eligibility = Eligibility::ineligible(reason);
        *prior_contact = reason == IneligibleReason::PriorContact;
    }
    event
}
