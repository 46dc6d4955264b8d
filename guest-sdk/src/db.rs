//! SQL inside the item's transaction.
//!
//! Every statement runs in the same transaction as the item's `completed` mark, under the
//! processor's own database role, with parameters bound (never interpolated). A failed statement
//! aborts the item's transaction, so the item fails: prefer `ON CONFLICT` to catching errors.
//!
//! ```no_run
//! use ingot_guest::prelude::*;
//! # fn f() -> Result<(), SqlError> {
//! let n = db::execute("UPDATE stock SET qty = qty - $1 WHERE sku = $2", params![3, "A-1"])?;
//! let price: Option<i64> = db::query_scalar("SELECT price FROM prices WHERE sku = $1", params!["A-1"])?;
//! for row in db::query("SELECT sku, qty FROM stock WHERE qty < $1", params![10])? {
//!     let sku: String = row.get("sku")?;
//!     let qty: i64 = row.get(1)?;
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::rc::Rc;

use crate::__private::bindings::ingot::processor::context;
use crate::__private::wit;

/// A typed SQL value: a bound parameter or one column of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// boolean.
    Bool(bool),
    /// smallint, integer or bigint.
    Int(i64),
    /// real or double precision.
    Float(f64),
    /// text-like values, and numeric as its exact decimal text.
    Text(String),
    /// json or jsonb, as JSON text.
    Json(String),
    /// uuid, hyphenated.
    Uuid(String),
    /// timestamptz, timestamp or date, as RFC 3339 text.
    Timestamp(String),
    /// bytea.
    Bytes(Vec<u8>),
}

impl SqlValue {
    fn type_name(&self) -> &'static str {
        match self {
            SqlValue::Null => "NULL",
            SqlValue::Bool(_) => "a boolean",
            SqlValue::Int(_) => "an integer",
            SqlValue::Float(_) => "a float",
            SqlValue::Text(_) => "text",
            SqlValue::Json(_) => "JSON",
            SqlValue::Uuid(_) => "a uuid",
            SqlValue::Timestamp(_) => "a timestamp",
            SqlValue::Bytes(_) => "bytes",
        }
    }

    fn into_wit(self) -> wit::SqlValue {
        match self {
            SqlValue::Null => wit::SqlValue::Null,
            SqlValue::Bool(b) => wit::SqlValue::Boolean(b),
            SqlValue::Int(i) => wit::SqlValue::Int(i),
            SqlValue::Float(f) => wit::SqlValue::Float(f),
            SqlValue::Text(s) => wit::SqlValue::Text(s),
            SqlValue::Json(s) => wit::SqlValue::Json(s),
            SqlValue::Uuid(s) => wit::SqlValue::Uuid(s),
            SqlValue::Timestamp(s) => wit::SqlValue::Timestamp(s),
            SqlValue::Bytes(b) => wit::SqlValue::Bytes(b),
        }
    }

    fn from_wit(value: wit::SqlValue) -> Self {
        match value {
            wit::SqlValue::Null => SqlValue::Null,
            wit::SqlValue::Boolean(b) => SqlValue::Bool(b),
            wit::SqlValue::Int(i) => SqlValue::Int(i),
            wit::SqlValue::Float(f) => SqlValue::Float(f),
            wit::SqlValue::Text(s) => SqlValue::Text(s),
            wit::SqlValue::Json(s) => SqlValue::Json(s),
            wit::SqlValue::Uuid(s) => SqlValue::Uuid(s),
            wit::SqlValue::Timestamp(s) => SqlValue::Timestamp(s),
            wit::SqlValue::Bytes(b) => SqlValue::Bytes(b),
        }
    }
}

/// The class of a database failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlErrorKind {
    /// Not allowed for this processor (the SQL gate or its grants refused it).
    Denied,
    /// A malformed call: bad parameter, unsupported type, not exactly one statement, or a value
    /// that does not convert to the Rust type asked for.
    Invalid,
    /// PostgreSQL raised an error; see [`SqlError::sqlstate`].
    Database,
    /// A host cap was exceeded.
    Limit,
    /// An earlier statement of this item failed; the item will fail.
    Aborted,
}

/// Why a database call failed.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlError {
    kind: SqlErrorKind,
    message: String,
    sqlstate: Option<String>,
}

impl SqlError {
    fn invalid(message: String) -> Self {
        SqlError { kind: SqlErrorKind::Invalid, message, sqlstate: None }
    }

    /// The class of failure.
    pub fn kind(&self) -> SqlErrorKind {
        self.kind
    }

    /// The failure as a sentence.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// PostgreSQL's SQLSTATE, e.g. `"23505"` for a unique violation.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    fn from_wit(e: wit::SqlError) -> Self {
        let kind = match e.kind {
            wit::SqlErrorKind::Denied => SqlErrorKind::Denied,
            wit::SqlErrorKind::Invalid => SqlErrorKind::Invalid,
            wit::SqlErrorKind::Database => SqlErrorKind::Database,
            wit::SqlErrorKind::Limit => SqlErrorKind::Limit,
            wit::SqlErrorKind::Aborted => SqlErrorKind::Aborted,
        };
        SqlError { kind, message: e.message, sqlstate: e.sqlstate }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sqlstate {
            Some(state) => write!(f, "{} (SQLSTATE {state})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SqlError {}

/// A Rust value that can be bound as a SQL parameter. Use [`params!`](crate::params) to build a
/// parameter list from values of mixed types.
pub trait ToSql {
    /// The value as a SQL value.
    fn to_sql(&self) -> SqlValue;
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> SqlValue {
        (**self).to_sql()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> SqlValue {
        self.as_ref().map_or(SqlValue::Null, ToSql::to_sql)
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> SqlValue {
        self.clone()
    }
}

impl ToSql for bool {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Bool(*self)
    }
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> SqlValue {
                SqlValue::Int(i64::from(*self))
            }
        }
    )*};
}
int_to_sql!(i8, i16, i32, i64, u8, u16, u32);

impl ToSql for f32 {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Float(f64::from(*self))
    }
}

impl ToSql for f64 {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Float(*self)
    }
}

impl ToSql for str {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Text(self.to_owned())
    }
}

impl ToSql for String {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Text(self.clone())
    }
}

impl ToSql for [u8] {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Bytes(self.to_vec())
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Bytes(self.clone())
    }
}

/// A JSON value binds as json/jsonb.
impl ToSql for serde_json::Value {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Json(self.to_string())
    }
}

/// Builds a parameter list for [`execute`], [`query`] and friends from values of mixed types.
///
/// ```
/// # use ingot_guest::{params, db::SqlValue};
/// let email = String::from("a@b.co");
/// let country: Option<&str> = None;
/// let p = params![email, 42, country];
/// assert_eq!(p[2], SqlValue::Null);
/// ```
#[macro_export]
macro_rules! params {
    () => { &[] as &[$crate::db::SqlValue] };
    ($($value:expr),+ $(,)?) => {
        &[$($crate::db::ToSql::to_sql(&$value)),+] as &[$crate::db::SqlValue]
    };
}

/// A Rust type a SQL value converts into.
pub trait FromSql: Sized {
    /// Converts `value`, or says why it cannot.
    fn from_sql(value: &SqlValue) -> Result<Self, SqlError>;
}

fn mismatch<T>(value: &SqlValue, wanted: &str) -> Result<T, SqlError> {
    Err(SqlError::invalid(format!("a value of {} cannot be read as {wanted}", value.type_name())))
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_sql(value: &SqlValue) -> Result<Self, SqlError> {
        match value {
            SqlValue::Null => Ok(None),
            other => T::from_sql(other).map(Some),
        }
    }
}

impl FromSql for SqlValue {
    fn from_sql(value: &SqlValue) -> Result<Self, SqlError> {
        Ok(value.clone())
    }
}

impl FromSql for bool {
    fn from_sql(value: &SqlValue) -> Result<Self, SqlError> {
        match value {
            SqlValue::Bool(b) => Ok(*b),
            other => mismatch(other, "a boolean"),
        }
    }
}

macro_rules! int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn from_sql(value: &SqlValue) -> Result<Self, SqlError> {
                match value {
                    SqlValue::Int(i) => <$t>::try_from(*i).map_err(|_| {
                        SqlError::invalid(format!("{i} does not fit in {}", stringify!($t)))
                    }),
                    other => mismatch(other, stringify!($t)),
                }
            }
        }
    )*};
}
int_from_sql!(i8, i16, i32, i64, u8, u16, u32, u64);

impl FromSql for f64 {
    fn from_sql(value: &SqlValue) -> Result<Self, SqlError> {
        match value {
            SqlValue::Float(f) => Ok(*f),
            // Lossless for the integers a column can hold up to 2^53; callers asked for a float.
            #[allow(clippy::cast_precision_loss)]
            SqlValue::Int(i) => Ok(*i as f64),
            other => mismatch(other, "a float"),
        }
    }
}

/// Text, numeric (as decimal text), JSON text, uuids and timestamps all read as strings.
impl FromSql for String {
    fn from_sql(value: &SqlValue) -> Result<Self, SqlError> {
        match value {
            SqlValue::Text(s) | SqlValue::Json(s) | SqlValue::Uuid(s) | SqlValue::Timestamp(s) => {
                Ok(s.clone())
            }
            SqlValue::Int(i) => Ok(i.to_string()),
            other => mismatch(other, "text"),
        }
    }
}

impl FromSql for Vec<u8> {
    fn from_sql(value: &SqlValue) -> Result<Self, SqlError> {
        match value {
            SqlValue::Bytes(b) => Ok(b.clone()),
            other => mismatch(other, "bytes"),
        }
    }
}

impl FromSql for serde_json::Value {
    fn from_sql(value: &SqlValue) -> Result<Self, SqlError> {
        match value {
            SqlValue::Json(s) => serde_json::from_str(s)
                .map_err(|e| SqlError::invalid(format!("the host returned invalid JSON: {e}"))),
            SqlValue::Null => Ok(serde_json::Value::Null),
            SqlValue::Bool(b) => Ok((*b).into()),
            SqlValue::Int(i) => Ok((*i).into()),
            SqlValue::Float(f) => Ok((*f).into()),
            SqlValue::Text(s) | SqlValue::Uuid(s) | SqlValue::Timestamp(s) => Ok(s.clone().into()),
            other @ SqlValue::Bytes(_) => mismatch(other, "JSON"),
        }
    }
}

/// One result row; columns can be read by position or by name.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Rc<[String]>,
    values: Vec<SqlValue>,
}

/// A column position or name, for [`Row::get`].
pub trait ColumnIndex {
    /// The column's position in `columns`, if there is one.
    fn position(&self, columns: &[String]) -> Option<usize>;
    /// How to name the column in an error.
    fn describe(&self) -> String;
}

impl ColumnIndex for usize {
    fn position(&self, columns: &[String]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
    fn describe(&self) -> String {
        format!("column {self}")
    }
}

impl ColumnIndex for &str {
    fn position(&self, columns: &[String]) -> Option<usize> {
        columns.iter().position(|c| c == self)
    }
    fn describe(&self) -> String {
        format!("column \"{self}\"")
    }
}

impl Row {
    /// Reads one column as `T`.
    pub fn get<T: FromSql>(&self, column: impl ColumnIndex) -> Result<T, SqlError> {
        let position = column.position(&self.columns).ok_or_else(|| {
            SqlError::invalid(format!(
                "the query returned no {}; its columns are: {}",
                column.describe(),
                self.columns.join(", ")
            ))
        })?;
        T::from_sql(&self.values[position])
            .map_err(|e| SqlError::invalid(format!("{}: {}", column.describe(), e.message)))
    }

    /// The column names, in select-list order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The raw values, one per column.
    pub fn values(&self) -> &[SqlValue] {
        &self.values
    }
}

fn to_wit(params: &[SqlValue]) -> Vec<wit::SqlValue> {
    params.iter().cloned().map(SqlValue::into_wit).collect()
}

/// Runs one data statement (INSERT, UPDATE, DELETE, MERGE, …) and returns the rows it affected.
pub fn execute(sql: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
    context::execute(sql, &to_wit(params)).map_err(SqlError::from_wit)
}

/// Runs one query and returns all its rows.
pub fn query(sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, SqlError> {
    let rows = context::query(sql, &to_wit(params)).map_err(SqlError::from_wit)?;
    let columns: Rc<[String]> = rows.columns.into();
    Ok(rows
        .rows
        .into_iter()
        .map(|values| Row {
            columns: Rc::clone(&columns),
            values: values.into_iter().map(SqlValue::from_wit).collect(),
        })
        .collect())
}

/// Runs a query that returns at most one row.
pub fn query_opt(sql: &str, params: &[SqlValue]) -> Result<Option<Row>, SqlError> {
    let mut rows = query(sql, params)?;
    match rows.len() {
        0 | 1 => Ok(rows.pop()),
        n => Err(SqlError::invalid(format!("the query returned {n} rows; expected at most one"))),
    }
}

/// Runs a query that returns exactly one row.
pub fn query_one(sql: &str, params: &[SqlValue]) -> Result<Row, SqlError> {
    query_opt(sql, params)?
        .ok_or_else(|| SqlError::invalid("the query returned no rows; expected one".to_owned()))
}

/// Runs a query that returns one row and reads its first column as `T`. Ask for an `Option<T>`
/// when the query may return no row (or NULL).
pub fn query_scalar<T: FromSql>(sql: &str, params: &[SqlValue]) -> Result<T, SqlError> {
    match query_opt(sql, params)? {
        Some(row) => row.get(0),
        None => T::from_sql(&SqlValue::Null)
            .map_err(|_| SqlError::invalid("the query returned no rows; expected one".to_owned())),
    }
}

/// Inserts `record` (a struct or map that serializes to a JSON object, one column per field)
/// into `table`, or, when a row with the same `key` column exists, updates its other columns
/// to the record's: `INSERT … ON CONFLICT (key) DO UPDATE SET … RETURNING *`. Returns the row as
/// stored (its generated id, defaults). `key` needs a unique index or constraint. Values bind
/// with the types PostgreSQL expects (text for dates and exact decimals, JSON for nested
/// values); numbers keep their digits.
///
/// ```no_run
/// # use ingot_guest::prelude::*;
/// # fn f() -> Result<(), SqlError> {
/// let customer = serde_json::json!({"email": "ada@example.com", "name": "Ada"});
/// let id: i64 = db::upsert("customers", "email", &customer)?.get("id")?;
/// # Ok(()) }
/// ```
pub fn upsert(table: &str, key: &str, record: &impl serde::Serialize) -> Result<Row, SqlError> {
    let fields = match serde_json::to_value(record) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => {
            return Err(SqlError::invalid(format!(
                "a record to upsert into {table} must be a struct or a map"
            )));
        }
        Err(e) => {
            return Err(SqlError::invalid(format!(
                "the record to upsert into {table} cannot be written: {e}"
            )));
        }
    };
    if !fields.contains_key(key) {
        return Err(SqlError::invalid(format!("the record to upsert into {table} has no {key:?} field")));
    }
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let table_sql: Vec<String> = table.split('.').map(quote).collect();
    let columns: Vec<String> = fields.keys().map(|c| quote(c)).collect();
    let placeholders: Vec<String> = (1..=fields.len()).map(|i| format!("${i}")).collect();
    let updates: Vec<String> =
        fields.keys().filter(|c| *c != key).map(|c| format!("{0} = EXCLUDED.{0}", quote(c))).collect();
    let on_conflict = if updates.is_empty() {
        // Nothing to change: still return the row that is there.
        format!("DO UPDATE SET {0} = EXCLUDED.{0}", quote(key))
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict} RETURNING *",
        table_sql.join("."),
        columns.join(", "),
        placeholders.join(", "),
        quote(key)
    );
    let params: Vec<SqlValue> = fields.into_iter().map(|(_, value)| json_param(value)).collect();
    query_one(&sql, &params)
}

/// A JSON value as a statement parameter: numbers as written (an integer, or exact text).
fn json_param(value: serde_json::Value) -> SqlValue {
    use serde_json::Value;
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Bool(b),
        Value::Number(n) => n.as_i64().map_or_else(|| SqlValue::Text(n.to_string()), SqlValue::Int),
        Value::String(s) => SqlValue::Text(s),
        nested => SqlValue::Json(nested.to_string()),
    }
}
