//! `referrals demo` end to end through the binary: the first run loads a small data set
//! and prints logins and requests that work as printed; SIGTERM stops it cleanly; the
//! second run reuses the loaded data and prints the same logins.
//!
//! The printed requests run through `sh` and `curl`, as a person would paste them, so
//! the test needs both on PATH. It uses its own database, `referrals_demo_e2e`, and a
//! temporary working directory for `.data/`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

const DATABASE: &str = "referrals_demo_e2e";
/// Time allowed for a run to load its data and print its requests.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Time allowed for a run to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The server URL with its database name replaced by `database`.
fn database_url(database: &str) -> String {
    let url = server_url();
    let without_query = url.split('?').next().unwrap_or(&url);
    let base = without_query
        .rsplit_once('/')
        .map_or(without_query, |(base, _)| base);
    format!("{base}/{database}")
}

async fn drop_database() {
    let mut connection = PgConnection::connect(&server_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .unwrap();
}

/// A running `referrals demo` and the lines it printed up to its last request.
struct DemoRun {
    child: Child,
    output: Vec<String>,
}

fn start_demo(directory: &std::path::Path) -> DemoRun {
    let stderr = std::fs::File::create(directory.join("demo.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_referrals"))
        .args(["demo", "--scale", "0.01", "--bind", "127.0.0.1:0"])
        .current_dir(directory)
        .env("DATABASE_URL", database_url(DATABASE))
        .env_remove("REFERRALS_MASTER_KEY")
        .env_remove("REFERRALS_MASTER_KEY_FILE")
        .env_remove("BIND_ADDR")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();

    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + START_TIMEOUT;
    let mut output = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let last = line.trim_start().starts_with("TOKEN=");
                output.push(line);
                if last {
                    break;
                }
            }
            Err(error) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(directory.join("demo.log")).unwrap_or_default();
                panic!("the demo printed no requests ({error}); output: {output:#?}; log: {log}");
            }
        }
    }
    DemoRun { child, output }
}

fn stop_demo(mut run: DemoRun) {
    let status = Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "the demo exited with {status} after SIGTERM"
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = run.child.kill();
            panic!("the demo did not exit within {STOP_TIMEOUT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a printed command line through `sh` and returns its standard output.
fn run_printed(command: &str) -> String {
    let output = Command::new("sh").args(["-c", command]).output().unwrap();
    assert!(output.status.success(), "{command} failed: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a printed list request until its page has items, at most 30 times a second
/// apart. The demo applies the loaded events to the read models before it serves, but a
/// transaction of another session on the same PostgreSQL server can hold some of them
/// back until it ends.
fn run_until_items(command: &str) -> String {
    let mut output = String::new();
    for _ in 0..30 {
        output = run_printed(command);
        if output.contains("\"items\":[{") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    output
}

/// The printed request lines, in order.
fn requests(output: &[String]) -> Vec<String> {
    output
        .iter()
        .map(|line| line.trim())
        .filter(|line| line.starts_with("curl ") || line.starts_with("TOKEN="))
        .map(str::to_owned)
        .collect()
}

/// The login lines between "Demo logins" and the blank line after them.
fn logins(output: &[String]) -> Vec<String> {
    output
        .iter()
        .skip_while(|line| !line.starts_with("Demo logins"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .cloned()
        .collect()
}

#[tokio::test]
async fn demo_loads_serves_and_reuses_data() {
    drop_database().await;
    let directory = std::env::temp_dir().join(format!("referrals-demo-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();

    let first = start_demo(&directory);
    assert!(
        first
            .output
            .iter()
            .any(|line| line.starts_with("Loading the demo data set")),
        "{:#?}",
        first.output
    );
    let first_logins = logins(&first.output);
    let roles: Vec<&str> = first_logins
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        roles,
        [
            "agency_admin",
            "recruiter",
            "payout_approver",
            "compliance_auditor",
            "analyst",
            "platform_operator"
        ]
    );
    assert!(directory.join(".data/master.key").exists());
    assert!(directory.join(".data/demo-logins.json").exists());

    let printed = requests(&first.output);
    assert_eq!(printed.len(), 3, "{printed:#?}");
    let readiness = run_printed(&printed[0]);
    assert!(readiness.contains("\"status\":\"ok\""), "{readiness}");
    let session = run_printed(&printed[1]);
    assert!(session.contains("\"token\":\"rfs_"), "{session}");
    let referrals = run_until_items(&printed[2]);
    assert!(referrals.contains("\"items\":[{"), "{referrals}");
    stop_demo(first);

    let second = start_demo(&directory);
    assert!(
        second
            .output
            .iter()
            .any(|line| line.contains("already loaded")),
        "{:#?}",
        second.output
    );
    assert_eq!(logins(&second.output), first_logins);
    let referrals = run_until_items(&requests(&second.output)[2]);
    assert!(referrals.contains("\"items\":[{"), "{referrals}");
    stop_demo(second);

    drop_database().await;
    let _ = std::fs::remove_dir_all(&directory);
}
