//! Command-line interface: parses the arguments, sets up logging and runs one command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use referrals_store::database::{self, DEFAULT_DATABASE_URL};
use tracing_subscriber::EnvFilter;

use crate::config;
use crate::http::edge::parse_cors_origins;
use crate::server::ServeOptions;
use crate::tls::TlsFiles;

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
    /// load the demo data set unless it is loaded already, print the demo logins (kept in
    /// .data/demo-logins.json) and serve the API with its workers.
    Demo {
        /// Address to listen on.
        #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Size of the demo data set on the first run: 1 is about 3,000 ambassadors and
        /// 12,000 referrals; 0.05 loads in seconds. Ignored once data is loaded.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Run the HTTP API and, unless --no-workers is given, the background workers.
    Serve(ServeArgs),
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

/// Options of `referrals serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    /// Run only the API; leave the projection and import workers, the scheduled rules and
    /// the notification dispatcher to other processes.
    #[arg(long)]
    no_workers: bool,
    /// PEM file with the certificate chain, leaf first. With --tls-key-file the server
    /// speaks HTTPS only (TLS 1.2 and 1.3) and sends Strict-Transport-Security.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<std::path::PathBuf>,
    /// PEM file with the private key of the certificate in --tls-cert-file.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<std::path::PathBuf>,
    /// Comma-separated origins that browsers may call the API from, as
    /// scheme://host[:port], e.g. https://app.example.com. CORS is closed when empty.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    cors_allowed_origins: Vec<String>,
    /// PostgreSQL URL of a streaming replica of DATABASE_URL. List and report
    /// endpoints read read models from it; commands stay on DATABASE_URL.
    #[arg(long, env = "DATABASE_READ_URL", hide_env_values = true)]
    database_read_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Print each projection's position, events applied, events behind and seconds
    /// behind, and where a stopped projection stopped. With DATABASE_READ_URL, also the
    /// replica's replay lag and the same figures as read from the replica.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// PostgreSQL URL of a streaming replica of DATABASE_URL to report on.
        #[arg(long, env = "DATABASE_READ_URL", hide_env_values = true)]
        database_read_url: Option<String>,
    },
    /// Apply the events after each checkpoint to every read model and referral_schedule,
    /// then exit without starting the workers. The payout requester and
    /// notification_outbox are left behind, because catching them up would request
    /// payouts or queue messages.
    CatchUp,
    /// Rebuild read models from the event store. The live tables stay readable: the
    /// rebuild fills copies and swaps their rows in at the end.
    Rebuild {
        /// The projection to rebuild; every read model and referral_schedule when left
        /// out. notification_outbox is rejected because a rebuild would resend messages.
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
        Command::Demo { bind, scale } => crate::demo_cli::run(&cli.database_url, bind, scale).await,
        Command::Serve(args) => serve(&cli.database_url, args).await,
        Command::Projections(ProjectionsCommand::Status {
            json,
            database_read_url,
        }) => {
            crate::projections_cli::status(&cli.database_url, database_read_url.as_deref(), json)
                .await
        }
        Command::Projections(ProjectionsCommand::CatchUp) => {
            crate::projections_cli::catch_up(&cli.database_url).await
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

/// JSON log lines on standard error, filtered by `RUST_LOG` (default `info`). Panics are
/// logged there too, without a message formatted at run time (see [`crate::panic_log`]).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    crate::panic_log::install();
}

/// Creates the database when it does not exist and applies the migrations.
pub(crate) async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let options = database::parse_url(database_url)?;
    if database::create_database_if_missing(&options).await? {
        tracing::info!(database = %database::describe(&options), "created database");
    }
    let pool = database::connect(&options, 2).await?;
    database::migrate(&pool).await?;
    tracing::info!(database = %database::describe(&options), "migrations applied");
    Ok(())
}

async fn serve(database_url: &str, args: ServeArgs) -> anyhow::Result<()> {
    let master_key = config::master_key_from_env()?;
    let options = ServeOptions {
        bind: args.bind,
        workers: !args.no_workers,
        announce: None,
        tls: TlsFiles::from_options(args.tls_cert_file, args.tls_key_file)?,
        cors_origins: parse_cors_origins(&args.cors_allowed_origins)?,
        database_read_url: args.database_read_url,
    };
    crate::server::serve(database_url, master_key, options).await
}
