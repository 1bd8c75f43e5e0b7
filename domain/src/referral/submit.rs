//! Submission of a referral: the checks, the candidate claim and the first event.

use super::commands::SubmitReferral;
use super::eligibility::assess_eligibility;
use super::events::ReferralEvent;
use super::state::ReferralStatus;
use super::AGGREGATE;
use crate::error::DomainError;
use crate::services::{CandidateClaim, ClaimOutcome, ReferralServices};
use crate::values::parse_label;

/// Maximum length of a job reference in characters.
const MAX_JOB_REFERENCE_CHARS: usize = 200;

/// Decides the `ReferralSubmitted` event for a new referral.
///
/// The checks run in this order: program closed, ambassador inactive, candidate
/// without e-mail and phone, self-referral. Only then is the candidate claimed, so a
/// rejected referral never takes ownership of a candidate.
pub(super) async fn decide_submit(
    exists: bool,
    submit: SubmitReferral,
    services: &ReferralServices,
) -> Result<Vec<ReferralEvent>, DomainError> {
    if exists {
        return Err(DomainError::AlreadyExists {
            aggregate: AGGREGATE,
        });
    }
    if !submit.program.open {
        return Err(DomainError::ProgramClosed);
    }
    if !submit.ambassador.active {
        return Err(DomainError::AmbassadorInactive);
    }
    if submit.candidate_keys.is_empty() {
        return Err(DomainError::CandidateContactMissing);
    }
    if submit
        .candidate_keys
        .matches_any(&submit.ambassador.contact_keys)
    {
        return Err(DomainError::SelfReferral);
    }
    let job_reference = submit
        .job_reference
        .as_deref()
        .map(|raw| parse_label("job_reference", raw, MAX_JOB_REFERENCE_CHARS))
        .transpose()?;

    let claim = CandidateClaim {
        agency_id: submit.agency_id,
        referral_id: submit.referral_id,
        keys: submit.candidate_keys.clone(),
        submitted_at: submit.at,
    };
    let duplicate_of = match services.candidates.claim(&claim).await? {
        // A registry that reports this referral as the owner is handling a retry of
        // a submission whose event was never stored, so the referral still owns.
        ClaimOutcome::OwnedBy(owner) if owner != submit.referral_id => Some(owner),
        ClaimOutcome::OwnedBy(_) | ClaimOutcome::Owner => None,
    };
    let eligibility = assess_eligibility(
        &submit.program,
        &submit.ambassador,
        submit.prior_contact,
        duplicate_of.is_some(),
    )?;
    let status = if duplicate_of.is_some() {
        ReferralStatus::Duplicate
    } else {
        ReferralStatus::Submitted
    };

    Ok(vec![ReferralEvent::ReferralSubmitted {
        referral_id: submit.referral_id,
        agency_id: submit.agency_id,
        program_id: submit.program.program_id,
        terms_version: submit.program.terms_version,
        terms: submit.program.terms,
        currency: submit.program.currency,
        ambassador_id: submit.ambassador.ambassador_id,
        ambassador_kind: submit.ambassador.kind,
        candidate: submit.candidate,
        prior_contact: submit.prior_contact,
        job_reference,
        note: submit.note,
        status,
        duplicate_of,
        eligibility,
        at: submit.at,
    }])
}
