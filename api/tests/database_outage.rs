//! PostgreSQL restarted under load. While it is down, requests get 503 problem+json and
//! the server keeps running. Once it is back, requests and the projection workers recover
//! without a restart of the server. Runs against a private cluster, never the shared one.

mod live;

use std::time::{Duration, Instant};

use live::load::{self, LoadOptions};
use live::postgres::PrivateCluster;
use live::{checks, Database, Server};
use reqwest::StatusCode;
use serde_json::Value;

/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(4);

struct Probe {
    status: StatusCode,
    content_type: String,
    body: Value,
    took: Duration,
}

async fn probe(client: &reqwest::Client, request: reqwest::RequestBuilder) -> Probe {
    let started = Instant::now();
    let response = client
        .execute(request.build().unwrap())
        .await
        .expect("the server answers while the database is down");
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or_default();
    Probe {
        status,
        content_type,
        body,
        took: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_restart_under_load_recovers() {
    let cluster = PrivateCluster::start();
    let database = Database::create_on(&cluster.url(), "referrals_outage");
    let mut server = Server::start(&database, "127.0.0.1:0");
    let agency = live::bootstrap_agency(&database, &server).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = server.base_url.clone();

    let options = LoadOptions {
        tasks: 3,
        duration: Duration::from_secs(12),
        approval_patience: Duration::from_secs(30),
        ..LoadOptions::default()
    };
    let running = load::spawn(vec![base.clone()], agency.clone(), options);
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.stop_server();
    let down_at = Instant::now();
    let read = probe(
        &client,
        client
            .get(format!("{base}/v1/referrals"))
            .bearer_auth(&agency.token),
    )
    .await;
    let command = probe(
        &client,
        client
            .post(format!("{base}/v1/ambassadors"))
            .bearer_auth(&agency.token)
            .json(&serde_json::json!({"name": "Avery Ambassador", "email": "avery@example.com", "kind": "field_worker"})),
    )
    .await;
    let ready = probe(&client, client.get(format!("{base}/readyz"))).await;
    let remaining = OUTAGE.saturating_sub(down_at.elapsed());
    tokio::time::sleep(remaining).await;
    let alive_during_outage = server.is_running();
    cluster.start_server();

    // Recovery without help: the first read that succeeds, within 30 seconds.
    let restarted_at = Instant::now();
    let recovered_after = loop {
        let reply = client
            .get(format!("{base}/v1/referrals"))
            .bearer_auth(&agency.token)
            .send()
            .await;
        if reply.is_ok_and(|reply| reply.status() == StatusCode::OK) {
            break Some(restarted_at.elapsed());
        }
        if restarted_at.elapsed() > Duration::from_secs(30) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = running.await.unwrap();
    let caught_up = live::wait_for_catch_up(&database, Duration::from_secs(60)).await;
    println!(
        "outage: read 503 after {:?}, command 503 after {:?}, recovered {:?} after the restart; \
         load: {} accepted, rejected by status {:?}, {} without response",
        read.took,
        command.took,
        recovered_after,
        report.accepted.len(),
        report.rejected,
        report.transport_errors
    );

    // The server's errors explain a failure below; warnings about the outage are expected.
    for line in server.log_lines_containing("\"ERROR\"") {
        println!("server error: {line}");
    }

    for (name, probe) in [("read", &read), ("command", &command)] {
        assert_eq!(
            probe.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{name}: {}",
            probe.body
        );
        assert_eq!(probe.content_type, "application/problem+json", "{name}");
        assert_eq!(probe.body["code"], "database_unavailable", "{name}");
    }
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert!(alive_during_outage, "the server exited during the outage");
    assert!(server.is_running(), "the server exited after the outage");
    assert!(
        recovered_after.is_some(),
        "reads did not recover within 30 s"
    );
    assert!(
        caught_up.is_ok(),
        "projections did not recover: {caught_up:?}"
    );
    assert!(
        report.not_problem_json.is_empty(),
        "errors that are not problem+json: {:?}",
        report.not_problem_json
    );
    let unexpected: Vec<u16> = report
        .rejected
        .keys()
        .copied()
        .filter(|status| *status >= 500 && *status != 503)
        .collect();
    assert!(unexpected.is_empty(), "statuses: {:?}", report.rejected);
    assert!(report.rejected.contains_key(&503), "the load met no outage");
    assert!(report.count("approve") > 0, "the load approved no payout");

    assert!(server.terminate(), "the server did not stop cleanly");
    let mut connection = database.connect().await;
    checks::accepted_commands_are_stored(&mut connection, &report).await;
    checks::payouts_are_not_duplicated(&mut connection).await;
    checks::one_owner_per_candidate(&mut connection, &report).await;
    drop(connection);
    // The cluster is removed with the test, so the database need not be dropped.
    drop(cluster);
}
