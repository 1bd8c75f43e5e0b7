//! CSV imports through the real router: timesheets (weekly and cumulative) applied by the
//! background worker, known candidates, payroll exports and paid imports.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use chrono::{Days, NaiveDate, Utc};
use common::{unique_email, Reply, TestAgency, TestApi};
use referrals_api::imports::timesheets::process_pending;
use referrals_domain::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, ReferralId, UserId};
use referrals_domain::referral::{RecordHire, ReferralCommand};
use referrals_domain::role::Role;
use referrals_domain::terms::{AmbassadorKind, Milestone, Recipient, Terms, Trigger};
use referrals_domain::values::{Currency, Hours, PersonName};
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::status::projection_status;
use referrals_store::application::{NewAmbassador, NewProgram, NewReferral};
use referrals_store::event_store::{Actor, CommandMetadata};
use referrals_store::personal::ContactDetails;
use serde_json::{json, Value};
use sqlx::PgPool;

/// Returns the first day of every test placement, a Monday.
fn start_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 9, 7).unwrap()
}

/// Returns the Sunday that ends the `week`th week of the placement, counting from 0.
fn week_ending(week: u64) -> NaiveDate {
    start_date()
        .checked_add_days(Days::new(6 + 7 * week))
        .unwrap()
}

fn recruiter_metadata(agency_id: AgencyId) -> CommandMetadata {
    CommandMetadata::new(
        agency_id,
        Actor::User {
            id: UserId::new(),
            role: "recruiter".to_owned(),
        },
    )
}

/// Terms paying $500 at hire and $1,000 after 160 hours.
fn hire_and_hours_terms() -> Terms {
    Terms::with_schedule(vec![
        Milestone {
            trigger: Trigger::Hired,
            threshold: Hours::whole(0),
            amount: 50_000,
            recipient: Recipient::Ambassador,
        },
        Milestone {
            trigger: Trigger::HoursWorked,
            threshold: Hours::whole(160),
            amount: 100_000,
            recipient: Recipient::Ambassador,
        },
    ])
}

fn person(name: &str) -> ContactDetails {
    ContactDetails {
        name: PersonName::parse(name).unwrap(),
        email: Some(unique_email("person")),
        phone: None,
    }
}

/// A program and an ambassador of one agency.
struct Setup {
    program_id: ProgramId,
    ambassador_id: AmbassadorId,
}

async fn setup(api: &TestApi, agency_id: AgencyId) -> Setup {
    let metadata = recruiter_metadata(agency_id);
    let program = api
        .app
        .create_program(
            &metadata,
            NewProgram {
                name: "Warehouse referrals".to_owned(),
                currency: Currency::parse("USD").unwrap(),
                terms: hire_and_hours_terms(),
            },
        )
        .await
        .unwrap();
    let ambassador = api
        .app
        .enroll_ambassador(
            &metadata,
            NewAmbassador {
                contact: person("Ada Quinn"),
                kind: AmbassadorKind::FieldWorker,
                external_id: Some("EMP-0042".to_owned()),
                sms_consent: false,
            },
        )
        .await
        .unwrap();
    Setup {
        program_id: program.aggregate.program_id().unwrap(),
        ambassador_id: ambassador.aggregate.ambassador_id().unwrap(),
    }
}

/// Submits and hires a referral under `worker_id`.
async fn hired_referral(
    api: &TestApi,
    agency_id: AgencyId,
    setup: &Setup,
    worker_id: &str,
) -> ReferralId {
    let metadata = recruiter_metadata(agency_id);
    let referral = api
        .app
        .submit_referral(
            &metadata,
            NewReferral {
                program_id: setup.program_id,
                ambassador_id: setup.ambassador_id,
                candidate: person("Grace Hall"),
                job_reference: None,
                note: None,
            },
        )
        .await
        .unwrap();
    let referral_id = referral.aggregate.referral_id().unwrap();
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: start_date(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: Some(worker_id.to_owned()),
        at: Utc::now(),
    });
    api.app
        .execute_referral(&metadata, referral_id, hire, None)
        .await
        .unwrap();
    referral_id
}

/// Sends a CSV body.
async fn upload(api: &TestApi, token: &str, path: &str, csv: &str) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .body(Body::from(csv.to_owned()))
        .unwrap();
    api.raw(request).await
}

/// Uploads a timesheet, lets the worker apply it and returns the import with its rows.
async fn import_timesheet(api: &TestApi, token: &str, csv: &str) -> Value {
    let accepted = upload(api, token, "/v1/timesheets", csv).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    process_pending(&api.app).await.unwrap();
    let id = accepted.body["id"].as_str().unwrap();
    let progress = api
        .call(
            Method::GET,
            &format!("/v1/timesheets/{id}?limit=500"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(progress.status, StatusCode::OK, "{}", progress.body);
    progress.body
}

async fn events(pool: &PgPool, aggregate_id: &str, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = $2")
        .bind(aggregate_id)
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn all_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn row(import: &Value, line: u64) -> &Value {
    import["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["line"] == json!(line))
        .unwrap_or_else(|| panic!("no row for line {line} in {import}"))
}

async fn recruiter(api: &TestApi, agency: &TestAgency) -> String {
    api.user(agency, &[Role::Recruiter]).await.1
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn weekly_import_records_hours_once(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    let referral_id = hired_referral(&api, agency.agency_id, &setup, "W-100").await;
    let csv = format!(
        "\u{feff}external_worker_id,week_ending,hours,site\r\n\
         W-100,{},37.50,North\r\n\
         \"W-100\",{},\"40\",North\r\n\
         W-999,{},8,South\r\n",
        week_ending(0),
        week_ending(1),
        week_ending(0),
    );

    let first = import_timesheet(&api, &token, &csv).await;
    let recorded = events(&pool, &referral_id.to_string(), "HoursRecorded").await;
    let events_after_first = all_events(&pool).await;
    let second = import_timesheet(&api, &token, &csv).await;

    assert_eq!(first["shape"], "weekly");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["rows_total"], 3);
    assert_eq!(first["rows_processed"], 3);
    assert_eq!(row(&first, 2)["outcome"], "accepted");
    assert_eq!(row(&first, 2)["hours"], "37.50");
    assert_eq!(
        row(&first, 2)["referral_id"],
        json!(referral_id.to_string())
    );
    assert_eq!(row(&first, 3)["outcome"], "accepted");
    assert_eq!(row(&first, 4)["outcome"], "unknown_worker");
    assert_eq!(recorded, 2);
    assert_eq!(second["outcomes"]["unchanged"], 2);
    assert_eq!(second["outcomes"]["unknown_worker"], 1);
    assert_eq!(all_events(&pool).await, events_after_first);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn changed_week_is_a_correction(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    let referral_id = hired_referral(&api, agency.agency_id, &setup, "W-7").await;

    import_timesheet(
        &api,
        &token,
        &format!(
            "external_worker_id,week_ending,hours\nW-7,{},40\n",
            week_ending(0)
        ),
    )
    .await;
    let corrected = import_timesheet(
        &api,
        &token,
        &format!(
            "external_worker_id,week_ending,hours\nW-7,{},32.25\n",
            week_ending(0)
        ),
    )
    .await;

    assert_eq!(row(&corrected, 2)["outcome"], "corrected");
    assert!(row(&corrected, 2)["reason"]
        .as_str()
        .unwrap()
        .contains("40.00"));
    assert_eq!(
        events(&pool, &referral_id.to_string(), "HoursCorrected").await,
        1
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn cumulative_feed_records_differences_and_flags_lower_total(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    let referral_id = hired_referral(&api, agency.agency_id, &setup, "C-1").await;
    let csv = format!(
        "external_worker_id,as_of,total_hours\nC-1,{},40\nC-1,{},100\nC-1,{},90.5\n",
        week_ending(0),
        week_ending(1),
        week_ending(2),
    );

    let import = import_timesheet(&api, &token, &csv).await;
    let accrued: Vec<String> = sqlx::query_scalar(
        "SELECT payload -> 'HoursAccrued' ->> 'added' FROM events
          WHERE aggregate_id = $1 AND event_type = 'HoursAccrued' ORDER BY sequence",
    )
    .bind(referral_id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    let lowered: Vec<bool> = sqlx::query_scalar(
        "SELECT (payload -> 'HoursTotalLowered' ->> 'needs_review')::boolean FROM events
          WHERE aggregate_id = $1 AND event_type = 'HoursTotalLowered'",
    )
    .bind(referral_id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();

    assert_eq!(import["shape"], "cumulative");
    assert_eq!(accrued, vec!["40.00", "60.00"]);
    assert_eq!(lowered, vec![true]);
    assert_eq!(row(&import, 4)["outcome"], "corrected");
    assert_eq!(row(&import, 4)["needs_review"], true);
    assert!(row(&import, 4)["reason"]
        .as_str()
        .unwrap()
        .contains("review"));
    assert_eq!(row(&import, 2)["needs_review"], false);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn hours_milestone_fires_once_from_imports(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    let referral_id = hired_referral(&api, agency.agency_id, &setup, "M-1").await;
    let four_weeks: String = (0..4)
        .map(|week| format!("M-1,{},40\n", week_ending(week)))
        .collect();
    let fifth_week = format!("M-1,{},40\n", week_ending(4));

    let first = format!("external_worker_id,week_ending,hours\n{four_weeks}");
    import_timesheet(&api, &token, &first).await;
    import_timesheet(&api, &token, &first).await;
    import_timesheet(
        &api,
        &token,
        &format!("external_worker_id,week_ending,hours\n{four_weeks}{fifth_week}"),
    )
    .await;
    let reached: Vec<String> = sqlx::query_scalar(
        "SELECT payload -> 'MilestoneReached' -> 'milestone' ->> 'trigger' FROM events
          WHERE aggregate_id = $1 AND event_type = 'MilestoneReached'",
    )
    .bind(referral_id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    let hours_payout = PayoutId::for_milestone(
        referral_id,
        &hire_and_hours_terms().bonus_schedule[1].key(),
        Recipient::Ambassador,
    );

    assert_eq!(
        reached
            .iter()
            .filter(|trigger| *trigger == "hours_worked")
            .count(),
        1,
        "{reached:?}"
    );
    assert_eq!(
        events(&pool, &hours_payout.to_string(), "PayoutRequested").await,
        1
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn timesheet_header_errors_are_rejected(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;

    let empty = upload(&api, &token, "/v1/timesheets", "").await;
    let wrong = upload(
        &api,
        &token,
        "/v1/timesheets",
        "worker,week,hours\nW-1,2026-09-13,8\n",
    )
    .await;
    let both = upload(
        &api,
        &token,
        "/v1/timesheets",
        "external_worker_id,week_ending,hours,as_of,total_hours\n",
    )
    .await;
    let json_body = api
        .call(
            Method::POST,
            "/v1/timesheets",
            Some(&token),
            Some(json!({"rows": []})),
        )
        .await;
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM timesheet_imports")
        .fetch_one(&pool)
        .await
        .unwrap();

    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.body);
    assert_eq!(empty.body["code"], "missing_csv_header");
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
    assert_eq!(wrong.body["code"], "invalid_csv_header");
    let detail = wrong.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("external_worker_id, week_ending"),
        "{detail}"
    );
    assert!(detail.contains("as_of, total_hours"), "{detail}");
    assert_eq!(both.body["code"], "invalid_csv_header");
    assert_eq!(json_body.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(staged, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn invalid_timesheet_rows_name_the_value(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    hired_referral(&api, agency.agency_id, &setup, "W-1").await;
    let csv = format!(
        "external_worker_id,week_ending,hours\n\
         W-1,2026-13-01,8\n\
         W-1,{week},-5\n\
         W-1,{week},7.125\n\
         W-1,{week}\n\
         ,{week},8\n\
         W-1,{week},200\n\
         W-1,2026-01-04,8\n",
        week = week_ending(0),
    );

    let import = import_timesheet(&api, &token, &csv).await;
    let reason = |line| row(&import, line)["reason"].as_str().unwrap().to_owned();

    assert_eq!(import["outcomes"]["invalid"], 7, "{import}");
    assert!(
        reason(2).contains("week_ending \"2026-13-01\""),
        "{}",
        reason(2)
    );
    assert!(reason(3).contains("hours \"-5\""), "{}", reason(3));
    assert!(reason(4).contains("hours \"7.125\""), "{}", reason(4));
    assert!(reason(4).contains("two decimals"), "{}", reason(4));
    assert!(reason(5).contains("hours is missing"), "{}", reason(5));
    assert!(
        reason(6).contains("external_worker_id is empty"),
        "{}",
        reason(6)
    );
    assert!(reason(7).contains("168"), "{}", reason(7));
    assert!(
        reason(8).contains("before the placement start"),
        "{}",
        reason(8)
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn timesheet_of_another_agency_is_not_found(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let other = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let other_token = recruiter(&api, &other).await;
    let accepted = upload(
        &api,
        &token,
        "/v1/timesheets",
        "external_worker_id,week_ending,hours\nW-1,2026-09-13,8\n",
    )
    .await;
    let id = accepted.body["id"].as_str().unwrap();

    let foreign = api
        .call(
            Method::GET,
            &format!("/v1/timesheets/{id}"),
            Some(&other_token),
            None,
        )
        .await;

    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn timesheet_rows_page_with_a_cursor(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let rows: String = (0..5).map(|n| format!("X-{n},2026-09-13,8\n")).collect();
    let accepted = upload(
        &api,
        &token,
        "/v1/timesheets",
        &format!("external_worker_id,week_ending,hours\n{rows}"),
    )
    .await;
    process_pending(&api.app).await.unwrap();
    let id = accepted.body["id"].as_str().unwrap();

    let first = api
        .call(
            Method::GET,
            &format!("/v1/timesheets/{id}?limit=3"),
            Some(&token),
            None,
        )
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = api
        .call(
            Method::GET,
            &format!("/v1/timesheets/{id}?limit=3&cursor={cursor}"),
            Some(&token),
            None,
        )
        .await;

    assert_eq!(first.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(first.body["outcomes"]["unknown_worker"], 5);
    assert_eq!(second.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(second.body["items"][0]["line"], 5);
    assert!(second.body["next_cursor"].is_null());
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn known_candidate_makes_referral_ineligible(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    let yesterday = Utc::now().date_naive().pred_opt().unwrap();
    let tomorrow = Utc::now().date_naive().succ_opt().unwrap();
    let csv = format!(
        "email,phone,last_contact_on\n\
         Known.Person@Example.com,,{yesterday}\n\
         ,+1 415 555 0100,{yesterday}\n\
         not-an-email,,{yesterday}\n\
         ,,{yesterday}\n\
         someone@example.com,,{tomorrow}\n"
    );

    let imported = upload(&api, &token, "/v1/known-candidates", &csv).await;
    let check = api
        .call(
            Method::POST,
            "/v1/referrals/eligibility-check",
            Some(&token),
            Some(json!({
                "program_id": setup.program_id.to_string(),
                "ambassador_id": setup.ambassador_id.to_string(),
                "candidate": {"name": "Known Person", "email": "known.person@example.com"},
            })),
        )
        .await;
    let submitted = api
        .call(
            Method::POST,
            "/v1/referrals",
            Some(&token),
            Some(json!({
                "program_id": setup.program_id.to_string(),
                "ambassador_id": setup.ambassador_id.to_string(),
                "candidate": {"name": "Known Person", "phone": "+14155550100"},
            })),
        )
        .await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT contact_key FROM known_candidates")
        .fetch_all(&pool)
        .await
        .unwrap();

    assert_eq!(imported.status, StatusCode::OK, "{}", imported.body);
    assert_eq!(imported.body["accepted"], 2);
    assert_eq!(imported.body["invalid"], 3);
    let reasons: Vec<&str> = imported.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["reason"].as_str())
        .collect();
    assert!(reasons[0].starts_with("email "), "{reasons:?}");
    assert!(!reasons[0].contains("not-an-email"), "{reasons:?}");
    assert!(reasons[1].contains("both empty"), "{reasons:?}");
    assert!(reasons[2].contains("in the future"), "{reasons:?}");
    assert_eq!(check.status, StatusCode::OK, "{}", check.body);
    assert_eq!(check.body["eligible"], false);
    assert_eq!(check.body["reason"], "prior_contact");
    assert_eq!(submitted.status, StatusCode::CREATED, "{}", submitted.body);
    assert_eq!(submitted.body["eligibility"]["eligible"], false);
    assert_eq!(submitted.body["eligibility"]["reason"], "prior_contact");
    assert_eq!(stored.len(), 2);
    assert!(stored
        .iter()
        .all(|key| !key.contains('@') && !key.contains("415")));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn prior_contact_counts_only_inside_lookback(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    // The program looks back 365 days. A contact exactly 365 days ago is inside.
    // NOTE: the server counts from its own today, so a run that crosses midnight UTC
    // can fail the 365-day case.
    let cases = [(30, false), (365, false), (366, true), (400, true)];
    let today = Utc::now().date_naive();
    let mut csv = String::from("email,phone,last_contact_on\n");
    for (days, _) in cases {
        let last_contact = today.checked_sub_days(Days::new(days)).unwrap();
        csv.push_str(&format!(
            "contacted-{days}-days-ago@example.com,,{last_contact}\n"
        ));
    }

    let imported = upload(&api, &token, "/v1/known-candidates", &csv).await;
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.body);
    assert_eq!(imported.body["accepted"], 4, "{}", imported.body);
    for (days, eligible) in cases {
        let check = api
            .call(
                Method::POST,
                "/v1/referrals/eligibility-check",
                Some(&token),
                Some(json!({
                    "program_id": setup.program_id.to_string(),
                    "ambassador_id": setup.ambassador_id.to_string(),
                    "candidate": {
                        "name": "Known Person",
                        "email": format!("contacted-{days}-days-ago@example.com"),
                    },
                })),
            )
            .await;
        assert_eq!(check.status, StatusCode::OK, "{}", check.body);
        assert_eq!(
            check.body["eligible"], eligible,
            "{days} days ago: {}",
            check.body
        );
        if !eligible {
            assert_eq!(check.body["reason"], "prior_contact", "{days} days ago");
        }
    }
    // Submission runs the same look-back.
    for (days, eligible) in [(365, false), (400, true)] {
        let submitted = api
            .call(
                Method::POST,
                "/v1/referrals",
                Some(&token),
                Some(json!({
                    "program_id": setup.program_id.to_string(),
                    "ambassador_id": setup.ambassador_id.to_string(),
                    "candidate": {
                        "name": "Known Person",
                        "email": format!("contacted-{days}-days-ago@example.com"),
                    },
                })),
            )
            .await;
        assert_eq!(submitted.status, StatusCode::CREATED, "{}", submitted.body);
        assert_eq!(
            submitted.body["eligibility"]["eligible"], eligible,
            "{days} days ago: {}",
            submitted.body
        );
    }
}

/// Brings every read model up to date, as the payout export reads the ledger.
async fn catch_up(pool: &PgPool) {
    let runner = ProjectionRunner::new(pool.clone());
    for projection in referrals_projections::models::all() {
        let mut caught_up = false;
        for _ in 0..300 {
            runner.catch_up(projection.as_ref()).await.unwrap();
            let status = projection_status(pool, &[projection.name()]).await.unwrap();
            if status[0].events_behind == 0 {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(caught_up, "{} did not catch up", projection.name());
    }
}

/// Hires `count` referrals and approves their hire payouts; returns the payout ids.
async fn approved_payouts(
    api: &TestApi,
    agency: &TestAgency,
    approver_token: &str,
    count: usize,
) -> Vec<PayoutId> {
    let setup = setup(api, agency.agency_id).await;
    let mut payouts = Vec::new();
    for n in 0..count {
        let referral_id = hired_referral(api, agency.agency_id, &setup, &format!("P-{n}")).await;
        let key = hire_and_hours_terms().bonus_schedule[0].key();
        let payout_id = PayoutId::for_milestone(referral_id, &key, Recipient::Ambassador);
        let approved = api
            .call(
                Method::POST,
                &format!("/v1/payouts/{payout_id}/approve"),
                Some(approver_token),
                None,
            )
            .await;
        assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
        payouts.push(payout_id);
    }
    catch_up(&api.pool).await;
    payouts
}

async fn download(api: &TestApi, token: &str, url: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(api.router.clone(), request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn export_and_paid_import_round_trip(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = api.user(&agency, &[Role::PayoutApprover]).await;
    let payouts = approved_payouts(&api, &agency, &token, 2).await;

    let export = api
        .call(Method::POST, "/v1/payouts/exports", Some(&token), None)
        .await;
    let url = export.body["download_url"].as_str().unwrap().to_owned();
    let (status, file) = download(&api, &token, &url).await;
    let paid_csv = format!(
        "payout_id,paid_on,reference\n{},2026-12-01,PAY-1\n{},2026-12-01,PAY-2\n{},2026-12-01,PAY-3\nnot-a-uuid,2026-12-01,PAY-4\n",
        payouts[0],
        payouts[1],
        uuid::Uuid::now_v7(),
    );
    let first = upload(&api, &token, "/v1/payouts/paid-imports", &paid_csv).await;
    let events_after_first = all_events(&pool).await;
    let second = upload(&api, &token, "/v1/payouts/paid-imports", &paid_csv).await;
    let empty_export = api
        .call(Method::POST, "/v1/payouts/exports", Some(&token), None)
        .await;
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM access_log WHERE endpoint = 'GET /v1/payouts/exports/{id}'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let stored: String = sqlx::query_scalar("SELECT content FROM payout_exports LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();

    assert_eq!(export.status, StatusCode::CREATED, "{}", export.body);
    assert_eq!(export.body["payout_count"], 2);
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(
        lines[0],
        "payout_id,payee_type,payee_name,ambassador_external_id,ambassador_name,amount_minor_units,currency,memo"
    );
    assert_eq!(lines.len(), 3, "{file}");
    for payout_id in &payouts {
        let line = lines
            .iter()
            .find(|line| line.starts_with(&payout_id.to_string()))
            .unwrap_or_else(|| panic!("{payout_id} is missing from {file}"));
        assert!(
            line.contains(",ambassador,Ada Quinn,EMP-0042,Ada Quinn,50000,USD,"),
            "{line}"
        );
    }
    assert!(!stored.contains("Ada Quinn"));
    assert_eq!(logged, 2);
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["paid"], 2);
    assert_eq!(first.body["unmatched"], 1);
    assert_eq!(first.body["invalid"], 1);
    assert!(first.body["rows"][3]["reason"]
        .as_str()
        .unwrap()
        .contains("\"not-a-uuid\""));
    assert_eq!(second.body["unchanged"], 2);
    assert_eq!(second.body["paid"], 0);
    assert_eq!(all_events(&pool).await, events_after_first);
    for payout_id in &payouts {
        assert_eq!(events(&pool, &payout_id.to_string(), "PayoutPaid").await, 1);
        let read = api
            .call(
                Method::GET,
                &format!("/v1/payouts/{payout_id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(read.body["status"], "paid");
    }
    assert_eq!(empty_export.status, StatusCode::CREATED);
    assert_eq!(empty_export.body["payout_count"], 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn paid_import_rejects_payouts_not_exported(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = api.user(&agency, &[Role::PayoutApprover]).await;
    let payouts = approved_payouts(&api, &agency, &token, 1).await;

    let reply = upload(
        &api,
        &token,
        "/v1/payouts/paid-imports",
        &format!(
            "payout_id,paid_on,reference\n{},2026-12-01,PAY-1\n",
            payouts[0]
        ),
    )
    .await;
    let wrong_header = upload(&api, &token, "/v1/payouts/paid-imports", "id,date\n").await;

    assert_eq!(reply.body["unmatched"], 1, "{}", reply.body);
    assert!(reply.body["rows"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("is approved, not exported"));
    assert_eq!(wrong_header.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_header.body["code"], "invalid_csv_header");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn concurrent_exports_never_share_a_payout(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = api.user(&agency, &[Role::PayoutApprover]).await;
    let payouts = approved_payouts(&api, &agency, &token, 4).await;

    let (first, second) = tokio::join!(
        api.call(Method::POST, "/v1/payouts/exports", Some(&token), None),
        api.call(Method::POST, "/v1/payouts/exports", Some(&token), None),
    );

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    let total = first.body["payout_count"].as_i64().unwrap()
        + second.body["payout_count"].as_i64().unwrap();
    assert_eq!(total, 4);
    for payout_id in &payouts {
        assert_eq!(
            events(&pool, &payout_id.to_string(), "PayoutExported").await,
            1
        );
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn imports_need_their_roles(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let recruiter_token = recruiter(&api, &agency).await;
    let (_, approver_token) = api.user(&agency, &[Role::PayoutApprover]).await;

    let export = api
        .call(
            Method::POST,
            "/v1/payouts/exports",
            Some(&recruiter_token),
            None,
        )
        .await;
    let timesheet = upload(
        &api,
        &approver_token,
        "/v1/timesheets",
        "external_worker_id,week_ending,hours\n",
    )
    .await;

    assert_eq!(export.status, StatusCode::FORBIDDEN);
    assert_eq!(timesheet.status, StatusCode::FORBIDDEN);
}

/// The `referrals serve` process of the memory test, with its address.
struct Server {
    child: std::process::Child,
    address: String,
}

impl Server {
    /// Starts `referrals serve` with its workers against `database_url`.
    fn start(database_url: &str, master_key: &str) -> Self {
        use std::io::{BufRead, BufReader};

        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_referrals"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("REFERRALS_MASTER_KEY", master_key)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        // Keeps reading the log after the address, so a full pipe never blocks the server.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let entry: Value = serde_json::from_str(&line).unwrap_or_default();
                if entry["fields"]["message"] == "serving" {
                    let address = entry["fields"]["address"].as_str().unwrap().to_owned();
                    let _ = sender.send(address);
                }
            }
        });
        let address = receiver
            .recv_timeout(Duration::from_secs(20))
            .expect("the server announced its address");
        Self { child, address }
    }

    /// Peak resident memory of the server so far, in KiB (`VmHWM`).
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("/proc reports VmHWM")
    }

    /// Sends one HTTP/1.1 request and returns the status and the JSON body.
    fn request(&self, method: &str, path: &str, token: &str, csv: Option<&[u8]>) -> (u16, Value) {
        use std::io::{Read, Write};

        let mut stream = std::net::TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        let body = csv.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        let reply = String::from_utf8_lossy(&reply);
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or_default())
    }

    /// Uploads a timesheet and waits, for at most ten minutes, until the worker
    /// finished it; returns the import.
    fn import(&self, token: &str, csv: &[u8]) -> Value {
        let (status, accepted) = self.request("POST", "/v1/timesheets", token, Some(csv));
        assert_eq!(status, 202, "{accepted}");
        let path = format!("/v1/timesheets/{}", accepted["id"].as_str().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        loop {
            let (status, import) = self.request("GET", &path, token, None);
            assert_eq!(status, 200, "{import}");
            if import["status"] == "completed" {
                return import;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the import did not finish: {import}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stops the server with SIGTERM, waiting at most fifteen seconds.
    fn stop(mut self) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Bytes of the ignored `note` column on every row of the memory test's files.
const NOTE_BYTES: usize = 400;

/// Every this many lines of the large file is invalid, with a month 13 in `week_ending`.
const INVALID_EVERY: usize = 10_000;

/// Writes a weekly timesheet of `rows` rows, each with an ignored `note` column of
/// [`NOTE_BYTES`] bytes. The rows are fifty weeks of the worker `W-REAL`, then
/// `new_weeks` weeks of the worker `W-NEW`, then rows for worker ids that no referral
/// has. In the last part every [`INVALID_EVERY`]th line has an invalid date.
fn large_timesheet(rows: usize, new_weeks: u64) -> Vec<u8> {
    let note = "x".repeat(NOTE_BYTES);
    let mut csv = String::from("external_worker_id,week_ending,hours,note\n");
    for week in 0..50 {
        csv.push_str(&format!("W-REAL,{},40,{note}\n", week_ending(week)));
    }
    for week in 0..new_weeks {
        csv.push_str(&format!("W-NEW,{},40,{note}\n", week_ending(week)));
    }
    let known = 50 + usize::try_from(new_weeks).unwrap();
    for n in known..rows {
        // The header is line 1, so row `n` is on line `n + 2`.
        if (n + 2) % INVALID_EVERY == 0 {
            csv.push_str(&format!("U-{n},2026-13-01,8,{note}\n"));
        } else {
            csv.push_str(&format!("U-{n},{},8.5,{note}\n", week_ending(0)));
        }
    }
    csv.into_bytes()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn large_timesheet_imports_in_flat_memory(pool: PgPool) {
    let (master, master_base64) = referrals_store::crypto::MasterKey::generate();
    let api = TestApi::with_master_key(&pool, master);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    let real_referral = hired_referral(&api, agency.agency_id, &setup, "W-REAL").await;
    let new_referral = hired_referral(&api, agency.agency_id, &setup, "W-NEW").await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL names the test server");
    let (server_url, _) = base.rsplit_once('/').unwrap();
    let server = Server::start(&format!("{server_url}/{database}"), &master_base64);
    let small = large_timesheet(1_000, 0);
    let large = large_timesheet(100_000, 20);
    let large_kib = u64::try_from(large.len()).unwrap() / 1024;
    let invalid_rows = (72..100_000)
        .filter(|n| (n + 2) % INVALID_EVERY == 0)
        .count();

    let (small_peak, large_peak, imports, samples, events_between) = tokio::task::spawn_blocking({
        let pool = pool.clone();
        move || {
            let small_import = server.import(&token, &small);
            let small_peak = server.peak_rss_kib();
            let large_import = server.import(&token, &large);
            let large_peak = server.peak_rss_kib();
            let id = large_import["id"].as_str().unwrap().to_owned();
            let sample = |query: &str| {
                let (status, page) =
                    server.request("GET", &format!("/v1/timesheets/{id}?{query}"), &token, None);
                assert_eq!(status, 200, "{page}");
                page
            };
            let samples = [
                sample("outcome=accepted&limit=500"),
                sample("outcome=unknown_worker&limit=1"),
                sample("outcome=invalid&limit=500"),
            ];
            let handle = tokio::runtime::Handle::current();
            let before = handle.block_on(all_events(&pool));
            let again = server.import(&token, &large);
            let after = handle.block_on(all_events(&pool));
            server.stop();
            (
                small_peak,
                large_peak,
                [small_import, large_import, again],
                samples,
                after - before,
            )
        }
    })
    .await
    .unwrap();
    let [small_import, large_import, again] = imports;
    let [accepted, unknown, invalid] = samples;

    eprintln!(
        "server peak memory: {small_peak} KiB after 1,000 rows, {large_peak} KiB after \
         100,000 rows in a {large_kib} KiB file"
    );
    assert_eq!(small_import["rows_processed"], 1_000);
    assert_eq!(small_import["outcomes"]["accepted"], 50, "{small_import}");
    assert_eq!(large_import["rows_total"], 100_000);
    assert_eq!(large_import["rows_processed"], 100_000);
    assert_eq!(large_import["outcomes"]["unchanged"], 50, "{large_import}");
    assert_eq!(large_import["outcomes"]["accepted"], 20, "{large_import}");
    assert_eq!(large_import["outcomes"]["invalid"], invalid_rows);
    assert_eq!(
        large_import["outcomes"]["unknown_worker"],
        100_000 - 70 - invalid_rows
    );
    assert_eq!(again["outcomes"]["unchanged"], 70, "{again}");
    assert_eq!(again["outcomes"]["accepted"], 0, "{again}");
    assert_eq!(events_between, 0);
    assert_eq!(
        events(&pool, &real_referral.to_string(), "HoursRecorded").await,
        50
    );
    assert_eq!(
        events(&pool, &new_referral.to_string(), "HoursRecorded").await,
        20
    );

    // The W-NEW rows sit on lines 52 to 71, right after the fifty W-REAL rows.
    let accepted = accepted["items"].as_array().unwrap();
    assert_eq!(accepted.len(), 20);
    assert_eq!(accepted[0]["line"], 52);
    assert_eq!(accepted[19]["line"], 71);
    assert_eq!(accepted[0]["external_worker_id"], "W-NEW");
    assert_eq!(accepted[0]["date"], week_ending(0).to_string());
    assert_eq!(accepted[0]["hours"], "40.00");
    assert_eq!(accepted[0]["referral_id"], new_referral.to_string());
    let unknown = &unknown["items"][0];
    assert_eq!(unknown["line"], 72);
    assert_eq!(unknown["external_worker_id"], "U-70");
    assert!(unknown["referral_id"].is_null(), "{unknown}");
    let invalid = invalid["items"].as_array().unwrap();
    assert_eq!(invalid.len(), invalid_rows);
    assert_eq!(invalid[0]["line"], INVALID_EVERY);
    let reason = invalid[0]["reason"].as_str().unwrap();
    assert!(reason.contains("week_ending \"2026-13-01\""), "{reason}");

    // Rows stream through in batches. A handler that held the whole body, or its rows,
    // would grow by at least the file's size, so growth must stay under a quarter of it.
    assert!(
        large_peak < small_peak + large_kib / 4,
        "peak memory grew from {small_peak} KiB to {large_peak} KiB for a {large_kib} KiB file"
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn worker_resumes_rows_without_outcome(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let setup = setup(&api, agency.agency_id).await;
    let referral_id = hired_referral(&api, agency.agency_id, &setup, "R-1").await;
    let csv = format!(
        "external_worker_id,week_ending,hours\nR-1,{},40\nR-1,{},40\n",
        week_ending(0),
        week_ending(1),
    );
    let accepted = upload(&api, &token, "/v1/timesheets", &csv).await;
    let id: uuid::Uuid = accepted.body["id"].as_str().unwrap().parse().unwrap();
    // A worker that stopped after the first row leaves the second without an outcome.
    process_pending(&api.app).await.unwrap();
    sqlx::query(
        "UPDATE timesheet_rows SET outcome = NULL, reason = NULL WHERE import_id = $1 AND line = 3",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE timesheet_imports SET finished_at = NULL WHERE import_id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();

    let applied = process_pending(&api.app).await.unwrap();
    let progress = api
        .call(
            Method::GET,
            &format!("/v1/timesheets/{id}"),
            Some(&token),
            None,
        )
        .await;

    assert_eq!(applied, 1);
    assert_eq!(progress.body["status"], "completed");
    assert_eq!(progress.body["outcomes"]["accepted"], 1);
    assert_eq!(progress.body["outcomes"]["unchanged"], 1);
    assert_eq!(
        events(&pool, &referral_id.to_string(), "HoursRecorded").await,
        2
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn worker_skips_import_held_by_another(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let token = recruiter(&api, &agency).await;
    let accepted = upload(
        &api,
        &token,
        "/v1/timesheets",
        "external_worker_id,week_ending,hours\nX-1,2026-09-13,8\n",
    )
    .await;
    let id: uuid::Uuid = accepted.body["id"].as_str().unwrap().parse().unwrap();
    let mut other_instance = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM timesheet_imports WHERE import_id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *other_instance)
        .await
        .unwrap();

    let while_held = process_pending(&api.app).await.unwrap();
    other_instance.rollback().await.unwrap();
    let after_release = process_pending(&api.app).await.unwrap();

    assert_eq!(while_held, 0);
    assert_eq!(after_release, 1);
}
