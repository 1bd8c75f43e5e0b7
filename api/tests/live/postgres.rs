//! A private PostgreSQL cluster in a temporary directory on a free loopback port, which a
//! test may stop and start without touching the shared server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A cluster created with `initdb`, with trust authentication for user `postgres`.
pub struct PrivateCluster {
    bin_dir: PathBuf,
    directory: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl PrivateCluster {
    /// Creates and starts a cluster. The server programs come from the newest
    /// `/usr/lib/postgresql/VERSION/bin` (the Debian layout), or `PG_BIN_DIR` when set.
    pub fn start() -> Self {
        let bin_dir = std::env::var_os("PG_BIN_DIR")
            .map(PathBuf::from)
            .or_else(newest_debian_bin_dir)
            .expect("no PostgreSQL server programs: install postgresql or set PG_BIN_DIR");
        let directory =
            std::env::temp_dir().join(format!("referrals-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&directory).unwrap();
        let cluster = Self {
            bin_dir,
            port: free_port(),
            directory,
        };
        if running_as_root() {
            // initdb and postgres exit with an error when run as root.
            let chown = Command::new("chown")
                .args(["postgres:", cluster.directory.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(chown.success(), "chown of the cluster directory failed");
        }
        let data = cluster.data_dir();
        let initdb = cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
            ],
        );
        assert!(initdb.status.success(), "initdb failed: {}", text(&initdb));
        cluster.start_server();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections (at most 30 seconds).
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=100",
            self.port,
            self.directory.to_str().unwrap()
        );
        let log = self.directory.join("postgres.log");
        let started = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}",
            text(&started)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private cluster did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with `pg_ctl stop -m fast`: open connections are terminated, as in
    /// a restart or a failover.
    pub fn stop_server(&self) {
        let stopped = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(
            stopped.status.success(),
            "pg_ctl stop failed: {}",
            text(&stopped)
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.directory.join("data")
    }

    /// Runs a server program, as user `postgres` when this process is root.
    fn run(&self, program: &str, arguments: &[&str]) -> Output {
        let path = self.bin_dir.join(program);
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.args(arguments).current_dir("/").output().unwrap()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Finds a port that is free at this moment. Another process may take it before
/// PostgreSQL binds it, and then `pg_ctl start` fails with a clear message.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn newest_debian_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            Path::new(&bin.join("initdb"))
                .exists()
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
