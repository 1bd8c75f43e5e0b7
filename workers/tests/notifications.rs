//! The notification outbox and dispatcher against real PostgreSQL and a mock provider
//! server on 127.0.0.1.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use referrals_domain::agency::{Agency, AgencyCommand, CreateAgency, SetTexting};
use referrals_domain::ids::{AgencyId, AmbassadorId};
use referrals_domain::terms::AmbassadorKind;
use referrals_projections::runner::{ProjectionRunner, RunnerError};
use referrals_projections::{Projection, ProjectionError, StoredEvent};
use referrals_store::application::{AmbassadorChanges, Application, NewAmbassador};
use referrals_store::event_store::{AggregateStore, CommandMetadata};
use referrals_store::personal::ContactDetails;
use referrals_tests::*;
use referrals_workers::clock::{Clock, ManualClock, SystemClock};
use referrals_workers::dispatch::{Dispatcher, RetryPolicy};
use referrals_workers::outbox::{NotificationOutboxProjection, OUTBOX_PROJECTION};
use referrals_workers::providers::{SendGrid, TextUs};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// One request the mock provider received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: String,
    body: Value,
    answered: u16,
}

/// A provider stand-in: returns the next queued status for each request, then 202.
#[derive(Clone, Default)]
struct MockProvider {
    received: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl MockProvider {
    fn fail_next(&self, count: usize, status: u16) {
        self.statuses
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(status, count));
    }

    fn received(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|request| request.path == path)
            .cloned()
            .collect()
    }
}

async fn record(
    State(mock): State<MockProvider>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let status = mock.statuses.lock().unwrap().pop_front().unwrap_or(202);
    mock.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body,
        answered: status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// Starts the mock on a free loopback port and returns it with its base URL.
async fn start_mock() -> (MockProvider, String) {
    let mock = MockProvider::default();
    let router = Router::new()
        .route("/v3/mail/send", post(record))
        .route("/api/messages", post(record))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (mock, format!("http://{address}"))
}

fn dispatcher(app: &Arc<Application>, base_url: &str, max_attempts: u32) -> Dispatcher {
    let policy = RetryPolicy {
        max_attempts,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    dispatcher_with(app, base_url, policy, Arc::new(SystemClock))
}

/// Creates a dispatcher that sends both channels to the mock at `base_url`.
fn dispatcher_with(
    app: &Arc<Application>,
    base_url: &str,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
) -> Dispatcher {
    let email = SendGrid::new(
        base_url,
        "sendgrid-key".to_owned(),
        "referrals@agency.test".to_owned(),
    )
    .unwrap();
    let sms = TextUs::new(
        base_url,
        "textus-user".to_owned(),
        "textus-key".to_owned(),
        "recruiting@agency.test".to_owned(),
    )
    .unwrap();
    Dispatcher::new(app.clone(), Arc::new(email), Arc::new(sms), policy, clock)
}

/// Creates the agency aggregate, with texting enabled or not.
async fn create_agency(pool: &PgPool, agency: AgencyId, texting: bool) {
    let agencies: AggregateStore<Agency> = AggregateStore::new(pool.clone(), ());
    let metadata: CommandMetadata = recruiter(agency);
    let create = AgencyCommand::CreateAgency(CreateAgency {
        agency_id: agency,
        name: "Northwind Staffing".to_owned(),
        at: Utc::now(),
    });
    agencies
        .execute(&agency.to_string(), create, &metadata, None)
        .await
        .unwrap();
    let set = AgencyCommand::SetTexting(SetTexting {
        enabled: texting,
        at: Utc::now(),
    });
    agencies
        .execute(&agency.to_string(), set, &metadata, None)
        .await
        .unwrap();
}

async fn ambassador(
    app: &Application,
    agency: AgencyId,
    details: ContactDetails,
    sms_consent: bool,
) -> AmbassadorId {
    app.enroll_ambassador(
        &recruiter(agency),
        NewAmbassador {
            contact: details,
            kind: AmbassadorKind::FieldWorker,
            external_id: None,
            sms_consent,
        },
    )
    .await
    .unwrap()
    .aggregate
    .ambassador_id()
    .unwrap()
}

/// Submits a referral by `ambassador` to a new program.
async fn refer(
    app: &Application,
    agency: AgencyId,
    ambassador: AmbassadorId,
    candidate_email: &str,
) {
    let metadata = recruiter(agency);
    let program = create_program(app, &metadata, hire_and_hours_terms()).await;
    submit(
        app,
        &metadata,
        program,
        ambassador,
        contact("Grace", Some(candidate_email), None),
    )
    .await
    .unwrap();
}

async fn fill_outbox(pool: &PgPool) {
    catch_up_fully(
        pool,
        &ProjectionRunner::new(pool.clone()),
        &NotificationOutboxProjection,
    )
    .await;
}

/// Dispatches until no row is pending, at most 200 passes of at most 10 ms pause.
async fn dispatch_all(pool: &PgPool, dispatcher: &Dispatcher) {
    for _ in 0..200 {
        dispatcher.dispatch_due().await.unwrap();
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications.outbox WHERE status = 'pending'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("notifications were still pending after 200 dispatch passes");
}

async fn rows(pool: &PgPool, channel: &str) -> Vec<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT status, attempts, last_error FROM notifications.outbox
          WHERE channel = $1 ORDER BY id",
    )
    .bind(channel)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Queues the e-mail of one referral: an agency without texting, the ambassador Ada with
/// only an e-mail address, and her referral of Grace, with the outbox filled.
async fn email_referral_queued(pool: &PgPool) -> Arc<Application> {
    let app = Arc::new(application(pool));
    let agency = AgencyId::new();
    create_agency(pool, agency, false).await;
    let ada = ambassador(
        &app,
        agency,
        contact("Ada", Some("ada@example.com"), None),
        false,
    )
    .await;
    refer(&app, agency, ada, "grace@example.org").await;
    fill_outbox(pool).await;
    app
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn email_delivered_once_after_two_failures(pool: PgPool) {
    let app = email_referral_queued(&pool).await;
    let (mock, base_url) = start_mock().await;
    mock.fail_next(2, 503);

    dispatch_all(&pool, &dispatcher(&app, &base_url, 5)).await;

    let requests = mock.received("/v3/mail/send");
    let answers: Vec<u16> = requests.iter().map(|request| request.answered).collect();
    assert_eq!(answers, [503, 503, 202]);
    let email = &requests[2];
    assert_eq!(email.authorization, "Bearer sendgrid-key");
    assert_eq!(
        email.body["personalizations"][0]["to"][0]["email"],
        "ada@example.com"
    );
    assert_eq!(email.body["from"]["email"], "referrals@agency.test");
    assert_eq!(email.body["subject"], "We received your referral");
    assert_eq!(email.body["content"][0]["type"], "text/plain");
    let text = email.body["content"][0]["value"].as_str().unwrap();
    assert!(text.starts_with("Hello Ada,"), "{text}");
    assert!(
        !text.contains("Grace"),
        "the candidate's name leaked: {text}"
    );
    assert_eq!(rows(&pool, "email").await, [("sent".to_owned(), 3, None)]);
}

/// Returns the status, attempts and next attempt time of the only e-mail row.
async fn email_schedule(pool: &PgPool) -> (String, i32, DateTime<Utc>) {
    sqlx::query_as(
        "SELECT status, attempts, next_attempt_at FROM notifications.outbox
          WHERE channel = 'email'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn email_retries_wait_for_growing_backoff(pool: PgPool) {
    let app = email_referral_queued(&pool).await;
    let (mock, base_url) = start_mock().await;
    mock.fail_next(3, 503);
    // Whole seconds, because PostgreSQL stores microseconds, and a minute ahead, so the
    // row written at the database's now() is due.
    let start = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap() + TimeDelta::minutes(1);
    let clock = Arc::new(ManualClock::new(start));
    let policy = RetryPolicy {
        max_attempts: 5,
        base_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(3600),
    };
    let dispatcher = dispatcher_with(&app, &base_url, policy, clock.clone());
    let requests = || i32::try_from(mock.received("/v3/mail/send").len()).unwrap();

    dispatcher.dispatch_due().await.unwrap();
    assert_eq!(requests(), 1);
    // Each failure waits the base backoff doubled once per earlier failure.
    for (failures, wait_seconds) in [(1, 10), (2, 20), (3, 40)] {
        let due = clock.now() + TimeDelta::seconds(wait_seconds);
        assert_eq!(
            email_schedule(&pool).await,
            ("pending".to_owned(), failures, due),
            "after failure {failures}"
        );

        dispatcher.dispatch_due().await.unwrap();
        assert_eq!(
            requests(),
            failures,
            "resent at once after failure {failures}"
        );

        clock.set(due - TimeDelta::milliseconds(1));
        dispatcher.dispatch_due().await.unwrap();
        assert_eq!(
            requests(),
            failures,
            "resent early after failure {failures}"
        );

        clock.set(due);
        dispatcher.dispatch_due().await.unwrap();
        assert_eq!(
            requests(),
            failures + 1,
            "not resent when due after failure {failures}"
        );
    }
    let (status, attempts, _) = email_schedule(&pool).await;
    assert_eq!(status, "sent");
    assert_eq!(attempts, 4);

    // Past the backoff and the claim lease, a sent row stays sent.
    clock.advance(TimeDelta::hours(2));
    dispatcher.dispatch_due().await.unwrap();

    let received = mock.received("/v3/mail/send");
    let answers: Vec<u16> = received.iter().map(|request| request.answered).collect();
    assert_eq!(answers, [503, 503, 503, 202]);
    let dedupe_key: String =
        sqlx::query_scalar("SELECT dedupe_key FROM notifications.outbox WHERE channel = 'email'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!dedupe_key.is_empty());
    for request in &received {
        assert_eq!(
            request.body["personalizations"][0]["custom_args"]["dedupe_key"],
            dedupe_key.as_str()
        );
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn two_dispatchers_send_each_message_once(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    create_agency(&pool, agency, false).await;
    let ada = ambassador(
        &app,
        agency,
        contact("Ada", Some("ada@example.com"), None),
        false,
    )
    .await;
    for n in 0..20 {
        refer(&app, agency, ada, &format!("candidate{n}@example.org")).await;
    }
    fill_outbox(&pool).await;
    let (mock, base_url) = start_mock().await;
    // Small batches, so the two dispatchers claim rows in turns.
    let first = dispatcher(&app, &base_url, 5).with_batch_size(3);
    let second = dispatcher(&app, &base_url, 5).with_batch_size(3);

    tokio::join!(dispatch_all(&pool, &first), dispatch_all(&pool, &second));

    let mut sent: Vec<String> = mock
        .received("/v3/mail/send")
        .iter()
        .map(|request| {
            request.body["personalizations"][0]["custom_args"]["dedupe_key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    sent.sort();
    let queued: Vec<String> = sqlx::query_scalar(
        "SELECT dedupe_key FROM notifications.outbox WHERE channel = 'email' ORDER BY dedupe_key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(queued.len(), 20);
    assert_eq!(sent, queued);
    let email_rows = rows(&pool, "email").await;
    assert!(
        email_rows
            .iter()
            .all(|row| *row == ("sent".to_owned(), 1, None)),
        "{email_rows:?}"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sms_only_with_consent_and_texting(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    create_agency(&pool, agency, true).await;
    let consenting = ambassador(
        &app,
        agency,
        contact("Ada", None, Some("+14155550101")),
        true,
    )
    .await;
    let declining = ambassador(
        &app,
        agency,
        contact("Bob", None, Some("+14155550102")),
        false,
    )
    .await;
    refer(&app, agency, consenting, "grace@example.org").await;
    refer(&app, agency, declining, "henry@example.org").await;
    fill_outbox(&pool).await;
    let (mock, base_url) = start_mock().await;

    dispatch_all(&pool, &dispatcher(&app, &base_url, 5)).await;

    let texts = mock.received("/api/messages");
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0].body["receiver"], "+14155550101");
    assert_eq!(texts[0].body["sender"], "recruiting@agency.test");
    assert!(texts[0].body["content"]
        .as_str()
        .unwrap()
        .contains("was received"));
    // Basic base64("textus-user:textus-key").
    assert_eq!(
        texts[0].authorization,
        "Basic dGV4dHVzLXVzZXI6dGV4dHVzLWtleQ=="
    );
    let sms_rows = rows(&pool, "sms").await;
    assert!(
        sms_rows.contains(&("sent".to_owned(), 1, None)),
        "{sms_rows:?}"
    );
    assert!(
        sms_rows.contains(&("skipped".to_owned(), 0, Some("no_sms_consent".to_owned()))),
        "{sms_rows:?}"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sms_opt_out_applies_to_queued_messages(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    create_agency(&pool, agency, true).await;
    let ada = ambassador(
        &app,
        agency,
        contact("Ada", None, Some("+14155550101")),
        true,
    )
    .await;
    refer(&app, agency, ada, "grace@example.org").await;
    fill_outbox(&pool).await;
    let opt_out = AmbassadorChanges {
        sms_consent: Some(false),
        ..AmbassadorChanges::default()
    };
    app.update_ambassador(&recruiter(agency), ada, opt_out, None)
        .await
        .unwrap();
    let (mock, base_url) = start_mock().await;

    dispatch_all(&pool, &dispatcher(&app, &base_url, 5)).await;

    assert!(mock.received("/api/messages").is_empty());
    assert_eq!(
        rows(&pool, "sms").await,
        [("skipped".to_owned(), 0, Some("no_sms_consent".to_owned()))]
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sms_skipped_when_texting_disabled(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    create_agency(&pool, agency, false).await;
    let ada = ambassador(
        &app,
        agency,
        contact("Ada", None, Some("+14155550101")),
        true,
    )
    .await;
    refer(&app, agency, ada, "grace@example.org").await;
    fill_outbox(&pool).await;
    let (mock, base_url) = start_mock().await;

    dispatch_all(&pool, &dispatcher(&app, &base_url, 5)).await;

    assert!(mock.received("/api/messages").is_empty());
    assert_eq!(
        rows(&pool, "sms").await,
        [("skipped".to_owned(), 0, Some("texting_disabled".to_owned()))]
    );
}

fn metrics_handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("installing the metrics recorder")
    })
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn email_dead_lettered_after_max_attempts(pool: PgPool) {
    let handle = metrics_handle();
    let app = email_referral_queued(&pool).await;
    let (mock, base_url) = start_mock().await;
    mock.fail_next(10, 500);

    dispatch_all(&pool, &dispatcher(&app, &base_url, 3)).await;

    assert_eq!(mock.received("/v3/mail/send").len(), 3);
    assert_eq!(
        rows(&pool, "email").await,
        [(
            "dead_lettered".to_owned(),
            3,
            Some("SendGrid returned HTTP 500".to_owned())
        )]
    );
    // The recorder is global to this test binary, and tests running alongside add
    // their own failed attempts, so the failure count is a lower bound. Only this
    // test dead-letters.
    let rendered = handle.render();
    let dead_lettered = metric_value(
        &rendered,
        "notifications_dead_lettered_total{channel=\"email\"}",
    );
    let failed = metric_value(&rendered, "notifications_failed_total{channel=\"email\"}");
    assert_eq!(dead_lettered, Some(1.0), "{rendered}");
    assert!(failed.is_some_and(|failed| failed >= 2.0), "{rendered}");
    assert!(
        metric_value(&rendered, "notifications_pending").is_some(),
        "{rendered}"
    );
}

/// Returns the value of the sample `series` (name and labels) in Prometheus text.
fn metric_value(rendered: &str, series: &str) -> Option<f64> {
    rendered.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The outbox projection under its own name, failing right after it applied the event
/// at `fail_after`, as a later step of the same batch would.
struct FailingOutbox {
    fail_after: i64,
}

#[async_trait::async_trait]
impl Projection for FailingOutbox {
    fn name(&self) -> &'static str {
        OUTBOX_PROJECTION
    }

    fn schema(&self) -> &'static str {
        NotificationOutboxProjection.schema()
    }

    fn tables(&self) -> &'static [&'static str] {
        NotificationOutboxProjection.tables()
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        NotificationOutboxProjection
            .apply(connection, event)
            .await?;
        if event.position == self.fail_after {
            return Err(ProjectionError::Transient(
                "injected failure after the outbox rows".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Waits, at most 15 seconds, until every committed event is older than every running
/// transaction, so the runner's next batch reads all of them.
async fn wait_until_events_readable(pool: &PgPool) {
    for _ in 0..300 {
        let unreadable: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events
              WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if unreadable == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("events were still above the read horizon after 15 seconds");
}

async fn outbox_checkpoint(pool: &PgPool) -> (String, i64, i64) {
    sqlx::query_as(
        "SELECT transaction_id::text, position, events_applied FROM projection_checkpoints
          WHERE projection = $1",
    )
    .bind(OUTBOX_PROJECTION)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn outbox_rows_per_referral(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM notifications.outbox GROUP BY referral_id ORDER BY referral_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn failed_batch_leaves_no_outbox_rows(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let ada = ambassador(
        &app,
        agency,
        contact("Ada", Some("ada@example.com"), Some("+14155550101")),
        true,
    )
    .await;
    refer(&app, agency, ada, "first@example.org").await;
    fill_outbox(&pool).await;
    let checkpoint = outbox_checkpoint(&pool).await;
    for candidate in ["second", "third", "fourth"] {
        refer(&app, agency, ada, &format!("{candidate}@example.org")).await;
    }
    // Fails after the third referral's submission: by then the batch has written the
    // second and third referrals' rows, and the fourth's event is still ahead.
    let fail_after: i64 = sqlx::query_scalar(
        "SELECT position FROM events WHERE event_type = 'ReferralSubmitted'
          ORDER BY position OFFSET 2 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    wait_until_events_readable(&pool).await;

    let failed = ProjectionRunner::new(pool.clone())
        .run_batch(&FailingOutbox { fail_after })
        .await;

    assert!(
        matches!(&failed, Err(RunnerError::Transient { message, .. }) if message.contains("injected")),
        "{failed:?}"
    );
    assert_eq!(outbox_rows_per_referral(&pool).await, [2]);
    assert_eq!(outbox_checkpoint(&pool).await, checkpoint);

    fill_outbox(&pool).await;

    let last_position: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox_rows_per_referral(&pool).await, [2, 2, 2, 2]);
    assert_eq!(outbox_checkpoint(&pool).await.1, last_position);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn replayed_events_add_no_rows(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let ada = ambassador(
        &app,
        agency,
        contact("Ada", Some("ada@example.com"), None),
        false,
    )
    .await;
    refer(&app, agency, ada, "grace@example.org").await;
    fill_outbox(&pool).await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications.outbox")
        .fetch_one(&pool)
        .await
        .unwrap();

    sqlx::query("UPDATE projection_checkpoints SET transaction_id = '0', position = 0 WHERE projection = 'notification_outbox'")
        .execute(&pool)
        .await
        .unwrap();
    fill_outbox(&pool).await;

    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications.outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(before, 2);
    assert_eq!(after, before);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn file_sink_writes_one_line_per_message(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    create_agency(&pool, agency, true).await;
    let ada = ambassador(
        &app,
        agency,
        contact("Ada", Some("ada@example.com"), Some("+14155550101")),
        true,
    )
    .await;
    refer(&app, agency, ada, "grace@example.org").await;
    fill_outbox(&pool).await;
    let directory = std::env::temp_dir().join(format!("outbox-test-{}", uuid::Uuid::now_v7()));
    let sink = Arc::new(referrals_workers::providers::FileSink::new(&directory));
    let dispatcher = Dispatcher::new(
        app.clone(),
        sink.clone(),
        sink,
        RetryPolicy::default(),
        Arc::new(SystemClock),
    );

    dispatch_all(&pool, &dispatcher).await;

    let email = std::fs::read_to_string(directory.join("email.jsonl")).unwrap();
    let sms = std::fs::read_to_string(directory.join("sms.jsonl")).unwrap();
    std::fs::remove_dir_all(&directory).unwrap();
    let email: Vec<Value> = email
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let sms: Vec<Value> = sms
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(email.len(), 1);
    assert_eq!(email[0]["to"], "ada@example.com");
    assert_eq!(email[0]["subject"], "We received your referral");
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0]["to"], "+14155550101");
    assert_eq!(sms[0]["channel"], "sms");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn assigned_recruiter_gets_email(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let accounts =
        referrals_store::accounts::Accounts::new(pool.clone(), app.personal().vault().clone());
    let recruiter_email =
        referrals_domain::values::EmailAddress::parse("morgan@agency.test").unwrap();
    let recruiter_name = referrals_domain::values::PersonName::parse("Morgan").unwrap();
    let invited = accounts
        .invite_user(
            &recruiter(agency),
            &recruiter_email,
            Some(&recruiter_name),
            &[referrals_domain::role::Role::Recruiter],
        )
        .await
        .unwrap();
    let metadata = recruiter(agency);
    let referral = submitted_referral(&app, &metadata).await;
    let assign = referrals_domain::referral::ReferralCommand::AssignRecruiter(
        referrals_domain::referral::AssignRecruiter {
            recruiter_id: invited.user_id,
            at: Utc::now(),
        },
    );
    app.execute_referral(&metadata, referral, assign, None)
        .await
        .unwrap();
    fill_outbox(&pool).await;
    let (mock, base_url) = start_mock().await;

    dispatch_all(&pool, &dispatcher(&app, &base_url, 5)).await;

    let emails = mock.received("/v3/mail/send");
    let to_recruiter: Vec<&Received> = emails
        .iter()
        .filter(|email| email.body["personalizations"][0]["to"][0]["email"] == "morgan@agency.test")
        .collect();
    assert_eq!(to_recruiter.len(), 1, "{emails:?}");
    assert_eq!(
        to_recruiter[0].body["subject"],
        "A referral was assigned to you"
    );
    let text = to_recruiter[0].body["content"][0]["value"]
        .as_str()
        .unwrap();
    assert!(text.starts_with("Hello Morgan,"), "{text}");
    assert!(text.contains(&referral.to_string()), "{text}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn lifecycle_events_queue_ambassador_notices(pool: PgPool) {
    use referrals_domain::ids::{PayoutId, UserId};
    use referrals_domain::payout::{ApprovePayout, MarkExported, MarkPaid, PayoutCommand};
    use referrals_domain::referral::{MarkContacted, RecordHire, ReferralCommand};

    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let referral = submitted_referral(&app, &metadata).await;
    let contacted = ReferralCommand::MarkContacted(MarkContacted { at: Utc::now() });
    app.execute_referral(&metadata, referral, contacted, None)
        .await
        .unwrap();
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: Utc::now().date_naive(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: None,
        at: Utc::now(),
    });
    let hired = app
        .execute_referral(&metadata, referral, hire, None)
        .await
        .unwrap();
    let milestone = &hired.aggregate.milestones_reached()[0];
    let payout_id =
        PayoutId::for_milestone(referral, &milestone.key, milestone.milestone.recipient);
    let payout_steps = [
        PayoutCommand::ApprovePayout(ApprovePayout {
            approver: UserId::new(),
            ambassador_active: true,
            at: Utc::now(),
        }),
        PayoutCommand::MarkExported(MarkExported {
            batch_id: uuid::Uuid::now_v7(),
            at: Utc::now(),
        }),
        PayoutCommand::MarkPaid(MarkPaid {
            paid_on: Utc::now().date_naive(),
            reference: "PAY-1".to_owned(),
            at: Utc::now(),
        }),
    ];
    for command in payout_steps {
        app.payouts
            .execute(&payout_id.to_string(), command, &metadata, None)
            .await
            .unwrap();
    }

    fill_outbox(&pool).await;

    let queued: Vec<(String, Value)> = sqlx::query_as(
        "SELECT template, params FROM notifications.outbox
          WHERE channel = 'email' AND recipient_kind = 'ambassador' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let templates: Vec<&str> = queued
        .iter()
        .map(|(template, _)| template.as_str())
        .collect();
    assert_eq!(
        templates,
        [
            "referral_received",
            "status_changed",
            "status_changed",
            "bonus_earned",
            "payout_paid"
        ]
    );
    assert_eq!(queued[1].1["status"], "contacted");
    assert_eq!(queued[2].1["status"], "hired");
    assert_eq!(queued[3].1["amount"], 50_000);
    assert_eq!(queued[3].1["currency"], "USD");
    let texts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications.outbox WHERE channel = 'sms'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(texts, 5);
}
