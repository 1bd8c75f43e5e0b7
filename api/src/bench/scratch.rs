//! The scratch database a bench run creates on the configured server and drops at the end.

use anyhow::Context;
use referrals_store::database;
use sqlx::{ConnectOptions, Connection};

/// A database created for one bench run.
#[derive(Debug)]
pub(crate) struct ScratchDatabase {
    /// Its name, `referrals_bench_` and a fresh UUID.
    pub name: String,
    /// Its URL: the configured URL with the database name replaced.
    pub url: String,
    /// The configured URL, whose database the drop connects to.
    server_url: String,
}

impl ScratchDatabase {
    /// Creates the database on the server of `database_url`.
    pub async fn create(database_url: &str) -> anyhow::Result<Self> {
        let name = format!("referrals_bench_{}", uuid::Uuid::now_v7().simple());
        let url = replace_database(database_url, &name)?;
        let options = database::parse_url(&url)?;
        database::create_database_if_missing(&options)
            .await
            .with_context(|| format!("creating the scratch database {name}"))?;
        Ok(Self {
            name,
            url,
            server_url: database_url.to_owned(),
        })
    }

    /// Drops the database, closing any connection still open to it.
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let maintenance = replace_database(&self.server_url, "postgres")?;
        let mut connection = database::parse_url(&maintenance)?
            .connect()
            .await
            .context("connecting to drop the scratch database")?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut connection)
        .await
        .with_context(|| format!("dropping the scratch database {}", self.name))?;
        connection.close().await.ok();
        Ok(())
    }
}

/// Returns `url` with its database name (the last path segment) set to `name`, keeping
/// any query parameters.
fn replace_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    if server.len() <= authority_start {
        anyhow::bail!("invalid database URL: expected postgres://HOST[:PORT]/DATABASE");
    }
    Ok(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replace_database_keeps_server_and_query() {
        assert_eq!(
            replace_database("postgres://u@h:5432/app?sslmode=disable", "scratch").unwrap(),
            "postgres://u@h:5432/scratch?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://u@h:5432", "scratch").unwrap(),
            "postgres://u@h:5432/scratch"
        );
    }
}
