//! Decisions for the payout commands, including the calls to the bonus cap ledger.

use super::commands::{
    ApprovePayout, HoldPayout, MarkExported, MarkPaid, PayoutCommand, RejectPayout, ReleasePayout,
    RequestPayout, ReversePayout, VoidPayout,
};
use super::events::PayoutEvent;
use super::{PayoutState, PayoutStatus, Requester, VoidReason, AGGREGATE};
use crate::error::DomainError;
use crate::ids::PayoutId;
use crate::services::PayoutServices;
use crate::terms::Recipient;
use crate::values::{parse_label, ValueError};

/// Maximum length of a job name or payroll reference in characters.
const MAX_REFERENCE_CHARS: usize = 100;

/// Decides `PayoutRequested` for a new payout.
pub(super) fn request(request: RequestPayout) -> Result<Vec<PayoutEvent>, DomainError> {
    let expected_id =
        PayoutId::for_milestone(request.referral_id, &request.milestone, request.recipient);
    if request.payout_id != expected_id {
        return Err(ValueError::new(
            "payout_id",
            "does not match the referral, milestone and recipient; derive it with PayoutId::for_milestone",
        )
        .into());
    }
    let key_recipient = format!(":{}", request.recipient.as_str());
    if !request.milestone.as_str().ends_with(&key_recipient) {
        return Err(ValueError::new(
            "recipient",
            "differs from the recipient in the milestone key; use the milestone's recipient",
        )
        .into());
    }
    if request.amount.amount() == 0 {
        return Err(ValueError::new("amount", "must be greater than 0").into());
    }
    let requested_by = match request.requested_by {
        Requester::System { job } => Requester::System {
            job: parse_label("requested_by.job", &job, MAX_REFERENCE_CHARS)?,
        },
        user @ Requester::User { .. } => user,
    };

    Ok(vec![PayoutEvent::PayoutRequested {
        payout_id: request.payout_id,
        agency_id: request.agency_id,
        referral_id: request.referral_id,
        program_id: request.program_id,
        ambassador_id: request.ambassador_id,
        recipient: request.recipient,
        milestone: request.milestone,
        amount: request.amount,
        requested_by,
        annual_bonus_cap: request.annual_bonus_cap,
        referrer_must_be_active: request.referrer_must_be_active,
        at: request.at,
    }])
}

/// Decides the events of any command except `RequestPayout` on an existing payout.
pub(super) async fn decide(
    state: &PayoutState,
    command: PayoutCommand,
    services: &PayoutServices,
) -> Result<Vec<PayoutEvent>, DomainError> {
    let event = match command {
        PayoutCommand::RequestPayout(_) => return Ok(Vec::new()),
        PayoutCommand::ApprovePayout(approve) => approve_payout(state, approve, services).await?,
        PayoutCommand::RejectPayout(reject) => reject_payout(state, reject, services).await?,
        PayoutCommand::HoldPayout(hold) => hold_payout(state, hold)?,
        PayoutCommand::ReleasePayout(release) => release_payout(state, release)?,
        PayoutCommand::VoidPayout(void) => void_payout(state, void, services).await?,
        PayoutCommand::MarkExported(export) => match mark_exported(state, export)? {
            Some(event) => event,
            None => return Ok(Vec::new()),
        },
        PayoutCommand::MarkPaid(paid) => match mark_paid(state, paid)? {
            Some(event) => event,
            None => return Ok(Vec::new()),
        },
        PayoutCommand::ReversePayout(reverse) => reverse_payout(state, reverse, services).await?,
    };
    Ok(vec![event])
}

fn require(
    state: &PayoutState,
    allowed: &[PayoutStatus],
    allow_held: bool,
    action: &'static str,
) -> Result<(), DomainError> {
    if allowed.contains(&state.status) && (allow_held || !state.held) {
        Ok(())
    } else {
        Err(DomainError::InvalidTransition {
            aggregate: AGGREGATE,
            from: state.describe(),
            action,
        })
    }
}

/// Releases the payout's cap reservation, if the cap applies to it.
///
/// Called whenever a payout leaves the way to payment, even from pending approval:
/// an approval whose ledger reservation succeeded but whose event was never stored
/// leaves a reservation behind, and releasing is idempotent.
async fn release_cap(state: &PayoutState, services: &PayoutServices) -> Result<(), DomainError> {
    if state.cap_applies() {
        // NOTE: the release is not atomic with storing the event. If storing fails
        // after this call, the payout keeps its status but no longer counts against
        // the cap until the command is retried.
        services
            .bonus_caps
            .release(state.agency_id, state.payout_id)
            .await?;
    }
    Ok(())
}

async fn approve_payout(
    state: &PayoutState,
    approve: ApprovePayout,
    services: &PayoutServices,
) -> Result<PayoutEvent, DomainError> {
    require(
        state,
        &[PayoutStatus::PendingApproval],
        false,
        "approve the payout",
    )?;
    let approver = Requester::User {
        user_id: approve.approver,
    };
    if state.requested_by == approver {
        return Err(DomainError::SameRequesterAndApprover);
    }

    let voided = |reason_code| PayoutEvent::PayoutVoided {
        by: approver.clone(),
        reason_code,
        note: None,
        at: approve.at,
    };

    // Only the ambassador's own bonus is forfeited: a candidate keeps a two-sided
    // bonus when the person who referred them leaves.
    let for_ambassador = state.recipient == Recipient::Ambassador;
    if for_ambassador && state.referrer_must_be_active && !approve.ambassador_active {
        release_cap(state, services).await?;
        return Ok(voided(VoidReason::AmbassadorInactive));
    }
    if let (true, Some(cap)) = (for_ambassador, state.annual_bonus_cap) {
        let reserved = services
            .bonus_caps
            .reserve(
                state.agency_id,
                state.ambassador_id,
                state.payout_id,
                approve.at,
                cap,
            )
            .await?;
        if !reserved {
            return Ok(voided(VoidReason::AnnualCapReached));
        }
    }
    Ok(PayoutEvent::PayoutApproved {
        approver: approve.approver,
        at: approve.at,
    })
}

async fn reject_payout(
    state: &PayoutState,
    reject: RejectPayout,
    services: &PayoutServices,
) -> Result<PayoutEvent, DomainError> {
    require(
        state,
        &[PayoutStatus::PendingApproval],
        true,
        "reject the payout",
    )?;
    release_cap(state, services).await?;
    Ok(PayoutEvent::PayoutRejected {
        by: reject.by,
        reason: reject.reason,
        at: reject.at,
    })
}

fn hold_payout(state: &PayoutState, hold: HoldPayout) -> Result<PayoutEvent, DomainError> {
    require(
        state,
        &[PayoutStatus::PendingApproval, PayoutStatus::Approved],
        false,
        "hold the payout",
    )?;
    Ok(PayoutEvent::PayoutHeld {
        by: hold.by,
        reason: hold.reason,
        at: hold.at,
    })
}

fn release_payout(state: &PayoutState, release: ReleasePayout) -> Result<PayoutEvent, DomainError> {
    if !state.held {
        return Err(DomainError::InvalidTransition {
            aggregate: AGGREGATE,
            from: format!("{}, not on hold", state.status.as_str()),
            action: "release the hold on the payout",
        });
    }
    Ok(PayoutEvent::PayoutReleased {
        by: release.by,
        at: release.at,
    })
}

async fn void_payout(
    state: &PayoutState,
    void: VoidPayout,
    services: &PayoutServices,
) -> Result<PayoutEvent, DomainError> {
    require(
        state,
        &[
            PayoutStatus::PendingApproval,
            PayoutStatus::Approved,
            PayoutStatus::Exported,
        ],
        true,
        "void the payout",
    )?;
    if void.reason_code == VoidReason::Other && void.note.is_none() {
        return Err(ValueError::new(
            "note",
            "is required when the reason code is other; explain why the payout is voided",
        )
        .into());
    }
    release_cap(state, services).await?;
    Ok(PayoutEvent::PayoutVoided {
        by: void.by,
        reason_code: void.reason_code,
        note: void.note,
        at: void.at,
    })
}

/// Returns `None` when the payout is already in the same batch, so a retried export
/// changes nothing.
fn mark_exported(
    state: &PayoutState,
    export: MarkExported,
) -> Result<Option<PayoutEvent>, DomainError> {
    if state.status == PayoutStatus::Exported && state.batch_id == Some(export.batch_id) {
        return Ok(None);
    }
    require(state, &[PayoutStatus::Approved], false, "export the payout")?;
    Ok(Some(PayoutEvent::PayoutExported {
        batch_id: export.batch_id,
        at: export.at,
    }))
}

/// Returns `None` when the payout is already paid under the same reference, so
/// re-importing a payroll file changes nothing.
fn mark_paid(state: &PayoutState, paid: MarkPaid) -> Result<Option<PayoutEvent>, DomainError> {
    let reference = parse_label("reference", &paid.reference, MAX_REFERENCE_CHARS)?;
    if state.status == PayoutStatus::Paid {
        return if state.paid_reference.as_deref() == Some(reference.as_str()) {
            Ok(None)
        } else {
            Err(DomainError::AlreadyPaid)
        };
    }
    require(
        state,
        &[PayoutStatus::Exported],
        false,
        "mark the payout paid",
    )?;
    Ok(Some(PayoutEvent::PayoutPaid {
        paid_on: paid.paid_on,
        reference,
        at: paid.at,
    }))
}

async fn reverse_payout(
    state: &PayoutState,
    reverse: ReversePayout,
    services: &PayoutServices,
) -> Result<PayoutEvent, DomainError> {
    require(state, &[PayoutStatus::Paid], false, "reverse the payout")?;
    release_cap(state, services).await?;
    Ok(PayoutEvent::PayoutReversed {
        by: reverse.by,
        reason: reverse.reason,
        at: reverse.at,
    })
}
