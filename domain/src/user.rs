//! The user aggregate: one person's account, from invitation through acceptance to
//! deactivation, with its roles and the credentials it signs in with.
//!
//! The e-mail address, the name, the password hash and the TOTP secret enter this
//! aggregate only sealed under the user's data key. A user's audit history therefore
//! shows who changed roles and when, but no credential and no plaintext personal data.
//!
//! A user of an agency is stored under that agency. A platform operator belongs to no
//! agency and is stored under [`PLATFORM_AGENCY`], because every event needs a tenant.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ids::{AgencyId, UserId, PLATFORM_AGENCY};
use crate::role::{any_requires_mfa, normalize_roles, Role};
use crate::values::{parse_label, Sealed, ValueError};

const AGGREGATE: &str = "user";

/// Maximum length of an access token's label in characters.
pub const MAX_TOKEN_LABEL_CHARS: usize = 100;

/// Invites a person: creates the account, which they activate by choosing a password.
#[derive(Debug, Clone, PartialEq)]
pub struct InviteUser {
    /// Id of the new user.
    pub user_id: UserId,
    /// The user's agency, or `None` for a platform operator.
    pub agency_id: Option<AgencyId>,
    /// Sealed normalized e-mail address.
    pub email: Sealed,
    /// Sealed name, when the inviter gave one.
    pub name: Option<Sealed>,
    /// Roles, validated with [`normalize_roles`].
    pub roles: Vec<Role>,
    /// The user who sent the invitation; `None` when a command-line bootstrap did.
    pub invited_by: Option<UserId>,
    /// Time after which the invitation can no longer be accepted.
    pub invitation_expires_at: DateTime<Utc>,
    /// When the invitation is sent.
    pub at: DateTime<Utc>,
}

/// Accepts the invitation: sets the first password and, for roles that need it,
/// enrolls the TOTP secret in the same step.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptInvitation {
    /// Sealed PHC string of the password hash (never the password itself).
    pub password_hash: Sealed,
    /// Sealed TOTP secret. Required when a role needs multi-factor authentication.
    pub mfa_secret: Option<Sealed>,
    /// When the invitation is accepted.
    pub at: DateTime<Utc>,
}

/// Replaces the password of an active user.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePassword {
    /// Sealed PHC string of the new password hash.
    pub password_hash: Sealed,
    /// When the password changes.
    pub at: DateTime<Utc>,
}

/// Enrolls a TOTP secret for an active user who has none.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollMfa {
    /// Sealed TOTP secret.
    pub secret: Sealed,
    /// When the secret is enrolled.
    pub at: DateTime<Utc>,
}

/// Replaces the roles of a user who is not deactivated.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRoles {
    /// The new roles, validated with [`normalize_roles`].
    pub roles: Vec<Role>,
    /// The user who changes them; `None` for a command-line or system change.
    pub by: Option<UserId>,
    /// When the roles change.
    pub at: DateTime<Utc>,
}

/// Records that a personal access token was issued for the user, for an integration.
/// The token itself is stored only as a hash, outside the events.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueAccessToken {
    /// Id of the token's row in the access token table.
    pub token_id: Uuid,
    /// Purpose of the token, such as `Timesheet import`: 1 to 100 characters on one line.
    pub label: String,
    /// The user who issues it.
    pub by: Option<UserId>,
    /// When the token stops working; `None` for a token that works until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it is issued.
    pub at: DateTime<Utc>,
}

/// Deactivates the account for good: it can no longer sign in or be changed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeactivateUser {
    /// The user who deactivates it; `None` for a command-line or system change.
    pub by: Option<UserId>,
    /// When the account is deactivated.
    pub at: DateTime<Utc>,
}

/// Commands of the user aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// See [`InviteUser`].
    InviteUser(InviteUser),
    /// See [`AcceptInvitation`].
    AcceptInvitation(AcceptInvitation),
    /// See [`ChangePassword`].
    ChangePassword(ChangePassword),
    /// See [`EnrollMfa`].
    EnrollMfa(EnrollMfa),
    /// See [`ChangeRoles`].
    ChangeRoles(ChangeRoles),
    /// See [`IssueAccessToken`].
    IssueAccessToken(IssueAccessToken),
    /// See [`DeactivateUser`].
    DeactivateUser(DeactivateUser),
}

/// Events of the user aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The account was created by an invitation.
    UserInvited {
        /// Id of the user.
        user_id: UserId,
        /// The user's agency; `None` for a platform operator.
        agency_id: Option<AgencyId>,
        /// Sealed e-mail address.
        email: Sealed,
        /// Sealed name, if given.
        name: Option<Sealed>,
        /// Sorted roles without repeats.
        roles: Vec<Role>,
        /// The user who sent the invitation.
        invited_by: Option<UserId>,
        /// Time after which the invitation can no longer be accepted.
        invitation_expires_at: DateTime<Utc>,
        /// When the invitation was sent.
        at: DateTime<Utc>,
    },
    /// The user accepted the invitation and set a password; the account is active.
    InvitationAccepted {
        /// Sealed PHC string of the password hash.
        password_hash: Sealed,
        /// When it was accepted.
        at: DateTime<Utc>,
    },
    /// The password was replaced.
    PasswordChanged {
        /// Sealed PHC string of the new password hash.
        password_hash: Sealed,
        /// When it changed.
        at: DateTime<Utc>,
    },
    /// A TOTP secret was enrolled; every later sign-in needs a code.
    MfaEnrolled {
        /// Sealed TOTP secret.
        secret: Sealed,
        /// When it was enrolled.
        at: DateTime<Utc>,
    },
    /// The roles were replaced.
    RolesChanged {
        /// Roles before the change.
        previous: Vec<Role>,
        /// Roles after the change, sorted and without repeats.
        roles: Vec<Role>,
        /// The user who changed them.
        by: Option<UserId>,
        /// When they changed.
        at: DateTime<Utc>,
    },
    /// A personal access token was issued.
    AccessTokenIssued {
        /// Id of the token's row.
        token_id: Uuid,
        /// Trimmed label.
        label: String,
        /// The user who issued it.
        by: Option<UserId>,
        /// When it stops working, if ever.
        expires_at: Option<DateTime<Utc>>,
        /// When it was issued.
        at: DateTime<Utc>,
    },
    /// The account was deactivated.
    UserDeactivated {
        /// The user who deactivated it.
        by: Option<UserId>,
        /// When it was deactivated.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        let name = match self {
            UserEvent::UserInvited { .. } => "UserInvited",
            UserEvent::InvitationAccepted { .. } => "InvitationAccepted",
            UserEvent::PasswordChanged { .. } => "PasswordChanged",
            UserEvent::MfaEnrolled { .. } => "MfaEnrolled",
            UserEvent::RolesChanged { .. } => "RolesChanged",
            UserEvent::AccessTokenIssued { .. } => "AccessTokenIssued",
            UserEvent::UserDeactivated { .. } => "UserDeactivated",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Stage in the life of a user account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Invited; the invitation has not been accepted yet.
    Invited,
    /// The invitation was accepted; the user can sign in.
    Active,
    /// Deactivated for good.
    Deactivated,
}

impl UserStatus {
    /// Returns the status in snake case, as the account table stores it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::Active => "active",
            UserStatus::Deactivated => "deactivated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserState {
    user_id: UserId,
    agency_id: Option<AgencyId>,
    email: Sealed,
    name: Option<Sealed>,
    roles: Vec<Role>,
    status: UserStatus,
    invitation_expires_at: DateTime<Utc>,
    password_hash: Option<Sealed>,
    mfa_secret: Option<Sealed>,
}

/// A user account. Empty (`Default`) until `UserInvited` is applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    state: Option<UserState>,
}

impl User {
    /// Returns the id of the user, or `None` when the account does not exist.
    #[must_use]
    pub fn user_id(&self) -> Option<UserId> {
        self.state.as_ref().map(|s| s.user_id)
    }

    /// Returns the user's agency; `None` for a platform operator or a missing account.
    #[must_use]
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.state.as_ref().and_then(|s| s.agency_id)
    }

    /// Returns the agency the account's events are stored under: its own agency, or
    /// [`PLATFORM_AGENCY`] for a platform operator. `None` when the account does not exist.
    #[must_use]
    pub fn tenant_id(&self) -> Option<AgencyId> {
        self.state
            .as_ref()
            .map(|s| s.agency_id.unwrap_or(PLATFORM_AGENCY))
    }

    /// Returns the sealed e-mail address.
    #[must_use]
    pub fn email(&self) -> Option<&Sealed> {
        self.state.as_ref().map(|s| &s.email)
    }

    /// Returns the sealed name, if one was given.
    #[must_use]
    pub fn name(&self) -> Option<&Sealed> {
        self.state.as_ref().and_then(|s| s.name.as_ref())
    }

    /// Returns the roles, sorted and without repeats; empty when the account does not exist.
    #[must_use]
    pub fn roles(&self) -> &[Role] {
        self.state.as_ref().map_or(&[], |s| s.roles.as_slice())
    }

    /// Returns the account's status.
    #[must_use]
    pub fn status(&self) -> Option<UserStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// Returns the time after which the invitation can no longer be accepted.
    #[must_use]
    pub fn invitation_expires_at(&self) -> Option<DateTime<Utc>> {
        self.state.as_ref().map(|s| s.invitation_expires_at)
    }

    /// Returns the sealed password hash; `None` before the invitation is accepted.
    #[must_use]
    pub fn password_hash(&self) -> Option<&Sealed> {
        self.state.as_ref().and_then(|s| s.password_hash.as_ref())
    }

    /// Returns the sealed TOTP secret; `None` while no secret is enrolled.
    #[must_use]
    pub fn mfa_secret(&self) -> Option<&Sealed> {
        self.state.as_ref().and_then(|s| s.mfa_secret.as_ref())
    }

    /// Returns whether a TOTP secret is enrolled.
    #[must_use]
    pub fn mfa_enrolled(&self) -> bool {
        self.mfa_secret().is_some()
    }

    /// Returns whether one of the user's roles requires multi-factor authentication.
    #[must_use]
    pub fn requires_mfa(&self) -> bool {
        any_requires_mfa(self.roles())
    }

    fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, DomainError> {
        match command {
            UserCommand::InviteUser(invite) => self.invite(invite),
            UserCommand::AcceptInvitation(accept) => self.accept(accept),
            UserCommand::ChangePassword(change) => self.change_password(change),
            UserCommand::EnrollMfa(enroll) => self.enroll_mfa(enroll),
            UserCommand::ChangeRoles(change) => self.change_roles(change),
            UserCommand::IssueAccessToken(issue) => self.issue_access_token(issue),
            UserCommand::DeactivateUser(deactivate) => self.deactivate(deactivate),
        }
    }

    fn invite(&self, invite: InviteUser) -> Result<Vec<UserEvent>, DomainError> {
        if self.state.is_some() {
            return Err(DomainError::AlreadyExists {
                aggregate: AGGREGATE,
            });
        }
        if invite.agency_id == Some(PLATFORM_AGENCY) {
            return Err(ValueError::new(
                "agency_id",
                "is the nil UUID, which stands for the platform; leave the agency out for a \
                 platform operator",
            )
            .into());
        }
        let roles = normalize_roles(&invite.roles, invite.agency_id.is_none())?;
        if invite.invitation_expires_at <= invite.at {
            return Err(ValueError::new(
                "invitation_expires_at",
                "is not after the time of the invitation; give the invitation a future expiry",
            )
            .into());
        }

        Ok(vec![UserEvent::UserInvited {
            user_id: invite.user_id,
            agency_id: invite.agency_id,
            email: invite.email,
            name: invite.name,
            roles,
            invited_by: invite.invited_by,
            invitation_expires_at: invite.invitation_expires_at,
            at: invite.at,
        }])
    }

    fn accept(&self, accept: AcceptInvitation) -> Result<Vec<UserEvent>, DomainError> {
        let state = self.existing()?;
        match state.status {
            UserStatus::Deactivated => return Err(DomainError::UserDeactivated),
            UserStatus::Active => return Err(DomainError::InvitationAlreadyAccepted),
            UserStatus::Invited => {}
        }
        if accept.at >= state.invitation_expires_at {
            return Err(DomainError::InvitationExpired {
                expired_at: state.invitation_expires_at,
            });
        }
        if any_requires_mfa(&state.roles) && accept.mfa_secret.is_none() {
            return Err(ValueError::new(
                "totp_secret",
                "is required because one of the user's roles requires multi-factor \
                 authentication",
            )
            .into());
        }

        let mut events = vec![UserEvent::InvitationAccepted {
            password_hash: accept.password_hash,
            at: accept.at,
        }];
        if let Some(secret) = accept.mfa_secret {
            events.push(UserEvent::MfaEnrolled {
                secret,
                at: accept.at,
            });
        }
        Ok(events)
    }

    fn change_password(&self, change: ChangePassword) -> Result<Vec<UserEvent>, DomainError> {
        self.active("change the password")?;
        Ok(vec![UserEvent::PasswordChanged {
            password_hash: change.password_hash,
            at: change.at,
        }])
    }

    fn enroll_mfa(&self, enroll: EnrollMfa) -> Result<Vec<UserEvent>, DomainError> {
        let state = self.active("enroll multi-factor authentication")?;
        if state.mfa_secret.is_some() {
            return Err(DomainError::MfaAlreadyEnrolled);
        }
        Ok(vec![UserEvent::MfaEnrolled {
            secret: enroll.secret,
            at: enroll.at,
        }])
    }

    fn change_roles(&self, change: ChangeRoles) -> Result<Vec<UserEvent>, DomainError> {
        let state = self.not_deactivated()?;
        let roles = normalize_roles(&change.roles, state.agency_id.is_none())?;
        // The same roles again record nothing, so a retried request is quiet.
        if roles == state.roles {
            return Ok(vec![]);
        }
        Ok(vec![UserEvent::RolesChanged {
            previous: state.roles.clone(),
            roles,
            by: change.by,
            at: change.at,
        }])
    }

    fn issue_access_token(&self, issue: IssueAccessToken) -> Result<Vec<UserEvent>, DomainError> {
        self.not_deactivated()?;
        let label = parse_label("label", &issue.label, MAX_TOKEN_LABEL_CHARS)?;
        if issue
            .expires_at
            .is_some_and(|expires_at| expires_at <= issue.at)
        {
            return Err(ValueError::new(
                "expires_at",
                "is not in the future; give a later expiry or none",
            )
            .into());
        }
        Ok(vec![UserEvent::AccessTokenIssued {
            token_id: issue.token_id,
            label,
            by: issue.by,
            expires_at: issue.expires_at,
            at: issue.at,
        }])
    }

    fn deactivate(&self, deactivate: DeactivateUser) -> Result<Vec<UserEvent>, DomainError> {
        let state = self.existing()?;
        // Deactivating twice records nothing, so a retried request is quiet.
        if state.status == UserStatus::Deactivated {
            return Ok(vec![]);
        }
        Ok(vec![UserEvent::UserDeactivated {
            by: deactivate.by,
            at: deactivate.at,
        }])
    }

    fn existing(&self) -> Result<&UserState, DomainError> {
        self.state.as_ref().ok_or(DomainError::NotFound {
            aggregate: AGGREGATE,
        })
    }

    fn not_deactivated(&self) -> Result<&UserState, DomainError> {
        let state = self.existing()?;
        if state.status == UserStatus::Deactivated {
            return Err(DomainError::UserDeactivated);
        }
        Ok(state)
    }

    fn active(&self, action: &'static str) -> Result<&UserState, DomainError> {
        let state = self.not_deactivated()?;
        if state.status != UserStatus::Active {
            return Err(DomainError::InvalidTransition {
                aggregate: AGGREGATE,
                from: "invited and has not accepted the invitation".to_owned(),
                action,
            });
        }
        Ok(state)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = AGGREGATE;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        if let UserEvent::UserInvited {
            user_id,
            agency_id,
            email,
            name,
            roles,
            invited_by: _,
            invitation_expires_at,
            at: _,
        } = event
        {
            self.state = Some(UserState {
                user_id,
                agency_id,
                email,
                name,
                roles,
                status: UserStatus::Invited,
                invitation_expires_at,
                password_hash: None,
                mfa_secret: None,
            });
            return;
        }
        let Some(state) = self.state.as_mut() else {
            return;
        };
        match event {
            UserEvent::UserInvited { .. } | UserEvent::AccessTokenIssued { .. } => {}
            UserEvent::InvitationAccepted {
                password_hash,
                at: _,
            } => {
                state.status = UserStatus::Active;
                state.password_hash = Some(password_hash);
            }
            UserEvent::PasswordChanged {
                password_hash,
                at: _,
            } => state.password_hash = Some(password_hash),
            UserEvent::MfaEnrolled { secret, at: _ } => state.mfa_secret = Some(secret),
            UserEvent::RolesChanged { roles, .. } => state.roles = roles,
            UserEvent::UserDeactivated { .. } => state.status = UserStatus::Deactivated,
        }
    }
}

macro_rules! user_command_from {
    ($($command:ident),+) => {$(
        impl From<$command> for UserCommand {
            fn from(command: $command) -> Self {
                UserCommand::$command(command)
            }
        }
    )+};
}

user_command_from!(
    InviteUser,
    AcceptInvitation,
    ChangePassword,
    EnrollMfa,
    ChangeRoles,
    IssueAccessToken,
    DeactivateUser
);

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;

    use super::*;

    type UserTest = TestFramework<User>;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, hour, 0, 0).unwrap()
    }

    fn user_id() -> UserId {
        UserId(uuid::uuid!("0195a0b0-0000-7000-8000-0000000000b1"))
    }

    fn admin_id() -> UserId {
        UserId(uuid::uuid!("0195a0b0-0000-7000-8000-0000000000b2"))
    }

    fn agency_id() -> AgencyId {
        AgencyId(uuid::uuid!("0195a0b0-0000-7000-8000-0000000000a1"))
    }

    fn sealed(text: &str) -> Sealed {
        Sealed(format!("v1.{text}"))
    }

    fn invite(agency_id: Option<AgencyId>, roles: &[Role]) -> UserCommand {
        InviteUser {
            user_id: user_id(),
            agency_id,
            email: sealed("email"),
            name: Some(sealed("name")),
            roles: roles.to_vec(),
            invited_by: Some(admin_id()),
            invitation_expires_at: at(1) + Duration::hours(72),
            at: at(1),
        }
        .into()
    }

    fn invited(roles: &[Role]) -> UserEvent {
        UserEvent::UserInvited {
            user_id: user_id(),
            agency_id: Some(agency_id()),
            email: sealed("email"),
            name: Some(sealed("name")),
            roles: roles.to_vec(),
            invited_by: Some(admin_id()),
            invitation_expires_at: at(1) + Duration::hours(72),
            at: at(1),
        }
    }

    fn accepted() -> UserEvent {
        UserEvent::InvitationAccepted {
            password_hash: sealed("hash"),
            at: at(2),
        }
    }

    fn accept(mfa_secret: Option<Sealed>, when: DateTime<Utc>) -> UserCommand {
        AcceptInvitation {
            password_hash: sealed("hash"),
            mfa_secret,
            at: when,
        }
        .into()
    }

    fn deactivated() -> UserEvent {
        UserEvent::UserDeactivated {
            by: Some(admin_id()),
            at: at(5),
        }
    }

    fn recruiter_events() -> Vec<UserEvent> {
        vec![invited(&[Role::Recruiter]), accepted()]
    }

    #[tokio::test]
    async fn invite_user_normalizes_the_roles() {
        UserTest::with(())
            .given_no_previous_events()
            .when_async(invite(
                Some(agency_id()),
                &[Role::Recruiter, Role::Analyst, Role::Recruiter],
            ))
            .await
            .then_expect_events(vec![invited(&[Role::Recruiter, Role::Analyst])]);
    }

    #[tokio::test]
    async fn invite_user_twice_is_rejected() {
        UserTest::with(())
            .given(vec![invited(&[Role::Recruiter])])
            .when_async(invite(Some(agency_id()), &[Role::Recruiter]))
            .await
            .then_expect_error(DomainError::AlreadyExists { aggregate: "user" });
    }

    #[tokio::test]
    async fn invite_user_without_roles_is_rejected() {
        let error = UserTest::with(())
            .given_no_previous_events()
            .when_async(invite(Some(agency_id()), &[]))
            .await
            .inspect_result()
            .unwrap_err();

        assert_eq!(error.code(), "invalid_value");
    }

    #[tokio::test]
    async fn invite_agency_user_as_platform_operator_is_rejected() {
        let error = UserTest::with(())
            .given_no_previous_events()
            .when_async(invite(
                Some(agency_id()),
                &[Role::AgencyAdmin, Role::PlatformOperator],
            ))
            .await
            .inspect_result()
            .unwrap_err();

        let DomainError::Invalid(value_error) = error else {
            panic!("expected an invalid value, got {error:?}");
        };
        assert_eq!(value_error.field, "roles");
    }

    #[tokio::test]
    async fn invite_platform_user_with_agency_role_is_rejected() {
        let error = UserTest::with(())
            .given_no_previous_events()
            .when_async(invite(None, &[Role::Recruiter]))
            .await
            .inspect_result()
            .unwrap_err();

        assert_eq!(error.code(), "invalid_value");
    }

    #[tokio::test]
    async fn invite_with_platform_agency_id_is_rejected() {
        let error = UserTest::with(())
            .given_no_previous_events()
            .when_async(invite(Some(PLATFORM_AGENCY), &[Role::Recruiter]))
            .await
            .inspect_result()
            .unwrap_err();

        let DomainError::Invalid(value_error) = error else {
            panic!("expected an invalid value, got {error:?}");
        };
        assert_eq!(value_error.field, "agency_id");
    }

    #[tokio::test]
    async fn invite_with_past_expiry_is_rejected() {
        let command = InviteUser {
            user_id: user_id(),
            agency_id: Some(agency_id()),
            email: sealed("email"),
            name: None,
            roles: vec![Role::Recruiter],
            invited_by: None,
            invitation_expires_at: at(1),
            at: at(1),
        };

        let error = UserTest::with(())
            .given_no_previous_events()
            .when_async(command.into())
            .await
            .inspect_result()
            .unwrap_err();

        let DomainError::Invalid(value_error) = error else {
            panic!("expected an invalid value, got {error:?}");
        };
        assert_eq!(value_error.field, "invitation_expires_at");
    }

    #[test]
    fn platform_operator_is_stored_under_the_platform_agency() {
        let mut user = User::default();
        user.apply(UserEvent::UserInvited {
            user_id: user_id(),
            agency_id: None,
            email: sealed("email"),
            name: None,
            roles: vec![Role::PlatformOperator],
            invited_by: None,
            invitation_expires_at: at(3),
            at: at(1),
        });

        assert_eq!(user.agency_id(), None);
        assert_eq!(user.tenant_id(), Some(PLATFORM_AGENCY));
        assert!(user.requires_mfa());
    }

    #[tokio::test]
    async fn accept_invitation_activates_the_account() {
        UserTest::with(())
            .given(vec![invited(&[Role::Recruiter])])
            .when_async(accept(None, at(2)))
            .await
            .then_expect_events(vec![accepted()]);
    }

    #[tokio::test]
    async fn accept_invitation_with_mfa_role_enrolls_the_secret() {
        UserTest::with(())
            .given(vec![invited(&[Role::AgencyAdmin])])
            .when_async(accept(Some(sealed("secret")), at(2)))
            .await
            .then_expect_events(vec![
                accepted(),
                UserEvent::MfaEnrolled {
                    secret: sealed("secret"),
                    at: at(2),
                },
            ]);
    }

    #[tokio::test]
    async fn accept_invitation_with_mfa_role_needs_a_secret() {
        let error = UserTest::with(())
            .given(vec![invited(&[Role::PayoutApprover])])
            .when_async(accept(None, at(2)))
            .await
            .inspect_result()
            .unwrap_err();

        let DomainError::Invalid(value_error) = error else {
            panic!("expected an invalid value, got {error:?}");
        };
        assert_eq!(value_error.field, "totp_secret");
    }

    #[tokio::test]
    async fn accept_invitation_after_expiry_is_rejected() {
        UserTest::with(())
            .given(vec![invited(&[Role::Recruiter])])
            .when_async(accept(None, at(1) + Duration::hours(72)))
            .await
            .then_expect_error(DomainError::InvitationExpired {
                expired_at: at(1) + Duration::hours(72),
            });
    }

    #[tokio::test]
    async fn accept_invitation_twice_is_rejected() {
        UserTest::with(())
            .given(recruiter_events())
            .when_async(accept(None, at(3)))
            .await
            .then_expect_error(DomainError::InvitationAlreadyAccepted);
    }

    #[tokio::test]
    async fn accept_invitation_of_deactivated_user_is_rejected() {
        UserTest::with(())
            .given(vec![invited(&[Role::Recruiter]), deactivated()])
            .when_async(accept(None, at(6)))
            .await
            .then_expect_error(DomainError::UserDeactivated);
    }

    #[tokio::test]
    async fn accept_invitation_of_unknown_user_is_not_found() {
        UserTest::with(())
            .given_no_previous_events()
            .when_async(accept(None, at(2)))
            .await
            .then_expect_error(DomainError::NotFound { aggregate: "user" });
    }

    #[tokio::test]
    async fn change_password_records_the_new_hash() {
        UserTest::with(())
            .given(recruiter_events())
            .when_async(
                ChangePassword {
                    password_hash: sealed("new-hash"),
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![UserEvent::PasswordChanged {
                password_hash: sealed("new-hash"),
                at: at(3),
            }]);
    }

    #[tokio::test]
    async fn change_password_before_acceptance_is_rejected() {
        let error = UserTest::with(())
            .given(vec![invited(&[Role::Recruiter])])
            .when_async(
                ChangePassword {
                    password_hash: sealed("new-hash"),
                    at: at(3),
                }
                .into(),
            )
            .await
            .inspect_result()
            .unwrap_err();

        assert_eq!(error.code(), "invalid_transition");
    }

    #[tokio::test]
    async fn enroll_mfa_for_active_user_records_the_secret() {
        UserTest::with(())
            .given(recruiter_events())
            .when_async(
                EnrollMfa {
                    secret: sealed("secret"),
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![UserEvent::MfaEnrolled {
                secret: sealed("secret"),
                at: at(3),
            }]);
    }

    #[tokio::test]
    async fn enroll_mfa_twice_is_rejected() {
        let mut events = recruiter_events();
        events.push(UserEvent::MfaEnrolled {
            secret: sealed("secret"),
            at: at(3),
        });

        UserTest::with(())
            .given(events)
            .when_async(
                EnrollMfa {
                    secret: sealed("other"),
                    at: at(4),
                }
                .into(),
            )
            .await
            .then_expect_error(DomainError::MfaAlreadyEnrolled);
    }

    #[tokio::test]
    async fn enroll_mfa_for_deactivated_user_is_rejected() {
        let mut events = recruiter_events();
        events.push(deactivated());

        UserTest::with(())
            .given(events)
            .when_async(
                EnrollMfa {
                    secret: sealed("secret"),
                    at: at(6),
                }
                .into(),
            )
            .await
            .then_expect_error(DomainError::UserDeactivated);
    }

    #[tokio::test]
    async fn change_roles_records_previous_and_new_roles() {
        UserTest::with(())
            .given(recruiter_events())
            .when_async(
                ChangeRoles {
                    roles: vec![Role::PayoutApprover, Role::Recruiter],
                    by: Some(admin_id()),
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![UserEvent::RolesChanged {
                previous: vec![Role::Recruiter],
                roles: vec![Role::Recruiter, Role::PayoutApprover],
                by: Some(admin_id()),
                at: at(3),
            }]);
    }

    #[tokio::test]
    async fn change_roles_to_same_roles_records_nothing() {
        UserTest::with(())
            .given(recruiter_events())
            .when_async(
                ChangeRoles {
                    roles: vec![Role::Recruiter, Role::Recruiter],
                    by: Some(admin_id()),
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn change_roles_to_platform_role_is_rejected() {
        let error = UserTest::with(())
            .given(recruiter_events())
            .when_async(
                ChangeRoles {
                    roles: vec![Role::PlatformOperator],
                    by: Some(admin_id()),
                    at: at(3),
                }
                .into(),
            )
            .await
            .inspect_result()
            .unwrap_err();

        assert_eq!(error.code(), "invalid_value");
    }

    #[tokio::test]
    async fn change_roles_of_deactivated_user_is_rejected() {
        let mut events = recruiter_events();
        events.push(deactivated());

        UserTest::with(())
            .given(events)
            .when_async(
                ChangeRoles {
                    roles: vec![Role::Analyst],
                    by: Some(admin_id()),
                    at: at(6),
                }
                .into(),
            )
            .await
            .then_expect_error(DomainError::UserDeactivated);
    }

    #[tokio::test]
    async fn issue_access_token_records_the_label() {
        let token_id = Uuid::now_v7();

        UserTest::with(())
            .given(recruiter_events())
            .when_async(
                IssueAccessToken {
                    token_id,
                    label: " Timesheet import ".to_owned(),
                    by: Some(admin_id()),
                    expires_at: None,
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![UserEvent::AccessTokenIssued {
                token_id,
                label: "Timesheet import".to_owned(),
                by: Some(admin_id()),
                expires_at: None,
                at: at(3),
            }]);
    }

    #[tokio::test]
    async fn issue_access_token_with_past_expiry_is_rejected() {
        let error = UserTest::with(())
            .given(recruiter_events())
            .when_async(
                IssueAccessToken {
                    token_id: Uuid::now_v7(),
                    label: "Timesheet import".to_owned(),
                    by: Some(admin_id()),
                    expires_at: Some(at(2)),
                    at: at(3),
                }
                .into(),
            )
            .await
            .inspect_result()
            .unwrap_err();

        let DomainError::Invalid(value_error) = error else {
            panic!("expected an invalid value, got {error:?}");
        };
        assert_eq!(value_error.field, "expires_at");
    }

    #[tokio::test]
    async fn issue_access_token_for_deactivated_user_is_rejected() {
        UserTest::with(())
            .given(vec![invited(&[Role::Recruiter]), deactivated()])
            .when_async(
                IssueAccessToken {
                    token_id: Uuid::now_v7(),
                    label: "Timesheet import".to_owned(),
                    by: Some(admin_id()),
                    expires_at: None,
                    at: at(6),
                }
                .into(),
            )
            .await
            .then_expect_error(DomainError::UserDeactivated);
    }

    #[tokio::test]
    async fn deactivate_user_records_who_did_it() {
        UserTest::with(())
            .given(recruiter_events())
            .when_async(
                DeactivateUser {
                    by: Some(admin_id()),
                    at: at(5),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![deactivated()]);
    }

    #[tokio::test]
    async fn deactivate_user_again_records_nothing() {
        let mut events = recruiter_events();
        events.push(deactivated());

        UserTest::with(())
            .given(events)
            .when_async(
                DeactivateUser {
                    by: Some(admin_id()),
                    at: at(6),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![]);
    }

    #[test]
    fn applied_events_update_status_roles_and_credentials() {
        let mut user = User::default();
        for event in recruiter_events() {
            user.apply(event);
        }
        assert_eq!(user.status(), Some(UserStatus::Active));
        assert_eq!(user.password_hash(), Some(&sealed("hash")));
        assert!(!user.mfa_enrolled());

        user.apply(UserEvent::RolesChanged {
            previous: vec![Role::Recruiter],
            roles: vec![Role::AgencyAdmin],
            by: None,
            at: at(3),
        });
        assert_eq!(user.roles(), [Role::AgencyAdmin]);
        assert!(user.requires_mfa());

        user.apply(deactivated());
        assert_eq!(user.status(), Some(UserStatus::Deactivated));
    }
}
