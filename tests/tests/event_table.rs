//! The events table's own guarantees: append-only for the application, a global order,
//! and the agency taken from the metadata.

use sqlx::PgPool;
use uuid::Uuid;

const AGENCY: &str = "01938a6d-0000-7000-8000-000000000001";

async fn insert_event(
    pool: &PgPool,
    aggregate_id: &str,
    sequence: i64,
    metadata: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('referral', $1, $2, 'ReferralContacted', '1.0', '{}'::json, $3::json)",
    )
    .bind(aggregate_id)
    .bind(sequence)
    .bind(metadata)
    .execute(pool)
    .await
    .map(|_| ())
}

fn metadata() -> String {
    format!(r#"{{"agency_id":"{AGENCY}","actor_id":"system","actor_role":"system:test"}}"#)
}

fn sql_state(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .map(|code| code.into_owned())
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn update_on_events_is_rejected(pool: PgPool) {
    insert_event(&pool, "r-1", 1, &metadata()).await.unwrap();

    let error = sqlx::query("UPDATE events SET event_type = 'Rewritten'")
        .execute(&pool)
        .await
        .unwrap_err();

    assert_eq!(sql_state(&error).as_deref(), Some("23001"));
    assert!(error.to_string().contains("append-only"), "{error}");
    let event_type: String = sqlx::query_scalar("SELECT event_type FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(event_type, "ReferralContacted");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn delete_on_events_is_rejected(pool: PgPool) {
    insert_event(&pool, "r-1", 1, &metadata()).await.unwrap();

    let error = sqlx::query("DELETE FROM events")
        .execute(&pool)
        .await
        .unwrap_err();

    assert_eq!(sql_state(&error).as_deref(), Some("23001"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn truncate_on_events_is_rejected(pool: PgPool) {
    insert_event(&pool, "r-1", 1, &metadata()).await.unwrap();

    let error = sqlx::query("TRUNCATE events")
        .execute(&pool)
        .await
        .unwrap_err();

    assert_eq!(sql_state(&error).as_deref(), Some("23001"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn events_get_global_order_columns(pool: PgPool) {
    insert_event(&pool, "r-1", 1, &metadata()).await.unwrap();
    insert_event(&pool, "r-2", 1, &metadata()).await.unwrap();

    let rows: Vec<(i64, String, Uuid, bool)> = sqlx::query_as(
        "SELECT position, transaction_id::text, agency_id, recorded_at <= clock_timestamp()
           FROM events ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();

    assert_eq!(rows.len(), 2);
    assert!(rows[0].0 < rows[1].0, "positions must increase: {rows:?}");
    assert_ne!(
        rows[0].1, rows[1].1,
        "separate inserts run in separate transactions"
    );
    assert!(rows
        .iter()
        .all(|row| row.2 == Uuid::parse_str(AGENCY).unwrap()));
    assert!(rows.iter().all(|row| row.3));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn event_without_agency_is_rejected(pool: PgPool) {
    let missing = insert_event(&pool, "r-1", 1, r#"{"actor_id":"system"}"#)
        .await
        .unwrap_err();
    assert_eq!(sql_state(&missing).as_deref(), Some("23502"), "{missing}");

    let malformed = insert_event(&pool, "r-1", 1, r#"{"agency_id":"not-a-uuid"}"#)
        .await
        .unwrap_err();
    assert_eq!(
        sql_state(&malformed).as_deref(),
        Some("22P02"),
        "{malformed}"
    );
}
