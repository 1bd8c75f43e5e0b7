//! Commands of the referral aggregate.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::eligibility::{AmbassadorSnapshot, ProgramSnapshot};
use crate::ids::{AgencyId, ReferralId, UserId};
use crate::values::{ContactKeys, FreeText, Hours, Sealed};

/// A candidate's contact details, each sealed by the store's encryption layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedContact {
    /// Sealed name.
    pub name: Sealed,
    /// Sealed normalized e-mail address.
    pub email: Option<Sealed>,
    /// Sealed E.164 phone number.
    pub phone: Option<Sealed>,
}

/// Submits a referral of a candidate by an ambassador.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitReferral {
    /// Id of the new referral.
    pub referral_id: ReferralId,
    /// Agency the referral belongs to.
    pub agency_id: AgencyId,
    /// The program and the terms the referral keeps.
    pub program: ProgramSnapshot,
    /// The referring ambassador.
    pub ambassador: AmbassadorSnapshot,
    /// The candidate's sealed contact details.
    pub candidate: SealedContact,
    /// Keyed hashes of the candidate's e-mail and phone; at least one is required. They
    /// are used for the duplicate and self-referral checks and never enter the event,
    /// because an erasure must be able to remove them.
    pub candidate_keys: ContactKeys,
    /// Whether the agency had contact with the candidate within the program's
    /// prior-contact lookback; the caller looks this up.
    pub prior_contact: bool,
    /// Job opening the candidate is referred for, 1 to 200 characters.
    pub job_reference: Option<String>,
    /// Sealed note from the ambassador.
    pub note: Option<Sealed>,
    /// When the referral is submitted; the attribution window and hire deadline run
    /// from this time.
    pub at: DateTime<Utc>,
}

/// Assigns the recruiter who handles the referral.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignRecruiter {
    /// The recruiter's user id.
    pub recruiter_id: UserId,
    /// When the assignment is made.
    pub at: DateTime<Utc>,
}

/// Records that the recruiter contacted the candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkContacted {
    /// When the candidate was contacted.
    pub at: DateTime<Utc>,
}

/// Records that the candidate is interviewing.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkInterviewing {
    /// When interviewing started.
    pub at: DateTime<Utc>,
}

/// Records the hire of the candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordHire {
    /// First day of work.
    pub start_date: NaiveDate,
    /// Job title, 1 to 200 characters.
    pub job_title: String,
    /// Client the candidate is placed with, 1 to 200 characters.
    pub client_name: String,
    /// Worker id in the agency's back office, 1 to 100 characters.
    pub external_worker_id: Option<String>,
    /// When the hire is recorded; compared with the hire deadline.
    pub at: DateTime<Utc>,
}

/// Records the hours of one work week, replacing an earlier figure for that week.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordHours {
    /// Last day of the work week.
    pub week_ending: NaiveDate,
    /// Hours worked that week, 0 to 168.
    pub hours: Hours,
    /// When the figure is recorded.
    pub at: DateTime<Utc>,
}

/// Records the cumulative hours that a back-office feed reports for the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordCumulativeHours {
    /// Date up to which the feed has accrued hours.
    pub as_of: NaiveDate,
    /// Total hours the feed reports as of that date.
    pub total_hours: Hours,
    /// When the feed row is recorded.
    pub at: DateTime<Utc>,
}

/// Reaches the days-employed milestones that are due by `today`. Run by a daily job.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDaysEmployed {
    /// The day to count employment up to.
    pub today: NaiveDate,
    /// When the check runs.
    pub at: DateTime<Utc>,
}

/// Records the end of the placement.
#[derive(Debug, Clone, PartialEq)]
pub struct EndPlacement {
    /// Last day of the placement, on or after the start date.
    pub end_date: NaiveDate,
    /// Reason the placement ended.
    pub reason: FreeText,
    /// When the end is recorded.
    pub at: DateTime<Utc>,
}

/// Declines the candidate before a hire.
#[derive(Debug, Clone, PartialEq)]
pub struct Decline {
    /// Reason the candidate was declined.
    pub reason: FreeText,
    /// When the referral is declined.
    pub at: DateTime<Utc>,
}

/// Withdraws the referral before a hire, at the ambassador's or candidate's request.
#[derive(Debug, Clone, PartialEq)]
pub struct Withdraw {
    /// Reason the referral was withdrawn.
    pub reason: FreeText,
    /// When the referral is withdrawn.
    pub at: DateTime<Utc>,
}

/// Expires a referral that was not hired by the hire deadline. Run by a scheduled job.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpireReferral {
    /// When the job runs; must be at or after the deadline.
    pub at: DateTime<Utc>,
}

/// Commands of the referral aggregate.
#[allow(
    clippy::large_enum_variant,
    reason = "one command lives briefly per request; boxing would only add noise at every call site"
)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReferralCommand {
    /// See [`SubmitReferral`].
    SubmitReferral(SubmitReferral),
    /// See [`AssignRecruiter`].
    AssignRecruiter(AssignRecruiter),
    /// See [`MarkContacted`].
    MarkContacted(MarkContacted),
    /// See [`MarkInterviewing`].
    MarkInterviewing(MarkInterviewing),
    /// See [`RecordHire`].
    RecordHire(RecordHire),
    /// See [`RecordHours`].
    RecordHours(RecordHours),
    /// See [`RecordCumulativeHours`].
    RecordCumulativeHours(RecordCumulativeHours),
    /// See [`CheckDaysEmployed`].
    CheckDaysEmployed(CheckDaysEmployed),
    /// See [`EndPlacement`].
    EndPlacement(EndPlacement),
    /// See [`Decline`].
    Decline(Decline),
    /// See [`Withdraw`].
    Withdraw(Withdraw),
    /// See [`ExpireReferral`].
    ExpireReferral(ExpireReferral),
}

macro_rules! command_from {
    ($($name:ident),* $(,)?) => {
        $(
            impl From<$name> for ReferralCommand {
                fn from(command: $name) -> Self {
                    ReferralCommand::$name(command)
                }
            }
        )*
    };
}

command_from!(
    SubmitReferral,
    AssignRecruiter,
    MarkContacted,
    MarkInterviewing,
    RecordHire,
    RecordHours,
    RecordCumulativeHours,
    CheckDaysEmployed,
    EndPlacement,
    Decline,
    Withdraw,
    ExpireReferral,
);
