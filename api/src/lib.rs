//! The HTTP API and the command-line interface of the `referrals` binary.

mod accounts_cli;
mod audit_cli;
mod audit_export_cli;
pub mod bench;
pub mod cli;
pub mod config;
mod demo_cli;
pub mod http;
pub mod imports;
mod keys_cli;
mod panic_log;
mod projections_cli;
pub mod server;
pub mod tls;
