//! The processor's own login. Every connection a processor's SQL runs on is logged in as the
//! processor's role (see [`grants`](super::grants)), so its session user is that role: PostgreSQL
//! lets a session switch only to roles its login may use, and this login may use no other. No SQL
//! path — `set_config('role', …)` inside a function that runs SQL text, a rule on a catalog view, a
//! parser trick — can then reach more than the role's own grants.
//!
//! The connection starts with the settings the host's own statements rely on pinned as startup
//! options, which also makes them what `RESET ALL` returns to after every processor scope.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, PgConnection, Row};

use super::grants::Login;
use super::sql::DbSession;
use crate::registry::manifest::Durability;

/// Why the host could not log in as a processor's role.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// PostgreSQL refused the login (authentication or pg_hba.conf).
    #[error(
        "PostgreSQL refused the login of the processor role {role} ({message}); processors' SQL runs as \
         their own role, so the server must let that role log in the way the host does: allow it in \
         pg_hba.conf (e.g. `host {database} {role} <address> scram-sha-256`), then run `ingot grant`"
    )]
    Refused {
        /// The role.
        role: String,
        /// The database.
        database: String,
        /// PostgreSQL's message.
        message: String,
    },
    /// The connection logged in as someone else (e.g. options in DATABASE_URL override the user).
    #[error(
        "the processor connection for {role} logged in as {actual}; remove any role or user override from \
         DATABASE_URL's options"
    )]
    WrongUser {
        /// The role it should be.
        role: String,
        /// The session user it got.
        actual: String,
    },
    /// The server cannot be reached.
    #[error("connecting as the processor role {role}: {source}")]
    Connect {
        /// The role.
        role: String,
        /// The failure.
        source: sqlx::Error,
    },
}

impl LoginError {
    /// The server refused the credentials; setting the password again may help.
    pub fn is_refused(&self) -> bool {
        matches!(self, LoginError::Refused { .. })
    }
}

/// How to open connections as one processor's role, and whom to ask to cancel their statements.
#[derive(Clone)]
pub struct ProcessorLogin {
    role: String,
    options: PgConnectOptions,
    host: PgPool,
}

impl std::fmt::Debug for ProcessorLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorLogin").field("role", &self.role).finish_non_exhaustive()
    }
}

/// The settings every processor connection starts with: what the host's statements need,
/// whatever defaults the role or the database were given. `search_path` is the host's own, as
/// resolved schemas, so unqualified table names mean for the processor what they meant when its
/// grants were resolved.
fn startup_settings(search_path: &str, durability: Durability) -> Vec<(&'static str, String)> {
    // Batch durability: item commits do not wait for the WAL flush (README, Guarantees). The
    // batch's final commit asks for it itself.
    let synchronous = match durability {
        Durability::Batch => "off",
        Durability::Item => "on",
    };
    vec![
        ("synchronous_commit", synchronous.into()),
        ("search_path", search_path.to_owned()),
        ("default_transaction_read_only", "off".into()),
        ("default_transaction_isolation", "read committed".into()),
        ("statement_timeout", "0".into()),
        ("lock_timeout", "0".into()),
        ("idle_in_transaction_session_timeout", "0".into()),
        ("standard_conforming_strings", "on".into()),
        ("exit_on_error", "off".into()),
    ]
}

/// The schemas the host's own search path resolves to, quoted and comma-separated — without
/// pg_catalog (always searched first) and temporary schemas — for the processor's connections.
pub async fn host_search_path(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(quote_ident(s), ', ' ORDER BY n), '')
         FROM unnest(current_schemas(false)) WITH ORDINALITY AS t(s, n)
         WHERE s <> 'pg_catalog' AND s NOT LIKE 'pg\\_temp\\_%'",
    )
    .fetch_one(conn)
    .await
}

/// A value for the startup packet's `options` (`-c name=value`): spaces and backslashes escaped.
fn option_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace(' ', "\\ ")
}

impl ProcessorLogin {
    /// Logs in as `login` wherever `host_options` point (same server, database and TLS), with the
    /// host's search path `search_path`, item commits waiting for the WAL flush as `durability`
    /// says. `host` is the host's own pool, used to cancel the role's
    /// statements when a time limit is up.
    pub fn new(
        host: PgPool,
        host_options: &PgConnectOptions,
        login: &Login,
        search_path: &str,
        durability: Durability,
    ) -> Self {
        let settings = startup_settings(search_path, durability);
        let options = host_options
            .clone()
            .username(&login.role)
            .password(&login.password)
            .application_name("ingot worker")
            .options(settings.iter().map(|(k, v)| (*k, option_value(v))));
        ProcessorLogin { role: login.role.clone(), options, host }
    }

    /// The role.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// A new connection as the role, checked to really be that login.
    pub async fn connect(&self) -> Result<DbSession, LoginError> {
        let mut conn = self.options.connect().await.map_err(|e| self.connect_error(e))?;
        let row = sqlx::query("SELECT session_user::text AS login, pg_backend_pid() AS pid")
            .persistent(false)
            .fetch_one(&mut conn)
            .await
            .map_err(|source| LoginError::Connect { role: self.role.clone(), source })?;
        let login: String =
            row.try_get("login").map_err(|source| LoginError::Connect { role: self.role.clone(), source })?;
        if login != self.role {
            return Err(LoginError::WrongUser { role: self.role.clone(), actual: login });
        }
        let pid: i32 =
            row.try_get("pid").map_err(|source| LoginError::Connect { role: self.role.clone(), source })?;
        Ok(DbSession::new(conn).with_canceller(self.host.clone(), pid))
    }

    fn connect_error(&self, e: sqlx::Error) -> LoginError {
        // 28000: invalid authorization (pg_hba.conf); 28P01: wrong password.
        let refused = e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c.starts_with("28"));
        if refused {
            let message = e.as_database_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
            LoginError::Refused {
                role: self.role.clone(),
                database: self.options.get_database().unwrap_or("all").to_owned(),
                message,
            }
        } else {
            LoginError::Connect { role: self.role.clone(), source: e }
        }
    }
}

/// How long a statement may go on after the host asked the server to cancel it, before the host
/// ends its backend instead.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::option_value;

    #[test]
    fn startup_option_values_keep_their_spaces_and_backslashes() {
        assert_eq!(option_value("read committed"), "read\\ committed");
        assert_eq!(option_value("\"my schema\", public"), "\"my\\ schema\",\\ public");
        assert_eq!(option_value("a\\b"), "a\\\\b");
    }
}
