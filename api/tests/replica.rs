//! List endpoints on a streaming replica (`DATABASE_READ_URL`): a private primary and
//! standby on loopback, started by tests/replica-cluster.sh. Commands land on the
//! primary, and lists show what the standby has replayed, which the test holds back by
//! pausing the replay.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{TestAgency, TestApi};
use referrals_projections::models;
use referrals_projections::runner::ProjectionRunner;
use referrals_projections::status::projection_status;
use referrals_store::replica::replica_lag;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower::ServiceExt;

const CLUSTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/replica-cluster.sh");

/// A private primary and standby, stopped and deleted on drop.
struct Clusters {
    directory: PathBuf,
    primary_url: String,
    standby_url: String,
}

impl Clusters {
    fn start() -> Self {
        let directory = std::env::temp_dir().join(format!(
            "referrals_replica_{}",
            uuid::Uuid::now_v7().simple()
        ));
        let output = Command::new("bash")
            .arg(CLUSTER_SCRIPT)
            .arg("start")
            .arg(&directory)
            .output()
            .unwrap();
        let mut clusters = Self {
            directory,
            primary_url: String::new(),
            standby_url: String::new(),
        };
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some(url) = line.strip_prefix("PRIMARY_URL=") {
                clusters.primary_url = url.to_owned();
            } else if let Some(url) = line.strip_prefix("STANDBY_URL=") {
                clusters.standby_url = url.to_owned();
            }
        }
        clusters
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(CLUSTER_SCRIPT)
            .arg("stop")
            .arg(&self.directory)
            .status();
    }
}

async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(5)
        .connect(url)
        .await
        .unwrap()
}

async fn create_program(api: &TestApi, agency: &TestAgency, name: &str) {
    let reply = api
        .call(
            Method::POST,
            "/v1/programs",
            Some(&agency.admin_token),
            Some(json!({
                "name": name,
                "terms": {"bonus_schedule": [
                    {"trigger": "hired", "threshold": 0, "amount": 10000}
                ]}
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

async fn program_names(api: &TestApi, agency: &TestAgency) -> Vec<String> {
    let reply = api
        .call(Method::GET, "/v1/programs", Some(&agency.admin_token), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let mut names: Vec<String> = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|program| program["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Applies every event on the primary to every read model. The private cluster runs no
/// other transactions, so one pass each is enough.
async fn catch_up(primary: &PgPool) {
    let runner = ProjectionRunner::new(primary.clone());
    for projection in models::all() {
        runner.catch_up(projection.as_ref()).await.unwrap();
        let status = &projection_status(primary, &[projection.name()])
            .await
            .unwrap()[0];
        assert_eq!(status.events_behind, 0, "{} is behind", status.name);
    }
}

/// Waits up to 15 s until the standby has replayed everything the primary wrote.
async fn wait_replayed(primary: &PgPool, standby: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lag = replica_lag(primary, standby).await.unwrap();
        assert!(lag.is_standby, "the read database is not a standby");
        if lag.bytes == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby is still {} bytes behind after 15 s",
            lag.bytes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fetches /metrics, which is Prometheus text rather than the JSON that `TestApi::call`
/// parses.
async fn metrics_text(api: &TestApi) -> String {
    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn replica_serves_lists_commands_hit_primary() {
    let clusters = Clusters::start();
    let primary = connect(&clusters.primary_url).await;
    referrals_store::database::MIGRATOR
        .run(&primary)
        .await
        .unwrap();
    let standby = connect(&clusters.standby_url).await;
    let api = TestApi::with_read_pool(&primary, &standby);
    let agency = api.agency().await;

    create_program(&api, &agency, "First").await;
    catch_up(&primary).await;
    wait_replayed(&primary, &standby).await;
    assert_eq!(program_names(&api, &agency).await, ["First"]);

    // While the standby replays nothing, a command still lands on the primary, and the
    // list, read from the standby, does not show it yet.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&standby)
        .await
        .unwrap();
    create_program(&api, &agency, "Second").await;
    catch_up(&primary).await;
    let on_primary: i64 = sqlx::query_scalar("SELECT count(*) FROM read_models.programs")
        .fetch_one(&primary)
        .await
        .unwrap();
    assert_eq!(on_primary, 2);
    assert_eq!(program_names(&api, &agency).await, ["First"]);

    let metrics_text = metrics_text(&api).await;
    let lag_bytes = metric(&metrics_text, "read_replica_lag_bytes");
    assert!(
        lag_bytes.is_some_and(|bytes| bytes > 0.0),
        "read_replica_lag_bytes is {lag_bytes:?}"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_referrals"))
        .args(["projections", "status", "--json"])
        .env("DATABASE_URL", &clusters.primary_url)
        .env("DATABASE_READ_URL", &clusters.standby_url)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["replica"]["is_standby"], true);
    assert!(
        report["replica"]["replay_lag_bytes"].as_f64().unwrap() > 0.0,
        "{report}"
    );

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&standby)
        .await
        .unwrap();
    wait_replayed(&primary, &standby).await;
    assert_eq!(program_names(&api, &agency).await, ["First", "Second"]);

    let (read_database, metrics_reply) = serve_and_scrape(&clusters);
    let standby_port = clusters.standby_url.split(':').nth(2).unwrap();
    let standby_port = standby_port.split('/').next().unwrap();
    assert_eq!(read_database, format!("127.0.0.1:{standby_port}/postgres"));
    assert!(metrics_reply.starts_with("HTTP/1.1 200"), "{metrics_reply}");
    assert!(
        metrics_reply.contains("read_replica_lag_bytes"),
        "{metrics_reply}"
    );
}

/// Runs `referrals serve --no-workers` with both URLs, scrapes /metrics once and stops it
/// with SIGTERM. Returns the read database that its "serving" log line names, and the
/// raw HTTP reply.
fn serve_and_scrape(clusters: &Clusters) -> (String, String) {
    use std::io::{BufRead, BufReader, Read, Write};

    let mut server = Command::new(env!("CARGO_BIN_EXE_referrals"))
        .args(["serve", "--no-workers"])
        .env("DATABASE_URL", &clusters.primary_url)
        .env("DATABASE_READ_URL", &clusters.standby_url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("REFERRALS_MASTER_KEY", master_key())
        .env_remove("TLS_CERT_FILE")
        .env_remove("TLS_KEY_FILE")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let serving = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not start"
        );
        let line = lines.next().expect("the server exited").unwrap();
        let entry: Value = serde_json::from_str(&line).unwrap_or_default();
        if entry["fields"]["message"] == "serving" {
            break entry;
        }
    };
    let address = serving["fields"]["address"].as_str().unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let read_database = serving["fields"]["read_database"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (read_database, reply)
}

fn master_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
