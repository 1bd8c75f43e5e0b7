//! `referrals keys rotate`: re-wraps the stored data keys and agency keys under a new
//! master key, batch by batch, so that an interrupted run can simply be started again.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use referrals_store::database;
use referrals_store::keys::{count_wrapped_keys, rewrap_batch};

use crate::config;

/// How often a rotation without a terminal logs its progress, in keys.
const LOG_EVERY_KEYS: u64 = 10_000;

/// Commands on the master key.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-wrap every data key and agency key that the current master key
    /// (REFERRALS_MASTER_KEY or REFERRALS_MASTER_KEY_FILE) wraps under the new master key.
    /// Events are not rewritten. Stop the servers first and restart them with only the
    /// new key afterwards, because a process with the old key cannot read re-wrapped keys.
    /// An interrupted run continues where it stopped when started again.
    Rotate {
        /// File that contains the new master key: 32 random bytes in base64
        /// (`openssl rand -base64 32`).
        #[arg(long, value_name = "PATH")]
        new_key_file: PathBuf,
        /// Keys re-wrapped per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_size: i64,
    },
}

/// Runs a `keys` command.
///
/// # Errors
/// Returns an error when a key cannot be read, the database fails, or a stored key does
/// not unwrap under the current master key.
pub async fn run(database_url: &str, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate {
            new_key_file,
            batch_size,
        } => rotate(database_url, &new_key_file, batch_size).await,
    }
}

async fn rotate(
    database_url: &str,
    new_key_file: &std::path::Path,
    batch_size: i64,
) -> anyhow::Result<()> {
    let old = config::master_key_from_env().context("reading the current master key")?;
    let new = config::read_key_file(new_key_file).context("reading the new master key")?;
    if old.id() == new.id() {
        bail!(
            "the new master key is the current master key ({}); generate another one",
            old.id()
        );
    }
    let pool = database::connect(&database::parse_url(database_url)?, 2).await?;
    let before = count_wrapped_keys(&pool, &old, &new)
        .await
        .context("counting the stored keys")?;
    tracing::info!(
        old_master_key = old.id(),
        new_master_key = new.id(),
        to_rewrap = before.old,
        already_rewrapped = before.new,
        "key rotation started"
    );

    let on_terminal = std::io::stderr().is_terminal();
    let (mut data_keys, mut agency_keys) = (0_u64, 0_u64);
    let mut next_log = LOG_EVERY_KEYS;
    loop {
        let progress = rewrap_batch(&pool, &old, &new, batch_size)
            .await
            .context("re-wrapping keys")?;
        if progress.total() == 0 {
            break;
        }
        data_keys += progress.data_keys;
        agency_keys += progress.agency_keys;
        let done = data_keys + agency_keys;
        if on_terminal {
            eprint!("\rre-wrapping keys: {done} of {}", before.old);
            let _ = std::io::stderr().flush();
        } else if done >= next_log {
            tracing::info!(done, total = before.old, "key rotation in progress");
            next_log = done + LOG_EVERY_KEYS;
        }
    }
    if on_terminal && data_keys + agency_keys > 0 {
        eprintln!();
    }

    let after = count_wrapped_keys(&pool, &old, &new)
        .await
        .context("counting the stored keys")?;
    tracing::info!(
        data_keys,
        agency_keys,
        remaining = after.old,
        "key rotation finished"
    );
    println!(
        "re-wrapped {data_keys} data keys and {agency_keys} agency keys from master key {} \
         to {}; {} keys are now wrapped by the new key, {} by the old key and {} by other keys",
        old.id(),
        new.id(),
        after.new,
        after.old,
        after.other
    );
    if after.old > 0 {
        // Rows locked by another rotation running at the same time are skipped, not awaited.
        bail!(
            "{} keys are still wrapped by the old master key, probably locked by another run; \
             start the rotation again",
            after.old
        );
    }
    Ok(())
}
