//! One payout per referral milestone and recipient, requested by the process manager.

use chrono::{NaiveDate, Utc};
use referrals_domain::ids::{AgencyId, PayoutId, ReferralId, UserId};
use referrals_domain::payout::{ApprovePayout, PayoutCommand, PayoutStatus};
use referrals_domain::referral::{RecordHire, RecordHours, ReferralCommand, ReferralEvent};
use referrals_domain::values::Hours;
use referrals_store::event_store::CommandError;
use referrals_tests::*;
use sqlx::PgPool;

async fn hired_referral(
    app: &referrals_store::application::Application,
    agency: AgencyId,
) -> ReferralId {
    let metadata = recruiter(agency);
    let referral_id = submitted_referral(app, &metadata).await;
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: Some("W-1001".to_owned()),
        at: Utc::now(),
    });
    app.execute_referral(&metadata, referral_id, hire, None)
        .await
        .unwrap();
    referral_id
}

async fn payout_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'payout'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn hire_requests_hire_payout(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();

    let referral_id = hired_referral(&app, agency).await;

    assert_eq!(payout_count(&pool).await, 1);
    let (referral, _) = app
        .referrals
        .load(agency, &referral_id.to_string())
        .await
        .unwrap()
        .unwrap();
    let key = &referral.milestones_reached()[0].key;
    let payout_id = PayoutId::for_milestone(
        referral_id,
        key,
        referrals_domain::terms::Recipient::Ambassador,
    );
    let (payout, _) = app
        .payouts
        .load(agency, &payout_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payout.status(), Some(PayoutStatus::PendingApproval));
    assert_eq!(payout.amount().unwrap().amount(), 50_000);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn same_milestone_twice_at_once_makes_one_payout(pool: PgPool) {
    let app = std::sync::Arc::new(application(&pool));
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let referral_id = hired_referral(&app, agency).await;
    let events = app
        .referrals
        .load(agency, &referral_id.to_string())
        .await
        .unwrap()
        .unwrap();
    let (referral, _) = events;
    let stored: Vec<cqrs_es::EventEnvelope<referrals_domain::referral::Referral>> = {
        let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT sequence, payload FROM events WHERE aggregate_type = 'referral' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(referral_id.to_string())
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(sequence, payload)| cqrs_es::EventEnvelope {
                aggregate_id: referral_id.to_string(),
                sequence: sequence as usize,
                payload: serde_json::from_value::<ReferralEvent>(payload).unwrap(),
                metadata: Default::default(),
            })
            .filter(|envelope| matches!(envelope.payload, ReferralEvent::MilestoneReached { .. }))
            .collect()
    };
    assert_eq!(stored.len(), 1);

    let referral = std::sync::Arc::new(referral);
    let stored = std::sync::Arc::new(stored);
    let runs = (0..8).map(|_| {
        let (app, metadata, referral, stored) = (
            app.clone(),
            metadata.clone(),
            referral.clone(),
            stored.clone(),
        );
        tokio::spawn(async move {
            app.request_payouts(&metadata, referral_id, &referral, &stored)
                .await
        })
    });
    let outcomes = futures::future::join_all(runs).await;

    for outcome in outcomes {
        assert_eq!(outcome.unwrap().unwrap().len(), 1);
    }
    assert_eq!(payout_count(&pool).await, 1);
    let requested: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'PayoutRequested'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(requested, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn hours_milestone_fires_once(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let referral_id = hired_referral(&app, agency).await;
    let week = |day| NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
    let record = |week_ending, hours: &str| {
        ReferralCommand::RecordHours(RecordHours {
            week_ending,
            hours: Hours::parse(hours).unwrap(),
            at: Utc::now(),
        })
    };

    for (day, hours) in [
        (8, "40"),
        (15, "40"),
        (22, "40"),
        (29, "40.00"),
        (29, "44.5"),
        (22, "41"),
    ] {
        app.execute_referral(&metadata, referral_id, record(week(day), hours), None)
            .await
            .unwrap();
    }

    let reached: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'MilestoneReached' AND aggregate_id = $1",
    )
    .bind(referral_id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reached, 2, "hired and 160 hours, each once");
    assert_eq!(payout_count(&pool).await, 2);
    let (referral, _) = app
        .referrals
        .load(agency, &referral_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(referral.hours_total(), Some(Hours::parse("165.5").unwrap()));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn concurrent_approvals_commit_once(pool: PgPool) {
    let app = std::sync::Arc::new(application(&pool));
    let agency = AgencyId::new();
    let referral_id = hired_referral(&app, agency).await;
    let (referral, _) = app
        .referrals
        .load(agency, &referral_id.to_string())
        .await
        .unwrap()
        .unwrap();
    let payout_id = PayoutId::for_milestone(
        referral_id,
        &referral.milestones_reached()[0].key,
        referrals_domain::terms::Recipient::Ambassador,
    );
    let approver = recruiter(agency);

    let approvals = (0..2).map(|_| {
        let (app, metadata) = (app.clone(), approver.clone());
        tokio::spawn(async move {
            let command = PayoutCommand::ApprovePayout(ApprovePayout {
                approver: UserId::new(),
                ambassador_active: true,
                at: Utc::now(),
            });
            app.payouts
                .execute(&payout_id.to_string(), command, &metadata, Some(1))
                .await
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(approvals)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();

    let committed = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let conflicts = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Err(CommandError::Conflict { .. })))
        .count();
    assert_eq!((committed, conflicts), (1, 1), "{outcomes:?}");
    let approved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'PayoutApproved'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(approved, 1);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn requester_reactor_requests_missed_payouts(pool: PgPool) {
    let app = std::sync::Arc::new(application(&pool));
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let referral_id = submitted_referral(&app, &metadata).await;
    // Executing on the store directly skips the request that follows a referral command,
    // as a process that stopped right after the commit would.
    let hire = ReferralCommand::RecordHire(RecordHire {
        start_date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northwind Logistics".to_owned(),
        external_worker_id: None,
        at: Utc::now(),
    });
    app.referrals
        .execute(&referral_id.to_string(), hire, &metadata, None)
        .await
        .unwrap();
    assert_eq!(payout_count(&pool).await, 0);

    let requester = referrals_projections::reactors::PayoutRequester::new(app.clone());
    let runner = referrals_projections::runner::ProjectionRunner::new(pool.clone());
    catch_up_fully(&pool, &runner, &requester).await;
    sqlx::query("UPDATE projection_checkpoints SET transaction_id = '0', position = 0 WHERE projection = 'payout_requester'")
        .execute(&pool)
        .await
        .unwrap();
    catch_up_fully(&pool, &runner, &requester).await;

    assert_eq!(
        payout_count(&pool).await,
        1,
        "requested once, however often the reactor runs"
    );
    let actor: String = sqlx::query_scalar(
        "SELECT metadata ->> 'actor_role' FROM events WHERE event_type = 'PayoutRequested'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(actor, "system:payout_requester");
}
