//! Events of the referral aggregate. Their names and fields are stored forever.

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::commands::SealedContact;
use super::eligibility::Eligibility;
use super::state::ReferralStatus;
use crate::ids::{AgencyId, AmbassadorId, ProgramId, ReferralId, UserId};
use crate::terms::{AmbassadorKind, Milestone, MilestoneKey, Terms};
use crate::values::{Currency, FreeText, Hours, Sealed};

/// Events of the referral aggregate.
#[allow(
    clippy::large_enum_variant,
    reason = "events are handled one at a time; boxing the submission would complicate every match on it"
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReferralEvent {
    /// A referral was recorded, as the candidate's owner or as a duplicate.
    ReferralSubmitted {
        /// Id of the referral.
        referral_id: ReferralId,
        /// Agency it belongs to.
        agency_id: AgencyId,
        /// Program it was submitted to.
        program_id: ProgramId,
        /// Version of the terms the referral keeps.
        terms_version: u32,
        /// The terms the referral keeps, regardless of later revisions.
        terms: Terms,
        /// Currency of the bonus amounts.
        currency: Currency,
        /// The referring ambassador.
        ambassador_id: AmbassadorId,
        /// The ambassador's kind at submission.
        ambassador_kind: AmbassadorKind,
        /// The candidate's sealed contact details.
        candidate: SealedContact,
        /// Whether the agency knew the candidate within the lookback period.
        prior_contact: bool,
        /// Job opening the candidate was referred for.
        job_reference: Option<String>,
        /// Sealed note from the ambassador.
        note: Option<Sealed>,
        /// `submitted`, or `duplicate` when another referral owns the candidate.
        status: ReferralStatus,
        /// The owning referral, for a duplicate.
        duplicate_of: Option<ReferralId>,
        /// Eligibility at submission.
        eligibility: Eligibility,
        /// When the referral was submitted.
        at: DateTime<Utc>,
    },
    /// A recruiter was assigned.
    RecruiterAssigned {
        /// The recruiter's user id.
        recruiter_id: UserId,
        /// When the assignment was made.
        at: DateTime<Utc>,
    },
    /// The candidate was contacted.
    ReferralContacted {
        /// When the candidate was contacted.
        at: DateTime<Utc>,
    },
    /// The candidate started interviewing.
    ReferralInterviewing {
        /// When interviewing started.
        at: DateTime<Utc>,
    },
    /// The candidate was hired.
    ReferralHired {
        /// First day of work.
        start_date: NaiveDate,
        /// Trimmed job title.
        job_title: String,
        /// Trimmed client name.
        client_name: String,
        /// Trimmed back-office worker id.
        external_worker_id: Option<String>,
        /// When the hire was recorded.
        at: DateTime<Utc>,
    },
    /// Bonus eligibility changed after submission.
    EligibilityChanged {
        /// The new eligibility.
        eligibility: Eligibility,
        /// When it changed.
        at: DateTime<Utc>,
    },
    /// A milestone of the bonus schedule was reached; happens once per milestone.
    MilestoneReached {
        /// The milestone, with its amount and recipient.
        milestone: Milestone,
        /// Its stable key, from which the payout id is derived.
        key: MilestoneKey,
        /// Whether the referral was eligible when the milestone was reached; a
        /// payout is requested only when this is true.
        payable: bool,
        /// The day the milestone counts as reached: the start date for `hired`, the
        /// week ending or feed date for `hours_worked`, start date plus the threshold
        /// for `days_employed`.
        reached_on: NaiveDate,
        /// When it was recorded.
        at: DateTime<Utc>,
    },
    /// Hours of a week not reported before.
    HoursRecorded {
        /// Last day of the week.
        week_ending: NaiveDate,
        /// Hours worked that week.
        hours: Hours,
        /// Total hours of the referral afterwards (weekly figures plus feed total).
        total_hours: Hours,
        /// When the figure was recorded.
        at: DateTime<Utc>,
    },
    /// A new figure replaced the hours of a week reported before.
    HoursCorrected {
        /// Last day of the week.
        week_ending: NaiveDate,
        /// The new figure for that week.
        hours: Hours,
        /// The figure it replaced.
        previous_hours: Hours,
        /// Total hours of the referral afterwards.
        total_hours: Hours,
        /// When the correction was recorded.
        at: DateTime<Utc>,
    },
    /// A back-office feed reported a higher cumulative total.
    HoursAccrued {
        /// Date up to which the feed accrued hours.
        as_of: NaiveDate,
        /// The feed's reported total.
        total_hours: Hours,
        /// Difference from the previous feed total.
        added: Hours,
        /// Total hours of the referral afterwards (weekly figures plus feed total).
        total_hours_all: Hours,
        /// When the feed row was recorded.
        at: DateTime<Utc>,
    },
    /// A back-office feed reported a lower cumulative total, which replaces the
    /// previous one and needs a recruiter's review. Milestones already reached stay
    /// reached.
    HoursTotalLowered {
        /// Date of the feed row.
        as_of: NaiveDate,
        /// The lower total the feed reported.
        reported_total: Hours,
        /// The feed total it replaced.
        previous_total: Hours,
        /// Always true: a lowered total is never accepted silently.
        needs_review: bool,
        /// Total hours of the referral afterwards.
        total_hours_all: Hours,
        /// When the feed row was recorded.
        at: DateTime<Utc>,
    },
    /// The placement ended.
    PlacementEnded {
        /// Last day of the placement.
        end_date: NaiveDate,
        /// Reason the placement ended.
        reason: FreeText,
        /// Whether it ended before the program's guarantee period was over.
        within_guarantee: bool,
        /// When the end was recorded.
        at: DateTime<Utc>,
    },
    /// The candidate was declined.
    ReferralDeclined {
        /// Why.
        reason: FreeText,
        /// When.
        at: DateTime<Utc>,
    },
    /// The referral was withdrawn.
    ReferralWithdrawn {
        /// Why.
        reason: FreeText,
        /// When.
        at: DateTime<Utc>,
    },
    /// The referral was not hired by the hire deadline.
    ReferralExpired {
        /// When the expiry was recorded.
        at: DateTime<Utc>,
    },
    /// Every milestone of the bonus schedule was reached.
    ReferralCompleted {
        /// When the last milestone was recorded.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ReferralEvent {
    fn event_type(&self) -> String {
        let name = match self {
            ReferralEvent::ReferralSubmitted { .. } => "ReferralSubmitted",
            ReferralEvent::RecruiterAssigned { .. } => "RecruiterAssigned",
            ReferralEvent::ReferralContacted { .. } => "ReferralContacted",
            ReferralEvent::ReferralInterviewing { .. } => "ReferralInterviewing",
            ReferralEvent::ReferralHired { .. } => "ReferralHired",
            ReferralEvent::EligibilityChanged { .. } => "EligibilityChanged",
            ReferralEvent::MilestoneReached { .. } => "MilestoneReached",
            ReferralEvent::HoursRecorded { .. } => "HoursRecorded",
            ReferralEvent::HoursCorrected { .. } => "HoursCorrected",
            ReferralEvent::HoursAccrued { .. } => "HoursAccrued",
            ReferralEvent::HoursTotalLowered { .. } => "HoursTotalLowered",
            ReferralEvent::PlacementEnded { .. } => "PlacementEnded",
            ReferralEvent::ReferralDeclined { .. } => "ReferralDeclined",
            ReferralEvent::ReferralWithdrawn { .. } => "ReferralWithdrawn",
            ReferralEvent::ReferralExpired { .. } => "ReferralExpired",
            ReferralEvent::ReferralCompleted { .. } => "ReferralCompleted",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
