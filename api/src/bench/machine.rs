//! The machine and database server the numbers were measured on.

use sqlx::PgPool;

/// What the report says about the machine.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: Option<f64>,
    /// The 1-minute load average when the run started, a hint of other work on the machine.
    pub load_average: Option<String>,
    pub postgres_version: String,
    pub fsync: String,
    pub synchronous_commit: String,
    pub git_commit: String,
    /// "release" or "debug (unoptimized)", the build of the binary that measured.
    pub build: &'static str,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// Reads the machine's details from `/proc`, the server's from `SHOW`, and the commit
/// from `git` in the current directory ("unknown" where one is unavailable).
pub(crate) async fn describe(pool: &PgPool) -> anyhow::Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(
            || "unknown".to_owned(),
            |(_, model)| model.trim().to_owned(),
        );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map(|kib| kib / 1024.0 / 1024.0);
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned));

    let postgres_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(pool)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(pool).await?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(pool)
        .await?;

    Ok(Machine {
        cpu_model,
        cores,
        memory_gib,
        load_average,
        postgres_version,
        fsync,
        synchronous_commit,
        git_commit: git_commit(),
        build: if cfg!(debug_assertions) {
            "debug (unoptimized)"
        } else {
            "release"
        },
        started_at: chrono::Utc::now(),
    })
}

/// The checked-out commit, with " (modified)" when the work tree has changes.
fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => match run(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{commit} (modified)"),
            _ => commit,
        },
        None => "unknown".to_owned(),
    }
}
