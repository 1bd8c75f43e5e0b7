//! The Markdown report of a bench run.

use std::fmt::Write;

use super::Results;

/// Throughput of HTTP commands at 16 clients, as a share of `read_then_append` at 16.
const TARGET_COMMAND_RATIO: f64 = 0.5;
const TARGET_COMMAND_P99_MS: f64 = 20.0;
const TARGET_REBUILD_EVENTS_PER_SECOND: f64 = 30_000.0;
const TARGET_EXPORT_EVENTS_PER_SECOND: f64 = 100_000.0;
const TARGET_AS_OF_MS: f64 = 10.0;
/// The client count the command target is stated for.
const TARGET_CLIENTS: usize = 16;

/// The line after which the report contains text written by hand (notes on a run, the soak
/// figures). A run replaces everything above it and keeps everything from it on.
pub(crate) const HAND_WRITTEN_MARKER: &str =
    "<!-- Written by hand below this line: `referrals bench` keeps it when it rewrites the file. -->";

/// Renders the report. Every section heading is always present, so a reader (and the
/// smoke test) finds the same structure in quick and full runs.
pub(crate) fn render(results: &Results) -> String {
    let mut out = String::new();
    header(&mut out, results);
    machine(&mut out, results);
    limit(&mut out, results);
    http(&mut out, results);
    projections(&mut out, results);
    export(&mut out, results);
    as_of(&mut out, results);
    memory(&mut out, results);
    targets(&mut out, results);
    out
}

/// Joins a freshly rendered report with the hand-written part of `previous`, the file's
/// earlier content: everything from [`HAND_WRITTEN_MARKER`] on. Without a previous file
/// or marker, the report gets the marker alone, so notes can be added below it.
pub(crate) fn keep_hand_written(rendered: String, previous: Option<&str>) -> String {
    let kept = previous
        .and_then(|text| text.find(HAND_WRITTEN_MARKER).map(|at| &text[at..]))
        .map_or_else(|| format!("{HAND_WRITTEN_MARKER}\n"), str::to_owned);
    let mut out = rendered;
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(&kept);
    out
}

fn header(out: &mut String, results: &Results) {
    let profile = &results.profile;
    let _ = writeln!(out, "# Benchmarks\n");
    if profile.name == "quick" {
        let _ = writeln!(
            out,
            "**This is a quick run** (`referrals bench --quick`): seconds per level and a few \
             thousand events, so the figures are rough and the targets are judged on small \
             samples. A full run (`referrals bench`) uses 1,000,000 events.\n"
        );
    }
    if profile.name == "full" && profile.events != super::FULL_EVENTS {
        let _ = writeln!(
            out,
            "**This run generated {} events (`--events`) instead of the full profile's {}**, \
             so the projection and export figures come from a smaller store.\n",
            profile.events,
            super::FULL_EVENTS
        );
    }
    let _ = writeln!(
        out,
        "Written by `referrals bench` ({} profile) on {} in {:.0} s. The run creates a scratch \
         database, measures PostgreSQL's own limit with the company's pgbench kit \
         (`bench/pgbench/`), then the product, and drops the database at the end. Absolute \
         figures drift between runs on shared machines, so HTTP throughput is also given as a \
         ratio to PostgreSQL's `read_then_append` limit measured in the same run.\n",
        profile.name,
        results.machine.started_at.format("%Y-%m-%d %H:%M UTC"),
        results.total_duration.as_secs_f64()
    );
}

fn machine(out: &mut String, results: &Results) {
    let machine = &results.machine;
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "| item | value |\n|---|---|");
    let _ = writeln!(out, "| CPU | {} |", machine.cpu_model);
    let _ = writeln!(out, "| cores available | {} |", machine.cores);
    let _ = writeln!(
        out,
        "| memory | {} |",
        machine
            .memory_gib
            .map_or_else(|| "unknown".to_owned(), |gib| format!("{gib:.1} GiB"))
    );
    let _ = writeln!(
        out,
        "| load average (1 min) at start | {} |",
        machine.load_average.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(out, "| PostgreSQL | {} |", machine.postgres_version);
    let _ = writeln!(out, "| fsync | {} |", machine.fsync);
    let _ = writeln!(
        out,
        "| synchronous_commit | {} |",
        machine.synchronous_commit
    );
    let _ = writeln!(out, "| git commit | {} |", machine.git_commit);
    let _ = writeln!(out, "| build of `referrals` | {} |", machine.build);
    let _ = writeln!(
        out,
        "\nPostgreSQL, the server, the clients and the bench share the same cores."
    );
    let loaded = machine
        .load_average
        .as_deref()
        .and_then(|load| load.parse::<f64>().ok())
        .is_some_and(|load| load > machine.cores as f64);
    if loaded {
        let _ = writeln!(
            out,
            "The load average above the core count shows that other work shared the machine \
             during this run, so every figure here is lower than the machine alone would give."
        );
    }
    let _ = writeln!(out);
}

fn limit(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## PostgreSQL limit\n");
    let _ = writeln!(
        out,
        "pgbench, {} s per line. `append` inserts one event row per transaction; \
         `read_then_append` loads a 10-event stream and appends the next event, the database \
         work of one command.\n",
        results.profile.limit_seconds
    );
    let _ = writeln!(
        out,
        "| workload | clients | tps | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|"
    );
    for line in &results.limit {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            line.workload, line.clients, line.tps, line.p50_ms, line.p95_ms, line.p99_ms
        );
    }
    let _ = writeln!(out);
}

fn read_then_append_tps(results: &Results, clients: usize) -> Option<f64> {
    results
        .limit
        .iter()
        .find(|line| line.workload == "read_then_append" && line.clients == clients)
        .map(|line| line.tps)
}

fn http(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## HTTP commands\n");
    let _ = writeln!(
        out,
        "`referrals serve` (with its projection workers) runs as a child process on a loopback \
         port. Each client signs in as a real recruiter or payout approver and takes referrals \
         through nine commands: submit, contacted, interviewing, hire, hours for four weeks, \
         and approval of the hire bonus. Each level runs {} s. Throughput counts commands \
         answered with 2xx; latency is measured at the client, over HTTP/1.1 without TLS.\n",
        results.profile.http_duration.as_secs()
    );
    let _ = writeln!(
        out,
        "| clients | commands/s | ratio to read_then_append | p50 ms | p95 ms | p99 ms | failures |\n\
         |---:|---:|---:|---:|---:|---:|---|"
    );
    for level in &results.http.levels {
        let ratio = read_then_append_tps(results, level.clients).map_or_else(
            || "n/a".to_owned(),
            |tps| format!("{:.2}", level.commands_per_second / tps),
        );
        let failures = if level.failures.is_empty() {
            "none".to_owned()
        } else {
            level
                .failures
                .iter()
                .map(|(status, count)| format!("{count} × {}", status_label(*status)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {ratio} | {:.2} | {:.2} | {:.2} | {failures} |",
            level.clients,
            level.commands_per_second,
            level.latency.p50_ms,
            level.latency.p95_ms,
            level.latency.p99_ms
        );
    }
    let _ = writeln!(out, "\nBy command:\n");
    let _ = writeln!(
        out,
        "| clients | command | count | p50 ms | p99 ms |\n|---:|---|---:|---:|---:|"
    );
    for level in &results.http.levels {
        for (kind, latency) in &level.by_kind {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {:.2} |",
                level.clients,
                kind.label(),
                latency.count,
                latency.p50_ms,
                latency.p99_ms
            );
        }
    }
    let _ = writeln!(out);
}

fn status_label(status: u16) -> String {
    if status == 0 {
        "no response".to_owned()
    } else {
        format!("HTTP {status}")
    }
}

fn projections(out: &mut String, results: &Results) {
    let generation = &results.generation;
    let _ = writeln!(out, "## Projections\n");
    let _ = writeln!(
        out,
        "Events were generated through the store's command path (`Application`, {} concurrent \
         workers, no HTTP): {} events in the store after {} commands in {:.0} s ({:.0} \
         commands/s). Each has real metadata and a chain hash from the insert trigger.{}\n",
        super::events::GENERATION_WORKERS,
        generation.events,
        generation.commands,
        generation.seconds,
        generation.commands as f64 / generation.seconds.max(f64::EPSILON),
        if generation.budget_exhausted {
            format!(
                " **The time budget ended generation before the requested {} events.**",
                generation.requested
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "Catch-up applies the events written since the server stopped, one read model after \
         another; rebuild replays the whole store into shadow tables and swaps them in.\n"
    );
    let _ = writeln!(
        out,
        "| read model | catch-up events | catch-up events/s | rebuild events | rebuild events/s |\n\
         |---|---:|---:|---:|---:|"
    );
    for (catch_up, rebuild) in results
        .projections
        .catch_up
        .iter()
        .zip(&results.projections.rebuild)
    {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {:.0} |",
            catch_up.name,
            catch_up.events,
            catch_up.events_per_second(),
            rebuild.events,
            rebuild.events_per_second()
        );
    }
    let _ = writeln!(out);
}

fn export(out: &mut String, results: &Results) {
    let export = &results.export;
    let _ = writeln!(out, "## Audit export\n");
    let _ = writeln!(
        out,
        "`referrals audit export` as a child process, standard output discarded; rate and peak \
         resident memory (`VmHWM`) from its final log line. Memory is flat when the full \
         export's peak is at most 1.5 times the peak of the export of one small agency.\n"
    );
    let _ = writeln!(
        out,
        "| export | events | seconds | events/s | peak memory MiB |\n|---|---:|---:|---:|---:|"
    );
    for (label, run) in [
        ("one agency (HTTP load)", &export.small),
        ("all events", &export.full),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | {:.1} | {:.0} | {:.1} |",
            run.events,
            run.seconds,
            run.events_per_second,
            run.peak_rss_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "\nMemory flat: {}.\n",
        if export.memory_flat() { "yes" } else { "no" }
    );
}

fn as_of(out: &mut String, results: &Results) {
    let as_of = &results.as_of;
    let _ = writeln!(out, "## As-of reconstruction\n");
    let _ = writeln!(
        out,
        "`Application::state_at` on a referral with {} events and {} kept states (every 50 \
         events), each point reconstructed 20 times.\n",
        as_of.aggregate_events, as_of.snapshots
    );
    let _ = writeln!(out, "| point | median ms | max ms |\n|---|---:|---:|");
    for (label, median, max) in &as_of.points {
        let _ = writeln!(out, "| {label} | {median:.2} | {max:.2} |");
    }
    let _ = writeln!(out);
}

fn memory(out: &mut String, results: &Results) {
    let http = &results.http;
    let mib = |kib: Option<u64>| {
        kib.map_or_else(
            || "unknown".to_owned(),
            |kib| format!("{:.1}", kib as f64 / 1024.0),
        )
    };
    let _ = writeln!(out, "## Server memory\n");
    let _ = writeln!(
        out,
        "Resident memory (`VmRSS`) of the `referrals serve` process, sampled every 200 ms \
         under load.\n"
    );
    let _ = writeln!(out, "| state | MiB |\n|---|---:|");
    let _ = writeln!(
        out,
        "| idle, before load | {} |",
        mib(http.server_idle_rss_kib)
    );
    for level in &http.levels {
        let _ = writeln!(
            out,
            "| peak under {} clients | {} |",
            level.clients,
            mib(level.server_peak_rss_kib)
        );
    }
    let _ = writeln!(
        out,
        "| idle, after load | {} |\n",
        mib(http.server_idle_after_load_rss_kib)
    );
}

fn targets(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | measured | result |\n|---|---|---|");
    let met = |ok: bool| if ok { "met" } else { "missed" };

    let level = results
        .http
        .levels
        .iter()
        .find(|level| level.clients == TARGET_CLIENTS);
    match (level, read_then_append_tps(results, TARGET_CLIENTS)) {
        (Some(level), Some(limit)) => {
            let ratio = level.commands_per_second / limit;
            let _ = writeln!(
                out,
                "| commands at {TARGET_CLIENTS} clients ≥ {:.0} % of read_then_append | {:.0} % ({:.0} of {:.0} per second) | {} |",
                TARGET_COMMAND_RATIO * 100.0,
                ratio * 100.0,
                level.commands_per_second,
                limit,
                met(ratio >= TARGET_COMMAND_RATIO)
            );
            let _ = writeln!(
                out,
                "| command p99 at {TARGET_CLIENTS} clients < {TARGET_COMMAND_P99_MS:.0} ms | {:.1} ms | {} |",
                level.latency.p99_ms,
                met(level.latency.p99_ms < TARGET_COMMAND_P99_MS)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "| commands at {TARGET_CLIENTS} clients | not measured at {TARGET_CLIENTS} clients | missed |"
            );
        }
    }

    let slowest = results
        .projections
        .rebuild
        .iter()
        .min_by(|a, b| a.events_per_second().total_cmp(&b.events_per_second()));
    if let Some(slowest) = slowest {
        let _ = writeln!(
            out,
            "| rebuild ≥ {:.0} events/s for every read model | slowest: {} at {:.0} events/s | {} |",
            TARGET_REBUILD_EVENTS_PER_SECOND,
            slowest.name,
            slowest.events_per_second(),
            met(slowest.events_per_second() >= TARGET_REBUILD_EVENTS_PER_SECOND)
        );
    }

    let export = &results.export;
    let _ = writeln!(
        out,
        "| export ≥ {:.0} events/s with flat memory | {:.0} events/s, peak {:.1} MiB (one agency: {:.1} MiB) | {} |",
        TARGET_EXPORT_EVENTS_PER_SECOND,
        export.full.events_per_second,
        export.full.peak_rss_kib as f64 / 1024.0,
        export.small.peak_rss_kib as f64 / 1024.0,
        met(export.full.events_per_second >= TARGET_EXPORT_EVENTS_PER_SECOND && export.memory_flat())
    );

    let slowest_as_of = results.as_of.max_ms();
    let _ = writeln!(
        out,
        "| as-of < {TARGET_AS_OF_MS:.0} ms (slowest of all samples) | {slowest_as_of:.2} ms | {} |",
        met(slowest_as_of < TARGET_AS_OF_MS)
    );
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_without_previous_file_ends_with_marker() {
        let report = keep_hand_written("# Benchmarks\n".to_owned(), None);
        assert_eq!(report, format!("# Benchmarks\n\n{HAND_WRITTEN_MARKER}\n"));
    }

    #[test]
    fn report_keeps_notes_and_replaces_figures() {
        let previous =
            format!("# Benchmarks\n\nold figures\n\n{HAND_WRITTEN_MARKER}\n\n## Notes\n\nkept\n");
        let report = keep_hand_written("# Benchmarks\n\nnew figures\n".to_owned(), Some(&previous));
        assert_eq!(
            report,
            format!("# Benchmarks\n\nnew figures\n\n{HAND_WRITTEN_MARKER}\n\n## Notes\n\nkept\n")
        );
    }

    #[test]
    fn report_replaces_previous_file_without_marker() {
        let report = keep_hand_written(
            "# Benchmarks\n".to_owned(),
            Some("# Benchmarks\n\nold figures\n"),
        );
        assert!(!report.contains("old figures"), "{report}");
        assert!(
            report.ends_with(&format!("{HAND_WRITTEN_MARKER}\n")),
            "{report}"
        );
    }
}
