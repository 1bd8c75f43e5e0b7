//! A server killed with SIGKILL in the middle of a mixed command load loses no accepted
//! command, duplicates no payout or candidate owner, and its read models catch up to what
//! a rebuild from the event store produces. Every notification the load causes reaches
//! a mock SendGrid, repeated only for the messages the killed process had claimed, and
//! every notifying event has its outbox rows.

mod live;

use std::time::Duration;

use live::load::{self, LoadOptions};
use live::mock_sendgrid::MockSendGrid;
use live::{checks, Database, Server};

/// Claim lease of the servers, in seconds. It is short, so rows claimed by the killed
/// process are sent again within the test's waits. It is also longer than one batch of
/// sends to the loopback mock takes, so a live process never sends its own claim twice.
const CLAIM_LEASE_SECONDS: &str = "3";

/// Returns the server environment: e-mail to the mock, fast retries and a short claim lease.
fn server_environment(sendgrid: &MockSendGrid) -> Vec<(&'static str, String)> {
    let mut environment = sendgrid.environment();
    environment.push(("NOTIFICATION_RETRY_BASE_MS", "200".to_owned()));
    environment.push((
        "NOTIFICATION_CLAIM_LEASE_SECONDS",
        CLAIM_LEASE_SECONDS.to_owned(),
    ));
    environment
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_nothing() {
    let database = Database::create("referrals_crash");
    let sendgrid = MockSendGrid::start().await;
    let environment = server_environment(&sendgrid);
    let server = Server::start_with_environment(&database, "127.0.0.1:0", &[], &environment);
    let agency = live::bootstrap_agency(&database, &server).await;
    let address = server.address.clone();

    let options = LoadOptions {
        tasks: 6,
        duration: Duration::from_secs(8),
        ..LoadOptions::default()
    };
    let running = load::spawn(vec![server.base_url.clone()], agency, options);

    // Kill while commands are in flight, and leave the server down for a moment so that
    // clients see refused connections; then restart it on the same port.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!running.is_finished(), "the load ended before the crash");
    server.kill();
    let mut connection = database.connect().await;
    let claimed_at_kill = checks::claimed_notifications(&mut connection).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = Server::start_with_environment(&database, &address, &[], &environment);
    let report = running.await.unwrap();

    let caught_up = live::wait_for_catch_up(&database, Duration::from_secs(60)).await;
    assert!(caught_up.is_ok(), "projections behind: {caught_up:?}");
    let drained = checks::wait_for_outbox_drained(&mut connection, Duration::from_secs(60)).await;
    assert!(drained.is_ok(), "outbox rows still pending: {drained:?}");
    assert!(
        restarted.terminate(),
        "the restarted server did not stop cleanly"
    );
    println!(
        "crash load: {} commands accepted, rejected by status {:?}, {} without response",
        report.accepted.len(),
        report.rejected,
        report.transport_errors
    );
    let received = sendgrid.dedupe_keys();
    let distinct: std::collections::BTreeSet<&String> = received.iter().collect();
    println!(
        "crash notifications: {} e-mails received, {} of them repeats, {} outbox rows claimed at the kill",
        received.len(),
        received.len() - distinct.len(),
        claimed_at_kill.len()
    );

    assert!(
        report.count("hire") > 0,
        "the load hired nobody: {report:?}"
    );
    assert!(report.count("approve") > 0, "the load approved no payout");
    assert!(
        report.transport_errors > 0,
        "no request met the crash, so the test proved nothing"
    );
    assert!(
        report.not_problem_json.is_empty(),
        "errors that are not problem+json: {:?}",
        report.not_problem_json
    );
    let server_errors: u64 = report
        .rejected
        .iter()
        .filter(|(status, _)| **status >= 500)
        .map(|(_, count)| count)
        .sum();
    assert_eq!(server_errors, 0, "5xx responses: {:?}", report.rejected);

    checks::accepted_commands_are_stored(&mut connection, &report).await;
    checks::payouts_are_not_duplicated(&mut connection).await;
    checks::one_owner_per_candidate(&mut connection, &report).await;
    checks::outbox_matches_notifying_events(&mut connection).await;
    checks::notifications_delivered_once(&mut connection, &received, &claimed_at_kill).await;
    checks::read_models_equal_rebuild(&database).await;
    drop(connection);
    database.drop_database().await;
}
