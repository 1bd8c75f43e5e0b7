//! Mixed load at a moderate rate for a while, sampling the server's resident memory and
//! its PostgreSQL connections, which must stay flat. CI runs 20 seconds. `tests/soak.sh`
//! runs ten minutes with the same test through `SOAK_SECONDS`.

mod live;

use std::time::{Duration, Instant};

use live::load::{self, LoadOptions};
use live::{Database, Server};

/// Connections one server may hold: the pool size of `referrals serve`.
const POOL_SIZE: i64 = 20;

fn env_seconds(name: &str, default: u64) -> Duration {
    let seconds = std::env::var(name)
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name} must be whole seconds, not {text:?}"))
        })
        .unwrap_or(default);
    Duration::from_secs(seconds)
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    connections: i64,
}

/// Returns the mean of the first and the last quarter of `values`, and whether the last
/// is at most `tolerance` times the first. The first sample is skipped because it is
/// taken before the load warms up.
fn trend(values: &[f64], tolerance: f64) -> (f64, f64, bool) {
    let steady = &values[1.min(values.len() - 1)..];
    let quarter = (steady.len() / 4).max(1);
    let mean = |part: &[f64]| part.iter().sum::<f64>() / part.len() as f64;
    let first = mean(&steady[..quarter]);
    let last = mean(&steady[steady.len() - quarter..]);
    (first, last, last <= first * tolerance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_keeps_memory_and_connections_flat() {
    let duration = env_seconds("SOAK_SECONDS", 20);
    let interval = env_seconds("SOAK_SAMPLE_SECONDS", 2);
    let database = Database::create("referrals_soak");
    let mut server = Server::start(&database, "127.0.0.1:0");
    let agency = live::bootstrap_agency(&database, &server).await;
    let mut monitor = database.connect().await;

    // Two clients with a 50 ms pause after each request: a moderate, steady rate.
    let options = LoadOptions {
        tasks: 2,
        referrals_per_task: usize::MAX,
        duration,
        pause: Duration::from_millis(50),
        ..LoadOptions::default()
    };
    let started = Instant::now();
    let running = load::spawn(vec![server.base_url.clone()], agency, options);
    let mut samples = Vec::new();
    while !running.is_finished() {
        let connections: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut monitor)
        .await
        .unwrap();
        let sample = Sample {
            at: started.elapsed(),
            rss_kib: server.rss_kib().expect("the server's /proc status"),
            connections,
        };
        println!(
            "soak t={:>5.0}s rss={:>7} KiB connections={:>3}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.connections
        );
        samples.push(sample);
        tokio::time::sleep(interval).await;
    }
    let report = running.await.unwrap();
    let alive = server.is_running();
    assert!(server.terminate(), "the server did not stop cleanly");
    drop(monitor);
    database.drop_database().await;

    let rss: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64).collect();
    let connections: Vec<f64> = samples.iter().map(|s| s.connections as f64).collect();
    let (rss_first, rss_last, rss_flat) = trend(&rss, 1.5);
    let (connections_first, connections_last, _) = trend(&connections, 1.5);
    let max_connections = samples.iter().map(|s| s.connections).max().unwrap_or(0);
    println!(
        "soak summary: {:.0} s, {} commands accepted ({:.1}/s), rejected by status {:?}; \
         RSS mean {:.0} KiB in the first quarter, {:.0} KiB in the last ({}); \
         connections {:.1} then {:.1}, at most {max_connections} (pool {POOL_SIZE})",
        report.elapsed.as_secs_f64(),
        report.accepted.len(),
        report.throughput(),
        report.rejected,
        rss_first,
        rss_last,
        if rss_flat { "flat" } else { "GROWING" },
        connections_first,
        connections_last,
    );

    assert!(alive, "the server exited during the soak");
    assert!(samples.len() >= 3, "too few samples: {}", samples.len());
    assert!(report.count("approve") > 0, "the load approved no payout");
    assert!(
        report.rejected.keys().all(|status| *status < 500),
        "5xx responses: {:?}",
        report.rejected
    );
    assert!(
        max_connections <= POOL_SIZE,
        "{max_connections} connections, more than the pool of {POOL_SIZE}"
    );
    // NOTE: 1.5 times is a loose bound for short runs, where allocator arenas still
    // grow; the ten-minute run's printed figures are the real measure.
    assert!(
        rss_flat,
        "RSS grew from {rss_first:.0} to {rss_last:.0} KiB"
    );
}
