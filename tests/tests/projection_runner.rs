//! The projection runner's guarantees: gap-free global order under out-of-order commits,
//! exactly-once application across crashes and concurrent runners, and poison events
//! that stop one projection without stopping the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use referrals_domain::referral::ReferralEvent;
use referrals_projections::runner::{ProjectionRunner, RunnerError};
use referrals_projections::status::projection_status;
use referrals_projections::{Projection, ProjectionError, StoredEvent};
use referrals_tests::{catch_up_fully, catch_up_until_error};
use sqlx::{PgConnection, PgPool};

const AGENCY: &str = "01938a6d-0000-7000-8000-000000000001";

/// Counts events per aggregate type; applying an event twice shows as a wrong count, and
/// the `applied` log rejects a second application of the same position outright.
struct EventCounter;

#[async_trait]
impl Projection for EventCounter {
    fn name(&self) -> &'static str {
        "test_event_counter"
    }

    fn schema(&self) -> &'static str {
        "test_views"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_totals", "applied"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO event_totals (aggregate_type, events) VALUES ($1, 1)
             ON CONFLICT (aggregate_type) DO UPDATE SET events = event_totals.events + 1",
        )
        .bind(&event.aggregate_type)
        .execute(&mut *connection)
        .await?;
        sqlx::query("INSERT INTO applied (position) VALUES ($1)")
            .bind(event.position)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}

/// Reads referral payloads, so an unreadable one stops it.
struct ReferralReader;

#[async_trait]
impl Projection for ReferralReader {
    fn name(&self) -> &'static str {
        "test_referral_reader"
    }

    fn schema(&self) -> &'static str {
        "test_views"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["referral_events"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "referral" {
            return Ok(());
        }
        let _: ReferralEvent = event.decode()?;
        sqlx::query("INSERT INTO referral_events (position) VALUES ($1)")
            .bind(event.position)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}

/// Applies the counter, then fails once before the checkpoint is written, as a crash
/// between the view statement and the checkpoint would.
struct CrashOnce {
    crashed: AtomicBool,
}

#[async_trait]
impl Projection for CrashOnce {
    fn name(&self) -> &'static str {
        EventCounter.name()
    }

    fn schema(&self) -> &'static str {
        EventCounter.schema()
    }

    fn tables(&self) -> &'static [&'static str] {
        EventCounter.tables()
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        EventCounter.apply(connection, event).await?;
        if event.position >= 5 && !self.crashed.swap(true, Ordering::SeqCst) {
            return Err(ProjectionError::Transient(
                "simulated crash before the checkpoint".to_owned(),
            ));
        }
        Ok(())
    }
}

async fn create_views(pool: &PgPool) {
    for statement in [
        "CREATE SCHEMA test_views",
        "CREATE TABLE test_views.event_totals (aggregate_type text PRIMARY KEY, events bigint NOT NULL)",
        "CREATE TABLE test_views.applied (position bigint PRIMARY KEY)",
        "CREATE TABLE test_views.referral_events (position bigint PRIMARY KEY)",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
}

async fn insert_event(
    connection: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    payload: &str,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ($1, $2, 1, 'TestEvent', '1.0', $3::json, $4::json)",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(payload)
    .bind(format!(r#"{{"agency_id":"{AGENCY}"}}"#))
    .execute(connection)
    .await
    .unwrap();
}

async fn insert_events(pool: &PgPool, aggregate_type: &str, count: usize) {
    let mut connection = pool.acquire().await.unwrap();
    for index in 0..count {
        insert_event(
            &mut connection,
            aggregate_type,
            &format!("{aggregate_type}-{index}"),
            "{}",
        )
        .await;
    }
}

async fn counted(pool: &PgPool, aggregate_type: &str) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(events), 0)::bigint FROM test_views.event_totals WHERE aggregate_type = $1")
        .bind(aggregate_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn late_commit_is_applied_not_skipped(pool: PgPool) {
    create_views(&pool).await;
    let runner = ProjectionRunner::new(pool.clone());
    let mut transaction_a = pool.begin().await.unwrap();
    insert_event(&mut transaction_a, "a", "a-1", "{}").await;
    insert_events(&pool, "b", 1).await;

    let while_a_is_open = runner.catch_up(&EventCounter).await.unwrap();
    transaction_a.commit().await.unwrap();
    let after_a_commits = catch_up_fully(&pool, &runner, &EventCounter).await;

    assert_eq!(
        while_a_is_open, 0,
        "nothing past the open transaction is read yet"
    );
    assert_eq!(after_a_commits, 2);
    assert_eq!(
        counted(&pool, "a").await,
        1,
        "the event committed late is applied"
    );
    assert_eq!(counted(&pool, "b").await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn events_before_open_transaction_are_applied(pool: PgPool) {
    create_views(&pool).await;
    insert_events(&pool, "early", 3).await;
    let mut open = pool.begin().await.unwrap();
    insert_event(&mut open, "late", "late-1", "{}").await;

    let applied = catch_up_fully(&pool, &ProjectionRunner::new(pool.clone()), &EventCounter).await;

    assert_eq!(applied, 3);
    open.rollback().await.unwrap();
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn crash_before_checkpoint_does_not_double(pool: PgPool) {
    create_views(&pool).await;
    insert_events(&pool, "referral", 12).await;
    let runner = ProjectionRunner::new(pool.clone()).with_batch_size(4);
    let crashing = CrashOnce {
        crashed: AtomicBool::new(false),
    };

    let first_run = catch_up_until_error(&pool, &runner, &crashing).await;
    let second_run = catch_up_fully(&pool, &runner, &crashing).await;

    assert!(
        matches!(first_run, Err(RunnerError::Transient { .. })),
        "{first_run:?}"
    );
    // The batch that crashed was rolled back, so the restart applies it again with the
    // rest; where the batches split depends on how far the read horizon reached.
    assert!(
        second_run >= 8,
        "the rolled-back batch and the rest are applied on restart"
    );
    assert_eq!(
        counted(&pool, "referral").await,
        12,
        "no event is counted twice"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn two_runners_take_turns(pool: PgPool) {
    create_views(&pool).await;
    insert_events(&pool, "payout", 600).await;
    let first = ProjectionRunner::new(pool.clone()).with_batch_size(7);
    let second = ProjectionRunner::new(pool.clone()).with_batch_size(11);

    let (from_first, from_second) = tokio::join!(
        catch_up_fully(&pool, &first, &EventCounter),
        catch_up_fully(&pool, &second, &EventCounter)
    );

    assert_eq!(
        from_first + from_second,
        600,
        "together they apply each event once"
    );
    assert_eq!(counted(&pool, "payout").await, 600);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM test_views.applied")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, 600);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn second_runner_waits_for_lock(pool: PgPool) {
    create_views(&pool).await;
    insert_events(&pool, "referral", 1).await;
    // Hold the projection's lock as a running batch would.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('projection:test_event_counter', 0))",
    )
    .execute(&mut *holder)
    .await
    .unwrap();

    let runner = ProjectionRunner::new(pool.clone());
    let waiting = tokio::spawn(async move { runner.catch_up(&EventCounter).await });
    let mut saw_waiter = false;
    for _ in 0..50 {
        let waiters: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiters > 0 {
            saw_waiter = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted_while_held = counted(&pool, "referral").await;
    holder.commit().await.unwrap();
    let runner = ProjectionRunner::new(pool.clone());
    let applied =
        waiting.await.unwrap().unwrap() + catch_up_fully(&pool, &runner, &EventCounter).await;

    assert!(
        saw_waiter,
        "the second runner waits on the projection's lock"
    );
    assert_eq!(counted_while_held, 0);
    assert_eq!(applied, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn poison_event_stops_only_its_projection(pool: PgPool) {
    create_views(&pool).await;
    let mut connection = pool.acquire().await.unwrap();
    insert_event(&mut connection, "program", "p-1", "{}").await;
    insert_event(
        &mut connection,
        "referral",
        "r-bad",
        r#"{"ReferralSubmitted":{"nonsense":true}}"#,
    )
    .await;
    insert_event(&mut connection, "program", "p-2", "{}").await;
    drop(connection);
    let runner = ProjectionRunner::new(pool.clone());
    let poison_position: i64 =
        sqlx::query_scalar("SELECT position FROM events WHERE aggregate_id = 'r-bad'")
            .fetch_one(&pool)
            .await
            .unwrap();

    let reader = catch_up_until_error(&pool, &runner, &ReferralReader).await;
    let reader_again = runner.catch_up(&ReferralReader).await;
    let counter = catch_up_fully(&pool, &runner, &EventCounter).await;

    match reader {
        Err(RunnerError::Stopped {
            position, event_id, ..
        }) => {
            assert_eq!(position, poison_position);
            assert_eq!(event_id, "referral/r-bad/1");
        }
        other => panic!("expected the reader to stop, got {other:?}"),
    }
    assert!(
        matches!(reader_again, Err(RunnerError::Stopped { .. })),
        "it does not skip the event later"
    );
    assert_eq!(counter, 3, "the other projection goes on past the event");
    let statuses = projection_status(&pool, &["test_referral_reader", "test_event_counter"])
        .await
        .unwrap();
    assert_eq!(
        statuses[0].failure.as_ref().map(|failure| failure.position),
        Some(poison_position)
    );
    // Depending on how far the read horizon reached, the first event may or may not have
    // been applied before the stop; the poison event and the one after it never are.
    assert!(statuses[0].position < poison_position);
    assert!(statuses[0].events_behind >= 2, "{:?}", statuses[0]);
    assert_eq!(statuses[1].failure, None);
    assert_eq!(statuses[1].events_behind, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn nul_escape_does_not_stall(pool: PgPool) {
    create_views(&pool).await;
    let mut connection = pool.acquire().await.unwrap();
    insert_event(
        &mut connection,
        "program",
        "p-1",
        r#"{"note":"before\u0000after"}"#,
    )
    .await;
    insert_event(&mut connection, "program", "p-2", "{}").await;
    drop(connection);

    let applied = catch_up_fully(&pool, &ProjectionRunner::new(pool.clone()), &EventCounter).await;

    assert_eq!(applied, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn rebuild_matches_incremental(pool: PgPool) {
    create_views(&pool).await;
    insert_events(&pool, "referral", 120).await;
    let runner = ProjectionRunner::new(pool.clone()).with_batch_size(13);
    catch_up_fully(&pool, &runner, &EventCounter).await;
    let before: Vec<(String, i64)> =
        sqlx::query_as("SELECT aggregate_type, events FROM test_views.event_totals ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();

    let mut reported = 0;
    let report = runner
        .rebuild(&EventCounter, &mut |applied| reported = applied)
        .await
        .unwrap();
    let applied_after_swap = catch_up_fully(&pool, &runner, &EventCounter).await;

    let after: Vec<(String, i64)> =
        sqlx::query_as("SELECT aggregate_type, events FROM test_views.event_totals ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(before, after);
    assert_eq!(
        report.events + applied_after_swap,
        120,
        "each event applied once"
    );
    assert_eq!(reported, report.events);
    let shadow: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname LIKE 'rebuild_%')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!shadow, "the shadow schema is dropped after the swap");
    let status = &projection_status(&pool, &["test_event_counter"])
        .await
        .unwrap()[0];
    assert_eq!(status.events_behind, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn rebuild_clears_a_stop(pool: PgPool) {
    create_views(&pool).await;
    let mut connection = pool.acquire().await.unwrap();
    insert_event(&mut connection, "referral", "r-bad", r#"{"Unknown":{}}"#).await;
    drop(connection);
    let runner = ProjectionRunner::new(pool.clone());
    assert!(catch_up_until_error(&pool, &runner, &ReferralReader)
        .await
        .is_err());

    // The "fixed" projection here is the counter under the reader's name: it can apply
    // every event, so the rebuild succeeds and the stop is lifted.
    struct Fixed;
    #[async_trait]
    impl Projection for Fixed {
        fn name(&self) -> &'static str {
            "test_referral_reader"
        }
        fn schema(&self) -> &'static str {
            "test_views"
        }
        fn tables(&self) -> &'static [&'static str] {
            &["referral_events"]
        }
        async fn apply(
            &self,
            connection: &mut PgConnection,
            event: &StoredEvent,
        ) -> Result<(), ProjectionError> {
            sqlx::query("INSERT INTO referral_events (position) VALUES ($1)")
                .bind(event.position)
                .execute(&mut *connection)
                .await?;
            Ok(())
        }
    }
    runner.rebuild(&Fixed, &mut |_| {}).await.unwrap();
    catch_up_fully(&pool, &runner, &Fixed).await;

    let status = &projection_status(&pool, &["test_referral_reader"])
        .await
        .unwrap()[0];
    assert_eq!(status.failure, None);
    assert_eq!(status.events_behind, 0);
}

/// Records the order in which it is given events.
struct OrderRecorder;

#[async_trait]
impl Projection for OrderRecorder {
    fn name(&self) -> &'static str {
        "test_order_recorder"
    }

    fn schema(&self) -> &'static str {
        "test_views"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["applied_order"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO applied_order (step, position)
             VALUES ((SELECT count(*) FROM applied_order), $1)",
        )
        .bind(event.position)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn transaction_ids_sort_as_numbers(pool: PgPool) {
    create_views(&pool).await;
    sqlx::query(
        "CREATE TABLE test_views.applied_order (step bigint PRIMARY KEY, position bigint UNIQUE)",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Transaction ids of different digit counts, inserted so that text order and number
    // order disagree: as text, "1000" sorts before "999" and "10" before "9".
    let mut positions = Vec::new();
    for transaction_id in ["1000", "999", "10", "9"] {
        let position: i64 = sqlx::query_scalar(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata, transaction_id)
             VALUES ('digits', $1, 1, 'TestEvent', '1.0', '{}'::json, $2::json, $1::xid8)
             RETURNING position",
        )
        .bind(transaction_id)
        .bind(format!(r#"{{"agency_id":"{AGENCY}"}}"#))
        .fetch_one(&pool)
        .await
        .unwrap();
        positions.push(position);
    }

    let runner = ProjectionRunner::new(pool.clone());
    let applied = catch_up_fully(&pool, &runner, &OrderRecorder).await;
    let order: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM test_views.applied_order ORDER BY step")
            .fetch_all(&pool)
            .await
            .unwrap();

    assert_eq!(applied, 4);
    assert_eq!(
        order,
        vec![positions[3], positions[2], positions[1], positions[0]],
        "applied in the order of transaction ids 9, 10, 999, 1000"
    );
}
