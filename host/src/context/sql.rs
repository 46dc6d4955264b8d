//! The processor's database door: one connection, logged in as the processor's own role (see
//! [`login`](super::login)), lent to the processor only while the host holds an open item (or
//! hook) savepoint on it.
//!
//! Time is the host's to keep: the processor could change its own `statement_timeout`, so every
//! statement is also bounded by the deadline of the call it belongs to. Past it, the host cancels
//! the statement from its own connection and, if that does not end it, ends the backend.
//!
//! Each statement is described once per connection (sqlx caches the prepared statement), its
//! parameters are converted to the types the server inferred and bound — never interpolated —
//! and the extended protocol refuses more than one statement per call. A statement PostgreSQL
//! rejects aborts the item's transaction; from then on every call answers `aborted` and the item
//! fails with the first error, whatever the processor returns.

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{Column, Executor, Row, Statement, ValueRef};

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
    /// A statement was still running when the call's time limit was up; the host cancelled it.
    #[error("a statement ran past the processor's time limit; the host cancelled it")]
    TimeLimit,
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
    /// How the host cancels this connection's statements from outside.
    canceller: Option<Canceller>,
    /// Whether statements go through the SQL gate (always, but in tests of the wall alone).
    gate: bool,
    /// The host ended the backend because a statement outlived the call's time limit.
    ended_for_time: bool,
}

/// The host's own pool and the processor connection's backend: what cancelling a statement needs.
#[derive(Clone)]
struct Canceller {
    host: PgPool,
    pid: i32,
}

impl Canceller {
    /// Asks the server to cancel the backend's statement (the host is a member of the processor's
    /// role, which is what `pg_cancel_backend` requires).
    async fn cancel(&self) {
        let sent = sqlx::query("SELECT pg_cancel_backend($1)").bind(self.pid).execute(&self.host).await;
        if let Err(e) = sent {
            tracing::warn!(pid = self.pid, "could not cancel a processor statement: {e}");
        }
    }

    /// Ends the backend: its transaction rolls back and its connection closes.
    async fn terminate(&self) {
        let sent = sqlx::query("SELECT pg_terminate_backend($1)").bind(self.pid).execute(&self.host).await;
        if let Err(e) = sent {
            tracing::warn!(pid = self.pid, "could not end a processor backend past its time limit: {e}");
        }
    }
}

/// How a statement bounded by a deadline ended.
enum Bounded<T> {
    /// Before the deadline.
    Done(T),
    /// After it: the host cancelled the statement (or ended its backend).
    Late,
}

/// Waits for `work`. Past `deadline`, cancels the statement from the host's own connection, waits
/// a moment for it to end, and then ends the backend instead; `ended` says whether it had to.
async fn within<T>(
    deadline: Option<Instant>,
    canceller: Option<&Canceller>,
    ended: &mut bool,
    work: impl Future<Output = T>,
) -> Bounded<T> {
    let Some(deadline) = deadline else { return Bounded::Done(work.await) };
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => return Bounded::Done(out),
        () = tokio::time::sleep_until(deadline.into()) => {}
    }
    let Some(canceller) = canceller else {
        // Nobody can cancel the statement: the connection is lost to the item either way.
        *ended = true;
        return Bounded::Late;
    };
    canceller.cancel().await;
    if tokio::time::timeout(super::login::CANCEL_GRACE, &mut work).await.is_ok() {
        return Bounded::Late;
    }
    *ended = true;
    canceller.terminate().await;
    let _ = tokio::time::timeout(super::login::CANCEL_GRACE, &mut work).await;
    Bounded::Late
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
            canceller: None,
            gate: true,
            ended_for_time: false,
        }
    }

    /// Lets the host cancel this connection's statements through its own pool: `pid` is the
    /// connection's backend.
    pub fn with_canceller(mut self, host: PgPool, pid: i32) -> Self {
        self.canceller = Some(Canceller { host, pid });
        self
    }

    /// Lets every statement past the SQL gate, so that only PostgreSQL's own wall (the login
    /// role) stands between the processor and the database. For testing that wall alone.
    pub(crate) fn without_gate(&mut self) {
        self.gate = false;
    }

    /// Whether the host ended this connection's backend because a statement ran past the call's
    /// time limit (the item then fails for its time, not for a lost connection).
    pub(crate) fn ended_for_time(&self) -> bool {
        self.ended_for_time
    }

    /// Sets the sentence appended to permission errors, e.g. what the manifest grants.
    pub fn set_permission_hint(&mut self, hint: String) {
        self.permission_hint = Some(hint);
    }

    /// The gate's verdict on `sql`, remembered for the life of the connection.
    fn gate(&mut self, sql: &str) -> Result<(), Refusal> {
        if !self.gate {
            return Ok(());
        }
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

    /// Runs one processor statement, bounded by the call's `deadline`. `Ok(Err(_))` goes back to
    /// the guest; `Err(_)` traps.
    pub(crate) async fn run(
        &mut self,
        caps: &Caps,
        deadline: Option<Instant>,
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
        let prepared =
            within(deadline, self.canceller.as_ref(), &mut self.ended_for_time, self.conn.prepare(sql)).await;
        let types = match prepared {
            Bounded::Late => return Err(self.late()),
            Bounded::Done(Ok(statement)) => match statement.parameters() {
                Some(sqlx::Either::Left(types)) => types.to_vec(),
                _ => Vec::new(),
            },
            Bounded::Done(Err(e)) => return self.database_error(e).map(Err),
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
        let canceller = self.canceller.as_ref();
        if !want_rows {
            let done =
                within(deadline, canceller, &mut self.ended_for_time, query.execute(&mut self.conn)).await;
            return match done {
                Bounded::Late => Err(self.late()),
                Bounded::Done(Ok(done)) => Ok(Ok(SqlOutput::Affected(done.rows_affected()))),
                Bounded::Done(Err(e)) => self.database_error(e).map(Err),
            };
        }
        let max_rows = caps.query_rows;
        let conn = &mut self.conn;
        let fetched = within(deadline, canceller, &mut self.ended_for_time, async move {
            let mut stream = query.fetch(conn);
            let mut rows = Vec::new();
            loop {
                match stream.try_next().await {
                    Ok(Some(_)) if rows.len() >= max_rows => return Fetched::TooMany,
                    Ok(Some(row)) => rows.push(row),
                    Ok(None) => return Fetched::Rows(rows),
                    Err(e) => return Fetched::Failed(e),
                }
            }
        })
        .await;
        match fetched {
            Bounded::Late => Err(self.late()),
            Bounded::Done(Fetched::TooMany) => {
                Err(CapExceeded::count("rows returned by one query", caps.query_rows, "rows").into())
            }
            Bounded::Done(Fetched::Failed(e)) => self.database_error(e).map(Err),
            Bounded::Done(Fetched::Rows(rows)) => Ok(convert_rows(&rows).map(SqlOutput::Rows)),
        }
    }

    /// A statement outlived its call's time limit: the scope is aborted (or the connection gone),
    /// and the call ends with a trap.
    fn late(&mut self) -> ContextTrap {
        if self.ended_for_time {
            self.broken =
                Some("the host ended the connection: a statement ran past the processor's time limit".into());
        }
        self.aborted.get_or_insert(SqlFailure {
            message: "cancelled: the processor's time limit was up".into(),
            sqlstate: Some("57014".into()),
        });
        ContextTrap::TimeLimit
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

/// What fetching a query's rows came to.
enum Fetched {
    Rows(Vec<PgRow>),
    TooMany,
    Failed(sqlx::Error),
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
