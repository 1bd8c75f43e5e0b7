//! Drives the real `referrals` binary over loopback: a fresh database per test, server
//! processes that a test can kill and an agency with a signed-in user. `load` sends a
//! mixed command load, and `checks` asserts what the event store and read models contain
//! after it.

#![allow(dead_code)]

pub mod checks;
pub mod load;
pub mod mock_sendgrid;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use referrals_store::accounts::totp;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

/// The password of the bootstrapped admin.
const PASSWORD: &str = "correct horse battery staple";

/// How long a server may take from spawn to its `serving` log line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the `referrals` binary that cargo built for these tests.
pub fn referrals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_referrals"))
}

/// A fresh, migrated database on the server named by `DATABASE_URL` (or a URL given
/// explicitly), with a random master key for its servers.
pub struct Database {
    /// URL of the database.
    pub url: String,
    /// The database's name.
    pub name: String,
    /// URL of the same server's `postgres` database, for creating and dropping.
    admin_url: String,
    /// The master key in base64, shared by every server and command on this database.
    pub master_key: String,
}

impl Database {
    /// Creates and migrates a database on the server of `DATABASE_URL`.
    pub fn create(prefix: &str) -> Self {
        let base = std::env::var("DATABASE_URL").expect("DATABASE_URL must name the test server");
        Self::create_on(&base, prefix)
    }

    /// Creates and migrates a database on the server of `server_url` (any database name).
    pub fn create_on(server_url: &str, prefix: &str) -> Self {
        let (server, _) = server_url
            .rsplit_once('/')
            .expect("the database URL ends in /DATABASE");
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        let database = Self {
            url: format!("{server}/{name}"),
            name,
            admin_url: format!("{server}/postgres"),
            master_key: master_key(),
        };
        let migrate = database.command().arg("migrate").output().unwrap();
        assert!(
            migrate.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        database
    }

    /// Builds a `referrals` command with this database and master key in its environment.
    pub fn command(&self) -> Command {
        let mut command = referrals();
        command
            .env("DATABASE_URL", &self.url)
            .env("REFERRALS_MASTER_KEY", &self.master_key)
            .env_remove("REFERRALS_MASTER_KEY_FILE");
        command
    }

    /// Opens a connection to this database, for checks.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// Drops the database, disconnecting anything still connected.
    pub async fn drop_database(self) {
        let mut connection = PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut connection)
        .await
        .unwrap();
    }
}

fn master_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A `referrals serve` process. Its standard error is drained by a thread into `log`, so
/// the process never blocks on a full pipe.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The listening address, `127.0.0.1:PORT`, for a restart on the same port.
    pub address: String,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `referrals serve` with the projection workers on `bind` (`127.0.0.1:0` for
    /// any free port) and waits for it to listen.
    pub fn start(database: &Database, bind: &str) -> Self {
        Self::start_with(database, bind, &[])
    }

    /// Starts the server with extra arguments after `serve`.
    pub fn start_with(database: &Database, bind: &str, arguments: &[&str]) -> Self {
        Self::start_with_environment(database, bind, arguments, &[])
    }

    /// Starts the server with extra arguments after `serve` and extra environment
    /// variables.
    pub fn start_with_environment(
        database: &Database,
        bind: &str,
        arguments: &[&str],
        environment: &[(&str, String)],
    ) -> Self {
        let mut child = database
            .command()
            .arg("serve")
            .args(arguments)
            .envs(environment.iter().map(|(name, value)| (name, value)))
            .env("BIND_ADDR", bind)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_sender, address_receiver) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let entry: Value = serde_json::from_str(&line).unwrap_or_default();
                if entry["fields"]["message"] == "serving" {
                    let address = entry["fields"]["address"].as_str().unwrap_or_default();
                    let _ = address_sender.send(address.to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let address = match address_receiver.recv_timeout(START_TIMEOUT) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not start within {START_TIMEOUT:?}: {:?}",
                    log.lock().unwrap()
                );
            }
        };
        Self {
            child,
            base_url: format!("http://{address}"),
            address,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, without any shutdown, and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits up to 20 seconds for a clean exit; returns whether the
    /// process exited with status 0.
    pub fn terminate(mut self) -> bool {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Resident set size in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Log lines that contain `text`.
    pub fn log_lines_containing(&self, text: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that panics must not leave a server behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An agency whose admin also holds the recruiter and payout approver roles, signed in,
/// and one program with a hire bonus and a 40-hour bonus.
#[derive(Debug, Clone)]
pub struct Agency {
    /// The agency's id.
    pub agency_id: String,
    /// The admin's user id.
    pub user_id: String,
    /// The admin's session token.
    pub token: String,
    /// The program every referral of the load goes to.
    pub program_id: String,
}

/// Creates an agency with `referrals agency create`, accepts the invitation, signs in
/// with a TOTP code, grants the admin the recruiter and payout approver roles and creates
/// a program, all through `server`.
pub async fn bootstrap_agency(database: &Database, server: &Server) -> Agency {
    let email = format!("admin.{}@example.com", uuid::Uuid::now_v7().simple());
    let created = database
        .command()
        .args(["agency", "create", "--name", "Fault Test Staffing"])
        .args(["--admin-email", &email])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "agency create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let client = reqwest::Client::new();
    let base = &server.base_url;

    let accepted: Value = expect_success(
        client
            .post(format!("{base}/v1/auth/invitations/accept"))
            .json(&json!({"invite_token": created["invite_token"], "password": PASSWORD})),
    )
    .await;
    let secret = accepted["totp_secret"]
        .as_str()
        .expect("an agency admin gets a TOTP secret");
    let code = totp::code_at(secret, Utc::now()).unwrap();
    let session: Value = expect_success(
        client
            .post(format!("{base}/v1/auth/sessions"))
            .json(&json!({"email": email, "password": PASSWORD, "totp": code})),
    )
    .await;
    let token = session["token"].as_str().unwrap().to_owned();
    let user_id = created["admin_user_id"].as_str().unwrap().to_owned();

    expect_success(
        client
            .put(format!("{base}/v1/users/{user_id}/roles"))
            .bearer_auth(&token)
            .json(&json!({"roles": ["agency_admin", "recruiter", "payout_approver"]})),
    )
    .await;
    let program: Value = expect_success(
        client
            .post(format!("{base}/v1/programs"))
            .bearer_auth(&token)
            .json(&json!({
                "name": "Warehouse referrals",
                "terms": {"bonus_schedule": [
                    {"trigger": "hired", "threshold": 0, "amount": 10000},
                    {"trigger": "hours_worked", "threshold": 40, "amount": 20000}
                ]}
            })),
    )
    .await;

    Agency {
        agency_id: created["agency_id"].as_str().unwrap().to_owned(),
        user_id,
        token,
        program_id: program["id"].as_str().unwrap().to_owned(),
    }
}

async fn expect_success(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// One row of `referrals projections status --json`.
#[derive(Debug, serde::Deserialize)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub projection: String,
    /// Events after its checkpoint.
    pub events_behind: i64,
}

/// Runs `referrals projections status --json`.
pub fn projection_status(database: &Database) -> Vec<ProjectionStatus> {
    let output = database
        .command()
        .args(["projections", "status", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "projections status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Waits until every projection of a running server has no events behind, polling for at
/// most `timeout`. Returns the last status when the time runs out.
pub async fn wait_for_catch_up(
    database: &Database,
    timeout: Duration,
) -> Result<(), Vec<ProjectionStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = projection_status(database);
        if status.iter().all(|row| row.events_behind == 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
