//! Command-line interface: parses the arguments, sets up logging and runs one command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use referrals_store::database::{self, DEFAULT_DATABASE_URL};
use tracing_subscriber::EnvFilter;

use crate::config;
use crate::server::ServeOptions;

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
    /// Run the demo: create and migrate the database, generate a master key into
    /// .data/master.key unless REFERRALS_MASTER_KEY or REFERRALS_MASTER_KEY_FILE is set,
    /// and serve the API with its workers.
    Demo {
        /// Address to listen on.
        #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
    },
    /// Run the HTTP API and, unless --no-workers is given, the projection workers.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Run only the API; leave the projection workers to other processes.
        #[arg(long)]
        no_workers: bool,
    },
    /// Inspect and rebuild the read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Bootstrap agencies (needs the master key).
    #[command(subcommand)]
    Agency(crate::accounts_cli::AgencyCommand),
    /// Bootstrap platform operators (needs the master key).
    #[command(subcommand)]
    Operator(crate::accounts_cli::OperatorCommand),
    /// Verify the tamper evidence of the event store.
    #[command(subcommand)]
    Audit(crate::audit_cli::AuditCommand),
    /// Manage the master key that wraps the encryption keys.
    #[command(subcommand)]
    Keys(crate::keys_cli::KeysCommand),
    /// Measure the product on this machine against PostgreSQL's own append limit and
    /// write a Markdown report. Creates a scratch database on the server of DATABASE_URL
    /// and drops it at the end; needs pgbench, psql and bash. The full run generates
    /// 1,000,000 events and takes tens of minutes.
    Bench {
        /// Run the short profile (2 s per level, 1,000 events), which finishes in one to two
        /// minutes; its figures are rough.
        #[arg(long)]
        quick: bool,
        /// File the Markdown report is written to.
        #[arg(long, default_value = "BENCHMARKS.md")]
        output: std::path::PathBuf,
        /// Events to generate for the projection and export measurements, instead of the
        /// profile's 1,000,000 (full) or 1,000 (quick).
        #[arg(long)]
        events: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Print each projection's position, events applied, events behind and seconds
    /// behind, and where a stopped projection stopped.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild read models from the event store. The live tables stay readable: the
    /// rebuild fills copies and swaps their rows in at the end.
    Rebuild {
        /// The projection to rebuild; every read model when left out.
        name: Option<String>,
    },
}

/// Runs the command named on the command line and returns the process's exit status:
/// 0 on success, 1 with a one-line reason on standard error otherwise.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let outcome = match cli.command {
        Command::Migrate => migrate(&cli.database_url).await,
        Command::Demo { bind } => demo(&cli.database_url, bind).await,
        Command::Serve { bind, no_workers } => match config::master_key_from_env() {
            Ok(master_key) => {
                let options = ServeOptions {
                    bind,
                    workers: !no_workers,
                    announce: None,
                };
                crate::server::serve(&cli.database_url, master_key, options).await
            }
            Err(error) => Err(error.into()),
        },
        Command::Projections(ProjectionsCommand::Status { json }) => {
            crate::projections_cli::status(&cli.database_url, json).await
        }
        Command::Projections(ProjectionsCommand::Rebuild { name }) => {
            crate::projections_cli::rebuild(&cli.database_url, name.as_deref()).await
        }
        Command::Agency(command) => {
            crate::accounts_cli::run_agency(&cli.database_url, command).await
        }
        Command::Operator(command) => {
            crate::accounts_cli::run_operator(&cli.database_url, command).await
        }
        Command::Audit(command) => crate::audit_cli::run(&cli.database_url, command).await,
        Command::Keys(command) => crate::keys_cli::run(&cli.database_url, command).await,
        Command::Bench {
            quick,
            output,
            events,
        } => {
            let options = crate::bench::BenchOptions {
                quick,
                output,
                events,
            };
            crate::bench::run(&cli.database_url, options).await
        }
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

async fn demo(database_url: &str, bind: std::net::SocketAddr) -> anyhow::Result<()> {
    let master_key = config::master_key_for_demo()?;
    migrate(database_url).await?;
    let options = database::parse_url(database_url)?;
    let key_source = if std::env::var_os("REFERRALS_MASTER_KEY").is_some()
        || std::env::var_os("REFERRALS_MASTER_KEY_FILE").is_some()
    {
        "the master key from your environment".to_owned()
    } else {
        format!("the master key in {}/master.key", config::DATA_DIR)
    };
    let announce = format!(
        "Demo database {database} is migrated; personal data is encrypted under {key_source}.\n\
         Serving on http://{{address}} (try: curl http://{{address}}/readyz); stop with Ctrl-C.\n\
         Next, in another terminal: eval \"$(./dev env demo)\"; \
         export REFERRALS_MASTER_KEY_FILE={data}/master.key; \
         cargo run -q --release --bin referrals -- agency create --name \"Acme Staffing\" \
         --admin-email admin@example.com (the README's HTTP API section goes on from there).",
        database = database::describe(&options),
        data = config::DATA_DIR,
    );
    let options = ServeOptions {
        bind,
        workers: true,
        announce: Some(announce),
    };
    crate::server::serve(database_url, master_key, options).await
}
