//! Read models built from a scenario run through the application: the referral board,
//! ambassador summaries and earnings, the payout ledger, the analytics facts and views,
//! the BI role's row-level security, and rebuilds.
//!
//! The scenario (one agency, one program paying $500 at hire and $1,000 after 160
//! hours, two ambassadors):
//!
//! | referral        | ambassador | candidate         | steps                                       |
//! |-----------------|------------|-------------------|---------------------------------------------|
//! | hired_and_hours | Ada        | Grace Hopper      | contacted, interviewing, hired on day 10, 160 hours |
//! | hired_directly  | Ben        | Linus Pauling     | hired on day 21 (submitted on day 1)        |
//! | duplicate       | Ada        | Grace Hopper      | recorded as a duplicate of hired_and_hours  |
//! | declined        | Ben        | Margaret Hamilton | contacted, declined                         |
//! | interviewing    | Ada        | Alan Turing       | interviewing                                |
//!
//! Payouts: hired_and_hours's hire bonus is approved, exported and paid; its hours bonus
//! is approved; hired_directly's hire bonus waits for approval.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use referrals_domain::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, ReferralId, UserId};
use referrals_domain::payout::{
    ApprovePayout, MarkExported, MarkPaid, PayoutCommand, ReversePayout,
};
use referrals_domain::referral::{
    AssignRecruiter, Decline, MarkContacted, MarkInterviewing, RecordHire, RecordHours,
    ReferralCommand,
};
use referrals_domain::terms::{MilestoneKey, Recipient};
use referrals_domain::values::{FreeText, Hours};
use referrals_projections::models;
use referrals_projections::runner::ProjectionRunner;
use referrals_store::application::Application;
use referrals_store::event_store::{Actor, CommandMetadata};
use referrals_tests::*;
use sqlx::PgPool;
use uuid::Uuid;

const GRACE: (&str, &str) = ("Grace Hopper", "grace.hopper@example.org");
const LINUS: (&str, &str) = ("Linus Pauling", "linus.pauling@example.org");
const MARGARET: (&str, &str) = ("Margaret Hamilton", "margaret.hamilton@example.org");
const ALAN: (&str, &str) = ("Alan Turing", "alan.turing@example.org");
const ADA: (&str, &str) = ("Ada Lovelace", "ada.lovelace@example.com");
const BEN: (&str, &str) = ("Ben Okri", "ben.okri@example.com");
const WORKER_ID: &str = "W-1001";
const PAYROLL_REFERENCE: &str = "PR-2026-0042";
const DECLINE_REASON: &str = "Accepted an offer elsewhere";

/// The ids of one agency's scenario.
struct Scenario {
    agency: AgencyId,
    program: ProgramId,
    ada: AmbassadorId,
    ben: AmbassadorId,
    recruiter: UserId,
    hired_and_hours: ReferralId,
    hired_directly: ReferralId,
    duplicate: ReferralId,
    declined: ReferralId,
    interviewing: ReferralId,
    paid_payout: PayoutId,
    approved_payout: PayoutId,
    pending_payout: PayoutId,
    batch_id: Uuid,
}

/// 09:00 UTC on the given day after 1 September 2026.
fn day(offset: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, 9, 0, 0).unwrap() + Duration::days(offset)
}

fn date(month: u32, day_of_month: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, month, day_of_month).unwrap()
}

fn approver_at(agency: AgencyId, at: DateTime<Utc>) -> CommandMetadata {
    let mut metadata = CommandMetadata::new(
        agency,
        Actor::User {
            id: UserId::new(),
            role: "payout_approver".to_owned(),
        },
    );
    metadata.recorded_at = at;
    metadata
}

fn payout_for(referral: ReferralId, milestone: &str) -> PayoutId {
    let key = MilestoneKey::parse(milestone).unwrap();
    PayoutId::for_milestone(referral, &key, Recipient::Ambassador)
}

async fn submit_at(
    app: &Application,
    agency: AgencyId,
    at: DateTime<Utc>,
    program: ProgramId,
    ambassador: AmbassadorId,
    (name, email): (&str, &str),
) -> ReferralId {
    let executed = submit(
        app,
        &recruiter_at(agency, at),
        program,
        ambassador,
        contact(name, Some(email), None),
    )
    .await
    .expect("submitting the referral");
    executed.aggregate.referral_id().unwrap()
}

async fn referral_step(
    app: &Application,
    agency: AgencyId,
    at: DateTime<Utc>,
    referral: ReferralId,
    command: ReferralCommand,
) {
    app.execute_referral(&recruiter_at(agency, at), referral, command, None)
        .await
        .expect("executing the referral command");
}

async fn payout_step(
    app: &Application,
    agency: AgencyId,
    at: DateTime<Utc>,
    payout: PayoutId,
    command: PayoutCommand,
) {
    app.payouts
        .execute(&payout.to_string(), command, &approver_at(agency, at), None)
        .await
        .expect("executing the payout command");
}

fn hire(start_date: NaiveDate, at: DateTime<Utc>) -> ReferralCommand {
    ReferralCommand::RecordHire(RecordHire {
        start_date,
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: Some(WORKER_ID.to_owned()),
        at,
    })
}

fn approve(at: DateTime<Utc>) -> PayoutCommand {
    PayoutCommand::ApprovePayout(ApprovePayout {
        approver: UserId::new(),
        ambassador_active: true,
        at,
    })
}

/// Runs the scenario in the module documentation for `agency`.
async fn run_scenario(app: &Application, agency: AgencyId) -> Scenario {
    let setup = recruiter_at(agency, day(0));
    let program = create_program(app, &setup, hire_and_hours_terms()).await;
    let ada = enroll_ambassador(app, &setup, contact(ADA.0, Some(ADA.1), None)).await;
    let ben = enroll_ambassador(app, &setup, contact(BEN.0, Some(BEN.1), None)).await;
    let recruiter = UserId::new();

    let hired_and_hours = submit_at(app, agency, day(0), program, ada, GRACE).await;
    let hired_directly = submit_at(app, agency, day(1), program, ben, LINUS).await;
    let duplicate = submit_at(app, agency, day(2), program, ada, GRACE).await;
    let declined = submit_at(app, agency, day(3), program, ben, MARGARET).await;
    let interviewing = submit_at(app, agency, day(4), program, ada, ALAN).await;

    let assign = ReferralCommand::AssignRecruiter(AssignRecruiter {
        recruiter_id: recruiter,
        at: day(1),
    });
    referral_step(app, agency, day(1), hired_and_hours, assign).await;
    let contacted = ReferralCommand::MarkContacted(MarkContacted { at: day(2) });
    referral_step(app, agency, day(2), hired_and_hours, contacted).await;
    let interviews = ReferralCommand::MarkInterviewing(MarkInterviewing { at: day(5) });
    referral_step(app, agency, day(5), hired_and_hours, interviews).await;
    let hired = hire(date(9, 14), day(10));
    referral_step(app, agency, day(10), hired_and_hours, hired).await;
    for week_ending in [date(9, 20), date(9, 27), date(10, 4), date(10, 11)] {
        let at =
            Utc.from_utc_datetime(&week_ending.and_hms_opt(9, 0, 0).unwrap()) + Duration::days(1);
        let hours = ReferralCommand::RecordHours(RecordHours {
            week_ending,
            hours: Hours::whole(40),
            at,
        });
        referral_step(app, agency, at, hired_and_hours, hours).await;
    }

    let hired = hire(date(9, 28), day(21));
    referral_step(app, agency, day(21), hired_directly, hired).await;

    let contacted = ReferralCommand::MarkContacted(MarkContacted { at: day(4) });
    referral_step(app, agency, day(4), declined, contacted).await;
    let decline = ReferralCommand::Decline(Decline {
        reason: FreeText::parse(DECLINE_REASON).unwrap(),
        at: day(6),
    });
    referral_step(app, agency, day(6), declined, decline).await;

    let interviews = ReferralCommand::MarkInterviewing(MarkInterviewing { at: day(6) });
    referral_step(app, agency, day(6), interviewing, interviews).await;

    let paid_payout = payout_for(hired_and_hours, "hired:0.00:ambassador");
    let approved_payout = payout_for(hired_and_hours, "hours_worked:160.00:ambassador");
    let pending_payout = payout_for(hired_directly, "hired:0.00:ambassador");
    let batch_id = Uuid::now_v7();
    payout_step(app, agency, day(12), paid_payout, approve(day(12))).await;
    let export = PayoutCommand::MarkExported(MarkExported {
        batch_id,
        at: day(14),
    });
    payout_step(app, agency, day(14), paid_payout, export).await;
    let paid = PayoutCommand::MarkPaid(MarkPaid {
        paid_on: date(9, 18),
        reference: PAYROLL_REFERENCE.to_owned(),
        at: day(17),
    });
    payout_step(app, agency, day(17), paid_payout, paid).await;
    payout_step(app, agency, day(42), approved_payout, approve(day(42))).await;

    Scenario {
        agency,
        program,
        ada,
        ben,
        recruiter,
        hired_and_hours,
        hired_directly,
        duplicate,
        declined,
        interviewing,
        paid_payout,
        approved_payout,
        pending_payout,
        batch_id,
    }
}

/// Applies every committed event to every read model.
async fn catch_up_all(pool: &PgPool) {
    let runner = ProjectionRunner::new(pool.clone());
    for projection in models::all() {
        catch_up_fully(pool, &runner, projection.as_ref()).await;
    }
}

async fn scenario_with_read_models(pool: &PgPool) -> Scenario {
    let app = application(pool);
    let scenario = run_scenario(&app, AgencyId::new()).await;
    catch_up_all(pool).await;
    scenario
}

#[derive(Debug, sqlx::FromRow)]
struct BoardRow {
    ambassador_id: Uuid,
    recruiter_id: Option<Uuid>,
    status: String,
    eligible: bool,
    ineligible_reason: Option<String>,
    duplicate_of: Option<Uuid>,
    candidate_name_sealed: String,
    submitted_at: DateTime<Utc>,
    contacted_at: Option<DateTime<Utc>>,
    interviewing_at: Option<DateTime<Utc>>,
    hired_at: Option<DateTime<Utc>>,
    start_date: Option<NaiveDate>,
    hours_total: String,
    milestones_reached: i32,
    version: i64,
}

async fn board_row(pool: &PgPool, referral: ReferralId) -> BoardRow {
    sqlx::query_as(
        "SELECT ambassador_id, recruiter_id, status, eligible, ineligible_reason, duplicate_of,
                candidate_name_sealed, submitted_at, contacted_at, interviewing_at, hired_at,
                start_date, hours_total::text AS hours_total, milestones_reached, version
           FROM read_models.referral_board WHERE referral_id = $1",
    )
    .bind(referral.0)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_shows_hired_referral_with_hours(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let row = board_row(&pool, scenario.hired_and_hours).await;

    assert_eq!(row.ambassador_id, scenario.ada.0);
    assert_eq!(row.recruiter_id, Some(scenario.recruiter.0));
    assert_eq!(row.status, "completed", "every milestone was reached");
    assert!(row.eligible);
    assert_eq!(row.ineligible_reason, None);
    assert_eq!(row.submitted_at, day(0));
    assert_eq!(row.contacted_at, Some(day(2)));
    assert_eq!(row.interviewing_at, Some(day(5)));
    assert_eq!(row.hired_at, Some(day(10)));
    assert_eq!(row.start_date, Some(date(9, 14)));
    assert_eq!(row.hours_total, "160.00");
    assert_eq!(row.milestones_reached, 2);
    // Submitted, assigned, contacted, interviewing, hired, hire milestone, four weeks of
    // hours, the hours milestone and completion.
    assert_eq!(row.version, 12);
    assert!(row.candidate_name_sealed.starts_with("v1."));
    assert!(!row.candidate_name_sealed.contains("Grace"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_shows_each_other_referral(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let hired_directly = board_row(&pool, scenario.hired_directly).await;
    assert_eq!(hired_directly.status, "hired");
    assert_eq!(hired_directly.contacted_at, None);
    assert_eq!(hired_directly.hired_at, Some(day(21)));
    assert_eq!(hired_directly.milestones_reached, 1);
    assert_eq!(hired_directly.hours_total, "0.00");
    assert_eq!(hired_directly.version, 3);

    let duplicate = board_row(&pool, scenario.duplicate).await;
    assert_eq!(duplicate.status, "duplicate");
    assert!(!duplicate.eligible);
    assert_eq!(duplicate.ineligible_reason.as_deref(), Some("duplicate"));
    assert_eq!(duplicate.duplicate_of, Some(scenario.hired_and_hours.0));
    assert_eq!(duplicate.submitted_at, day(2));
    assert_eq!(duplicate.version, 1);

    let declined = board_row(&pool, scenario.declined).await;
    assert_eq!(declined.status, "declined");
    assert_eq!(declined.ambassador_id, scenario.ben.0);
    assert_eq!(declined.contacted_at, Some(day(4)));
    assert_eq!(declined.version, 3);

    let interviewing = board_row(&pool, scenario.interviewing).await;
    assert_eq!(interviewing.status, "interviewing");
    assert_eq!(interviewing.interviewing_at, Some(day(6)));
    assert_eq!(interviewing.recruiter_id, None);
    assert_eq!(interviewing.version, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_pages_by_status_in_submission_order(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let first_page: Vec<Uuid> = sqlx::query_scalar(
        "SELECT referral_id FROM read_models.referral_board
          WHERE agency_id = $1 AND status <> 'duplicate'
          ORDER BY submitted_at, referral_id LIMIT 2",
    )
    .bind(scenario.agency.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    let after = board_row(&pool, ReferralId(first_page[1]))
        .await
        .submitted_at;
    let second_page: Vec<Uuid> = sqlx::query_scalar(
        "SELECT referral_id FROM read_models.referral_board
          WHERE agency_id = $1 AND status <> 'duplicate'
            AND (submitted_at, referral_id) > ($2, $3)
          ORDER BY submitted_at, referral_id LIMIT 2",
    )
    .bind(scenario.agency.0)
    .bind(after)
    .bind(first_page[1])
    .fetch_all(&pool)
    .await
    .unwrap();

    assert_eq!(
        first_page,
        vec![scenario.hired_and_hours.0, scenario.hired_directly.0]
    );
    assert_eq!(
        second_page,
        vec![scenario.declined.0, scenario.interviewing.0]
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn programs_and_ambassadors_hold_current_state(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let (name, currency, terms_version, open, version): (String, String, i32, bool, i64) =
        sqlx::query_as(
            "SELECT name, currency, terms_version, open, version FROM read_models.programs
              WHERE program_id = $1",
        )
        .bind(scenario.program.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "Warehouse referrals");
    assert_eq!(currency, "USD");
    assert_eq!(terms_version, 1);
    assert!(open);
    assert_eq!(version, 1);

    let (kind, active, name_sealed, email_sealed, version): (
        String,
        bool,
        String,
        Option<String>,
        i64,
    ) = sqlx::query_as(
        "SELECT kind, active, name_sealed, email_sealed, version FROM read_models.ambassadors
          WHERE ambassador_id = $1",
    )
    .bind(scenario.ada.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kind, "field_worker");
    assert!(active);
    assert!(name_sealed.starts_with("v1."));
    assert!(!name_sealed.contains("Ada"));
    assert!(email_sealed.is_some_and(|sealed| sealed.starts_with("v1.")));
    assert_eq!(version, 1);
}

#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct SummaryRow {
    kind: String,
    active: bool,
    referrals_submitted: i32,
    referrals_duplicate: i32,
    referrals_hired: i32,
    milestones_reached: i32,
    payouts_pending: i32,
    payouts_approved: i32,
    payouts_paid: i32,
}

async fn summary(pool: &PgPool, ambassador: AmbassadorId) -> SummaryRow {
    sqlx::query_as(
        "SELECT kind, active, referrals_submitted, referrals_duplicate, referrals_hired,
                milestones_reached, payouts_pending, payouts_approved, payouts_paid
           FROM read_models.ambassador_summaries WHERE ambassador_id = $1",
    )
    .bind(ambassador.0)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn earnings(pool: &PgPool, ambassador: AmbassadorId) -> Vec<(String, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT currency, pending_amount, earned_amount, paid_amount
           FROM read_models.ambassador_earnings WHERE ambassador_id = $1 ORDER BY currency",
    )
    .bind(ambassador.0)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn summaries_count_referrals_and_payouts(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let ada = summary(&pool, scenario.ada).await;
    assert_eq!(ada.kind, "field_worker");
    assert!(ada.active);
    assert_eq!(ada.referrals_submitted, 3);
    assert_eq!(ada.referrals_duplicate, 1);
    assert_eq!(ada.referrals_hired, 1);
    assert_eq!(ada.milestones_reached, 2);
    assert_eq!(ada.payouts_pending, 0);
    assert_eq!(ada.payouts_approved, 1);
    assert_eq!(ada.payouts_paid, 1);

    let ben = summary(&pool, scenario.ben).await;
    assert_eq!(ben.referrals_submitted, 2);
    assert_eq!(ben.referrals_duplicate, 0);
    assert_eq!(ben.referrals_hired, 1);
    assert_eq!(ben.milestones_reached, 1);
    assert_eq!(ben.payouts_pending, 1);
    assert_eq!(ben.payouts_approved, 0);
    assert_eq!(ben.payouts_paid, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn earnings_split_pending_earned_and_paid(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    assert_eq!(
        earnings(&pool, scenario.ada).await,
        vec![("USD".to_owned(), 0, 150_000, 50_000)]
    );
    assert_eq!(
        earnings(&pool, scenario.ben).await,
        vec![("USD".to_owned(), 50_000, 0, 0)]
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn summaries_rank_by_hires_then_paid(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let ranking: Vec<Uuid> = sqlx::query_scalar(
        "SELECT summary.ambassador_id
           FROM read_models.ambassador_summaries AS summary
           LEFT JOIN read_models.ambassador_earnings AS earnings
                  ON earnings.ambassador_id = summary.ambassador_id
                 AND earnings.currency = 'USD'
          WHERE summary.agency_id = $1
          ORDER BY summary.referrals_hired DESC, coalesce(earnings.paid_amount, 0) DESC",
    )
    .bind(scenario.agency.0)
    .fetch_all(&pool)
    .await
    .unwrap();

    assert_eq!(ranking, vec![scenario.ada.0, scenario.ben.0]);
}

#[derive(Debug, sqlx::FromRow)]
struct LedgerRow {
    referral_id: Uuid,
    ambassador_id: Uuid,
    program_id: Uuid,
    recipient: String,
    milestone: String,
    amount: i64,
    currency: String,
    status: String,
    held: bool,
    requester_kind: String,
    requested_by: String,
    approved_at: Option<DateTime<Utc>>,
    approved_by: Option<Uuid>,
    exported_at: Option<DateTime<Utc>>,
    batch_id: Option<Uuid>,
    paid_on: Option<NaiveDate>,
    paid_reference: Option<String>,
    closed_reason: Option<String>,
    version: i64,
}

async fn ledger_row(pool: &PgPool, payout: PayoutId) -> LedgerRow {
    sqlx::query_as(
        "SELECT referral_id, ambassador_id, program_id, recipient, milestone, amount, currency,
                status, held, requester_kind, requested_by, approved_at, approved_by,
                exported_at, batch_id, paid_on, paid_reference, closed_reason, version
           FROM read_models.payout_ledger WHERE payout_id = $1",
    )
    .bind(payout.0)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn ledger_tracks_paid_payout(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let paid = ledger_row(&pool, scenario.paid_payout).await;

    assert_eq!(paid.referral_id, scenario.hired_and_hours.0);
    assert_eq!(paid.ambassador_id, scenario.ada.0);
    assert_eq!(paid.program_id, scenario.program.0);
    assert_eq!(paid.recipient, "ambassador");
    assert_eq!(paid.milestone, "hired:0.00:ambassador");
    assert_eq!(paid.amount, 50_000);
    assert_eq!(paid.currency, "USD");
    assert_eq!(paid.status, "paid");
    assert!(!paid.held);
    assert_eq!(paid.requester_kind, "system");
    assert_eq!(paid.requested_by, "payout_requester");
    assert_eq!(paid.approved_at, Some(day(12)));
    assert!(paid.approved_by.is_some());
    assert_eq!(paid.exported_at, Some(day(14)));
    assert_eq!(paid.batch_id, Some(scenario.batch_id));
    assert_eq!(paid.paid_on, Some(date(9, 18)));
    assert_eq!(paid.paid_reference.as_deref(), Some(PAYROLL_REFERENCE));
    assert_eq!(paid.closed_reason, None);
    assert_eq!(paid.version, 4);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn ledger_tracks_approved_and_pending_payouts(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let approved = ledger_row(&pool, scenario.approved_payout).await;
    assert_eq!(approved.status, "approved");
    assert_eq!(approved.milestone, "hours_worked:160.00:ambassador");
    assert_eq!(approved.amount, 100_000);
    assert_eq!(approved.approved_at, Some(day(42)));
    assert_eq!(approved.exported_at, None);
    assert_eq!(approved.version, 2);

    let pending = ledger_row(&pool, scenario.pending_payout).await;
    assert_eq!(pending.status, "pending_approval");
    assert_eq!(pending.ambassador_id, scenario.ben.0);
    assert_eq!(pending.approved_at, None);
    assert_eq!(pending.version, 1);

    let queue: Vec<Uuid> = sqlx::query_scalar(
        "SELECT payout_id FROM read_models.payout_ledger
          WHERE agency_id = $1 AND status = 'pending_approval'
          ORDER BY requested_at, payout_id",
    )
    .bind(scenario.agency.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(queue, vec![scenario.pending_payout.0]);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn reversal_takes_payout_out_of_earnings(pool: PgPool) {
    let app = application(&pool);
    let scenario = run_scenario(&app, AgencyId::new()).await;
    let reverse = PayoutCommand::ReversePayout(ReversePayout {
        by: UserId::new(),
        reason: FreeText::parse("Placement was a no-show").unwrap(),
        at: day(50),
    });
    payout_step(
        &app,
        scenario.agency,
        day(50),
        scenario.paid_payout,
        reverse,
    )
    .await;

    catch_up_all(&pool).await;

    let reversed = ledger_row(&pool, scenario.paid_payout).await;
    assert_eq!(reversed.status, "reversed");
    assert_eq!(
        reversed.closed_reason.as_deref(),
        Some("Placement was a no-show")
    );
    assert_eq!(reversed.version, 5);
    assert_eq!(
        earnings(&pool, scenario.ada).await,
        vec![("USD".to_owned(), 0, 100_000, 0)]
    );
    assert_eq!(summary(&pool, scenario.ada).await.payouts_paid, 0);
}

#[derive(Debug, sqlx::FromRow)]
struct FunnelRow {
    currency: String,
    submitted: i64,
    contacted: i64,
    interviewing: i64,
    hired: i64,
    milestone: i64,
    duplicates: i64,
    submitted_to_contacted: Option<String>,
    contacted_to_interviewing: Option<String>,
    interviewing_to_hired: Option<String>,
    hired_to_milestone: Option<String>,
    median_days_to_hire: Option<String>,
    bonus_cost: i64,
    bonus_cost_per_hire: Option<String>,
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn funnel_counts_cumulative_stages(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let rows: Vec<FunnelRow> = sqlx::query_as(
        "SELECT currency, submitted, contacted, interviewing, hired, milestone, duplicates,
                submitted_to_contacted::text AS submitted_to_contacted,
                contacted_to_interviewing::text AS contacted_to_interviewing,
                interviewing_to_hired::text AS interviewing_to_hired,
                hired_to_milestone::text AS hired_to_milestone,
                median_days_to_hire::text AS median_days_to_hire,
                bonus_cost, bonus_cost_per_hire::text AS bonus_cost_per_hire
           FROM analytics.program_funnel WHERE agency_id = $1 AND program_id = $2",
    )
    .bind(scenario.agency.0)
    .bind(scenario.program.0)
    .fetch_all(&pool)
    .await
    .unwrap();

    assert_eq!(rows.len(), 1, "one row per program");
    let funnel = &rows[0];
    assert_eq!(funnel.currency, "USD");
    assert_eq!(funnel.submitted, 4, "the duplicate is counted apart");
    assert_eq!(funnel.duplicates, 1);
    assert_eq!(
        funnel.contacted, 4,
        "hired and interviewing count as contacted"
    );
    assert_eq!(
        funnel.interviewing, 3,
        "the direct hire counts as interviewing"
    );
    assert_eq!(funnel.hired, 2);
    assert_eq!(funnel.milestone, 1);
    assert_eq!(funnel.submitted_to_contacted.as_deref(), Some("1.0000"));
    assert_eq!(funnel.contacted_to_interviewing.as_deref(), Some("0.7500"));
    assert_eq!(funnel.interviewing_to_hired.as_deref(), Some("0.6667"));
    assert_eq!(funnel.hired_to_milestone.as_deref(), Some("0.5000"));
    assert_eq!(
        funnel.median_days_to_hire.as_deref(),
        Some("15.00"),
        "hires after 10 and 20 days"
    );
    assert_eq!(
        funnel.bonus_cost, 150_000,
        "the pending payout costs nothing yet"
    );
    assert_eq!(funnel.bonus_cost_per_hire.as_deref(), Some("75000.00"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn funnel_rates_are_null_without_previous_stage(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let setup = recruiter_at(agency, day(0));
    let program = create_program(&app, &setup, hire_and_hours_terms()).await;
    let ada = enroll_ambassador(&app, &setup, contact(ADA.0, Some(ADA.1), None)).await;
    submit_at(&app, agency, day(0), program, ada, GRACE).await;
    catch_up_all(&pool).await;

    let (contacted_rate, hired_rate, median, cost_per_hire): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT submitted_to_contacted::text, hired_to_milestone::text,
                median_days_to_hire::text, bonus_cost_per_hire::text
           FROM analytics.program_funnel WHERE program_id = $1",
    )
    .bind(program.0)
    .fetch_one(&pool)
    .await
    .unwrap();

    assert_eq!(contacted_rate.as_deref(), Some("0.0000"));
    assert_eq!(hired_rate, None);
    assert_eq!(median, None);
    assert_eq!(cost_per_hire, None);
}

#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct LeaderboardRow {
    ambassador_id: Uuid,
    kind: Option<String>,
    currency: String,
    referrals: i64,
    hires: i64,
    earned_amount: i64,
    paid_amount: i64,
    rank: i64,
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn leaderboard_ranks_hires_then_paid(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let rows: Vec<LeaderboardRow> = sqlx::query_as(
        "SELECT ambassador_id, kind, currency, referrals, hires, earned_amount, paid_amount,
                rank
           FROM analytics.ambassador_leaderboard WHERE agency_id = $1 ORDER BY rank",
    )
    .bind(scenario.agency.0)
    .fetch_all(&pool)
    .await
    .unwrap();

    let field_worker = Some("field_worker".to_owned());
    let expected = vec![
        LeaderboardRow {
            ambassador_id: scenario.ada.0,
            kind: field_worker.clone(),
            currency: "USD".to_owned(),
            referrals: 3,
            hires: 1,
            earned_amount: 150_000,
            paid_amount: 50_000,
            rank: 1,
        },
        LeaderboardRow {
            ambassador_id: scenario.ben.0,
            kind: field_worker,
            currency: "USD".to_owned(),
            referrals: 2,
            hires: 1,
            earned_amount: 0,
            paid_amount: 0,
            rank: 2,
        },
    ];
    assert_eq!(rows, expected, "equal hires, so the paid amount decides");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn payout_totals_group_by_status(pool: PgPool) {
    let scenario = scenario_with_read_models(&pool).await;

    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT currency, status, payouts, amount FROM analytics.payout_totals
          WHERE agency_id = $1 AND program_id = $2 ORDER BY status",
    )
    .bind(scenario.agency.0)
    .bind(scenario.program.0)
    .fetch_all(&pool)
    .await
    .unwrap();

    assert_eq!(
        rows,
        vec![
            ("USD".to_owned(), "approved".to_owned(), 1, 100_000),
            ("USD".to_owned(), "paid".to_owned(), 1, 50_000),
            ("USD".to_owned(), "pending_approval".to_owned(), 1, 50_000),
        ]
    );
}

/// Returns every row of every projection table as JSON text, sorted.
async fn projection_rows(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    let mut snapshot = Vec::new();
    for projection in models::all() {
        for table in projection.tables() {
            let relation = format!("{}.{}", projection.schema(), table);
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT to_jsonb(row)::text FROM {relation} AS row ORDER BY 1"
            ))
            .fetch_all(pool)
            .await
            .unwrap();
            snapshot.push((relation, rows));
        }
    }
    snapshot
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn rebuild_reproduces_live_rows(pool: PgPool) {
    scenario_with_read_models(&pool).await;
    let live = projection_rows(&pool).await;

    let runner = ProjectionRunner::new(pool.clone());
    for projection in models::all() {
        runner
            .rebuild(projection.as_ref(), &mut |_| {})
            .await
            .unwrap_or_else(|error| panic!("rebuilding {}: {error}", projection.name()));
    }
    // Transactions of tests in other databases can hold the read horizon back, so a
    // rebuild may stop short of the last event, and the live catch-up continues from there.
    catch_up_all(&pool).await;
    let rebuilt = projection_rows(&pool).await;

    for ((relation, live_rows), (_, rebuilt_rows)) in live.iter().zip(&rebuilt) {
        // Past states are kept every 50 events of one aggregate, more than this scenario has.
        if relation != "read_models.aggregate_snapshots" {
            assert!(!live_rows.is_empty(), "{relation} has rows to compare");
        }
        assert_eq!(live_rows, rebuilt_rows, "{relation}");
    }
}

/// What a BI login could read, collected before its role is dropped.
struct BiView {
    referral_agencies: Result<Vec<Uuid>, String>,
    referral_count: Result<i64, String>,
    payout_agencies: Result<Vec<Uuid>, String>,
    ambassador_agencies: Result<Vec<Uuid>, String>,
    funnel_agencies: Result<Vec<Uuid>, String>,
    leaderboard_agencies: Result<Vec<Uuid>, String>,
    total_agencies: Result<Vec<Uuid>, String>,
    mappings: Result<Vec<Uuid>, String>,
    board: Result<i64, String>,
    events: Result<i64, String>,
    mapping_insert: Result<u64, String>,
}

/// Returns the SQLSTATE of a database error, or the whole error otherwise.
fn sqlstate(error: sqlx::Error) -> String {
    match error
        .as_database_error()
        .and_then(|database| database.code())
    {
        Some(code) => code.into_owned(),
        None => error.to_string(),
    }
}

async fn read_as_bi(connection: &mut sqlx::PgConnection, other_agency: AgencyId) -> BiView {
    async fn agencies(
        connection: &mut sqlx::PgConnection,
        relation: &str,
    ) -> Result<Vec<Uuid>, String> {
        sqlx::query_scalar(&format!(
            "SELECT DISTINCT agency_id FROM {relation} ORDER BY 1"
        ))
        .fetch_all(&mut *connection)
        .await
        .map_err(sqlstate)
    }
    async fn count(connection: &mut sqlx::PgConnection, relation: &str) -> Result<i64, String> {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {relation}"))
            .fetch_one(&mut *connection)
            .await
            .map_err(sqlstate)
    }

    BiView {
        referral_agencies: agencies(connection, "analytics.referral_facts").await,
        referral_count: count(connection, "analytics.referral_facts").await,
        payout_agencies: agencies(connection, "analytics.payout_facts").await,
        ambassador_agencies: agencies(connection, "analytics.ambassador_facts").await,
        funnel_agencies: agencies(connection, "analytics.program_funnel").await,
        leaderboard_agencies: agencies(connection, "analytics.ambassador_leaderboard").await,
        total_agencies: agencies(connection, "analytics.payout_totals").await,
        mappings: agencies(connection, "analytics.bi_agency_access").await,
        board: count(connection, "read_models.referral_board").await,
        events: count(connection, "events").await,
        mapping_insert: sqlx::query(
            "INSERT INTO analytics.bi_agency_access (role_name, agency_id) VALUES (current_user, $1)",
        )
        .bind(other_agency.0)
        .execute(&mut *connection)
        .await
        .map(|result| result.rows_affected())
        .map_err(sqlstate),
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn bi_role_sees_only_mapped_agency(pool: PgPool) {
    let app = application(&pool);
    let mapped = run_scenario(&app, AgencyId::new()).await;
    let other = run_scenario(&app, AgencyId::new()).await;
    catch_up_all(&pool).await;
    // Roles belong to the whole cluster, so the name is unique to this run.
    let role = format!("bi_test_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN IN ROLE referrals_bi"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO analytics.bi_agency_access (role_name, agency_id)
         VALUES ($1, $2), ('another_bi_login', $3)",
    )
    .bind(&role)
    .bind(mapped.agency.0)
    .bind(other.agency.0)
    .execute(&pool)
    .await
    .unwrap();

    let mut connection = pool.acquire().await.unwrap();
    let switched = sqlx::query(&format!("SET ROLE {role}"))
        .execute(&mut *connection)
        .await;
    let view = read_as_bi(&mut connection, other.agency).await;
    let reset = sqlx::query("RESET ROLE").execute(&mut *connection).await;
    drop(connection);
    let dropped = sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&pool)
        .await;

    assert!(switched.is_ok(), "{switched:?}");
    assert!(reset.is_ok(), "{reset:?}");
    assert!(dropped.is_ok(), "{dropped:?}");
    let only_mapped = Ok(vec![mapped.agency.0]);
    assert_eq!(view.referral_agencies, only_mapped);
    assert_eq!(view.referral_count, Ok(5));
    assert_eq!(view.payout_agencies, only_mapped);
    assert_eq!(view.ambassador_agencies, only_mapped);
    assert_eq!(view.funnel_agencies, only_mapped);
    assert_eq!(view.leaderboard_agencies, only_mapped);
    assert_eq!(view.total_agencies, only_mapped);
    assert_eq!(
        view.mappings, only_mapped,
        "other logins' mappings stay hidden"
    );
    let permission_denied = "42501".to_owned();
    assert_eq!(view.board, Err(permission_denied.clone()));
    assert_eq!(view.events, Err(permission_denied.clone()));
    assert_eq!(view.mapping_insert, Err(permission_denied));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn analytics_holds_no_personal_data(pool: PgPool) {
    scenario_with_read_models(&pool).await;
    let relations: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'analytics' AND table_name <> 'bi_agency_access'
          ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut forbidden: Vec<&str> = [GRACE, LINUS, MARGARET, ALAN, ADA, BEN]
        .iter()
        .flat_map(|(name, _)| name.split(' '))
        .collect();
    forbidden.extend([WORKER_ID, PAYROLL_REFERENCE, DECLINE_REASON]);

    assert_eq!(relations.len(), 6, "three fact tables and three views");
    for relation in &relations {
        let values: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
            "SELECT entry.key, entry.value
               FROM analytics.{relation} AS row, jsonb_each_text(to_jsonb(row)) AS entry"
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(!values.is_empty(), "{relation} has rows to check");
        for (column, value) in values {
            let value = value.unwrap_or_default();
            assert!(
                !value.starts_with("v1."),
                "{relation}.{column} is sealed data"
            );
            assert!(!value.contains('@'), "{relation}.{column} = {value}");
            for word in &forbidden {
                assert!(!value.contains(word), "{relation}.{column} = {value}");
            }
        }
    }
}
