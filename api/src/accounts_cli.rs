//! The `agency create` and `operator create` commands, which bootstrap accounts before
//! anyone can sign in. Each prints the new ids and a one-time invitation token as JSON on
//! standard output, for the operator to pass on to the invited person.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use referrals_domain::ids::PLATFORM_AGENCY;
use referrals_domain::values::EmailAddress;
use referrals_store::accounts::Accounts;
use referrals_store::database;
use referrals_store::event_store::{Actor, CommandMetadata};
use referrals_store::keys::KeyVault;
use serde_json::json;

use crate::config;

/// The job name recorded as the actor of accounts created on the command line.
pub const CLI_JOB: &str = "cli";

/// Subcommands of `referrals agency`.
#[derive(Debug, Subcommand)]
pub enum AgencyCommand {
    /// Create an agency and invite its first agency_admin. Prints JSON
    /// {agency_id, admin_user_id, invite_token}; the token is valid once, for 72 hours.
    Create {
        /// Display name of the agency, 1 to 200 characters.
        #[arg(long)]
        name: String,
        /// E-mail address of the first admin, who signs in with it after accepting.
        #[arg(long)]
        admin_email: String,
    },
}

/// Subcommands of `referrals operator`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Invite a platform operator. Prints JSON {user_id, invite_token}; the token is
    /// valid once, for 72 hours.
    Create {
        /// E-mail address the operator signs in with after accepting.
        #[arg(long)]
        email: String,
    },
}

/// Runs an `agency` subcommand.
///
/// # Errors
/// Returns an error when the master key is missing, the address or name is invalid,
/// the address already has an account, or the database fails.
pub async fn run_agency(database_url: &str, command: AgencyCommand) -> anyhow::Result<()> {
    let AgencyCommand::Create { name, admin_email } = command;
    let admin_email = EmailAddress::parse(&admin_email)
        .map_err(|error| anyhow::anyhow!("invalid --admin-email: {}", error.message))?;
    let accounts = connect(database_url).await?;

    let created = accounts
        .create_agency(&cli_metadata(), &name, &admin_email, None)
        .await?;
    let output = json!({
        "agency_id": created.agency_id,
        "admin_user_id": created.admin_user_id,
        "invite_token": created.invite_token.expose(),
    });
    println!("{output}");
    Ok(())
}

/// Runs an `operator` subcommand.
///
/// # Errors
/// Returns an error when the master key is missing, the address is invalid or already
/// has an account, or the database fails.
pub async fn run_operator(database_url: &str, command: OperatorCommand) -> anyhow::Result<()> {
    let OperatorCommand::Create { email } = command;
    let email = EmailAddress::parse(&email)
        .map_err(|error| anyhow::anyhow!("invalid --email: {}", error.message))?;
    let accounts = connect(database_url).await?;

    let invited = accounts.create_operator(&cli_metadata(), &email).await?;
    let output = json!({
        "user_id": invited.user_id,
        "invite_token": invited.invite_token.expose(),
    });
    println!("{output}");
    Ok(())
}

/// Connects to a migrated database with the master key from the environment.
async fn connect(database_url: &str) -> anyhow::Result<Accounts> {
    let master_key = config::master_key_from_env()?;
    let options = database::parse_url(database_url)?;
    let pool = database::connect(&options, 2).await?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('user_logins') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .context("checking the database schema failed")?;
    if !migrated {
        anyhow::bail!(
            "the database {} has no account tables; run `referrals migrate` first",
            database::describe(&options)
        );
    }
    let vault = Arc::new(KeyVault::new(pool.clone(), master_key));
    Ok(Accounts::new(pool, vault))
}

fn cli_metadata() -> CommandMetadata {
    CommandMetadata::new(
        PLATFORM_AGENCY,
        Actor::System {
            job: CLI_JOB.to_owned(),
        },
    )
}
