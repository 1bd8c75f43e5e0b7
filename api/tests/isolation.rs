//! Agency isolation: every read and command of agency A, replayed with a token of agency
//! B that holds every agency role, answers 404 and reveals nothing.

mod common;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{TestAgency, TestApi};
use referrals_api::http::authorization::{route_action, Action, ROUTE_ACTIONS};
use referrals_domain::role::Role;
use serde_json::{json, Value};
use sqlx::PgPool;

const AGENCY_ROLES: [Role; 5] = [
    Role::AgencyAdmin,
    Role::Recruiter,
    Role::PayoutApprover,
    Role::ComplianceAuditor,
    Role::Analyst,
];

/// Resources of agency A, by the collection name in their paths.
struct Resources {
    ids: HashMap<&'static str, String>,
    program_id: String,
    ambassador_id: String,
    recruiter_id: String,
}

async fn create_resources(api: &TestApi, agency: &TestAgency) -> Resources {
    let (recruiter_id, recruiter) = api.user(agency, &[Role::Recruiter]).await;
    let admin = agency.admin_token.as_str();
    let program = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(admin),
            Some(json!({
                "name": "Warehouse",
                "terms": {"bonus_schedule": [{"trigger": "hired", "threshold": 0, "amount": 50000}]}
            })),
        )
        .await;
    assert_eq!(program.status, StatusCode::CREATED, "{}", program.body);
    let ambassador = api
        .call(
            Method::POST,
            "/v1/ambassadors",
            Some(&recruiter),
            Some(json!({"name": "Ada Quill", "email": "ada.quill@example.com", "kind": "field_worker"})),
        )
        .await;
    assert_eq!(
        ambassador.status,
        StatusCode::CREATED,
        "{}",
        ambassador.body
    );
    let program_id = program.body["id"].as_str().unwrap().to_owned();
    let ambassador_id = ambassador.body["id"].as_str().unwrap().to_owned();
    let referral = api
        .call(
            Method::POST,
            "/v1/referrals",
            Some(&recruiter),
            Some(json!({
                "program_id": program_id,
                "ambassador_id": ambassador_id,
                "candidate": {"name": "Grace Birch", "email": "grace.birch@example.org"}
            })),
        )
        .await;
    assert_eq!(referral.status, StatusCode::CREATED, "{}", referral.body);
    let referral_id = referral.body["id"].as_str().unwrap().to_owned();
    let hire = api
        .call(
            Method::POST,
            &format!("/v1/referrals/{referral_id}/hire"),
            Some(&recruiter),
            Some(json!({"start_date": "2026-11-02", "job_title": "Picker", "client_name": "Contoso"})),
        )
        .await;
    assert_eq!(hire.status, StatusCode::OK, "{}", hire.body);
    let payout_id: uuid::Uuid = sqlx::query_scalar(
        "SELECT aggregate_id::uuid FROM events WHERE event_type = 'PayoutRequested'",
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();

    let (_, auditor) = api.user(agency, &[Role::ComplianceAuditor]).await;
    let subject_request = api
        .call(
            Method::POST,
            "/v1/privacy/subject-requests",
            Some(&auditor),
            Some(json!({"kind": "access", "email": "grace.birch@example.org"})),
        )
        .await;
    assert_eq!(
        subject_request.status,
        StatusCode::CREATED,
        "{}",
        subject_request.body
    );
    let subject_request_id = subject_request.body["id"].as_str().unwrap().to_owned();

    let upload = Request::builder()
        .method(Method::POST)
        .uri("/v1/timesheets")
        .header(header::AUTHORIZATION, format!("Bearer {recruiter}"))
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from(
            "external_worker_id,week_ending,hours\nW-1,2026-11-08,38.5\n",
        ))
        .unwrap();
    let timesheet = api.raw(upload).await;
    assert_eq!(timesheet.status, StatusCode::ACCEPTED, "{}", timesheet.body);
    let timesheet_id = timesheet.body["id"].as_str().unwrap().to_owned();

    let (_, approver) = api.user(agency, &[Role::PayoutApprover]).await;
    let export = api
        .call(Method::POST, "/v1/payouts/exports", Some(&approver), None)
        .await;
    assert_eq!(export.status, StatusCode::CREATED, "{}", export.body);
    let export_id = export.body["id"].as_str().unwrap().to_owned();

    let ids = HashMap::from([
        ("timesheets", timesheet_id),
        ("payouts/exports", export_id),
        ("programs", program_id.clone()),
        ("privacy", subject_request_id),
        ("ambassadors", ambassador_id.clone()),
        ("referrals", referral_id),
        ("payouts", payout_id.to_string()),
        ("users", recruiter_id.to_string()),
    ]);
    Resources {
        ids,
        program_id,
        ambassador_id,
        recruiter_id: recruiter_id.to_string(),
    }
}

/// A body that is valid for the route, so that only the ownership check can reject it.
fn valid_body(method: &str, path: &str, resources: &Resources) -> Option<Value> {
    let body = match path.rsplit('/').next().unwrap() {
        "terms" => {
            json!({"bonus_schedule": [{"trigger": "hired", "threshold": 0, "amount": 1000}]})
        }
        "roles" => json!({"roles": ["analyst"]}),
        "tokens" => json!({"label": "payroll integration"}),
        "assign" => json!({"recruiter_id": resources.recruiter_id}),
        "hire" => {
            json!({"start_date": "2026-11-02", "job_title": "Picker", "client_name": "Contoso"})
        }
        "hours" => json!({"week_ending": "2026-11-08", "hours": "38.5"}),
        "placement-end" => json!({"end_date": "2026-11-20", "reason": "Contract ended"}),
        "decline" | "withdraw" | "reject" | "hold" | "reverse" => {
            json!({"reason": "Checked with the client"})
        }
        "void" => json!({"reason_code": "other", "note": "Entered twice"}),
        "referrals" | "eligibility-check" => json!({
            "program_id": resources.program_id,
            "ambassador_id": resources.ambassador_id,
            "candidate": {"name": "Linus Oak", "email": "linus.oak@example.org"}
        }),
        _ if method == "PATCH" => json!({"sms_consent": true}),
        _ if method == "GET" || method == "DELETE" => return None,
        _ => json!({}),
    };
    Some(body)
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn other_agency_gets_404_everywhere(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency_a = api.agency().await;
    let resources = create_resources(&api, &agency_a).await;
    let agency_b = api.agency().await;
    let (_, stranger) = api.user(&agency_b, &AGENCY_ROLES).await;

    let mut checked = 0;
    for (method, path, action) in ROUTE_ACTIONS {
        if matches!(
            action,
            Action::CreateAgency
                | Action::ExportAgency
                | Action::DeleteAgency
                | Action::UseOwnAccount
        ) {
            continue;
        }
        let collection = path.trim_start_matches("/v1/").split('/').next().unwrap();
        let concrete = if path.contains("{aggregate_type}") {
            path.replace("{aggregate_type}", "referral")
                .replace("{id}", &resources.ids["referrals"])
        } else if *path == "/v1/payouts/exports/{id}" {
            path.replace("{id}", &resources.ids["payouts/exports"])
        } else {
            match resources.ids.get(collection) {
                Some(id) if path.contains("{id}") => path.replace("{id}", id),
                _ => path.to_string(),
            }
        };
        let body = valid_body(method, path, &resources);
        let reply = api
            .call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &concrete,
                Some(&stranger),
                body,
            )
            .await;
        if reply.body["code"] == "unknown_route" {
            continue;
        }
        assert_eq!(route_action(method, path), Some(*action));

        let names_a_resource = path.contains("{id}")
            || matches!(*path, "/v1/referrals" | "/v1/referrals/eligibility-check")
                && *method == "POST";
        if names_a_resource {
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{method} {concrete}: {}",
                reply.body
            );
        } else {
            assert!(
                reply.status.is_success() || reply.status.is_client_error(),
                "{method} {path}: {}",
                reply.status
            );
        }
        let text = reply.body.to_string();
        for id in resources.ids.values() {
            assert!(
                !text.contains(id.as_str()),
                "{method} {path} revealed {id}: {text}"
            );
        }
        for secret in [
            "Ada Quill",
            "ada.quill@example.com",
            "Grace Birch",
            "grace.birch@example.org",
        ] {
            assert!(
                !text.contains(secret),
                "{method} {path} revealed personal data"
            );
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} routes were checked");
}
