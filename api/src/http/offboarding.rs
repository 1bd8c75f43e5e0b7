//! Agency off-boarding for platform operators: the full export that is returned to the
//! agency, and the deletion of every row and key of the agency.
//!
//! The export is the only response in which an operator sees an agency's personal data.
//! Both steps are recorded as events of the platform tenant with the operator as actor.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use referrals_domain::ids::AgencyId;
use referrals_domain::privacy::PrivacyCommand;
use referrals_domain::values::Sealed;
use referrals_store::application::AppError;
use referrals_store::crypto::{open_field, Field};
use referrals_store::keys::KeyError;
use referrals_store::offboarding;
use referrals_store::personal::PersonalData;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit_events::{open_sealed_fields, AuditEvent, ERASED, EVENT_COLUMNS};
use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{database_error, parse_id};
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_agency))
        .routes(routes!(delete_agency))
}

/// Tables exported as CSV besides those of the `read_models` and `analytics` schemas.
/// Keys, keyed hashes, idempotency records and the hash-chain bookkeeping are left out:
/// they are secrets or are meaningless outside this platform.
const EXPORTED_PUBLIC_TABLES: &[&str] = &["user_accounts", "access_log", "subject_requests"];

/// Columns never exported, because they hold ciphertext or keyed hashes that only this
/// platform's keys can use.
const WITHHELD_COLUMNS: &[&str] = &["sealed_export", "contact_keys"];

/// Exports everything an agency holds, for returning it to the agency before deletion.
///
/// The response is `multipart/mixed`. Its first part is `events.ndjson`: every event of
/// the agency in global order, one JSON object per line in the shape of the audit export,
/// with personal fields (names, e-mail addresses, phone numbers, notes) decrypted. Fields
/// of erased subjects read `[erased]`, and credentials stay `[secret]`. Each further part is one
/// read model as CSV with a header row, named `<schema>.<table>.csv`; sealed columns
/// (`*_sealed`) are decrypted the same way. Every part has a `Content-Disposition`
/// header with its file name.
#[utoipa::path(post, path = "/v1/platform/agencies/{id}/export", tag = "platform",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The agency's id")),
    responses(
        (status = 200, description = "The export, as multipart/mixed: events.ndjson, then one CSV file per read model", body = String, content_type = "multipart/mixed"),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agency", body = Problem, content_type = "application/problem+json")))]
pub async fn export_agency(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ExportAgency)?;
    let agency_id = AgencyId(parse_id("id", &id)?);
    if !offboarding::agency_exists(&state.app, agency_id).await? {
        return Err(ApiError::not_found("agency"));
    }

    // NOTE: the whole export is built in memory before it is sent, which bounds the size
    // of an agency that can be exported by the server's memory.
    let boundary = format!("agency-export-{}", Uuid::now_v7().simple());
    let mut body = Vec::new();
    let (events, ndjson) = events_ndjson(&state, agency_id).await?;
    push_part(
        &mut body,
        &boundary,
        "events.ndjson",
        "application/x-ndjson",
        &ndjson,
    );
    for (schema, table) in exported_tables(&state.pool).await.map_err(database_error)? {
        let csv = table_csv(&state, agency_id, &schema, &table).await?;
        let file_name = format!("{schema}.{table}.csv");
        push_part(
            &mut body,
            &boundary,
            &file_name,
            "text/csv; charset=utf-8",
            csv.as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());

    let command = PrivacyCommand::RecordAgencyExport {
        agency_id,
        events,
        at: permitted.metadata().recorded_at,
    };
    state
        .app
        .privacy
        .execute(
            &Uuid::now_v7().to_string(),
            command,
            &permitted.metadata(),
            None,
        )
        .await
        .map_err(AppError::from)?;
    tracing::info!(%agency_id, events, bytes = body.len(), "agency exported");

    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}"),
        )],
        body,
    )
        .into_response())
}

fn push_part(
    body: &mut Vec<u8>,
    boundary: &str,
    file_name: &str,
    content_type: &str,
    content: &[u8],
) {
    let headers = format!(
        "--{boundary}\r\nContent-Type: {content_type}\r\n\
         Content-Disposition: attachment; filename=\"{file_name}\"\r\n\r\n"
    );
    body.extend_from_slice(headers.as_bytes());
    body.extend_from_slice(content);
    body.extend_from_slice(b"\r\n");
}

/// Every event of the agency as NDJSON with personal fields opened; returns the count.
async fn events_ndjson(state: &AppState, agency_id: AgencyId) -> Result<(u64, Vec<u8>), ApiError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE agency_id = $1 ORDER BY position");
    let mut rows = sqlx::query(&sql).bind(agency_id.0).fetch(&state.pool);
    let mut lines = Vec::new();
    let mut count = 0;
    while let Some(row) = rows.try_next().await.map_err(database_error)? {
        let mut event = AuditEvent::from_row(&row).map_err(database_error)?;
        if let Ok(subject_id) = Uuid::parse_str(&event.aggregate_id) {
            open_sealed_fields(
                state.app.personal(),
                agency_id,
                &event.aggregate_type,
                subject_id,
                &mut [&mut event.payload],
            )
            .await
            .map_err(AppError::from)?;
        }
        serde_json::to_writer(&mut lines, &event).map_err(|error| ApiError::internal(&error))?;
        lines.push(b'\n');
        count += 1;
    }
    Ok((count, lines))
}

/// The tables exported as CSV: every table of `read_models` and `analytics`, and
/// [`EXPORTED_PUBLIC_TABLES`].
async fn exported_tables(pool: &PgPool) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
          WHERE table_type = 'BASE TABLE'
            AND (table_schema IN ('read_models', 'analytics')
                 OR (table_schema = 'public' AND table_name = ANY($1)))
          ORDER BY table_schema, table_name",
    )
    .bind(EXPORTED_PUBLIC_TABLES)
    .fetch_all(pool)
    .await
}

/// One table's rows of the agency as CSV. A table without an `agency_id` column belongs
/// to the agency through its `ambassador_id`.
async fn table_csv(
    state: &AppState,
    agency_id: AgencyId,
    schema: &str,
    table: &str,
) -> Result<String, ApiError> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&state.pool)
    .await
    .map_err(database_error)?;
    let columns: Vec<String> = columns
        .into_iter()
        .filter(|column| !WITHHELD_COLUMNS.contains(&column.as_str()))
        .collect();
    let filter = if columns.iter().any(|column| column == "agency_id") {
        "WHERE agency_id = $1"
    } else if columns.iter().any(|column| column == "ambassador_id") {
        "WHERE ambassador_id IN (SELECT ambassador_id FROM read_models.ambassador_summaries
                                  WHERE agency_id = $1)"
    } else {
        return Ok(csv_line(&columns));
    };
    let sql = format!(
        "SELECT row_to_json(exported)::text FROM {}.{} AS exported {filter}",
        quote_identifier(schema),
        quote_identifier(table)
    );
    let rows: Vec<String> = sqlx::query_scalar(&sql)
        .bind(agency_id.0)
        .fetch_all(&state.pool)
        .await
        .map_err(database_error)?;

    let mut csv = csv_line(&columns);
    for row in rows {
        let row: Value = serde_json::from_str(&row).map_err(|error| ApiError::internal(&error))?;
        let mut cells = Vec::with_capacity(columns.len());
        for column in &columns {
            let cell = match &row[column.as_str()] {
                Value::Null => String::new(),
                Value::String(text) if column.ends_with("_sealed") => {
                    open_column(state.app.personal(), agency_id, &row, column, text).await?
                }
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            cells.push(cell);
        }
        csv.push_str(&csv_line(&cells));
    }
    Ok(csv)
}

/// Opens a sealed read-model column. Its subject is the row's candidate (`referral_id`)
/// or ambassador (`ambassador_id`), and its field is named in the column.
async fn open_column(
    personal: &PersonalData,
    agency_id: AgencyId,
    row: &Value,
    column: &str,
    sealed: &str,
) -> Result<String, ApiError> {
    let field = if column.contains("email") {
        Field::Email
    } else if column.contains("phone") {
        Field::Phone
    } else {
        Field::Name
    };
    let subject = ["referral_id", "ambassador_id"]
        .iter()
        .find_map(|name| row[*name].as_str())
        .and_then(|text| Uuid::parse_str(text).ok())
        .ok_or_else(|| {
            ApiError::internal(&format!(
                "the sealed column {column} has no subject id in its row"
            ))
        })?;
    match personal.vault().data_key(agency_id, subject).await {
        Ok(key) => open_field(&key, agency_id, subject, field, &Sealed(sealed.to_owned()))
            .map_err(|error| ApiError::internal(&error)),
        Err(KeyError::Erased) => Ok(ERASED.to_owned()),
        Err(error) => Err(AppError::from(error).into()),
    }
}

fn csv_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (index, cell) in cells.iter().enumerate() {
        if index > 0 {
            line.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            let _ = write!(line, "\"{}\"", cell.replace('"', "\"\""));
        } else {
            line.push_str(cell);
        }
    }
    line.push('\n');
    line
}

/// Quotes an SQL identifier read from the catalog.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The outcome of an agency deletion.
#[derive(Serialize, ToSchema)]
pub struct DeletedAgencyResponse {
    /// The deleted agency.
    pub agency_id: Uuid,
    /// The number of rows deleted, over every table.
    pub rows_deleted: u64,
}

/// Deletes every row of an agency in every table, its events and access log included,
/// and its keys. Export the agency first: nothing can be recovered afterwards except from
/// backups, which age out within seven days.
#[utoipa::path(delete, path = "/v1/platform/agencies/{id}", tag = "platform",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The agency's id")),
    responses(
        (status = 200, description = "Deleted", body = DeletedAgencyResponse),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agency, or already deleted", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_agency(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<DeletedAgencyResponse>, ApiError> {
    let permitted = caller.authorize(Action::DeleteAgency)?;
    let agency_id = AgencyId(parse_id("id", &id)?);
    let rows = offboarding::delete_agency(&state.app, &permitted.metadata(), agency_id).await?;
    Ok(axum::Json(DeletedAgencyResponse {
        agency_id: agency_id.0,
        rows_deleted: rows,
    }))
}
