//! Progress of a hired referral towards its milestones: weekly hours, cumulative
//! feed totals, days employed, and reaching each milestone exactly once.

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::commands::{CheckDaysEmployed, RecordCumulativeHours, RecordHours};
use super::decide::Decision;
use super::events::ReferralEvent;
use super::state::{Placement, ReferralStatus};
use crate::error::DomainError;
use crate::terms::{Milestone, Trigger};
use crate::values::{Hours, ValueError};

const HIRED: [ReferralStatus; 2] = [ReferralStatus::Hired, ReferralStatus::Completed];

/// Maximum of one weekly figure: the number of hours in a week.
const MAX_WEEKLY_HOURS: u32 = 168;

/// A reported week must end fewer than this many days after the placement's last
/// day, because the week that contains the last day ends at most six days later.
const WEEK_AFTER_END_DAYS: u64 = 7;

pub(super) fn record_hours(
    decision: &mut Decision,
    command: RecordHours,
) -> Result<(), DomainError> {
    decision.require_status(&HIRED, "record hours for the referral")?;
    let placement = placement(decision, "record hours for the referral")?;
    if command.hours > Hours::whole(MAX_WEEKLY_HOURS) {
        return Err(ValueError::new("hours", "must be from 0 to 168 for one week").into());
    }
    if command.week_ending < placement.start_date {
        return Err(ValueError::new(
            "week_ending",
            "is before the placement start date; record hours only for weeks that end on or after it",
        )
        .into());
    }
    let after_end = placement
        .end_date
        .and_then(|end| end.checked_add_days(Days::new(WEEK_AFTER_END_DAYS)))
        .is_some_and(|limit| command.week_ending >= limit);
    if after_end {
        return Err(ValueError::new(
            "week_ending",
            "is 7 or more days after the placement ended, so the week contains no work of this placement",
        )
        .into());
    }

    let state = &decision.state;
    match state.weekly_hours.get(&command.week_ending).copied() {
        // The same figure again, as from a re-imported file, changes nothing.
        Some(previous) if previous == command.hours => return Ok(()),
        Some(previous) => {
            let total_hours = state.hours_total() + command.hours - previous;
            decision.emit(ReferralEvent::HoursCorrected {
                week_ending: command.week_ending,
                hours: command.hours,
                previous_hours: previous,
                total_hours,
                at: command.at,
            });
        }
        None => {
            let total_hours = state.hours_total() + command.hours;
            decision.emit(ReferralEvent::HoursRecorded {
                week_ending: command.week_ending,
                hours: command.hours,
                total_hours,
                at: command.at,
            });
        }
    }

    let total = decision.state.hours_total();
    reach_milestones(
        decision,
        Trigger::HoursWorked,
        total,
        |_| command.week_ending,
        command.at,
    );
    Ok(())
}

/// Records a feed's cumulative total as the difference from the last feed total.
///
/// The feed date is not limited by the placement end, because a feed keeps reporting
/// the worker's final total after the placement is over.
pub(super) fn record_cumulative_hours(
    decision: &mut Decision,
    command: RecordCumulativeHours,
) -> Result<(), DomainError> {
    decision.require_status(&HIRED, "record cumulative hours for the referral")?;
    let placement = placement(decision, "record cumulative hours for the referral")?;
    if command.as_of < placement.start_date {
        return Err(ValueError::new(
            "as_of",
            "is before the placement start date; send totals dated on or after it",
        )
        .into());
    }

    let state = &decision.state;
    let previous_total = state.feed_total;
    // The same total again, as from a feed that runs twice a week, changes nothing.
    if command.total_hours == previous_total {
        return Ok(());
    }
    if state.feed_as_of.is_some_and(|last| command.as_of < last) {
        return Err(ValueError::new(
            "as_of",
            "is earlier than the date of the last recorded total; send feed totals in date order",
        )
        .into());
    }

    let weekly_total = state.hours_total() - previous_total;
    let total_hours_all = weekly_total + command.total_hours;
    match command.total_hours.checked_sub(previous_total) {
        Some(added) => decision.emit(ReferralEvent::HoursAccrued {
            as_of: command.as_of,
            total_hours: command.total_hours,
            added,
            total_hours_all,
            at: command.at,
        }),
        None => decision.emit(ReferralEvent::HoursTotalLowered {
            as_of: command.as_of,
            reported_total: command.total_hours,
            previous_total,
            needs_review: true,
            total_hours_all,
            at: command.at,
        }),
    }

    reach_milestones(
        decision,
        Trigger::HoursWorked,
        total_hours_all,
        |_| command.as_of,
        command.at,
    );
    Ok(())
}

pub(super) fn check_days_employed(
    decision: &mut Decision,
    command: CheckDaysEmployed,
) -> Result<(), DomainError> {
    decision.require_status(&HIRED, "check days employed for the referral")?;
    let placement = placement(decision, "check days employed for the referral")?;
    let start_date = placement.start_date;
    let days = placement.days_employed(command.today);
    let days = Hours::whole(u32::try_from(days).unwrap_or(u32::MAX));

    reach_milestones(
        decision,
        Trigger::DaysEmployed,
        days,
        |milestone| day_reached(start_date, milestone),
        command.at,
    );
    Ok(())
}

/// Start date plus the milestone's threshold in days.
fn day_reached(start_date: NaiveDate, milestone: &Milestone) -> NaiveDate {
    // Terms validation keeps days thresholds whole and within 1 to 3650.
    let days = milestone
        .threshold
        .as_whole()
        .and_then(|days| u64::try_from(days).ok())
        .unwrap_or(0);
    start_date
        .checked_add_days(Days::new(days))
        .unwrap_or(start_date)
}

fn placement(decision: &Decision, action: &'static str) -> Result<Placement, DomainError> {
    decision
        .state
        .placement
        .clone()
        .ok_or_else(|| decision.invalid_transition("without a placement".to_owned(), action))
}

/// Emits `MilestoneReached` for every milestone of `trigger` whose threshold is at
/// most `progress` and that was not reached before, lowest threshold first. Then
/// emits `ReferralCompleted` if every milestone of the schedule is now reached.
///
/// A milestone is never reached twice, and a later drop in `progress` (a corrected
/// week, a lowered feed total) never takes one back.
pub(super) fn reach_milestones(
    decision: &mut Decision,
    trigger: Trigger,
    progress: Hours,
    reached_on: impl Fn(&Milestone) -> NaiveDate,
    at: DateTime<Utc>,
) {
    let state = &decision.state;
    let mut due: Vec<Milestone> = state
        .terms
        .bonus_schedule
        .iter()
        .filter(|m| m.trigger == trigger && m.threshold <= progress)
        .filter(|m| !state.has_reached(&m.key()))
        .cloned()
        .collect();
    due.sort_by_key(|m| m.threshold);

    for milestone in due {
        let payable = decision.state.eligibility.is_eligible();
        decision.emit(ReferralEvent::MilestoneReached {
            key: milestone.key(),
            payable,
            reached_on: reached_on(&milestone),
            milestone,
            at,
        });
    }

    let state = &decision.state;
    let all_reached = state
        .terms
        .bonus_schedule
        .iter()
        .all(|m| state.has_reached(&m.key()));
    if state.status == ReferralStatus::Hired && all_reached {
        decision.emit(ReferralEvent::ReferralCompleted { at });
    }
}
