//! The `referrals` binary. Everything it does lives in the library; this file only hands
//! over the process's exit status.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    referrals_api::cli::run().await
}
