//! Bonus eligibility of a referral, the program and ambassador snapshots it is
//! judged on, and the rule shared by submission and the eligibility pre-check.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AmbassadorId, ProgramId};
use crate::terms::{AmbassadorKind, Terms};
use crate::values::{ContactKeys, Currency, ValueError};

/// Machine-readable reason why a referral earns no bonus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IneligibleReason {
    /// Another referral owned the candidate when this one was submitted.
    Duplicate,
    /// The agency already knew the candidate within the lookback period.
    PriorContact,
    /// The program's terms pay no bonus to this kind of ambassador.
    AmbassadorKind,
    /// The hire was recorded after the hire deadline.
    HireDeadlinePassed,
    /// The placement ended before the guarantee period was over.
    PlacementEnded,
    /// The ambassador reached the annual bonus cap.
    AnnualCapReached,
    /// The ambassador was deactivated.
    AmbassadorInactive,
}

impl IneligibleReason {
    /// Returns the stored name, as used in serde.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            IneligibleReason::Duplicate => "duplicate",
            IneligibleReason::PriorContact => "prior_contact",
            IneligibleReason::AmbassadorKind => "ambassador_kind",
            IneligibleReason::HireDeadlinePassed => "hire_deadline_passed",
            IneligibleReason::PlacementEnded => "placement_ended",
            IneligibleReason::AnnualCapReached => "annual_cap_reached",
            IneligibleReason::AmbassadorInactive => "ambassador_inactive",
        }
    }
}

/// Whether a referral earns bonuses, and if not, why.
///
/// Serializes as `{"eligible": true, "reason": null}` or
/// `{"eligible": false, "reason": "prior_contact"}`; a reason is present exactly when
/// the referral is ineligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "EligibilityFields")]
pub struct Eligibility {
    eligible: bool,
    reason: Option<IneligibleReason>,
}

impl Eligibility {
    /// Earns bonuses.
    pub const ELIGIBLE: Eligibility = Eligibility {
        eligible: true,
        reason: None,
    };

    /// Earns no bonuses, for `reason`.
    #[must_use]
    pub const fn ineligible(reason: IneligibleReason) -> Self {
        Self {
            eligible: false,
            reason: Some(reason),
        }
    }

    /// Returns whether the referral earns bonuses.
    #[must_use]
    pub const fn is_eligible(&self) -> bool {
        self.eligible
    }

    /// Returns why the referral earns no bonuses, or `None` when it is eligible.
    #[must_use]
    pub const fn reason(&self) -> Option<IneligibleReason> {
        self.reason
    }
}

#[derive(Deserialize)]
struct EligibilityFields {
    eligible: bool,
    reason: Option<IneligibleReason>,
}

impl TryFrom<EligibilityFields> for Eligibility {
    type Error = ValueError;

    fn try_from(fields: EligibilityFields) -> Result<Self, Self::Error> {
        match (fields.eligible, fields.reason) {
            (true, None) => Ok(Eligibility::ELIGIBLE),
            (false, Some(reason)) => Ok(Eligibility::ineligible(reason)),
            _ => Err(ValueError::new(
                "eligibility",
                "must have a reason exactly when eligible is false",
            )),
        }
    }
}

/// Program data that a referral copies at submission, including the terms it keeps for life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramSnapshot {
    /// Id of the program.
    pub program_id: ProgramId,
    /// Version of `terms`.
    pub terms_version: u32,
    /// Terms in force at submission.
    pub terms: Terms,
    /// Currency of the bonus amounts.
    pub currency: Currency,
    /// Whether the program accepts referrals.
    pub open: bool,
}

/// Ambassador data that a referral is judged on at submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmbassadorSnapshot {
    /// Id of the ambassador.
    pub ambassador_id: AmbassadorId,
    /// Kind of ambassador.
    pub kind: AmbassadorKind,
    /// Whether the ambassador is active.
    pub active: bool,
    /// Keyed hashes of the ambassador's e-mail and phone, for the self-referral check.
    pub contact_keys: ContactKeys,
}

/// Decides whether a referral would earn bonuses.
///
/// Used when a referral is submitted and by the API's pre-check. `owned_by_other`
/// carries only whether some other referral owns the candidate, so the pre-check's
/// result (`duplicate`) never reveals who referred the candidate first. Reasons are checked
/// in the order duplicate, ambassador kind, prior contact, and the first one that
/// applies is returned.
///
/// # Errors
///
/// Returns [`DomainError::ProgramClosed`] when the program is closed and
/// [`DomainError::AmbassadorInactive`] when the ambassador is deactivated, because no
/// referral can be submitted then at all.
pub fn assess_eligibility(
    program: &ProgramSnapshot,
    ambassador: &AmbassadorSnapshot,
    prior_contact: bool,
    owned_by_other: bool,
) -> Result<Eligibility, DomainError> {
    if !program.open {
        return Err(DomainError::ProgramClosed);
    }
    if !ambassador.active {
        return Err(DomainError::AmbassadorInactive);
    }

    let eligibility = if owned_by_other {
        Eligibility::ineligible(IneligibleReason::Duplicate)
    } else if !program.terms.is_kind_eligible(ambassador.kind) {
        Eligibility::ineligible(IneligibleReason::AmbassadorKind)
    } else if prior_contact {
        Eligibility::ineligible(IneligibleReason::PriorContact)
    } else {
        Eligibility::ELIGIBLE
    };
    Ok(eligibility)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terms::{Milestone, Recipient, Trigger};
    use crate::values::Hours;

    fn program(open: bool) -> ProgramSnapshot {
        ProgramSnapshot {
            program_id: ProgramId::new(),
            terms_version: 1,
            terms: Terms::with_schedule(vec![Milestone {
                trigger: Trigger::Hired,
                threshold: Hours::ZERO,
                amount: 10_000,
                recipient: Recipient::Ambassador,
            }]),
            currency: Currency::USD,
            open,
        }
    }

    fn ambassador(kind: AmbassadorKind, active: bool) -> AmbassadorSnapshot {
        AmbassadorSnapshot {
            ambassador_id: AmbassadorId::new(),
            kind,
            active,
            contact_keys: ContactKeys::default(),
        }
    }

    #[test]
    fn fresh_referral_is_eligible() {
        let result = assess_eligibility(
            &program(true),
            &ambassador(AmbassadorKind::FieldWorker, true),
            false,
            false,
        );

        assert_eq!(result, Ok(Eligibility::ELIGIBLE));
    }

    #[test]
    fn closed_program_and_inactive_ambassador_are_errors() {
        let field_worker = ambassador(AmbassadorKind::FieldWorker, true);

        assert_eq!(
            assess_eligibility(&program(false), &field_worker, false, false),
            Err(DomainError::ProgramClosed)
        );
        assert_eq!(
            assess_eligibility(
                &program(true),
                &ambassador(AmbassadorKind::FieldWorker, false),
                false,
                false
            ),
            Err(DomainError::AmbassadorInactive)
        );
    }

    #[test]
    fn duplicate_comes_before_other_reasons() {
        let staff = ambassador(AmbassadorKind::AgencyStaff, true);

        let result = assess_eligibility(&program(true), &staff, true, true).unwrap();

        assert_eq!(result.reason(), Some(IneligibleReason::Duplicate));
    }

    #[test]
    fn agency_staff_is_ineligible_by_kind() {
        let staff = ambassador(AmbassadorKind::AgencyStaff, true);

        let result = assess_eligibility(&program(true), &staff, true, false).unwrap();

        assert_eq!(result.reason(), Some(IneligibleReason::AmbassadorKind));
    }

    #[test]
    fn prior_contact_is_ineligible() {
        let field_worker = ambassador(AmbassadorKind::FieldWorker, true);

        let result = assess_eligibility(&program(true), &field_worker, true, false).unwrap();

        assert!(!result.is_eligible());
        assert_eq!(result.reason(), Some(IneligibleReason::PriorContact));
    }

    #[test]
    fn eligibility_json_requires_a_consistent_reason() {
        let ineligible = Eligibility::ineligible(IneligibleReason::PriorContact);

        let json = serde_json::to_string(&ineligible).unwrap();

        assert_eq!(json, r#"{"eligible":false,"reason":"prior_contact"}"#);
        assert_eq!(
            serde_json::from_str::<Eligibility>(&json).unwrap(),
            ineligible
        );
        assert!(
            serde_json::from_str::<Eligibility>(r#"{"eligible":false,"reason":null}"#).is_err()
        );
        assert!(
            serde_json::from_str::<Eligibility>(r#"{"eligible":true,"reason":"duplicate"}"#)
                .is_err()
        );
    }
}
