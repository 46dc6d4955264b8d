//! Processors in Python (transaction_feed, componentize-py), JavaScript (product_catalog,
//! componentize-js) and C (inventory, zig cc and `ingot componentize`), end to end against PostgreSQL through the CLI, on realistic files whose every
//! count is known in advance; plus the compile cache and instance reuse for an 18 MB component.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use ingot::context::ProcessorContext;
use ingot::runtime::bindings::ItemError;
use ingot::runtime::cache::CacheOutcome;
use ingot::runtime::{Instance, Limits, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use support::{Processors, TestDb, example_manifest, example_schema, ingot, item, json_of, root, stderr_of};

/// An example processor built by `make processors`.
fn example(name: &str) -> std::path::PathBuf {
    let path = root().join("processors").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is not built: run `make processors` (or `make test`)", path.display());
    path
}

fn top_errors(summary: &Value) -> Vec<(String, i64)> {
    summary["top_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["code"].as_str().unwrap_or("-").to_owned(), e["count"].as_i64().unwrap()))
        .collect()
}

const CUSTOMERS: &str = "email,name,country\nada@example.com,Ada Lovelace,GB\ngrace@example.com,Grace Hopper,US\nalan@example.com,Alan Turing,GB\n";

/// 20 good transactions, 11 bad ones, 2 repeated ids; written in every shape a real export has.
const TRANSACTIONS: &str = "\
tx_id,email,amount,currency,occurred_at
t01,ada@example.com,12.50,EUR,2026-01-31T09:30:00Z
t02, GRACE@example.com ,-3.10,USD,2026-01-31T09:31:00+01:00
t03,alan@example.com,100,GBP,2026-01-31 09:32:00
t04,ada@example.com,0.5,EUR,2026-01-31
t05,grace@example.com,1999.99,USD,2026-02-01T00:00:00.123456Z
t06,alan@example.com,7,GBP,2026-02-01T10:00:00
t07,ada@example.com,8.00,EUR,2026-02-02T10:00:00Z
t08,grace@example.com,9.10,USD,2026-02-02T10:00:00Z
t09,alan@example.com,10.20,GBP,2026-02-02T10:00:00Z
t10,ada@example.com,11.30,EUR,2026-02-03T10:00:00Z
t11,grace@example.com,12.40,USD,2026-02-03T10:00:00Z
t12,alan@example.com,13.50,GBP,2026-02-03T10:00:00Z
t13,ada@example.com,14.60,EUR,2026-02-04T10:00:00Z
t14,grace@example.com,15.70,USD,2026-02-04T10:00:00Z
t15,alan@example.com,16.80,GBP,2026-02-04T10:00:00Z
t16,ada@example.com,17.90,EUR,2026-02-05T10:00:00Z
t17,grace@example.com,-18.00,USD,2026-02-05T10:00:00Z
t18,alan@example.com,19.01,GBP,2026-02-05T10:00:00Z
t19,ada@example.com,20.02,EUR,2026-02-06T10:00:00Z
t20,grace@example.com,21.03,USD,2026-02-06T10:00:00Z
t21,nobody@example.com,1.00,EUR,2026-02-07T10:00:00Z
t22,,1.00,EUR,2026-02-07T10:00:00Z
t23,stranger@example.com,not money,eur,never
t24,ada@example.com,12.505,EUR,2026-02-07T10:00:00Z
t25,ada@example.com,abc,EUR,2026-02-07T10:00:00Z
t26,ada@example.com,\"1,50\",EUR,2026-02-07T10:00:00Z
t27,ada@example.com,5,eur,2026-02-07T10:00:00Z
t28,ada@example.com,5,EURO,2026-02-07T10:00:00Z
t29,ada@example.com,5,EUR,yesterday
t30,ada@example.com,5,EUR,31/01/2026
t31,ada@example.com,5,EUR,
t01,ada@example.com,12.50,EUR,2026-01-31T09:30:00Z
t05,grace@example.com,1999.99,USD,2026-02-01T00:00:00.123456Z
";

#[tokio::test]
async fn python_transaction_feed_imports_exactly_the_valid_transactions() {
    let db = TestDb::new().await;
    db.apply(&example_schema("customer_data")).await;
    db.apply(&example_schema("transaction_feed")).await;
    let processors = Processors::new(&[
        ("customer_data", &example("customer_data"), Some(&example_manifest("customer_data"))),
        ("transaction_feed", &example("transaction_feed"), Some(&example_manifest("transaction_feed"))),
    ]);
    let cwd = tempfile::tempdir().unwrap();
    let customers = cwd.path().join("customers.csv");
    std::fs::write(&customers, CUSTOMERS).unwrap();
    let output =
        ingot(cwd.path(), &db.url, processors.path(), &["run", "customer_data", customers.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));

    let file = cwd.path().join("transactions.csv");
    std::fs::write(&file, TRANSACTIONS).unwrap();
    let output = ingot(
        cwd.path(),
        &db.url,
        processors.path(),
        &["run", "transaction_feed", file.to_str().unwrap(), "--json"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!((summary["total"].as_i64(), summary["completed"].as_i64()), (Some(33), Some(20)));
    assert_eq!((summary["failed"].as_i64(), summary["skipped"].as_i64()), (Some(11), Some(2)));
    let expected: Vec<(String, i64)> =
        [("invalid_amount", 3), ("invalid_timestamp", 3), ("unknown_customer", 3), ("invalid_currency", 2)]
            .map(|(c, n)| (c.to_owned(), n))
            .into();
    assert_eq!(top_errors(&summary), expected);

    let stored: (i64, String) = sqlx::query_as("SELECT count(*), sum(amount)::text FROM transactions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, (20, "2288.45".to_owned()));
    let t02: (String, String, String) = sqlx::query_as(
        "SELECT c.email, t.currency, to_char(t.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM transactions t
         JOIN customers c ON c.id = t.customer_id WHERE t.tx_id = 't02'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(t02, ("grace@example.com".into(), "USD".into(), "2026-01-31 08:31".into()));
    let duplicate: (String, Option<String>) = sqlx::query_as(
        "SELECT status, error_code FROM import_batch_items WHERE item_index = 31 AND batch_id = $1::uuid",
    )
    .bind(summary["batch_id"].as_str().unwrap())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(duplicate, ("skipped".into(), Some("duplicate".into())));

    // The same file again: refused as a file already imported; let through, every good
    // transaction is a duplicate the processor skips.
    let refused =
        ingot(cwd.path(), &db.url, processors.path(), &["run", "transaction_feed", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_of(&refused));
    let again = json_of(&ingot(
        cwd.path(),
        &db.url,
        processors.path(),
        &["run", "transaction_feed", file.to_str().unwrap(), "--json", "--allow-duplicate"],
    ));
    assert_eq!(
        (again["completed"].as_i64(), again["skipped"].as_i64(), again["failed"].as_i64()),
        (Some(0), Some(22), Some(11))
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM transactions").await, 20);

    // A processor error: an item the code does not expect raises; the item fails with the
    // Python exception, and the batch goes on.
    let odd = cwd.path().join("odd.ndjson");
    std::fs::write(&odd, "\"just text\"\n{\"tx_id\": \"t99\", \"email\": \"ada@example.com\", \"amount\": \"1\", \"currency\": \"EUR\", \"occurred_at\": \"2026-03-01\"}\n").unwrap();
    let output = ingot(
        cwd.path(),
        &db.url,
        processors.path(),
        &["run", "transaction_feed", odd.to_str().unwrap(), "--json", "--workers", "1"],
    );
    let summary = json_of(&output);
    assert_eq!((summary["completed"].as_i64(), summary["failed"].as_i64()), (Some(1), Some(1)));
    let reason = summary["top_errors"][0]["message"].as_str().unwrap();
    assert!(reason.contains("AttributeError: 'str' object has no attribute 'get'"), "{reason}");
}

const PRODUCTS: &str = r#"[
  {"sku": "A-100", "title": "Widget", "price_cents": 1250, "tags": ["tools", "metal"]},
  {"sku": "B-200", "title": "  Gadget  ", "price_cents": 0},
  {"sku": "C-300", "title": "Gizmo", "price_cents": 999, "tags": []},
  {"sku": "D-400", "title": "Doohickey", "price_cents": 1},
  {"sku": "E-500", "title": "Thingamajig", "price_cents": 123456789012, "tags": ["big"]},
  {"sku": "F-600-LONG-SKU-WITH-32-CHARS-XX", "title": "Long", "price_cents": 5},
  {"sku": "a-100", "title": "Lower case", "price_cents": 1},
  {"sku": "AB", "title": "Too short", "price_cents": 1},
  {"sku": "G-700", "title": "", "price_cents": 1},
  {"sku": "H-800", "price_cents": 1},
  {"sku": "I-900", "title": "String price", "price_cents": "100"},
  {"sku": "J-910", "title": "Float price", "price_cents": 12.5},
  {"sku": "K-920", "title": "Float zero", "price_cents": 12.0},
  {"sku": "L-930", "title": "Null price", "price_cents": null},
  {"sku": "M-940", "title": "Negative", "price_cents": -1},
  null,
  {"sku": "A-100", "title": "Widget Pro", "price_cents": 1300, "tags": ["tools"]}
]"#;

#[tokio::test]
async fn javascript_product_catalog_upserts_exactly_the_valid_products() {
    let db = TestDb::new().await;
    db.apply(&example_schema("product_catalog")).await;
    let processors = Processors::new(&[(
        "product_catalog",
        &example("product_catalog"),
        Some(&example_manifest("product_catalog")),
    )]);
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("products.json");
    std::fs::write(&file, PRODUCTS).unwrap();
    let output = ingot(
        cwd.path(),
        &db.url,
        processors.path(),
        &["run", "product_catalog", file.to_str().unwrap(), "--json", "--workers", "1"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(
        (summary["total"].as_i64(), summary["completed"].as_i64(), summary["failed"].as_i64()),
        (Some(17), Some(7), Some(10))
    );
    let expected: Vec<(String, i64)> =
        [("invalid_price", 5), ("invalid_sku", 2), ("missing_title", 2), ("exception", 1)]
            .map(|(c, n)| (c.to_owned(), n))
            .into();
    assert_eq!(top_errors(&summary), expected);
    let thrown = summary["top_errors"][3]["message"].as_str().unwrap();
    assert!(thrown.starts_with("TypeError: "), "the JavaScript error reaches the item as itself: {thrown}");
    assert!(!thrown.contains("wasm") && !thrown.contains("variant"), "{thrown}");

    let rows: Vec<(String, String, i64, Vec<String>)> =
        sqlx::query_as("SELECT sku, title, price_cents, tags FROM products ORDER BY sku")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let expected = vec![
        ("A-100".to_owned(), "Widget Pro".to_owned(), 1300, vec!["tools".to_owned()]),
        ("B-200".to_owned(), "Gadget".to_owned(), 0, vec![]),
        ("C-300".to_owned(), "Gizmo".to_owned(), 999, vec![]),
        ("D-400".to_owned(), "Doohickey".to_owned(), 1, vec![]),
        ("E-500".to_owned(), "Thingamajig".to_owned(), 123_456_789_012, vec!["big".to_owned()]),
        ("F-600-LONG-SKU-WITH-32-CHARS-XX".to_owned(), "Long".to_owned(), 5, vec![]),
    ];
    assert_eq!(rows, expected);
}

/// The C example on its sample: levels upserted per SKU and warehouse (the last row of a pair
/// wins, with two workers: the batch key orders a SKU's rows), SKUs outside the catalogue and
/// bad quantities refused with their codes and fields.
#[tokio::test]
async fn c_inventory_upserts_exactly_the_valid_stock_levels() {
    let db = TestDb::new().await;
    db.apply(&example_schema("product_catalog")).await;
    db.apply(&example_schema("inventory")).await;
    db.apply("INSERT INTO products (sku, title, price_cents) VALUES ('KB-101', 'Keyboard', 4900), ('MS-220', 'Mouse', 1900), ('CB-330', 'Cable', 500)").await;
    let processors =
        Processors::new(&[("inventory", &example("inventory"), Some(&example_manifest("inventory")))]);
    let cwd = tempfile::tempdir().unwrap();
    let sample = root().join("processors/inventory/sample.csv");
    let output = ingot(
        cwd.path(),
        &db.url,
        processors.path(),
        &["run", "inventory", sample.to_str().unwrap(), "--json", "--workers", "2"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(
        (summary["total"].as_i64(), summary["completed"].as_i64(), summary["failed"].as_i64()),
        (Some(8), Some(5), Some(3))
    );
    let failures: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT item_index::bigint, error_code, error_field, error_message FROM import_batch_items
         WHERE status = 'failed' ORDER BY item_index",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected = [
        (5, "unknown_sku", "sku", "SKU XX-999 is not in the catalogue"),
        (6, "invalid_quantity", "quantity", "quantity -3 is not a whole number of at least 0"),
        (7, "missing_warehouse", "warehouse", "the row has no warehouse"),
    ]
    .map(|(i, c, f, m)| (i, c.to_owned(), f.to_owned(), m.to_owned()));
    assert_eq!(failures, expected);

    let levels: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT sku, warehouse, quantity FROM stock_levels ORDER BY sku, warehouse")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let expected =
        [("CB-330", "AMS-1", 12), ("KB-101", "AMS-1", 38), ("KB-101", "LIS-2", 7), ("MS-220", "AMS-1", 0)]
            .map(|(s, w, q)| (s.to_owned(), w.to_owned(), q));
    assert_eq!(levels, expected);
    let (table, target, data): (String, String, Value) = sqlx::query_as(
        "SELECT target_table, target_id, processed_data FROM import_batch_items WHERE item_index = 2",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((table.as_str(), target.as_str()), ("stock_levels", "MS-220"));
    assert_eq!(data, json!({"sku": "MS-220", "warehouse": "AMS-1", "quantity": 0}));
    let logged =
        db.scalar_i64("SELECT count(*) FROM import_logs WHERE message = 'KB-101 in AMS-1: 38'").await;
    assert_eq!(logged, 1, "the C helper's log lines reach the item's log");
}

#[tokio::test]
async fn an_18_mb_python_component_starts_from_the_cache_and_reuses_its_instance() {
    let cache = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig { cache_dir: Some(cache.path().to_owned()), fuel_metering: false };
    let first = Runtime::new(config()).unwrap().load(&example("transaction_feed")).unwrap();
    assert_eq!(first.cache, CacheOutcome::Compiled);
    let started = Instant::now();
    let runtime = Runtime::new(config()).unwrap();
    let code = runtime.load(&example("transaction_feed")).unwrap();
    let load = started.elapsed();
    assert_eq!(code.cache, CacheOutcome::Hit);
    assert!(load < Duration::from_secs(1), "loading from the cache took {load:?}");

    // Without a database every item fails with a returned error, not a trap: one instance.
    let mut instance = Instance::new(code, Limits { memory_bytes: 256 << 20, ..Limits::default() });
    let mut ctx = ProcessorContext::default();
    for i in 0..20 {
        let result = instance.process_item(&mut ctx, &item(i, json!({"email": "a@b.co"}))).await.unwrap();
        assert!(matches!(result, Err(ItemError::Invalid(_))));
    }
    assert_eq!(instance.instantiations(), 1, "one instance served every item");
    // An exception the processor did not expect: the item's error, and the instance goes on.
    let raised = instance.process_item(&mut ctx, &item(20, json!([1, 2]))).await.unwrap();
    let Err(ItemError::Invalid(detail)) = raised else { panic!("an invalid item: {raised:?}") };
    assert_eq!(detail.code.as_deref(), Some("exception"));
    assert!(detail.message.starts_with("AttributeError: "), "{}", detail.message);
    assert!(ctx.logs.entries().iter().any(|e| e.message.starts_with("Traceback (most recent call last)")));
    let after = instance.process_item(&mut ctx, &item(21, json!({"email": "a@b.co"}))).await.unwrap();
    assert!(after.is_err(), "a returned error again");
    assert_eq!(instance.instantiations(), 1, "an exception costs no new instance");
}
