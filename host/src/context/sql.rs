//! The processor's database door: one connection, lent to the processor only while the host
//! holds an open item (or hook) savepoint on it.
//!
//! Each statement is described once per connection (sqlx caches the prepared statement), its
//! parameters are converted to the types the server inferred and bound — never interpolated —
//! and the extended protocol refuses more than one statement per call. A statement PostgreSQL
//! rejects aborts the item's transaction; from then on every call answers `aborted` and the item
//! fails with the first error, whatever the processor returns.

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Column, Executor, Row, Statement, ValueRef};

use std::collections::HashMap;

use super::caps::{CapExceeded, Caps};
use super::gate::{self, Refusal};
use super::sql_value::{BoundParam, decode};
use crate::runtime::bindings::{Rows, SqlError, SqlErrorKind, SqlValue};

/// Distinct statements whose gate verdict a connection remembers.
const GATE_CACHE_ENTRIES: usize = 1024;

/// A failure inside a context call that ends the guest call (a trap) instead of being handed
/// to the guest. Blame: the guest for caps, the host for connection failures.
#[derive(Debug, thiserror::Error)]
pub enum ContextTrap {
    /// The processor exceeded a cap.
    #[error(transparent)]
    Cap(#[from] CapExceeded),
    /// The database connection failed under the processor (not the processor's fault).
    #[error("the database connection failed while the processor was running: {0}")]
    Connection(String),
}

/// What a statement produced.
#[derive(Debug)]
pub(crate) enum SqlOutput {
    Affected(u64),
    Rows(Rows),
}

/// The first database error of the current item: it is what the item fails with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFailure {
    /// PostgreSQL's message.
    pub message: String,
    /// PostgreSQL's SQLSTATE.
    pub sqlstate: Option<String>,
}

impl std::fmt::Display for SqlFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sqlstate {
            Some(state) => write!(f, "SQL error {state}: {}", self.message),
            None => write!(f, "SQL error: {}", self.message),
        }
    }
}

/// The connection a worker lends its processor, and whether the processor may use it now.
pub struct DbSession {
    conn: PgConnection,
    open: bool,
    aborted: Option<SqlFailure>,
    broken: Option<String>,
    /// The gate's verdict per SQL text: processors send the same few statements again and again.
    verdicts: HashMap<String, Result<(), Refusal>>,
    /// Appended to "permission denied" errors: what the processor's manifest grants.
    permission_hint: Option<String>,
}

impl std::fmt::Debug for DbSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSession")
            .field("open", &self.open)
            .field("aborted", &self.aborted)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

fn sql_error(kind: SqlErrorKind, message: impl Into<String>) -> SqlError {
    SqlError { kind, message: message.into(), sqlstate: None }
}

impl DbSession {
    /// Wraps a connection; the processor may not use it until [`open`](Self::open).
    pub fn new(conn: PgConnection) -> Self {
        DbSession {
            conn,
            open: false,
            aborted: None,
            broken: None,
            verdicts: HashMap::new(),
            permission_hint: None,
        }
    }

    /// Sets the sentence appended to permission errors, e.g. what the manifest grants.
    pub fn set_permission_hint(&mut self, hint: String) {
        self.permission_hint = Some(hint);
    }

    /// The gate's verdict on `sql`, remembered for the life of the connection.
    fn gate(&mut self, sql: &str) -> Result<(), Refusal> {
        if let Some(verdict) = self.verdicts.get(sql) {
            return verdict.clone();
        }
        let verdict = gate::check(sql);
        if self.verdicts.len() >= GATE_CACHE_ENTRIES {
            self.verdicts.clear();
        }
        self.verdicts.insert(sql.to_owned(), verdict.clone());
        verdict
    }

    /// The connection, for the host's own statements.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Gives the connection back.
    pub fn into_conn(self) -> PgConnection {
        self.conn
    }

    /// Lets the processor run statements: the host has opened its savepoint.
    pub(crate) fn open(&mut self) {
        self.open = true;
        self.aborted = None;
    }

    /// Ends processor access; returns the error that aborted the scope, if any.
    pub(crate) fn close(&mut self) -> Option<SqlFailure> {
        self.open = false;
        self.aborted.take()
    }

    /// Why the connection is unusable, if a processor call found it broken.
    pub(crate) fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Runs one processor statement. `Ok(Err(_))` goes back to the guest; `Err(_)` traps.
    pub(crate) async fn run(
        &mut self,
        caps: &Caps,
        sql: &str,
        params: Vec<SqlValue>,
        want_rows: bool,
    ) -> Result<Result<SqlOutput, SqlError>, ContextTrap> {
        if sql.len() > caps.sql_bytes {
            return Err(CapExceeded::bytes("SQL text per statement", caps.sql_bytes).into());
        }
        if params.len() > caps.params {
            return Err(CapExceeded::count("parameters per statement", caps.params, "parameters").into());
        }
        if !self.open {
            return Ok(Err(sql_error(
                SqlErrorKind::Invalid,
                "the database is only available while an item or a batch hook runs",
            )));
        }
        if let Some(first) = &self.aborted {
            return Ok(Err(sql_error(
                SqlErrorKind::Aborted,
                format!("an earlier statement of this item failed ({first}); the item will fail"),
            )));
        }
        if let Err(refusal) = self.gate(sql) {
            return Ok(Err(SqlError {
                kind: SqlErrorKind::Denied,
                message: refusal.to_string(),
                sqlstate: None,
            }));
        }
        let types = match self.conn.prepare(sql).await {
            Ok(statement) => match statement.parameters() {
                Some(sqlx::Either::Left(types)) => types.to_vec(),
                _ => Vec::new(),
            },
            Err(e) => return self.database_error(e).map(Err),
        };
        if types.len() != params.len() {
            return Ok(Err(sql_error(
                SqlErrorKind::Invalid,
                format!(
                    "the statement takes {} parameter(s) but {} value(s) were given",
                    types.len(),
                    params.len()
                ),
            )));
        }
        let mut arguments = sqlx::postgres::PgArguments::default();
        for (i, (ty, value)) in types.iter().zip(params).enumerate() {
            let bound = match BoundParam::new(i + 1, ty, value) {
                Ok(bound) => bound,
                Err(message) => return Ok(Err(sql_error(SqlErrorKind::Invalid, message))),
            };
            if let Err(e) = sqlx::Arguments::add(&mut arguments, bound) {
                return Ok(Err(sql_error(SqlErrorKind::Invalid, format!("parameter ${}: {e}", i + 1))));
            }
        }
        let query = sqlx::query_with(sql, arguments);
        if !want_rows {
            return match query.execute(&mut self.conn).await {
                Ok(done) => Ok(Ok(SqlOutput::Affected(done.rows_affected()))),
                Err(e) => self.database_error(e).map(Err),
            };
        }
        let mut stream = query.fetch(&mut self.conn);
        let mut rows = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(row)) if rows.len() >= caps.query_rows => {
                    drop(row);
                    return Err(
                        CapExceeded::count("rows returned by one query", caps.query_rows, "rows").into()
                    );
                }
                Ok(Some(row)) => rows.push(row),
                Ok(None) => break,
                Err(e) => {
                    drop(stream);
                    return self.database_error(e).map(Err);
                }
            }
        }
        drop(stream);
        Ok(convert_rows(&rows).map(SqlOutput::Rows))
    }

    /// Sorts an sqlx error into the guest's fault (PostgreSQL rejected the statement: the
    /// transaction is now aborted) or the connection's (a trap; the worker must reconnect).
    fn database_error(&mut self, e: sqlx::Error) -> Result<SqlError, ContextTrap> {
        match e {
            sqlx::Error::Database(db) => {
                let sqlstate = db.code().map(|c| c.into_owned());
                let mut message = db.message().to_owned();
                if let (Some("42501"), Some(hint)) = (sqlstate.as_deref(), &self.permission_hint) {
                    message = format!("{message} ({hint})");
                }
                let failure = SqlFailure { message, sqlstate };
                let error = SqlError {
                    kind: SqlErrorKind::Database,
                    message: failure.message.clone(),
                    sqlstate: failure.sqlstate.clone(),
                };
                self.aborted.get_or_insert(failure);
                Ok(error)
            }
            other => {
                let message = other.to_string();
                self.broken = Some(message.clone());
                Err(ContextTrap::Connection(message))
            }
        }
    }
}

fn convert_rows(rows: &[PgRow]) -> Result<Rows, SqlError> {
    let Some(first) = rows.first() else {
        return Ok(Rows { columns: Vec::new(), rows: Vec::new() });
    };
    let columns: Vec<String> = first.columns().iter().map(|c| c.name().to_owned()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, column) in row.columns().iter().enumerate() {
            let raw = row.try_get_raw(i).map_err(|e| sql_error(SqlErrorKind::Invalid, e.to_string()))?;
            let bytes = if raw.is_null() { None } else { raw.as_bytes().ok() };
            let value = decode(column.type_info(), bytes).map_err(|why| {
                sql_error(
                    SqlErrorKind::Invalid,
                    format!(
                        "column \"{name}\" {why}, which the context cannot return; cast it in the \
                         query, e.g. {name}::text",
                        name = column.name()
                    ),
                )
            })?;
            values.push(value);
        }
        out.push(values);
    }
    Ok(Rows { columns, rows: out })
}
