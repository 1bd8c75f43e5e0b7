//! The hash chain of the events table: computed on insert, verified by recomputing it, and
//! broken at exactly the event whose stored bytes someone changed.

use chrono::{NaiveDate, Utc};
use referrals_domain::ids::{AgencyId, ReferralId};
use referrals_domain::referral::{RecordHire, ReferralCommand};
use referrals_store::application::Application;
use referrals_store::audit::{verify_chain, BreakReason, BrokenLink};
use referrals_tests::*;
use sqlx::PgPool;

/// Creates a program, an ambassador and a hired referral (which requests a payout), and
/// returns the referral.
async fn hired_referral(app: &Application, agency: AgencyId) -> ReferralId {
    let metadata = recruiter(agency);
    let referral_id = submitted_referral(app, &metadata).await;
    hire(app, agency, referral_id).await;
    referral_id
}

async fn hire(app: &Application, agency: AgencyId, referral_id: ReferralId) {
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: Some("W-1001".to_owned()),
        at: Utc::now(),
    });
    app.execute_referral(&recruiter(agency), referral_id, hire, None)
        .await
        .unwrap();
}

async fn event_count(pool: &PgPool, agency: AgencyId) -> u64 {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE agency_id = $1")
        .bind(agency.0)
        .fetch_one(pool)
        .await
        .unwrap();
    u64::try_from(count).unwrap()
}

/// The event a tampering test changes: one with a successor in its aggregate and with
/// other events before it, so the report must name it rather than its neighbours.
async fn middle_event(pool: &PgPool) -> BrokenLink {
    let (position, aggregate_type, aggregate_id, sequence): (i64, String, String, i64) =
        sqlx::query_as(
            "SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence
               FROM events e
              WHERE e.position > (SELECT min(position) FROM events)
                AND EXISTS (SELECT 1 FROM events s
                             WHERE s.aggregate_type = e.aggregate_type
                               AND s.aggregate_id = e.aggregate_id
                               AND s.sequence = e.sequence + 1)
              ORDER BY e.position
              LIMIT 1",
        )
        .fetch_one(pool)
        .await
        .expect("an event with a predecessor in global order and a successor");
    BrokenLink {
        position,
        aggregate_type,
        aggregate_id,
        sequence,
        reason: BreakReason::HashMismatch,
    }
}

/// Runs `statement` (with `$1` bound to `position`) while the append-only trigger is
/// disabled, as a superuser tampering with the table would.
async fn tamper(pool: &PgPool, statement: &str, position: i64) {
    let mut transaction = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_reject_update_delete")
        .execute(&mut *transaction)
        .await
        .unwrap();
    let changed = sqlx::query(statement)
        .bind(position)
        .execute(&mut *transaction)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1, "{statement}");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_reject_update_delete")
        .execute(&mut *transaction)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
}

/// Returns `text` with its first lowercase ASCII letter replaced by another letter.
fn change_one_letter(text: &str) -> String {
    let index = text
        .find(|character: char| character.is_ascii_lowercase())
        .expect("a lowercase letter");
    let replacement = if &text[index..=index] == "x" {
        "y"
    } else {
        "x"
    };
    format!("{}{replacement}{}", &text[..index], &text[index + 1..])
}

async fn stored_text(pool: &PgPool, column: &str, position: i64) -> String {
    sqlx::query_scalar(&format!(
        "SELECT {column}::text FROM events WHERE position = $1"
    ))
    .bind(position)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn untouched_events_verify_ok(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    hired_referral(&app, agency).await;

    let report = verify_chain(&pool, Some(agency), false).await.unwrap();

    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, event_count(&pool, agency).await);
    assert!(report.events_checked >= 5, "{report:?}");
    assert_eq!(report.first_broken, None);
    let everything = verify_chain(&pool, None, false).await.unwrap();
    assert!(everything.ok, "{everything:?}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn changed_payload_is_first_broken(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    hired_referral(&app, agency).await;
    let target = middle_event(&pool).await;
    let payload = stored_text(&pool, "payload", target.position).await;
    let changed = change_one_letter(&payload);

    tamper(
        &pool,
        &format!(
            "UPDATE events SET payload = '{}'::json WHERE position = $1",
            changed.replace('\'', "''")
        ),
        target.position,
    )
    .await;

    assert_eq!(
        stored_text(&pool, "payload", target.position).await,
        changed
    );
    let report = verify_chain(&pool, Some(agency), false).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken, Some(target));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn changed_metadata_is_first_broken(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    hired_referral(&app, agency).await;
    let target = middle_event(&pool).await;
    let metadata = stored_text(&pool, "metadata", target.position).await;
    assert!(metadata.contains("\"recruiter\""), "{metadata}");

    tamper(
        &pool,
        "UPDATE events
            SET metadata = replace(metadata::text, '\"recruiter\"', '\"recruitor\"')::json
          WHERE position = $1",
        target.position,
    )
    .await;

    let report = verify_chain(&pool, Some(agency), false).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken, Some(target));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn changed_hash_is_first_broken(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    hired_referral(&app, agency).await;
    let target = middle_event(&pool).await;

    tamper(
        &pool,
        "UPDATE events SET hash = sha256(hash) WHERE position = $1",
        target.position,
    )
    .await;

    let report = verify_chain(&pool, Some(agency), false).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken, Some(target));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn deleted_event_breaks_its_successor(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    hired_referral(&app, agency).await;
    let deleted = middle_event(&pool).await;
    let successor_position: i64 = sqlx::query_scalar(
        "SELECT position FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(&deleted.aggregate_type)
    .bind(&deleted.aggregate_id)
    .bind(deleted.sequence + 1)
    .fetch_one(&pool)
    .await
    .unwrap();

    tamper(
        &pool,
        "DELETE FROM events WHERE position = $1",
        deleted.position,
    )
    .await;

    let report = verify_chain(&pool, Some(agency), false).await.unwrap();
    let expected = BrokenLink {
        position: successor_position,
        sequence: deleted.sequence + 1,
        reason: BreakReason::MissingPredecessor,
        ..deleted
    };
    assert_eq!(report.first_broken, Some(expected));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn destroyed_data_keys_keep_chain_ok(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    hired_referral(&app, agency).await;

    let destroyed = sqlx::query("DELETE FROM data_keys WHERE agency_id = $1")
        .bind(agency.0)
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();

    assert!(destroyed > 0, "the referral and ambassador have data keys");
    let report = verify_chain(&pool, Some(agency), false).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, event_count(&pool, agency).await);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn incremental_run_checks_only_new_events(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let program = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let ambassador = enroll_ambassador(
        &app,
        &metadata,
        contact("Ada", Some("ada@example.com"), None),
    )
    .await;
    let first = verify_chain(&pool, Some(agency), true).await.unwrap();
    assert!(first.ok, "{first:?}");
    assert_eq!(first.events_checked, event_count(&pool, agency).await);

    let before = event_count(&pool, agency).await;
    let referral = submit(
        &app,
        &metadata,
        program,
        ambassador,
        contact("Grace", Some("grace@example.org"), None),
    )
    .await
    .unwrap();
    hire(&app, agency, referral.aggregate.referral_id().unwrap()).await;
    let added = event_count(&pool, agency).await - before;
    let second = verify_chain(&pool, Some(agency), true).await.unwrap();

    assert!(second.ok, "{second:?}");
    assert_eq!(second.events_checked, added);
    let (position, events_checked): (i64, i64) = sqlx::query_as(
        "SELECT position, events_checked FROM audit_chain_checkpoints WHERE agency_id = $1",
    )
    .bind(agency.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    let last_position: i64 =
        sqlx::query_scalar("SELECT max(position) FROM events WHERE agency_id = $1")
            .bind(agency.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(position, last_position);
    assert_eq!(
        u64::try_from(events_checked).unwrap(),
        event_count(&pool, agency).await
    );
    let third = verify_chain(&pool, Some(agency), true).await.unwrap();
    assert_eq!(third.events_checked, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn incremental_run_rechecks_predecessor_below_checkpoint(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let referral_id = submitted_referral(&app, &recruiter(agency)).await;
    assert!(verify_chain(&pool, Some(agency), true).await.unwrap().ok);
    // The referral's last event is below the checkpoint and its hash is changed after the
    // run. It was the chain's verified head, so the incremental run reports it from the
    // recorded head before it reaches the next event's link.
    let submitted: i64 = sqlx::query_scalar(
        "SELECT max(position) FROM events WHERE aggregate_type = 'referral' AND aggregate_id = $1",
    )
    .bind(referral_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    tamper(
        &pool,
        "UPDATE events SET hash = sha256(hash) WHERE position = $1",
        submitted,
    )
    .await;

    hire(&app, agency, referral_id).await;
    let report = verify_chain(&pool, Some(agency), true).await.unwrap();

    let broken = report.first_broken.expect("a broken link");
    assert_eq!(broken.aggregate_id, referral_id.to_string());
    assert_eq!(broken.position, submitted);
    assert_eq!(broken.reason, BreakReason::HeadMismatch);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn hash_columns_reject_update(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    create_program(&app, &recruiter(agency), hire_and_hours_terms()).await;

    for statement in [
        "UPDATE events SET hash = sha256(hash)",
        "UPDATE events SET previous_hash = hash",
    ] {
        let error = sqlx::query(statement).execute(&pool).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn insert_ignores_supplied_hash(pool: PgPool) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, previous_hash, hash)
         VALUES ('referral', 'r-1', 1, 'ReferralContacted', '1.0', '{}',
                 '{\"agency_id\":\"01938a6d-0000-7000-8000-000000000001\"}', '\\x01', '\\x02')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let (previous_hash, hash): (Option<Vec<u8>>, Vec<u8>) =
        sqlx::query_as("SELECT previous_hash, hash FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(previous_hash, None);
    assert_eq!(hash.len(), 32);
    assert!(verify_chain(&pool, None, false).await.unwrap().ok);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn insert_without_predecessor_is_rejected(pool: PgPool) {
    let error = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('referral', 'r-1', 2, 'ReferralContacted', '1.0', '{}',
                 '{\"agency_id\":\"01938a6d-0000-7000-8000-000000000001\"}')",
    )
    .execute(&pool)
    .await
    .unwrap_err();

    let code = error.as_database_error().and_then(|error| error.code());
    assert_eq!(code.as_deref(), Some("23503"), "{error}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn removed_verified_tail_is_reported(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let referral_id = hired_referral(&app, agency).await;
    let before = verify_chain(&pool, Some(agency), true).await.unwrap();
    let (last_position, last_sequence): (i64, i64) = sqlx::query_as(
        "SELECT position, sequence FROM events
          WHERE aggregate_type = 'referral' AND aggregate_id = $1
          ORDER BY sequence DESC LIMIT 1",
    )
    .bind(referral_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();

    // The last event of a chain leaves no successor whose link could break.
    tamper(
        &pool,
        "DELETE FROM events WHERE position = $1",
        last_position,
    )
    .await;
    let incremental = verify_chain(&pool, Some(agency), true).await.unwrap();
    let full = verify_chain(&pool, Some(agency), false).await.unwrap();

    assert!(before.ok, "{before:?}");
    for report in [incremental, full] {
        let broken = report.first_broken.expect("the cut chain is reported");
        assert_eq!(broken.reason, BreakReason::HeadMismatch);
        assert_eq!(broken.aggregate_id, referral_id.to_string());
        assert_eq!(broken.sequence, last_sequence);
        assert!(!report.ok);
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn verified_heads_follow_new_events(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let referral_id = hired_referral(&app, agency).await;
    let first = verify_chain(&pool, Some(agency), true).await.unwrap();

    let contacted = ReferralCommand::MarkContacted(referrals_domain::referral::MarkContacted {
        at: Utc::now(),
    });
    let _ = app
        .execute_referral(&recruiter(agency), referral_id, contacted, None)
        .await;
    let hours = ReferralCommand::RecordHours(referrals_domain::referral::RecordHours {
        week_ending: NaiveDate::from_ymd_opt(2026, 11, 8).unwrap(),
        hours: referrals_domain::values::Hours::parse("40").unwrap(),
        at: Utc::now(),
    });
    app.execute_referral(&recruiter(agency), referral_id, hours, None)
        .await
        .unwrap();
    let second = verify_chain(&pool, Some(agency), true).await.unwrap();
    let head: i64 = sqlx::query_scalar(
        "SELECT sequence FROM audit_chain_heads WHERE aggregate_type = 'referral' AND aggregate_id = $1",
    )
    .bind(referral_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    let last: i64 = sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'referral' AND aggregate_id = $1",
    )
    .bind(referral_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();

    assert!(first.ok, "{first:?}");
    assert!(second.ok, "{second:?}");
    assert_eq!(head, last, "the head moves with the chain");
}
