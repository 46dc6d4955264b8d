//! A newcomer's own folder: `ingot init`, a processor's schema.sql applied by `ingot migrate`,
//! `ingot test` on a processor's cases, and the orders pipeline in Rust and Python on a generated
//! 500-row file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use support::{TestDb, ingot, json_of, root, stderr_of};

/// A processors folder with the orders processors (Rust and Python) and the orders folder's
/// schema and cases, as a project of one's own has them.
fn orders_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let processors = dir.path().join("processors");
    std::fs::create_dir_all(processors.join("orders")).unwrap();
    for name in ["orders", "orders_py"] {
        let wasm = root().join("processors").join(format!("{name}.wasm"));
        assert!(wasm.exists(), "{} is not built: run `make processors`", wasm.display());
        std::fs::copy(&wasm, processors.join(format!("{name}.wasm"))).unwrap();
        std::fs::copy(
            root().join(format!("processors/{name}.toml")),
            processors.join(format!("{name}.toml")),
        )
        .unwrap();
    }
    for file in ["schema.sql", "tests.ndjson"] {
        std::fs::copy(root().join("processors/orders").join(file), processors.join("orders").join(file))
            .unwrap();
    }
    dir
}

fn run(dir: &Path, db: &TestDb, args: &[&str]) -> std::process::Output {
    ingot(dir, &db.url, &dir.join("processors"), args)
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn ingot_init_makes_a_project_folder_and_keeps_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("imports");
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_ingot"))
        .args(["init"])
        .arg(&project)
        .output()
        .unwrap();
    assert_eq!(init.status.code(), Some(0), "{}", stderr_of(&init));
    assert!(project.join("processors").is_dir());
    let gitignore = std::fs::read_to_string(project.join(".gitignore")).unwrap();
    assert!(gitignore.lines().any(|l| l == "/.ingot/"), "{gitignore}");
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("ingot new") && readme.contains("ingot migrate"), "{readme}");

    // Run again over a folder the user has changed: nothing of theirs is overwritten or repeated.
    std::fs::write(project.join("README.md"), "mine\n").unwrap();
    std::fs::write(project.join(".gitignore"), "/target\n").unwrap();
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_ingot"))
        .args(["init"])
        .arg(&project)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr_of(&again));
    assert_eq!(std::fs::read_to_string(project.join("README.md")).unwrap(), "mine\n");
    let gitignore = std::fs::read_to_string(project.join(".gitignore")).unwrap();
    assert!(gitignore.starts_with("/target\n") && gitignore.contains("/.ingot/"), "{gitignore}");
    let third = std::process::Command::new(env!("CARGO_BIN_EXE_ingot"))
        .args(["init"])
        .arg(&project)
        .output()
        .unwrap();
    assert_eq!(third.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(project.join(".gitignore")).unwrap(), gitignore, "added once");
}

#[tokio::test]
async fn a_processors_schema_applies_once_and_a_changed_or_failing_file_is_refused() {
    let db = TestDb::new().await;
    let dir = orders_folder();
    let schema = dir.path().join("processors/orders/schema.sql");

    let first = run(dir.path(), &db, &["migrate"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr_of(&first));
    assert!(stderr_of(&first).contains("applied"), "{}", stderr_of(&first));
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders").await, 0, "the table exists");
    db.apply("INSERT INTO orders (order_id, customer_email, order_date, total, currency, status) VALUES ('KEEP', 'a@b.de', '2024-01-01', 1, 'EUR', 'paid')").await;

    // Applied once: a second migrate runs nothing (a re-run of a CREATE TABLE would not notice,
    // a DROP/CREATE would lose the row).
    let second = run(dir.path(), &db, &["migrate"]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr_of(&second));
    assert!(stderr_of(&second).contains("all applied before"), "{}", stderr_of(&second));
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders").await, 1);

    // Edited after it was applied: refused, naming the file and the way to change a schema.
    let mut sql = std::fs::read_to_string(&schema).unwrap();
    sql.push_str("\nALTER TABLE orders ADD COLUMN channel text;\n");
    std::fs::write(&schema, &sql).unwrap();
    let changed = run(dir.path(), &db, &["migrate"]);
    assert_eq!(changed.status.code(), Some(1));
    let message = stderr_of(&changed);
    assert!(
        message.contains("schema.sql changed since it was applied") && message.contains("migrations/"),
        "{message}"
    );

    // A migration that fails halfway is rolled back whole and not recorded; fixed, it applies.
    let migrations = dir.path().join("processors/orders/migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::copy(root().join("processors/orders/schema.sql"), &schema).unwrap();
    std::fs::write(
        migrations.join("001_channel.sql"),
        "ALTER TABLE orders ADD COLUMN channel text;\nSELECT no_such_function();\n",
    )
    .unwrap();
    let failing = run(dir.path(), &db, &["migrate"]);
    assert_eq!(failing.status.code(), Some(1));
    let message = stderr_of(&failing);
    assert!(
        message.contains("001_channel.sql failed, so none of it was applied")
            && message.contains("no_such_function"),
        "{message}"
    );
    let columns = db.scalar_i64("SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'channel'").await;
    assert_eq!(columns, 0, "the failing file left nothing behind");
    std::fs::write(migrations.join("001_channel.sql"), "ALTER TABLE orders ADD COLUMN channel text;\n")
        .unwrap();
    let fixed = run(dir.path(), &db, &["migrate"]);
    assert_eq!(fixed.status.code(), Some(0), "{}", stderr_of(&fixed));
    let columns = db.scalar_i64("SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'channel'").await;
    assert_eq!(columns, 1);
    let recorded =
        db.scalar_i64("SELECT count(*) FROM ingot_processor_schemas WHERE batch_type = 'orders'").await;
    assert_eq!(recorded, 2, "schema.sql and the migration, each recorded once");
}

#[tokio::test]
async fn ingot_test_runs_the_orders_cases_in_rust_and_python_and_keeps_nothing() {
    let db = TestDb::new().await;
    let dir = orders_folder();
    let migrate = run(dir.path(), &db, &["migrate"]);
    assert_eq!(migrate.status.code(), Some(0), "{}", stderr_of(&migrate));
    let cases = dir.path().join("processors/orders/tests.ndjson");
    let lines = std::fs::read_to_string(&cases).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    for (processor, args) in [
        ("orders", vec!["test", "orders"]),
        ("orders_py", vec!["test", "orders_py", cases.to_str().unwrap()]),
    ] {
        let tested = run(dir.path(), &db, &args);
        let out = stdout_of(&tested);
        assert_eq!(tested.status.code(), Some(0), "{processor}:\n{out}\n{}", stderr_of(&tested));
        assert!(out.contains(&format!("{lines} passed, 0 failed")), "{processor}:\n{out}");
    }
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders").await, 0, "every case was rolled back");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM import_batches").await, 0, "a test run leaves no batch");
}

#[tokio::test]
async fn ingot_test_shows_each_wrong_expectation_and_exits_1() {
    let db = TestDb::new().await;
    let dir = orders_folder();
    assert_eq!(run(dir.path(), &db, &["migrate"]).status.code(), Some(0));
    let cases = dir.path().join("wrong.ndjson");
    let item = r#"{"Order ID": "ORD-1", "Customer Email": "ada@example.com", "Order Date": "2024-02-30", "Total": "1", "Currency": "EUR", "Status": "paid"}"#;
    std::fs::write(
        &cases,
        format!(
            "{{\"name\": \"right\", \"item\": {item}, \"expect\": {{\"status\": \"failed\", \"code\": \"invalid_order_date\", \"field\": \"Order Date\"}}}}\n\
             // a comment line\n\
             {{\"name\": \"wrong code\", \"item\": {item}, \"expect\": {{\"status\": \"failed\", \"code\": \"invalid_date\"}}}}\n\
             {{\"name\": \"wrong status\", \"item\": {item}, \"expect\": {{\"status\": \"completed\"}}}}\n"
        ),
    )
    .unwrap();
    let tested = run(dir.path(), &db, &["test", "orders", cases.to_str().unwrap()]);
    let out = stdout_of(&tested);
    assert_eq!(tested.status.code(), Some(1), "{out}\n{}", stderr_of(&tested));
    assert!(out.contains("ok    right (line 1)"), "{out}");
    assert!(out.contains("FAIL  wrong code (line 3)"), "{out}");
    assert!(out.contains("code: expected \"invalid_date\", got \"invalid_order_date\""), "{out}");
    assert!(out.contains("FAIL  wrong status (line 4)"), "{out}");
    assert!(out.contains("status: expected \"completed\", got \"failed\""), "{out}");
    assert!(
        out.contains("Order Date is not a day of the calendar"),
        "the failing case's error is shown: {out}"
    );
    assert!(out.contains("1 passed, 2 failed"), "{out}");

    let json = run(dir.path(), &db, &["test", "orders", cases.to_str().unwrap(), "--json"]);
    assert_eq!(json.status.code(), Some(1));
    let verdicts: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        verdicts.iter().map(|v| v["passed"].as_bool().unwrap()).collect::<Vec<_>>(),
        [true, false, false]
    );

    // A line that is not a case: refused before anything runs, naming the file and line.
    std::fs::write(
        &cases,
        format!(
            "{{\"name\": \"ok\", \"item\": {item}, \"expect\": {{\"status\": \"failed\"}}}}\n{{\"item\": 3\n"
        ),
    )
    .unwrap();
    let broken = run(dir.path(), &db, &["test", "orders", cases.to_str().unwrap()]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(stderr_of(&broken).contains("wrong.ndjson, line 2"), "{}", stderr_of(&broken));
    // No cases file where one is looked for: says where, and what a case looks like.
    let missing = run(dir.path(), &db, &["test", "orders_py"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr_of(&missing).contains("orders_py/tests.ndjson"), "{}", stderr_of(&missing));
}

/// An item's index, status, error code and field, and its normalised record.
type ItemRow = (i64, String, Option<String>, Option<String>, Option<Value>);

/// What the generator says each row must become.
fn generated(dir: &Path, rows: u32) -> (std::path::PathBuf, Vec<Value>) {
    let csv = dir.join("orders.csv");
    let expect = dir.join("expected.ndjson");
    let output = std::process::Command::new("python3")
        .arg(root().join("processors/orders/generate.py"))
        .args(["--rows", &rows.to_string(), "--seed", "7", "--out"])
        .arg(&csv)
        .arg("--expect")
        .arg(&expect)
        .output()
        .unwrap();
    assert!(output.status.success(), "generate.py: {}", stderr_of(&output));
    let expected =
        std::fs::read_to_string(&expect).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (csv, expected)
}

/// The generated 500 orders through each processor under four workers: every row's status,
/// code and field as the generator says, and the table holding the last valid row of each
/// Order ID — the same in Rust and Python.
#[tokio::test]
async fn the_generated_orders_import_alike_in_rust_and_python_under_four_workers() {
    let dir = orders_folder();
    let (csv, expected) = generated(dir.path(), 500);
    let failures = expected.iter().filter(|e| e["status"] == "failed").count();
    assert!(failures > 40, "the generator breaks rules in some rows");
    for processor in ["orders", "orders_py"] {
        let db = TestDb::new().await;
        assert_eq!(run(dir.path(), &db, &["migrate"]).status.code(), Some(0));
        let output =
            run(dir.path(), &db, &["run", processor, csv.to_str().unwrap(), "--workers", "4", "--json"]);
        assert_eq!(output.status.code(), Some(3), "{processor}: {}", stderr_of(&output));
        let summary = json_of(&output);
        assert_eq!(summary["failed"].as_u64(), Some(failures as u64), "{processor}");

        let rows: Vec<ItemRow> = sqlx::query_as(
            "SELECT item_index, status::text, error_code, error_field, processed_data FROM import_batch_items ORDER BY item_index",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), expected.len());
        let mut last: HashMap<String, Value> = HashMap::new();
        for ((index, status, code, field, processed), want) in rows.into_iter().zip(&expected) {
            let got = serde_json::json!({"row": index, "status": status, "code": code, "field": field, "record": processed});
            assert_eq!(&got, want, "{processor}, row {index}");
            if let Some(record) = want["record"].as_object() {
                last.insert(record["order_id"].as_str().unwrap().to_owned(), want["record"].clone());
            }
        }
        let table: Vec<Value> = sqlx::query_scalar(
            "SELECT jsonb_build_object('order_id', order_id, 'customer_email', customer_email, 'order_date', order_date, \
             'total', total::text, 'currency', currency, 'status', status, 'notes', notes) FROM orders",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(table.len(), last.len(), "{processor}: one row per Order ID");
        for row in table {
            let want = &last[row["order_id"].as_str().unwrap()];
            let mut want = want.clone();
            // numeric(12,2) writes every total with two places.
            let total = want["total"].as_str().unwrap();
            want["total"] =
                Value::from(if total.contains('.') { total.to_owned() } else { format!("{total}.00") });
            assert_eq!(row, want, "{processor}: the last valid row of each Order ID wins");
        }
    }
}

/// The goal the kit was built for: the orders pipeline in at most 40 lines of Rust and 30 of
/// Python, the same rules in both (the same cases pass above).
#[test]
fn the_orders_processors_stay_within_their_line_goals() {
    for (file, most) in [("processors/orders/src/lib.rs", 40), ("processors/orders_py/app.py", 30)] {
        let lines = std::fs::read_to_string(root().join(file)).unwrap().lines().count();
        assert!(lines <= most, "{file} has {lines} lines; the goal is at most {most}");
    }
}
