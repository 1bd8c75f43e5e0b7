//! Command-line interface: parses the arguments, sets up logging and runs one command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use referrals_store::database::{self, DEFAULT_DATABASE_URL};
use tracing_subscriber::EnvFilter;

use crate::config;

/// Staffing Referrals: referral programs for staffing agencies, event-sourced on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "referrals", version, propagate_version = true)]
struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations, creating the database first when it does not exist.
    Migrate,
    /// Prepare a demo: create and migrate the database and generate a master key into
    /// .data/master.key unless REFERRALS_MASTER_KEY or REFERRALS_MASTER_KEY_FILE is set.
    Demo,
}

/// Runs the command named on the command line and returns the process's exit status:
/// 0 on success, 1 with a one-line reason on standard error otherwise.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let outcome = match cli.command {
        Command::Migrate => migrate(&cli.database_url).await,
        Command::Demo => demo(&cli.database_url).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("referrals: {}", one_line_reason(&error));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes into one line, leaving out a cause whose text the
/// message before it already contains (many errors print their source themselves).
fn one_line_reason(error: &anyhow::Error) -> String {
    let mut reason = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !reason.contains(&text) {
            if !reason.is_empty() {
                reason.push_str(": ");
            }
            reason.push_str(&text);
        }
    }
    reason
}

/// JSON log lines on standard error, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let options = database::parse_url(database_url)?;
    if database::create_database_if_missing(&options).await? {
        tracing::info!(database = %database::describe(&options), "created database");
    }
    let pool = database::connect(&options, 2).await?;
    database::migrate(&pool).await?;
    tracing::info!(database = %database::describe(&options), "migrations applied");
    Ok(())
}

async fn demo(database_url: &str) -> anyhow::Result<()> {
    let master_key = config::master_key_for_demo()?;
    migrate(database_url).await?;
    let options = database::parse_url(database_url)?;
    println!(
        "Demo database {} is migrated; personal data will be encrypted under master key {}.",
        database::describe(&options),
        master_key.id()
    );
    Ok(())
}
