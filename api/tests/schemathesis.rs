//! The short form of `tests/schemathesis.sh` for CI: a few generated cases per operation
//! of the OpenAPI document against the real binary, failing on any 5xx or any response
//! that does not match the document. The first run installs Schemathesis with pip.

use std::process::Command;

#[test]
fn schemathesis_finds_no_server_errors() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/schemathesis.sh");
    // Two cases per operation and a 40-second budget keep CI short; the script's
    // defaults run longer.
    let output = Command::new("bash")
        .args([script, "2", "40"])
        .env("REFERRALS_BIN", env!("CARGO_BIN_EXE_referrals"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tests/schemathesis.sh failed with {:?}:\n{stdout}\n{stderr}",
        output.status.code()
    );
    assert!(stdout.contains("passed"), "no test case ran:\n{stdout}");
}
