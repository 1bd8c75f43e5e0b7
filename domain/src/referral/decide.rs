//! Decisions for the commands on an existing referral: the pipeline steps, the
//! hire, the end of the placement, and dispatch to the hour and day counters.

use super::commands::{
    AssignRecruiter, Decline, EndPlacement, ExpireReferral, RecordHire, ReferralCommand, Withdraw,
};
use super::eligibility::{Eligibility, IneligibleReason};
use super::events::ReferralEvent;
use super::progress;
use super::state::{ReferralState, ReferralStatus};
use super::AGGREGATE;
use crate::error::DomainError;
use crate::terms::Trigger;
use crate::values::{parse_label, Hours, ValueError};

/// Maximum length of a job title or client name in characters.
const MAX_LABEL_CHARS: usize = 200;
/// Maximum length of a back-office worker id in characters.
const MAX_WORKER_ID_CHARS: usize = 100;

/// Events decided so far, with the state they lead to.
///
/// Later rules of the same command read `state`. For example, the milestone check
/// after a hire reads the referral as hired and with its new eligibility.
pub(super) struct Decision {
    pub(super) state: ReferralState,
    events: Vec<ReferralEvent>,
}

impl Decision {
    pub(super) fn emit(&mut self, event: ReferralEvent) {
        self.state.apply(event.clone());
        self.events.push(event);
    }

    /// Fails with `InvalidTransition` unless the status is one of `allowed`.
    pub(super) fn require_status(
        &self,
        allowed: &[ReferralStatus],
        action: &'static str,
    ) -> Result<(), DomainError> {
        if allowed.contains(&self.state.status) {
            Ok(())
        } else {
            Err(self.invalid_transition(self.state.status.as_str().to_owned(), action))
        }
    }

    pub(super) fn invalid_transition(&self, from: String, action: &'static str) -> DomainError {
        DomainError::InvalidTransition {
            aggregate: AGGREGATE,
            from,
            action,
        }
    }
}

const BEFORE_HIRE: [ReferralStatus; 3] = [
    ReferralStatus::Submitted,
    ReferralStatus::Contacted,
    ReferralStatus::Interviewing,
];

/// Decides the events of any command except `SubmitReferral`.
pub(super) fn decide(
    state: &ReferralState,
    command: ReferralCommand,
) -> Result<Vec<ReferralEvent>, DomainError> {
    let mut decision = Decision {
        state: state.clone(),
        events: Vec::new(),
    };
    match command {
        ReferralCommand::SubmitReferral(_) => {
            return Err(DomainError::AlreadyExists {
                aggregate: AGGREGATE,
            })
        }
        ReferralCommand::AssignRecruiter(command) => assign_recruiter(&mut decision, command)?,
        ReferralCommand::MarkContacted(command) => {
            decision.require_status(&[ReferralStatus::Submitted], "mark the referral contacted")?;
            decision.emit(ReferralEvent::ReferralContacted { at: command.at });
        }
        ReferralCommand::MarkInterviewing(command) => {
            decision.require_status(
                &[ReferralStatus::Submitted, ReferralStatus::Contacted],
                "mark the referral interviewing",
            )?;
            decision.emit(ReferralEvent::ReferralInterviewing { at: command.at });
        }
        ReferralCommand::RecordHire(command) => record_hire(&mut decision, command)?,
        ReferralCommand::RecordHours(command) => progress::record_hours(&mut decision, command)?,
        ReferralCommand::RecordCumulativeHours(command) => {
            progress::record_cumulative_hours(&mut decision, command)?;
        }
        ReferralCommand::CheckDaysEmployed(command) => {
            progress::check_days_employed(&mut decision, command)?;
        }
        ReferralCommand::EndPlacement(command) => end_placement(&mut decision, command)?,
        ReferralCommand::Decline(Decline { reason, at }) => {
            decision.require_status(&BEFORE_HIRE, "decline the referral")?;
            decision.emit(ReferralEvent::ReferralDeclined { reason, at });
        }
        ReferralCommand::Withdraw(Withdraw { reason, at }) => {
            decision.require_status(&BEFORE_HIRE, "withdraw the referral")?;
            decision.emit(ReferralEvent::ReferralWithdrawn { reason, at });
        }
        ReferralCommand::ExpireReferral(command) => expire(&mut decision, command)?,
    }
    Ok(decision.events)
}

fn assign_recruiter(decision: &mut Decision, command: AssignRecruiter) -> Result<(), DomainError> {
    if decision.state.status.is_terminal() {
        return Err(decision.invalid_transition(
            decision.state.status.as_str().to_owned(),
            "assign a recruiter to the referral",
        ));
    }
    // Assigning the current recruiter again changes nothing.
    if decision.state.recruiter_id == Some(command.recruiter_id) {
        return Ok(());
    }
    decision.emit(ReferralEvent::RecruiterAssigned {
        recruiter_id: command.recruiter_id,
        at: command.at,
    });
    Ok(())
}

fn record_hire(decision: &mut Decision, command: RecordHire) -> Result<(), DomainError> {
    decision.require_status(&BEFORE_HIRE, "record a hire for the referral")?;
    let job_title = parse_label("job_title", &command.job_title, MAX_LABEL_CHARS)?;
    let client_name = parse_label("client_name", &command.client_name, MAX_LABEL_CHARS)?;
    let external_worker_id = command
        .external_worker_id
        .as_deref()
        .map(|raw| parse_label("external_worker_id", raw, MAX_WORKER_ID_CHARS))
        .transpose()?;

    decision.emit(ReferralEvent::ReferralHired {
        start_date: command.start_date,
        job_title,
        client_name,
        external_worker_id,
        at: command.at,
    });

    // A late hire is still recorded, because the candidate was placed; it only
    // earns nothing. An earlier ineligibility reason is kept as the one to show.
    let late = command.at > decision.state.hire_deadline();
    if late && decision.state.eligibility.is_eligible() {
        decision.emit(ReferralEvent::EligibilityChanged {
            eligibility: Eligibility::ineligible(IneligibleReason::HireDeadlinePassed),
            at: command.at,
        });
    }

    progress::reach_milestones(
        decision,
        Trigger::Hired,
        Hours::ZERO,
        |_| command.start_date,
        command.at,
    );
    Ok(())
}

fn end_placement(decision: &mut Decision, command: EndPlacement) -> Result<(), DomainError> {
    // A completed referral can still see its placement end; unpaid payouts may then
    // have to be voided under the guarantee.
    decision.require_status(
        &[ReferralStatus::Hired, ReferralStatus::Completed],
        "end the placement",
    )?;
    let Some(placement) = decision.state.placement.as_ref() else {
        return Err(
            decision.invalid_transition("without a placement".to_owned(), "end the placement")
        );
    };
    if placement.end_date.is_some() {
        return Err(decision.invalid_transition(
            format!(
                "{} and its placement already ended",
                decision.state.status.as_str()
            ),
            "end the placement",
        ));
    }
    if command.end_date < placement.start_date {
        return Err(ValueError::new(
            "end_date",
            "is before the placement start date; enter an end date on or after the start date",
        )
        .into());
    }

    let lasted_days = (command.end_date - placement.start_date).num_days();
    let within_guarantee = decision
        .state
        .terms
        .guarantee_days
        .is_some_and(|guarantee| lasted_days < i64::from(guarantee));
    decision.emit(ReferralEvent::PlacementEnded {
        end_date: command.end_date,
        reason: command.reason,
        within_guarantee,
        at: command.at,
    });

    if within_guarantee && decision.state.eligibility.is_eligible() {
        decision.emit(ReferralEvent::EligibilityChanged {
            eligibility: Eligibility::ineligible(IneligibleReason::PlacementEnded),
            at: command.at,
        });
    }
    Ok(())
}

fn expire(decision: &mut Decision, command: ExpireReferral) -> Result<(), DomainError> {
    decision.require_status(&BEFORE_HIRE, "expire the referral")?;
    let due = decision.state.hire_deadline();
    if command.at < due {
        return Err(DomainError::NotDueYet {
            action: "expire the referral",
            due,
        });
    }
    decision.emit(ReferralEvent::ReferralExpired { at: command.at });
    Ok(())
}
