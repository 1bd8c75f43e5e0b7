//! User accounts against real PostgreSQL: invitations, sign-in with and without TOTP,
//! rate limits, deactivation, personal access tokens, role changes, and what the
//! database stores (token hashes only, no plaintext e-mail addresses).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{Duration, Utc};
use referrals_domain::ids::{AgencyId, UserId, PLATFORM_AGENCY};
use referrals_domain::role::Role;
use referrals_domain::values::{EmailAddress, PersonName};
use referrals_domain::DomainError;
use referrals_store::accounts::totp::code_at;
use referrals_store::accounts::{
    AccountError, Accounts, AuthError, Caller, Credential, LoginError,
};
use referrals_store::crypto::MasterKey;
use referrals_store::event_store::{Actor, CommandMetadata};
use referrals_store::keys::KeyVault;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

const PASSWORD: &str = "correct horse battery staple";

fn accounts(pool: &PgPool) -> Accounts {
    let vault = Arc::new(KeyVault::new(pool.clone(), MasterKey::generate().0));
    Accounts::new(pool.clone(), vault)
}

fn email(text: &str) -> EmailAddress {
    EmailAddress::parse(text).unwrap()
}

fn address(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Metadata of the command-line bootstrap, which acts as no user.
fn bootstrap() -> CommandMetadata {
    CommandMetadata::new(
        PLATFORM_AGENCY,
        Actor::System {
            job: "cli".to_owned(),
        },
    )
}

/// An agency whose admin accepted the invitation and signed in with a TOTP code.
struct SignedInAdmin {
    agency_id: AgencyId,
    caller: Caller,
}

async fn agency_with_admin(accounts: &Accounts, admin_email: &str) -> SignedInAdmin {
    let created = accounts
        .create_agency(
            &bootstrap(),
            "Northwind Staffing",
            &email(admin_email),
            None,
        )
        .await
        .expect("creating the agency");
    let accepted = accounts
        .accept_invitation(created.invite_token.expose(), PASSWORD)
        .await
        .expect("accepting the admin invitation");
    let secret = accepted.totp_secret.expect("an admin gets a TOTP secret");
    let code = code_at(secret.expose(), Utc::now()).unwrap();
    let session = accounts
        .login(admin_email, PASSWORD, Some(&code), address("127.0.0.1"))
        .await
        .expect("admin sign-in");
    let caller = accounts
        .authenticate(session.token.expose())
        .await
        .expect("admin session");
    SignedInAdmin {
        agency_id: created.agency_id,
        caller,
    }
}

/// Invites a user with `roles` into the admin's agency and accepts the invitation.
async fn active_user(
    accounts: &Accounts,
    admin: &SignedInAdmin,
    address_text: &str,
    roles: &[Role],
) -> UserId {
    let invited = accounts
        .invite_user(
            &admin.caller.metadata(Role::AgencyAdmin),
            &email(address_text),
            Some(&PersonName::parse("Grace Hopper").unwrap()),
            roles,
        )
        .await
        .expect("inviting the user");
    accounts
        .accept_invitation(invited.invite_token.expose(), PASSWORD)
        .await
        .expect("accepting the invitation");
    invited.user_id
}

/// Returns the tables, in every schema but PostgreSQL's own, that have a row whose text
/// form contains `needle` (case-insensitive).
async fn tables_containing(pool: &PgPool, needle: &str) -> Vec<String> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema, table_name FROM information_schema.tables
          WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
            AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (schema, table) in tables {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".\"{table}\" t WHERE t::text ILIKE '%' || $1 || '%'"
        ))
        .bind(needle)
        .fetch_one(pool)
        .await
        .unwrap();
        if count > 0 {
            found.push(format!("{schema}.{table}"));
        }
    }
    found
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn invitation_accept_and_login(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let invited = accounts
        .invite_user(
            &admin.caller.metadata(Role::AgencyAdmin),
            &email(" Grace@Example.org "),
            None,
            &[Role::Recruiter],
        )
        .await
        .unwrap();

    let short = accounts
        .accept_invitation(invited.invite_token.expose(), "too short")
        .await;
    let accepted = accounts
        .accept_invitation(invited.invite_token.expose(), PASSWORD)
        .await
        .unwrap();
    let again = accounts
        .accept_invitation(invited.invite_token.expose(), PASSWORD)
        .await;
    let unknown = accounts
        .accept_invitation("rfi_not-a-real-token", PASSWORD)
        .await;

    assert!(
        matches!(&short, Err(AccountError::Domain(DomainError::Invalid(error))) if error.field == "password"),
        "{short:?}"
    );
    assert_eq!(accepted.user_id, invited.user_id);
    assert!(accepted.totp_secret.is_none(), "a recruiter needs no MFA");
    assert!(
        matches!(
            again,
            Err(AccountError::Domain(DomainError::InvitationAlreadyAccepted))
        ),
        "{again:?}"
    );
    assert!(matches!(unknown, Err(AccountError::InvalidInvitation)));

    let session = accounts
        .login("grace@example.org", PASSWORD, None, address("127.0.0.1"))
        .await
        .unwrap();
    let caller = accounts.authenticate(session.token.expose()).await.unwrap();

    assert!(session.token.expose().starts_with("rfs_"));
    let lifetime = session.expires_at - Utc::now();
    assert!(lifetime > Duration::hours(11));
    assert!(lifetime <= Duration::hours(12));
    assert_eq!(caller.user_id, invited.user_id);
    assert_eq!(caller.agency_id, Some(admin.agency_id));
    assert_eq!(caller.roles, [Role::Recruiter]);
    assert_eq!(caller.credential, Credential::Session(session.session_id));
    assert!(!caller.mfa_enrollment_required);
    let activity: i64 = sqlx::query_scalar("SELECT count(*) FROM user_activity WHERE user_id = $1")
        .bind(invited.user_id.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(activity, 1);

    assert!(accounts.logout(session.token.expose()).await.unwrap());
    let after_logout = accounts.authenticate(session.token.expose()).await;
    assert!(
        matches!(after_logout, Err(AuthError::Revoked)),
        "{after_logout:?}"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn wrong_password_and_unknown_email_look_alike(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    active_user(&accounts, &admin, "grace@example.org", &[Role::Recruiter]).await;

    let wrong_password = accounts
        .login(
            "grace@example.org",
            "not the password",
            None,
            address("127.0.0.1"),
        )
        .await
        .unwrap_err();
    let unknown_email = accounts
        .login("nobody@example.org", PASSWORD, None, address("127.0.0.1"))
        .await
        .unwrap_err();
    let malformed_email = accounts
        .login("not an address", PASSWORD, None, address("127.0.0.1"))
        .await
        .unwrap_err();

    assert!(matches!(wrong_password, LoginError::InvalidCredentials));
    assert!(matches!(unknown_email, LoginError::InvalidCredentials));
    assert!(matches!(malformed_email, LoginError::InvalidCredentials));
    assert_eq!(wrong_password.to_string(), unknown_email.to_string());
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn invitation_after_expiry_is_rejected(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let mut metadata = admin.caller.metadata(Role::AgencyAdmin);
    metadata.recorded_at = Utc::now() - Duration::hours(73);

    let invited = accounts
        .invite_user(
            &metadata,
            &email("late@example.org"),
            None,
            &[Role::Analyst],
        )
        .await
        .unwrap();
    let outcome = accounts
        .accept_invitation(invited.invite_token.expose(), PASSWORD)
        .await;

    assert!(
        matches!(
            outcome,
            Err(AccountError::Domain(DomainError::InvitationExpired { .. }))
        ),
        "{outcome:?}"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn email_address_has_one_account(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let metadata = admin.caller.metadata(Role::AgencyAdmin);

    let mixed = accounts
        .invite_user(
            &metadata,
            &email("grace@example.org"),
            None,
            &[Role::Recruiter, Role::PlatformOperator],
        )
        .await;
    let first = accounts
        .invite_user(
            &metadata,
            &email("grace@example.org"),
            None,
            &[Role::Recruiter],
        )
        .await;
    let second = accounts
        .invite_user(
            &metadata,
            &email("GRACE@example.org"),
            None,
            &[Role::Analyst],
        )
        .await;
    let other_agency = accounts
        .create_agency(
            &bootstrap(),
            "Contoso Staffing",
            &email("grace@example.org"),
            None,
        )
        .await;

    assert!(
        matches!(&mixed, Err(AccountError::Domain(DomainError::Invalid(error))) if error.field == "roles"),
        "{mixed:?}"
    );
    assert!(
        first.is_ok(),
        "a rejected invitation must not reserve the address"
    );
    assert!(
        matches!(second, Err(AccountError::EmailTaken)),
        "{second:?}"
    );
    assert!(matches!(other_agency, Err(AccountError::EmailTaken)));
    let agencies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'AgencyCreated'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        agencies, 1,
        "no agency is created when its admin's address is taken"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn agency_admin_needs_a_fresh_totp_code(pool: PgPool) {
    let accounts = accounts(&pool);
    let created = accounts
        .create_agency(
            &bootstrap(),
            "Northwind Staffing",
            &email("admin@northwind.example"),
            None,
        )
        .await
        .unwrap();
    let accepted = accounts
        .accept_invitation(created.invite_token.expose(), PASSWORD)
        .await
        .unwrap();
    let secret = accepted.totp_secret.expect("an admin gets a TOTP secret");
    let login = |code: Option<String>| {
        let accounts = &accounts;
        async move {
            accounts
                .login(
                    "admin@northwind.example",
                    PASSWORD,
                    code.as_deref(),
                    address("127.0.0.1"),
                )
                .await
        }
    };
    let now = Utc::now();
    let current = code_at(secret.expose(), now).unwrap();
    let three_steps_ago = code_at(secret.expose(), now - Duration::seconds(90)).unwrap();

    let accepted_now: Vec<String> = [-30, 0, 30]
        .into_iter()
        .map(|offset| code_at(secret.expose(), now + Duration::seconds(offset)).unwrap())
        .collect();

    let without_code = login(None).await;
    let wrong_code = login(Some("000000".to_owned())).await;
    let old_code = login(Some(three_steps_ago.clone())).await;
    let with_code = login(Some(current.clone())).await;
    let reused_code = login(Some(current.clone())).await;

    assert!(
        matches!(without_code, Err(LoginError::MfaRequired)),
        "{without_code:?}"
    );
    // A fixed or old code can equal one of the accepted codes (about 3 times in a
    // million), and is then rightly accepted, so those checks are skipped in that case.
    if !accepted_now.contains(&"000000".to_owned()) {
        assert!(
            matches!(wrong_code, Err(LoginError::InvalidTotp)),
            "{wrong_code:?}"
        );
    }
    if !accepted_now.contains(&three_steps_ago) {
        assert!(
            matches!(old_code, Err(LoginError::InvalidTotp)),
            "{old_code:?}"
        );
    }
    let session = with_code.expect("a current code signs in");
    assert!(!session.mfa_enrollment_required);
    assert!(
        matches!(reused_code, Err(LoginError::InvalidTotp)),
        "{reused_code:?}"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn platform_operator_has_no_agency(pool: PgPool) {
    let accounts = accounts(&pool);
    let invited = accounts
        .create_operator(&bootstrap(), &email("ops@platform.example"))
        .await
        .unwrap();
    let accepted = accounts
        .accept_invitation(invited.invite_token.expose(), PASSWORD)
        .await
        .unwrap();
    let secret = accepted
        .totp_secret
        .expect("an operator gets a TOTP secret");
    let code = code_at(secret.expose(), Utc::now()).unwrap();
    let session = accounts
        .login(
            "ops@platform.example",
            PASSWORD,
            Some(&code),
            address("::1"),
        )
        .await
        .unwrap();

    let caller = accounts.authenticate(session.token.expose()).await.unwrap();

    assert_eq!(caller.agency_id, None);
    assert_eq!(caller.tenant_id(), PLATFORM_AGENCY);
    assert_eq!(caller.roles, [Role::PlatformOperator]);
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT agency_id FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(invited.user_id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tenants, [uuid::Uuid::nil()]);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sixth_failure_for_an_account_is_rate_limited(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    active_user(&accounts, &admin, "grace@example.org", &[Role::Recruiter]).await;

    for attempt in 1..=5 {
        let outcome = accounts
            .login(
                "grace@example.org",
                "not the password",
                None,
                address("10.0.0.1"),
            )
            .await;
        assert!(
            matches!(outcome, Err(LoginError::InvalidCredentials)),
            "attempt {attempt}: {outcome:?}"
        );
    }
    let sixth = accounts
        .login(
            "grace@example.org",
            "not the password",
            None,
            address("10.0.0.1"),
        )
        .await;
    let right_password = accounts
        .login("grace@example.org", PASSWORD, None, address("10.0.0.1"))
        .await;
    let other_address = accounts
        .login("grace@example.org", PASSWORD, None, address("10.0.0.2"))
        .await;

    let Err(LoginError::RateLimited {
        retry_after_seconds,
    }) = sixth
    else {
        panic!("expected a rate limit, got {sixth:?}");
    };
    assert!(retry_after_seconds > 0);
    assert!(retry_after_seconds <= 15 * 60);
    assert!(matches!(
        right_password,
        Err(LoginError::RateLimited { .. })
    ));
    assert!(
        matches!(other_address, Err(LoginError::RateLimited { .. })),
        "the account limit holds from every address"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn failures_from_one_address_are_limited_across_accounts(pool: PgPool) {
    let accounts = accounts(&pool);

    for attempt in 1..=20 {
        let outcome = accounts
            .login(
                &format!("user{attempt}@example.org"),
                PASSWORD,
                None,
                address("203.0.113.9"),
            )
            .await;
        assert!(
            matches!(outcome, Err(LoginError::InvalidCredentials)),
            "attempt {attempt}: {outcome:?}"
        );
    }
    let from_same_address = accounts
        .login("fresh@example.org", PASSWORD, None, address("203.0.113.9"))
        .await;
    let from_other_address = accounts
        .login("fresh@example.org", PASSWORD, None, address("203.0.113.10"))
        .await;

    let Err(LoginError::RateLimited {
        retry_after_seconds,
    }) = from_same_address
    else {
        panic!("expected a rate limit, got {from_same_address:?}");
    };
    assert!(retry_after_seconds > 0);
    assert!(
        matches!(from_other_address, Err(LoginError::InvalidCredentials)),
        "{from_other_address:?}"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn deactivated_user_is_rejected_on_next_request(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let user_id = active_user(&accounts, &admin, "grace@example.org", &[Role::Recruiter]).await;
    let session = accounts
        .login("grace@example.org", PASSWORD, None, address("127.0.0.1"))
        .await
        .unwrap();
    let metadata = admin.caller.metadata(Role::AgencyAdmin);
    let token = accounts
        .issue_access_token(&metadata, user_id, "Timesheet import", None)
        .await
        .unwrap();
    assert!(accounts.authenticate(session.token.expose()).await.is_ok());

    accounts
        .deactivate_user(&metadata, user_id, None)
        .await
        .unwrap();
    let session_outcome = accounts.authenticate(session.token.expose()).await;
    let token_outcome = accounts.authenticate(token.token.expose()).await;
    let login_outcome = accounts
        .login("grace@example.org", PASSWORD, None, address("127.0.0.1"))
        .await;

    assert!(
        matches!(session_outcome, Err(AuthError::Revoked)),
        "{session_outcome:?}"
    );
    assert!(
        matches!(token_outcome, Err(AuthError::Revoked)),
        "{token_outcome:?}"
    );
    assert!(
        matches!(login_outcome, Err(LoginError::Deactivated)),
        "{login_outcome:?}"
    );

    // Even a session that escaped revocation is rejected, by the account's status.
    sqlx::query("UPDATE sessions SET revoked_at = NULL WHERE user_id = $1")
        .bind(user_id.0)
        .execute(&pool)
        .await
        .unwrap();
    let unrevoked = accounts.authenticate(session.token.expose()).await;
    assert!(
        matches!(unrevoked, Err(AuthError::Deactivated)),
        "{unrevoked:?}"
    );

    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1
          ORDER BY sequence",
    )
    .bind(user_id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events.last().map(String::as_str), Some("UserDeactivated"));
    accounts
        .deactivate_user(&metadata, user_id, None)
        .await
        .unwrap();
    let repeated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'UserDeactivated'",
    )
    .bind(user_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(repeated, 1, "deactivating again records nothing");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn access_token_works_and_is_stored_hashed(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let user_id = active_user(&accounts, &admin, "grace@example.org", &[Role::Recruiter]).await;

    let issued = accounts
        .issue_access_token(
            &admin.caller.metadata(Role::AgencyAdmin),
            user_id,
            "Timesheet import",
            Some(Utc::now() + Duration::days(30)),
        )
        .await
        .unwrap();
    let caller = accounts.authenticate(issued.token.expose()).await.unwrap();

    assert!(issued.token.expose().starts_with("rfp_"));
    assert_eq!(caller.user_id, user_id);
    assert_eq!(caller.roles, [Role::Recruiter]);
    assert_eq!(caller.credential, Credential::AccessToken(issued.token_id));
    let stored_hash: Vec<u8> =
        sqlx::query_scalar("SELECT token_hash FROM access_tokens WHERE id = $1")
            .bind(issued.token_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored_hash,
        Sha256::digest(issued.token.expose().as_bytes()).to_vec()
    );
    let random_part = &issued.token.expose()["rfp_".len()..];
    assert_eq!(
        tables_containing(&pool, random_part).await,
        Vec::<String>::new()
    );
    // The scan itself finds what is there: the token's label is stored in plain text.
    assert!(tables_containing(&pool, "Timesheet import")
        .await
        .contains(&"public.access_tokens".to_owned()));

    let issue_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'AccessTokenIssued'",
    )
    .bind(user_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(issue_events, 1);

    let bogus = accounts.authenticate("rfp_not-a-real-token").await;
    let unprefixed = accounts.authenticate("not-a-token").await;
    assert!(matches!(bogus, Err(AuthError::InvalidToken)));
    assert!(matches!(unprefixed, Err(AuthError::InvalidToken)));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn expired_access_token_is_rejected(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let user_id = active_user(&accounts, &admin, "grace@example.org", &[Role::Recruiter]).await;
    let issued = accounts
        .issue_access_token(
            &admin.caller.metadata(Role::AgencyAdmin),
            user_id,
            "Timesheet import",
            Some(Utc::now() + Duration::hours(1)),
        )
        .await
        .unwrap();

    sqlx::query("UPDATE access_tokens SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(issued.token_id)
        .execute(&pool)
        .await
        .unwrap();
    let outcome = accounts.authenticate(issued.token.expose()).await;

    assert!(matches!(outcome, Err(AuthError::Expired)), "{outcome:?}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn session_and_invitation_tokens_are_stored_hashed(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let invited = accounts
        .invite_user(
            &admin.caller.metadata(Role::AgencyAdmin),
            &email("grace@example.org"),
            None,
            &[Role::Analyst],
        )
        .await
        .unwrap();
    accounts
        .accept_invitation(invited.invite_token.expose(), PASSWORD)
        .await
        .unwrap();
    let session = accounts
        .login("grace@example.org", PASSWORD, None, address("127.0.0.1"))
        .await
        .unwrap();

    for token in [invited.invite_token.expose(), session.token.expose()] {
        let random_part = &token[4..];
        assert_eq!(
            tables_containing(&pool, random_part).await,
            Vec::<String>::new()
        );
    }
    assert_eq!(
        tables_containing(&pool, PASSWORD).await,
        Vec::<String>::new()
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn role_change_is_recorded_and_applies_at_once(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let user_id = active_user(&accounts, &admin, "grace@example.org", &[Role::Recruiter]).await;
    let session = accounts
        .login("grace@example.org", PASSWORD, None, address("127.0.0.1"))
        .await
        .unwrap();
    let metadata = admin.caller.metadata(Role::AgencyAdmin);

    let roles = accounts
        .change_roles(
            &metadata,
            user_id,
            &[Role::PayoutApprover, Role::Recruiter],
            None,
        )
        .await
        .unwrap();
    let caller = accounts.authenticate(session.token.expose()).await.unwrap();
    accounts
        .change_roles(
            &metadata,
            user_id,
            &[Role::Recruiter, Role::PayoutApprover],
            None,
        )
        .await
        .unwrap();

    assert_eq!(roles, [Role::Recruiter, Role::PayoutApprover]);
    assert_eq!(caller.roles, [Role::Recruiter, Role::PayoutApprover]);
    assert!(
        caller.mfa_enrollment_required,
        "payout_approver requires MFA, which the user has not enrolled"
    );
    let changes: Vec<(serde_json::Value, serde_json::Value)> = sqlx::query_as(
        "SELECT payload, metadata FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = $1 AND event_type = 'RolesChanged'",
    )
    .bind(user_id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(changes.len(), 1, "the same roles again record nothing");
    let (payload, event_metadata) = &changes[0];
    let change = &payload["RolesChanged"];
    assert_eq!(change["previous"], serde_json::json!(["recruiter"]));
    assert_eq!(
        change["roles"],
        serde_json::json!(["recruiter", "payout_approver"])
    );
    assert_eq!(
        change["by"],
        serde_json::json!(admin.caller.user_id.to_string())
    );
    assert_eq!(event_metadata["actor_role"], "agency_admin");
    assert_eq!(event_metadata["agency_id"], admin.agency_id.to_string());

    let secret = accounts
        .enroll_mfa(&caller.own_account_metadata(), user_id)
        .await
        .unwrap();
    let after_enrollment = accounts.authenticate(session.token.expose()).await.unwrap();
    let second_enrollment = accounts
        .enroll_mfa(&caller.own_account_metadata(), user_id)
        .await;
    let code = code_at(secret.expose(), Utc::now()).unwrap();
    let without_code = accounts
        .login("grace@example.org", PASSWORD, None, address("127.0.0.1"))
        .await;
    let with_code = accounts
        .login(
            "grace@example.org",
            PASSWORD,
            Some(&code),
            address("127.0.0.1"),
        )
        .await;

    assert!(!after_enrollment.mfa_enrollment_required);
    assert!(matches!(
        second_enrollment,
        Err(AccountError::Domain(DomainError::MfaAlreadyEnrolled))
    ));
    assert!(matches!(without_code, Err(LoginError::MfaRequired)));
    assert!(with_code.is_ok(), "{with_code:?}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn other_agency_cannot_change_a_user(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let other = agency_with_admin(&accounts, "admin@contoso.example").await;
    let user_id = active_user(&accounts, &admin, "grace@example.org", &[Role::Recruiter]).await;
    let foreign = other.caller.metadata(Role::AgencyAdmin);

    let roles = accounts
        .change_roles(&foreign, user_id, &[Role::AgencyAdmin], None)
        .await;
    let deactivation = accounts.deactivate_user(&foreign, user_id, None).await;
    let token = accounts
        .issue_access_token(&foreign, user_id, "Stolen", None)
        .await;

    assert!(
        matches!(roles, Err(AccountError::NotFound("user"))),
        "{roles:?}"
    );
    assert!(matches!(deactivation, Err(AccountError::NotFound("user"))));
    assert!(matches!(token, Err(AccountError::NotFound("user"))));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn no_plaintext_email_or_name_in_stored_records(pool: PgPool) {
    let accounts = accounts(&pool);
    let admin = agency_with_admin(&accounts, "admin@northwind.example").await;
    let user_id = active_user(&accounts, &admin, "grace@example.org", &[Role::Recruiter]).await;
    accounts
        .deactivate_user(&admin.caller.metadata(Role::AgencyAdmin), user_id, None)
        .await
        .unwrap();

    for needle in [
        "admin@northwind.example",
        "grace@example.org",
        "Grace Hopper",
    ] {
        assert_eq!(
            tables_containing(&pool, needle).await,
            Vec::<String>::new(),
            "plaintext found"
        );
    }
    let sealed: serde_json::Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'UserInvited'",
    )
    .bind(user_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    let invited = &sealed["UserInvited"];
    assert!(invited["email"].as_str().unwrap().starts_with("v1."));
    assert!(invited["name"].as_str().unwrap().starts_with("v1."));
}
