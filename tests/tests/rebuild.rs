//! A rebuild from zero yields exactly the rows that incremental processing built, for a
//! generated history of more than 10,000 events.

use std::sync::Arc;

use chrono::{Duration, NaiveDate, Utc};
use referrals_domain::ids::{AgencyId, PayoutId, UserId};
use referrals_domain::payout::{ApprovePayout, PayoutCommand};
use referrals_domain::referral::{
    MarkContacted, MarkInterviewing, RecordHire, RecordHours, ReferralCommand,
};
use referrals_domain::terms::Recipient;
use referrals_domain::values::Hours;
use referrals_projections::models;
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::Projection;
use referrals_store::application::Application;
use referrals_tests::*;
use sqlx::PgPool;

const HIRED_REFERRALS: usize = 180;
const WEEKS: i64 = 48;

/// Takes a referral through contact, interview and hire, 48 weeks of hours and the
/// approval of both payouts: 59 events, so each referral also gets a stored past state
/// at its 50th event.
async fn full_history(
    app: &Application,
    agency: AgencyId,
    program: referrals_domain::ids::ProgramId,
    index: usize,
) {
    let metadata = recruiter(agency);
    let ambassador = enroll_ambassador(
        app,
        &metadata,
        contact(
            &format!("Ambassador {index}"),
            Some(&format!("a{index}@example.com")),
            None,
        ),
    )
    .await;
    let candidate = contact(
        &format!("Candidate {index}"),
        Some(&format!("c{index}@example.org")),
        None,
    );
    let referral = submit(app, &metadata, program, ambassador, candidate)
        .await
        .unwrap();
    let referral_id = referral.aggregate.referral_id().unwrap();
    let start = NaiveDate::from_ymd_opt(2025, 3, 3).unwrap();
    let mut commands = vec![
        ReferralCommand::MarkContacted(MarkContacted { at: Utc::now() }),
        ReferralCommand::MarkInterviewing(MarkInterviewing { at: Utc::now() }),
        ReferralCommand::RecordHire(RecordHire {
            start_date: start,
            job_title: "Picker".to_owned(),
            client_name: "Contoso".to_owned(),
            external_worker_id: None,
            at: Utc::now(),
        }),
    ];
    for week in 0..WEEKS {
        commands.push(ReferralCommand::RecordHours(RecordHours {
            week_ending: start + Duration::days(6 + 7 * week),
            hours: Hours::parse("35.5").unwrap(),
            at: Utc::now(),
        }));
    }
    for command in commands {
        app.execute_referral(&metadata, referral_id, command, None)
            .await
            .unwrap();
    }
    let (referral, _) = app
        .referrals
        .load(agency, &referral_id.to_string())
        .await
        .unwrap()
        .unwrap();
    for reached in referral.milestones_reached() {
        let payout_id = PayoutId::for_milestone(referral_id, &reached.key, Recipient::Ambassador);
        let approve = PayoutCommand::ApprovePayout(ApprovePayout {
            approver: UserId::new(),
            ambassador_active: true,
            at: Utc::now(),
        });
        app.payouts
            .execute(&payout_id.to_string(), approve, &metadata, None)
            .await
            .unwrap();
    }
}

/// Every row of every table of a projection, as sorted JSON text.
async fn rows_of(pool: &PgPool, projection: &dyn Projection) -> Vec<String> {
    let mut rows = Vec::new();
    for table in projection.tables() {
        let query = format!(
            "SELECT row_to_json(t)::text FROM {}.{} AS t ORDER BY 1",
            projection.schema(),
            table
        );
        let table_rows: Vec<String> = sqlx::query_scalar(&query).fetch_all(pool).await.unwrap();
        rows.push(format!("{table}: {} rows", table_rows.len()));
        rows.extend(table_rows);
    }
    rows
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn rebuild_equals_incremental_on_ten_thousand_events(pool: PgPool) {
    let app = Arc::new(application(&pool));
    let agency = AgencyId::new();
    let program = create_program(&app, &recruiter(agency), hire_and_hours_terms()).await;
    let runner = ProjectionRunner::new(pool.clone()).with_batch_size(97);
    let read_models = models::all();

    // Incremental: the projections follow the history while it is being written.
    let writers: Vec<_> = (0..8)
        .map(|worker| {
            let app = app.clone();
            tokio::spawn(async move {
                for index in (worker..HIRED_REFERRALS).step_by(8) {
                    full_history(&app, agency, program, index).await;
                }
            })
        })
        .collect();
    while !writers.iter().all(|writer| writer.is_finished()) {
        for projection in &read_models {
            runner.catch_up(projection.as_ref()).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(events >= 10_000, "the history has {events} events");

    for projection in &read_models {
        catch_up_fully(&pool, &runner, projection.as_ref()).await;
        let incremental = rows_of(&pool, projection.as_ref()).await;
        runner
            .rebuild(projection.as_ref(), &mut |_| {})
            .await
            .unwrap();
        catch_up_fully(&pool, &runner, projection.as_ref()).await;
        let rebuilt = rows_of(&pool, projection.as_ref()).await;
        assert!(incremental.len() > 1, "{} has rows", projection.name());
        assert_eq!(
            incremental,
            rebuilt,
            "{} differs after a rebuild",
            projection.name()
        );
    }
}
