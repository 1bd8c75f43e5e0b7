//! The HTTP API and the command-line interface of the `referrals` binary.

pub mod cli;
pub mod config;
