//! The `referrals` binary as a user runs it: `migrate` against a database that does not
//! exist yet, twice, and the one-line reason on failure.

use std::process::Command;

use sqlx::{Connection, PgConnection};

fn referrals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_referrals"))
}

/// The server the test suite runs against, from `DATABASE_URL`, with another database name.
fn database_url(database: &str) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL must name the test server");
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL ends in /DATABASE");
    format!("{server}/{database}")
}

async fn drop_database(name: &str) {
    let mut connection = PgConnection::connect(&database_url("postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn migrate_creates_database_and_is_repeatable() {
    let name = format!("referrals_cli_{}", uuid::Uuid::now_v7().simple());
    let url = database_url(&name);

    for _ in 0..2 {
        let output = referrals()
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let mut connection = PgConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' ORDER BY table_name",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
    drop_database(&name).await;
    for table in ["events", "snapshots", "data_keys", "candidate_claims"] {
        assert!(
            tables.iter().any(|found| found == table),
            "{table} missing from {tables:?}"
        );
    }
}

#[test]
fn migrate_without_server_fails_with_one_line() {
    let output = referrals()
        .arg("migrate")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("referrals:"))
        .collect();
    assert_eq!(reason.len(), 1, "{stderr}");
    assert!(
        reason[0].contains("127.0.0.1:1"),
        "the reason names the server: {stderr}"
    );
}

#[test]
fn every_command_has_help() {
    for command in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["demo", "--help"],
        vec!["keys", "rotate", "--help"],
    ] {
        let output = referrals().args(&command).output().unwrap();
        assert!(output.status.success(), "{command:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{command:?}"
        );
    }
}

#[tokio::test]
async fn projections_status_and_rebuild_run() {
    let name = format!("referrals_cli_{}", uuid::Uuid::now_v7().simple());
    let url = database_url(&name);
    let migrate = referrals()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let status = referrals()
        .args(["projections", "status", "--json"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let rebuild = referrals()
        .args(["projections", "rebuild", "referral_board"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let schedule = referrals()
        .args(["projections", "rebuild", "referral_schedule"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let outbox = referrals()
        .args(["projections", "rebuild", "notification_outbox"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let unknown = referrals()
        .args(["projections", "rebuild", "no_such_view"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    drop_database(&name).await;

    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["projection"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"referral_board"), "{names:?}");
    assert!(names.contains(&"payout_requester"), "{names:?}");
    assert!(names.contains(&"referral_schedule"), "{names:?}");
    assert!(names.contains(&"notification_outbox"), "{names:?}");
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    assert!(
        String::from_utf8_lossy(&rebuild.stdout).contains("referral_board: rebuilt from 0 events")
    );
    assert!(
        schedule.status.success(),
        "{}",
        String::from_utf8_lossy(&schedule.stderr)
    );
    assert!(String::from_utf8_lossy(&schedule.stdout)
        .contains("referral_schedule: rebuilt from 0 events"));
    assert_eq!(outbox.status.code(), Some(1));
    let outbox_reason = String::from_utf8_lossy(&outbox.stderr);
    assert!(
        outbox_reason.contains("notification_outbox cannot be rebuilt"),
        "{outbox_reason}"
    );
    assert!(
        outbox_reason.contains("second time"),
        "the reason says why: {outbox_reason}"
    );
    assert_eq!(unknown.status.code(), Some(1));
    let reason = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        reason.contains("unknown projection \"no_such_view\""),
        "{reason}"
    );
    assert!(
        reason.contains("referral_board"),
        "the reason lists the known names: {reason}"
    );
}

fn master_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn serve_answers_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::time::{Duration, Instant};

    let name = format!("referrals_cli_{}", uuid::Uuid::now_v7().simple());
    let url = database_url(&name);
    let migrate = referrals()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let mut server = referrals()
        .args(["serve", "--no-workers"])
        .env("DATABASE_URL", &url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("REFERRALS_MASTER_KEY", master_key())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The log line that announces the listening address, within ten seconds.
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let address = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not start"
        );
        let line = lines.next().expect("the server exited").unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if entry["fields"]["message"] == "serving" {
            break entry["fields"]["address"].as_str().unwrap().to_owned();
        }
    };
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    drop_database(&name).await;

    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(killed.success());
    assert!(status.success(), "exit status {status:?}");
    assert!(
        rest.iter().any(|line| line.contains("\"stopped\"")),
        "{rest:?}"
    );
}

#[tokio::test]
async fn agency_and_operator_create_print_json() {
    let name = format!("referrals_cli_{}", uuid::Uuid::now_v7().simple());
    let url = database_url(&name);
    let migrate = referrals()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let key = master_key();

    let agency = referrals()
        .args([
            "agency",
            "create",
            "--name",
            "Northwind Staffing",
            "--admin-email",
            "admin@example.com",
        ])
        .env("DATABASE_URL", &url)
        .env("REFERRALS_MASTER_KEY", &key)
        .output()
        .unwrap();
    let operator = referrals()
        .args(["operator", "create", "--email", "operator@example.com"])
        .env("DATABASE_URL", &url)
        .env("REFERRALS_MASTER_KEY", &key)
        .output()
        .unwrap();
    let without_key = referrals()
        .args(["operator", "create", "--email", "other@example.com"])
        .env("DATABASE_URL", &url)
        .env_remove("REFERRALS_MASTER_KEY")
        .env_remove("REFERRALS_MASTER_KEY_FILE")
        .output()
        .unwrap();
    drop_database(&name).await;

    assert!(
        agency.status.success(),
        "{}",
        String::from_utf8_lossy(&agency.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&agency.stdout).unwrap();
    for field in ["agency_id", "admin_user_id", "invite_token"] {
        assert!(created[field].is_string(), "{field} missing: {created}");
    }
    assert!(
        operator.status.success(),
        "{}",
        String::from_utf8_lossy(&operator.stderr)
    );
    let invited: serde_json::Value = serde_json::from_slice(&operator.stdout).unwrap();
    assert!(
        invited["user_id"].is_string() && invited["invite_token"].is_string(),
        "{invited}"
    );
    assert_eq!(without_key.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without_key.stderr).contains("REFERRALS_MASTER_KEY"));
}

#[tokio::test]
async fn keys_rotate_rewraps_and_rejects_missing_file() {
    let name = format!("referrals_cli_{}", uuid::Uuid::now_v7().simple());
    let url = database_url(&name);
    let migrate = referrals()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let old_key = master_key();
    // Creating an agency stores the admin's data key, wrapped by the old master key.
    let agency = referrals()
        .args([
            "agency",
            "create",
            "--name",
            "Northwind Staffing",
            "--admin-email",
            "admin@example.com",
        ])
        .env("DATABASE_URL", &url)
        .env("REFERRALS_MASTER_KEY", &old_key)
        .output()
        .unwrap();
    let new_key_file = std::env::temp_dir().join(format!("{name}.key"));
    std::fs::write(&new_key_file, master_key()).unwrap();
    let rotate = |key_file: &std::path::Path| {
        referrals()
            .args(["keys", "rotate", "--new-key-file"])
            .arg(key_file)
            .env("DATABASE_URL", &url)
            .env("REFERRALS_MASTER_KEY", &old_key)
            .output()
            .unwrap()
    };
    let rotated = rotate(&new_key_file);
    let missing = rotate(&new_key_file.with_extension("missing"));
    let mut connection = PgConnection::connect(&url).await.unwrap();
    let key_ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT master_key_id FROM data_keys WHERE destroyed_at IS NULL
         UNION SELECT DISTINCT master_key_id FROM agency_keys",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
    std::fs::remove_file(&new_key_file).unwrap();
    drop_database(&name).await;

    assert!(
        agency.status.success(),
        "{}",
        String::from_utf8_lossy(&agency.stderr)
    );
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let summary = String::from_utf8_lossy(&rotated.stdout);
    assert!(summary.contains("re-wrapped"), "{summary}");
    assert!(summary.contains(", 0 by the old key"), "{summary}");
    assert_eq!(
        key_ids.len(),
        1,
        "every key is under the new master key: {key_ids:?}"
    );
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    let reason: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("referrals:"))
        .collect();
    assert_eq!(reason.len(), 1, "{stderr}");
    assert!(reason[0].contains("new master key"), "{stderr}");
    assert!(
        reason[0].contains(".missing"),
        "the reason names the file: {stderr}"
    );
}

/// Inserts `count` events of one new agency directly, one aggregate each, with a payload
/// of realistic size; returns the agency id.
async fn insert_events(url: &str, count: i64) -> String {
    let agency = uuid::Uuid::now_v7().to_string();
    let mut connection = PgConnection::connect(url).await.unwrap();
    sqlx::query(
        r#"INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
           SELECT 'referral', $1 || '-' || n, 1, 'HoursRecorded', '1.0',
                  json_build_object('HoursRecorded', json_build_object(
                      'week_ending', '2026-11-27', 'hours', '38.50', 'total_hours', '412.25',
                      'note', repeat('x', 200), 'n', n)),
                  json_build_object('agency_id', $1, 'actor_id', 'system', 'actor_role', 'system:test',
                      'correlation_id', $1, 'causation_id', $1, 'request_id', $1,
                      'recorded_at', '2026-11-28T14:03:11.512Z')
             FROM generate_series(1, $2) AS n"#,
    )
    .bind(&agency)
    .bind(count)
    .execute(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
    agency
}

/// Runs `referrals audit export --agency` and returns the lines written and the peak
/// memory it reports.
fn export_and_measure(url: &str, agency: &str) -> (u64, u64) {
    use std::io::Read;

    let mut child = referrals()
        .args(["audit", "export", "--agency", agency])
        .env("DATABASE_URL", url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buffer = vec![0u8; 1 << 16];
    let mut lines = 0u64;
    loop {
        let read = stdout.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        lines += buffer[..read].iter().filter(|byte| **byte == b'\n').count() as u64;
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let peak = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| entry["fields"]["message"] == "export finished")
        .and_then(|entry| entry["fields"]["peak_rss_kib"].as_u64())
        .expect("the export reports its peak memory");
    (lines, peak)
}

#[tokio::test]
async fn export_memory_stays_flat() {
    let name = format!("referrals_cli_{}", uuid::Uuid::now_v7().simple());
    let url = database_url(&name);
    let migrate = referrals()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let small = insert_events(&url, 20_000).await;
    let large = insert_events(&url, 200_000).await;

    let (small_lines, small_peak) = export_and_measure(&url, &small);
    let (large_lines, large_peak) = export_and_measure(&url, &large);
    drop_database(&name).await;

    eprintln!(
        "export peak memory: {small_peak} KiB for 20,000 events, {large_peak} KiB for 200,000"
    );
    assert_eq!(small_lines, 20_000);
    assert_eq!(large_lines, 200_000);
    // Ten times the events may not cost more than half again the memory: rows stream
    // through, so the peak is set by buffers, not by the number of events.
    assert!(
        large_peak * 2 <= small_peak * 3,
        "peak memory grew from {small_peak} KiB to {large_peak} KiB"
    );
}
