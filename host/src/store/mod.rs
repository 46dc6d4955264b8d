//! All SQL on Ingot's framework tables, and nowhere else. Read it top to bottom to know exactly
//! what the host does to `import_batches`, `import_batch_items`, `import_batch_counters`,
//! `import_logs` and `ingot_processor_roles`. On a processor's connection, the host reaches them
//! only through the wall's functions (migrations/…_database_wall.sql).
//!
//! - [`batches`]: creating, starting, finishing, listing and summarising batches.
//! - [`items`]: the item transaction's statements: claim, processor scope, finish.
//! - [`logs`]: reading log lines.
//! - [`roles`]: the processor roles the framework knows, and what it never grants.
//! - [`schemas`]: which of the processors' own SQL files were applied.

pub mod batches;
pub mod items;
pub mod logs;
pub mod roles;
pub mod schemas;

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};

/// The framework schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A framework-table operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or the connection failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be applied.
    #[error("applying Ingot's schema failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds something this host does not understand.
    #[error("{0}")]
    Corrupt(String),
}

/// PostgreSQL text cannot hold NUL characters; guest-supplied strings get U+FFFD instead, so a
/// processor can never make the host's own write fail.
pub(crate) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

/// jsonb cannot hold `\u0000`; JSON with it gets U+FFFD in its strings instead.
pub(crate) fn pg_json(s: &str) -> Cow<'_, str> {
    fn scrub(value: &mut Value) {
        match value {
            Value::String(s) => *s = s.replace('\0', "\u{FFFD}"),
            Value::Array(items) => items.iter_mut().for_each(scrub),
            Value::Object(map) => {
                let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
                for (key, mut v) in entries {
                    scrub(&mut v);
                    map.insert(key.replace('\0', "\u{FFFD}"), v);
                }
            }
            _ => {}
        }
    }
    if !s.contains("\\u0000") {
        return Cow::Borrowed(s);
    }
    match serde_json::from_str::<Value>(s) {
        Ok(mut value) => {
            scrub(&mut value);
            Cow::Owned(value.to_string())
        }
        Err(_) => Cow::Borrowed(s),
    }
}

/// Migrations whose file changed after it shipped without changing what it does, with the
/// checksum (sha384) it shipped with. 20261204000001 lost a non-ASCII character from a comment,
/// which made it fail on LATIN1 databases.
const REWORDED: [(i64, &str); 1] = [(
    20_261_204_000_001,
    "6c4c10fe53eefb81fab86709ab145524e2ec086f5e0be1ba0ca3aa3b892c8aa08112d96882d8fcbe13c488e9890efda6",
)];

/// Applies Ingot's migrations. Safe to run from several hosts at once: sqlx serialises
/// migrators with an advisory lock, and applied migrations are skipped (their checksums checked).
/// A database that applied a reworded migration's old text is told its new checksum first, so
/// that it is not refused every migration after it.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    // Before the first migration the table is not there: nothing to tell.
    let _ = reworded().execute(pool).await;
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// [`migrate`] on one connection.
pub async fn migrate_on(conn: &mut PgConnection) -> Result<(), StoreError> {
    let _ = reworded().execute(&mut *conn).await;
    MIGRATOR.run(conn).await?;
    Ok(())
}

/// The statement that gives each reworded migration a database applied with its old text the
/// new checksum.
fn reworded() -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (mut versions, mut shipped, mut now) = (Vec::new(), Vec::new(), Vec::new());
    for (version, old) in REWORDED {
        if let (Some(migration), Ok(old)) = (MIGRATOR.iter().find(|m| m.version == version), hex::decode(old))
        {
            versions.push(version);
            shipped.push(old);
            now.push(migration.checksum.to_vec());
        }
    }
    sqlx::query(
        "UPDATE _sqlx_migrations m SET checksum = r.now
         FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS r (version, shipped, now)
         WHERE m.version = r.version AND m.checksum = r.shipped",
    )
    .bind(versions)
    .bind(shipped)
    .bind(now)
}

/// Applies Ingot's migrations unless the newest one this binary knows is already applied, which
/// one query tells: every command needs the schema, and most find it there (`ingot migrate`
/// always runs them all, checksums included).
pub async fn ensure_migrated(pool: &PgPool) -> Result<(), StoreError> {
    if is_migrated(&mut *pool.acquire().await?).await {
        return Ok(());
    }
    migrate(pool).await
}

/// [`ensure_migrated`] on one connection.
pub async fn ensure_migrated_on(conn: &mut PgConnection) -> Result<(), StoreError> {
    if is_migrated(conn).await {
        return Ok(());
    }
    migrate_on(conn).await
}

/// Whether the newest migration this binary knows is applied.
async fn is_migrated(conn: &mut PgConnection) -> bool {
    let newest = MIGRATOR.iter().map(|m| m.version).max();
    // A simple query: one round trip, where a prepared statement takes two.
    let applied = sqlx::raw_sql("SELECT max(version) AS version FROM _sqlx_migrations WHERE success")
        .fetch_one(conn)
        .await
        .and_then(|row| sqlx::Row::try_get::<Option<i64>, _>(&row, "version"));
    newest.is_some() && matches!(applied, Ok(found) if found == newest)
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The name stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a stored (or user-typed) name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where a batch is in its life.
    BatchStatus {
        /// Created, not yet started.
        Pending = "pending",
        /// Workers are (or were, if interrupted) processing it.
        Processing = "processing",
        /// Every item reached a final status.
        Completed = "completed",
        /// Stopped: rejected by its processor, stop-on-error, or a host failure.
        Failed = "failed",
        /// Cancelled by an operator.
        Cancelled = "cancelled",
        /// Never stored: a `processing` batch that no host is working on any more (its run was
        /// stopped, or its host died), as summaries report it. `ingot batch process` resumes it.
        Interrupted = "interrupted",
    }
}

string_enum! {
    /// Where an item is in its life.
    ItemStatus {
        /// Waiting to be processed (or to be retried).
        Pending = "pending",
        /// Reserved for in-flight items; the claim is the row lock, so committed rows are never
        /// left in this state.
        Processing = "processing",
        /// Imported; the processor's writes are committed.
        Completed = "completed",
        /// Not imported; the processor's writes were rolled back.
        Failed = "failed",
        /// Deliberately not imported by the processor.
        Skipped = "skipped",
    }
}
