//! Deleting an off-boarded agency: every row of the agency in every table, its events
//! and access log included, and its keys.
//!
//! This is the only code that deletes events. The append-only triggers on `events` and
//! `access_log` let a DELETE through only for rows of the agency named in the
//! transaction-local setting `referrals.deleting_agency`, which is set here and ends with
//! the transaction.

use referrals_domain::ids::{AgencyId, PLATFORM_AGENCY};
use referrals_domain::privacy::PrivacyCommand;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::application::{AppError, Application};
use crate::event_store::CommandMetadata;

fn unavailable(error: sqlx::Error) -> AppError {
    AppError::Unavailable(error.to_string())
}

/// Returns true when the agency has any event, which distinguishes an existing agency
/// from an unknown id.
///
/// # Errors
/// [`AppError::Unavailable`] when the query fails.
pub async fn agency_exists(app: &Application, agency_id: AgencyId) -> Result<bool, AppError> {
    if agency_id == PLATFORM_AGENCY {
        return Ok(false);
    }
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE agency_id = $1)")
        .bind(agency_id.0)
        .fetch_one(app.pool())
        .await
        .map_err(unavailable)
}

/// Deletes every row and key of `agency_id` in one transaction, then records an
/// `AgencyDeleted` event under the platform tenant with the operator in `metadata` as
/// actor. Returns the number of rows deleted. `metadata` must name the platform tenant.
///
/// # Errors
/// [`AppError::NotFound`] when the agency has no events (unknown, or already deleted),
/// [`AppError::Unavailable`] when the database fails; nothing is deleted then.
pub async fn delete_agency(
    app: &Application,
    metadata: &CommandMetadata,
    agency_id: AgencyId,
) -> Result<u64, AppError> {
    if !agency_exists(app, agency_id).await? {
        return Err(AppError::NotFound("agency"));
    }
    let mut transaction = app.pool().begin().await.map_err(unavailable)?;
    sqlx::query("SELECT set_config('referrals.deleting_agency', $1, true)")
        .bind(agency_id.0.to_string())
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;

    let mut rows = delete_dependent_rows(&mut transaction, agency_id).await?;
    rows += delete_agency_tables(&mut transaction, agency_id).await?;
    transaction.commit().await.map_err(unavailable)?;
    app.personal().vault().forget_agency(agency_id);

    let record_id = Uuid::now_v7();
    let command = PrivacyCommand::RecordAgencyDeletion {
        agency_id,
        rows,
        at: metadata.recorded_at,
    };
    app.privacy
        .execute(&record_id.to_string(), command, metadata, None)
        .await?;
    tracing::info!(%agency_id, rows, "agency deleted");
    Ok(rows)
}

/// Deletes the rows that belong to the agency only through another row: these must go
/// before the rows they point to.
async fn delete_dependent_rows(
    transaction: &mut Transaction<'_, Postgres>,
    agency_id: AgencyId,
) -> Result<u64, AppError> {
    let statements = [
        // postgres-es snapshots are keyed by aggregate only.
        "DELETE FROM snapshots AS snapshot
          USING (SELECT DISTINCT aggregate_type, aggregate_id FROM events
                  WHERE agency_id = $1) AS owned
          WHERE snapshot.aggregate_type = owned.aggregate_type
            AND snapshot.aggregate_id = owned.aggregate_id",
        "DELETE FROM read_models.ambassador_summary_referrals
          WHERE ambassador_id IN (SELECT ambassador_id FROM read_models.ambassador_summaries
                                   WHERE agency_id = $1)",
        "DELETE FROM read_models.ambassador_summary_payouts
          WHERE ambassador_id IN (SELECT ambassador_id FROM read_models.ambassador_summaries
                                   WHERE agency_id = $1)",
        "DELETE FROM user_logins
          WHERE user_id IN (SELECT user_id FROM user_accounts WHERE agency_id = $1)",
        // Invitations, sessions, tokens, TOTP steps and activity go with their user
        // through ON DELETE CASCADE; they are deleted here first only to be counted.
        "DELETE FROM invitations
          WHERE user_id IN (SELECT user_id FROM user_accounts WHERE agency_id = $1)",
        "DELETE FROM sessions
          WHERE user_id IN (SELECT user_id FROM user_accounts WHERE agency_id = $1)",
        "DELETE FROM access_tokens
          WHERE user_id IN (SELECT user_id FROM user_accounts WHERE agency_id = $1)",
        "DELETE FROM totp_last_steps
          WHERE user_id IN (SELECT user_id FROM user_accounts WHERE agency_id = $1)",
        "DELETE FROM user_activity
          WHERE user_id IN (SELECT user_id FROM user_accounts WHERE agency_id = $1)",
    ];
    let mut rows = 0;
    for statement in statements {
        rows += sqlx::query(statement)
            .bind(agency_id.0)
            .execute(&mut **transaction)
            .await
            .map_err(unavailable)?
            .rows_affected();
    }
    Ok(rows)
}

/// Deletes the agency's rows from every table with an `agency_id` column, found in the
/// catalog so that a table added later is covered without a change here.
async fn delete_agency_tables(
    transaction: &mut Transaction<'_, Postgres>,
    agency_id: AgencyId,
) -> Result<u64, AppError> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT columns.table_schema::text, columns.table_name::text
           FROM information_schema.columns AS columns
           JOIN information_schema.tables AS tables
             ON tables.table_schema = columns.table_schema
            AND tables.table_name = columns.table_name
          WHERE columns.column_name = 'agency_id'
            AND tables.table_type = 'BASE TABLE'
            AND columns.table_schema NOT IN ('pg_catalog', 'information_schema')
          ORDER BY columns.table_schema, columns.table_name",
    )
    .fetch_all(&mut **transaction)
    .await
    .map_err(unavailable)?;

    let mut rows = 0;
    for (schema, table) in tables {
        let statement = format!(
            "DELETE FROM {}.{} WHERE agency_id = $1",
            quote_identifier(&schema),
            quote_identifier(&table)
        );
        rows += sqlx::query(&statement)
            .bind(agency_id.0)
            .execute(&mut **transaction)
            .await
            .map_err(unavailable)?
            .rows_affected();
    }
    Ok(rows)
}

/// Quotes an SQL identifier read from the catalog.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
