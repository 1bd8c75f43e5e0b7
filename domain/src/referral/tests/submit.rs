//! Submission rules: validation order, candidate ownership, eligibility at
//! submission, and which referral owns the candidate over time.

use cqrs_es::event_sink::EventSink;
use cqrs_es::DomainEvent;

use super::*;
use crate::services::{CandidateClaim, CandidateRegistry, ClaimOutcome};

/// Claims the test candidate for `owner`, as an earlier referral would have.
async fn claim_candidate(registry: &InMemoryCandidateRegistry, owner: ReferralId) {
    let claim = CandidateClaim {
        agency_id: agency_id(),
        referral_id: owner,
        keys: candidate_keys(),
        submitted_at: day(-10),
    };
    assert_eq!(registry.claim(&claim).await.unwrap(), ClaimOutcome::Owner);
}

#[tokio::test]
async fn submit_referral_by_eligible_ambassador_owns_the_candidate() {
    ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(submit_command().into())
        .await
        .then_expect_events(vec![submitted()]);
}

#[tokio::test]
async fn submit_referral_trims_the_job_reference() {
    let mut command = submit_command();
    command.job_reference = Some("  Forklift operator, night shift ".to_owned());

    ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .then_expect_events(vec![submitted()]);
}

#[tokio::test]
async fn submit_referral_to_closed_program_is_rejected() {
    let mut command = submit_command();
    command.program.open = false;

    ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .then_expect_error(DomainError::ProgramClosed);
}

#[tokio::test]
async fn submit_referral_by_inactive_ambassador_is_rejected() {
    let mut command = submit_command();
    command.ambassador.active = false;

    ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .then_expect_error(DomainError::AmbassadorInactive);
}

#[tokio::test]
async fn submit_referral_without_email_or_phone_is_rejected() {
    let mut command = submit_command();
    command.candidate_keys = ContactKeys::default();

    ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .then_expect_error(DomainError::CandidateContactMissing);
}

#[tokio::test]
async fn submit_referral_by_the_candidate_is_rejected() {
    let mut command = submit_command();
    command.candidate_keys.email = ambassador().contact_keys.email;

    ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .then_expect_error(DomainError::SelfReferral);
}

#[tokio::test]
async fn submit_referral_with_the_ambassadors_phone_is_rejected() {
    let mut command = submit_command();
    command.candidate_keys.email = None;
    command.candidate_keys.phone = ambassador().contact_keys.phone;

    ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .then_expect_error(DomainError::SelfReferral);
}

#[tokio::test]
async fn submit_referral_rejected_as_self_referral_claims_nothing() {
    let (services, registry) = InMemoryCandidateRegistry::services();
    let mut command = submit_command();
    command.candidate_keys = ambassador().contact_keys;

    let result = ReferralTest::with(services)
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .inspect_result();

    assert_eq!(result, Err(DomainError::SelfReferral));
    let later_claim = CandidateClaim {
        agency_id: agency_id(),
        referral_id: other_referral_id(),
        keys: ambassador().contact_keys,
        submitted_at: day(1),
    };
    assert_eq!(
        registry.claim(&later_claim).await.unwrap(),
        ClaimOutcome::Owner
    );
}

#[tokio::test]
async fn submit_referral_of_owned_candidate_is_recorded_as_duplicate() {
    let (services, registry) = InMemoryCandidateRegistry::services();
    claim_candidate(&registry, other_referral_id()).await;

    let events = ReferralTest::with(services)
        .given_no_previous_events()
        .when_async(submit_command().into())
        .await
        .inspect_result()
        .unwrap();

    let [ReferralEvent::ReferralSubmitted {
        status,
        duplicate_of,
        eligibility,
        ..
    }] = events.as_slice()
    else {
        panic!("expected one ReferralSubmitted, got {events:?}");
    };
    assert_eq!(*status, ReferralStatus::Duplicate);
    assert_eq!(*duplicate_of, Some(other_referral_id()));
    assert_eq!(
        *eligibility,
        Eligibility::ineligible(IneligibleReason::Duplicate)
    );
}

#[tokio::test]
async fn submit_referral_retried_after_its_claim_still_owns() {
    let (services, registry) = InMemoryCandidateRegistry::services();
    claim_candidate(&registry, referral_id()).await;

    ReferralTest::with(services)
        .given_no_previous_events()
        .when_async(submit_command().into())
        .await
        .then_expect_events(vec![submitted()]);
}

#[tokio::test]
async fn submit_referral_by_agency_staff_is_ineligible_by_kind() {
    let mut command = submit_command();
    command.ambassador.kind = AmbassadorKind::AgencyStaff;

    let events = ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .inspect_result()
        .unwrap();

    let mut referral = Referral::default();
    events.into_iter().for_each(|event| referral.apply(event));
    assert_eq!(referral.status(), Some(ReferralStatus::Submitted));
    assert_eq!(
        referral.eligibility(),
        Some(Eligibility::ineligible(IneligibleReason::AmbassadorKind))
    );
}

#[tokio::test]
async fn submit_referral_with_prior_contact_is_ineligible() {
    let mut command = submit_command();
    command.prior_contact = true;

    let events = ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .inspect_result()
        .unwrap();

    let mut referral = Referral::default();
    events.into_iter().for_each(|event| referral.apply(event));
    assert_eq!(referral.status(), Some(ReferralStatus::Submitted));
    assert_eq!(
        referral.eligibility(),
        Some(Eligibility::ineligible(IneligibleReason::PriorContact))
    );
    assert_eq!(referral.prior_contact(), Some(true));
}

#[tokio::test]
async fn submit_referral_twice_is_rejected() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(submit_command().into())
        .await
        .then_expect_error(DomainError::AlreadyExists {
            aggregate: "referral",
        });
}

#[tokio::test]
async fn submit_referral_when_registry_fails_is_unavailable() {
    let (services, registry) = InMemoryCandidateRegistry::services();
    registry.set_failing(true);

    let error = ReferralTest::with(services)
        .given_no_previous_events()
        .when_async(submit_command().into())
        .await
        .inspect_result()
        .unwrap_err();

    assert_eq!(error.kind(), crate::ErrorKind::Unavailable);
}

#[tokio::test]
async fn submit_referral_with_overlong_job_reference_is_rejected() {
    let mut command = submit_command();
    command.job_reference = Some("x".repeat(201));

    let result = ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(command.into())
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "job_reference");
}

#[tokio::test]
async fn submit_referral_concurrently_gives_exactly_one_owner() {
    let services = services();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let services = services.clone();
        tasks.push(tokio::spawn(async move {
            let mut command = submit_command();
            command.referral_id = ReferralId::new();
            let mut referral = Referral::default();
            let sink = EventSink::default();
            referral
                .handle(command.into(), &services, &sink)
                .await
                .unwrap();
            referral.status()
        }));
    }

    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }

    let owners = statuses
        .iter()
        .filter(|status| **status == Some(ReferralStatus::Submitted))
        .count();
    let duplicates = statuses
        .iter()
        .filter(|status| **status == Some(ReferralStatus::Duplicate))
        .count();
    assert_eq!(owners, 1);
    assert_eq!(duplicates, 15);
}

#[tokio::test]
async fn commands_on_unknown_referral_are_not_found() {
    ReferralTest::with(services())
        .given_no_previous_events()
        .when_async(MarkContacted { at: day(1) }.into())
        .await
        .then_expect_error(DomainError::NotFound {
            aggregate: "referral",
        });
}

fn referral_after(events: Vec<ReferralEvent>) -> Referral {
    let mut referral = Referral::default();
    events.into_iter().for_each(|event| referral.apply(event));
    referral
}

#[test]
fn open_referral_owns_the_candidate_until_the_window_closes() {
    let referral = referral_after(vec![submitted()]);

    assert!(referral.owns_candidate_at(day(0)));
    assert!(referral.owns_candidate_at(day(180) - TimeDelta::seconds(1)));
    assert!(!referral.owns_candidate_at(day(180)));
}

#[test]
fn hired_referral_keeps_the_candidate_after_the_window() {
    let referral = referral_after(hired_history());

    assert!(referral.owns_candidate_at(day(400)));
}

#[test]
fn ended_referrals_do_not_own_the_candidate() {
    let declined = referral_after(vec![
        submitted(),
        ReferralEvent::ReferralDeclined {
            reason: text("Not available for night shifts"),
            at: day(2),
        },
    ]);
    let expired = referral_after(vec![
        submitted(),
        ReferralEvent::ReferralExpired { at: day(181) },
    ]);

    assert!(!declined.owns_candidate_at(day(3)));
    assert!(!expired.owns_candidate_at(day(182)));
    assert!(!Referral::default().owns_candidate_at(day(0)));
}

#[test]
fn duplicate_referral_does_not_own_the_candidate() {
    let mut event = submitted_ineligible(IneligibleReason::Duplicate);
    if let ReferralEvent::ReferralSubmitted {
        status,
        duplicate_of,
        ..
    } = &mut event
    {
        *status = ReferralStatus::Duplicate;
        *duplicate_of = Some(other_referral_id());
    }

    let duplicate = referral_after(vec![event]);

    assert!(!duplicate.owns_candidate_at(day(1)));
    assert_eq!(duplicate.duplicate_of(), Some(other_referral_id()));
}

#[test]
fn submitted_referral_keeps_its_terms_version() {
    let referral = referral_after(vec![submitted()]);

    assert_eq!(referral.terms_version(), Some(3));
    assert_eq!(referral.terms(), Some(&terms()));
    assert_eq!(referral.currency(), Some(Currency::USD));
}

#[test]
fn referral_state_round_trips_through_json() {
    let mut events = hired_history();
    events.push(ReferralEvent::HoursRecorded {
        week_ending: date(2025, 2, 9),
        hours: hours("38.5"),
        total_hours: hours("38.5"),
        at: day(35),
    });
    let referral = referral_after(events);

    let json = serde_json::to_string(&referral).unwrap();

    assert_eq!(serde_json::from_str::<Referral>(&json).unwrap(), referral);
}

#[test]
fn event_types_are_fixed_names() {
    assert_eq!(submitted().event_type(), "ReferralSubmitted");
    assert_eq!(hired().event_type(), "ReferralHired");
    assert_eq!(submitted().event_version(), "1.0");
}
