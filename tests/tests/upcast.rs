//! Upcasting of stored events: an event of an older version is read through the store
//! in its current shape, and an unreadable one fails with an error naming it.

use referrals_domain::ids::AgencyId;
use referrals_store::event_store::CommandError;
use referrals_tests::{
    application, contact, create_program, enroll_ambassador, hire_and_hours_terms, recruiter,
    submit,
};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Stores a copy of a real `ReferralSubmitted` under a new referral id, without its
/// `prior_contact` field and with `event_version`; returns the new id.
async fn insert_old_submission(pool: &PgPool, agency_id: AgencyId, event_version: &str) -> String {
    let app = application(pool);
    let metadata = recruiter(agency_id);
    let program_id = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let ambassador_id = enroll_ambassador(
        &app,
        &metadata,
        contact("Avery Ambassador", Some("avery@example.com"), None),
    )
    .await;
    let executed = submit(
        &app,
        &metadata,
        program_id,
        ambassador_id,
        contact("Casey Candidate", Some("casey@example.com"), None),
    )
    .await
    .unwrap();
    let original = executed.aggregate.referral_id().unwrap().to_string();
    let (mut payload, stored_metadata): (Value, Value) = sqlx::query_as(
        "SELECT payload::jsonb, metadata::jsonb FROM events
          WHERE aggregate_type = 'referral' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(&original)
    .fetch_one(pool)
    .await
    .unwrap();
    let copy_id = Uuid::now_v7().to_string();
    let fields = payload["ReferralSubmitted"].as_object_mut().unwrap();
    fields.remove("prior_contact");
    fields.insert("referral_id".to_owned(), Value::String(copy_id.clone()));
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('referral', $1, 1, 'ReferralSubmitted', $2, $3::json, $4::json)",
    )
    .bind(&copy_id)
    .bind(event_version)
    .bind(payload.to_string())
    .bind(stored_metadata.to_string())
    .execute(pool)
    .await
    .unwrap();
    copy_id
}

#[sqlx::test(migrations = "../migrations")]
async fn old_submission_is_upcast_on_load(pool: PgPool) {
    let agency_id = AgencyId(Uuid::now_v7());
    let id = insert_old_submission(&pool, agency_id, "0.9").await;
    let app = application(&pool);

    let (referral, version) = app
        .referrals
        .load(agency_id, &id)
        .await
        .expect("the 0.9 event is upcast")
        .expect("the referral exists");

    assert_eq!(version, 1);
    assert_eq!(referral.prior_contact(), Some(false));
}

#[sqlx::test(migrations = "../migrations")]
async fn unreadable_event_names_aggregate_sequence_and_version(pool: PgPool) {
    let agency_id = AgencyId(Uuid::now_v7());
    // Version 1.0 is current, so no upcaster adds the missing field.
    let id = insert_old_submission(&pool, agency_id, "1.0").await;
    let app = application(&pool);

    let error = app.referrals.load(agency_id, &id).await.unwrap_err();

    let CommandError::Failed(cause) = error else {
        panic!("expected a failure, got {error:?}");
    };
    let message = cause.to_string();
    assert!(message.contains(&format!("referral {id}")), "{message}");
    assert!(message.contains("stored event 1"), "{message}");
    assert!(message.contains("version 1.0"), "{message}");
    assert!(message.contains("prior_contact"), "{message}");
}

#[sqlx::test(migrations = "../migrations")]
async fn projections_read_old_submission(pool: PgPool) {
    let agency_id = AgencyId(Uuid::now_v7());
    let id = insert_old_submission(&pool, agency_id, "0.9").await;
    let runner = referrals_projections::runner::ProjectionRunner::new(pool.clone());

    for projection in referrals_projections::models::all() {
        referrals_tests::catch_up_fully(&pool, &runner, projection.as_ref()).await;
    }

    let on_board: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM read_models.referral_board WHERE referral_id = $1::uuid)",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        on_board,
        "the upcast event reaches the board instead of stopping it"
    );
    let app = application(&pool);
    let (referral, _) = app.referrals.read(agency_id, &id).await.unwrap().unwrap();
    assert_eq!(referral.prior_contact(), Some(false));
}
