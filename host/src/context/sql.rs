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
use super::results;
use super::sql_value::{BoundParam, decode};
use crate::runtime::bindings::{Rows, SqlError, SqlErrorKind, SqlValue};

/// How long the host waits for a processor backend it ended to be gone.
const TERMINATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Distinct statements whose gate verdict a connection remembers, and the longest statement it
/// remembers one for: at most a few hundred KiB per connection, whatever the processor sends.
const GATE_CACHE_ENTRIES: usize = 256;
const GATE_CACHE_SQL_BYTES: usize = 2 << 10;

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
    /// The processor wrote log details PostgreSQL cannot store.
    #[error("{0}")]
    InvalidLog(String),
}

/// Why the host itself ended a processor connection's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A statement outlived the call's time limit.
    Time,
    /// The processor's query results passed their cap.
    Cap(CapExceeded),
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
    /// Why the host ended the backend, if it did.
    ended: Option<Ended>,
    /// Bytes of rows the processor's statements may still bring back in the current call.
    result_left: usize,
    /// Ingot's schema, quoted: where the server-side row check lives (`None`: no check, for
    /// connections that are not a processor's).
    framework: Option<String>,
    /// Each statement whose rows the server must check first, rewritten to do so.
    guarded: HashMap<String, String>,
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

    /// Ends the backend and waits (a few seconds at most) until it is gone: its transaction has
    /// rolled back and its locks — the item's claim among them — are free again.
    async fn terminate(&self) {
        let sent = sqlx::query("SELECT pg_terminate_backend($1)").bind(self.pid).execute(&self.host).await;
        if let Err(e) = sent {
            tracing::warn!(pid = self.pid, "could not end a processor backend: {e}");
            return;
        }
        let gone_by = Instant::now() + TERMINATE_WAIT;
        while Instant::now() < gone_by {
            let alive: Result<bool, _> =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(self.pid)
                    .fetch_one(&self.host)
                    .await;
            if !matches!(alive, Ok(true)) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
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
    ended: &mut Option<Ended>,
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
        *ended = Some(Ended::Time);
        return Bounded::Late;
    };
    canceller.cancel().await;
    if tokio::time::timeout(super::login::CANCEL_GRACE, &mut work).await.is_ok() {
        return Bounded::Late;
    }
    *ended = Some(Ended::Time);
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
            ended: None,
            result_left: usize::MAX,
            framework: None,
            guarded: HashMap::new(),
        }
    }

    /// Has the server check each row of the processor's statements against the cap on results
    /// before sending it, with the function in Ingot's schema `framework` (quoted).
    pub(crate) fn check_rows_in(&mut self, framework: &str) {
        if self.framework.as_deref() != Some(framework) {
            self.framework = Some(framework.to_owned());
            self.guarded.clear();
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

    /// Why the host ended this connection, if it did: the item then fails for that reason (its
    /// time, its results), not for a lost connection.
    pub(crate) fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
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
        if sql.len() <= GATE_CACHE_SQL_BYTES {
            if self.verdicts.len() >= GATE_CACHE_ENTRIES {
                self.verdicts.clear();
            }
            self.verdicts.insert(sql.to_owned(), verdict.clone());
        }
        verdict
    }

    /// Closes the connection, waiting until the server has let it go.
    pub(crate) async fn disconnect(self) {
        let _ = sqlx::Connection::close(self.conn).await;
    }

    /// Runs the host's own statements on the connection: `work` gets it. (One door for every
    /// host statement on a processor's connection.)
    pub(crate) async fn host<'s, T>(
        &'s mut self,
        work: impl FnOnce(&'s mut PgConnection) -> futures_util::future::BoxFuture<'s, T>,
    ) -> T {
        work(&mut self.conn).await
    }

    /// Lets the processor run statements: the host has opened its savepoint. The call's
    /// statements may bring back `result_bytes` in all.
    pub(crate) fn open(&mut self, result_bytes: usize) {
        self.open = true;
        self.aborted = None;
        self.result_left = result_bytes;
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
        let param_bytes: usize = params.iter().map(param_size).sum();
        if param_bytes > caps.param_bytes {
            return Err(CapExceeded::bytes("parameter bytes per statement", caps.param_bytes).into());
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
        let described =
            within(deadline, self.canceller.as_ref(), &mut self.ended, self.conn.prepare(sql)).await;
        let (mut types, guard) = match described {
            Bounded::Late => return Err(self.late()),
            Bounded::Done(Ok(statement)) => {
                let guard = results::needs_guard(statement.columns().iter().map(|c| c.type_info()));
                (parameter_types(&statement), guard)
            }
            Bounded::Done(Err(e)) => return self.database_error(caps, e).await.map(Err),
        };
        // Rows that may be of any size are checked by the server before it sends them.
        let guarded = match (guard, self.framework.clone()) {
            (true, Some(framework)) => match self.guarded_sql(sql, &framework, caps.result_bytes) {
                Ok(guarded) => guarded,
                Err(why) => {
                    return Ok(Err(sql_error(
                        SqlErrorKind::Invalid,
                        format!("the statement's rows cannot be checked for size ({why}), so it is not sent"),
                    )));
                }
            },
            _ => None,
        };
        let sql = match guarded {
            Some(guarded) => {
                let described =
                    within(deadline, self.canceller.as_ref(), &mut self.ended, self.conn.prepare(&guarded))
                        .await;
                types = match described {
                    Bounded::Late => return Err(self.late()),
                    Bounded::Done(Ok(statement)) => parameter_types(&statement),
                    Bounded::Done(Err(e)) => return self.database_error(caps, e).await.map(Err),
                };
                std::borrow::Cow::Owned(guarded)
            }
            _ => std::borrow::Cow::Borrowed(sql),
        };
        let sql = sql.as_ref();
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
            let done = within(deadline, canceller, &mut self.ended, query.execute(&mut self.conn)).await;
            return match done {
                Bounded::Late => Err(self.late()),
                Bounded::Done(Ok(done)) => Ok(Ok(SqlOutput::Affected(done.rows_affected()))),
                Bounded::Done(Err(e)) => self.database_error(caps, e).await.map(Err),
            };
        }
        let max_rows = caps.query_rows;
        let conn = &mut self.conn;
        let left = &mut self.result_left;
        let fetching = async move {
            let mut stream = query.fetch(conn);
            let mut rows = Vec::new();
            loop {
                match stream.try_next().await {
                    Ok(Some(_)) if rows.len() >= max_rows => return Fetched::TooMany,
                    Ok(Some(row)) => {
                        let size = row_bytes(&row);
                        if size > *left {
                            return Fetched::TooLarge;
                        }
                        *left -= size;
                        rows.push(row);
                    }
                    Ok(None) => return Fetched::Rows(rows),
                    Err(e) => return Fetched::Failed(e),
                }
            }
        };
        let fetched = within(deadline, canceller, &mut self.ended, fetching).await;
        match fetched {
            Bounded::Late => Err(self.late()),
            // The rest of the rows would still have to be read before the next statement: end
            // the connection instead.
            Bounded::Done(Fetched::TooMany) => Err(self
                .end_for(CapExceeded::count("rows returned by one query", caps.query_rows, "rows"))
                .await),
            Bounded::Done(Fetched::TooLarge) => {
                Err(self.end_for(CapExceeded::bytes("query results per item", caps.result_bytes)).await)
            }
            Bounded::Done(Fetched::Failed(e)) => self.database_error(caps, e).await.map(Err),
            Bounded::Done(Fetched::Rows(rows)) => Ok(convert_rows(&rows).map(SqlOutput::Rows)),
        }
    }

    /// `sql` rewritten so that the server checks each row's size before sending it (see
    /// [`results`]), remembered per connection.
    fn guarded_sql(&mut self, sql: &str, framework: &str, cap: usize) -> Result<Option<String>, String> {
        if let Some(guarded) = self.guarded.get(sql) {
            return Ok(Some(guarded.clone()));
        }
        let Some(guarded) = results::guarded(sql, framework, cap)? else { return Ok(None) };
        if sql.len() <= GATE_CACHE_SQL_BYTES {
            if self.guarded.len() >= GATE_CACHE_ENTRIES {
                self.guarded.clear();
            }
            self.guarded.insert(sql.to_owned(), guarded.clone());
        }
        Ok(Some(guarded))
    }

    /// Ends the connection because the processor passed `cap`: the backend — which may go on
    /// computing rows, holding the item's claim, until it next writes — is ended from the host's
    /// side, and the worker logs in afresh.
    async fn end_for(&mut self, cap: CapExceeded) -> ContextTrap {
        if let Some(canceller) = &self.canceller {
            canceller.terminate().await;
        }
        self.broken = Some(format!("the host ended the connection: {cap}"));
        self.ended = Some(Ended::Cap(cap.clone()));
        ContextTrap::Cap(cap)
    }

    /// A statement outlived its call's time limit: the scope is aborted (or the connection gone),
    /// and the call ends with a trap.
    fn late(&mut self) -> ContextTrap {
        if self.ended.is_some() {
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
    /// transaction is now aborted; a row passed the cap on results, which traps) or the
    /// connection's (a trap; the worker must reconnect).
    async fn database_error(&mut self, caps: &Caps, e: sqlx::Error) -> Result<SqlError, ContextTrap> {
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some(results::ROW_TOO_LARGE_STATE)
            && db.message().starts_with(results::ROW_TOO_LARGE_PREFIX)
        {
            let cap = CapExceeded::bytes("query results per item", caps.result_bytes);
            self.aborted
                .get_or_insert(SqlFailure { message: cap.to_string(), sqlstate: Some("54000".into()) });
            return Err(ContextTrap::Cap(cap));
        }
        match e {
            sqlx::Error::Database(db) => {
                let sqlstate = db.code().map(|c| c.into_owned());
                // PostgreSQL quotes whole values in some messages ("invalid input syntax for type
                // integer: …"): keep no more than an error message may hold.
                let mut message = caps.message(db.message()).into_owned();
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

/// Bytes a parameter puts on the wire, roughly.
fn param_size(value: &SqlValue) -> usize {
    match value {
        SqlValue::Text(s) | SqlValue::Json(s) | SqlValue::Uuid(s) | SqlValue::Timestamp(s) => s.len(),
        SqlValue::Bytes(b) => b.len(),
        _ => 8,
    }
}

/// The parameter types the server inferred for a prepared statement.
fn parameter_types(statement: &sqlx::postgres::PgStatement<'_>) -> Vec<sqlx::postgres::PgTypeInfo> {
    match statement.parameters() {
        Some(sqlx::Either::Left(types)) => types.to_vec(),
        _ => Vec::new(),
    }
}

/// Bytes of a row's values as they came over the wire.
fn row_bytes(row: &PgRow) -> usize {
    (0..row.len())
        .map(|i| row.try_get_raw(i).ok().and_then(|v| v.as_bytes().ok().map(<[u8]>::len)).unwrap_or(0) + 4)
        .sum()
}

/// What fetching a query's rows came to.
enum Fetched {
    Rows(Vec<PgRow>),
    TooMany,
    TooLarge,
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
