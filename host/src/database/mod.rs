//! Where the database is: `DATABASE_URL` when set, else the embedded cluster under `.ingot/`.

pub mod embedded;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

pub use self::embedded::{EmbeddedCluster, EmbeddedError};
use crate::store::{self, StoreError};

/// Why the database is not available.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// `DATABASE_URL` does not parse.
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(String),
    /// The server cannot be reached or refused the login.
    #[error("cannot connect to the database ({target}): {message}")]
    Unreachable {
        /// Where we tried to connect, without any password.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The embedded cluster could not be started.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The schema could not be applied.
    #[error(transparent)]
    Migrate(#[from] StoreError),
}

/// A connected, migrated database.
#[derive(Debug, Clone)]
pub struct Database {
    /// The pool.
    pub pool: PgPool,
    /// Where it is, for messages (no password).
    pub target: String,
}

/// Connection options from `DATABASE_URL`, or the embedded cluster (started if needed).
pub fn resolve(project_dir: &Path) -> Result<(PgConnectOptions, String), DatabaseError> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let options =
                PgConnectOptions::from_str(&url).map_err(|e| DatabaseError::BadUrl(e.to_string()))?;
            Ok((options, redact(&url)))
        }
        _ => {
            let cluster = EmbeddedCluster::new(project_dir)?;
            cluster.ensure_running()?;
            Ok((
                cluster.connect_options(),
                format!("embedded database in {}", project_dir.join(".ingot").display()),
            ))
        }
    }
}

/// The URL a client such as psql connects with: `DATABASE_URL` when set, else the embedded
/// cluster's (started if needed).
pub fn url(project_dir: &Path) -> Result<String, DatabaseError> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => {
            let cluster = EmbeddedCluster::new(project_dir)?;
            cluster.ensure_running()?;
            Ok(cluster.url())
        }
    }
}

/// Connects (at most `max_connections` pooled) and applies Ingot's schema if it is not there yet.
pub async fn open(
    options: PgConnectOptions,
    target: String,
    max_connections: u32,
) -> Result<Database, DatabaseError> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(2))
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.application_name("ingot"))
        .await
        .map_err(|e| DatabaseError::Unreachable { target: target.clone(), message: e.to_string() })?;
    store::ensure_migrated(&pool).await?;
    Ok(Database { pool, target })
}

/// One connection, for a command that reads a few rows and exits (`batch show`, `logs`, …). No
/// pool: a pool checks a returned connection in the background, so the next query of a short
/// command could open a second one, and a new connection is a server process started (some
/// milliseconds). The schema is not checked here: see [`read`].
pub async fn connect(options: PgConnectOptions, target: &str) -> Result<PgConnection, DatabaseError> {
    options
        .application_name("ingot")
        .connect()
        .await
        .map_err(|e| DatabaseError::Unreachable { target: target.to_owned(), message: e.to_string() })
}

/// Runs a read on a [`connect`]ed connection. The schema is not checked first — on a new
/// connection that costs a round trip and the server's first read of another table — but when
/// the read finds a table, column or function of Ingot's missing (no schema yet, or one older
/// than this binary), the schema is applied and the read runs again.
pub async fn read<T>(
    conn: &mut PgConnection,
    mut reading: impl AsyncFnMut(&mut PgConnection) -> Result<T, StoreError>,
) -> Result<T, DatabaseError> {
    match reading(conn).await {
        Err(StoreError::Database(sqlx::Error::Database(db)))
            if matches!(db.code().as_deref(), Some("42P01" | "42703" | "42883")) =>
        {
            store::ensure_migrated_on(conn).await?;
            Ok(reading(conn).await?)
        }
        other => Ok(other?),
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres:///db"), "postgres:///db");
    }
}
