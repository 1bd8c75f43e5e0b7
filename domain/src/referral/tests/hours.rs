//! Hours rules: weekly figures and their corrections, cumulative feed totals, and
//! the hours milestone that they reach exactly once.

use chrono::Days;

use super::*;

/// Sunday that ends the `n`-th work week of the placement (1 = 9 February 2025).
fn week_ending(n: u64) -> NaiveDate {
    date(2025, 2, 9) + Days::new(7 * (n - 1))
}

/// Moment at which the figure for week `n` is recorded: the day after it ends.
fn recorded_at(n: u64) -> DateTime<Utc> {
    let days_after_submission = (week_ending(n) - submitted_at().date_naive()).num_days() + 1;
    day(days_after_submission)
}

fn record(n: u64, figure: &str) -> ReferralCommand {
    RecordHours {
        week_ending: week_ending(n),
        hours: hours(figure),
        at: recorded_at(n),
    }
    .into()
}

fn recorded(n: u64, figure: &str, total: &str) -> ReferralEvent {
    ReferralEvent::HoursRecorded {
        week_ending: week_ending(n),
        hours: hours(figure),
        total_hours: hours(total),
        at: recorded_at(n),
    }
}

/// Returns the history of a hired referral with `weeks` weeks of 40 hours.
fn history_with_weeks(weeks: u64) -> Vec<ReferralEvent> {
    let mut events = hired_history();
    for n in 1..=weeks {
        let total = (40 * n).to_string();
        events.push(recorded(n, "40", &total));
    }
    events
}

/// Returns the history of a hired referral with 160 hours in four weeks and the
/// hours milestone reached.
fn history_with_hours_milestone() -> Vec<ReferralEvent> {
    let mut events = history_with_weeks(4);
    events.push(reached(
        hours_milestone(),
        true,
        week_ending(4),
        recorded_at(4),
    ));
    events
}

fn cumulative(as_of: NaiveDate, total: &str, at: DateTime<Utc>) -> ReferralCommand {
    RecordCumulativeHours {
        as_of,
        total_hours: hours(total),
        at,
    }
    .into()
}

fn accrued(
    as_of: NaiveDate,
    total: &str,
    added: &str,
    all: &str,
    at: DateTime<Utc>,
) -> ReferralEvent {
    ReferralEvent::HoursAccrued {
        as_of,
        total_hours: hours(total),
        added: hours(added),
        total_hours_all: hours(all),
        at,
    }
}

#[tokio::test]
async fn record_hours_for_a_new_week_records_them() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(record(1, "38.5"))
        .await
        .then_expect_events(vec![recorded(1, "38.50", "38.50")]);
}

#[tokio::test]
async fn record_hours_with_the_same_figure_emits_nothing() {
    ReferralTest::with(services())
        .given(history_with_weeks(2))
        .when_async(record(2, "40.00"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn record_hours_with_a_new_figure_corrects_the_week() {
    ReferralTest::with(services())
        .given(history_with_weeks(2))
        .when_async(record(2, "37.75"))
        .await
        .then_expect_events(vec![ReferralEvent::HoursCorrected {
            week_ending: week_ending(2),
            hours: hours("37.75"),
            previous_hours: hours("40"),
            total_hours: hours("77.75"),
            at: recorded_at(2),
        }]);
}

#[tokio::test]
async fn record_hours_crossing_the_threshold_reaches_the_milestone() {
    ReferralTest::with(services())
        .given(history_with_weeks(3))
        .when_async(record(4, "40"))
        .await
        .then_expect_events(vec![
            recorded(4, "40", "160"),
            reached(hours_milestone(), true, week_ending(4), recorded_at(4)),
        ]);
}

#[tokio::test]
async fn record_hours_below_the_threshold_reaches_nothing() {
    ReferralTest::with(services())
        .given(history_with_weeks(3))
        .when_async(record(4, "39.99"))
        .await
        .then_expect_events(vec![recorded(4, "39.99", "159.99")]);
}

#[tokio::test]
async fn record_hours_after_the_milestone_does_not_reach_it_again() {
    ReferralTest::with(services())
        .given(history_with_hours_milestone())
        .when_async(record(5, "40"))
        .await
        .then_expect_events(vec![recorded(5, "40", "200")]);
}

#[tokio::test]
async fn record_hours_correcting_below_the_threshold_keeps_the_milestone() {
    let mut given = history_with_hours_milestone();
    given.push(ReferralEvent::HoursCorrected {
        week_ending: week_ending(4),
        hours: hours("20"),
        previous_hours: hours("40"),
        total_hours: hours("140"),
        at: recorded_at(5),
    });
    let referral_total = {
        let mut referral = Referral::default();
        given
            .iter()
            .cloned()
            .for_each(|event| referral.apply(event));
        referral.hours_total()
    };
    assert_eq!(referral_total, Some(hours("140")));

    ReferralTest::with(services())
        .given(given)
        .when_async(record(4, "40"))
        .await
        .then_expect_events(vec![ReferralEvent::HoursCorrected {
            week_ending: week_ending(4),
            hours: hours("40"),
            previous_hours: hours("20"),
            total_hours: hours("160"),
            at: recorded_at(4),
        }]);
}

#[tokio::test]
async fn record_hours_above_168_is_rejected() {
    let result = ReferralTest::with(services())
        .given(hired_history())
        .when_async(record(1, "168.01"))
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "hours");
}

#[tokio::test]
async fn record_hours_of_168_is_accepted() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(record(1, "168"))
        .await
        .then_expect_events(vec![
            recorded(1, "168", "168"),
            reached(hours_milestone(), true, week_ending(1), recorded_at(1)),
        ]);
}

#[tokio::test]
async fn record_hours_for_a_week_ending_before_the_start_is_rejected() {
    let result = ReferralTest::with(services())
        .given(hired_history())
        .when_async(
            RecordHours {
                week_ending: start_date() - Days::new(1),
                hours: hours("8"),
                at: day(30),
            }
            .into(),
        )
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "week_ending");
}

#[tokio::test]
async fn record_hours_for_a_week_ending_on_the_start_date_is_accepted() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(
            RecordHours {
                week_ending: start_date(),
                hours: hours("8"),
                at: day(30),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![ReferralEvent::HoursRecorded {
            week_ending: start_date(),
            hours: hours("8"),
            total_hours: hours("8"),
            at: day(30),
        }]);
}

fn ended_on(end_date: NaiveDate) -> ReferralEvent {
    ReferralEvent::PlacementEnded {
        end_date,
        reason: text("Contract finished"),
        within_guarantee: false,
        at: day(70),
    }
}

#[tokio::test]
async fn record_hours_seven_days_after_the_end_is_rejected() {
    let end_date = date(2025, 3, 10);
    let mut given = hired_history();
    given.push(ended_on(end_date));

    let result = ReferralTest::with(services())
        .given(given)
        .when_async(
            RecordHours {
                week_ending: end_date + Days::new(7),
                hours: hours("8"),
                at: day(75),
            }
            .into(),
        )
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "week_ending");
}

#[tokio::test]
async fn record_hours_six_days_after_the_end_is_accepted() {
    let end_date = date(2025, 3, 10);
    let mut given = hired_history();
    given.push(ended_on(end_date));

    ReferralTest::with(services())
        .given(given)
        .when_async(
            RecordHours {
                week_ending: end_date + Days::new(6),
                hours: hours("8"),
                at: day(75),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![ReferralEvent::HoursRecorded {
            week_ending: end_date + Days::new(6),
            hours: hours("8"),
            total_hours: hours("8"),
            at: day(75),
        }]);
}

#[tokio::test]
async fn record_hours_before_the_hire_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(record(1, "40"))
        .await
        .then_expect_error(invalid_transition(
            "submitted",
            "record hours for the referral",
        ));
}

#[tokio::test]
async fn record_hours_for_ineligible_referral_reaches_an_unpayable_milestone() {
    let mut given = vec![
        submitted_ineligible(IneligibleReason::PriorContact),
        hired(),
        reached(hired_milestone(), false, start_date(), day(20)),
    ];
    given.extend((1..=3).map(|n| recorded(n, "40", &(40 * n).to_string())));

    ReferralTest::with(services())
        .given(given)
        .when_async(record(4, "40"))
        .await
        .then_expect_events(vec![
            recorded(4, "40", "160"),
            reached(hours_milestone(), false, week_ending(4), recorded_at(4)),
        ]);
}

#[tokio::test]
async fn record_cumulative_hours_first_total_accrues_it() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(cumulative(date(2025, 2, 12), "24", day(37)))
        .await
        .then_expect_events(vec![accrued(date(2025, 2, 12), "24", "24", "24", day(37))]);
}

#[tokio::test]
async fn record_cumulative_hours_higher_total_accrues_the_difference() {
    let mut given = hired_history();
    given.push(accrued(date(2025, 2, 12), "24", "24", "24", day(37)));

    ReferralTest::with(services())
        .given(given)
        .when_async(cumulative(date(2025, 2, 15), "60.5", day(40)))
        .await
        .then_expect_events(vec![accrued(
            date(2025, 2, 15),
            "60.5",
            "36.5",
            "60.5",
            day(40),
        )]);
}

#[tokio::test]
async fn record_cumulative_hours_same_total_emits_nothing() {
    let mut given = hired_history();
    given.push(accrued(date(2025, 2, 12), "24", "24", "24", day(37)));

    ReferralTest::with(services())
        .given(given)
        .when_async(cumulative(date(2025, 2, 15), "24.00", day(40)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn record_cumulative_hours_lower_total_is_flagged_for_review() {
    let mut given = hired_history();
    given.push(accrued(date(2025, 2, 12), "60", "60", "60", day(37)));

    ReferralTest::with(services())
        .given(given)
        .when_async(cumulative(date(2025, 2, 15), "52", day(40)))
        .await
        .then_expect_events(vec![ReferralEvent::HoursTotalLowered {
            as_of: date(2025, 2, 15),
            reported_total: hours("52"),
            previous_total: hours("60"),
            needs_review: true,
            total_hours_all: hours("52"),
            at: day(40),
        }]);
}

#[tokio::test]
async fn record_cumulative_hours_adds_to_weekly_hours_and_reaches_the_milestone() {
    ReferralTest::with(services())
        .given(history_with_weeks(1))
        .when_async(cumulative(date(2025, 3, 5), "120", day(59)))
        .await
        .then_expect_events(vec![
            accrued(date(2025, 3, 5), "120", "120", "160", day(59)),
            reached(hours_milestone(), true, date(2025, 3, 5), day(59)),
        ]);
}

#[tokio::test]
async fn record_cumulative_hours_older_than_the_last_total_is_rejected() {
    let mut given = hired_history();
    given.push(accrued(date(2025, 2, 15), "60", "60", "60", day(40)));

    let result = ReferralTest::with(services())
        .given(given)
        .when_async(cumulative(date(2025, 2, 12), "30", day(41)))
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "as_of");
}

#[tokio::test]
async fn record_cumulative_hours_before_the_start_is_rejected() {
    let result = ReferralTest::with(services())
        .given(hired_history())
        .when_async(cumulative(date(2025, 2, 1), "30", day(41)))
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "as_of");
}
