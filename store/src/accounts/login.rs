//! Sign-in, sign-out and the authentication of bearer tokens on every request.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use referrals_domain::ids::{AgencyId, UserId, PLATFORM_AGENCY};
use referrals_domain::role::{any_requires_mfa, Role};
use referrals_domain::user::{User, UserStatus};
use referrals_domain::values::EmailAddress;
use uuid::Uuid;

use super::error::{is_connection_error, AccountError, SecretText};
use super::password::{self, PasswordError};
use super::rate_limit::{self, FailureKeys};
use super::tokens::{self, TokenKind};
use super::totp::{self, TotpError};
use super::{Accounts, OWN_ACCOUNT_ROLE, SESSION_LIFETIME_HOURS};
use crate::crypto::Field;
use crate::event_store::{Actor, CommandMetadata};

/// Requests closer together than this do not update a session's last use or the user's
/// last activity, so that busy clients do not write on every request.
const ACTIVITY_RESOLUTION_SECONDS: f64 = 60.0;

/// Reason a sign-in failed.
///
/// A client should see [`LoginError::InvalidCredentials`] and
/// [`LoginError::Deactivated`] alike (401), so that the response does not tell whether an
/// account exists or what state it is in.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown e-mail address, wrong password, or an account that never accepted its
    /// invitation (401).
    #[error("the e-mail address or password is incorrect")]
    InvalidCredentials,
    /// The password is correct, but the account needs a TOTP code and none was sent (401).
    #[error("a code from the authenticator app is required; sign in again with the code")]
    MfaRequired,
    /// The TOTP code is wrong, outside the accepted time steps, or was used before (401).
    #[error("the authenticator code is incorrect or was already used; wait for the next code and try again")]
    InvalidTotp,
    /// Too many failed attempts for this account or client address (429).
    #[error("too many failed sign-in attempts; retry in {retry_after_seconds} seconds")]
    RateLimited {
        /// Seconds until the next attempt is allowed.
        retry_after_seconds: u64,
    },
    /// The password is correct, but the account is deactivated (401).
    #[error("the account is deactivated")]
    Deactivated,
    /// The database is unavailable (503). The text is for operators.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A failure that is the platform's fault (500). The text is for operators.
    #[error("internal failure: {0}")]
    Internal(String),
}

impl From<AccountError> for LoginError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Unavailable(cause) => Self::Unavailable(cause),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for LoginError {
    fn from(error: sqlx::Error) -> Self {
        AccountError::from(error).into()
    }
}

impl From<PasswordError> for LoginError {
    fn from(error: PasswordError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<TotpError> for LoginError {
    fn from(error: TotpError) -> Self {
        Self::Internal(error.to_string())
    }
}

/// Reason a bearer token was rejected. Every variant but the last two is a 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed or unknown.
    #[error("the bearer token is not valid; sign in again")]
    InvalidToken,
    /// The session or access token expired.
    #[error("the bearer token expired; sign in again")]
    Expired,
    /// The session was signed out, or the token revoked.
    #[error("the bearer token was revoked; sign in again")]
    Revoked,
    /// The token's user is deactivated.
    #[error("the account of this bearer token is deactivated")]
    Deactivated,
    /// The database is unavailable (503). The text is for operators.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A failure that is the platform's fault (500). The text is for operators.
    #[error("internal failure: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for AuthError {
    fn from(error: sqlx::Error) -> Self {
        if is_connection_error(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

/// A new session, returned by a successful sign-in.
#[derive(Debug, Clone)]
pub struct Session {
    /// Id of the session's row.
    pub session_id: Uuid,
    /// The signed-in user.
    pub user_id: UserId,
    /// The bearer token. Shown only here.
    pub token: SecretText,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
    /// True when a role requires MFA but no secret is enrolled yet, as after a role
    /// change. The API then allows only enrolling MFA and signing out.
    pub mfa_enrollment_required: bool,
}

/// The credential a request was authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A sign-in session, by the id of its row.
    Session(Uuid),
    /// A personal access token, by the id of its row.
    AccessToken(Uuid),
}

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: UserId,
    /// The user's agency; `None` for a platform operator.
    pub agency_id: Option<AgencyId>,
    /// The user's roles at the time of the request.
    pub roles: Vec<Role>,
    /// The session or access token used.
    pub credential: Credential,
    /// True for a session whose user must enroll MFA before doing anything else.
    pub mfa_enrollment_required: bool,
}

impl Caller {
    /// Returns the agency the caller's records are stored under: their agency, or
    /// [`PLATFORM_AGENCY`] for a platform operator.
    pub fn tenant_id(&self) -> AgencyId {
        self.agency_id.unwrap_or(PLATFORM_AGENCY)
    }

    /// Returns whether the caller has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Builds the metadata of a command the caller issues acting in `role`.
    pub fn metadata(&self, role: Role) -> CommandMetadata {
        self.metadata_as(role.as_str())
    }

    /// Builds the metadata of a command on the caller's own account, such as enrolling MFA.
    pub fn own_account_metadata(&self) -> CommandMetadata {
        self.metadata_as(OWN_ACCOUNT_ROLE)
    }

    fn metadata_as(&self, role: &str) -> CommandMetadata {
        CommandMetadata::new(
            self.tenant_id(),
            Actor::User {
                id: self.user_id,
                role: role.to_owned(),
            },
        )
    }
}

impl Accounts {
    /// Signs a user in with e-mail address, password and, when MFA is enrolled, a TOTP
    /// code, and opens a session of [`SESSION_LIFETIME_HOURS`].
    ///
    /// Failed passwords and codes count against the account and the client address
    /// (see [`rate_limit`]). An unknown address costs the same password hashing as a
    /// known one, so timing does not reveal which addresses have accounts.
    ///
    /// # Errors
    /// See [`LoginError`].
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        totp: Option<&str>,
        client_address: IpAddr,
    ) -> Result<Session, LoginError> {
        let now = Utc::now();
        // A malformed address cannot have an account, but it is still hashed and
        // counted, so it is treated exactly like an unknown one.
        let normalized = EmailAddress::parse(email)
            .map(|email| email.as_str().to_owned())
            .unwrap_or_else(|_| email.trim().to_lowercase());
        let email_key = self.email_key(&normalized).await?;
        let keys = FailureKeys::new(&email_key, client_address);

        // NOTE: the check and the recording of a failure are separate statements, so
        // attempts sent in parallel may all pass the check. The limit then counts
        // waves of parallel requests rather than single attempts.
        if let Some(retry_after_seconds) = rate_limit::retry_after(&self.pool, &keys, now).await? {
            tracing::debug!(
                retry_after_seconds,
                "sign-in rejected: rate limited after too many failures"
            );
            return Err(LoginError::RateLimited {
                retry_after_seconds,
            });
        }

        let Some((user, tenant)) = self.check_password(&email_key, password).await? else {
            rate_limit::record_failure(&self.pool, &keys, now).await?;
            tracing::debug!("sign-in rejected: invalid credentials");
            return Err(LoginError::InvalidCredentials);
        };
        let user_id = user
            .user_id()
            .ok_or_else(|| LoginError::Internal("loaded user has no id".to_owned()))?;
        if user.status() == Some(UserStatus::Deactivated) {
            tracing::debug!(%user_id, "sign-in rejected: user deactivated");
            return Err(LoginError::Deactivated);
        }

        let mfa_enrollment_required = match user.mfa_secret() {
            Some(sealed) => {
                let Some(code) = totp else {
                    tracing::debug!(%user_id, "sign-in paused: TOTP code required");
                    return Err(LoginError::MfaRequired);
                };
                let secret = self
                    .open(tenant, user_id, Field::TotpSecret, sealed)
                    .await?;
                let step = totp::matching_step(&secret, code, now)?;
                let accepted = match step {
                    Some(step) => self.claim_totp_step(user_id, step, now).await?,
                    None => false,
                };
                if !accepted {
                    rate_limit::record_failure(&self.pool, &keys, now).await?;
                    tracing::debug!(%user_id, "sign-in rejected: invalid or reused TOTP code");
                    return Err(LoginError::InvalidTotp);
                }
                false
            }
            None => user.requires_mfa(),
        };

        rate_limit::clear_account(&self.pool, &keys).await?;
        let session = self
            .open_session(user_id, client_address, now, mfa_enrollment_required)
            .await?;
        tracing::info!(%user_id, session_id = %session.session_id, "signed in");
        Ok(session)
    }

    /// Signs out: revokes the session of `token`. Returns false when the token is no
    /// open session (unknown, revoked before, or not a session token).
    ///
    /// # Errors
    /// [`AccountError::Unavailable`] when the database cannot be reached.
    pub async fn logout(&self, token: &str) -> Result<bool, AccountError> {
        if TokenKind::of(token) != Some(TokenKind::Session) {
            return Ok(false);
        }
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(tokens::hash(token))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(revoked > 0)
    }

    /// Authenticates a bearer token (a session or a personal access token) and returns
    /// the caller with the roles the user has now.
    ///
    /// The user's account row is read on every call, never cached, so a deactivation or
    /// role change applies to the very next request. Also records the last activity.
    ///
    /// # Errors
    /// See [`AuthError`].
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller, AuthError> {
        let now = Utc::now();
        let (table, used_column) = match TokenKind::of(bearer) {
            Some(TokenKind::Session) => ("sessions", "last_seen_at"),
            Some(TokenKind::AccessToken) => ("access_tokens", "last_used_at"),
            Some(TokenKind::Invitation) | None => return Err(AuthError::InvalidToken),
        };

        // One indexed lookup by token hash, joined with the account's current state.
        type Row = (
            Uuid,
            Uuid,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            Option<Uuid>,
            Vec<String>,
            String,
            bool,
        );
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT t.id, t.user_id, t.expires_at, t.revoked_at, t.{used_column},
                    a.agency_id, a.roles, a.status, a.mfa_enrolled
               FROM {table} t JOIN user_accounts a ON a.user_id = t.user_id
              WHERE t.token_hash = $1"
        ))
        .bind(tokens::hash(bearer))
        .fetch_optional(&self.pool)
        .await?;
        let Some((
            id,
            user_id,
            expires_at,
            revoked_at,
            last_used_at,
            agency_id,
            roles,
            status,
            mfa_enrolled,
        )) = row
        else {
            return Err(AuthError::InvalidToken);
        };
        if revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if expires_at.is_some_and(|expires_at| expires_at <= now) {
            return Err(AuthError::Expired);
        }
        if status == UserStatus::Deactivated.as_str() {
            return Err(AuthError::Deactivated);
        }
        let roles = roles
            .iter()
            .map(|name| Role::parse(name))
            .collect::<Result<Vec<Role>, _>>()
            .map_err(|_| AuthError::Internal(format!("user {user_id} has an unknown role")))?;

        let credential = match table {
            "sessions" => Credential::Session(id),
            _ => Credential::AccessToken(id),
        };
        let user_id = UserId(user_id);
        if last_use_due(last_used_at, now) {
            self.touch(table, used_column, id, user_id, now).await;
        }
        Ok(Caller {
            user_id,
            agency_id: agency_id.map(AgencyId),
            mfa_enrollment_required: matches!(credential, Credential::Session(_))
                && any_requires_mfa(&roles)
                && !mfa_enrolled,
            roles,
            credential,
        })
    }

    /// Returns the user and their tenant when `password` is the password of the account
    /// at `email_key`, and `None` otherwise. Every path does the same hashing work.
    async fn check_password(
        &self,
        email_key: &str,
        password: &str,
    ) -> Result<Option<(User, AgencyId)>, LoginError> {
        let row: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(
            "SELECT l.user_id, a.agency_id
               FROM user_logins l JOIN user_accounts a ON a.user_id = l.user_id
              WHERE l.email_key = $1",
        )
        .bind(email_key)
        .fetch_optional(&self.pool)
        .await?;
        let Some((user_id, agency_id)) = row else {
            password::verify_against_dummy(password).await?;
            return Ok(None);
        };
        let user_id = UserId(user_id);
        let tenant = agency_id.map_or(PLATFORM_AGENCY, AgencyId);

        let user = match self.load_user(tenant, user_id).await {
            Ok((user, _)) => user,
            Err(AccountError::NotFound(_)) => {
                password::verify_against_dummy(password).await?;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        // An invited user has no password yet.
        let Some(sealed_hash) = user.password_hash() else {
            password::verify_against_dummy(password).await?;
            return Ok(None);
        };
        let phc = match self
            .open(tenant, user_id, Field::PasswordHash, sealed_hash)
            .await
        {
            Ok(phc) => phc,
            Err(AccountError::Erased) => {
                password::verify_against_dummy(password).await?;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        if password::verify_password(password, &phc).await? {
            Ok(Some((user, tenant)))
        } else {
            Ok(None)
        }
    }

    /// Records `step` as the user's last TOTP step unless an equal or later step was
    /// used before. Returns whether the step was accepted.
    async fn claim_totp_step(
        &self,
        user_id: UserId,
        step: u64,
        now: DateTime<Utc>,
    ) -> Result<bool, LoginError> {
        let step = i64::try_from(step)
            .map_err(|_| LoginError::Internal("TOTP step out of range".to_owned()))?;
        // One statement, so two sign-ins racing with the same code cannot both win.
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO totp_last_steps (user_id, step, used_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET step = EXCLUDED.step, used_at = EXCLUDED.used_at
              WHERE totp_last_steps.step < EXCLUDED.step
             RETURNING step",
        )
        .bind(user_id.0)
        .bind(step)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(claimed.is_some())
    }

    async fn open_session(
        &self,
        user_id: UserId,
        client_address: IpAddr,
        now: DateTime<Utc>,
        mfa_enrollment_required: bool,
    ) -> Result<Session, LoginError> {
        let token = tokens::generate(TokenKind::Session);
        let session_id = Uuid::now_v7();
        let expires_at = now + Duration::hours(SESSION_LIFETIME_HOURS);

        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at, last_seen_at, client_address)
             VALUES ($1, $2, $3, $4, $5, $4, $6::inet)",
        )
        .bind(session_id)
        .bind(user_id.0)
        .bind(&token.hash)
        .bind(now)
        .bind(expires_at)
        .bind(client_address.to_canonical().to_string())
        .execute(&mut *transaction)
        .await?;
        record_activity(&mut transaction, user_id, now).await?;
        transaction.commit().await?;

        Ok(Session {
            session_id,
            user_id,
            token: SecretText::new(token.text),
            expires_at,
            mfa_enrollment_required,
        })
    }

    /// Updates the credential's last use and the user's last activity, at most once per
    /// [`ACTIVITY_RESOLUTION_SECONDS`]. A failure is logged and does not fail the request.
    async fn touch(
        &self,
        table: &str,
        used_column: &str,
        credential_id: Uuid,
        user_id: UserId,
        now: DateTime<Utc>,
    ) {
        let outcome = async {
            let updated = sqlx::query(&format!(
                "UPDATE {table} SET {used_column} = $2
                  WHERE id = $1
                    AND ({used_column} IS NULL OR {used_column} < $2 - make_interval(secs => $3))"
            ))
            .bind(credential_id)
            .bind(now)
            .bind(ACTIVITY_RESOLUTION_SECONDS)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if updated > 0 {
                let mut connection = self.pool.acquire().await?;
                record_activity(&mut connection, user_id, now).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if let Err(error) = outcome {
            tracing::warn!(%user_id, %error, "recording the last activity failed");
        }
    }
}

/// Returns true when a credential last used at `last_used_at` should record a use at
/// `now`. Skipping the update here saves a statement on most requests. `touch` checks the
/// same condition again in SQL, so concurrent requests still write at most once.
fn last_use_due(last_used_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_used_at.is_none_or(|last_used_at| {
        (now - last_used_at).as_seconds_f64() > ACTIVITY_RESOLUTION_SECONDS
    })
}

async fn record_activity(
    connection: &mut sqlx::PgConnection,
    user_id: UserId,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_activity (user_id, last_active_at) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET last_active_at = EXCLUDED.last_active_at
          WHERE user_activity.last_active_at < EXCLUDED.last_active_at",
    )
    .bind(user_id.0)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    #[test]
    fn last_use_is_due_only_after_the_resolution() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 9, 0, 0).unwrap();
        assert!(last_use_due(None, now));
        assert!(!last_use_due(Some(now), now));
        assert!(!last_use_due(Some(now - TimeDelta::seconds(60)), now));
        assert!(last_use_due(Some(now - TimeDelta::seconds(61)), now));
    }
}
