//! User roles: what each may do is decided by the API, this module owns the names,
//! which roles need multi-factor authentication, and which roles may be combined.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::values::ValueError;

/// A role a user holds. A user may hold several agency roles, or the platform role
/// alone, never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Creates and off-boards agencies, without access to agency personal data.
    PlatformOperator,
    /// Manages the users, roles and programs of one agency.
    AgencyAdmin,
    /// Manages ambassadors and referrals, records hires and hours.
    Recruiter,
    /// Approves, rejects, exports and marks payouts paid.
    PayoutApprover,
    /// Reads audit history and access logs, handles data-subject requests.
    ComplianceAuditor,
    /// Reads analytics projections, which hold no personal data.
    Analyst,
}

impl Role {
    /// Every role, in the order of [`Ord`].
    pub const ALL: [Role; 6] = [
        Role::PlatformOperator,
        Role::AgencyAdmin,
        Role::Recruiter,
        Role::PayoutApprover,
        Role::ComplianceAuditor,
        Role::Analyst,
    ];

    /// Returns the role's name in snake case, as stored in events and sent to clients.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformOperator => "platform_operator",
            Role::AgencyAdmin => "agency_admin",
            Role::Recruiter => "recruiter",
            Role::PayoutApprover => "payout_approver",
            Role::ComplianceAuditor => "compliance_auditor",
            Role::Analyst => "analyst",
        }
    }

    /// Parses a role from its snake-case name.
    ///
    /// # Errors
    ///
    /// Returns a [`ValueError`] for `roles` that lists the valid names when `name` is
    /// not one of them.
    pub fn parse(name: &str) -> Result<Role, ValueError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| {
                ValueError::new(
                    "roles",
                    "contains an unknown role; use platform_operator, agency_admin, recruiter, \
                     payout_approver, compliance_auditor or analyst",
                )
            })
    }

    /// Returns whether a user holding this role must sign in with a TOTP code.
    #[must_use]
    pub fn requires_mfa(self) -> bool {
        matches!(
            self,
            Role::PlatformOperator | Role::AgencyAdmin | Role::PayoutApprover
        )
    }

    /// Returns whether this is the platform's role rather than a role in one agency.
    #[must_use]
    pub fn is_platform(self) -> bool {
        self == Role::PlatformOperator
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Validates the roles of one user and returns them sorted and without repeats.
///
/// A platform user (`platform == true`) has exactly `platform_operator`. An agency
/// user has one or more agency roles and never `platform_operator`, so that no
/// account can both manage agencies and read an agency's personal data.
///
/// # Errors
///
/// Returns a [`ValueError`] for `roles` when the list is empty or mixes platform and
/// agency roles.
pub fn normalize_roles(roles: &[Role], platform: bool) -> Result<Vec<Role>, ValueError> {
    let mut normalized = roles.to_vec();
    normalized.sort_unstable();
    normalized.dedup();

    if normalized.is_empty() {
        return Err(ValueError::new(
            "roles",
            "is empty; give the user at least one role",
        ));
    }
    if platform && normalized != [Role::PlatformOperator] {
        return Err(ValueError::new(
            "roles",
            "must be exactly platform_operator for a platform user; agency roles belong \
             to users of an agency",
        ));
    }
    if !platform && normalized.contains(&Role::PlatformOperator) {
        return Err(ValueError::new(
            "roles",
            "contains platform_operator, which a user of an agency cannot hold; create a \
             separate platform operator account",
        ));
    }
    Ok(normalized)
}

/// Returns whether any of `roles` requires multi-factor authentication.
#[must_use]
pub fn any_requires_mfa(roles: &[Role]) -> bool {
    roles.iter().any(|role| role.requires_mfa())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()).unwrap(), role);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
    }

    #[test]
    fn unknown_role_is_rejected() {
        let error = Role::parse("superuser").unwrap_err();

        assert_eq!(error.field, "roles");
    }

    #[test]
    fn mfa_roles_are_operator_admin_and_approver() {
        let requiring: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|role| role.requires_mfa())
            .collect();

        assert_eq!(
            requiring,
            [
                Role::PlatformOperator,
                Role::AgencyAdmin,
                Role::PayoutApprover
            ]
        );
    }

    #[test]
    fn roles_are_sorted_and_deduplicated() {
        let roles = normalize_roles(&[Role::Analyst, Role::Recruiter, Role::Analyst], false);

        assert_eq!(roles.unwrap(), [Role::Recruiter, Role::Analyst]);
    }

    #[test]
    fn empty_roles_are_rejected() {
        assert!(normalize_roles(&[], false).is_err());
        assert!(normalize_roles(&[], true).is_err());
    }

    #[test]
    fn agency_user_cannot_hold_platform_role() {
        let error = normalize_roles(&[Role::AgencyAdmin, Role::PlatformOperator], false);

        assert_eq!(error.unwrap_err().field, "roles");
    }

    #[test]
    fn platform_user_cannot_hold_agency_roles() {
        assert!(normalize_roles(&[Role::PlatformOperator, Role::Analyst], true).is_err());
        assert!(normalize_roles(&[Role::Analyst], true).is_err());
        assert_eq!(
            normalize_roles(&[Role::PlatformOperator], true).unwrap(),
            [Role::PlatformOperator]
        );
    }
}
