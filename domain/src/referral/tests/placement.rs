//! Placement rules: days employed, the end of the placement with its guarantee,
//! and completion once every milestone is reached.

use chrono::Days;

use super::*;

/// `days` days after the placement start date.
fn start_plus(days: u64) -> NaiveDate {
    start_date() + Days::new(days)
}

fn check_on(today: NaiveDate) -> ReferralCommand {
    CheckDaysEmployed {
        today,
        at: day(150),
    }
    .into()
}

fn end_on(end_date: NaiveDate) -> ReferralCommand {
    EndPlacement {
        end_date,
        reason: text("Worker resigned"),
        at: day(100),
    }
    .into()
}

fn ended(end_date: NaiveDate, within_guarantee: bool) -> ReferralEvent {
    ReferralEvent::PlacementEnded {
        end_date,
        reason: text("Worker resigned"),
        within_guarantee,
        at: day(100),
    }
}

fn became_ineligible(reason: IneligibleReason) -> ReferralEvent {
    ReferralEvent::EligibilityChanged {
        eligibility: Eligibility::ineligible(reason),
        at: day(100),
    }
}

/// Returns the history of a hired referral whose hire and hours milestones were
/// reached, so only the days milestone is left.
fn history_missing_only_days() -> Vec<ReferralEvent> {
    let mut events = hired_history();
    events.push(reached(hours_milestone(), true, start_plus(30), day(60)));
    events
}

#[tokio::test]
async fn check_days_employed_on_day_90_reaches_the_milestone() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(check_on(start_plus(90)))
        .await
        .then_expect_events(vec![reached(
            days_milestone(),
            true,
            start_plus(90),
            day(150),
        )]);
}

#[tokio::test]
async fn check_days_employed_on_day_89_emits_nothing() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(check_on(start_plus(89)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn check_days_employed_after_an_end_on_day_45_emits_nothing() {
    let mut given = hired_history();
    given.push(ended(start_plus(45), false));

    ReferralTest::with(services())
        .given(given)
        .when_async(check_on(start_plus(200)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn check_days_employed_after_an_end_on_day_90_reaches_the_milestone() {
    let mut given = hired_history();
    given.push(ended(start_plus(90), false));

    ReferralTest::with(services())
        .given(given)
        .when_async(check_on(start_plus(200)))
        .await
        .then_expect_events(vec![reached(
            days_milestone(),
            true,
            start_plus(90),
            day(150),
        )]);
}

#[tokio::test]
async fn check_days_employed_again_does_not_reach_the_milestone_twice() {
    let mut given = hired_history();
    given.push(reached(days_milestone(), true, start_plus(90), day(150)));

    ReferralTest::with(services())
        .given(given)
        .when_async(check_on(start_plus(120)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn check_days_employed_before_the_hire_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(check_on(start_plus(90)))
        .await
        .then_expect_error(invalid_transition(
            "submitted",
            "check days employed for the referral",
        ));
}

#[tokio::test]
async fn check_days_employed_reaching_the_last_milestone_completes_the_referral() {
    ReferralTest::with(services())
        .given(history_missing_only_days())
        .when_async(check_on(start_plus(90)))
        .await
        .then_expect_events(vec![
            reached(days_milestone(), true, start_plus(90), day(150)),
            ReferralEvent::ReferralCompleted { at: day(150) },
        ]);
}

#[tokio::test]
async fn end_placement_within_the_guarantee_makes_the_referral_ineligible() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(end_on(start_plus(17)))
        .await
        .then_expect_events(vec![
            ended(start_plus(17), true),
            became_ineligible(IneligibleReason::PlacementEnded),
        ]);
}

#[tokio::test]
async fn end_placement_on_the_last_guarantee_day_stays_eligible() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(end_on(start_plus(30)))
        .await
        .then_expect_events(vec![ended(start_plus(30), false)]);
}

#[tokio::test]
async fn end_placement_without_a_guarantee_stays_eligible() {
    let mut terms = terms();
    terms.guarantee_days = None;

    ReferralTest::with(services())
        .given(vec![submitted_under(terms), hired()])
        .when_async(end_on(start_plus(1)))
        .await
        .then_expect_events(vec![ended(start_plus(1), false)]);
}

#[tokio::test]
async fn end_placement_of_ineligible_referral_keeps_the_first_reason() {
    ReferralTest::with(services())
        .given(vec![
            submitted_ineligible(IneligibleReason::PriorContact),
            hired(),
        ])
        .when_async(end_on(start_plus(5)))
        .await
        .then_expect_events(vec![ended(start_plus(5), true)]);
}

#[tokio::test]
async fn end_placement_before_the_start_date_is_rejected() {
    let result = ReferralTest::with(services())
        .given(hired_history())
        .when_async(end_on(start_date() - Days::new(1)))
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "end_date");
}

#[tokio::test]
async fn end_placement_twice_is_an_invalid_transition() {
    let mut given = hired_history();
    given.push(ended(start_plus(45), false));

    ReferralTest::with(services())
        .given(given)
        .when_async(end_on(start_plus(50)))
        .await
        .then_expect_error(invalid_transition(
            "hired and its placement already ended",
            "end the placement",
        ));
}

#[tokio::test]
async fn end_placement_before_the_hire_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(end_on(start_plus(5)))
        .await
        .then_expect_error(invalid_transition("submitted", "end the placement"));
}

#[tokio::test]
async fn end_placement_of_completed_referral_is_recorded() {
    let mut given = history_missing_only_days();
    given.push(reached(days_milestone(), true, start_plus(90), day(150)));
    given.push(ReferralEvent::ReferralCompleted { at: day(150) });

    ReferralTest::with(services())
        .given(given)
        .when_async(end_on(start_plus(120)))
        .await
        .then_expect_events(vec![ended(start_plus(120), false)]);
}

#[tokio::test]
async fn record_hours_after_a_guarantee_breach_reaches_an_unpayable_milestone() {
    let mut given = hired_history();
    given.push(ended(start_plus(17), true));
    given.push(became_ineligible(IneligibleReason::PlacementEnded));

    ReferralTest::with(services())
        .given(given)
        .when_async(
            RecordHours {
                week_ending: start_plus(6),
                hours: hours("160"),
                at: day(101),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![
            ReferralEvent::HoursRecorded {
                week_ending: start_plus(6),
                hours: hours("160"),
                total_hours: hours("160"),
                at: day(101),
            },
            reached(hours_milestone(), false, start_plus(6), day(101)),
        ]);
}

#[test]
fn days_employed_counts_up_to_the_end_date() {
    let mut referral = Referral::default();
    hired_history()
        .into_iter()
        .chain([ended(start_plus(45), false)])
        .for_each(|event| referral.apply(event));

    let placement = referral.placement().unwrap();

    assert_eq!(placement.days_employed(start_plus(10)), 10);
    assert_eq!(placement.days_employed(start_plus(400)), 45);
    assert_eq!(placement.days_employed(start_date() - Days::new(3)), 0);
}
