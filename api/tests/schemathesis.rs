//! The short form of `tests/schemathesis.sh` for CI: a few generated cases per operation
//! of the OpenAPI document against the real binary serving a small demo data set,
//! failing on any 5xx or any response that does not match the document. The first run
//! installs Schemathesis with pip.

use std::process::Command;

/// Returns the numbers before `generated`, `passed` and `skipped` (0 when absent) in the
/// line after `Test cases:` of Schemathesis 4's summary, such as `  N generated, M passed`.
fn case_counts(stdout: &str) -> Option<(u64, u64, u64)> {
    let line = stdout
        .lines()
        .skip_while(|line| line.trim() != "Test cases:")
        .nth(1)?;
    let count_before = |word: &str| -> Option<u64> {
        line.split(',')
            .map(str::trim)
            .find_map(|part| part.strip_suffix(word))?
            .trim()
            .parse()
            .ok()
    };
    let skipped = count_before("skipped").unwrap_or(0);
    Some((count_before("generated")?, count_before("passed")?, skipped))
}

/// Returns the numbers of `Selected: N/TOTAL` and `Tested: M` in the summary.
fn operation_counts(stdout: &str) -> Option<(u64, u64)> {
    let value_of = |label: &str| -> Option<&str> {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(str::trim)
    };
    let selected = value_of("Selected:")?.split('/').next()?.parse().ok()?;
    let tested = value_of("Tested:")?.parse().ok()?;
    Some((selected, tested))
}

#[test]
fn schemathesis_finds_no_server_errors() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/schemathesis.sh");
    // Two cases per operation and a 40-second budget keep CI short; the script's
    // defaults run longer.
    let output = Command::new("bash")
        .args([script, "2", "40"])
        .env("REFERRALS_BIN", env!("CARGO_BIN_EXE_referrals"))
        .env("DEMO_SCALE", "0.01")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tests/schemathesis.sh failed with {:?}:\n{stdout}\n{stderr}",
        output.status.code()
    );

    let (generated, passed, skipped) =
        case_counts(&stdout).expect("no `Test cases:` summary in the output");
    assert!(passed > 0, "no test case passed:\n{stdout}");
    assert_eq!(
        passed + skipped,
        generated,
        "generated cases that neither passed nor were skipped:\n{stdout}"
    );
    let (selected, tested) =
        operation_counts(&stdout).expect("no `Selected:` and `Tested:` summary in the output");
    assert!(selected > 0, "no operation selected:\n{stdout}");
    assert_eq!(
        tested, selected,
        "selected operations left untested:\n{stdout}"
    );
}

#[test]
fn summary_counts_are_parsed() {
    let summary = "API Operations:\n  Selected: 65/66\n  Tested: 64\n\n\
                   Test cases:\n  3813 generated, 3813 passed\n";

    assert_eq!(case_counts(summary), Some((3813, 3813, 0)));
    assert_eq!(
        case_counts("Test cases:\n  10 generated, 8 passed, 2 skipped\n"),
        Some((10, 8, 2))
    );
    assert_eq!(operation_counts(summary), Some((65, 64)));
    assert_eq!(case_counts("Test cases:\n  0 generated\n"), None);
}
