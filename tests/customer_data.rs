//! The customer_data example end to end through the CLI, on a realistic CSV: a byte-order mark,
//! CRLF line ends, quoted commas, multi-line fields, emails that differ only in case, and about
//! 5 % bad rows. Every count is known in advance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::json;
use support::{Processors, TestDb, guest, ingot, json_of, root, stderr_of};

struct Expected {
    csv: String,
    total: i64,
    distinct_emails: BTreeSet<String>,
    bad: [(&'static str, &'static str, i64); 3],
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// 190 good rows (180 distinct customers + 10 case-variants of earlier ones) and 10 bad rows.
fn realistic_csv() -> Expected {
    let first = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Radia", "Kofi", "Lucía"];
    let last = [
        "Lovelace", "Hopper", "Turing", "Hamilton", "Thompson", "Liskov", "Perlman", "Mensah", "García",
        "O'Neil",
    ];
    let countries = ["US", "de", "", " fr ", "GB", "jp"];
    let mut csv = String::from("\u{feff}email,name,country,notes\r\n");
    let mut emails = Vec::new();
    let mut row = |email: &str, name: &str, country: &str, notes: &str| {
        let _ = write!(csv, "{},{},{},{}\r\n", field(email), field(name), field(country), field(notes));
    };
    for i in 0..180 {
        let (f, l) = (first[i % 10], last[(i / 10) % 10]);
        let email = format!("{}.{}{i}@example.com", f.to_lowercase(), l.to_lowercase().replace('\'', ""));
        let name = if i % 7 == 0 { format!("{l}, {f}") } else { format!("{f} {l}") };
        let notes = if i % 11 == 0 { "first line\r\nsecond line, with a comma" } else { "" };
        row(&email, &name, countries[i % countries.len()], notes);
        emails.push(email);
    }
    for i in 0..10 {
        // Same customer again, differently cased and padded: updates, not inserts.
        let email = format!("  {}  ", emails[i * 3].to_uppercase());
        row(&email, "Renamed \"Customer\"", "NL", "");
    }
    row("not-an-email", "No At", "US", "");
    row("two@@example.com", "Double At", "", "");
    row("ada@lovelace", "No Dot", "", "");
    row("spaces in@example.com", "Space", "", "");
    row("", "", "", "empty email and name: the email check comes first");
    row("noname@example.com", "", "US", "");
    row("blank@example.com", "   ", "", "");
    row("usa@example.com", "Three Letters", "USA", "");
    row("digit@example.com", "Digit", "1X", "");
    row("short@example.com", "One Letter", "U", "");
    Expected {
        csv,
        total: 200,
        distinct_emails: emails.into_iter().collect(),
        bad: [
            ("invalid_email", "email is not a valid address", 5),
            ("invalid_country", "country must be 2 letters", 3),
            ("missing_name", "name is required", 2),
        ],
    }
}

async fn setup() -> (TestDb, Processors, tempfile::TempDir) {
    let db = TestDb::new().await;
    db.apply(&support::example_schema("customer_data")).await;
    let manifest = support::example_manifest("customer_data");
    let processors = Processors::new(&[("customer_data", &guest("customer_data"), Some(&manifest))]);
    (db, processors, tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn a_realistic_csv_imports_exactly_the_valid_distinct_customers() {
    let (db, processors, cwd) = setup().await;
    let expected = realistic_csv();
    let file = cwd.path().join("customers.csv");
    std::fs::write(&file, &expected.csv).unwrap();
    let output = ingot(
        cwd.path(),
        &db.url,
        processors.path(),
        &["run", "customer_data", file.to_str().unwrap(), "--json"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["total"], expected.total);
    assert_eq!(summary["completed"], 190);
    assert_eq!(summary["failed"], 10);
    assert_eq!(summary["skipped"], 0);
    let top: Vec<_> = expected
        .bad
        .iter()
        .map(|(code, message, count)| json!({"code": code, "message": message, "count": count}))
        .collect();
    assert_eq!(summary["top_errors"], json!(top));

    let stored: BTreeSet<String> = sqlx::query_scalar("SELECT email FROM customers")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(stored, expected.distinct_emails);
    let renamed = db
        .scalar_i64("SELECT count(*) FROM customers WHERE name = 'Renamed \"Customer\"' AND country = 'NL'")
        .await;
    assert_eq!(renamed, 10, "a case-variant email updated the existing customer");
    let row: (String, Option<String>) =
        sqlx::query_as("SELECT name, country FROM customers WHERE email = 'grace.lovelace1@example.com'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(row, ("Grace Lovelace".into(), Some("DE".into())), "names trimmed, countries uppercased");
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM customers WHERE country IS NULL").await,
        30,
        "empty and absent country is none"
    );
    let multiline: String = sqlx::query_scalar(
        "SELECT source_data->>'notes' FROM import_batch_items WHERE item_index = 0 AND batch_id = $1::uuid",
    )
    .bind(summary["batch_id"].as_str().unwrap())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(multiline, "first line\r\nsecond line, with a comma");
    let outcome: serde_json::Value = sqlx::query_scalar(
        "SELECT processed_data FROM import_batch_items WHERE item_index = 7 AND batch_id = $1::uuid",
    )
    .bind(summary["batch_id"].as_str().unwrap())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        outcome,
        json!({"email": "radia.lovelace7@example.com", "name": "Lovelace, Radia", "country": "DE"})
    );

    // The same rows are still bad: reprocessing the failed items fails them again, linked.
    let batch_id = summary["batch_id"].as_str().unwrap();
    let again =
        ingot(cwd.path(), &db.url, processors.path(), &["reprocess", batch_id, "--failed-only", "--json"]);
    assert_eq!(again.status.code(), Some(3), "{}", stderr_of(&again));
    let again = json_of(&again);
    assert_eq!(again["parent_batch_id"], batch_id);
    assert_eq!(again["retry_count"], 1);
    assert_eq!(
        (again["total"].as_i64(), again["failed"].as_i64(), again["completed"].as_i64()),
        (Some(10), Some(10), Some(0))
    );
    assert_eq!(again["top_errors"], json!(top));
}

#[tokio::test]
async fn a_csv_with_an_unterminated_quote_on_line_4_is_refused_whole() {
    let (db, processors, cwd) = setup().await;
    let file = cwd.path().join("broken.csv");
    std::fs::write(&file, "email,name,country\r\na@example.com,Ann,US\r\nb@example.com,Bob,DE\r\nc@example.com,\"Carl,FR\r\nd@example.com,Dee,GB\r\n").unwrap();
    let output =
        ingot(cwd.path(), &db.url, processors.path(), &["run", "customer_data", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("broken.csv: line 4") && stderr.contains("unterminated quote"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM import_batches").await, 0);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM import_batch_items").await, 0);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM customers").await, 0);
}

#[tokio::test]
async fn the_shipped_sample_imports_with_its_known_bad_rows() {
    let (db, processors, cwd) = setup().await;
    let sample = root().join("processors/customer_data/sample.csv");
    let output = ingot(
        cwd.path(),
        &db.url,
        processors.path(),
        &["run", "customer_data", sample.to_str().unwrap(), "--json"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(
        (summary["total"].as_i64(), summary["completed"].as_i64(), summary["failed"].as_i64()),
        (Some(228), Some(216), Some(12))
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM customers").await,
        214,
        "two case-duplicate emails update"
    );
}

#[test]
fn the_example_stays_within_40_lines_of_rust() {
    let source = std::fs::read_to_string(root().join("processors/customer_data/src/lib.rs")).unwrap();
    let lines = source.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//")).count();
    assert!(lines <= 40, "processors/customer_data/src/lib.rs has {lines} lines of Rust");
}
