//! Which roles may perform which action: one declarative table, used by every handler and
//! by the test that calls every endpoint with every role.

use referrals_domain::role::Role;

use super::auth::Authenticated;
use super::problem::ApiError;
use referrals_domain::ids::AgencyId;

/// Everything a caller can ask the API to do, one entry per permission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create an agency with its first admin.
    CreateAgency,
    /// Export an agency's data for off-boarding.
    ExportAgency,
    /// Delete an off-boarded agency.
    DeleteAgency,
    /// Invite a user to the agency.
    InviteUser,
    /// List the agency's users.
    ListUsers,
    /// Change a user's roles.
    ChangeRoles,
    /// Deactivate a user.
    DeactivateUser,
    /// Issue a personal access token for an integration.
    IssueAccessToken,
    /// Create a program.
    CreateProgram,
    /// Read programs and their terms.
    ReadPrograms,
    /// Revise a program's terms or close it.
    ChangeProgram,
    /// Enroll, update and deactivate ambassadors.
    ManageAmbassadors,
    /// Read ambassadors.
    ReadAmbassadors,
    /// Check eligibility, submit referrals and move them through the pipeline.
    ManageReferrals,
    /// Read referrals.
    ReadReferrals,
    /// Import timesheets and known candidates.
    ImportRecords,
    /// Read payouts.
    ReadPayouts,
    /// Approve, reject, hold, release, void and reverse payouts.
    DecidePayouts,
    /// Export approved payouts and import paid ones.
    PayPayouts,
    /// Read analytics projections.
    ReadAnalytics,
    /// Read audit history, feeds and exports, and verify the chain.
    ReadAudit,
    /// Read the access log and run access reviews.
    ReviewAccess,
    /// Handle data-subject requests.
    HandleSubjectRequests,
}

use Role::{
    AgencyAdmin as Admin, Analyst, ComplianceAuditor as Auditor, PayoutApprover as Approver,
    PlatformOperator as Operator, Recruiter,
};

/// The permission table: each action and the roles that may perform it. The first role
/// of a caller that appears here is recorded as the role the caller acted in.
pub const PERMISSIONS: &[(Action, &[Role])] = &[
    (Action::CreateAgency, &[Operator]),
    (Action::ExportAgency, &[Operator]),
    (Action::DeleteAgency, &[Operator]),
    (Action::InviteUser, &[Admin]),
    (Action::ListUsers, &[Admin]),
    (Action::ChangeRoles, &[Admin]),
    (Action::DeactivateUser, &[Admin]),
    (Action::IssueAccessToken, &[Admin]),
    (Action::CreateProgram, &[Admin]),
    (Action::ReadPrograms, &[Admin, Recruiter, Approver]),
    (Action::ChangeProgram, &[Admin]),
    (Action::ManageAmbassadors, &[Recruiter]),
    (Action::ReadAmbassadors, &[Recruiter]),
    (Action::ManageReferrals, &[Recruiter]),
    (Action::ReadReferrals, &[Recruiter]),
    (Action::ImportRecords, &[Recruiter]),
    (Action::ReadPayouts, &[Approver, Recruiter]),
    (Action::DecidePayouts, &[Approver]),
    (Action::PayPayouts, &[Approver]),
    (Action::ReadAnalytics, &[Analyst]),
    (Action::ReadAudit, &[Auditor]),
    (Action::ReviewAccess, &[Auditor, Admin]),
    (Action::HandleSubjectRequests, &[Auditor]),
];

/// The roles that may perform `action`.
pub fn allowed_roles(action: Action) -> &'static [Role] {
    PERMISSIONS
        .iter()
        .find(|(candidate, _)| *candidate == action)
        .map_or(&[], |(_, roles)| roles)
}

/// Returns true when a platform-level action: it needs no agency.
fn is_platform_action(action: Action) -> bool {
    matches!(
        action,
        Action::CreateAgency | Action::ExportAgency | Action::DeleteAgency
    )
}

/// A caller allowed to perform one action, with the agency and role it acts in.
#[derive(Debug, Clone)]
pub struct Permitted {
    /// The caller.
    pub caller: Authenticated,
    /// The agency the action applies to; the platform agency for platform actions.
    pub agency_id: AgencyId,
    /// The role the caller acts in, recorded in event metadata.
    pub role: Role,
}

impl Authenticated {
    /// Checks the permission table for `action`.
    ///
    /// # Errors
    /// Returns 403 when none of the caller's roles may perform the action.
    pub fn authorize(&self, action: Action) -> Result<Permitted, ApiError> {
        let allowed = allowed_roles(action);
        let Some(role) = self
            .caller
            .roles
            .iter()
            .copied()
            .find(|role| allowed.contains(role))
        else {
            tracing::debug!(user_id = %self.caller.user_id, ?action, "rejected: role lacks permission");
            return Err(ApiError::forbidden(&format!("{action:?}")));
        };
        let agency_id = match (is_platform_action(action), self.caller.agency_id) {
            (true, _) => self.caller.tenant_id(),
            (false, Some(agency_id)) => agency_id,
            (false, None) => return Err(ApiError::forbidden(&format!("{action:?}"))),
        };
        Ok(Permitted {
            caller: self.clone(),
            agency_id,
            role,
        })
    }
}

impl Permitted {
    /// Metadata for the commands of this request, acting in the permitted role.
    pub fn metadata(&self) -> referrals_store::event_store::CommandMetadata {
        let mut metadata = self.caller.caller.metadata(self.role);
        metadata.request_id = self.caller.ids.request_id;
        metadata.correlation_id = self.caller.ids.correlation_id;
        metadata.causation_id = self.caller.ids.request_id;
        metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_roles() {
        for (action, roles) in PERMISSIONS {
            assert!(!roles.is_empty(), "{action:?} has no role");
        }
    }

    #[test]
    fn operator_has_only_platform_actions() {
        for (action, roles) in PERMISSIONS {
            assert_eq!(
                roles.contains(&Operator),
                is_platform_action(*action),
                "{action:?}"
            );
        }
    }

    #[test]
    fn analyst_reads_only_analytics() {
        let actions: Vec<_> = PERMISSIONS
            .iter()
            .filter(|(_, roles)| roles.contains(&Analyst))
            .map(|(action, _)| *action)
            .collect();
        assert_eq!(actions, vec![Action::ReadAnalytics]);
    }
}
