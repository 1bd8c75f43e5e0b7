//! `referrals bench --quick` through the binary, as a smoke test: the run finishes, the
//! report has every section and keeps the hand-written notes of an earlier report, and
//! the scratch database is gone afterwards. No assertion is made on any measured number,
//! because timings depend on the machine.

use std::process::Command;

use sqlx::{Connection, PgConnection};

/// The marker line of `referrals bench`'s report, after which it keeps hand-written text.
const HAND_WRITTEN_MARKER: &str =
    "<!-- Written by hand below this line: `referrals bench` keeps it when it rewrites the file. -->";

const SECTIONS: &[&str] = &[
    "# Benchmarks",
    "**This is a quick run**",
    "## Machine",
    "## PostgreSQL limit",
    "## HTTP commands",
    "## Projections",
    "## Audit export",
    "## As-of reconstruction",
    "## Server memory",
    "## Targets",
];

#[tokio::test]
async fn quick_bench_writes_every_section() {
    let database_url =
        std::env::var("DATABASE_URL").expect("DATABASE_URL must name the test server");
    let folder = tempfile::tempdir().unwrap();
    let report_path = folder.path().join("BENCHMARKS.md");
    // An earlier report with notes below the marker: the run must keep the notes and
    // replace the figures above them.
    std::fs::write(
        &report_path,
        format!(
            "# Benchmarks\n\nstale figures\n\n{HAND_WRITTEN_MARKER}\n\n## Notes\n\nkept by hand\n"
        ),
    )
    .unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_referrals"))
        .args(["bench", "--quick", "--output"])
        .arg(&report_path)
        .env("DATABASE_URL", &database_url)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");

    let report = std::fs::read_to_string(&report_path).expect("the report is written");
    for section in SECTIONS {
        assert!(
            report.contains(section),
            "{section} missing from:\n{report}"
        );
    }
    for workload in [
        "| append | 16 |",
        "| read_then_append | 16 |",
        "| read_then_append | 64 |",
    ] {
        assert!(
            report.contains(workload),
            "{workload} missing from:\n{report}"
        );
    }
    for target in [
        "of read_then_append",
        "p99 at 16 clients",
        "rebuild ≥",
        "export ≥",
        "as-of <",
    ] {
        assert!(
            report.contains(target),
            "target {target} missing from:\n{report}"
        );
    }

    assert!(!report.contains("stale figures"), "{report}");
    assert!(
        report.ends_with(&format!(
            "{HAND_WRITTEN_MARKER}\n\n## Notes\n\nkept by hand\n"
        )),
        "the hand-written notes were not kept:\n{report}"
    );
    assert_eq!(report.matches("# Benchmarks").count(), 1, "{report}");

    let scratch = log
        .split("created scratch database ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the log names the scratch database");
    let mut connection = PgConnection::connect(&database_url).await.unwrap();
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(scratch)
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(!left, "the scratch database {scratch} was not dropped");
}
