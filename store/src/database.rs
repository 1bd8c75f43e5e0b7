//! Connecting to PostgreSQL, creating the database and applying the migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// The migrations of `migrations/` at the workspace root, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The database URL used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://localhost:5432/referrals";

/// How long a caller waits for a pooled connection before the pool gives up.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pooled connection idle for longer than this is pinged before it is handed out.
/// sqlx pings on every checkout by default, which adds one round trip to each statement
/// of a command. A connection used this recently is trusted: if PostgreSQL dropped it
/// meanwhile, the statement fails as unavailable (503) and sqlx discards the connection.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Errors of connecting and migrating.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The URL cannot be parsed.
    #[error("invalid DATABASE_URL: {0}; expected postgres://USER@HOST:PORT/DATABASE")]
    InvalidUrl(String),
    /// PostgreSQL could not be reached or rejected the login.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        /// Host, port and database, without the password.
        target: String,
        /// The underlying error.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another statement failed.
    #[error("database statement failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// Returns true for errors that mean the database is out of reach rather than wrong: no
/// connection, the pool timed out, or the server is shutting down, starting up or out of
/// connections. A retry after a pause may succeed, so the API responds 503, not 500.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 is "connection exception"; 57P01 to 57P03 are an
        // administrator's shutdown, a crash shutdown and "cannot connect now" during
        // startup; 53300 is "too many connections" (PostgreSQL 15 appendix A).
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Parses a database URL.
///
/// # Errors
/// Returns [`DatabaseError::InvalidUrl`] when it is not a PostgreSQL URL.
pub fn parse_url(url: &str) -> Result<PgConnectOptions, DatabaseError> {
    PgConnectOptions::from_str(url)
        .map(|options| options.log_statements(tracing::log::LevelFilter::Debug))
        .map_err(|error| DatabaseError::InvalidUrl(error.to_string()))
}

/// Host, port and database name of a connection, for messages: never the password.
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)")
    )
}

/// Opens a connection pool of `max_connections`.
///
/// # Errors
/// Returns [`DatabaseError::Connect`] when PostgreSQL cannot be reached.
pub async fn connect(
    options: &PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, DatabaseError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // A request waits this long for a connection before it gets a 503. While
        // PostgreSQL is down every request waits the full time, so it is kept short.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for > PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options.clone())
        .await
        .map_err(|source| DatabaseError::Connect {
            target: describe(options),
            source,
        })
}

/// Creates the database named in `options` when it does not exist yet, by connecting to
/// the server's `postgres` database. Returns true when it was created.
///
/// # Errors
/// Returns an error when the server cannot be reached or the role may not create databases.
pub async fn create_database_if_missing(options: &PgConnectOptions) -> Result<bool, DatabaseError> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(false);
    };
    let server = options.clone().database("postgres");
    let mut connection = sqlx::PgConnection::connect_with(&server)
        .await
        .map_err(|source| DatabaseError::Connect {
            target: describe(&server),
            source,
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut connection)
            .await?;
    if exists {
        return Ok(false);
    }
    // Identifiers cannot be bound as parameters; quote_ident makes the name safe to splice.
    let quoted: String = sqlx::query_scalar("SELECT quote_ident($1)")
        .bind(&name)
        .fetch_one(&mut connection)
        .await?;
    match sqlx::query(&format!("CREATE DATABASE {quoted}"))
        .execute(&mut connection)
        .await
    {
        Ok(_) => Ok(true),
        // Another process created it between the check and the statement.
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Applies every migration not applied yet.
///
/// # Errors
/// Returns [`DatabaseError::Migrate`] when a migration fails or an applied one was edited.
pub async fn migrate(pool: &PgPool) -> Result<(), DatabaseError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
