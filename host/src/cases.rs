//! `ingot test`: a processor's test cases, run against the real database and compared with what
//! each case expects.
//!
//! A cases file (by default `processors/<type>/tests.ndjson`) holds one case per line:
//!
//! ```text
//! {"name": "a valid order", "item": {"Order ID": "A-1", …}, "expect": {"status": "completed", "outcome": {"target_table": "orders", "processed_data": {…}}}}
//! {"name": "total with three decimals", "item": {…}, "expect": {"status": "failed", "code": "invalid_total", "field": "Total"}}
//! ```
//!
//! `expect` holds `status` (completed, failed or skipped) and, optionally, `code`, `field`
//! (`null`: none), `message` (a part of the error message) and `outcome` (`target_table`,
//! `target_id`, `processed_data`, each compared when given). The items run as a dry run does:
//! each in a transaction of its own, rolled back, with the processor's manifest and role.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::store::items::ItemRecord;

/// One case: an item and what processing it must give.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name (`case <line>` when the file gives none).
    pub name: String,
    /// Its line in the file.
    pub line: u64,
    /// The item's JSON text, exactly as written.
    pub item: String,
    /// What it must give.
    pub expect: Expect,
}

/// What a case expects.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// completed, failed or skipped.
    pub status: String,
    /// The error code (`null`: none).
    #[serde(default, deserialize_with = "given", skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
    /// The field at fault (`null`: none).
    #[serde(default, deserialize_with = "given", skip_serializing_if = "Option::is_none")]
    pub field: Option<Value>,
    /// A part of the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where the item went and what it became.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ExpectOutcome>,
}

/// A key that is there, `null` included: `"code": null` expects no code, a missing key expects
/// nothing.
fn given<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The outcome a completed case expects; each part is compared when given.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectOutcome {
    /// The table written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_table: Option<String>,
    /// The written row's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// The normalised record, compared as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Option<String>,
    item: Box<RawValue>,
    expect: Expect,
}

/// Why a cases file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// No file.
    #[error(
        "{}: {source}; write the processor's test cases there, one per line: {{\"name\": …, \"item\": {{…}}, \"expect\": {{\"status\": \"completed\"}}}}",
        path.display()
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a case.
    #[error("{}, line {line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The file holds no case.
    #[error("{} holds no test case", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the cases of `path` (blank lines and lines starting with `//` are skipped).
pub fn load(path: &Path) -> Result<Vec<Case>, CasesError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| CasesError::Unreadable { path: path.to_owned(), source })?;
    let mut cases = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n as u64 + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("//") {
            continue;
        }
        let malformed =
            |message: String| CasesError::Malformed { path: path.to_owned(), line: line_no, message };
        let raw: RawCase =
            serde_json::from_str(trimmed).map_err(|e| malformed(format!("not a test case: {e}")))?;
        if !matches!(raw.expect.status.as_str(), "completed" | "failed" | "skipped") {
            return Err(malformed(format!(
                "expect.status is {:?}; it must be completed, failed or skipped",
                raw.expect.status
            )));
        }
        for (key, value) in [("code", &raw.expect.code), ("field", &raw.expect.field)] {
            if value.as_ref().is_some_and(|v| !v.is_string() && !v.is_null()) {
                return Err(malformed(format!("expect.{key} must be text, or null for none")));
            }
        }
        cases.push(Case {
            name: raw.name.unwrap_or_else(|| format!("case {line_no}")),
            line: line_no,
            item: raw.item.get().to_owned(),
            expect: raw.expect,
        });
    }
    if cases.is_empty() {
        return Err(CasesError::Empty { path: path.to_owned() });
    }
    Ok(cases)
}

/// One way a case's item did not do what it expects.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    /// What differs: `status`, `code`, `processed_data.total`, …
    pub what: String,
    /// What the case expects.
    pub expected: Value,
    /// What happened.
    pub actual: Value,
}

/// A case's result.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The case's name.
    pub name: String,
    /// Its line.
    pub line: u64,
    /// Whether it did what it expects.
    pub passed: bool,
    /// How it did not.
    pub differences: Vec<Difference>,
    /// How its item ended.
    pub actual: ItemRecord,
}

/// Compares each case with the record of its item (`records[i]` is case `i`'s).
pub fn judge(cases: &[Case], records: &[ItemRecord]) -> Vec<Verdict> {
    cases
        .iter()
        .zip(records)
        .map(|(case, record)| {
            let differences = differences(&case.expect, record);
            Verdict {
                name: case.name.clone(),
                line: case.line,
                passed: differences.is_empty(),
                differences,
                actual: record.clone(),
            }
        })
        .collect()
}

fn text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |s| Value::String(s.to_owned()))
}

fn differences(expect: &Expect, record: &ItemRecord) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut differ = |what: &str, expected: Value, actual: Value| {
        if expected != actual {
            out.push(Difference { what: what.to_owned(), expected, actual });
        }
    };
    differ("status", Value::String(expect.status.clone()), Value::String(record.status.as_str().to_owned()));
    if let Some(code) = &expect.code {
        differ("code", code.clone(), text(record.error_code.as_deref()));
    }
    if let Some(field) = &expect.field {
        differ("field", field.clone(), text(record.error_field.as_deref()));
    }
    if let Some(part) = &expect.message
        && !record.error_message.as_deref().unwrap_or_default().contains(part.as_str())
    {
        differ("message", Value::String(format!("…{part}…")), text(record.error_message.as_deref()));
    }
    let outcome = expect.outcome.as_ref();
    if let Some(table) = outcome.and_then(|o| o.target_table.as_deref()) {
        differ("target_table", text(Some(table)), text(record.target_table.as_deref()));
    }
    if let Some(id) = outcome.and_then(|o| o.target_id.as_deref()) {
        differ("target_id", text(Some(id)), text(record.target_id.as_deref()));
    }
    if let Some(data) = outcome.and_then(|o| o.processed_data.as_ref()) {
        json_differences(
            "processed_data",
            data,
            record.processed_data.as_ref().unwrap_or(&Value::Null),
            &mut out,
        );
    }
    out
}

/// The paths at which `actual` differs from `expected`, object keys one by one.
fn json_differences(path: &str, expected: &Value, actual: &Value, out: &mut Vec<Difference>) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
            for key in keys {
                let missing = Value::String("(absent)".into());
                json_differences(
                    &format!("{path}.{key}"),
                    want.get(key).unwrap_or(&missing),
                    got.get(key).unwrap_or(&missing),
                    out,
                );
            }
        }
        (want, got) if want != got => {
            out.push(Difference { what: path.to_owned(), expected: want.clone(), actual: got.clone() })
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ItemStatus;

    fn record(status: ItemStatus) -> ItemRecord {
        ItemRecord {
            index: 0,
            status,
            error_code: None,
            error_field: None,
            error_message: None,
            target_table: None,
            target_id: None,
            processed_data: None,
        }
    }

    fn expect(json: &str) -> Expect {
        serde_json::from_str(json).expect("an expectation")
    }

    #[test]
    fn every_expected_part_is_compared_and_processed_data_key_by_key() {
        let mut done = record(ItemStatus::Completed);
        done.target_table = Some("orders".into());
        done.processed_data = Some(serde_json::json!({"a": 1, "b": "x", "extra": true}));
        let want = expect(
            r#"{"status": "completed", "outcome": {"target_table": "orders", "processed_data": {"a": 1, "b": "y"}}}"#,
        );
        let found: Vec<String> = differences(&want, &done).into_iter().map(|d| d.what).collect();
        assert_eq!(found, ["processed_data.b", "processed_data.extra"]);

        let mut failed = record(ItemStatus::Failed);
        failed.error_code = Some("invalid_total".into());
        failed.error_message = Some("Total must have at most 2 decimal places".into());
        let want = expect(
            r#"{"status": "failed", "code": "invalid_total", "field": "Total", "message": "decimal places"}"#,
        );
        let found: Vec<String> = differences(&want, &failed).into_iter().map(|d| d.what).collect();
        assert_eq!(found, ["field"]);
        let want = expect(r#"{"status": "completed", "code": null}"#);
        let found: Vec<String> = differences(&want, &failed).into_iter().map(|d| d.what).collect();
        assert_eq!(found, ["status", "code"]);
    }

    #[test]
    fn a_malformed_case_names_its_line() {
        let dir = std::env::temp_dir().join(format!("ingot-cases-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a folder");
        let path = dir.join("tests.ndjson");
        let good = r#"{"item": {"a": 1}, "expect": {"status": "completed"}}"#;
        std::fs::write(
            &path,
            format!("{good}\n\n{{\"item\": {{}}, \"expect\": {{\"status\": \"done\"}}}}\n"),
        )
        .expect("written");
        let error = load(&path).expect_err("line 3 is wrong").to_string();
        assert!(error.contains("line 3") && error.contains("completed, failed or skipped"), "{error}");
        std::fs::write(
            &path,
            format!("{good}\n{{\"item\": 1, \"expect\": {{\"status\": \"failed\", \"cod\": \"x\"}}}}\n"),
        )
        .expect("written");
        let error = load(&path).expect_err("a typo").to_string();
        assert!(error.contains("line 2") && error.contains("cod"), "{error}");
        std::fs::write(&path, good).expect("written");
        let cases = load(&path).expect("one case");
        assert_eq!((cases[0].name.as_str(), cases[0].item.as_str()), ("case 1", r#"{"a": 1}"#));
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
