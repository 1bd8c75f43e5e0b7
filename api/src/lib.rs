//! The HTTP API and the command-line interface of the `referrals` binary.

mod accounts_cli;
pub mod cli;
pub mod config;
pub mod http;
mod projections_cli;
pub mod server;
