//! Two `referrals serve` processes on one database give the same results as one. The same
//! load yields the same number of candidate owners, payouts and events. Read models equal
//! a rebuild, which they would not with two writers per projection, and the two payout
//! reactors request no payout twice. The two notification dispatchers send each e-mail
//! to a mock SendGrid exactly once. Prints the throughput of each setup.
//!
//! NOTE: the scheduled rules are not exercised. No referral of the load reaches its hire
//! deadline (at least a day after submission) or a `days_employed` milestone.

mod live;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use live::load::{self, LoadOptions, LoadReport};
use live::mock_sendgrid::MockSendGrid;
use live::{checks, Database, Server};

/// Builds a load of a fixed size, so that both setups do the same work. Every task takes
/// the same number of referrals through the whole flow, with no deadline in the way.
fn fixed_load() -> LoadOptions {
    LoadOptions {
        tasks: 4,
        referrals_per_task: 6,
        duration: Duration::from_secs(120),
        shared_every: 3,
        shared_candidates: 2,
        approval_patience: Duration::from_secs(30),
        ..LoadOptions::default()
    }
}

struct Outcome {
    report: LoadReport,
    events: BTreeMap<String, i64>,
    owners: usize,
    emails_received: usize,
}

/// Runs the fixed load against `instances` servers on a fresh database, checks it and
/// returns what it produced.
async fn run_with(instances: usize) -> Outcome {
    let database = Database::create(&format!("referrals_instances{instances}"));
    let sendgrid = MockSendGrid::start().await;
    let servers: Vec<Server> = (0..instances)
        .map(|_| {
            Server::start_with_environment(&database, "127.0.0.1:0", &[], &sendgrid.environment())
        })
        .collect();
    let agency = live::bootstrap_agency(&database, &servers[0]).await;
    let urls: Vec<String> = servers
        .iter()
        .map(|server| server.base_url.clone())
        .collect();

    let report = load::run(&urls, &agency, &fixed_load()).await;
    let caught_up = live::wait_for_catch_up(&database, Duration::from_secs(60)).await;
    assert!(caught_up.is_ok(), "projections behind: {caught_up:?}");
    let mut connection = database.connect().await;
    let drained = checks::wait_for_outbox_drained(&mut connection, Duration::from_secs(60)).await;
    assert!(drained.is_ok(), "outbox rows still pending: {drained:?}");
    for server in servers {
        assert!(server.terminate(), "a server did not stop cleanly");
    }

    checks::accepted_commands_are_stored(&mut connection, &report).await;
    checks::payouts_are_not_duplicated(&mut connection).await;
    checks::one_owner_per_candidate(&mut connection, &report).await;
    // No process was killed, so no claim was cut off and every e-mail arrives once.
    let received = sendgrid.dedupe_keys();
    checks::outbox_matches_notifying_events(&mut connection).await;
    checks::notifications_delivered_once(&mut connection, &received, &BTreeSet::new()).await;
    let events = checks::event_counts(&mut connection).await;
    drop(connection);
    checks::read_models_equal_rebuild(&database).await;
    database.drop_database().await;

    let owners = report
        .submissions
        .values()
        .filter(|submissions| submissions.iter().any(|(_, status)| status == "submitted"))
        .count();
    println!(
        "{instances} instance(s): {} commands accepted in {:.1} s, {:.1} commands/s; \
         rejected by status {:?}",
        report.accepted.len(),
        report.elapsed.as_secs_f64(),
        report.throughput(),
        report.rejected
    );
    Outcome {
        report,
        events,
        owners,
        emails_received: received.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_match_one() {
    let one = run_with(1).await;
    let two = run_with(2).await;

    let server_errors = |report: &LoadReport| -> u64 {
        report
            .rejected
            .iter()
            .filter(|(status, _)| **status >= 500)
            .map(|(_, count)| count)
            .sum()
    };
    assert_eq!(server_errors(&one.report), 0, "{:?}", one.report.rejected);
    assert_eq!(server_errors(&two.report), 0, "{:?}", two.report.rejected);
    assert_eq!(one.report.transport_errors, 0);
    assert_eq!(two.report.transport_errors, 0);
    assert_eq!(one.owners, two.owners, "candidate owners");
    for command in ["submit", "hire", "hours", "approve"] {
        assert_eq!(
            one.report.count(command),
            two.report.count(command),
            "accepted {command} commands"
        );
    }
    assert!(
        one.report.count("approve") > 0,
        "the load approved no payout"
    );
    // Events per type cover the payouts the reactors requested. Account events are the
    // same in both runs because each run bootstraps one agency the same way.
    assert_eq!(one.events, two.events, "events per type");
    assert_eq!(
        one.emails_received, two.emails_received,
        "e-mails received by the mock provider"
    );
}
