//! The scheduled referral rules against real PostgreSQL, with a manual clock.

use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};
use referrals_domain::ids::{AgencyId, PayoutId, ReferralId};
use referrals_domain::payout::PayoutStatus;
use referrals_domain::referral::{EndPlacement, RecordHire, ReferralCommand, ReferralStatus};
use referrals_domain::terms::{Milestone, Recipient, Terms, Trigger};
use referrals_domain::values::{FreeText, Hours};
use referrals_projections::runner::ProjectionRunner;
use referrals_store::application::Application;
use referrals_tests::*;
use referrals_workers::clock::ManualClock;
use referrals_workers::exclusive::run_exclusive;
use referrals_workers::rules::ReferralRules;
use referrals_workers::schedule::ReferralScheduleProjection;
use sqlx::PgPool;
use tokio::sync::Notify;

fn noon(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::from_hms_opt(12, 0, 0).unwrap())
        .and_utc()
}

async fn catch_up_schedule(pool: &PgPool) {
    catch_up_fully(
        pool,
        &ProjectionRunner::new(pool.clone()),
        &ReferralScheduleProjection,
    )
    .await;
}

async fn status_of(app: &Application, agency: AgencyId, referral: ReferralId) -> ReferralStatus {
    let (referral, _) = app
        .referrals
        .load(agency, &referral.to_string())
        .await
        .unwrap()
        .unwrap();
    referral.status().unwrap()
}

async fn milestones_of(app: &Application, agency: AgencyId, referral: ReferralId) -> usize {
    let (referral, _) = app
        .referrals
        .load(agency, &referral.to_string())
        .await
        .unwrap()
        .unwrap();
    referral.milestones_reached().len()
}

/// Submits and hires a referral under `terms`, starting on `start_date`.
async fn hired_referral(
    app: &Application,
    agency: AgencyId,
    terms: Terms,
    start_date: NaiveDate,
) -> ReferralId {
    let metadata = recruiter(agency);
    let program = create_program(app, &metadata, terms).await;
    let ambassador = enroll_ambassador(
        app,
        &metadata,
        contact("Ada", Some("ada@example.com"), None),
    )
    .await;
    let referral = submit(
        app,
        &metadata,
        program,
        ambassador,
        contact("Grace", Some("grace@example.org"), None),
    )
    .await
    .unwrap()
    .aggregate
    .referral_id()
    .unwrap();

    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date,
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: None,
        at: Utc::now(),
    });
    app.execute_referral(&metadata, referral, hire, None)
        .await
        .unwrap();
    referral
}

fn ninety_days_terms() -> Terms {
    Terms::with_schedule(vec![Milestone {
        trigger: Trigger::DaysEmployed,
        threshold: Hours::whole(90),
        amount: 100_000,
        recipient: Recipient::Ambassador,
    }])
}

async fn end_placement(
    app: &Application,
    agency: AgencyId,
    referral: ReferralId,
    end_date: NaiveDate,
) {
    let command = ReferralCommand::EndPlacement(EndPlacement {
        end_date,
        reason: FreeText::parse("Contract ended early").unwrap(),
        at: Utc::now(),
    });
    app.execute_referral(&recruiter(agency), referral, command, None)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn referral_expires_on_deadline_not_before(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let submitted_at = Utc::now();
    let referral = submitted_referral(&app, &recruiter_at(agency, submitted_at)).await;
    let (loaded, _) = app
        .referrals
        .load(agency, &referral.to_string())
        .await
        .unwrap()
        .unwrap();
    let deadline = loaded.submitted_at().unwrap()
        + TimeDelta::days(i64::from(loaded.terms().unwrap().hire_deadline_days));
    catch_up_schedule(&pool).await;
    let clock = Arc::new(ManualClock::new(deadline - TimeDelta::days(1)));
    let rules = ReferralRules::new(app.clone(), clock.clone());

    let day_before = rules.expire_referrals().await.unwrap();
    assert_eq!(day_before.due, 0);
    assert_eq!(
        status_of(&app, agency, referral).await,
        ReferralStatus::Submitted
    );

    clock.set(deadline);
    let on_the_day = rules.expire_referrals().await.unwrap();
    assert_eq!(on_the_day.due, 1);
    assert_eq!(on_the_day.changed, 1);
    assert_eq!(
        status_of(&app, agency, referral).await,
        ReferralStatus::Expired
    );

    // A retried run before the schedule catches up is rejected by the aggregate.
    let retried = rules.expire_referrals().await.unwrap();
    assert_eq!(retried.changed, 0);
    assert_eq!(retried.stale, 1);

    catch_up_schedule(&pool).await;
    let after_catch_up = rules.expire_referrals().await.unwrap();
    assert_eq!(after_catch_up.due, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn hired_referral_does_not_expire(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let start = Utc::now().date_naive();
    let referral = hired_referral(&app, agency, ninety_days_terms(), start).await;
    catch_up_schedule(&pool).await;
    let clock = Arc::new(ManualClock::new(Utc::now() + TimeDelta::days(400)));
    let rules = ReferralRules::new(app.clone(), clock);

    let report = rules.expire_referrals().await.unwrap();

    assert_eq!(report.due, 0);
    assert_eq!(
        status_of(&app, agency, referral).await,
        ReferralStatus::Hired
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn days_milestone_fires_on_day_ninety(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let start = Utc::now().date_naive();
    let referral = hired_referral(&app, agency, ninety_days_terms(), start).await;
    catch_up_schedule(&pool).await;
    let clock = Arc::new(ManualClock::new(noon(start + Days::new(89))));
    let rules = ReferralRules::new(app.clone(), clock.clone());

    let day_89 = rules.check_days_employed().await.unwrap();
    assert_eq!(day_89.due, 0);
    assert_eq!(milestones_of(&app, agency, referral).await, 0);

    clock.set(noon(start + Days::new(90)));
    let day_90 = rules.check_days_employed().await.unwrap();
    assert_eq!(day_90.due, 1);
    assert_eq!(day_90.changed, 1);
    assert_eq!(milestones_of(&app, agency, referral).await, 1);
    let payouts: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'payout'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(payouts, 1);

    // A retry reaches nothing twice, before and after the schedule catches up.
    let retried = rules.check_days_employed().await.unwrap();
    assert_eq!(retried.changed, 0);
    catch_up_schedule(&pool).await;
    clock.set(noon(start + Days::new(120)));
    let later = rules.check_days_employed().await.unwrap();
    assert_eq!(later.due, 0);
    assert_eq!(milestones_of(&app, agency, referral).await, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn days_milestone_skipped_after_early_end(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let start = Utc::now().date_naive();
    let referral = hired_referral(&app, agency, ninety_days_terms(), start).await;
    end_placement(&app, agency, referral, start + Days::new(45)).await;
    catch_up_schedule(&pool).await;
    let clock = Arc::new(ManualClock::new(noon(start + Days::new(90))));
    let rules = ReferralRules::new(app.clone(), clock.clone());

    let day_90 = rules.check_days_employed().await.unwrap();
    clock.set(noon(start + Days::new(365)));
    let day_365 = rules.check_days_employed().await.unwrap();

    assert_eq!(day_90.due, 0);
    assert_eq!(day_365.due, 0);
    assert_eq!(milestones_of(&app, agency, referral).await, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn early_end_voids_unpaid_payout(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let start = Utc::now().date_naive();
    let mut terms = hire_and_hours_terms();
    terms.guarantee_days = Some(60);
    let referral = hired_referral(&app, agency, terms, start).await;
    let (loaded, _) = app
        .referrals
        .load(agency, &referral.to_string())
        .await
        .unwrap()
        .unwrap();
    let hire_milestone = &loaded.milestones_reached()[0];
    let payout_id = PayoutId::for_milestone(
        referral,
        &hire_milestone.key,
        hire_milestone.milestone.recipient,
    );

    end_placement(&app, agency, referral, start + Days::new(30)).await;

    let (payout, _) = app
        .payouts
        .load(agency, &payout_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payout.status(), Some(PayoutStatus::Voided));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn early_end_voids_exported_keeps_paid(pool: PgPool) {
    use referrals_domain::ids::UserId;
    use referrals_domain::payout::{ApprovePayout, MarkExported, MarkPaid, PayoutCommand};
    use referrals_domain::referral::RecordHours;

    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let start = Utc::now().date_naive() - Days::new(40);
    let mut terms = hire_and_hours_terms();
    terms.guarantee_days = Some(60);
    let referral = hired_referral(&app, agency, terms, start).await;
    // Four weeks of 40 hours reach the 160-hour milestone, the second payout.
    for week in 0..4 {
        let hours = ReferralCommand::RecordHours(RecordHours {
            week_ending: start + Days::new(6 + 7 * week),
            hours: Hours::whole(40),
            at: Utc::now(),
        });
        app.execute_referral(&metadata, referral, hours, None)
            .await
            .unwrap();
    }
    let (loaded, _) = app
        .referrals
        .load(agency, &referral.to_string())
        .await
        .unwrap()
        .unwrap();
    let payout_ids: Vec<PayoutId> = loaded
        .milestones_reached()
        .iter()
        .map(|reached| PayoutId::for_milestone(referral, &reached.key, reached.milestone.recipient))
        .collect();
    assert_eq!(payout_ids.len(), 2, "hire and hours milestones");
    let (exported, paid) = (payout_ids[0], payout_ids[1]);
    let approve = || {
        PayoutCommand::ApprovePayout(ApprovePayout {
            approver: UserId::new(),
            ambassador_active: true,
            at: Utc::now(),
        })
    };
    let export = || {
        PayoutCommand::MarkExported(MarkExported {
            batch_id: uuid::Uuid::now_v7(),
            at: Utc::now(),
        })
    };
    let pay = PayoutCommand::MarkPaid(MarkPaid {
        paid_on: Utc::now().date_naive(),
        reference: "PAY-1".to_owned(),
        at: Utc::now(),
    });
    let steps = [
        (exported, approve()),
        (exported, export()),
        (paid, approve()),
        (paid, export()),
        (paid, pay),
    ];
    for (payout_id, command) in steps {
        app.payouts
            .execute(&payout_id.to_string(), command, &metadata, None)
            .await
            .unwrap();
    }
    let status = |payout_id: PayoutId| {
        let app = app.clone();
        async move {
            let (payout, _) = app
                .payouts
                .load(agency, &payout_id.to_string())
                .await
                .unwrap()
                .unwrap();
            payout.status()
        }
    };
    assert_eq!(status(exported).await, Some(PayoutStatus::Exported));
    assert_eq!(status(paid).await, Some(PayoutStatus::Paid));

    end_placement(&app, agency, referral, start + Days::new(35)).await;

    assert_eq!(status(exported).await, Some(PayoutStatus::Voided));
    assert_eq!(status(paid).await, Some(PayoutStatus::Paid));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn end_after_guarantee_keeps_payout(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let start = Utc::now().date_naive() - Days::new(100);
    let mut terms = hire_and_hours_terms();
    terms.guarantee_days = Some(60);
    let referral = hired_referral(&app, agency, terms, start).await;

    end_placement(&app, agency, referral, start + Days::new(61)).await;

    let voided: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'payout' AND event_type = 'PayoutVoided'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(voided, 0);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn second_executor_skips_running_job(pool: PgPool) {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let first = tokio::spawn({
        let (pool, started, release) = (pool.clone(), started.clone(), release.clone());
        async move {
            run_exclusive(&pool, "test_job", async {
                started.notify_one();
                release.notified().await;
                "first ran"
            })
            .await
            .unwrap()
        }
    });
    started.notified().await;

    let second = run_exclusive(&pool, "test_job", async { "second ran" })
        .await
        .unwrap();
    let other_job = run_exclusive(&pool, "other_job", async { "other ran" })
        .await
        .unwrap();
    release.notify_one();
    let first = first.await.unwrap();
    let after_release = run_exclusive(&pool, "test_job", async { "third ran" })
        .await
        .unwrap();

    assert_eq!(second, None);
    assert_eq!(other_job, Some("other ran"));
    assert_eq!(first, Some("first ran"));
    assert_eq!(after_release, Some("third ran"));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn reactor_voids_payout_after_early_end(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let start = Utc::now().date_naive();
    let mut terms = hire_and_hours_terms();
    terms.guarantee_days = Some(60);
    let referral = hired_referral(&app, agency, terms, start).await;
    // Ends the placement through the aggregate store alone, as if the process stopped
    // right after the commit and before the synchronous voiding ran.
    let command = ReferralCommand::EndPlacement(EndPlacement {
        end_date: start + Days::new(30),
        reason: FreeText::parse("Contract ended early").unwrap(),
        at: Utc::now(),
    });
    app.referrals
        .execute(&referral.to_string(), command, &recruiter(agency), None)
        .await
        .unwrap();
    let voided_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'payout' AND event_type = 'PayoutVoided'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    let requester = referrals_projections::reactors::PayoutRequester::new(app.clone());
    catch_up_fully(&pool, &ProjectionRunner::new(pool.clone()), &requester).await;

    let voided_after: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'payout' AND event_type = 'PayoutVoided'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(voided_before, 0);
    assert_eq!(voided_after, 1);
}
