//! Given/when/then tests of the payout aggregate, one rule per test.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;
use uuid::{uuid, Uuid};

use super::*;
use crate::ids::PayoutId;
use crate::terms::{Milestone, Trigger};
use crate::testing::InMemoryBonusCapLedger;
use crate::values::{Currency, FreeText, Hours};

type PayoutTest = TestFramework<Payout>;

fn referral_id() -> ReferralId {
    ReferralId(uuid!("0193a0b0-0000-7000-8000-000000000001"))
}

fn agency_id() -> AgencyId {
    AgencyId(uuid!("0193a0b0-0000-7000-8000-0000000000a1"))
}

fn program_id() -> ProgramId {
    ProgramId(uuid!("0193a0b0-0000-7000-8000-0000000000c1"))
}

fn ambassador_id() -> AmbassadorId {
    AmbassadorId(uuid!("0193a0b0-0000-7000-8000-0000000000b1"))
}

fn requester() -> UserId {
    UserId(uuid!("0193a0b0-0000-7000-8000-0000000000e1"))
}

fn approver() -> UserId {
    UserId(uuid!("0193a0b0-0000-7000-8000-0000000000e2"))
}

fn batch_id() -> Uuid {
    uuid!("0193a0b0-0000-7000-8000-0000000000f1")
}

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, day, 10, 0, 0).unwrap()
}

fn text(text: &str) -> FreeText {
    FreeText::parse(text).unwrap()
}

fn milestone(recipient: Recipient) -> MilestoneKey {
    Milestone {
        trigger: Trigger::HoursWorked,
        threshold: Hours::whole(160),
        amount: 40_000,
        recipient,
    }
    .key()
}

fn payout_id(recipient: Recipient) -> PayoutId {
    PayoutId::for_milestone(referral_id(), &milestone(recipient), recipient)
}

fn system() -> Requester {
    Requester::System {
        job: "milestone-payouts".to_owned(),
    }
}

/// Options of the payout request that the tests vary.
struct Request {
    recipient: Recipient,
    requested_by: Requester,
    annual_bonus_cap: Option<u32>,
    referrer_must_be_active: bool,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            recipient: Recipient::Ambassador,
            requested_by: system(),
            annual_bonus_cap: None,
            referrer_must_be_active: false,
        }
    }
}

impl Request {
    fn command(self) -> PayoutCommand {
        RequestPayout {
            payout_id: payout_id(self.recipient),
            agency_id: agency_id(),
            referral_id: referral_id(),
            program_id: program_id(),
            ambassador_id: ambassador_id(),
            recipient: self.recipient,
            milestone: milestone(self.recipient),
            amount: Money::new(40_000, Currency::USD).unwrap(),
            requested_by: self.requested_by,
            annual_bonus_cap: self.annual_bonus_cap,
            referrer_must_be_active: self.referrer_must_be_active,
            at: at(1),
        }
        .into()
    }

    fn event(self) -> PayoutEvent {
        PayoutEvent::PayoutRequested {
            payout_id: payout_id(self.recipient),
            agency_id: agency_id(),
            referral_id: referral_id(),
            program_id: program_id(),
            ambassador_id: ambassador_id(),
            recipient: self.recipient,
            milestone: milestone(self.recipient),
            amount: Money::new(40_000, Currency::USD).unwrap(),
            requested_by: self.requested_by,
            annual_bonus_cap: self.annual_bonus_cap,
            referrer_must_be_active: self.referrer_must_be_active,
            at: at(1),
        }
    }
}

fn requested() -> PayoutEvent {
    Request::default().event()
}

fn capped(cap: u32) -> PayoutEvent {
    Request {
        annual_bonus_cap: Some(cap),
        ..Request::default()
    }
    .event()
}

fn approve(ambassador_active: bool) -> PayoutCommand {
    ApprovePayout {
        approver: approver(),
        ambassador_active,
        at: at(2),
    }
    .into()
}

fn approved() -> PayoutEvent {
    PayoutEvent::PayoutApproved {
        approver: approver(),
        at: at(2),
    }
}

fn held() -> PayoutEvent {
    PayoutEvent::PayoutHeld {
        by: approver(),
        reason: text("Checking the timesheets"),
        at: at(3),
    }
}

fn exported() -> PayoutEvent {
    PayoutEvent::PayoutExported {
        batch_id: batch_id(),
        at: at(4),
    }
}

fn paid_on() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 13).unwrap()
}

fn paid() -> PayoutEvent {
    PayoutEvent::PayoutPaid {
        paid_on: paid_on(),
        reference: "PR-2025-0613-17".to_owned(),
        at: at(14),
    }
}

fn mark_paid(reference: &str) -> PayoutCommand {
    MarkPaid {
        paid_on: paid_on(),
        reference: reference.to_owned(),
        at: at(14),
    }
    .into()
}

fn voided_by_approver(reason_code: VoidReason) -> PayoutEvent {
    PayoutEvent::PayoutVoided {
        by: Requester::User {
            user_id: approver(),
        },
        reason_code,
        note: None,
        at: at(2),
    }
}

fn services() -> PayoutServices {
    InMemoryBonusCapLedger::services().0
}

fn invalid_transition(from: &str, action: &'static str) -> DomainError {
    DomainError::InvalidTransition {
        aggregate: "payout",
        from: from.to_owned(),
        action,
    }
}

fn invalid_field(result: Result<Vec<PayoutEvent>, DomainError>) -> String {
    match result {
        Err(DomainError::Invalid(error)) => error.field,
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

#[tokio::test]
async fn request_payout_for_a_milestone_waits_for_approval() {
    PayoutTest::with(services())
        .given_no_previous_events()
        .when_async(Request::default().command())
        .await
        .then_expect_events(vec![requested()]);
}

#[tokio::test]
async fn request_payout_again_emits_nothing() {
    PayoutTest::with(services())
        .given(vec![requested(), approved()])
        .when_async(Request::default().command())
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn request_payout_with_an_underived_id_is_rejected() {
    let PayoutCommand::RequestPayout(mut request) = Request::default().command() else {
        unreachable!("the fixture is a request");
    };
    request.payout_id = PayoutId::new();

    let result = PayoutTest::with(services())
        .given_no_previous_events()
        .when_async(request.into())
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "payout_id");
}

#[tokio::test]
async fn request_payout_for_another_recipient_than_the_milestone_is_rejected() {
    let PayoutCommand::RequestPayout(mut request) = Request::default().command() else {
        unreachable!("the fixture is a request");
    };
    request.milestone = milestone(Recipient::Candidate);
    request.payout_id =
        PayoutId::for_milestone(referral_id(), &request.milestone, Recipient::Ambassador);

    let result = PayoutTest::with(services())
        .given_no_previous_events()
        .when_async(request.into())
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "recipient");
}

#[tokio::test]
async fn request_payout_of_zero_is_rejected() {
    let PayoutCommand::RequestPayout(mut request) = Request::default().command() else {
        unreachable!("the fixture is a request");
    };
    request.amount = Money::new(0, Currency::USD).unwrap();

    let result = PayoutTest::with(services())
        .given_no_previous_events()
        .when_async(request.into())
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "amount");
}

#[tokio::test]
async fn approve_payout_by_another_user_approves_it() {
    let manual = Request {
        requested_by: Requester::User {
            user_id: requester(),
        },
        ..Request::default()
    };

    PayoutTest::with(services())
        .given(vec![manual.event()])
        .when_async(approve(true))
        .await
        .then_expect_events(vec![approved()]);
}

#[tokio::test]
async fn approve_payout_by_its_requester_is_rejected() {
    let manual = Request {
        requested_by: Requester::User {
            user_id: approver(),
        },
        ..Request::default()
    };

    PayoutTest::with(services())
        .given(vec![manual.event()])
        .when_async(approve(true))
        .await
        .then_expect_error(DomainError::SameRequesterAndApprover);
}

#[tokio::test]
async fn approve_payout_for_inactive_ambassador_is_voided_when_required() {
    let must_be_active = Request {
        referrer_must_be_active: true,
        ..Request::default()
    };

    PayoutTest::with(services())
        .given(vec![must_be_active.event()])
        .when_async(approve(false))
        .await
        .then_expect_events(vec![voided_by_approver(VoidReason::AmbassadorInactive)]);
}

#[tokio::test]
async fn approve_payout_for_inactive_ambassador_is_approved_when_not_required() {
    PayoutTest::with(services())
        .given(vec![requested()])
        .when_async(approve(false))
        .await
        .then_expect_events(vec![approved()]);
}

#[tokio::test]
async fn approve_candidate_payout_for_inactive_ambassador_is_approved() {
    let for_candidate = Request {
        recipient: Recipient::Candidate,
        referrer_must_be_active: true,
        ..Request::default()
    };

    PayoutTest::with(services())
        .given(vec![for_candidate.event()])
        .when_async(approve(false))
        .await
        .then_expect_events(vec![approved()]);
}

#[tokio::test]
async fn approve_payout_within_the_cap_reserves_it() {
    let (services, ledger) = InMemoryBonusCapLedger::services();

    PayoutTest::with(services)
        .given(vec![capped(2)])
        .when_async(approve(true))
        .await
        .then_expect_events(vec![approved()]);

    assert!(ledger.is_reserved(payout_id(Recipient::Ambassador)));
}

#[tokio::test]
async fn approve_payout_over_the_cap_is_voided() {
    let (services, ledger) = InMemoryBonusCapLedger::services();
    ledger.insert(agency_id(), ambassador_id(), PayoutId::new(), at(1));

    PayoutTest::with(services)
        .given(vec![capped(1)])
        .when_async(approve(true))
        .await
        .then_expect_events(vec![voided_by_approver(VoidReason::AnnualCapReached)]);

    assert!(!ledger.is_reserved(payout_id(Recipient::Ambassador)));
}

#[tokio::test]
async fn approve_candidate_payout_ignores_the_cap() {
    let (services, ledger) = InMemoryBonusCapLedger::services();
    ledger.insert(agency_id(), ambassador_id(), PayoutId::new(), at(1));
    let for_candidate = Request {
        recipient: Recipient::Candidate,
        annual_bonus_cap: Some(1),
        ..Request::default()
    };

    PayoutTest::with(services)
        .given(vec![for_candidate.event()])
        .when_async(approve(true))
        .await
        .then_expect_events(vec![approved()]);

    assert!(!ledger.is_reserved(payout_id(Recipient::Candidate)));
}

#[tokio::test]
async fn approve_payout_when_the_ledger_fails_is_unavailable() {
    let (services, ledger) = InMemoryBonusCapLedger::services();
    ledger.set_failing(true);

    let error = PayoutTest::with(services)
        .given(vec![capped(1)])
        .when_async(approve(true))
        .await
        .inspect_result()
        .unwrap_err();

    assert_eq!(error.kind(), crate::ErrorKind::Unavailable);
}

#[tokio::test]
async fn approve_payout_on_hold_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested(), held()])
        .when_async(approve(true))
        .await
        .then_expect_error(invalid_transition(
            "pending_approval, on hold",
            "approve the payout",
        ));
}

#[tokio::test]
async fn approve_payout_twice_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested(), approved()])
        .when_async(approve(true))
        .await
        .then_expect_error(invalid_transition("approved", "approve the payout"));
}

#[tokio::test]
async fn approve_unknown_payout_is_not_found() {
    PayoutTest::with(services())
        .given_no_previous_events()
        .when_async(approve(true))
        .await
        .then_expect_error(DomainError::NotFound {
            aggregate: "payout",
        });
}

#[tokio::test]
async fn reject_payout_pending_approval_rejects_it_and_releases_the_cap() {
    let (services, ledger) = InMemoryBonusCapLedger::services();

    PayoutTest::with(services)
        .given(vec![capped(3)])
        .when_async(
            RejectPayout {
                by: approver(),
                reason: text("Hours were disputed by the client"),
                at: at(2),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![PayoutEvent::PayoutRejected {
            by: approver(),
            reason: text("Hours were disputed by the client"),
            at: at(2),
        }]);

    assert_eq!(ledger.released(), vec![payout_id(Recipient::Ambassador)]);
}

#[tokio::test]
async fn reject_approved_payout_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested(), approved()])
        .when_async(
            RejectPayout {
                by: approver(),
                reason: text("Too late"),
                at: at(3),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition("approved", "reject the payout"));
}

#[tokio::test]
async fn hold_approved_payout_holds_it() {
    PayoutTest::with(services())
        .given(vec![requested(), approved()])
        .when_async(
            HoldPayout {
                by: approver(),
                reason: text("Checking the timesheets"),
                at: at(3),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![held()]);
}

#[tokio::test]
async fn hold_held_payout_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested(), held()])
        .when_async(
            HoldPayout {
                by: approver(),
                reason: text("Checking again"),
                at: at(4),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition(
            "pending_approval, on hold",
            "hold the payout",
        ));
}

#[tokio::test]
async fn release_held_payout_releases_it() {
    PayoutTest::with(services())
        .given(vec![requested(), approved(), held()])
        .when_async(
            ReleasePayout {
                by: approver(),
                at: at(5),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![PayoutEvent::PayoutReleased {
            by: approver(),
            at: at(5),
        }]);
}

#[tokio::test]
async fn release_payout_not_on_hold_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested()])
        .when_async(
            ReleasePayout {
                by: approver(),
                at: at(5),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition(
            "pending_approval, not on hold",
            "release the hold on the payout",
        ));
}

#[tokio::test]
async fn void_exported_payout_voids_it_and_releases_the_cap() {
    let (services, ledger) = InMemoryBonusCapLedger::services();
    let void = PayoutEvent::PayoutVoided {
        by: system(),
        reason_code: VoidReason::PlacementEnded,
        note: None,
        at: at(6),
    };

    PayoutTest::with(services)
        .given(vec![capped(3), approved(), exported()])
        .when_async(
            VoidPayout {
                by: system(),
                reason_code: VoidReason::PlacementEnded,
                note: None,
                at: at(6),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![void]);

    assert_eq!(ledger.released(), vec![payout_id(Recipient::Ambassador)]);
}

#[tokio::test]
async fn void_payout_for_other_reason_without_note_is_rejected() {
    let result = PayoutTest::with(services())
        .given(vec![requested()])
        .when_async(
            VoidPayout {
                by: Requester::User {
                    user_id: approver(),
                },
                reason_code: VoidReason::Other,
                note: None,
                at: at(6),
            }
            .into(),
        )
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "note");
}

#[tokio::test]
async fn void_paid_payout_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested(), approved(), exported(), paid()])
        .when_async(
            VoidPayout {
                by: system(),
                reason_code: VoidReason::PlacementEnded,
                note: None,
                at: at(20),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition("paid", "void the payout"));
}

#[tokio::test]
async fn mark_exported_approved_payout_exports_it() {
    PayoutTest::with(services())
        .given(vec![requested(), approved()])
        .when_async(
            MarkExported {
                batch_id: batch_id(),
                at: at(4),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![exported()]);
}

#[tokio::test]
async fn mark_exported_in_the_same_batch_again_emits_nothing() {
    PayoutTest::with(services())
        .given(vec![requested(), approved(), exported()])
        .when_async(
            MarkExported {
                batch_id: batch_id(),
                at: at(5),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn mark_exported_held_payout_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested(), approved(), held()])
        .when_async(
            MarkExported {
                batch_id: batch_id(),
                at: at(4),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition("approved, on hold", "export the payout"));
}

#[tokio::test]
async fn mark_exported_pending_payout_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested()])
        .when_async(
            MarkExported {
                batch_id: batch_id(),
                at: at(4),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition("pending_approval", "export the payout"));
}

#[tokio::test]
async fn mark_paid_exported_payout_pays_it() {
    PayoutTest::with(services())
        .given(vec![requested(), approved(), exported()])
        .when_async(mark_paid(" PR-2025-0613-17 "))
        .await
        .then_expect_events(vec![paid()]);
}

#[tokio::test]
async fn mark_paid_again_with_the_same_reference_emits_nothing() {
    PayoutTest::with(services())
        .given(vec![requested(), approved(), exported(), paid()])
        .when_async(mark_paid("PR-2025-0613-17"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn mark_paid_again_with_another_reference_is_already_paid() {
    PayoutTest::with(services())
        .given(vec![requested(), approved(), exported(), paid()])
        .when_async(mark_paid("PR-2025-0620-03"))
        .await
        .then_expect_error(DomainError::AlreadyPaid);
}

#[tokio::test]
async fn mark_paid_approved_payout_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested(), approved()])
        .when_async(mark_paid("PR-2025-0613-17"))
        .await
        .then_expect_error(invalid_transition("approved", "mark the payout paid"));
}

#[tokio::test]
async fn reverse_paid_payout_records_the_clawback_and_releases_the_cap() {
    let (services, ledger) = InMemoryBonusCapLedger::services();

    PayoutTest::with(services)
        .given(vec![capped(3), approved(), exported(), paid()])
        .when_async(
            ReversePayout {
                by: approver(),
                reason: text("Duplicate payment in payroll"),
                at: at(20),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![PayoutEvent::PayoutReversed {
            by: approver(),
            reason: text("Duplicate payment in payroll"),
            at: at(20),
        }]);

    assert_eq!(ledger.released(), vec![payout_id(Recipient::Ambassador)]);
}

#[tokio::test]
async fn reverse_exported_payout_is_an_invalid_transition() {
    PayoutTest::with(services())
        .given(vec![requested(), approved(), exported()])
        .when_async(
            ReversePayout {
                by: approver(),
                reason: text("Not paid yet"),
                at: at(20),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition("exported", "reverse the payout"));
}

#[test]
fn accessors_follow_the_events() {
    let mut payout = Payout::default();
    assert_eq!(payout.status(), None);

    for event in [requested(), approved(), held()] {
        payout.apply(event);
    }
    assert_eq!(payout.status(), Some(PayoutStatus::Approved));
    assert!(payout.is_held());
    assert_eq!(payout.approved_by(), Some(approver()));

    for event in [
        PayoutEvent::PayoutReleased {
            by: approver(),
            at: at(5),
        },
        exported(),
        paid(),
    ] {
        payout.apply(event);
    }
    assert_eq!(payout.status(), Some(PayoutStatus::Paid));
    assert!(!payout.is_held());
    assert_eq!(payout.paid_reference(), Some("PR-2025-0613-17"));
    assert_eq!(payout.batch_id(), Some(batch_id()));
}

#[test]
fn payout_state_round_trips_through_json() {
    let mut payout = Payout::default();
    payout.apply(requested());
    payout.apply(approved());

    let json = serde_json::to_string(&payout).unwrap();

    assert_eq!(serde_json::from_str::<Payout>(&json).unwrap(), payout);
}

#[test]
fn requester_serializes_with_a_kind_tag() {
    let json = serde_json::to_string(&system()).unwrap();

    assert_eq!(json, r#"{"kind":"system","job":"milestone-payouts"}"#);
}

#[test]
fn event_types_are_fixed_names() {
    assert_eq!(requested().event_type(), "PayoutRequested");
    assert_eq!(paid().event_type(), "PayoutPaid");
    assert_eq!(approved().event_version(), "1.0");
}
