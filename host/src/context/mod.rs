//! The only door from a processor to the world. "What can a guest touch?" has its answer here:
//!
//! - [`wasi`]: WASI 0.2 with nothing ambient (no files, env, args, network; clocks and random
//!   allowed); stdout/stderr captured into item logs.
//! - [`login`]: the wall — the processor's SQL runs on connections logged in as its own role.
//! - [`sql`]: one statement at a time, in the item's transaction, parameters bound, bounded by the
//!   call's time limit, on a connection lent only while the host holds the item's savepoint.
//! - [`results`]: the bounds on what the processor's statements bring back, per row (checked by
//!   the server) and per item.
//! - [`gate`]: the SQL gate, PostgreSQL's own parser deciding which statements may pass (defence
//!   in depth: the login role is the wall).
//! - [`grants`]: the processor's database role, whose privileges are its manifest's grants.
//! - [`logs`]: buffered lines that survive the item's rollback.
//! - [`metadata`]: the batch's JSON metadata, changed together with the item.
//! - [`jsonb`]: JSON a processor hands the host, checked the way PostgreSQL will check it.
//! - [`caps`]: the bounds on all of the above.
//!
//! A guest mistake (bad SQL, a refused statement) comes back to the guest as a WIT error it can
//! handle; an exceeded cap or a broken connection ends the call with a trap.

pub mod caps;
pub mod gate;
pub mod grants;
pub mod jsonb;
pub mod login;
pub mod logs;
pub mod metadata;
pub mod results;
pub mod sql;
pub mod sql_value;
pub mod wasi;

use self::caps::Caps;
use self::logs::{LogBuffer, LogLevel};
use self::metadata::MetadataView;
use self::sql::{ContextTrap, DbSession, SqlOutput};
use crate::runtime::bindings::ingot::processor::{context, types};
use crate::runtime::bindings::{Rows, SqlError, SqlValue};
use crate::runtime::state::HostState;

/// What a processor's imports act on. It belongs to the worker, is lent to the instance's store
/// for each call, and taken back after it, so it survives the instance being replaced.
#[derive(Debug, Default)]
pub struct ProcessorContext {
    /// The worker's connection; `None` for processors run without a database (tests, `ingot
    /// processors`).
    pub db: Option<DbSession>,
    /// Lines written during the current item or hook.
    pub logs: LogBuffer,
    /// The batch metadata as the processor sees it.
    pub metadata: MetadataView,
    /// The caps in force.
    pub caps: Caps,
    /// Fuel burned by the current item (0 without fuel metering).
    pub fuel_used: u64,
    /// When the current call's time limit is up; its SQL is cancelled past it.
    pub deadline: Option<std::time::Instant>,
}

impl ProcessorContext {
    /// A context whose processor may use `conn` while the host holds an item or hook savepoint.
    pub fn with_connection(conn: sqlx::PgConnection, caps: Caps) -> Self {
        Self::with_session(DbSession::new(conn), caps)
    }

    /// A context whose processor may use `session` while the host holds an item or hook savepoint.
    pub fn with_session(session: DbSession, caps: Caps) -> Self {
        ProcessorContext { db: Some(session), caps, ..Default::default() }
    }

    /// Forgets the previous item's logs, fuel and metadata changes.
    pub fn begin_scope(&mut self) {
        self.logs.reset();
        self.fuel_used = 0;
        self.metadata.discard();
    }

    /// Runs a statement for native (host-compiled) processor logic, exactly as a component's
    /// `query` would: gate, role, caps. A cap or a broken connection comes back as an error.
    pub async fn query(&mut self, sql: &str, params: Vec<SqlValue>) -> Result<Rows, SqlError> {
        match self.run_sql(sql.to_owned(), params, true).await {
            Ok(Ok(SqlOutput::Rows(rows))) => Ok(rows),
            Ok(Ok(SqlOutput::Affected(_))) => Ok(Rows { columns: Vec::new(), rows: Vec::new() }),
            Ok(Err(e)) => Err(e),
            Err(trap) => Err(SqlError {
                kind: types::SqlErrorKind::Limit,
                message: format!("{trap:#}"),
                sqlstate: None,
            }),
        }
    }

    async fn run_sql(
        &mut self,
        sql: String,
        params: Vec<SqlValue>,
        want_rows: bool,
    ) -> wasmtime::Result<Result<SqlOutput, SqlError>> {
        let Some(db) = self.db.as_mut() else {
            return Ok(Err(SqlError {
                kind: types::SqlErrorKind::Invalid,
                message: "this processor runs without a database".into(),
                sqlstate: None,
            }));
        };
        db.run(&self.caps, self.deadline, &sql, params, want_rows).await.map_err(wasmtime::Error::new)
    }
}

impl types::Host for HostState {}

// The guest's imports. Every one is answered from `self.context`; none reaches anything else.
impl context::Host for HostState {
    async fn execute(
        &mut self,
        sql: String,
        params: Vec<SqlValue>,
    ) -> wasmtime::Result<Result<u64, SqlError>> {
        Ok(self.context.run_sql(sql, params, false).await?.map(|out| match out {
            SqlOutput::Affected(n) => n,
            SqlOutput::Rows(rows) => rows.rows.len() as u64,
        }))
    }

    async fn query(
        &mut self,
        sql: String,
        params: Vec<SqlValue>,
    ) -> wasmtime::Result<Result<Rows, SqlError>> {
        Ok(self.context.run_sql(sql, params, true).await?.map(|out| match out {
            SqlOutput::Rows(rows) => rows,
            SqlOutput::Affected(_) => Rows { columns: Vec::new(), rows: Vec::new() },
        }))
    }

    async fn log(
        &mut self,
        level: types::LogLevel,
        message: String,
        details: Option<String>,
    ) -> wasmtime::Result<()> {
        let ctx = &mut self.context;
        ctx.logs.push_guest(&ctx.caps, LogLevel::from(level), message, details).map_err(wasmtime::Error::new)
    }

    async fn get_metadata(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.context.metadata.get(&key))
    }

    async fn set_metadata(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let ctx = &mut self.context;
        ctx.metadata.set(&ctx.caps, key, &value).map_err(|cap| wasmtime::Error::new(ContextTrap::Cap(cap)))
    }
}
