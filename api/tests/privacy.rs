//! Subject requests (erasure and access) and agency off-boarding (export and deletion),
//! through the real router. Erasure tests search a `pg_dump` of the whole test database
//! and the captured log output for the erased person's data.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use chrono::Utc;
use common::{catch_up, unique_email, Reply, TestAgency, TestApi, PASSWORD};
use referrals_domain::ids::{ReferralId, UserId, PLATFORM_AGENCY};
use referrals_domain::referral::{RecordHours, ReferralCommand};
use referrals_domain::role::Role;
use referrals_domain::values::Hours;
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::Projection;
use referrals_store::accounts::totp;
use referrals_store::crypto::MasterKey;
use referrals_store::event_store::{Actor, CommandMetadata, SNAPSHOT_EVERY};
use referrals_workers::clock::SystemClock;
use referrals_workers::dispatch::{Dispatcher, RetryPolicy};
use referrals_workers::outbox::NotificationOutboxProjection;
use referrals_workers::providers::FileSink;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const CANDIDATE_NAME: &str = "Zoë Ångström-Quill";
const CANDIDATE_EMAIL: &str = "zoe.quill@example.org";
const CANDIDATE_PHONE: &str = "+12025550143";
const CANDIDATE_NOTE: &str = "Met Zoë at the harbour depot";
const AMBASSADOR_NAME: &str = "Bartholomew Nkemelu";
const AMBASSADOR_EMAIL: &str = "bart.nkemelu@example.net";
const AMBASSADOR_PHONE: &str = "+13125550177";

/// An agency with a recruiter, an auditor, a program with a hire bonus, an ambassador and
/// one hired referral with a pending payout.
struct Setup {
    api: TestApi,
    agency: TestAgency,
    recruiter: String,
    auditor: String,
    program_id: String,
    ambassador_id: String,
    referral_id: String,
}

async fn setup(pool: &PgPool) -> Setup {
    setup_with_key(pool, MasterKey::generate().0).await
}

/// Builds the [`Setup`] agency with `master`, so that a second agency in the same
/// database can share the platform's keys with the first.
async fn setup_with_key(pool: &PgPool, master: MasterKey) -> Setup {
    let api = TestApi::with_master_key(pool, master);
    let agency = api.agency().await;
    let (_, recruiter) = api.user(&agency, &[Role::Recruiter]).await;
    let (_, auditor) = api.user(&agency, &[Role::ComplianceAuditor]).await;

    let program = json!({
        "name": "Harbour referrals",
        "terms": {"bonus_schedule": [{"trigger": "hired", "threshold": 0, "amount": 25000}]}
    });
    let reply = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(program),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let program_id = id_of(&reply);

    let ambassador = json!({
        "name": AMBASSADOR_NAME,
        "email": AMBASSADOR_EMAIL,
        "phone": AMBASSADOR_PHONE,
        "kind": "field_worker"
    });
    // Sent with an idempotency key, so that a stored response names the ambassador.
    let reply = api
        .send(
            Method::POST,
            "/v1/ambassadors",
            Some(&recruiter),
            Some(ambassador),
            &[("Idempotency-Key", "enrol-ambassador-1")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let ambassador_id = id_of(&reply);

    let referral = json!({
        "program_id": program_id,
        "ambassador_id": ambassador_id,
        "candidate": {"name": CANDIDATE_NAME, "email": CANDIDATE_EMAIL, "phone": CANDIDATE_PHONE},
        "job_reference": "Crane operator",
        "note": CANDIDATE_NOTE
    });
    let reply = api
        .send(
            Method::POST,
            "/v1/referrals",
            Some(&recruiter),
            Some(referral),
            &[("Idempotency-Key", "submit-referral-1")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let referral_id = id_of(&reply);

    let hire = json!({"start_date": "2026-01-05", "job_title": "Crane operator", "client_name": "Port Authority"});
    let reply = api
        .call(
            Method::POST,
            &format!("/v1/referrals/{referral_id}/hire"),
            Some(&recruiter),
            Some(hire),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    catch_up(pool).await;

    Setup {
        api,
        agency,
        recruiter,
        auditor,
        program_id,
        ambassador_id,
        referral_id,
    }
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap().to_owned()
}

/// Referral count, payout total and ambassador summary counts of an agency.
async fn totals(pool: &PgPool, agency: &TestAgency) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM read_models.referral_board WHERE agency_id = $1),
                (SELECT coalesce(sum(amount), 0)::bigint FROM read_models.payout_ledger
                  WHERE agency_id = $1),
                (SELECT coalesce(sum(referrals_submitted), 0)::bigint
                   FROM read_models.ambassador_summaries WHERE agency_id = $1),
                (SELECT count(*) FROM analytics.payout_facts WHERE agency_id = $1)",
    )
    .bind(agency.agency_id.0)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Records weekly hours on the hired referral until it has more than [`SNAPSHOT_EVERY`]
/// events, so that postgres-es stores a snapshot of its state, and returns the number of
/// referral snapshots.
async fn record_weeks_until_snapshot(setup: &Setup, pool: &PgPool) -> i64 {
    let metadata = CommandMetadata::new(
        setup.agency.agency_id,
        Actor::User {
            id: UserId(Uuid::now_v7()),
            role: "recruiter".to_owned(),
        },
    );
    let referral_id = ReferralId(Uuid::parse_str(&setup.referral_id).unwrap());
    let first_week_ending = chrono::NaiveDate::from_ymd_opt(2026, 1, 11).unwrap();
    for week in 0..=SNAPSHOT_EVERY {
        let command = ReferralCommand::RecordHours(RecordHours {
            week_ending: first_week_ending + chrono::Duration::weeks(week as i64),
            hours: Hours::parse("37.5").unwrap(),
            at: Utc::now(),
        });
        setup
            .api
            .app
            .execute_referral(&metadata, referral_id, command, None)
            .await
            .unwrap();
    }
    catch_up(pool).await;
    sqlx::query_scalar("SELECT count(*) FROM snapshots WHERE aggregate_id = $1")
        .bind(&setup.referral_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs the outbox projection, which the common catch-up leaves out, until it has
/// turned every event into outbox rows, and returns the number of rows addressed to
/// `recipient`.
async fn fill_outbox(pool: &PgPool, recipient: &str) -> i64 {
    let runner = ProjectionRunner::new(pool.clone());
    let names = [NotificationOutboxProjection.name()];
    for _ in 0..300 {
        runner
            .catch_up(&NotificationOutboxProjection)
            .await
            .unwrap();
        let status = &referrals_projections::status::projection_status(pool, &names)
            .await
            .unwrap()[0];
        if status.events_behind == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sqlx::query_scalar("SELECT count(*) FROM notifications.outbox WHERE recipient_id = $1")
        .bind(Uuid::parse_str(recipient).unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Log output captured by the global tracing subscriber of this test binary: every test
/// of the binary writes into it, so a test searches the lines of its neighbours too.
/// A global subscriber, unlike one per thread, cannot miss events when tracing caches
/// its per-callsite interest while another test's thread-local subscriber is gone.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Returns the binary's capture, installing the subscriber (every level) on first use.
    fn install() -> CapturedLogs {
        static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = CapturedLogs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            logs
        })
        .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The whole test database as `pg_dump` writes it.
async fn dump_database(pool: &PgPool) -> String {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let output = std::process::Command::new("/usr/bin/pg_dump")
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "5432",
            "--username",
            "postgres",
        ])
        .args(["--no-owner", "--dbname", &database])
        .output()
        .expect("running /usr/bin/pg_dump");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The forms in which the product could write `text`: as given, lower-cased,
/// upper-cased, and JSON-escaped with non-ASCII characters as `\u` escapes (as
/// PostgreSQL's `json` keeps them when a client sends them so). `pg_dump` writes each
/// backslash of a column value as `\\`, so the list also contains every escaped form with
/// its backslashes doubled. The single-backslash form is a substring of the doubled one,
/// so both match a dump, but the search does not depend on that.
fn stored_forms(text: &str) -> Vec<String> {
    let escaped: String = text
        .chars()
        .map(|character| {
            if character.is_ascii() {
                character.to_string()
            } else {
                format!("\\u{:04x}", u32::from(character))
            }
        })
        .collect();
    let json = serde_json::to_string(text).unwrap();
    let mut forms = vec![
        text.to_owned(),
        text.to_lowercase(),
        text.to_uppercase(),
        json.trim_matches('"').to_owned(),
        escaped.clone(),
        escaped.to_lowercase(),
    ];
    let doubled: Vec<String> = forms
        .iter()
        .filter(|form| form.contains('\\'))
        .map(|form| form.replace('\\', "\\\\"))
        .collect();
    forms.extend(doubled);
    forms
}

/// Returns the ways a North American phone number in E.164 form (`+1` and ten digits)
/// can be written: as given, digits only, the ten national digits, and the national formats
/// `(202) 555-0143`, `202-555-0143` and `202.555.0143`.
fn phone_forms(e164: &str) -> Vec<String> {
    let digits = e164.trim_start_matches('+');
    let national = digits
        .strip_prefix('1')
        .expect("a North American number in E.164 form");
    assert_eq!(national.len(), 10, "{e164} has no ten national digits");
    let (area, rest) = national.split_at(3);
    let (exchange, line) = rest.split_at(3);
    vec![
        e164.to_owned(),
        digits.to_owned(),
        national.to_owned(),
        format!("({area}) {exchange}-{line}"),
        format!("{area}-{exchange}-{line}"),
        format!("{area}.{exchange}.{line}"),
    ]
}

/// Returns the stored forms of `values` that occur in `haystack`.
fn forms_present<S: AsRef<str>>(haystack: &str, values: &[S]) -> Vec<String> {
    values
        .iter()
        .flat_map(|value| stored_forms(value.as_ref()))
        .filter(|form| haystack.contains(form.as_str()))
        .collect()
}

/// Asserts that none of `values`, in any stored form, occurs in `haystack`.
fn assert_absent<S: AsRef<str>>(haystack: &str, values: &[S], place: &str) {
    let present = forms_present(haystack, values);
    assert!(present.is_empty(), "{place} still contains {present:?}");
}

/// Returns the given texts together with every written form of `phone`, for
/// [`assert_absent`].
fn erased_values(texts: &[&str], phone: &str) -> Vec<String> {
    let mut values: Vec<String> = texts.iter().map(|text| (*text).to_owned()).collect();
    values.extend(phone_forms(phone));
    values
}

async fn subject_request(api: &TestApi, token: &str, body: Value) -> Reply {
    api.call(
        Method::POST,
        "/v1/privacy/subject-requests",
        Some(token),
        Some(body),
    )
    .await
}

async fn verify(api: &TestApi, auditor: &str) -> Reply {
    api.call(
        Method::POST,
        "/v1/audit/verify?full=true",
        Some(auditor),
        None,
    )
    .await
}

/// Checks the dump search itself. Values written in the forms the erasure tests look for
/// must be found in a `pg_dump` of them.
#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn dump_search_finds_every_form(pool: PgPool) {
    sqlx::query("CREATE TABLE dump_probe (label text, plain text, document json)")
        .execute(&pool)
        .await
        .unwrap();
    let name = "Ëlo Çarvalho";
    let rows = [
        (
            "json escape",
            None,
            Some(r#"{"name": "\u00cblo \u00c7arvalho"}"#),
        ),
        ("lower case", Some("ada.obi@example.com"), None),
        ("upper case", Some("CY.DEE@EXAMPLE.COM"), None),
        ("national phone", Some("(415) 555-0199"), None),
        ("digits", Some("14155550123"), None),
    ];
    for (label, plain, document) in rows {
        sqlx::query("INSERT INTO dump_probe VALUES ($1, $2, $3::json)")
            .bind(label)
            .bind(plain)
            .bind(document)
            .execute(&pool)
            .await
            .unwrap();
    }

    let dump = dump_database(&pool).await;

    assert!(
        dump.contains(r"\\u00cblo"),
        "pg_dump no longer doubles the backslash"
    );
    assert!(!forms_present(&dump, &[name]).is_empty(), "json escape");
    assert!(
        !forms_present(&dump, &["Ada.Obi@example.com"]).is_empty(),
        "lower case"
    );
    assert!(
        !forms_present(&dump, &["cy.dee@example.com"]).is_empty(),
        "upper case"
    );
    assert!(
        !forms_present(&dump, &phone_forms("+14155550199")).is_empty(),
        "national phone"
    );
    assert!(
        !forms_present(&dump, &phone_forms("+14155550123")).is_empty(),
        "digits"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn erasure_of_candidate_leaves_no_trace(pool: PgPool) {
    let logs = CapturedLogs::install();
    let setup = setup(&pool).await;
    let snapshots = record_weeks_until_snapshot(&setup, &pool).await;
    assert_eq!(snapshots, 1, "the referral has no postgres-es snapshot");
    // Candidates receive no messages, so the rows name the ambassador, not the candidate.
    assert!(fill_outbox(&pool, &setup.ambassador_id).await > 0);
    let before = totals(&pool, &setup.agency).await;
    let dump = dump_database(&pool).await;
    assert!(
        dump.contains(&setup.referral_id),
        "the dump is expected to contain the referral's id"
    );

    let reply = subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "erasure", "email": CANDIDATE_EMAIL.to_uppercase()}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["subjects_found"], json!(1));
    catch_up(&pool).await;

    let dump = dump_database(&pool).await;
    let erased = erased_values(
        &[CANDIDATE_NAME, CANDIDATE_EMAIL, CANDIDATE_NOTE],
        CANDIDATE_PHONE,
    );
    assert_absent(&dump, &erased, "the database dump");
    let log_output = logs.text();
    assert!(
        log_output.contains("subjects erased"),
        "the log capture recorded nothing of the erasure"
    );
    assert_absent(&log_output, &erased, "the log output");
    assert_eq!(totals(&pool, &setup.agency).await, before);

    let report = verify(&setup.api, &setup.auditor).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body["ok"], json!(true), "{}", report.body);

    let referral = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/referrals/{}", setup.referral_id),
            Some(&setup.recruiter),
            None,
        )
        .await;
    assert_eq!(referral.status, StatusCode::OK, "{}", referral.body);
    assert_eq!(referral.body["candidate"]["name"], json!("[erased]"));
    assert_eq!(referral.body["candidate"]["erased"], json!(true));
    assert_eq!(referral.body["status"], json!("completed"));

    let history = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/audit/referral/{}/events", setup.referral_id),
            Some(&setup.auditor),
            None,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let submitted = &history.body["items"][0]["payload"]["ReferralSubmitted"];
    assert_eq!(submitted["candidate"]["name"], json!("[erased]"));
    assert_eq!(submitted["note"], json!("[erased]"));

    let stored_responses: Vec<String> =
        sqlx::query_scalar("SELECT key FROM idempotency_records WHERE agency_id = $1 ORDER BY key")
            .bind(setup.agency.agency_id.0)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored_responses, ["enrol-ambassador-1"]);
    let indexed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subject_contact_keys WHERE subject_id = $1")
            .bind(Uuid::parse_str(&setup.referral_id).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(indexed, 0);
    let hashed_claims: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM candidate_claims
          WHERE referral_id = $1 AND contact_key NOT LIKE 'erased:%'",
    )
    .bind(Uuid::parse_str(&setup.referral_id).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(hashed_claims, 0);

    let erasures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE agency_id = $1 AND aggregate_type = 'privacy_record'
            AND event_type = 'SubjectsErased'",
    )
    .bind(setup.agency.agency_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(erasures, 1);
    // The event was written by the transaction that destroyed the keys. xmin is the
    // 32-bit transaction id, the low half of the event's 64-bit transaction_id.
    let same_transaction: bool = sqlx::query_scalar(
        "SELECT (event.transaction_id::text::numeric % 4294967296)::text = request.xmin::text
           FROM events AS event
           JOIN subject_requests AS request ON request.request_id::text = event.aggregate_id
          WHERE event.event_type = 'SubjectsErased' AND request.agency_id = $1",
    )
    .bind(setup.agency.agency_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        same_transaction,
        "SubjectsErased was committed apart from the erasure"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn later_referral_of_erased_candidate_is_new(pool: PgPool) {
    let setup = setup(&pool).await;
    let reply = subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "erasure", "phone": CANDIDATE_PHONE}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    let referral = json!({
        "program_id": setup.program_id,
        "ambassador_id": setup.ambassador_id,
        "candidate": {"name": CANDIDATE_NAME, "email": CANDIDATE_EMAIL}
    });
    let reply = setup
        .api
        .call(
            Method::POST,
            "/v1/referrals",
            Some(&setup.recruiter),
            Some(referral),
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["status"], json!("submitted"), "{}", reply.body);
    assert_eq!(reply.body["candidate"]["name"], json!(CANDIDATE_NAME));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn erasure_covers_record_sharing_phone(pool: PgPool) {
    let setup = setup(&pool).await;
    let duplicate = json!({
        "program_id": setup.program_id,
        "ambassador_id": setup.ambassador_id,
        "candidate": {"name": "Z. Quill", "phone": CANDIDATE_PHONE}
    });
    let reply = setup
        .api
        .call(
            Method::POST,
            "/v1/referrals",
            Some(&setup.recruiter),
            Some(duplicate),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["status"], json!("duplicate"), "{}", reply.body);
    let duplicate_id = id_of(&reply);

    let erasure = subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "erasure", "email": CANDIDATE_EMAIL}),
    )
    .await;

    assert_eq!(erasure.status, StatusCode::CREATED, "{}", erasure.body);
    assert_eq!(erasure.body["subjects_found"], json!(2), "{}", erasure.body);
    let read = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/referrals/{duplicate_id}"),
            Some(&setup.recruiter),
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["candidate"]["name"], json!("[erased]"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn erasure_of_ambassador_leaves_no_trace(pool: PgPool) {
    let logs = CapturedLogs::install();
    let setup = setup(&pool).await;
    let snapshots = record_weeks_until_snapshot(&setup, &pool).await;
    assert_eq!(snapshots, 1, "the referral has no postgres-es snapshot");
    let queued = fill_outbox(&pool, &setup.ambassador_id).await;
    assert!(queued > 0, "no message to the ambassador is queued");
    let before = totals(&pool, &setup.agency).await;

    let reply = subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "erasure", "phone": "(312) 555-0177"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["subjects_found"], json!(1));
    catch_up(&pool).await;

    let sink = tempfile::tempdir().unwrap();
    let dispatcher = Dispatcher::new(
        setup.api.app.clone(),
        Arc::new(FileSink::new(sink.path())),
        Arc::new(FileSink::new(sink.path())),
        RetryPolicy::default(),
        Arc::new(SystemClock),
    );
    let report = dispatcher.dispatch_due().await.unwrap();
    assert_eq!(report.sent, 0, "{report:?}");
    assert_eq!(report.skipped, u64::try_from(queued).unwrap(), "{report:?}");
    let email_outcomes: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT status, last_error FROM notifications.outbox
          WHERE recipient_id = $1 AND channel = 'email'",
    )
    .bind(Uuid::parse_str(&setup.ambassador_id).unwrap())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        email_outcomes,
        [("skipped".to_owned(), Some("recipient_erased".to_owned()))]
    );
    assert!(
        std::fs::read_dir(sink.path()).unwrap().next().is_none(),
        "the dispatcher wrote a message for the erased ambassador"
    );

    let dump = dump_database(&pool).await;
    let erased = erased_values(&[AMBASSADOR_NAME, AMBASSADOR_EMAIL], AMBASSADOR_PHONE);
    assert_absent(&dump, &erased, "the database dump");
    let log_output = logs.text();
    assert!(
        log_output.contains("subjects erased"),
        "the log capture recorded nothing of the erasure"
    );
    assert_absent(&log_output, &erased, "the log output");
    assert_eq!(totals(&pool, &setup.agency).await, before);

    let report = verify(&setup.api, &setup.auditor).await;
    assert_eq!(report.body["ok"], json!(true), "{}", report.body);

    // Both stored responses contain the ambassador's id, because the enrolment shows their
    // contact data and the referral names them as its ambassador.
    let stored_responses: Vec<String> =
        sqlx::query_scalar("SELECT key FROM idempotency_records WHERE agency_id = $1 ORDER BY key")
            .bind(setup.agency.agency_id.0)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored_responses, Vec::<String>::new());

    let ambassador = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/ambassadors/{}", setup.ambassador_id),
            Some(&setup.recruiter),
            None,
        )
        .await;
    assert_eq!(ambassador.status, StatusCode::OK, "{}", ambassador.body);
    assert_eq!(ambassador.body["name"], json!("[erased]"));
    // The candidate the ambassador referred is another person and keeps their data.
    let referral = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/referrals/{}", setup.referral_id),
            Some(&setup.recruiter),
            None,
        )
        .await;
    assert_eq!(referral.body["candidate"]["name"], json!(CANDIDATE_NAME));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn access_returns_contact_and_referrals(pool: PgPool) {
    let setup = setup(&pool).await;
    let reply = subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "access", "email": CANDIDATE_EMAIL}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body.get("export"), None, "{}", reply.body);
    let request_id = id_of(&reply);
    let path = format!("/v1/privacy/subject-requests/{request_id}");

    let read = setup
        .api
        .call(Method::GET, &path, Some(&setup.auditor), None)
        .await;

    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["kind"], json!("access"));
    assert_eq!(read.body["status"], json!("completed"));
    let subjects = read.body["export"]["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 1, "{}", read.body);
    let candidate = &subjects[0];
    assert_eq!(candidate["kind"], json!("candidate"));
    assert_eq!(candidate["contact"]["name"], json!(CANDIDATE_NAME));
    assert_eq!(candidate["contact"]["email"], json!(CANDIDATE_EMAIL));
    assert_eq!(candidate["contact"]["phone"], json!(CANDIDATE_PHONE));
    assert_eq!(candidate["referral"]["id"], json!(setup.referral_id));
    assert_eq!(candidate["referral"]["note"], json!(CANDIDATE_NOTE));
    assert_eq!(candidate["referral"]["board"]["status"], json!("completed"));
    assert_eq!(candidate["payouts"].as_array().unwrap().len(), 1);

    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM access_log
          WHERE subject_id = $1 AND endpoint = 'GET /v1/privacy/subject-requests/{id}'",
    )
    .bind(Uuid::parse_str(&setup.referral_id).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(logged, 1);
    let sealed: String =
        sqlx::query_scalar("SELECT sealed_export FROM subject_requests WHERE request_id = $1")
            .bind(Uuid::parse_str(&request_id).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(sealed.starts_with("v1."), "the stored export is not sealed");

    let other = setup.api.agency().await;
    let (_, other_auditor) = setup.api.user(&other, &[Role::ComplianceAuditor]).await;
    let foreign = setup
        .api
        .call(Method::GET, &path, Some(&other_auditor), None)
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn access_of_ambassador_lists_referrals_made(pool: PgPool) {
    let setup = setup(&pool).await;
    let reply = subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "access", "email": AMBASSADOR_EMAIL}),
    )
    .await;
    let path = format!("/v1/privacy/subject-requests/{}", id_of(&reply));
    let read = setup
        .api
        .call(Method::GET, &path, Some(&setup.auditor), None)
        .await;

    let ambassador = &read.body["export"]["subjects"][0];
    assert_eq!(ambassador["kind"], json!("ambassador"), "{}", read.body);
    assert_eq!(ambassador["contact"]["name"], json!(AMBASSADOR_NAME));
    let referrals_made = ambassador["referrals_made"].as_array().unwrap();
    assert_eq!(referrals_made.len(), 1);
    assert_eq!(referrals_made[0]["referral_id"], json!(setup.referral_id));
    // The referred candidate is another person: their name is not in this export.
    assert!(!read.body.to_string().contains(CANDIDATE_NAME));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn erasure_destroys_earlier_access_export(pool: PgPool) {
    let setup = setup(&pool).await;
    let access = subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "access", "email": CANDIDATE_EMAIL}),
    )
    .await;
    let path = format!("/v1/privacy/subject-requests/{}", id_of(&access));
    subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "erasure", "email": CANDIDATE_EMAIL}),
    )
    .await;

    let read = setup
        .api
        .call(Method::GET, &path, Some(&setup.auditor), None)
        .await;

    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["status"], json!("erased"));
    assert_eq!(read.body.get("export"), None);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn subject_request_input_is_checked(pool: PgPool) {
    let setup = setup(&pool).await;
    let cases = [
        (json!({"kind": "erasure"}), Some("contact_missing")),
        (
            json!({"kind": "forget", "email": CANDIDATE_EMAIL}),
            Some("invalid_kind"),
        ),
        (json!({"kind": "access", "email": "not-an-address"}), None),
    ];
    for (body, code) in cases {
        let reply = subject_request(&setup.api, &setup.auditor, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        assert!(
            !reply.body.to_string().contains("not-an-address"),
            "the error repeats the submitted address"
        );
        if let Some(code) = code {
            assert_eq!(reply.body["code"], json!(code), "{}", reply.body);
        }
    }

    let recruiter = subject_request(
        &setup.api,
        &setup.recruiter,
        json!({"kind": "access", "email": CANDIDATE_EMAIL}),
    )
    .await;
    assert_eq!(recruiter.status, StatusCode::FORBIDDEN);
    let unknown = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/privacy/subject-requests/{}", Uuid::now_v7()),
            Some(&setup.auditor),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

/// Invites a platform operator, accepts and signs in over HTTP, and returns the token.
async fn operator_token(api: &TestApi) -> String {
    let email = unique_email("operator");
    let bootstrap = CommandMetadata::new(
        PLATFORM_AGENCY,
        Actor::System {
            job: "test".to_owned(),
        },
    );
    let invited = api
        .accounts
        .create_operator(&bootstrap, &email)
        .await
        .unwrap();
    let accepted = api
        .call(
            Method::POST,
            "/v1/auth/invitations/accept",
            None,
            Some(json!({"invite_token": invited.invite_token.expose(), "password": PASSWORD})),
        )
        .await;
    let secret = accepted.body["totp_secret"].as_str().unwrap().to_owned();
    let code = totp::code_at(&secret, Utc::now()).unwrap();
    let session = api
        .call(
            Method::POST,
            "/v1/auth/sessions",
            None,
            Some(json!({"email": email.as_str(), "password": PASSWORD, "totp": code})),
        )
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
    session.body["token"].as_str().unwrap().to_owned()
}

/// Sends a request and returns the status, the content type and the raw body.
async fn raw_call(
    api: &TestApi,
    method: Method,
    path: &str,
    token: &str,
) -> (StatusCode, String, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// Splits a multipart/mixed body into (file name, content) pairs.
fn parts(content_type: &str, body: &str) -> Vec<(String, String)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a multipart boundary");
    body.split(&format!("--{boundary}"))
        .filter_map(|part| {
            let part = part.strip_prefix("\r\n")?;
            let (headers, content) = part.split_once("\r\n\r\n")?;
            let name = headers.split("filename=\"").nth(1)?.split('"').next()?;
            Some((name.to_owned(), content.trim_end_matches("\r\n").to_owned()))
        })
        .collect()
}

/// Tables without an `agency_id` column, each with the column that names an id of the
/// agency's aggregates or imports.
const TABLES_BY_OWNER_ID: [(&str, &str); 12] = [
    ("public.access_tokens", "user_id"),
    ("public.invitations", "user_id"),
    ("public.sessions", "user_id"),
    ("public.snapshots", "aggregate_id"),
    // NOTE: the test agencies import no timesheets, so this entry always counts zero.
    ("public.timesheet_rows", "import_id"),
    ("public.totp_last_steps", "user_id"),
    ("public.user_activity", "user_id"),
    ("public.user_logins", "user_id"),
    ("read_models.ambassador_summary_payouts", "ambassador_id"),
    ("read_models.ambassador_summary_payouts", "payout_id"),
    ("read_models.ambassador_summary_referrals", "ambassador_id"),
    ("read_models.ambassador_summary_referrals", "referral_id"),
];

/// Returns the ids of every aggregate and timesheet import of an agency, as text.
async fn owner_ids(pool: &PgPool, agency_id: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id FROM events WHERE agency_id = $1
         UNION
         SELECT import_id::text FROM timesheet_imports WHERE agency_id = $1",
    )
    .bind(agency_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Returns the agency's row count of every table, as `schema.table` (or
/// `schema.table.column` for a table reached through [`TABLES_BY_OWNER_ID`]) and count.
async fn agency_row_counts(pool: &PgPool, agency_id: Uuid, ids: &[String]) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', columns.table_schema, columns.table_name)
           FROM information_schema.columns AS columns
           JOIN information_schema.tables AS tables USING (table_schema, table_name)
          WHERE columns.column_name = 'agency_id' AND tables.table_type = 'BASE TABLE'
            AND columns.table_schema NOT IN ('pg_catalog', 'information_schema')
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut counts = Vec::new();
    for table in tables {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE agency_id = $1"
        ))
        .bind(agency_id)
        .fetch_one(pool)
        .await
        .unwrap();
        counts.push((table, count));
    }
    for (table, column) in TABLES_BY_OWNER_ID {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE {column}::text = ANY($1)"
        ))
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap();
        counts.push((format!("{table}.{column}"), count));
    }
    counts
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn offboarding_exports_then_deletes_agency(pool: PgPool) {
    let (master, _) = MasterKey::generate();
    let setup = setup_with_key(&pool, master.clone()).await;
    // The other agency has the same people, program, referral and payout.
    let other = setup_with_key(&pool, master).await;
    for agency in [&setup, &other] {
        assert_eq!(record_weeks_until_snapshot(agency, &pool).await, 1);
        assert!(fill_outbox(&pool, &agency.ambassador_id).await > 0);
    }
    let operator = operator_token(&setup.api).await;
    let agency_id = setup.agency.agency_id.0;
    let other_id = other.agency.agency_id.0;
    let events: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, encode(hash, 'hex') FROM events
          WHERE agency_id = $1 ORDER BY position",
    )
    .bind(agency_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let ids = owner_ids(&pool, agency_id).await;
    assert!(ids.contains(&setup.agency.admin_id.0.to_string()));
    assert!(ids.contains(&setup.referral_id));
    let other_ids = owner_ids(&pool, other_id).await;
    let other_before = agency_row_counts(&pool, other_id, &other_ids).await;
    let populated = [
        "public.events",
        "public.data_keys",
        "notifications.outbox",
        "read_models.aggregate_snapshots",
        "public.snapshots.aggregate_id",
        "public.user_logins.user_id",
        "read_models.ambassador_summary_payouts.ambassador_id",
    ];
    for table in populated {
        assert!(
            other_before
                .iter()
                .any(|(name, count)| name == table && *count > 0),
            "the other agency has no rows in {table}: {other_before:?}"
        );
    }

    let (status, content_type, body) = raw_call(
        &setup.api,
        Method::POST,
        &format!("/v1/platform/agencies/{agency_id}/export"),
        &operator,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        content_type.starts_with("multipart/mixed"),
        "{content_type}"
    );
    let files = parts(&content_type, &body);
    let (name, ndjson) = &files[0];
    assert_eq!(name, "events.ndjson");
    let exported: Vec<(String, String, i64, String)> = ndjson
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            (
                event["aggregate_type"].as_str().unwrap().to_owned(),
                event["aggregate_id"].as_str().unwrap().to_owned(),
                event["sequence"].as_i64().unwrap(),
                event["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(exported, events, "the export differs from the events table");
    assert!(
        ndjson.contains(CANDIDATE_NAME),
        "events lack the opened candidate name"
    );
    assert!(
        ndjson.contains(AMBASSADOR_EMAIL),
        "events lack the opened ambassador e-mail"
    );
    let board = files
        .iter()
        .find(|(name, _)| name == "read_models.referral_board.csv")
        .expect("a referral board CSV");
    assert!(board.1.starts_with("referral_id,"), "{}", board.1);
    assert!(board.1.contains(CANDIDATE_NAME), "{}", board.1);
    assert!(files
        .iter()
        .any(|(name, _)| name == "read_models.payout_ledger.csv"));

    let (status, _, body) = raw_call(
        &setup.api,
        Method::DELETE,
        &format!("/v1/platform/agencies/{agency_id}"),
        &operator,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let remaining = agency_row_counts(&pool, agency_id, &ids).await;
    assert!(remaining
        .iter()
        .any(|(table, _)| table == "public.data_keys"));
    assert!(remaining
        .iter()
        .any(|(table, _)| table == "public.agency_keys"));
    for (table, count) in &remaining {
        assert_eq!(*count, 0, "{table} still has rows of the agency");
    }
    assert_eq!(
        agency_row_counts(&pool, other_id, &other_ids).await,
        other_before,
        "the other agency's rows changed"
    );

    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events
          WHERE agency_id = $1 AND aggregate_type = 'privacy_record' ORDER BY position",
    )
    .bind(PLATFORM_AGENCY.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, ["AgencyExported", "AgencyDeleted"]);

    let report = verify(&other.api, &other.auditor).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body["ok"], json!(true), "{}", report.body);
    let other_referral = other
        .api
        .call(
            Method::GET,
            &format!("/v1/referrals/{}", other.referral_id),
            Some(&other.recruiter),
            None,
        )
        .await;
    assert_eq!(
        other_referral.status,
        StatusCode::OK,
        "{}",
        other_referral.body
    );
    assert_eq!(
        other_referral.body["candidate"]["name"],
        json!(CANDIDATE_NAME)
    );
    let again = setup
        .api
        .call(
            Method::DELETE,
            &format!("/v1/platform/agencies/{agency_id}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    // The deleted agency's users can no longer use their sessions.
    let deleted_session = setup
        .api
        .call(Method::GET, "/v1/me", Some(&setup.recruiter), None)
        .await;
    assert_eq!(deleted_session.status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn offboarding_needs_platform_operator(pool: PgPool) {
    let setup = setup(&pool).await;
    let agency_id = setup.agency.agency_id.0;
    for (method, path) in [
        (
            Method::POST,
            format!("/v1/platform/agencies/{agency_id}/export"),
        ),
        (Method::DELETE, format!("/v1/platform/agencies/{agency_id}")),
    ] {
        let reply = setup
            .api
            .call(method, &path, Some(&setup.agency.admin_token), None)
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
    }
    let still_there: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE agency_id = $1")
        .bind(agency_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(still_there > 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn events_stay_append_only_outside_offboarding(pool: PgPool) {
    let setup = setup(&pool).await;
    let error = sqlx::query("DELETE FROM events WHERE agency_id = $1")
        .bind(setup.agency.agency_id.0)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");

    let mut transaction = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('referrals.deleting_agency', $1, true)")
        .bind(Uuid::now_v7().to_string())
        .execute(&mut *transaction)
        .await
        .unwrap();
    let error = sqlx::query("DELETE FROM events WHERE agency_id = $1")
        .bind(setup.agency.agency_id.0)
        .execute(&mut *transaction)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn unique_violation_message_hides_key(pool: PgPool) {
    let key = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let agency_id = Uuid::now_v7();
    let insert = "INSERT INTO candidate_claims (agency_id, contact_key, referral_id, claimed_at)
                  VALUES ($1, $2, $3, now())";
    for attempt in 0..2 {
        let outcome = sqlx::query(insert)
            .bind(agency_id)
            .bind(key)
            .bind(Uuid::now_v7())
            .execute(&pool)
            .await;
        if attempt == 0 {
            outcome.unwrap();
            continue;
        }
        // The service logs and reports database errors through their Display text, which
        // contains PostgreSQL's message but not its DETAIL line with the key's value.
        let error = outcome.unwrap_err();
        assert!(
            error.to_string().contains("candidate_claims_pkey"),
            "{error}"
        );
        assert!(!error.to_string().contains(key), "{error}");
    }
}

/// Downloads a file as text with `token`.
async fn download_text(api: &TestApi, token: &str, url: &str) -> String {
    let request = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "download of {url}");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn erasure_redacts_payroll_files(pool: PgPool) {
    let setup = setup(&pool).await;
    let (_, approver) = setup.api.user(&setup.agency, &[Role::PayoutApprover]).await;
    let payouts = setup
        .api
        .call(
            Method::GET,
            &format!("/v1/payouts?referral_id={}", setup.referral_id),
            Some(&approver),
            None,
        )
        .await;
    let payout_id = payouts.body["items"][0]["id"].as_str().unwrap().to_owned();
    let approved = setup
        .api
        .call(
            Method::POST,
            &format!("/v1/payouts/{payout_id}/approve"),
            Some(&approver),
            None,
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    catch_up(&pool).await;
    let export = setup
        .api
        .call(Method::POST, "/v1/payouts/exports", Some(&approver), None)
        .await;
    assert_eq!(export.status, StatusCode::CREATED, "{}", export.body);
    let url = export.body["download_url"].as_str().unwrap().to_owned();
    let before = download_text(&setup.api, &approver, &url).await;
    assert!(before.contains(AMBASSADOR_NAME), "{before}");

    let reply = subject_request(
        &setup.api,
        &setup.auditor,
        json!({"kind": "erasure", "email": AMBASSADOR_EMAIL}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    let after = download_text(&setup.api, &approver, &url).await;
    assert_absent(&after, &[AMBASSADOR_NAME], "the payroll file");
    assert!(after.contains("[erased]"), "{after}");
    assert!(after.contains(&payout_id), "{after}");
    assert_eq!(after.lines().count(), before.lines().count());
}
