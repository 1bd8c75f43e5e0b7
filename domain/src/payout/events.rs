//! Events of the payout aggregate. Their names and fields are stored forever.

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Requester, VoidReason};
use crate::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, ReferralId, UserId};
use crate::terms::{MilestoneKey, Recipient};
use crate::values::{FreeText, Money};

/// Events of the payout aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PayoutEvent {
    /// A payout was requested and waits for approval.
    PayoutRequested {
        /// Id of the payout.
        payout_id: PayoutId,
        /// Agency that pays.
        agency_id: AgencyId,
        /// Referral whose milestone is paid.
        referral_id: ReferralId,
        /// Program of the referral.
        program_id: ProgramId,
        /// The referring ambassador.
        ambassador_id: AmbassadorId,
        /// Recipient of the money.
        recipient: Recipient,
        /// Key of the reached milestone.
        milestone: MilestoneKey,
        /// Amount to pay.
        amount: Money,
        /// The job or user that requested it.
        requested_by: Requester,
        /// Annual bonus cap from the referral's terms.
        annual_bonus_cap: Option<u32>,
        /// Whether an inactive ambassador forfeits the payout.
        referrer_must_be_active: bool,
        /// When it was requested.
        at: DateTime<Utc>,
    },
    /// The payout was approved.
    PayoutApproved {
        /// The approving user.
        approver: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The payout was rejected.
    PayoutRejected {
        /// The rejecting user.
        by: UserId,
        /// Why.
        reason: FreeText,
        /// When.
        at: DateTime<Utc>,
    },
    /// The payout was put on hold.
    PayoutHeld {
        /// The user placing the hold.
        by: UserId,
        /// Why.
        reason: FreeText,
        /// When.
        at: DateTime<Utc>,
    },
    /// The hold was released.
    PayoutReleased {
        /// The user releasing it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The payout was voided before payment, by a user, a job, or a rule at approval.
    PayoutVoided {
        /// The job or user that voided it; the approver when a rule voided it.
        by: Requester,
        /// Why, as a code.
        reason_code: VoidReason,
        /// Explanation, if given.
        note: Option<FreeText>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The payout went out in a payroll export batch.
    PayoutExported {
        /// Id of the batch.
        batch_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Payroll paid the payout.
    PayoutPaid {
        /// Day of payment.
        paid_on: NaiveDate,
        /// Payroll's reference.
        reference: String,
        /// When the payment was recorded.
        at: DateTime<Utc>,
    },
    /// A paid payout was clawed back.
    PayoutReversed {
        /// The user recording the reversal.
        by: UserId,
        /// Why.
        reason: FreeText,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for PayoutEvent {
    fn event_type(&self) -> String {
        let name = match self {
            PayoutEvent::PayoutRequested { .. } => "PayoutRequested",
            PayoutEvent::PayoutApproved { .. } => "PayoutApproved",
            PayoutEvent::PayoutRejected { .. } => "PayoutRejected",
            PayoutEvent::PayoutHeld { .. } => "PayoutHeld",
            PayoutEvent::PayoutReleased { .. } => "PayoutReleased",
            PayoutEvent::PayoutVoided { .. } => "PayoutVoided",
            PayoutEvent::PayoutExported { .. } => "PayoutExported",
            PayoutEvent::PayoutPaid { .. } => "PayoutPaid",
            PayoutEvent::PayoutReversed { .. } => "PayoutReversed",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
