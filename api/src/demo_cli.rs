//! `referrals demo`: migrates the database, loads the demo data set once, prints the demo
//! logins and three requests to try, and serves the API with its workers.
//!
//! The first run generates the data set, loads it through the application's commands
//! and stores the logins in `.data/demo-logins.json`. Later runs find the load recorded
//! in `demo_fixture_loads` and print the stored logins again.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use referrals_domain::ids::AgencyId;
use referrals_fixtures::load::{self, DemoLogin};
use referrals_fixtures::{generate, DEFAULT_SEED};
use referrals_projections::models;
use referrals_projections::runner::ProjectionRunner;
use referrals_store::database;
use serde::{Deserialize, Serialize};

use crate::config;
use crate::server::ServeOptions;

/// File under [`config::DATA_DIR`] that stores the demo logins.
const LOGINS_FILE: &str = "demo-logins.json";

/// The stored demo logins and the agency they belong to.
#[derive(Debug, Serialize, Deserialize)]
struct StoredLogins {
    agency_id: AgencyId,
    logins: Vec<DemoLogin>,
}

/// Runs the demo until SIGTERM or Ctrl-C.
///
/// # Errors
/// Returns an error when the master key is invalid, the database cannot be migrated, an
/// earlier load stopped half-way, the data set fails to load, or the server fails.
pub async fn run(database_url: &str, bind: SocketAddr, scale: f64) -> anyhow::Result<()> {
    let master_key = config::master_key_for_demo()?;
    crate::cli::migrate(database_url).await?;
    let options = database::parse_url(database_url)?;
    let description = database::describe(&options);

    let logins_path = Path::new(config::DATA_DIR).join(LOGINS_FILE);
    let logins = {
        let pool = database::connect(&options, 10).await?;
        let recorded = load::recorded_load(&pool)
            .await
            .context("reading the demo load marker failed")?;
        match recorded {
            None => {
                println!(
                    "Loading the demo data set (seed {DEFAULT_SEED}, scale {scale}) into {description}; this takes a few minutes at scale 1."
                );
                let dataset = generate(DEFAULT_SEED, scale)?;
                let loaded = load::load(&pool, master_key.clone(), &dataset).await?;
                let stored = StoredLogins {
                    agency_id: loaded.agency_id,
                    logins: loaded.logins,
                };
                write_logins(&logins_path, &stored)?;
                catch_up_read_models(&pool).await?;
                skip_history_notifications(&pool).await?;
                Some(stored)
            }
            Some((agency_id, true)) => {
                println!("The demo data is already loaded into {description}; reusing it.");
                read_logins(&logins_path, agency_id)
            }
            Some((_, false)) => anyhow::bail!(
                "an earlier demo data load into {description} stopped before it finished; \
                 drop that database (for example `dropdb` with the same URL) and run the demo again"
            ),
        }
    };

    let announce = announcement(&description, logins.as_ref(), &logins_path);
    let options = ServeOptions {
        bind,
        workers: true,
        announce: Some(announce),
        tls: None,
        cors_origins: Vec::new(),
        database_read_url: None,
    };
    crate::server::serve(database_url, master_key, options).await
}

/// Applies the loaded events to every read model before the server starts, so the
/// printed requests see the data. Events of transactions that other sessions of the
/// PostgreSQL cluster still hold back are left to the server's workers.
async fn catch_up_read_models(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let runner = ProjectionRunner::new(pool.clone());
    for projection in models::all() {
        let applied = runner
            .catch_up(projection.as_ref())
            .await
            .with_context(|| format!("updating the read model {} failed", projection.name()))?;
        tracing::info!(
            projection = projection.name(),
            applied,
            "read model caught up"
        );
    }
    Ok(())
}

/// Moves the notification outbox past the loaded history, so the demo does not queue a
/// message for every event of the data set's 18 months when it starts serving. Messages
/// for commands sent to the running demo are queued as usual.
async fn skip_history_notifications(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, transaction_id, position)
         SELECT $1, transaction_id, position FROM events
          ORDER BY transaction_id DESC, position DESC LIMIT 1
         ON CONFLICT (projection) DO UPDATE
            SET transaction_id = excluded.transaction_id, position = excluded.position,
                updated_at = now()",
    )
    .bind(referrals_workers::outbox::OUTBOX_PROJECTION)
    .execute(pool)
    .await
    .context("moving the notification outbox past the demo history failed")?;
    tracing::info!("notifications for the loaded history skipped");
    Ok(())
}

/// Reads the stored logins, or returns `None` (with a warning) when the file is missing,
/// unreadable or belongs to another load.
fn read_logins(path: &Path, agency_id: AgencyId) -> Option<StoredLogins> {
    let stored = std::fs::read_to_string(path)
        .map_err(anyhow::Error::from)
        .and_then(|text| Ok(serde_json::from_str::<StoredLogins>(&text)?));
    match stored {
        Ok(stored) if stored.agency_id == agency_id => Some(stored),
        Ok(stored) => {
            tracing::warn!(
                path = %path.display(),
                file_agency_id = %stored.agency_id,
                %agency_id,
                "the stored demo logins belong to another database"
            );
            None
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the stored demo logins");
            None
        }
    }
}

/// Writes the logins readable by the owner only, because they contain passwords and TOTP
/// secrets.
fn write_logins(path: &Path, stored: &StoredLogins) -> anyhow::Result<()> {
    use std::io::Write;

    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        let text = serde_json::to_string_pretty(stored).map_err(std::io::Error::other)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")
    };
    write().with_context(|| format!("writing the demo logins to {} failed", path.display()))
}

/// The text printed once the server listens; `{address}` is replaced with the bound
/// address.
fn announcement(description: &str, stored: Option<&StoredLogins>, logins_path: &Path) -> String {
    let mut text = format!(
        "Demo database {description} is ready. Serving on http://{{address}}; stop with Ctrl-C.\n\
         Events recorded later reach the read models within seconds; \
         `referrals projections status` shows how far behind each one is.\n"
    );
    let Some(stored) = stored else {
        let _ = writeln!(
            text,
            "The demo logins are unknown because {} is missing or belongs to another database. \
             Drop the database and run the demo again to create new ones.",
            logins_path.display()
        );
        return text;
    };

    let _ = writeln!(text, "\nDemo logins (also in {}):", logins_path.display());
    for login in &stored.logins {
        let _ = write!(
            text,
            "  {:<19} {:<34} password {}",
            login.role, login.email, login.password
        );
        if let Some(secret) = &login.totp_secret {
            let _ = write!(text, "  TOTP secret {secret}");
        }
        text.push('\n');
    }

    if let Some(recruiter) = stored.logins.iter().find(|login| login.role == "recruiter") {
        let session = format!(
            "curl -s -X POST http://{{address}}/v1/auth/sessions -H 'content-type: application/json' \
             -d '{{\"email\":\"{}\",\"password\":\"{}\"}}'",
            recruiter.email, recruiter.password
        );
        let _ = writeln!(text, "\nFirst requests to try:");
        let _ = writeln!(text, "  curl -s http://{{address}}/readyz");
        let _ = writeln!(text, "  {session}");
        let _ = writeln!(
            text,
            "  TOKEN=$({session} | sed -E 's/.*\"token\":\"([^\"]+)\".*/\\1/') && \
             curl -s -H \"authorization: Bearer $TOKEN\" 'http://{{address}}/v1/referrals?limit=5'"
        );
    }
    text
}
