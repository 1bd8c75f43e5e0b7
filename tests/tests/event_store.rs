//! The event store around postgres-es: conflicts, unrelated unique violations, metadata,
//! snapshots, and no plaintext personal data in stored events.

use chrono::{Duration, NaiveDate, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore;
use referrals_domain::ids::AgencyId;
use referrals_domain::referral::Referral;
use referrals_domain::referral::{MarkContacted, RecordHire, RecordHours, ReferralCommand};
use referrals_domain::values::Hours;
use referrals_store::event_store::{CommandError, EventRepository, SNAPSHOT_EVERY};
use referrals_tests::*;
use sqlx::PgPool;

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn same_version_twice_gives_one_conflict(pool: PgPool) {
    let app = std::sync::Arc::new(application(&pool));
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let referral_id = submitted_referral(&app, &metadata).await;
    let (_, version) = app
        .referrals
        .load(agency, &referral_id.to_string())
        .await
        .unwrap()
        .unwrap();

    let attempts = (0..2).map(|_| {
        let (app, metadata) = (app.clone(), metadata.clone());
        tokio::spawn(async move {
            let command = ReferralCommand::MarkContacted(MarkContacted { at: Utc::now() });
            app.referrals
                .execute(&referral_id.to_string(), command, &metadata, Some(version))
                .await
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert_eq!(outcomes.iter().filter(|outcome| outcome.is_ok()).count(), 1);
    let conflict = outcomes.iter().find(|outcome| outcome.is_err()).unwrap();
    assert!(
        matches!(
            conflict,
            Err(CommandError::Conflict {
                aggregate_type: "referral"
            })
        ),
        "{conflict:?}"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn other_unique_violation_is_not_a_conflict(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    // A constraint unrelated to versions: no two events may carry the same request id.
    sqlx::query(
        "CREATE UNIQUE INDEX test_one_event_per_request ON events ((metadata ->> 'request_id'))",
    )
    .execute(&pool)
    .await
    .unwrap();
    create_program(&app, &metadata, hire_and_hours_terms()).await;

    let result = app
        .create_program(
            &metadata,
            referrals_store::application::NewProgram {
                name: "Second".to_owned(),
                currency: referrals_domain::values::Currency::parse("USD").unwrap(),
                terms: hire_and_hours_terms(),
            },
        )
        .await;

    match result {
        Err(referrals_store::application::AppError::Internal(message)) => {
            assert!(message.contains("unique constraint"), "{message}")
        }
        other => panic!("expected an internal failure, got {other:?}"),
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn events_carry_the_metadata(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    create_program(&app, &metadata, hire_and_hours_terms()).await;

    let (stored, agency_column): (serde_json::Value, uuid::Uuid) =
        sqlx::query_as("SELECT metadata::jsonb, agency_id FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();

    assert_eq!(agency_column, agency.0);
    for key in [
        "agency_id",
        "actor_id",
        "actor_role",
        "recorded_at",
        "correlation_id",
        "causation_id",
        "request_id",
    ] {
        assert!(
            stored.get(key).and_then(|value| value.as_str()).is_some(),
            "missing {key} in {stored}"
        );
    }
    assert_eq!(stored["actor_role"], "recruiter");
    assert!(
        stored["recorded_at"].as_str().unwrap().ends_with('Z'),
        "UTC timestamps end in Z"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn snapshot_state_equals_replayed_state(pool: PgPool) {
    // Events 1 to 3 are the submission, the hire and its milestone; week k is event 4 + k.
    // The big week 45 makes events 49 and 50 a recording and a milestone, so the first
    // snapshot (at event 50) is taken by a command whose events change more than a total.
    assert_snapshot_equals_replay(pool, SNAPSHOT_EVERY - 5).await;
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn snapshot_inside_a_command_equals_replayed_state(pool: PgPool) {
    // The big week 46 makes events 50 and 51 a recording and a milestone, so the snapshot
    // at event 50 falls between two events of one command and must not claim event 51.
    assert_snapshot_equals_replay(pool, SNAPSHOT_EVERY - 4).await;
}

/// Records a hire and 60 weeks of hours, one of them (`big_week`) large enough to reach the
/// hours milestone, then compares the state loaded through the snapshot with a full replay.
async fn assert_snapshot_equals_replay(pool: PgPool, big_week: usize) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let referral_id = submitted_referral(&app, &metadata).await;
    let start = NaiveDate::from_ymd_opt(2025, 1, 6).unwrap();
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: start,
        job_title: "Picker".to_owned(),
        client_name: "Contoso".to_owned(),
        external_worker_id: None,
        at: Utc::now(),
    });
    app.execute_referral(&metadata, referral_id, hire, None)
        .await
        .unwrap();

    let weeks = SNAPSHOT_EVERY + 10;
    for week in 0..weeks {
        let hours = if week == big_week { "120" } else { "1.25" };
        let command = ReferralCommand::RecordHours(RecordHours {
            week_ending: start + Duration::days(6 + 7 * week as i64),
            hours: Hours::parse(hours).unwrap(),
            at: Utc::now(),
        });
        app.execute_referral(&metadata, referral_id, command, None)
            .await
            .unwrap();
    }

    let snapshots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM snapshots WHERE aggregate_type = 'referral'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(snapshots, 1, "a long referral has a snapshot");
    let (loaded, _) = app
        .referrals
        .load(agency, &referral_id.to_string())
        .await
        .unwrap()
        .unwrap();
    let expected = Hours::from_hundredths(125 * (weeks as i64 - 1) + 12_000).unwrap();
    assert_eq!(loaded.hours_total(), Some(expected));
    let replayed =
        PersistedEventStore::<_, Referral>::new_event_store(EventRepository::new(pool.clone()))
            .load_aggregate(&referral_id.to_string())
            .await
            .unwrap()
            .aggregate;
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(&replayed).unwrap(),
        "state from the snapshot must equal state replayed from every event"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn stored_events_hold_no_plaintext_personal_data(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let program = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let ambassador = enroll_ambassador(
        &app,
        &metadata,
        contact(
            "Adelaide Quincy",
            Some("adelaide.quincy@example.com"),
            Some("+1 555 555 0199"),
        ),
    )
    .await;
    let mut note_metadata = metadata.clone();
    note_metadata.recorded_at = Utc::now();
    let referral = app
        .submit_referral(
            &note_metadata,
            referrals_store::application::NewReferral {
                program_id: program,
                ambassador_id: ambassador,
                candidate: contact(
                    "Bartholomew Zed",
                    Some("bart.zed@example.org"),
                    Some("555-555-0142"),
                ),
                job_reference: Some("Night shift".to_owned()),
                note: Some(
                    referrals_domain::values::FreeText::parse("Knows Zamboni repair").unwrap(),
                ),
            },
        )
        .await
        .unwrap();
    let referral_id = referral.aggregate.referral_id().unwrap();
    let start = NaiveDate::from_ymd_opt(2025, 1, 6).unwrap();
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: start,
        job_title: "Picker".to_owned(),
        client_name: "Contoso".to_owned(),
        external_worker_id: None,
        at: Utc::now(),
    });
    app.execute_referral(&metadata, referral_id, hire, None)
        .await
        .unwrap();
    for week in 0..SNAPSHOT_EVERY {
        let command = ReferralCommand::RecordHours(RecordHours {
            week_ending: start + Duration::days(6 + 7 * week as i64),
            hours: Hours::parse("8").unwrap(),
            at: Utc::now(),
        });
        app.execute_referral(&metadata, referral_id, command, None)
            .await
            .unwrap();
    }
    let snapshots: i64 = sqlx::query_scalar("SELECT count(*) FROM snapshots")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(snapshots >= 1, "the check must cover a real snapshot");

    let dump: String =
        sqlx::query_scalar("SELECT string_agg(payload::text || metadata::text, '\n') FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
    let snapshot_dump: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(payload::text, '\n'), '') FROM snapshots")
            .fetch_one(&pool)
            .await
            .unwrap();
    let stored = format!("{dump}\n{snapshot_dump}").to_lowercase();
    for secret in [
        "adelaide",
        "quincy",
        "adelaide.quincy@example.com",
        "5555550199",
        "555 555 0199",
        "bartholomew",
        "zed@",
        "bart.zed@example.org",
        "5555550142",
        "555-555-0142",
        "zamboni",
    ] {
        assert!(
            !stored.contains(secret),
            "plaintext {secret:?} found in stored events or snapshots"
        );
    }
    assert!(
        stored.contains("night shift"),
        "the check must be able to find plaintext that is stored"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn read_uses_projection_and_falls_back(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let program = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let program_key = program.to_string();
    let runner = referrals_projections::runner::ProjectionRunner::new(pool.clone());
    let states = referrals_projections::models::AggregateStatesProjection;
    catch_up_fully(&pool, &runner, &states).await;
    // Mark the projected row, so that a read served from it can be told apart.
    sqlx::query(
        "UPDATE read_models.aggregate_states
            SET state = jsonb_set(state, '{state,name}', '\"From the read model\"')
          WHERE aggregate_id = $1",
    )
    .bind(&program_key)
    .execute(&pool)
    .await
    .unwrap();

    let (from_projection, version) = app
        .programs
        .read(agency, &program_key)
        .await
        .unwrap()
        .unwrap();
    let close = referrals_domain::program::ProgramCommand::CloseProgram(
        referrals_domain::program::CloseProgram { at: Utc::now() },
    );
    app.programs
        .execute(&program_key, close, &metadata, None)
        .await
        .unwrap();
    let (after_command, later_version) = app
        .programs
        .read(agency, &program_key)
        .await
        .unwrap()
        .unwrap();
    let other_agency = app
        .programs
        .read(AgencyId::new(), &program_key)
        .await
        .unwrap();

    assert_eq!(
        from_projection.name(),
        Some("From the read model"),
        "served from the projection"
    );
    assert_eq!(version, 1);
    assert_eq!(
        later_version, 2,
        "a lagging projection falls back to the event store"
    );
    assert!(!after_command.is_open());
    assert_eq!(after_command.name(), Some("Warehouse referrals"));
    assert!(other_agency.is_none());
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn past_state_from_snapshot_equals_full_replay(pool: PgPool) {
    use referrals_store::application::HistoryPoint;

    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let referral_id = submitted_referral(&app, &metadata).await;
    let start = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: start,
        job_title: "Picker".to_owned(),
        client_name: "Contoso".to_owned(),
        external_worker_id: None,
        at: Utc::now(),
    });
    app.execute_referral(&metadata, referral_id, hire, None)
        .await
        .unwrap();
    for week in 0..110 {
        let command = ReferralCommand::RecordHours(RecordHours {
            week_ending: start + Duration::days(6 + 7 * week),
            hours: Hours::parse("1.5").unwrap(),
            at: Utc::now(),
        });
        app.execute_referral(&metadata, referral_id, command, None)
            .await
            .unwrap();
    }
    let runner = referrals_projections::runner::ProjectionRunner::new(pool.clone());
    catch_up_fully(
        &pool,
        &runner,
        &referrals_projections::models::AggregateStatesProjection,
    )
    .await;
    let snapshots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM read_models.aggregate_snapshots WHERE aggregate_id = $1",
    )
    .bind(referral_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    let id = referral_id.to_string();

    let mut with_snapshots = Vec::new();
    for version in [49, 50, 75, 100, 113] {
        with_snapshots.push(
            app.state_at::<Referral>(agency, &id, HistoryPoint::Version(version))
                .await
                .unwrap(),
        );
    }
    sqlx::query("DELETE FROM read_models.aggregate_snapshots")
        .execute(&pool)
        .await
        .unwrap();
    let mut from_events = Vec::new();
    for version in [49, 50, 75, 100, 113] {
        from_events.push(
            app.state_at::<Referral>(agency, &id, HistoryPoint::Version(version))
                .await
                .unwrap(),
        );
    }

    assert_eq!(snapshots, 2, "states kept at events 50 and 100");
    for (snapshot, replay) in with_snapshots.iter().zip(&from_events) {
        let (snapshot, snapshot_version) = snapshot.as_ref().expect("a past state");
        let (replay, replay_version) = replay.as_ref().expect("a past state");
        assert_eq!(snapshot_version, replay_version);
        assert_eq!(
            serde_json::to_value(snapshot).unwrap(),
            serde_json::to_value(replay).unwrap()
        );
    }
    assert_eq!(with_snapshots[4].as_ref().unwrap().1, 113);
    let missing = app
        .state_at::<Referral>(agency, &id, HistoryPoint::Version(500))
        .await
        .unwrap();
    assert!(
        missing.is_none(),
        "a version past the last event does not exist"
    );
}
