//! The operator's manifest beside each processor, `processors/<batch_type>.toml`:
//!
//! ```toml
//! [grants]                       # table -> privileges of the processor's database role
//! customers = ["select", "insert", "update"]
//! "billing.invoices" = ["select"]
//!
//! [limits]
//! timeout_ms = 5000              # wall time per call
//! memory_mb = 64                 # linear memory of the instance
//! fuel = 50_000_000              # optional: fuel per call (turns on fuel metering)
//! statement_timeout_ms = 5000    # each SQL statement; defaults to timeout_ms
//! result_bytes = 8_388_608       # any cap of `Caps` by its name: query results per item, …
//!
//! [batch]
//! stop_on_error = false          # stop the batch at its first failed item
//! max_failures = 100             # optional: fail the batch once more items than this failed
//! max_failure_rate = 0.05        # optional: ... or once more than this share of them did
//! max_attempts = 3               # attempts for retryable failures
//! durability = "batch"           # or "item": a WAL flush per item (see README, Guarantees)
//! items_per_commit = 16          # under batch durability: most items one transaction runs
//! atomic = false                 # all or nothing: keep the items' writes only if none failed
//! key = "Order ID"               # items with the same value run one at a time, in file order
//! ```
//!
//! The processor does not own it and cannot change it. Unknown keys are errors, so a typo never
//! silently grants or limits nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::context::caps::Caps;
use crate::runtime::Limits;

/// A table privilege a manifest may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// SELECT.
    Select,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

impl Privilege {
    /// The SQL keyword.
    pub fn as_sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    grants: BTreeMap<String, Vec<Privilege>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    batch: RawBatch,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
    fuel: Option<u64>,
    statement_timeout_ms: Option<u64>,
    sql_bytes: Option<u64>,
    params: Option<u64>,
    param_bytes: Option<u64>,
    query_rows: Option<u64>,
    result_bytes: Option<u64>,
    log_lines: Option<u64>,
    log_bytes: Option<u64>,
    log_message_bytes: Option<u64>,
    log_details_bytes: Option<u64>,
    output_bytes: Option<u64>,
    outcome_bytes: Option<u64>,
    error_bytes: Option<u64>,
    metadata_keys: Option<u64>,
    metadata_bytes: Option<u64>,
    metadata_value_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    stop_on_error: Option<bool>,
    max_failures: Option<u64>,
    max_failure_rate: Option<f64>,
    max_attempts: Option<u32>,
    durability: Option<Durability>,
    items_per_commit: Option<u32>,
    atomic: Option<bool>,
    key: Option<String>,
}

/// When an item's commit waits for the write-ahead log to reach disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Item commits do not wait; the batch's final commit (and a stop, and a running worker every
    /// few seconds) does, which makes every item before it durable too. A database crash can
    /// only lose items that are then pending again, with their effects.
    #[default]
    Batch,
    /// Every item's commit waits for its flush.
    Item,
}

/// Under batch durability, the most items one transaction runs unless the manifest says.
pub const DEFAULT_ITEMS_PER_COMMIT: u32 = 16;
/// The most a manifest may ask for: each item is a subtransaction, and a transaction with more
/// than 64 of them slows every other session's snapshots.
pub const MAX_ITEMS_PER_COMMIT: u32 = 32;

/// A processor's manifest, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Where it was read from; `None` when the processor has no manifest (it may then touch no
    /// table at all).
    pub path: Option<PathBuf>,
    /// Table (optionally schema-qualified) → privileges.
    pub grants: BTreeMap<String, Vec<Privilege>>,
    /// Per-call limits.
    pub limits: Limits,
    /// Per-statement timeout.
    pub statement_timeout: Duration,
    /// Caps on what the processor hands the host or makes it hold.
    pub caps: Caps,
    /// Stop the batch at its first failed item.
    pub stop_on_error: bool,
    /// Fail the batch once more items than this failed.
    pub max_failures: Option<u64>,
    /// Fail the batch once more than this share of its finished items failed.
    pub max_failure_rate: Option<f64>,
    /// Attempts for retryable failures.
    pub max_attempts: u32,
    /// When item commits wait for the WAL flush.
    pub durability: Durability,
    /// Under batch durability, the most items one transaction runs, each in its own savepoint.
    pub items_per_commit: u32,
    /// All or nothing: every item in one transaction, kept only if the thresholds hold.
    pub atomic: bool,
    /// The item field whose equal values run one at a time, in file order.
    pub key: Option<String>,
}

impl Default for Manifest {
    fn default() -> Self {
        let limits = Limits::default();
        Manifest {
            path: None,
            grants: BTreeMap::new(),
            statement_timeout: limits.timeout,
            limits,
            caps: Caps::default(),
            stop_on_error: false,
            max_failures: None,
            max_failure_rate: None,
            max_attempts: 3,
            durability: Durability::Batch,
            items_per_commit: DEFAULT_ITEMS_PER_COMMIT,
            atomic: false,
            key: None,
        }
    }
}

/// A manifest that cannot be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong and where.
    pub message: String,
}

impl Manifest {
    /// Reads the manifest at `path`, or the default (no grants) when there is no file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => {
                return Err(ManifestError { path: path.to_owned(), message: e.to_string() });
            }
        };
        Self::parse(path, &text)
    }

    /// Parses manifest text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let fail = |message: String| ManifestError { path: path.to_owned(), message };
        let raw: RawManifest = toml::from_str(text).map_err(|e| fail(e.to_string().trim_end().to_owned()))?;
        let defaults = Manifest::default();
        for (table, privileges) in &raw.grants {
            if !valid_table_name(table) {
                return Err(fail(format!(
                    "[grants] {table:?} is not a table name (use `table` or `schema.table`, letters, digits and _)"
                )));
            }
            if never_granted(table) {
                let line = line_of_grant(text, table).map_or_else(String::new, |n| format!("line {n}: "));
                return Err(fail(format!(
                    "{line}[grants] {table:?} is one of Ingot's own tables or a system catalog; processors never get \
                     those (the host alone keeps item status, logs and counters): remove the line"
                )));
            }
            if privileges.is_empty() {
                return Err(fail(format!(
                    "[grants] {table} lists no privileges; remove the line to grant nothing"
                )));
            }
        }
        let positive = |key: &str, value: Option<u64>| match value {
            Some(0) => Err(fail(format!("[limits] {key} must be greater than 0"))),
            other => Ok(other),
        };
        let timeout = positive("timeout_ms", raw.limits.timeout_ms)?
            .map_or(defaults.limits.timeout, Duration::from_millis);
        let memory_mb = positive("memory_mb", raw.limits.memory_mb)?;
        if memory_mb.is_some_and(|mb| mb > 4096) {
            return Err(fail("[limits] memory_mb must be at most 4096".into()));
        }
        let memory_bytes = memory_mb.map_or(Ok(defaults.limits.memory_bytes), |mb| {
            usize::try_from(mb << 20).map_err(|_| fail("[limits] memory_mb is too large".into()))
        })?;
        let fuel = positive("fuel", raw.limits.fuel)?;
        let statement_timeout = positive("statement_timeout_ms", raw.limits.statement_timeout_ms)?
            .map_or(timeout, Duration::from_millis);
        let caps = caps(&raw.limits, &fail)?;
        let max_attempts = match raw.batch.max_attempts {
            Some(0) => return Err(fail("[batch] max_attempts must be at least 1".into())),
            other => other.unwrap_or(defaults.max_attempts),
        };
        if let Some(rate) = raw.batch.max_failure_rate
            && let Err(message) = check_failure_rate(rate)
        {
            return Err(fail(format!("[batch] max_failure_rate {message}")));
        }
        let items_per_commit = match raw.batch.items_per_commit {
            Some(n) if !(1..=MAX_ITEMS_PER_COMMIT).contains(&n) => {
                return Err(fail(format!(
                    "[batch] items_per_commit must be from 1 (each item commits on its own) to {MAX_ITEMS_PER_COMMIT}, not {n}"
                )));
            }
            other => other.unwrap_or(defaults.items_per_commit),
        };
        let key = match raw.batch.key {
            Some(key) if key.trim().is_empty() => {
                return Err(fail("[batch] key names no field; name the item field (e.g. key = \"Order ID\") or remove the line".into()));
            }
            other => other,
        };
        let grants = raw
            .grants
            .into_iter()
            .map(|(table, mut privileges)| {
                privileges.sort();
                privileges.dedup();
                (table, privileges)
            })
            .collect();
        Ok(Manifest {
            path: Some(path.to_owned()),
            grants,
            limits: Limits { timeout, memory_bytes, fuel },
            statement_timeout,
            caps,
            stop_on_error: raw.batch.stop_on_error.unwrap_or(false),
            max_failures: raw.batch.max_failures,
            max_failure_rate: raw.batch.max_failure_rate,
            max_attempts,
            durability: raw.batch.durability.unwrap_or_default(),
            items_per_commit,
            atomic: raw.batch.atomic.unwrap_or(false),
            key,
        })
    }
}

/// A failure rate is a share of the finished items: above 0, at most 1 (0.05 is 5 %).
pub fn check_failure_rate(rate: f64) -> Result<f64, String> {
    if rate > 0.0 && rate <= 1.0 {
        Ok(rate)
    } else {
        Err(format!("must be a share of the items above 0 and at most 1 (0.05 is 5 %), not {rate}"))
    }
}

/// The `[limits]` caps, each at least 1 and at most 1 GiB (the most PostgreSQL holds in one value).
fn caps(raw: &RawLimits, fail: &dyn Fn(String) -> ManifestError) -> Result<Caps, ManifestError> {
    let mut caps = Caps::default();
    let fields: [(&str, Option<u64>, &mut usize); 15] = [
        ("sql_bytes", raw.sql_bytes, &mut caps.sql_bytes),
        ("params", raw.params, &mut caps.params),
        ("param_bytes", raw.param_bytes, &mut caps.param_bytes),
        ("query_rows", raw.query_rows, &mut caps.query_rows),
        ("result_bytes", raw.result_bytes, &mut caps.result_bytes),
        ("log_lines", raw.log_lines, &mut caps.log_lines),
        ("log_bytes", raw.log_bytes, &mut caps.log_bytes),
        ("log_message_bytes", raw.log_message_bytes, &mut caps.log_message_bytes),
        ("log_details_bytes", raw.log_details_bytes, &mut caps.log_details_bytes),
        ("output_bytes", raw.output_bytes, &mut caps.output_bytes),
        ("outcome_bytes", raw.outcome_bytes, &mut caps.outcome_bytes),
        ("error_bytes", raw.error_bytes, &mut caps.error_bytes),
        ("metadata_keys", raw.metadata_keys, &mut caps.metadata_keys),
        ("metadata_bytes", raw.metadata_bytes, &mut caps.metadata_bytes),
        ("metadata_value_bytes", raw.metadata_value_bytes, &mut caps.metadata_value_bytes),
    ];
    for (key, value, cap) in fields {
        match value {
            None => {}
            Some(0) => return Err(fail(format!("[limits] {key} must be greater than 0"))),
            Some(v) if v > 1 << 30 => return Err(fail(format!("[limits] {key} must be at most 1073741824"))),
            Some(v) => *cap = usize::try_from(v).map_err(|_| fail(format!("[limits] {key} is too large")))?,
        }
    }
    Ok(caps)
}

/// Ingot's own relations (in any schema: a processor has no reason to touch a table of that
/// name) and the system catalogs.
fn never_granted(table: &str) -> bool {
    let lower = table.to_ascii_lowercase();
    let (schema, name) = lower.split_once('.').map_or(("", lower.as_str()), |(s, n)| (s, n));
    crate::store::roles::FRAMEWORK_RELATIONS.contains(&name)
        || name.starts_with("ingot_")
        || matches!(schema, "pg_catalog" | "information_schema" | "pg_toast")
        || (schema.is_empty() && name.starts_with("pg_"))
}

/// The line (from 1) of the `[grants]` entry for `table`.
fn line_of_grant(text: &str, table: &str) -> Option<usize> {
    let mut in_grants = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            in_grants = line.trim_start_matches('[').trim_end_matches(']').trim() == "grants";
            continue;
        }
        let key = line.split('=').next().unwrap_or("").trim().trim_matches(|c| c == '"' || c == '\'');
        if in_grants && key == table {
            return Some(i + 1);
        }
    }
    None
}

fn valid_table_name(name: &str) -> bool {
    let part = |p: &str| {
        p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && p.len() <= 63
    };
    match name.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("processors/x.toml"), text)
    }

    #[test]
    fn a_full_manifest_parses() {
        let m = parse(
            "[grants]\ncustomers = [\"select\", \"insert\", \"update\", \"insert\"]\n\"billing.invoices\" = [\"select\"]\n\
             [limits]\ntimeout_ms = 2500\nmemory_mb = 32\nfuel = 1000\n[batch]\nstop_on_error = true\nmax_attempts = 5\n",
        )
        .expect("parses");
        assert_eq!(m.grants["customers"], vec![Privilege::Select, Privilege::Insert, Privilege::Update]);
        assert_eq!(m.grants["billing.invoices"], vec![Privilege::Select]);
        assert_eq!(m.limits.timeout, Duration::from_millis(2500));
        assert_eq!(m.statement_timeout, Duration::from_millis(2500));
        assert_eq!(m.limits.memory_bytes, 32 << 20);
        assert_eq!(m.limits.fuel, Some(1000));
        assert!(m.stop_on_error);
        assert_eq!(m.max_attempts, 5);
        assert_eq!(m.durability, Durability::Batch);
        assert_eq!(parse("[batch]\ndurability = \"item\"\n").expect("parses").durability, Durability::Item);
        assert!(parse("[batch]\ndurability = \"never\"\n").is_err());
        assert_eq!(m.items_per_commit, DEFAULT_ITEMS_PER_COMMIT);
        assert_eq!(parse("[batch]\nitems_per_commit = 1\n").expect("parses").items_per_commit, 1);
        assert_eq!(parse("[batch]\nitems_per_commit = 32\n").expect("parses").items_per_commit, 32);
        for refused in ["0", "33", "-1"] {
            let e = parse(&format!("[batch]\nitems_per_commit = {refused}\n")).expect_err(refused);
            assert!(e.to_string().starts_with("processors/x.toml: "), "{e}");
        }
        let e = parse("[batch]\nitems_per_commit = 33\n").expect_err("33");
        assert!(e.to_string().contains("from 1 (each item commits on its own) to 32, not 33"), "{e}");
    }

    #[test]
    fn atomic_and_key_are_read_and_an_empty_key_is_refused() {
        let m = parse("[batch]\natomic = true\nkey = \"Order ID\"\n").expect("parses");
        assert!(m.atomic);
        assert_eq!(m.key.as_deref(), Some("Order ID"));
        let defaults = parse("").expect("parses");
        assert!(!defaults.atomic && defaults.key.is_none());
        let error = parse("[batch]\nkey = \" \"\n").expect_err("an empty key").to_string();
        assert!(error.contains("key names no field"), "{error}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_and_the_file() {
        let e = parse("[limits]\ntimeout = 5\n").expect_err("refused");
        let message = e.to_string();
        assert!(message.starts_with("processors/x.toml:"), "{message}");
        assert!(message.contains("timeout"), "{message}");
        let e = parse("[grant]\ncustomers = [\"select\"]\n").expect_err("refused");
        assert!(e.to_string().contains("grant"), "{e}");
    }

    #[test]
    fn caps_are_set_by_name_and_checked() {
        let m = parse("[limits]\nresult_bytes = 1024\nlog_lines = 10\nmetadata_keys = 5\n").expect("parses");
        assert_eq!(m.caps.result_bytes, 1024);
        assert_eq!(m.caps.log_lines, 10);
        assert_eq!(m.caps.metadata_keys, 5);
        assert_eq!(m.caps.sql_bytes, Caps::default().sql_bytes);
        let e = parse("[limits]\nlog_lines = 0\n").expect_err("refused");
        assert!(e.to_string().contains("log_lines must be greater than 0"), "{e}");
        assert!(parse("[limits]\nresult_bytes = 2000000000\n").is_err());
    }

    #[test]
    fn ingots_own_tables_and_system_catalogs_are_refused_naming_the_line() {
        for table in [
            "import_batch_items",
            "public.import_logs",
            "IMPORT_BATCHES",
            "ingot_secret",
            "pg_authid",
            "pg_catalog.pg_settings",
            "other.import_batch_counters",
        ] {
            let e = parse(&format!("[grants]\ncustomers = [\"select\"]\n\"{table}\" = [\"select\"]\n"))
                .expect_err(table);
            let message = e.to_string();
            assert!(message.starts_with("processors/x.toml: line 3: [grants]"), "{message}");
            assert!(message.contains("one of Ingot's own tables or a system catalog"), "{message}");
        }
        assert!(parse("[grants]\nimports = [\"select\"]\n").is_ok());
    }

    #[test]
    fn unknown_privileges_are_errors() {
        let e = parse("[grants]\ncustomers = [\"drop\"]\n").expect_err("refused");
        assert!(e.to_string().contains("drop"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse("[limits]\ntimeout_ms = 0\n").is_err());
        assert!(parse("[batch]\nmax_attempts = 0\n").is_err());
        assert!(parse("[grants]\n\"bad name\" = [\"select\"]\n").is_err());
        assert!(parse("[grants]\ncustomers = []\n").is_err());
    }

    #[test]
    fn no_manifest_grants_nothing() {
        let m = Manifest::load(Path::new("/nonexistent/x.toml")).expect("default");
        assert!(m.grants.is_empty());
        assert_eq!(m.path, None);
    }
}
