//! User accounts: agencies and their first admin, invitations, passwords, TOTP,
//! sessions, personal access tokens, roles and deactivation.
//!
//! The user's events are the record of an account. Authentication reads the tables
//! beside them instead, so that each request costs one indexed query:
//! * `user_logins` maps the keyed hash of an e-mail address to its user;
//! * `user_accounts` stores each user's agency, roles, status and MFA flag, rewritten from
//!   the aggregate after every command;
//! * `invitations`, `sessions` and `access_tokens` hold SHA-256 hashes of tokens, never
//!   the tokens;
//! * `login_failures`, `totp_last_steps` and `user_activity` hold rate limits, used TOTP
//!   steps and last activity.
//!
//! Nothing here logs or returns an e-mail address, a password, a token or a secret,
//! except the one response that hands a new token or secret to its owner.

mod error;
mod login;
pub mod password;
pub mod rate_limit;
mod tokens;
pub mod totp;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use referrals_domain::agency::{Agency, AgencyCommand, CreateAgency};
use referrals_domain::ids::{AgencyId, UserId, PLATFORM_AGENCY};
use referrals_domain::role::{any_requires_mfa, normalize_roles, Role};
use referrals_domain::user::{
    AcceptInvitation, ChangeRoles, DeactivateUser, EnrollMfa, InviteUser, IssueAccessToken, User,
    UserCommand,
};
use referrals_domain::values::{EmailAddress, PersonName, Sealed};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto::{keyed_hash, open_field, seal_field, ContactKind, Field};
use crate::event_store::{Actor, AggregateStore, CommandMetadata, Executed};
use crate::keys::KeyVault;

pub use error::{AccountError, SecretText};
pub use login::{AuthError, Caller, Credential, LoginError, Session};
pub use tokens::TokenKind;

/// How long an invitation can be accepted: 72 hours.
pub const INVITATION_LIFETIME_HOURS: i64 = 72;
/// How long a session lasts after sign-in: 12 hours.
pub const SESSION_LIFETIME_HOURS: i64 = 12;
/// The actor role recorded when users act on their own account, such as accepting
/// their invitation or enrolling MFA: they act as the account's owner, not in a role.
pub const OWN_ACCOUNT_ROLE: &str = "self";
/// Minimum age of an e-mail reservation that another invitation may take over when no
/// account was created for it, because the inviting process failed.
const STALE_RESERVATION_MINUTES: i64 = 10;

/// A new agency and the invitation of its first admin.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedAgency {
    /// Id of the agency.
    pub agency_id: AgencyId,
    /// Id of the invited admin.
    pub admin_user_id: UserId,
    /// One-time invitation token for the admin.
    pub invite_token: SecretText,
    /// When the invitation expires.
    pub invitation_expires_at: DateTime<Utc>,
}

/// An invited user and the token that accepts the invitation.
#[derive(Debug, Clone, Serialize)]
pub struct InvitedUser {
    /// Id of the user.
    pub user_id: UserId,
    /// One-time invitation token.
    pub invite_token: SecretText,
    /// When the invitation expires.
    pub invitation_expires_at: DateTime<Utc>,
}

/// An accepted invitation.
#[derive(Debug, Clone, Serialize)]
pub struct AcceptedInvitation {
    /// Id of the now active user.
    pub user_id: UserId,
    /// The enrolled TOTP secret in base32, when a role requires MFA. Shown only here.
    pub totp_secret: Option<SecretText>,
}

/// A newly issued personal access token.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedAccessToken {
    /// Id of the token, for listing and revoking it.
    pub token_id: Uuid,
    /// The bearer token. Shown only here.
    pub token: SecretText,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The account use cases, over the user and agency stores and the account tables.
pub struct Accounts {
    pool: PgPool,
    vault: Arc<KeyVault>,
    /// User accounts.
    pub users: AggregateStore<User>,
    /// Agencies.
    pub agencies: AggregateStore<Agency>,
}

impl Accounts {
    /// Wires the account use cases over a pool and the key vault that seals personal data.
    pub fn new(pool: PgPool, vault: Arc<KeyVault>) -> Self {
        Self {
            users: AggregateStore::new(pool.clone(), ()),
            agencies: AggregateStore::new(pool.clone(), ()),
            pool,
            vault,
        }
    }

    /// Returns the connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates an agency and invites its first `agency_admin`.
    ///
    /// `metadata` names the actor, a platform operator or a command-line job. Its agency
    /// is ignored, because the events of the new agency and its admin are stored under
    /// the new agency.
    ///
    /// # Errors
    /// [`AccountError::EmailTaken`] when the address already has an account (no agency is
    /// created then), [`AccountError::Domain`] for an invalid name.
    pub async fn create_agency(
        &self,
        metadata: &CommandMetadata,
        name: &str,
        admin_email: &EmailAddress,
        admin_name: Option<&PersonName>,
    ) -> Result<CreatedAgency, AccountError> {
        let agency_id = AgencyId::new();
        let agency_metadata = in_tenant(metadata, agency_id);
        let admin_id = UserId::new();
        let email_key = self.email_key(admin_email.as_str()).await?;
        self.reserve_login(&email_key, admin_id).await?;

        let command = AgencyCommand::CreateAgency(CreateAgency {
            agency_id,
            name: name.to_owned(),
            at: agency_metadata.recorded_at,
        });
        if let Err(error) = self
            .agencies
            .execute(&agency_id.to_string(), command, &agency_metadata, None)
            .await
        {
            self.release_login(&email_key, admin_id).await;
            return Err(error.into());
        }
        tracing::info!(%agency_id, "agency created");

        let invited = self
            .invite_reserved(
                &agency_metadata,
                admin_id,
                &email_key,
                admin_email,
                admin_name,
                &[Role::AgencyAdmin],
            )
            .await?;
        Ok(CreatedAgency {
            agency_id,
            admin_user_id: invited.user_id,
            invite_token: invited.invite_token,
            invitation_expires_at: invited.invitation_expires_at,
        })
    }

    /// Invites a platform operator, who belongs to no agency.
    ///
    /// # Errors
    /// [`AccountError::EmailTaken`] when the address already has an account.
    pub async fn create_operator(
        &self,
        metadata: &CommandMetadata,
        email: &EmailAddress,
    ) -> Result<InvitedUser, AccountError> {
        let platform_metadata = in_tenant(metadata, PLATFORM_AGENCY);
        self.invite_user(&platform_metadata, email, None, &[Role::PlatformOperator])
            .await
    }

    /// Invites a user into the agency of `metadata` (or the platform, for
    /// [`PLATFORM_AGENCY`]). The invitation can be accepted once, within
    /// [`INVITATION_LIFETIME_HOURS`].
    ///
    /// # Errors
    /// [`AccountError::EmailTaken`] when the address already has an account, and
    /// [`AccountError::Domain`] for invalid roles (none, or agency and platform mixed).
    pub async fn invite_user(
        &self,
        metadata: &CommandMetadata,
        email: &EmailAddress,
        name: Option<&PersonName>,
        roles: &[Role],
    ) -> Result<InvitedUser, AccountError> {
        // Checked before the address is reserved, so an invalid request leaves no trace.
        normalize_roles(roles, metadata.agency_id == PLATFORM_AGENCY)?;
        let user_id = UserId::new();
        let email_key = self.email_key(email.as_str()).await?;
        self.reserve_login(&email_key, user_id).await?;

        self.invite_reserved(metadata, user_id, &email_key, email, name, roles)
            .await
    }

    /// Accepts an invitation: sets the password and, when a role requires MFA, enrolls a
    /// new TOTP secret, which is returned to be added to an authenticator app.
    ///
    /// # Errors
    /// [`AccountError::InvalidInvitation`] for an unknown token, [`AccountError::Domain`]
    /// for a password outside 12 to 256 characters, an expired invitation
    /// ([`DomainError::InvitationExpired`](referrals_domain::DomainError::InvitationExpired)),
    /// one accepted before, or a deactivated user.
    pub async fn accept_invitation(
        &self,
        invite_token: &str,
        password: &str,
    ) -> Result<AcceptedInvitation, AccountError> {
        password::check_password_rules(password)?;
        let row: Option<(Uuid, Option<DateTime<Utc>>, Option<Uuid>)> = sqlx::query_as(
            "SELECT i.user_id, i.used_at, a.agency_id
               FROM invitations i JOIN user_accounts a ON a.user_id = i.user_id
              WHERE i.token_hash = $1",
        )
        .bind(tokens::hash(invite_token))
        .fetch_optional(&self.pool)
        .await?;
        let Some((user_id, used_at, agency_id)) = row else {
            return Err(AccountError::InvalidInvitation);
        };
        if used_at.is_some() {
            return Err(referrals_domain::DomainError::InvitationAlreadyAccepted.into());
        }
        let user_id = UserId(user_id);
        let tenant = agency_id.map_or(PLATFORM_AGENCY, AgencyId);
        let (user, _) = self.load_user(tenant, user_id).await?;

        let password_hash = password::hash_password(password).await?;
        let password_hash = self
            .seal(tenant, user_id, Field::PasswordHash, &password_hash)
            .await?;
        let totp_secret = any_requires_mfa(user.roles()).then(totp::generate_secret);
        let mfa_secret = match &totp_secret {
            Some(secret) => Some(
                self.seal(tenant, user_id, Field::TotpSecret, secret)
                    .await?,
            ),
            None => None,
        };

        let metadata = CommandMetadata::new(
            tenant,
            Actor::User {
                id: user_id,
                role: OWN_ACCOUNT_ROLE.to_owned(),
            },
        );
        let command = UserCommand::AcceptInvitation(AcceptInvitation {
            password_hash,
            mfa_secret,
            at: metadata.recorded_at,
        });
        let executed = self.execute_user(&metadata, user_id, command).await?;

        let mut transaction = self.pool.begin().await?;
        sync_account(&mut transaction, &executed).await?;
        sqlx::query("UPDATE invitations SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id.0)
            .bind(metadata.recorded_at)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        tracing::info!(%user_id, agency_id = %tenant, "invitation accepted");

        Ok(AcceptedInvitation {
            user_id,
            totp_secret: totp_secret.map(SecretText::new),
        })
    }

    /// Enrolls a new TOTP secret for an active user who has none, and returns it in
    /// base32. Every later sign-in needs a code.
    ///
    /// # Errors
    /// [`AccountError::Domain`] with
    /// [`DomainError::MfaAlreadyEnrolled`](referrals_domain::DomainError::MfaAlreadyEnrolled)
    /// when a secret is enrolled, or for a user who is not active; [`AccountError::NotFound`]
    /// for a user outside the agency of `metadata`.
    pub async fn enroll_mfa(
        &self,
        metadata: &CommandMetadata,
        user_id: UserId,
    ) -> Result<SecretText, AccountError> {
        // Loaded first so that no data key is created for a user of another agency.
        self.load_user(metadata.agency_id, user_id).await?;
        let secret = totp::generate_secret();
        let sealed = self
            .seal(metadata.agency_id, user_id, Field::TotpSecret, &secret)
            .await?;
        let command = UserCommand::EnrollMfa(EnrollMfa {
            secret: sealed,
            at: metadata.recorded_at,
        });
        let executed = self.execute_user(metadata, user_id, command).await?;

        let mut connection = self.pool.acquire().await?;
        sync_account(&mut connection, &executed).await?;
        tracing::info!(%user_id, "multi-factor authentication enrolled");
        Ok(SecretText::new(secret))
    }

    /// Replaces a user's roles. Takes effect on the user's next request, in every
    /// session. The same roles again change nothing and record no event.
    ///
    /// # Errors
    /// [`AccountError::Domain`] for invalid roles or a deactivated user, and
    /// [`AccountError::NotFound`] for a user outside the agency of `metadata`.
    pub async fn change_roles(
        &self,
        metadata: &CommandMetadata,
        user_id: UserId,
        roles: &[Role],
        expected_version: Option<usize>,
    ) -> Result<Vec<Role>, AccountError> {
        let command = UserCommand::ChangeRoles(ChangeRoles {
            roles: roles.to_vec(),
            by: acting_user(metadata),
            at: metadata.recorded_at,
        });
        let executed = self
            .execute_user_at(metadata, user_id, command, expected_version)
            .await?;

        // Written even when no event was recorded, so a retry repairs a row that an
        // earlier attempt failed to write after its event committed.
        let mut connection = self.pool.acquire().await?;
        sync_account(&mut connection, &executed).await?;
        if !executed.events.is_empty() {
            tracing::info!(%user_id, "roles changed");
        }
        Ok(executed.aggregate.roles().to_vec())
    }

    /// Deactivates a user and revokes every session and access token of theirs. Requests
    /// with them fail from the next one on. Deactivating again changes nothing.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] for a user outside the agency of `metadata`.
    pub async fn deactivate_user(
        &self,
        metadata: &CommandMetadata,
        user_id: UserId,
        expected_version: Option<usize>,
    ) -> Result<(), AccountError> {
        let command = UserCommand::DeactivateUser(DeactivateUser {
            by: acting_user(metadata),
            at: metadata.recorded_at,
        });
        let executed = self
            .execute_user_at(metadata, user_id, command, expected_version)
            .await?;

        // As in `change_roles`, this runs on every call, so a retry completes the
        // revocation if an earlier attempt failed after the event committed.
        let mut transaction = self.pool.begin().await?;
        sync_account(&mut transaction, &executed).await?;
        for table in ["sessions", "access_tokens"] {
            sqlx::query(&format!(
                "UPDATE {table} SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL"
            ))
            .bind(user_id.0)
            .bind(metadata.recorded_at)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        tracing::info!(%user_id, "user deactivated; sessions and access tokens revoked");
        Ok(())
    }

    /// Issues a personal access token for a user of the agency of `metadata`, for an
    /// integration. The token acts with the user's roles, without MFA, until it expires
    /// or the user is deactivated.
    ///
    /// # Errors
    /// [`AccountError::Domain`] for an invalid label or expiry or a deactivated user, and
    /// [`AccountError::NotFound`] for a user outside the agency.
    pub async fn issue_access_token(
        &self,
        metadata: &CommandMetadata,
        user_id: UserId,
        label: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedAccessToken, AccountError> {
        let token_id = Uuid::now_v7();
        let command = UserCommand::IssueAccessToken(IssueAccessToken {
            token_id,
            label: label.to_owned(),
            by: acting_user(metadata),
            expires_at,
            at: metadata.recorded_at,
        });
        // The event commits before the token row exists, so no token ever works without
        // its issue in the user's history.
        let executed = self.execute_user(metadata, user_id, command).await?;

        let token = tokens::generate(TokenKind::AccessToken);
        let mut transaction = self.pool.begin().await?;
        sync_account(&mut transaction, &executed).await?;
        sqlx::query(
            "INSERT INTO access_tokens (id, user_id, token_hash, label, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_id)
        .bind(user_id.0)
        .bind(&token.hash)
        .bind(label.trim())
        .bind(acting_user(metadata).map(|id| id.0))
        .bind(metadata.recorded_at)
        .bind(expires_at)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        tracing::info!(%user_id, %token_id, "personal access token issued");

        Ok(IssuedAccessToken {
            token_id,
            token: SecretText::new(token.text),
            expires_at,
        })
    }

    /// Loads a user of `tenant` (an agency, or [`PLATFORM_AGENCY`] for operators).
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when the user does not exist in that tenant.
    pub async fn load_user(
        &self,
        tenant: AgencyId,
        user_id: UserId,
    ) -> Result<(User, usize), AccountError> {
        self.users
            .load(tenant, &user_id.to_string())
            .await?
            .ok_or(AccountError::NotFound("user"))
    }

    /// Seals the address and name, records the invitation, and stores the account row and
    /// the hash of a new invitation token. The address must already be reserved for
    /// `user_id`; the reservation is released if the invitation is rejected.
    async fn invite_reserved(
        &self,
        metadata: &CommandMetadata,
        user_id: UserId,
        email_key: &str,
        email: &EmailAddress,
        name: Option<&PersonName>,
        roles: &[Role],
    ) -> Result<InvitedUser, AccountError> {
        let tenant = metadata.agency_id;
        let invited = async {
            let sealed_email = self
                .seal(tenant, user_id, Field::Email, email.as_str())
                .await?;
            let sealed_name = match name {
                Some(name) => Some(
                    self.seal(tenant, user_id, Field::Name, name.as_str())
                        .await?,
                ),
                None => None,
            };
            let expires_at = metadata.recorded_at + Duration::hours(INVITATION_LIFETIME_HOURS);
            let command = UserCommand::InviteUser(InviteUser {
                user_id,
                agency_id: (tenant != PLATFORM_AGENCY).then_some(tenant),
                email: sealed_email,
                name: sealed_name,
                roles: roles.to_vec(),
                invited_by: acting_user(metadata),
                invitation_expires_at: expires_at,
                at: metadata.recorded_at,
            });
            self.execute_user(metadata, user_id, command).await
        }
        .await;
        let executed = match invited {
            Ok(executed) => executed,
            Err(error) => {
                self.release_login(email_key, user_id).await;
                return Err(error);
            }
        };
        let expires_at = executed
            .aggregate
            .invitation_expires_at()
            .ok_or_else(|| AccountError::Internal("invited user has no expiry".to_owned()))?;

        // NOTE: if this transaction fails, the user exists without an account row or
        // invitation. The address stays reserved for STALE_RESERVATION_MINUTES; after
        // that, inviting the address again creates a new user.
        let token = tokens::generate(TokenKind::Invitation);
        let mut transaction = self.pool.begin().await?;
        sync_account(&mut transaction, &executed).await?;
        sqlx::query(
            "INSERT INTO invitations (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(&token.hash)
        .bind(user_id.0)
        .bind(expires_at)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        tracing::info!(%user_id, agency_id = %tenant, "user invited");

        Ok(InvitedUser {
            user_id,
            invite_token: SecretText::new(token.text),
            invitation_expires_at: expires_at,
        })
    }

    async fn execute_user(
        &self,
        metadata: &CommandMetadata,
        user_id: UserId,
        command: UserCommand,
    ) -> Result<Executed<User>, AccountError> {
        self.execute_user_at(metadata, user_id, command, None).await
    }

    /// Executes a user command, only if the user is still at `expected_version` when one
    /// is given (an HTTP `If-Match`).
    async fn execute_user_at(
        &self,
        metadata: &CommandMetadata,
        user_id: UserId,
        command: UserCommand,
        expected_version: Option<usize>,
    ) -> Result<Executed<User>, AccountError> {
        Ok(self
            .users
            .execute(&user_id.to_string(), command, metadata, expected_version)
            .await?)
    }

    /// Computes the login index key of an address: its keyed hash under the platform key.
    async fn email_key(&self, normalized_email: &str) -> Result<String, AccountError> {
        let key = self.vault.agency_key(PLATFORM_AGENCY).await?;
        Ok(keyed_hash(&key, ContactKind::Email, normalized_email).0)
    }

    /// Reserves an address for `user_id` in the login index, taking it over from a
    /// deactivated user or from a reservation whose invitation never completed.
    async fn reserve_login(&self, email_key: &str, user_id: UserId) -> Result<(), AccountError> {
        let reserved: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO user_logins (email_key, user_id) VALUES ($1, $2)
             ON CONFLICT (email_key) DO UPDATE
                SET user_id = EXCLUDED.user_id, created_at = now()
              WHERE EXISTS (SELECT 1 FROM user_accounts a
                             WHERE a.user_id = user_logins.user_id AND a.status = 'deactivated')
                 OR (NOT EXISTS (SELECT 1 FROM user_accounts a WHERE a.user_id = user_logins.user_id)
                     AND user_logins.created_at < now() - make_interval(mins => $3))
             RETURNING user_id",
        )
        .bind(email_key)
        .bind(user_id.0)
        .bind(i32::try_from(STALE_RESERVATION_MINUTES).unwrap_or(i32::MAX))
        .fetch_optional(&self.pool)
        .await?;
        match reserved {
            Some(_) => Ok(()),
            None => Err(AccountError::EmailTaken),
        }
    }

    /// Releases a reservation after its invitation was rejected. A failure here is only
    /// logged: the reservation then expires after STALE_RESERVATION_MINUTES.
    async fn release_login(&self, email_key: &str, user_id: UserId) {
        let released = sqlx::query("DELETE FROM user_logins WHERE email_key = $1 AND user_id = $2")
            .bind(email_key)
            .bind(user_id.0)
            .execute(&self.pool)
            .await;
        if let Err(error) = released {
            tracing::warn!(%user_id, %error, "releasing an e-mail reservation failed");
        }
    }

    async fn seal(
        &self,
        tenant: AgencyId,
        user_id: UserId,
        field: Field,
        plaintext: &str,
    ) -> Result<Sealed, AccountError> {
        let key = self.vault.data_key_or_create(tenant, user_id.0).await?;
        Ok(seal_field(&key, tenant, user_id.0, field, plaintext))
    }

    async fn open(
        &self,
        tenant: AgencyId,
        user_id: UserId,
        field: Field,
        sealed: &Sealed,
    ) -> Result<Zeroizing<String>, AccountError> {
        let key = self.vault.data_key(tenant, user_id.0).await?;
        Ok(Zeroizing::new(open_field(
            &key, tenant, user_id.0, field, sealed,
        )?))
    }
}

/// Copies `metadata` into another tenant, keeping actor, time and correlation.
fn in_tenant(metadata: &CommandMetadata, agency_id: AgencyId) -> CommandMetadata {
    CommandMetadata {
        agency_id,
        ..metadata.clone()
    }
}

/// Returns the user who issued a command, or `None` for a job.
fn acting_user(metadata: &CommandMetadata) -> Option<UserId> {
    match &metadata.actor {
        Actor::User { id, .. } => Some(*id),
        Actor::System { .. } => None,
    }
}

/// Writes the account row from the aggregate's state. A row of a later version is kept.
async fn sync_account(
    connection: &mut PgConnection,
    executed: &Executed<User>,
) -> Result<(), AccountError> {
    let user = &executed.aggregate;
    let (Some(user_id), Some(status)) = (user.user_id(), user.status()) else {
        return Err(AccountError::Internal(
            "cannot store the account row of a user without events".to_owned(),
        ));
    };
    let roles: Vec<&str> = user.roles().iter().map(|role| role.as_str()).collect();
    sqlx::query(
        "INSERT INTO user_accounts (user_id, agency_id, roles, status, mfa_enrolled, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, now())
         ON CONFLICT (user_id) DO UPDATE
            SET agency_id = EXCLUDED.agency_id, roles = EXCLUDED.roles, status = EXCLUDED.status,
                mfa_enrolled = EXCLUDED.mfa_enrolled, version = EXCLUDED.version,
                updated_at = EXCLUDED.updated_at
          WHERE user_accounts.version <= EXCLUDED.version",
    )
    .bind(user_id.0)
    .bind(user.agency_id().map(|id| id.0))
    .bind(&roles)
    .bind(status.as_str())
    .bind(user.mfa_enrolled())
    .bind(i64::try_from(executed.version).unwrap_or(i64::MAX))
    .execute(connection)
    .await?;
    Ok(())
}
