//! The payout aggregate: one bonus payment for one referral milestone and recipient,
//! from request through approval, payroll export and payment, or to rejection,
//! voiding or reversal.
//!
//! A payout's id is derived from its referral, milestone and recipient
//! ([`PayoutId::for_milestone`](crate::ids::PayoutId::for_milestone)), and a repeated
//! request is a no-op, so a milestone is never paid twice. Paid payouts are never
//! deleted: a clawback is a `PayoutReversed` event.

mod commands;
mod decide;
mod events;
#[cfg(test)]
mod tests;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use commands::{
    ApprovePayout, HoldPayout, MarkExported, MarkPaid, PayoutCommand, RejectPayout, ReleasePayout,
    RequestPayout, ReversePayout, VoidPayout,
};
pub use events::PayoutEvent;

use crate::error::DomainError;
use crate::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, ReferralId, UserId};
use crate::services::PayoutServices;
use crate::terms::{MilestoneKey, Recipient};
use crate::values::Money;

const AGGREGATE: &str = "payout";

/// Status of a payout. Whether it is on hold is tracked separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    /// Waiting for a payout approver.
    PendingApproval,
    /// Approved, waiting for the next payroll export.
    Approved,
    /// Sent to payroll in an export batch.
    Exported,
    /// Paid by payroll.
    Paid,
    /// Rejected by an approver (final).
    Rejected,
    /// Voided before payment (final).
    Voided,
    /// Paid and then clawed back (final).
    Reversed,
}

impl PayoutStatus {
    /// Returns the stored name, as used in serde.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::PendingApproval => "pending_approval",
            PayoutStatus::Approved => "approved",
            PayoutStatus::Exported => "exported",
            PayoutStatus::Paid => "paid",
            PayoutStatus::Rejected => "rejected",
            PayoutStatus::Voided => "voided",
            PayoutStatus::Reversed => "reversed",
        }
    }
}

/// Originator of a payout request or void: a scheduled job or process manager, or a user.
///
/// Serializes as `{"kind": "system", "job": "milestone-payouts"}` or
/// `{"kind": "user", "user_id": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Requester {
    /// A job, by name.
    System {
        /// Name of the job, such as `milestone-payouts`.
        job: String,
    },
    /// A platform user.
    User {
        /// The user's id.
        user_id: UserId,
    },
}

/// Reason code of a voided payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoidReason {
    /// The ambassador was inactive at approval and the terms require an active referrer.
    AmbassadorInactive,
    /// The ambassador had reached the annual bonus cap at approval.
    AnnualCapReached,
    /// The placement ended within the guarantee period.
    PlacementEnded,
    /// The referral became ineligible for another reason.
    ReferralIneligible,
    /// Any other reason, explained in the note.
    Other,
}

impl VoidReason {
    /// Returns the stored name, as used in serde.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            VoidReason::AmbassadorInactive => "ambassador_inactive",
            VoidReason::AnnualCapReached => "annual_cap_reached",
            VoidReason::PlacementEnded => "placement_ended",
            VoidReason::ReferralIneligible => "referral_ineligible",
            VoidReason::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PayoutState {
    payout_id: PayoutId,
    agency_id: AgencyId,
    referral_id: ReferralId,
    program_id: ProgramId,
    ambassador_id: AmbassadorId,
    recipient: Recipient,
    milestone: MilestoneKey,
    amount: Money,
    requested_by: Requester,
    annual_bonus_cap: Option<u32>,
    referrer_must_be_active: bool,
    requested_at: DateTime<Utc>,
    status: PayoutStatus,
    held: bool,
    approved_by: Option<UserId>,
    batch_id: Option<Uuid>,
    paid_on: Option<NaiveDate>,
    paid_reference: Option<String>,
}

impl PayoutState {
    /// Returns the status for error messages, such as `approved, on hold`.
    fn describe(&self) -> String {
        if self.held {
            format!("{}, on hold", self.status.as_str())
        } else {
            self.status.as_str().to_owned()
        }
    }

    /// Returns whether the annual cap applies, and so whether a reservation may exist.
    fn cap_applies(&self) -> bool {
        self.recipient == Recipient::Ambassador && self.annual_bonus_cap.is_some()
    }
}

/// A payout. Empty (`Default`) until `PayoutRequested` is applied; every accessor
/// then returns `None` (or false).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payout {
    state: Option<PayoutState>,
}

impl Payout {
    /// Returns the id of the payout.
    #[must_use]
    pub fn payout_id(&self) -> Option<PayoutId> {
        self.state.as_ref().map(|s| s.payout_id)
    }

    /// Returns the agency that pays.
    #[must_use]
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.state.as_ref().map(|s| s.agency_id)
    }

    /// Returns the referral whose milestone is paid.
    #[must_use]
    pub fn referral_id(&self) -> Option<ReferralId> {
        self.state.as_ref().map(|s| s.referral_id)
    }

    /// Returns the program of the referral.
    #[must_use]
    pub fn program_id(&self) -> Option<ProgramId> {
        self.state.as_ref().map(|s| s.program_id)
    }

    /// Returns the referring ambassador.
    #[must_use]
    pub fn ambassador_id(&self) -> Option<AmbassadorId> {
        self.state.as_ref().map(|s| s.ambassador_id)
    }

    /// Returns the recipient of the money.
    #[must_use]
    pub fn recipient(&self) -> Option<Recipient> {
        self.state.as_ref().map(|s| s.recipient)
    }

    /// Returns the key of the paid milestone.
    #[must_use]
    pub fn milestone(&self) -> Option<&MilestoneKey> {
        self.state.as_ref().map(|s| &s.milestone)
    }

    /// Returns the amount to pay.
    #[must_use]
    pub fn amount(&self) -> Option<Money> {
        self.state.as_ref().map(|s| s.amount)
    }

    /// Returns the status.
    #[must_use]
    pub fn status(&self) -> Option<PayoutStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// Returns whether the payout exists and is on hold.
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.held)
    }

    /// Returns the job or user that requested the payout.
    #[must_use]
    pub fn requested_by(&self) -> Option<&Requester> {
        self.state.as_ref().map(|s| &s.requested_by)
    }

    /// Returns when the payout was requested.
    #[must_use]
    pub fn requested_at(&self) -> Option<DateTime<Utc>> {
        self.state.as_ref().map(|s| s.requested_at)
    }

    /// Returns the approving user, once approved.
    #[must_use]
    pub fn approved_by(&self) -> Option<UserId> {
        self.state.as_ref().and_then(|s| s.approved_by)
    }

    /// Returns the payroll export batch, once exported.
    #[must_use]
    pub fn batch_id(&self) -> Option<Uuid> {
        self.state.as_ref().and_then(|s| s.batch_id)
    }

    /// Returns the day of payment, once paid.
    #[must_use]
    pub fn paid_on(&self) -> Option<NaiveDate> {
        self.state.as_ref().and_then(|s| s.paid_on)
    }

    /// Returns the payroll's reference, once paid.
    #[must_use]
    pub fn paid_reference(&self) -> Option<&str> {
        self.state
            .as_ref()
            .and_then(|s| s.paid_reference.as_deref())
    }
}

impl Aggregate for Payout {
    const TYPE: &'static str = AGGREGATE;
    type Command = PayoutCommand;
    type Event = PayoutEvent;
    type Error = DomainError;
    type Services = PayoutServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match (command, self.state.as_ref()) {
            (PayoutCommand::RequestPayout(request), None) => decide::request(request)?,
            // Requesting an existing payout again creates nothing, so a process
            // manager that runs twice cannot request a second payment.
            (PayoutCommand::RequestPayout(_), Some(_)) => Vec::new(),
            (command, Some(state)) => decide::decide(state, command, services).await?,
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
        if let PayoutEvent::PayoutRequested {
            payout_id,
            agency_id,
            referral_id,
            program_id,
            ambassador_id,
            recipient,
            milestone,
            amount,
            requested_by,
            annual_bonus_cap,
            referrer_must_be_active,
            at,
        } = event
        {
            self.state = Some(PayoutState {
                payout_id,
                agency_id,
                referral_id,
                program_id,
                ambassador_id,
                recipient,
                milestone,
                amount,
                requested_by,
                annual_bonus_cap,
                referrer_must_be_active,
                requested_at: at,
                status: PayoutStatus::PendingApproval,
                held: false,
                approved_by: None,
                batch_id: None,
                paid_on: None,
                paid_reference: None,
            });
            return;
        }

        let Some(state) = self.state.as_mut() else {
            return;
        };
        match event {
            PayoutEvent::PayoutRequested { .. } => {}
            PayoutEvent::PayoutApproved { approver, .. } => {
                state.status = PayoutStatus::Approved;
                state.approved_by = Some(approver);
            }
            PayoutEvent::PayoutRejected { .. } => {
                state.status = PayoutStatus::Rejected;
                state.held = false;
            }
            PayoutEvent::PayoutHeld { .. } => state.held = true,
            PayoutEvent::PayoutReleased { .. } => state.held = false,
            PayoutEvent::PayoutVoided { .. } => {
                state.status = PayoutStatus::Voided;
                state.held = false;
            }
            PayoutEvent::PayoutExported { batch_id, .. } => {
                state.status = PayoutStatus::Exported;
                state.batch_id = Some(batch_id);
            }
            PayoutEvent::PayoutPaid {
                paid_on, reference, ..
            } => {
                state.status = PayoutStatus::Paid;
                state.paid_on = Some(paid_on);
                state.paid_reference = Some(reference);
            }
            PayoutEvent::PayoutReversed { .. } => state.status = PayoutStatus::Reversed,
        }
    }
}
