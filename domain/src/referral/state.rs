//! State of a referral as rebuilt from its events, and the public types that
//! describe it.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::commands::SealedContact;
use super::eligibility::Eligibility;
use super::events::ReferralEvent;
use crate::ids::{AgencyId, AmbassadorId, ProgramId, ReferralId, UserId};
use crate::terms::{AmbassadorKind, Milestone, MilestoneKey, Terms};
use crate::values::{Currency, FreeText, Hours, Sealed};

/// Pipeline status of a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    /// Recorded and owning its candidate, not yet worked on.
    Submitted,
    /// The recruiter contacted the candidate.
    Contacted,
    /// The candidate is interviewing.
    Interviewing,
    /// The candidate was hired; hours and days now count towards milestones.
    Hired,
    /// Every milestone of the bonus schedule was reached.
    Completed,
    /// The agency declined the candidate (terminal).
    Declined,
    /// The referral was withdrawn (terminal).
    Withdrawn,
    /// No hire by the hire deadline (terminal).
    Expired,
    /// Another referral owned the candidate at submission (terminal).
    Duplicate,
}

impl ReferralStatus {
    /// Returns the stored name, as used in serde.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ReferralStatus::Submitted => "submitted",
            ReferralStatus::Contacted => "contacted",
            ReferralStatus::Interviewing => "interviewing",
            ReferralStatus::Hired => "hired",
            ReferralStatus::Completed => "completed",
            ReferralStatus::Declined => "declined",
            ReferralStatus::Withdrawn => "withdrawn",
            ReferralStatus::Expired => "expired",
            ReferralStatus::Duplicate => "duplicate",
        }
    }

    /// Returns whether the referral is still waiting for a hire.
    #[must_use]
    pub const fn is_before_hire(self) -> bool {
        matches!(
            self,
            ReferralStatus::Submitted | ReferralStatus::Contacted | ReferralStatus::Interviewing
        )
    }

    /// Returns whether the candidate was hired (hired or completed).
    #[must_use]
    pub const fn is_hired(self) -> bool {
        matches!(self, ReferralStatus::Hired | ReferralStatus::Completed)
    }

    /// Returns whether the referral ended without a hire.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            ReferralStatus::Declined
                | ReferralStatus::Withdrawn
                | ReferralStatus::Expired
                | ReferralStatus::Duplicate
        )
    }
}

/// The placement that followed the hire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// First day of work.
    pub start_date: NaiveDate,
    /// Job title.
    pub job_title: String,
    /// Client the worker is placed with.
    pub client_name: String,
    /// Worker id in the agency's back office.
    pub external_worker_id: Option<String>,
    /// When the hire was recorded.
    pub hired_at: DateTime<Utc>,
    /// Last day of the placement, once it ended.
    pub end_date: Option<NaiveDate>,
    /// Reason the placement ended.
    pub end_reason: Option<FreeText>,
    /// Whether it ended before the guarantee period was over.
    pub ended_within_guarantee: bool,
}

impl Placement {
    /// Whole days from the start date to `today`, or to the end date if the
    /// placement ended earlier; 0 before the start.
    #[must_use]
    pub fn days_employed(&self, today: NaiveDate) -> i64 {
        let last_day = self.end_date.map_or(today, |end| end.min(today));
        (last_day - self.start_date).num_days().max(0)
    }
}

/// A milestone that was reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachedMilestone {
    /// Stable key of the milestone.
    pub key: MilestoneKey,
    /// The milestone itself.
    pub milestone: Milestone,
    /// The day it counts as reached.
    pub reached_on: NaiveDate,
    /// Whether the referral was eligible then.
    pub payable: bool,
}

/// State of a submitted referral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ReferralState {
    pub(super) referral_id: ReferralId,
    pub(super) agency_id: AgencyId,
    pub(super) program_id: ProgramId,
    pub(super) terms_version: u32,
    pub(super) terms: Terms,
    pub(super) currency: Currency,
    pub(super) ambassador_id: AmbassadorId,
    pub(super) ambassador_kind: AmbassadorKind,
    pub(super) candidate: SealedContact,
    pub(super) prior_contact: bool,
    pub(super) job_reference: Option<String>,
    pub(super) note: Option<Sealed>,
    pub(super) status: ReferralStatus,
    pub(super) duplicate_of: Option<ReferralId>,
    pub(super) eligibility: Eligibility,
    pub(super) submitted_at: DateTime<Utc>,
    pub(super) recruiter_id: Option<UserId>,
    pub(super) placement: Option<Placement>,
    /// Hours per week, keyed by the week-ending date.
    pub(super) weekly_hours: BTreeMap<NaiveDate, Hours>,
    /// Last cumulative total reported by a back-office feed.
    pub(super) feed_total: Hours,
    /// Date of that feed total, if a feed ever reported one.
    pub(super) feed_as_of: Option<NaiveDate>,
    pub(super) milestones_reached: Vec<ReachedMilestone>,
}

impl ReferralState {
    /// Builds the state from `ReferralSubmitted`; returns `None` for any other event.
    pub(super) fn from_submitted(event: ReferralEvent) -> Option<Self> {
        let ReferralEvent::ReferralSubmitted {
            referral_id,
            agency_id,
            program_id,
            terms_version,
            terms,
            currency,
            ambassador_id,
            ambassador_kind,
            candidate,
            prior_contact,
            job_reference,
            note,
            status,
            duplicate_of,
            eligibility,
            at,
        } = event
        else {
            return None;
        };
        Some(Self {
            referral_id,
            agency_id,
            program_id,
            terms_version,
            terms,
            currency,
            ambassador_id,
            ambassador_kind,
            candidate,
            prior_contact,
            job_reference,
            note,
            status,
            duplicate_of,
            eligibility,
            submitted_at: at,
            recruiter_id: None,
            placement: None,
            weekly_hours: BTreeMap::new(),
            feed_total: Hours::ZERO,
            feed_as_of: None,
            milestones_reached: Vec::new(),
        })
    }

    /// Applies an event that follows `ReferralSubmitted`.
    pub(super) fn apply(&mut self, event: ReferralEvent) {
        match event {
            // A second submission is rejected before it is written, so it never
            // reaches this point from a real stream.
            ReferralEvent::ReferralSubmitted { .. } => {}
            ReferralEvent::RecruiterAssigned { recruiter_id, .. } => {
                self.recruiter_id = Some(recruiter_id);
            }
            ReferralEvent::ReferralContacted { .. } => self.status = ReferralStatus::Contacted,
            ReferralEvent::ReferralInterviewing { .. } => {
                self.status = ReferralStatus::Interviewing;
            }
            ReferralEvent::ReferralHired {
                start_date,
                job_title,
                client_name,
                external_worker_id,
                at,
            } => {
                self.status = ReferralStatus::Hired;
                self.placement = Some(Placement {
                    start_date,
                    job_title,
                    client_name,
                    external_worker_id,
                    hired_at: at,
                    end_date: None,
                    end_reason: None,
                    ended_within_guarantee: false,
                });
            }
            ReferralEvent::EligibilityChanged { eligibility, .. } => {
                self.eligibility = eligibility;
            }
            ReferralEvent::MilestoneReached {
                milestone,
                key,
                payable,
                reached_on,
                ..
            } => self.milestones_reached.push(ReachedMilestone {
                key,
                milestone,
                reached_on,
                payable,
            }),
            ReferralEvent::HoursRecorded {
                week_ending, hours, ..
            }
            | ReferralEvent::HoursCorrected {
                week_ending, hours, ..
            } => {
                self.weekly_hours.insert(week_ending, hours);
            }
            ReferralEvent::HoursAccrued {
                as_of, total_hours, ..
            } => {
                self.feed_total = total_hours;
                self.feed_as_of = Some(as_of);
            }
            ReferralEvent::HoursTotalLowered {
                as_of,
                reported_total,
                ..
            } => {
                self.feed_total = reported_total;
                self.feed_as_of = Some(as_of);
            }
            ReferralEvent::PlacementEnded {
                end_date,
                reason,
                within_guarantee,
                ..
            } => {
                if let Some(placement) = self.placement.as_mut() {
                    placement.end_date = Some(end_date);
                    placement.end_reason = Some(reason);
                    placement.ended_within_guarantee = within_guarantee;
                }
            }
            ReferralEvent::ReferralDeclined { .. } => self.status = ReferralStatus::Declined,
            ReferralEvent::ReferralWithdrawn { .. } => self.status = ReferralStatus::Withdrawn,
            ReferralEvent::ReferralExpired { .. } => self.status = ReferralStatus::Expired,
            ReferralEvent::ReferralCompleted { .. } => self.status = ReferralStatus::Completed,
        }
    }

    /// Returns the sum of the weekly figures plus the last feed total.
    pub(super) fn hours_total(&self) -> Hours {
        self.weekly_hours.values().copied().sum::<Hours>() + self.feed_total
    }

    pub(super) fn has_reached(&self, key: &MilestoneKey) -> bool {
        self.milestones_reached
            .iter()
            .any(|reached| &reached.key == key)
    }

    /// Returns the end of the attribution window.
    pub(super) fn window_closes_at(&self) -> DateTime<Utc> {
        add_days(self.submitted_at, self.terms.attribution_window_days)
    }

    /// Last moment at which a hire still earns bonuses, and from which the referral
    /// may be expired.
    pub(super) fn hire_deadline(&self) -> DateTime<Utc> {
        add_days(self.submitted_at, self.terms.hire_deadline_days)
    }

    pub(super) fn owns_candidate_at(&self, at: DateTime<Utc>) -> bool {
        if self.status.is_before_hire() {
            at < self.window_closes_at()
        } else {
            self.status.is_hired()
        }
    }
}

fn add_days(at: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    at.checked_add_signed(TimeDelta::days(i64::from(days)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
