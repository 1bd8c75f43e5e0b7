//! The HTTP API and the command-line interface of the `referrals` binary.

pub mod cli;
pub mod config;
pub mod http;
mod projections_cli;
pub mod server;
