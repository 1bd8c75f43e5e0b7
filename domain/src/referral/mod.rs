//! The referral aggregate: one candidate referred by one ambassador to one program,
//! from submission through the hiring pipeline to the milestones that earn bonuses.
//!
//! A referral copies the program's terms at submission and keeps them, so revising
//! a program never changes what earlier referrals earn. Ownership of the candidate
//! ("first referral wins") is decided by the [`CandidateRegistry`] service, because
//! it spans referrals.
//!
//! [`CandidateRegistry`]: crate::services::CandidateRegistry

mod commands;
mod decide;
mod eligibility;
mod events;
mod progress;
mod state;
mod submit;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

pub use commands::{
    AssignRecruiter, CheckDaysEmployed, Decline, EndPlacement, ExpireReferral, MarkContacted,
    MarkInterviewing, RecordCumulativeHours, RecordHire, RecordHours, ReferralCommand,
    SealedContact, SubmitReferral, Withdraw,
};
pub use eligibility::{
    assess_eligibility, AmbassadorSnapshot, Eligibility, IneligibleReason, ProgramSnapshot,
};
pub use events::ReferralEvent;
pub use state::{Placement, ReachedMilestone, ReferralStatus};

use crate::error::DomainError;
use crate::ids::{AgencyId, AmbassadorId, ProgramId, ReferralId, UserId};
use crate::services::ReferralServices;
use crate::terms::{AmbassadorKind, Terms};
use crate::values::{Currency, Hours, Sealed};
use state::ReferralState;

const AGGREGATE: &str = "referral";

/// A referral. Empty (`Default`) until `ReferralSubmitted` is applied; every
/// accessor then returns `None` (or false, or an empty list).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Referral {
    state: Option<ReferralState>,
}

impl Referral {
    /// Returns whether the referral owns its candidate at `at`.
    ///
    /// True while the referral waits for a hire (submitted, contacted, interviewing)
    /// and `at` is inside the attribution window, and for good once the candidate is
    /// hired. False for a duplicate, a declined, withdrawn or expired referral, and
    /// for a referral that does not exist, whose claim may then be taken over.
    #[must_use]
    pub fn owns_candidate_at(&self, at: DateTime<Utc>) -> bool {
        self.state
            .as_ref()
            .is_some_and(|state| state.owns_candidate_at(at))
    }

    /// Returns the id of the referral.
    #[must_use]
    pub fn referral_id(&self) -> Option<ReferralId> {
        self.state.as_ref().map(|s| s.referral_id)
    }

    /// Returns the pipeline status.
    #[must_use]
    pub fn status(&self) -> Option<ReferralStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// Returns the bonus eligibility and, when ineligible, the reason.
    #[must_use]
    pub fn eligibility(&self) -> Option<Eligibility> {
        self.state.as_ref().map(|s| s.eligibility)
    }

    /// Returns the agency the referral belongs to.
    #[must_use]
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.state.as_ref().map(|s| s.agency_id)
    }

    /// Returns the program the referral was submitted to.
    #[must_use]
    pub fn program_id(&self) -> Option<ProgramId> {
        self.state.as_ref().map(|s| s.program_id)
    }

    /// Returns the referring ambassador.
    #[must_use]
    pub fn ambassador_id(&self) -> Option<AmbassadorId> {
        self.state.as_ref().map(|s| s.ambassador_id)
    }

    /// Returns the ambassador's kind at submission.
    #[must_use]
    pub fn ambassador_kind(&self) -> Option<AmbassadorKind> {
        self.state.as_ref().map(|s| s.ambassador_kind)
    }

    /// Returns the terms the referral keeps.
    #[must_use]
    pub fn terms(&self) -> Option<&Terms> {
        self.state.as_ref().map(|s| &s.terms)
    }

    /// Returns the version of those terms.
    #[must_use]
    pub fn terms_version(&self) -> Option<u32> {
        self.state.as_ref().map(|s| s.terms_version)
    }

    /// Returns the currency of the bonus amounts.
    #[must_use]
    pub fn currency(&self) -> Option<Currency> {
        self.state.as_ref().map(|s| s.currency)
    }

    /// Returns the total hours: the sum of the weekly figures plus the last feed total.
    #[must_use]
    pub fn hours_total(&self) -> Option<Hours> {
        self.state.as_ref().map(ReferralState::hours_total)
    }

    /// Returns the milestones reached so far, in the order they were reached.
    #[must_use]
    pub fn milestones_reached(&self) -> &[ReachedMilestone] {
        self.state
            .as_ref()
            .map_or(&[], |s| s.milestones_reached.as_slice())
    }

    /// Returns the placement, once the candidate is hired.
    #[must_use]
    pub fn placement(&self) -> Option<&Placement> {
        self.state.as_ref().and_then(|s| s.placement.as_ref())
    }

    /// Returns the referral that owned the candidate, for a duplicate.
    #[must_use]
    pub fn duplicate_of(&self) -> Option<ReferralId> {
        self.state.as_ref().and_then(|s| s.duplicate_of)
    }

    /// Returns when the referral was submitted.
    #[must_use]
    pub fn submitted_at(&self) -> Option<DateTime<Utc>> {
        self.state.as_ref().map(|s| s.submitted_at)
    }

    /// Returns the candidate's sealed contact details.
    #[must_use]
    pub fn candidate(&self) -> Option<&SealedContact> {
        self.state.as_ref().map(|s| &s.candidate)
    }

    /// Returns whether the agency knew the candidate within the lookback period.
    #[must_use]
    pub fn prior_contact(&self) -> Option<bool> {
        self.state.as_ref().map(|s| s.prior_contact)
    }

    /// Returns the assigned recruiter.
    #[must_use]
    pub fn recruiter_id(&self) -> Option<UserId> {
        self.state.as_ref().and_then(|s| s.recruiter_id)
    }

    /// Returns the job opening the candidate was referred for.
    #[must_use]
    pub fn job_reference(&self) -> Option<&str> {
        self.state.as_ref().and_then(|s| s.job_reference.as_deref())
    }

    /// Returns the sealed note from the ambassador.
    #[must_use]
    pub fn note(&self) -> Option<&Sealed> {
        self.state.as_ref().and_then(|s| s.note.as_ref())
    }
}

impl Aggregate for Referral {
    const TYPE: &'static str = AGGREGATE;
    type Command = ReferralCommand;
    type Event = ReferralEvent;
    type Error = DomainError;
    type Services = ReferralServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match (command, self.state.as_ref()) {
            (ReferralCommand::SubmitReferral(submit), state) => {
                submit::decide_submit(state.is_some(), submit, services).await?
            }
            (command, Some(state)) => decide::decide(state, command)?,
            (_, None) => {
                return Err(DomainError::NotFound {
                    aggregate: AGGREGATE,
                })
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match self.state.as_mut() {
            Some(state) => state.apply(event),
            None => self.state = ReferralState::from_submitted(event),
        }
    }
}
