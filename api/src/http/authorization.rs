//! The permission table of roles and actions: one declarative table, used by every
//! handler and by the test that calls every endpoint with every role.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use referrals_domain::ids::AgencyId;
use referrals_domain::role::Role;
use referrals_store::accounts::Caller;

use super::auth::Authenticated;
use super::problem::ApiError;

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
    /// Read and manage one's own account: profile, MFA, signing out.
    UseOwnAccount,
    /// Read and change the agency's settings, such as texting.
    ManageAgencySettings,
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
    (Action::ManageAgencySettings, &[Admin]),
    (
        Action::UseOwnAccount,
        &[Operator, Admin, Recruiter, Approver, Auditor, Analyst],
    ),
];

/// Every route that needs a caller, with the action it performs. Routes not listed here
/// are public (sign-in, invitations, operations). The middleware [`enforce_permissions`]
/// checks this table before any handler or body parsing runs, and a test checks that every
/// route of the OpenAPI document is either here or public.
pub const ROUTE_ACTIONS: &[(&str, &str, Action)] = &[
    ("POST", "/v1/me/mfa", Action::UseOwnAccount),
    ("GET", "/v1/me", Action::UseOwnAccount),
    ("DELETE", "/v1/auth/sessions/current", Action::UseOwnAccount),
    ("POST", "/v1/platform/agencies", Action::CreateAgency),
    (
        "POST",
        "/v1/platform/agencies/{id}/export",
        Action::ExportAgency,
    ),
    ("DELETE", "/v1/platform/agencies/{id}", Action::DeleteAgency),
    (
        "POST",
        "/v1/privacy/subject-requests",
        Action::HandleSubjectRequests,
    ),
    (
        "GET",
        "/v1/privacy/subject-requests/{id}",
        Action::HandleSubjectRequests,
    ),
    ("GET", "/v1/agency/texting", Action::ManageAgencySettings),
    ("PUT", "/v1/agency/texting", Action::ManageAgencySettings),
    ("POST", "/v1/users", Action::InviteUser),
    ("GET", "/v1/users", Action::ListUsers),
    ("PUT", "/v1/users/{id}/roles", Action::ChangeRoles),
    ("POST", "/v1/users/{id}/deactivate", Action::DeactivateUser),
    ("POST", "/v1/users/{id}/tokens", Action::IssueAccessToken),
    ("POST", "/v1/programs", Action::CreateProgram),
    ("GET", "/v1/programs", Action::ReadPrograms),
    ("GET", "/v1/programs/{id}", Action::ReadPrograms),
    ("PUT", "/v1/programs/{id}/terms", Action::ChangeProgram),
    ("POST", "/v1/programs/{id}/close", Action::ChangeProgram),
    ("POST", "/v1/ambassadors", Action::ManageAmbassadors),
    ("GET", "/v1/ambassadors", Action::ReadAmbassadors),
    ("GET", "/v1/ambassadors/{id}", Action::ReadAmbassadors),
    ("PATCH", "/v1/ambassadors/{id}", Action::ManageAmbassadors),
    (
        "POST",
        "/v1/ambassadors/{id}/deactivate",
        Action::ManageAmbassadors,
    ),
    (
        "POST",
        "/v1/referrals/eligibility-check",
        Action::ManageReferrals,
    ),
    ("POST", "/v1/referrals", Action::ManageReferrals),
    ("GET", "/v1/referrals", Action::ReadReferrals),
    ("GET", "/v1/referrals/{id}", Action::ReadReferrals),
    ("POST", "/v1/referrals/{id}/assign", Action::ManageReferrals),
    (
        "POST",
        "/v1/referrals/{id}/contacted",
        Action::ManageReferrals,
    ),
    (
        "POST",
        "/v1/referrals/{id}/interviewing",
        Action::ManageReferrals,
    ),
    ("POST", "/v1/referrals/{id}/hire", Action::ManageReferrals),
    ("POST", "/v1/referrals/{id}/hours", Action::ManageReferrals),
    (
        "POST",
        "/v1/referrals/{id}/placement-end",
        Action::ManageReferrals,
    ),
    (
        "POST",
        "/v1/referrals/{id}/decline",
        Action::ManageReferrals,
    ),
    (
        "POST",
        "/v1/referrals/{id}/withdraw",
        Action::ManageReferrals,
    ),
    ("POST", "/v1/timesheets", Action::ImportRecords),
    ("GET", "/v1/timesheets/{id}", Action::ImportRecords),
    ("POST", "/v1/known-candidates", Action::ImportRecords),
    ("GET", "/v1/payouts", Action::ReadPayouts),
    ("GET", "/v1/payouts/{id}", Action::ReadPayouts),
    ("POST", "/v1/payouts/{id}/approve", Action::DecidePayouts),
    ("POST", "/v1/payouts/{id}/reject", Action::DecidePayouts),
    ("POST", "/v1/payouts/{id}/hold", Action::DecidePayouts),
    ("POST", "/v1/payouts/{id}/release", Action::DecidePayouts),
    ("POST", "/v1/payouts/{id}/void", Action::DecidePayouts),
    ("POST", "/v1/payouts/{id}/reverse", Action::DecidePayouts),
    ("POST", "/v1/payouts/exports", Action::PayPayouts),
    ("GET", "/v1/payouts/exports/{id}", Action::PayPayouts),
    ("POST", "/v1/payouts/paid-imports", Action::PayPayouts),
    ("GET", "/v1/analytics/funnel", Action::ReadAnalytics),
    ("GET", "/v1/analytics/leaderboard", Action::ReadAnalytics),
    ("GET", "/v1/analytics/payouts", Action::ReadAnalytics),
    ("POST", "/v1/audit/verify", Action::ReadAudit),
    (
        "GET",
        "/v1/audit/{aggregate_type}/{id}/events",
        Action::ReadAudit,
    ),
    (
        "GET",
        "/v1/audit/{aggregate_type}/{id}/state",
        Action::ReadAudit,
    ),
    ("GET", "/v1/audit/events", Action::ReadAudit),
    ("GET", "/v1/audit/export", Action::ReadAudit),
    ("GET", "/v1/audit/access-log", Action::ReviewAccess),
    ("GET", "/v1/audit/access-review", Action::ReviewAccess),
];

/// Public routes: no caller needed.
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/auth/invitations/accept"),
    ("POST", "/v1/auth/sessions"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// Names the roles that may perform `action`, for messages: "recruiter or payout_approver".
fn required_roles(action: Action) -> String {
    let names: Vec<&str> = allowed_roles(action)
        .iter()
        .map(|role| role.as_str())
        .collect();
    names.join(" or ")
}

/// The action of a route, by method and path template.
pub fn route_action(method: &str, path: &str) -> Option<Action> {
    ROUTE_ACTIONS
        .iter()
        .find(|(route_method, route_path, _)| *route_method == method && *route_path == path)
        .map(|(_, _, action)| *action)
}

/// Rejects a request before its handler runs when its route needs a caller and there is
/// none (401), or the caller's roles do not allow the route's action (403). A method and
/// path that are in neither [`ROUTE_ACTIONS`] nor [`PUBLIC_ROUTES`] get 405, so a new
/// route cannot be reachable without a decision.
pub async fn enforce_permissions(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let Some(path) = matched.map(|path| path.as_str().to_owned()) else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_owned();
    if PUBLIC_ROUTES.contains(&(method.as_str(), path.as_str())) {
        return next.run(request).await;
    }
    let Some(action) = route_action(&method, &path) else {
        // The router also sends a known path with an unknown method here. Answering 405
        // from the tables keeps this check closed: a handler missing from them stays
        // unreachable instead of running unchecked.
        let allowed: Vec<&str> = ROUTE_ACTIONS
            .iter()
            .map(|(method, route, _)| (*method, *route))
            .chain(PUBLIC_ROUTES.iter().copied())
            .filter(|(_, route)| *route == path)
            .map(|(method, _)| method)
            .collect();
        let mut response = ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{path} does not accept {method}; it accepts {}",
                allowed.join(", ")
            ),
        )
        .into_response();
        if let Ok(value) = axum::http::HeaderValue::from_str(&allowed.join(",")) {
            response
                .headers_mut()
                .insert(axum::http::header::ALLOW, value);
        }
        return response;
    };
    let Some(caller) = request.extensions().get::<Caller>() else {
        return ApiError::unauthenticated().into_response();
    };
    let allowed = allowed_roles(action);
    if !caller.roles.iter().any(|role| allowed.contains(role)) {
        tracing::debug!(user_id = %caller.user_id, ?action, "rejected: role lacks permission");
        return ApiError::forbidden(&required_roles(action)).into_response();
    }
    next.run(request).await
}

/// Returns the roles that may perform `action`.
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
            return Err(ApiError::forbidden(&required_roles(action)));
        };
        let agency_id = match (
            is_platform_action(action) || action == Action::UseOwnAccount,
            self.caller.agency_id,
        ) {
            (true, _) => self.caller.tenant_id(),
            (false, Some(agency_id)) => agency_id,
            (false, None) => return Err(ApiError::forbidden(&required_roles(action))),
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
    fn every_route_action_is_in_permissions() {
        for (method, path, action) in ROUTE_ACTIONS {
            assert!(!allowed_roles(*action).is_empty(), "{method} {path}");
        }
    }

    #[test]
    fn every_action_has_roles() {
        for (action, roles) in PERMISSIONS {
            assert!(!roles.is_empty(), "{action:?} has no role");
        }
    }

    #[test]
    fn operator_has_only_platform_actions() {
        for (action, roles) in PERMISSIONS {
            let expected = is_platform_action(*action) || *action == Action::UseOwnAccount;
            assert_eq!(roles.contains(&Operator), expected, "{action:?}");
        }
    }

    #[test]
    fn analyst_reads_only_analytics() {
        let actions: Vec<_> = PERMISSIONS
            .iter()
            .filter(|(_, roles)| roles.contains(&Analyst))
            .map(|(action, _)| *action)
            .collect();
        assert_eq!(actions, vec![Action::ReadAnalytics, Action::UseOwnAccount]);
    }
}
