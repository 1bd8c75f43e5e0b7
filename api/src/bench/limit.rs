//! PostgreSQL's own limit for event appends, measured with the vendored pgbench kit in
//! `bench/pgbench/`. The scripts are embedded in the binary and written to a temporary
//! folder, so the bench runs from any directory.

use anyhow::{bail, Context};

use super::Profile;

/// The kit's files, by name.
const KIT: &[(&str, &str)] = &[
    (
        "run-limit.sh",
        include_str!("../../../bench/pgbench/run-limit.sh"),
    ),
    (
        "schema.sql",
        include_str!("../../../bench/pgbench/schema.sql"),
    ),
    (
        "populate_streams.sql",
        include_str!("../../../bench/pgbench/populate_streams.sql"),
    ),
    (
        "append.sql",
        include_str!("../../../bench/pgbench/append.sql"),
    ),
    (
        "read_then_append.sql",
        include_str!("../../../bench/pgbench/read_then_append.sql"),
    ),
    (
        "payload.json",
        include_str!("../../../bench/pgbench/payload.json"),
    ),
    (
        "metadata.json",
        include_str!("../../../bench/pgbench/metadata.json"),
    ),
];

/// One line of `run-limit.sh`: a workload at a client count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LimitResult {
    /// `append` or `read_then_append`.
    pub workload: String,
    pub clients: usize,
    /// Transactions per second.
    pub tps: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Runs `run-limit.sh` against the scratch database at every client level.
pub(crate) async fn measure(
    database_url: &str,
    profile: &Profile,
) -> anyhow::Result<Vec<LimitResult>> {
    let folder = tempfile::tempdir().context("creating a folder for the pgbench kit")?;
    for (name, text) in KIT {
        std::fs::write(folder.path().join(name), text)
            .with_context(|| format!("writing the pgbench kit's {name}"))?;
    }
    let mut command = std::process::Command::new("bash");
    command
        .arg(folder.path().join("run-limit.sh"))
        .arg(database_url)
        .arg(profile.limit_seconds.to_string())
        .args(profile.client_levels.iter().map(ToString::to_string));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running bash for the pgbench kit; is bash installed?")?;
    if !output.status.success() {
        bail!(
            "the pgbench kit failed (pgbench and psql must be installed): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results: Vec<LimitResult> = stdout.lines().filter_map(parse_line).collect();
    if results.is_empty() {
        bail!("the pgbench kit printed no `limit` line: {stdout}");
    }
    Ok(results)
}

/// Parses `limit workload=append clients=16 tps=8546.5 p50_ms=1.479 p95_ms=3.349 p99_ms=6.448`.
fn parse_line(line: &str) -> Option<LimitResult> {
    let mut fields = line.strip_prefix("limit ")?.split_whitespace();
    let mut value = |key: &str| {
        fields
            .next()
            .and_then(|field| field.strip_prefix(key))
            .and_then(|field| field.strip_prefix('='))
            .map(str::to_owned)
    };
    Some(LimitResult {
        workload: value("workload")?,
        clients: value("clients")?.parse().ok()?,
        tps: value("tps")?.parse().ok()?,
        p50_ms: value("p50_ms")?.parse().ok()?,
        p95_ms: value("p95_ms")?.parse().ok()?,
        p99_ms: value("p99_ms")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn limit_line_parses() {
        let result = parse_line(
            "limit workload=read_then_append clients=16 tps=4800.5 p50_ms=1.5 p95_ms=3.25 p99_ms=6.5",
        )
        .expect("a limit line");
        assert_eq!(result.workload, "read_then_append");
        assert_eq!(result.clients, 16);
        assert_eq!(result.tps, 4800.5);
        assert_eq!(result.p99_ms, 6.5);
        assert!(parse_line("tps = 12").is_none());
    }
}
