//! Rate limits of failed sign-ins, per account and per client address, counted in a
//! sliding window over the `login_failures` table.
//!
//! An attempt is refused before its password is checked while the account has
//! [`MAX_FAILURES_PER_ACCOUNT`] failures, or the address [`MAX_FAILURES_PER_ADDRESS`],
//! within the last [`FAILURE_WINDOW_SECONDS`]. A refused attempt records no failure, so
//! waiting always ends the block.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

/// Failed attempts allowed per account within the window.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 5;
/// Failed attempts allowed per client address within the window, across accounts.
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;
/// Length of the sliding window in seconds (15 minutes).
pub const FAILURE_WINDOW_SECONDS: i64 = 15 * 60;

fn window() -> Duration {
    Duration::seconds(FAILURE_WINDOW_SECONDS)
}

/// The two keys one sign-in attempt is counted under.
pub(crate) struct FailureKeys {
    account: String,
    address: String,
}

impl FailureKeys {
    /// Keys for an attempt on the account whose e-mail key is `email_key`, from `address`.
    ///
    /// The account key uses the e-mail key rather than a user id, so attempts on an
    /// address without an account are limited exactly like attempts on a real one.
    /// IPv6 clients are counted per /64 network, because one host usually controls a
    /// whole /64 and could otherwise rotate addresses freely.
    pub(crate) fn new(email_key: &str, address: IpAddr) -> Self {
        let address = match address.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        };
        Self {
            account: format!("account:{email_key}"),
            address: format!("address:{address}"),
        }
    }
}

/// Returns the seconds until the next attempt is allowed, or `None` when neither the
/// account nor the address is blocked at `now`.
pub(crate) async fn retry_after(
    pool: &PgPool,
    keys: &FailureKeys,
    now: DateTime<Utc>,
) -> Result<Option<u64>, sqlx::Error> {
    let account = key_retry_after(pool, &keys.account, MAX_FAILURES_PER_ACCOUNT, now).await?;
    let address = key_retry_after(pool, &keys.address, MAX_FAILURES_PER_ADDRESS, now).await?;
    Ok(account.max(address))
}

/// While `key` has `max` failures in the window, the next attempt is allowed once the
/// oldest of the `max` most recent failures leaves the window.
async fn key_retry_after(
    pool: &PgPool,
    key: &str,
    max: i64,
    now: DateTime<Utc>,
) -> Result<Option<u64>, sqlx::Error> {
    let recent: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT failed_at FROM login_failures
          WHERE key = $1 AND failed_at > $2
          ORDER BY failed_at DESC
          LIMIT $3",
    )
    .bind(key)
    .bind(now - window())
    .bind(max)
    .fetch_all(pool)
    .await?;
    if i64::try_from(recent.len()).unwrap_or(i64::MAX) < max {
        return Ok(None);
    }
    let Some(oldest) = recent.last() else {
        return Ok(None);
    };
    let milliseconds = (*oldest + window() - now).num_milliseconds().max(0);
    // Rounded up, and at least 1: a client that waits the full time must be let through.
    let seconds = (milliseconds + 999) / 1000;
    Ok(Some(u64::try_from(seconds.max(1)).unwrap_or(1)))
}

/// Records one failed attempt under both keys, and deletes failures that left the window.
pub(crate) async fn record_failure(
    pool: &PgPool,
    keys: &FailureKeys,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("INSERT INTO login_failures (key, failed_at) VALUES ($1, $3), ($2, $3)")
        .bind(&keys.account)
        .bind(&keys.address)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
    sqlx::query("DELETE FROM login_failures WHERE failed_at <= $1")
        .bind(now - window())
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await
}

/// Forgets the account's failures after a successful sign-in. The address keeps its
/// failures, so one good password does not reset a spray across many accounts.
pub(crate) async fn clear_account(pool: &PgPool, keys: &FailureKeys) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1")
        .bind(&keys.account)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_counted_per_address() {
        let keys = FailureKeys::new("k", "203.0.113.7".parse().unwrap());

        assert_eq!(keys.address, "address:203.0.113.7");
        assert_eq!(keys.account, "account:k");
    }

    #[test]
    fn ipv6_is_counted_per_64_network() {
        let first = FailureKeys::new("k", "2001:db8:1:2:aaaa::1".parse().unwrap());
        let second = FailureKeys::new("k", "2001:db8:1:2:bbbb::2".parse().unwrap());

        assert_eq!(first.address, "address:2001:db8:1:2::/64");
        assert_eq!(first.address, second.address);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_counted_as_ipv4() {
        let keys = FailureKeys::new("k", "::ffff:203.0.113.7".parse().unwrap());

        assert_eq!(keys.address, "address:203.0.113.7");
    }
}
