//! The analytics endpoints over projected facts, through the real router. Referrals are
//! driven through the application and the projections caught up before each read.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{Days, NaiveDate, Utc};
use common::{unique_email, Reply, TestApi};
use referrals_domain::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, UserId};
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

const AMBASSADOR_NAME: &str = "Ada Quinn";
const CANDIDATE_NAME: &str = "Grace Hall";

fn recruiter(agency_id: AgencyId) -> CommandMetadata {
    CommandMetadata::new(
        agency_id,
        Actor::User {
            id: UserId::new(),
            role: "recruiter".to_owned(),
        },
    )
}

fn person(name: &str) -> ContactDetails {
    ContactDetails {
        name: PersonName::parse(name).unwrap(),
        email: Some(unique_email("person")),
        phone: None,
    }
}

async fn program(api: &TestApi, agency_id: AgencyId) -> ProgramId {
    let hire_bonus = Milestone {
        trigger: Trigger::Hired,
        threshold: Hours::whole(0),
        amount: 50_000,
        recipient: Recipient::Ambassador,
    };
    let created = api
        .app
        .create_program(
            &recruiter(agency_id),
            NewProgram {
                name: "Warehouse referrals".to_owned(),
                currency: Currency::parse("USD").unwrap(),
                terms: Terms::with_schedule(vec![hire_bonus]),
            },
        )
        .await
        .unwrap();
    created.aggregate.program_id().unwrap()
}

async fn ambassador(api: &TestApi, agency_id: AgencyId) -> AmbassadorId {
    let enrolled = api
        .app
        .enroll_ambassador(
            &recruiter(agency_id),
            NewAmbassador {
                contact: person(AMBASSADOR_NAME),
                kind: AmbassadorKind::FieldWorker,
                external_id: None,
                sms_consent: false,
            },
        )
        .await
        .unwrap();
    enrolled.aggregate.ambassador_id().unwrap()
}

/// Submits a referral and, when `hire` is set, hires the candidate. Returns the hire
/// payout, if any.
async fn refer(
    api: &TestApi,
    agency_id: AgencyId,
    program_id: ProgramId,
    ambassador_id: AmbassadorId,
    hire: bool,
) -> Option<PayoutId> {
    let metadata = recruiter(agency_id);
    let submitted = api
        .app
        .submit_referral(
            &metadata,
            NewReferral {
                program_id,
                ambassador_id,
                candidate: person(CANDIDATE_NAME),
                job_reference: None,
                note: None,
            },
        )
        .await
        .unwrap();
    let referral_id = submitted.aggregate.referral_id().unwrap();
    if !hire {
        return None;
    }
    let command = ReferralCommand::RecordHire(RecordHire {
        start_date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: None,
        at: Utc::now(),
    });
    let hired = api
        .app
        .execute_referral(&metadata, referral_id, command, None)
        .await
        .unwrap();
    let key = &hired.aggregate.milestones_reached()[0].key;
    Some(PayoutId::for_milestone(
        referral_id,
        key,
        Recipient::Ambassador,
    ))
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

/// An agency with two programs: the first has three referrals (one hired, its payout
/// approved), the second one hired referral with a pending payout. Ambassador `first`
/// made the hires, `second` one referral that was not hired.
struct Scenario {
    agency_id: AgencyId,
    analyst: String,
    programs: [ProgramId; 2],
    first: AmbassadorId,
    second: AmbassadorId,
}

async fn scenario(api: &TestApi, pool: &PgPool) -> Scenario {
    let agency = api.agency().await;
    let (_, analyst) = api.user(&agency, &[Role::Analyst]).await;
    let (_, approver) = api.user(&agency, &[Role::PayoutApprover]).await;
    let programs = [
        program(api, agency.agency_id).await,
        program(api, agency.agency_id).await,
    ];
    let first = ambassador(api, agency.agency_id).await;
    let second = ambassador(api, agency.agency_id).await;
    let approved = refer(api, agency.agency_id, programs[0], first, true)
        .await
        .unwrap();
    refer(api, agency.agency_id, programs[0], first, false).await;
    refer(api, agency.agency_id, programs[0], second, false).await;
    refer(api, agency.agency_id, programs[1], first, true).await;
    let approval = api
        .call(
            Method::POST,
            &format!("/v1/payouts/{approved}/approve"),
            Some(&approver),
            None,
        )
        .await;
    assert_eq!(approval.status, StatusCode::OK, "{}", approval.body);
    catch_up(pool).await;
    Scenario {
        agency_id: agency.agency_id,
        analyst,
        programs,
        first,
        second,
    }
}

async fn get(api: &TestApi, token: &str, path: &str) -> Reply {
    let reply = api.call(Method::GET, path, Some(token), None).await;
    assert!(
        !reply.body.to_string().contains('@'),
        "{path} returned an e-mail address: {}",
        reply.body
    );
    reply
}

fn items(reply: &Reply) -> &Vec<Value> {
    reply.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {}", reply.body))
}

fn row<'a>(reply: &'a Reply, key: &str, id: impl ToString) -> &'a Value {
    let id = json!(id.to_string());
    items(reply)
        .iter()
        .find(|item| item[key] == id)
        .unwrap_or_else(|| panic!("no row with {key} {id} in {}", reply.body))
}

fn usd(amount: i64) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn funnel_counts_stages_and_cost(pool: PgPool) {
    let api = TestApi::new(&pool);
    let scenario = scenario(&api, &pool).await;

    let funnel = get(&api, &scenario.analyst, "/v1/analytics/funnel").await;

    assert_eq!(funnel.status, StatusCode::OK, "{}", funnel.body);
    assert_eq!(items(&funnel).len(), 2);
    let first = row(&funnel, "program_id", scenario.programs[0]);
    assert_eq!(first["submitted"], json!(3));
    assert_eq!(first["contacted"], json!(1));
    assert_eq!(first["interviewing"], json!(1));
    assert_eq!(first["hired"], json!(1));
    assert_eq!(first["milestone"], json!(0));
    assert_eq!(first["duplicates"], json!(0));
    assert_eq!(first["submitted_to_contacted"], json!(0.3333));
    assert_eq!(first["interviewing_to_hired"], json!(1.0));
    assert!(first["median_days_to_hire"].as_f64().unwrap() < 1.0);
    assert_eq!(first["bonus_cost"], usd(50_000));
    assert_eq!(first["bonus_cost_per_hire"], usd(50_000));
    let second = row(&funnel, "program_id", scenario.programs[1]);
    assert_eq!(second["submitted"], json!(1));
    assert_eq!(
        second["bonus_cost"],
        usd(0),
        "a pending payout costs nothing yet"
    );
    assert!(!funnel.body.to_string().contains(CANDIDATE_NAME));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn leaderboard_ranks_by_hires(pool: PgPool) {
    let api = TestApi::new(&pool);
    let scenario = scenario(&api, &pool).await;

    let board = get(&api, &scenario.analyst, "/v1/analytics/leaderboard").await;
    let one_program = get(
        &api,
        &scenario.analyst,
        &format!(
            "/v1/analytics/leaderboard?program_id={}",
            scenario.programs[1]
        ),
    )
    .await;

    assert_eq!(board.status, StatusCode::OK, "{}", board.body);
    assert_eq!(items(&board).len(), 2);
    assert_eq!(
        items(&board)[0]["ambassador_id"],
        json!(scenario.first.to_string())
    );
    let first = row(&board, "ambassador_id", scenario.first);
    assert_eq!(first["rank"], json!(1));
    assert_eq!(first["kind"], json!("field_worker"));
    assert_eq!(first["referrals"], json!(3));
    assert_eq!(first["hires"], json!(2));
    assert_eq!(first["earned"], usd(50_000));
    assert_eq!(first["paid"], usd(0));
    let second = row(&board, "ambassador_id", scenario.second);
    assert_eq!(second["rank"], json!(2));
    assert_eq!(second["hires"], json!(0));
    assert_eq!(items(&one_program).len(), 1);
    assert_eq!(items(&one_program)[0]["hires"], json!(1));
    assert_eq!(items(&one_program)[0]["earned"], usd(0));
    assert!(!board.body.to_string().contains(AMBASSADOR_NAME));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn payout_totals_by_program_and_status(pool: PgPool) {
    let api = TestApi::new(&pool);
    let scenario = scenario(&api, &pool).await;

    let totals = get(&api, &scenario.analyst, "/v1/analytics/payouts").await;
    let filtered = get(
        &api,
        &scenario.analyst,
        &format!("/v1/analytics/payouts?program_id={}", scenario.programs[0]),
    )
    .await;

    assert_eq!(totals.status, StatusCode::OK, "{}", totals.body);
    assert_eq!(items(&totals).len(), 2);
    let approved = row(&totals, "program_id", scenario.programs[0]);
    assert_eq!(approved["status"], json!("approved"));
    assert_eq!(approved["payouts"], json!(1));
    assert_eq!(approved["amount"], usd(50_000));
    let pending = row(&totals, "program_id", scenario.programs[1]);
    assert_eq!(pending["status"], json!("pending_approval"));
    assert_eq!(items(&filtered).len(), 1);
    assert_eq!(items(&filtered)[0]["status"], json!("approved"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn period_filters_select_by_day(pool: PgPool) {
    let api = TestApi::new(&pool);
    let scenario = scenario(&api, &pool).await;
    let today = Utc::now().date_naive();
    let tomorrow = today.checked_add_days(Days::new(1)).unwrap();
    let yesterday = today.checked_sub_days(Days::new(1)).unwrap();

    for endpoint in ["funnel", "leaderboard", "payouts"] {
        let path = |query: String| format!("/v1/analytics/{endpoint}?{query}");
        let future = get(&api, &scenario.analyst, &path(format!("from={tomorrow}"))).await;
        let past = get(&api, &scenario.analyst, &path(format!("to={yesterday}"))).await;
        let today_only = get(
            &api,
            &scenario.analyst,
            &path(format!("from={today}&to={today}")),
        )
        .await;
        let all = get(&api, &scenario.analyst, &path(String::new())).await;
        let reversed = get(
            &api,
            &scenario.analyst,
            &path(format!("from={today}&to={yesterday}")),
        )
        .await;

        assert_eq!(future.status, StatusCode::OK, "{endpoint}: {}", future.body);
        assert_eq!(items(&future).len(), 0, "{endpoint}");
        assert_eq!(items(&past).len(), 0, "{endpoint}");
        assert_eq!(today_only.body, all.body, "{endpoint}");
        assert_eq!(reversed.status, StatusCode::BAD_REQUEST, "{endpoint}");
        assert_eq!(reversed.body["code"], json!("invalid_period"), "{endpoint}");
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn unfiltered_figures_match_the_views(pool: PgPool) {
    let api = TestApi::new(&pool);
    let scenario = scenario(&api, &pool).await;
    let agency_id = scenario.agency_id.0;

    let funnel = get(&api, &scenario.analyst, "/v1/analytics/funnel").await;
    let board = get(&api, &scenario.analyst, "/v1/analytics/leaderboard").await;
    let totals = get(&api, &scenario.analyst, "/v1/analytics/payouts").await;

    type FunnelView = (
        uuid::Uuid,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        i64,
    );
    let views: Vec<FunnelView> = sqlx::query_as(
        "SELECT program_id, submitted, contacted, interviewing, hired, milestone, duplicates,
                submitted_to_contacted::float8, hired_to_milestone::float8,
                median_days_to_hire::float8, bonus_cost
           FROM analytics.program_funnel WHERE agency_id = $1",
    )
    .bind(agency_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(views.len(), items(&funnel).len());
    for (
        program_id,
        submitted,
        contacted,
        interviewing,
        hired,
        milestone,
        duplicates,
        to_contacted,
        to_milestone,
        median,
        cost,
    ) in views
    {
        let api_row = row(&funnel, "program_id", program_id);
        assert_eq!(api_row["submitted"], json!(submitted));
        assert_eq!(api_row["contacted"], json!(contacted));
        assert_eq!(api_row["interviewing"], json!(interviewing));
        assert_eq!(api_row["hired"], json!(hired));
        assert_eq!(api_row["milestone"], json!(milestone));
        assert_eq!(api_row["duplicates"], json!(duplicates));
        assert_eq!(api_row["submitted_to_contacted"], json!(to_contacted));
        assert_eq!(api_row["hired_to_milestone"], json!(to_milestone));
        assert_eq!(api_row["median_days_to_hire"], json!(median));
        assert_eq!(api_row["bonus_cost"]["amount"], json!(cost));
    }

    let leaders: Vec<(uuid::Uuid, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT ambassador_id, referrals, hires, earned_amount, paid_amount, rank
           FROM analytics.ambassador_leaderboard WHERE agency_id = $1",
    )
    .bind(agency_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(leaders.len(), items(&board).len());
    for (ambassador_id, referrals, hires, earned, paid, rank) in leaders {
        let api_row = row(&board, "ambassador_id", ambassador_id);
        assert_eq!(api_row["referrals"], json!(referrals));
        assert_eq!(api_row["hires"], json!(hires));
        assert_eq!(api_row["earned"]["amount"], json!(earned));
        assert_eq!(api_row["paid"]["amount"], json!(paid));
        assert_eq!(api_row["rank"], json!(rank));
    }

    let sums: Vec<(uuid::Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT program_id, status, payouts, amount
           FROM analytics.payout_totals WHERE agency_id = $1",
    )
    .bind(agency_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(sums.len(), items(&totals).len());
    for (program_id, status, payouts, amount) in sums {
        let api_row = row(&totals, "program_id", program_id);
        assert_eq!(api_row["status"], json!(status));
        assert_eq!(api_row["payouts"], json!(payouts));
        assert_eq!(api_row["amount"]["amount"], json!(amount));
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn analytics_pages_with_cursor(pool: PgPool) {
    let api = TestApi::new(&pool);
    let scenario = scenario(&api, &pool).await;

    for endpoint in ["funnel", "leaderboard", "payouts"] {
        let all = get(
            &api,
            &scenario.analyst,
            &format!("/v1/analytics/{endpoint}"),
        )
        .await;
        let first = get(
            &api,
            &scenario.analyst,
            &format!("/v1/analytics/{endpoint}?limit=1"),
        )
        .await;
        let cursor = first.body["next_cursor"].as_str().unwrap();
        let second = get(
            &api,
            &scenario.analyst,
            &format!("/v1/analytics/{endpoint}?limit=1&cursor={cursor}"),
        )
        .await;

        assert_eq!(items(&first).len(), 1, "{endpoint}");
        assert_eq!(items(&second).len(), 1, "{endpoint}");
        assert!(second.body["next_cursor"].is_null(), "{endpoint}");
        assert_eq!(items(&first)[0], items(&all)[0], "{endpoint}");
        assert_eq!(items(&second)[0], items(&all)[1], "{endpoint}");
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn analytics_need_the_analyst_role(pool: PgPool) {
    let api = TestApi::new(&pool);
    let agency = api.agency().await;
    let (_, recruiter_token) = api.user(&agency, &[Role::Recruiter]).await;

    for endpoint in ["funnel", "leaderboard", "payouts"] {
        let path = format!("/v1/analytics/{endpoint}");
        let recruiter = api
            .call(Method::GET, &path, Some(&recruiter_token), None)
            .await;
        let admin = api
            .call(Method::GET, &path, Some(&agency.admin_token), None)
            .await;
        let anonymous = api.call(Method::GET, &path, None, None).await;

        assert_eq!(recruiter.status, StatusCode::FORBIDDEN, "{endpoint}");
        assert_eq!(admin.status, StatusCode::FORBIDDEN, "{endpoint}");
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{endpoint}");
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn other_agency_sees_nothing_of_ours(pool: PgPool) {
    let api = TestApi::new(&pool);
    let scenario = scenario(&api, &pool).await;
    let theirs = api.agency().await;
    let (_, their_analyst) = api.user(&theirs, &[Role::Analyst]).await;

    for endpoint in ["funnel", "leaderboard", "payouts"] {
        let own = get(&api, &their_analyst, &format!("/v1/analytics/{endpoint}")).await;
        let our_program = get(
            &api,
            &their_analyst,
            &format!(
                "/v1/analytics/{endpoint}?program_id={}",
                scenario.programs[0]
            ),
        )
        .await;
        let unknown = get(
            &api,
            &scenario.analyst,
            &format!(
                "/v1/analytics/{endpoint}?program_id={}",
                uuid::Uuid::now_v7()
            ),
        )
        .await;

        assert_eq!(own.status, StatusCode::OK, "{endpoint}");
        assert_eq!(items(&own).len(), 0, "{endpoint}");
        assert_eq!(our_program.status, StatusCode::NOT_FOUND, "{endpoint}");
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{endpoint}");
    }
}
