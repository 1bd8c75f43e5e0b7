//! Commands of the payout aggregate.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{Requester, VoidReason};
use crate::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, ReferralId, UserId};
use crate::terms::{MilestoneKey, Recipient};
use crate::values::{FreeText, Money};

/// Requests the payout of one reached milestone. Repeating it creates nothing new.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPayout {
    /// Must equal `PayoutId::for_milestone(referral_id, &milestone, recipient)`.
    pub payout_id: PayoutId,
    /// Agency that pays.
    pub agency_id: AgencyId,
    /// Referral whose milestone is paid.
    pub referral_id: ReferralId,
    /// Program of the referral.
    pub program_id: ProgramId,
    /// The referring ambassador, whose cap and activity count for ambassador payouts.
    pub ambassador_id: AmbassadorId,
    /// Recipient of the money.
    pub recipient: Recipient,
    /// Key of the reached milestone.
    pub milestone: MilestoneKey,
    /// Amount to pay, greater than 0.
    pub amount: Money,
    /// The job or user that requested the payout.
    pub requested_by: Requester,
    /// Annual bonus cap from the referral's terms.
    pub annual_bonus_cap: Option<u32>,
    /// Whether the payout is forfeited when the ambassador is inactive at approval.
    pub referrer_must_be_active: bool,
    /// When the payout is requested.
    pub at: DateTime<Utc>,
}

/// Approves a pending payout (four-eyes: not by the user who requested it).
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovePayout {
    /// The approving user.
    pub approver: UserId,
    /// Whether the ambassador is active now; the caller reads it from the
    /// ambassador aggregate.
    pub ambassador_active: bool,
    /// When the approval is made; the annual cap counts back 12 months from here.
    pub at: DateTime<Utc>,
}

/// Rejects a pending payout.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectPayout {
    /// The rejecting user.
    pub by: UserId,
    /// Reason for the rejection.
    pub reason: FreeText,
    /// When.
    pub at: DateTime<Utc>,
}

/// Puts a pending or approved payout on hold, which blocks approval and export.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldPayout {
    /// The user placing the hold.
    pub by: UserId,
    /// Reason for the hold.
    pub reason: FreeText,
    /// When.
    pub at: DateTime<Utc>,
}

/// Releases a hold.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasePayout {
    /// The user releasing the hold.
    pub by: UserId,
    /// When.
    pub at: DateTime<Utc>,
}

/// Voids a payout that has not been paid.
#[derive(Debug, Clone, PartialEq)]
pub struct VoidPayout {
    /// The job or user voiding it.
    pub by: Requester,
    /// Reason code.
    pub reason_code: VoidReason,
    /// Explanation; required when `reason_code` is `other`.
    pub note: Option<FreeText>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Records that an approved payout went out in a payroll export batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkExported {
    /// Id of the export batch.
    pub batch_id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
}

/// Records that payroll paid an exported payout.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkPaid {
    /// Day of payment.
    pub paid_on: NaiveDate,
    /// Payroll's reference for the payment, 1 to 100 characters.
    pub reference: String,
    /// When the payment is recorded.
    pub at: DateTime<Utc>,
}

/// Records a clawback of a paid payout. The payment stays in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct ReversePayout {
    /// The user recording the reversal.
    pub by: UserId,
    /// Reason for the reversal.
    pub reason: FreeText,
    /// When.
    pub at: DateTime<Utc>,
}

/// Commands of the payout aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum PayoutCommand {
    /// See [`RequestPayout`].
    RequestPayout(RequestPayout),
    /// See [`ApprovePayout`].
    ApprovePayout(ApprovePayout),
    /// See [`RejectPayout`].
    RejectPayout(RejectPayout),
    /// See [`HoldPayout`].
    HoldPayout(HoldPayout),
    /// See [`ReleasePayout`].
    ReleasePayout(ReleasePayout),
    /// See [`VoidPayout`].
    VoidPayout(VoidPayout),
    /// See [`MarkExported`].
    MarkExported(MarkExported),
    /// See [`MarkPaid`].
    MarkPaid(MarkPaid),
    /// See [`ReversePayout`].
    ReversePayout(ReversePayout),
}

macro_rules! command_from {
    ($($name:ident),* $(,)?) => {
        $(
            impl From<$name> for PayoutCommand {
                fn from(command: $name) -> Self {
                    PayoutCommand::$name(command)
                }
            }
        )*
    };
}

command_from!(
    RequestPayout,
    ApprovePayout,
    RejectPayout,
    HoldPayout,
    ReleasePayout,
    VoidPayout,
    MarkExported,
    MarkPaid,
    ReversePayout,
);
