//! The payout ledger, one payout's read and the approvers' decisions, through the real
//! router. Payouts come from hired referrals driven through the application.

mod common;

use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use chrono::{NaiveDate, Utc};
use common::{unique_email, Reply, TestAgency, TestApi};
use referrals_domain::ids::{AgencyId, PayoutId, ReferralId, UserId};
use referrals_domain::payout::{MarkExported, MarkPaid, PayoutCommand, RequestPayout, Requester};
use referrals_domain::referral::{RecordHire, ReferralCommand};
use referrals_domain::role::Role;
use referrals_domain::terms::{AmbassadorKind, Milestone, Recipient, Terms, Trigger};
use referrals_domain::values::{Currency, Hours, Money, PersonName};
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::status::projection_status;
use referrals_store::application::{NewAmbassador, NewProgram, NewReferral};
use referrals_store::event_store::{Actor, CommandMetadata};
use referrals_store::personal::ContactDetails;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Metadata of a recruiter of `agency_id`.
fn recruiter(agency_id: AgencyId) -> CommandMetadata {
    CommandMetadata::new(
        agency_id,
        Actor::User {
            id: UserId::new(),
            role: "recruiter".to_owned(),
        },
    )
}

fn hire_bonus() -> Milestone {
    Milestone {
        trigger: Trigger::Hired,
        threshold: Hours::whole(0),
        amount: 50_000,
        recipient: Recipient::Ambassador,
    }
}

fn person(name: &str) -> ContactDetails {
    ContactDetails {
        name: PersonName::parse(name).unwrap(),
        email: Some(unique_email("person")),
        phone: None,
    }
}

/// Submits and hires one referral in a new program, and returns the pending hire payout.
async fn pending_payout(api: &TestApi, agency_id: AgencyId) -> PayoutId {
    let metadata = recruiter(agency_id);
    let program = api
        .app
        .create_program(
            &metadata,
            NewProgram {
                name: "Warehouse referrals".to_owned(),
                currency: Currency::parse("USD").unwrap(),
                terms: Terms::with_schedule(vec![hire_bonus()]),
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
                external_id: None,
                sms_consent: false,
            },
        )
        .await
        .unwrap();
    let referral = api
        .app
        .submit_referral(
            &metadata,
            NewReferral {
                program_id: program.aggregate.program_id().unwrap(),
                ambassador_id: ambassador.aggregate.ambassador_id().unwrap(),
                candidate: person("Grace Hall"),
                job_reference: None,
                note: None,
            },
        )
        .await
        .unwrap();
    let referral_id = referral.aggregate.referral_id().unwrap();
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: None,
        at: Utc::now(),
    });
    let hired = api
        .app
        .execute_referral(&metadata, referral_id, hire, None)
        .await
        .unwrap();
    let key = &hired.aggregate.milestones_reached()[0].key;
    PayoutId::for_milestone(referral_id, key, Recipient::Ambassador)
}

/// Brings every read model up to date. Transactions of other tests hold the read horizon
/// back for a while, so one pass of the runner may stop short of the last event.
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

async fn post(api: &TestApi, token: &str, path: &str, body: Option<Value>) -> Reply {
    api.call(Method::POST, path, Some(token), body).await
}

async fn event_count(pool: &PgPool, payout_id: PayoutId, event_type: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type = 'payout' AND aggregate_id = $1 AND event_type = $2",
    )
    .bind(payout_id.to_string())
    .bind(event_type)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn code(reply: &Reply) -> &str {
    reply.body["code"].as_str().unwrap_or_default()
}

async fn approver(api: &TestApi, agency: &TestAgency) -> (UserId, String) {
    api.user(agency, &[Role::PayoutApprover]).await
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn approval_queue_lists_oldest_first(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = approver(&api, &agency).await;
    let (_, recruiter_token) = api.user(&agency, &[Role::Recruiter]).await;
    let mut payouts = Vec::new();
    for _ in 0..3 {
        payouts.push(pending_payout(&api, agency.agency_id).await);
    }
    let approved = post(
        &api,
        &token,
        &format!("/v1/payouts/{}/approve", payouts[1]),
        None,
    )
    .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    catch_up(&pool).await;

    let first = api
        .call(
            Method::GET,
            "/v1/payouts?status=pending_approval&limit=1",
            Some(&token),
            None,
        )
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = api
        .call(
            Method::GET,
            &format!("/v1/payouts?status=pending_approval&limit=1&cursor={cursor}"),
            Some(&token),
            None,
        )
        .await;
    let everything = api
        .call(Method::GET, "/v1/payouts", Some(&recruiter_token), None)
        .await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["items"][0]["id"], json!(payouts[0].to_string()));
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["items"][0]["id"], json!(payouts[2].to_string()));
    assert!(second.body["next_cursor"].is_null());
    assert_eq!(everything.status, StatusCode::OK);
    let ids: Vec<&Value> = everything.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["id"])
        .collect();
    let expected: Vec<Value> = payouts.iter().map(|id| json!(id.to_string())).collect();
    assert_eq!(ids, expected.iter().collect::<Vec<_>>());
    let approved_item = &everything.body["items"][1];
    assert_eq!(approved_item["status"], json!("approved"));
    assert!(approved_item["approved_at"].is_string());
    assert_eq!(
        approved_item["amount"],
        json!({"amount": 50000, "currency": "USD"})
    );
    assert_eq!(approved_item["requested_by"]["kind"], json!("system"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn payout_list_filters_by_referral_and_status(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = approver(&api, &agency).await;
    let first = pending_payout(&api, agency.agency_id).await;
    pending_payout(&api, agency.agency_id).await;
    catch_up(&pool).await;
    let one = api
        .call(
            Method::GET,
            &format!("/v1/payouts/{first}"),
            Some(&token),
            None,
        )
        .await;
    let referral_id = one.body["referral_id"].as_str().unwrap();
    let ambassador_id = one.body["ambassador_id"].as_str().unwrap();

    let by_referral = api
        .call(
            Method::GET,
            &format!("/v1/payouts?referral_id={referral_id}"),
            Some(&token),
            None,
        )
        .await;
    let by_ambassador = api
        .call(
            Method::GET,
            &format!("/v1/payouts?ambassador_id={ambassador_id}"),
            Some(&token),
            None,
        )
        .await;
    let paid = api
        .call(Method::GET, "/v1/payouts?status=paid", Some(&token), None)
        .await;
    let unknown_status = api
        .call(Method::GET, "/v1/payouts?status=lost", Some(&token), None)
        .await;
    let unknown_filter = api
        .call(Method::GET, "/v1/payouts?colour=red", Some(&token), None)
        .await;

    assert_eq!(by_referral.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_referral.body["items"][0]["id"], json!(first.to_string()));
    assert_eq!(by_ambassador.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(paid.body["items"], json!([]));
    assert_eq!(unknown_status.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&unknown_status), "invalid_query");
    assert_eq!(unknown_filter.status, StatusCode::BAD_REQUEST);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn payout_read_has_current_state_and_etag(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (approver_id, token) = approver(&api, &agency).await;
    let payout_id = pending_payout(&api, agency.agency_id).await;

    let before = api
        .call(
            Method::GET,
            &format!("/v1/payouts/{payout_id}"),
            Some(&token),
            None,
        )
        .await;
    let approved = post(
        &api,
        &token,
        &format!("/v1/payouts/{payout_id}/approve"),
        None,
    )
    .await;
    let after = api
        .call(
            Method::GET,
            &format!("/v1/payouts/{payout_id}"),
            Some(&token),
            None,
        )
        .await;

    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert_eq!(before.headers[header::ETAG], "\"1\"");
    assert_eq!(before.body["id"], json!(payout_id.to_string()));
    assert_eq!(before.body["status"], json!("pending_approval"));
    assert_eq!(before.body["held"], json!(false));
    assert_eq!(before.body["recipient"], json!("ambassador"));
    assert_eq!(before.body["milestone"], json!(hire_bonus().key().as_str()));
    assert_eq!(
        before.body["amount"],
        json!({"amount": 50000, "currency": "USD"})
    );
    assert_eq!(
        before.body["requested_by"],
        json!({"kind": "system", "job": "payout_requester"})
    );
    assert_eq!(before.body["version"], json!(1));
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.headers[header::ETAG], "\"2\"");
    assert_eq!(
        after.body["status"],
        json!("approved"),
        "read without waiting for projections"
    );
    assert_eq!(after.body["approved_by"], json!(approver_id.0.to_string()));
    assert!(after.body["approved_at"].is_string());
    assert_eq!(after.headers[header::ETAG], "\"2\"");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn sensitive_numbers_rejected_in_reasons(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = approver(&api, &agency).await;
    let payout_id = pending_payout(&api, agency.agency_id).await;
    let path = |action: &str| format!("/v1/payouts/{payout_id}/{action}");
    let texts = [
        "Payee SSN is 123-45-6789",
        "Refund to card 4111-1111-1111-1111",
    ];

    for text in texts {
        let requests = [
            ("reject", json!({"reason": text}), "reason"),
            ("hold", json!({"reason": text}), "reason"),
            ("reverse", json!({"reason": text}), "reason"),
            (
                "void",
                json!({"reason_code": "other", "note": text}),
                "note",
            ),
        ];
        for (action, body, field) in requests {
            let reply = post(&api, &token, &path(action), Some(body)).await;
            assert_eq!(
                reply.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{action}: {}",
                reply.body
            );
            assert_eq!(code(&reply), "invalid_value", "{action}: {}", reply.body);
            assert_eq!(
                reply.body["field"],
                json!(field),
                "{action}: {}",
                reply.body
            );
            let detail = reply.body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("must not be entered here"),
                "{action}: the message does not tell the user to leave the number out: {detail}"
            );
        }
    }
    let decided: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type = 'payout' AND aggregate_id = $1
            AND event_type <> 'PayoutRequested'",
    )
    .bind(payout_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(decided, 0);

    let rejected = post(
        &api,
        &token,
        &path("reject"),
        Some(json!({"reason": "Start date 2026-11-02 is not in payroll batch 7"})),
    )
    .await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.body);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn conflicting_transitions_are_rejected(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = approver(&api, &agency).await;
    let payout_id = pending_payout(&api, agency.agency_id).await;
    let path = |action: &str| format!("/v1/payouts/{payout_id}/{action}");

    let approved = post(&api, &token, &path("approve"), None).await;
    let again = post(&api, &token, &path("approve"), None).await;
    let rejected = post(
        &api,
        &token,
        &path("reject"),
        Some(json!({"reason": "Too late"})),
    )
    .await;
    let reversed = post(
        &api,
        &token,
        &path("reverse"),
        Some(json!({"reason": "Not paid"})),
    )
    .await;
    let released = post(&api, &token, &path("release"), None).await;

    assert_eq!(approved.status, StatusCode::OK);
    for reply in [&again, &rejected, &reversed, &released] {
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
        assert_eq!(code(reply), "invalid_transition");
    }
    assert_eq!(event_count(&pool, payout_id, "PayoutApproved").await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn hold_release_and_reject(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = approver(&api, &agency).await;
    let payout_id = pending_payout(&api, agency.agency_id).await;
    let path = |action: &str| format!("/v1/payouts/{payout_id}/{action}");

    let held = post(
        &api,
        &token,
        &path("hold"),
        Some(json!({"reason": "Checking the start date"})),
    )
    .await;
    let approve_held = post(&api, &token, &path("approve"), None).await;
    let released = post(&api, &token, &path("release"), None).await;
    let no_reason = post(&api, &token, &path("reject"), Some(json!({}))).await;
    let card_number = post(
        &api,
        &token,
        &path("reject"),
        Some(json!({"reason": "card 4111 1111 1111 1111"})),
    )
    .await;
    let rejected = post(
        &api,
        &token,
        &path("reject"),
        Some(json!({"reason": "Candidate was known before"})),
    )
    .await;

    assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    assert_eq!(held.body["held"], json!(true));
    assert_eq!(held.body["hold_reason"], json!("Checking the start date"));
    assert_eq!(approve_held.status, StatusCode::CONFLICT);
    assert_eq!(released.status, StatusCode::OK);
    assert_eq!(released.body["held"], json!(false));
    assert!(released.body["hold_reason"].is_null());
    assert_eq!(no_reason.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&no_reason), "invalid_body");
    assert!(no_reason.body["detail"]
        .as_str()
        .unwrap()
        .contains("reason"));
    assert_eq!(card_number.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(card_number.body["field"], json!("reason"));
    assert!(!card_number.body.to_string().contains("4111"));
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.body);
    assert_eq!(rejected.body["status"], json!("rejected"));
    assert_eq!(
        rejected.body["closed_reason"],
        json!("Candidate was known before")
    );
    assert!(rejected.body["closed_at"].is_string());
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn void_and_reverse(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = approver(&api, &agency).await;
    let voided_id = pending_payout(&api, agency.agency_id).await;
    let paid_id = pending_payout(&api, agency.agency_id).await;

    let without_note = post(
        &api,
        &token,
        &format!("/v1/payouts/{voided_id}/void"),
        Some(json!({})),
    )
    .await;
    let voided = post(
        &api,
        &token,
        &format!("/v1/payouts/{voided_id}/void"),
        Some(json!({"reason_code": "referral_ineligible", "note": "Duplicate found by hand"})),
    )
    .await;
    post(
        &api,
        &token,
        &format!("/v1/payouts/{paid_id}/approve"),
        None,
    )
    .await;
    let early_reverse = post(
        &api,
        &token,
        &format!("/v1/payouts/{paid_id}/reverse"),
        Some(json!({"reason": "Left"})),
    )
    .await;
    let payroll = recruiter(agency.agency_id);
    for command in [
        PayoutCommand::MarkExported(MarkExported {
            batch_id: Uuid::now_v7(),
            at: Utc::now(),
        }),
        PayoutCommand::MarkPaid(MarkPaid {
            paid_on: Utc::now().date_naive(),
            reference: "PAY-1".to_owned(),
            at: Utc::now(),
        }),
    ] {
        api.app
            .payouts
            .execute(&paid_id.to_string(), command, &payroll, None)
            .await
            .unwrap();
    }
    let void_paid = post(
        &api,
        &token,
        &format!("/v1/payouts/{paid_id}/void"),
        Some(json!({"note": "Too late"})),
    )
    .await;
    let reversed = post(
        &api,
        &token,
        &format!("/v1/payouts/{paid_id}/reverse"),
        Some(json!({"reason": "Placement ended in week one"})),
    )
    .await;

    assert_eq!(without_note.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(without_note.body["field"], json!("note"));
    assert_eq!(voided.status, StatusCode::OK, "{}", voided.body);
    assert_eq!(voided.body["status"], json!("voided"));
    assert_eq!(voided.body["closed_reason"], json!("referral_ineligible"));
    assert_eq!(early_reverse.status, StatusCode::CONFLICT);
    assert_eq!(void_paid.status, StatusCode::CONFLICT);
    assert_eq!(reversed.status, StatusCode::OK, "{}", reversed.body);
    assert_eq!(reversed.body["status"], json!("reversed"));
    assert_eq!(reversed.body["paid_reference"], json!("PAY-1"));
    assert!(reversed.body["exported_at"].is_string());
    assert_eq!(
        reversed.body["closed_reason"],
        json!("Placement ended in week one")
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn stale_if_match_is_a_conflict(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = approver(&api, &agency).await;
    let payout_id = pending_payout(&api, agency.agency_id).await;
    let hold = json!({"reason": "Waiting for timesheets"});
    let path = format!("/v1/payouts/{payout_id}/hold");

    let stale = api
        .send(
            Method::POST,
            &path,
            Some(&token),
            Some(hold.clone()),
            &[("If-Match", "\"5\"")],
        )
        .await;
    let malformed = api
        .send(
            Method::POST,
            &path,
            Some(&token),
            Some(hold.clone()),
            &[("If-Match", "latest")],
        )
        .await;
    let current = api
        .send(
            Method::POST,
            &path,
            Some(&token),
            Some(hold),
            &[("If-Match", "\"1\"")],
        )
        .await;

    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(code(&stale), "version_conflict");
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    assert_eq!(current.headers[header::ETAG], "\"2\"");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn concurrent_approvals_commit_once(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, first_token) = approver(&api, &agency).await;
    let (_, second_token) = approver(&api, &agency).await;
    let payout_id = pending_payout(&api, agency.agency_id).await;
    let path = format!("/v1/payouts/{payout_id}/approve");

    let (first, second) = tokio::join!(
        post(&api, &first_token, &path, None),
        post(&api, &second_token, &path, None),
    );

    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} {}",
        first.body,
        second.body
    );
    assert_eq!(event_count(&pool, payout_id, "PayoutApproved").await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn idempotency_key_replays_the_first_response(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = approver(&api, &agency).await;
    let payout_id = pending_payout(&api, agency.agency_id).await;
    let path = format!("/v1/payouts/{payout_id}/hold");
    let key = [("Idempotency-Key", "hold-7f3a")];
    let hold = |reason: &str| Some(json!({"reason": reason}));

    let first = api
        .send(
            Method::POST,
            &path,
            Some(&token),
            hold("Checking hours"),
            &key,
        )
        .await;
    let repeat = api
        .send(
            Method::POST,
            &path,
            Some(&token),
            hold("Checking hours"),
            &key,
        )
        .await;
    let other_body = api
        .send(
            Method::POST,
            &path,
            Some(&token),
            hold("Something else"),
            &key,
        )
        .await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    assert_eq!(repeat.status, StatusCode::OK);
    assert_eq!(repeat.headers["idempotent-replayed"], "true");
    assert_eq!(repeat.body, first.body);
    assert_eq!(repeat.headers[header::ETAG], first.headers[header::ETAG]);
    assert_eq!(other_body.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&other_body), "idempotency_key_reused");
    assert_eq!(event_count(&pool, payout_id, "PayoutHeld").await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn requester_cannot_approve_own_payout(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (approver_id, token) = approver(&api, &agency).await;
    let (_, colleague) = approver(&api, &agency).await;
    let referral_id = ReferralId::new();
    let milestone = hire_bonus().key();
    let payout_id = PayoutId::for_milestone(referral_id, &milestone, Recipient::Ambassador);
    let ambassador = api
        .app
        .enroll_ambassador(
            &recruiter(agency.agency_id),
            NewAmbassador {
                contact: person("Ada Quinn"),
                kind: AmbassadorKind::FieldWorker,
                external_id: None,
                sms_consent: false,
            },
        )
        .await
        .unwrap();
    let request = PayoutCommand::RequestPayout(RequestPayout {
        payout_id,
        agency_id: agency.agency_id,
        referral_id,
        program_id: referrals_domain::ids::ProgramId::new(),
        ambassador_id: ambassador.aggregate.ambassador_id().unwrap(),
        recipient: Recipient::Ambassador,
        milestone,
        amount: Money::new(25_000, Currency::parse("USD").unwrap()).unwrap(),
        requested_by: Requester::User {
            user_id: approver_id,
        },
        annual_bonus_cap: None,
        referrer_must_be_active: false,
        at: Utc::now(),
    });
    let metadata = CommandMetadata::new(
        agency.agency_id,
        Actor::User {
            id: approver_id,
            role: "payout_approver".to_owned(),
        },
    );
    api.app
        .payouts
        .execute(&payout_id.to_string(), request, &metadata, None)
        .await
        .unwrap();
    let path = format!("/v1/payouts/{payout_id}/approve");

    let own = post(&api, &token, &path, None).await;
    let other = post(&api, &colleague, &path, None).await;

    assert_eq!(own.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&own), "same_requester_and_approver");
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    assert_eq!(
        other.body["requested_by"],
        json!({"kind": "user", "user_id": approver_id.0.to_string()})
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn recruiter_reads_but_cannot_decide(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, token) = api.user(&agency, &[Role::Recruiter]).await;
    let (_, analyst) = api.user(&agency, &[Role::Analyst]).await;
    let payout_id = pending_payout(&api, agency.agency_id).await;

    let read = api
        .call(
            Method::GET,
            &format!("/v1/payouts/{payout_id}"),
            Some(&token),
            None,
        )
        .await;
    let approve = post(
        &api,
        &token,
        &format!("/v1/payouts/{payout_id}/approve"),
        None,
    )
    .await;
    let analyst_read = api
        .call(
            Method::GET,
            &format!("/v1/payouts/{payout_id}"),
            Some(&analyst),
            None,
        )
        .await;

    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(approve.status, StatusCode::FORBIDDEN);
    assert_eq!(analyst_read.status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn other_agency_payout_is_not_found(pool: PgPool) {
    let api = TestApi::new(&pool);
    let ours = api.agency().await;
    let theirs = api.agency().await;
    let (_, token) = approver(&api, &ours).await;
    let payout_id = pending_payout(&api, theirs.agency_id).await;
    catch_up(&pool).await;
    let path = |action: &str| format!("/v1/payouts/{payout_id}/{action}");
    let reason = || Some(json!({"reason": "Probe"}));

    let replies = [
        api.call(
            Method::GET,
            &format!("/v1/payouts/{payout_id}"),
            Some(&token),
            None,
        )
        .await,
        post(&api, &token, &path("approve"), None).await,
        post(&api, &token, &path("reject"), reason()).await,
        post(&api, &token, &path("hold"), reason()).await,
        post(&api, &token, &path("release"), None).await,
        post(&api, &token, &path("void"), Some(json!({"note": "Probe"}))).await,
        post(&api, &token, &path("reverse"), reason()).await,
    ];
    let list = api
        .call(Method::GET, "/v1/payouts", Some(&token), None)
        .await;
    let unknown = api
        .call(
            Method::GET,
            &format!("/v1/payouts/{}", Uuid::now_v7()),
            Some(&token),
            None,
        )
        .await;

    for (index, reply) in replies.iter().enumerate() {
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "request {index}: {}",
            reply.body
        );
    }
    assert_eq!(list.body["items"], json!([]));
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(event_count(&pool, payout_id, "PayoutRequested").await, 1);
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_type = 'payout' AND aggregate_id = $1"
        )
        .bind(payout_id.to_string())
        .fetch_one(&pool)
        .await
        .unwrap(),
        1,
        "nothing was recorded on their payout"
    );
}
