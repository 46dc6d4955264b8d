//! `make bench`: Ingot's throughput against raw PostgreSQL doing the same work, on this machine,
//! in one run. Reports items/s and ratios, and writes them as JSON under target/bench/.
//!
//! - processing N customers (BENCH_ITEMS, default 20,000) at 1, 2 and 4 workers:
//!   (a) Ingot with the customer_data component; (b) a plain sqlx loop issuing the same
//!   transaction (claim, upsert the customer, mark the item completed, insert a log line, commit);
//!   (c) the same customer_data logic compiled into the host (no WebAssembly), to isolate the
//!   sandbox's cost; and pgbench running the same five statements with 2 clients;
//! - creating batches of 100,000 and 1,000,000 items from CSV, against a raw COPY of the same rows;
//! - `ingot batch show` on the 1,000,000-item batch;
//! - the peak RSS of `ingot batch process` over the 1,000,000-item batch (skip both large parts
//!   with BENCH_LARGE=0).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

#[path = "../../tests/support/mod.rs"]
mod support;

use futures_util::future::BoxFuture;
use ingot::batch::native::NativeProcessor;
use ingot::batch::{BatchManager, CreateOptions, ProcessOptions};
use ingot::context::ProcessorContext;
use ingot::input::InputSource;
use ingot::runtime::bindings::{ErrorDetail, Item, ItemError, Outcome, SqlValue};
use ingot::runtime::{Runtime, RuntimeConfig};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use support::peak_rss::wait_measuring_peak_rss;
use support::{Processors, TestDb, root};

/// A database of its own for one measurement, with customer_data's tables; dropped with it.
async fn bench_db() -> TestDb {
    let db = TestDb::new().await;
    db.apply(&support::example_schema("customer_data")).await;
    db
}

fn write_csv(path: &Path, n: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(file, "email,name,country").unwrap();
    for i in 0..n {
        writeln!(file, "customer{i}@example.com,Customer {i},{}", ["US", "DE", "", "FR"][i % 4]).unwrap();
    }
}

fn manager(db: &TestDb, runtime: &Arc<Runtime>, processors: &Processors) -> BatchManager {
    support::manager(db, processors, Arc::clone(runtime))
}

async fn create(manager: &BatchManager, csv: &Path) -> uuid::Uuid {
    let source = InputSource::from_arg(csv.to_str().unwrap(), None).unwrap();
    manager.create("customer_data", source, &CreateOptions::default()).await.unwrap()
}

/// customer_data's rules, compiled into the host.
struct NativeCustomerData;

fn invalid(message: &str, code: &str, field: &str) -> ItemError {
    ItemError::Invalid(ErrorDetail {
        message: message.into(),
        code: Some(code.into()),
        field: Some(field.into()),
    })
}

fn is_email(s: &str) -> bool {
    let Some((user, host)) = s.split_once('@') else { return false };
    let dot_inside = host.char_indices().any(|(i, c)| c == '.' && i > 0 && i + 1 < host.len());
    !user.is_empty() && !host.contains('@') && !s.contains(char::is_whitespace) && dot_inside
}

impl NativeProcessor for NativeCustomerData {
    fn process_item<'a>(
        &'a self,
        ctx: &'a mut ProcessorContext,
        item: &'a Item,
    ) -> BoxFuture<'a, Result<Outcome, ItemError>> {
        Box::pin(async move {
            let row: Value =
                serde_json::from_str(&item.data).map_err(|_| invalid("not JSON", "invalid_data", "data"))?;
            let text = |key: &str| row.get(key).and_then(Value::as_str).unwrap_or_default().trim().to_owned();
            let email = text("email").to_lowercase();
            let name = text("name");
            let country = text("country").to_ascii_uppercase();
            if !is_email(&email) {
                return Err(invalid("email is not a valid address", "invalid_email", "email"));
            }
            if name.is_empty() {
                return Err(invalid("name is required", "missing_name", "name"));
            }
            if !(country.is_empty() || country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                return Err(invalid("country must be 2 letters", "invalid_country", "country"));
            }
            let country = Some(country).filter(|c| !c.is_empty());
            let params = vec![
                SqlValue::Text(email.clone()),
                SqlValue::Text(name.clone()),
                country.clone().map_or(SqlValue::Null, SqlValue::Text),
            ];
            let rows = ctx
                .query(
                    "INSERT INTO customers (email, name, country) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE \
                     SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id",
                    params,
                )
                .await
                .map_err(|e| ItemError::Invalid(ErrorDetail { message: e.message, code: Some("sql_error".into()), field: None }))?;
            let id = match rows.rows.first().and_then(|r| r.first()) {
                Some(SqlValue::Uuid(id)) => id.clone(),
                _ => String::new(),
            };
            Ok(Outcome {
                target_table: Some("customers".into()),
                target_id: Some(id),
                processed_data: Some(json!({"email": email, "name": name, "country": country}).to_string()),
            })
        })
    }
}

/// The raw-PostgreSQL baseline: the same transaction per item, issued directly.
async fn raw_loop(db: &TestDb, batch: uuid::Uuid, workers: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            loop {
                let mut tx = conn.begin().await.unwrap();
                let Some(row) = sqlx::query(
                    "SELECT id, source_data FROM import_batch_items WHERE batch_id = $1 AND status = 'pending'
                     ORDER BY item_index LIMIT 1 FOR UPDATE SKIP LOCKED",
                )
                .bind(batch)
                .fetch_optional(&mut *tx)
                .await
                .unwrap() else {
                    tx.commit().await.unwrap();
                    return;
                };
                let item: uuid::Uuid = row.get("id");
                let data: Value = row.get("source_data");
                let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default().trim().to_owned();
                let country = Some(text("country").to_ascii_uppercase()).filter(|c| !c.is_empty());
                let id: uuid::Uuid = sqlx::query_scalar(
                    "INSERT INTO customers (email, name, country) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE \
                     SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id",
                )
                .bind(text("email").to_lowercase())
                .bind(text("name"))
                .bind(&country)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                sqlx::query(
                    "UPDATE import_batch_items SET status = 'completed', target_table = 'customers', target_id = $2,
                            attempts = attempts + 1, finished_at = now() WHERE id = $1",
                )
                .bind(item)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query("INSERT INTO import_logs (batch_id, item_id, log_level, message) VALUES ($1, $2, 'info', 'imported')")
                    .bind(batch)
                    .bind(item)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

async fn ingot_run(manager: &BatchManager, batch: uuid::Uuid, workers: usize) -> f64 {
    let started = Instant::now();
    let summary = manager.process(batch, &ProcessOptions::workers(workers), None).await.unwrap();
    assert_eq!(summary.failed, 0, "{:?}", summary.top_errors);
    started.elapsed().as_secs_f64()
}

/// pgbench running the baseline's five statements with `clients` clients.
async fn pgbench(db: &TestDb, batch: uuid::Uuid, n: usize, clients: usize) -> Option<f64> {
    let script = std::env::temp_dir().join(format!("ingot-bench-{}.sql", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &script,
        "BEGIN;\n\
         SELECT id AS item FROM import_batch_items WHERE batch_id = ':batch' AND status = 'pending' ORDER BY item_index LIMIT 1 FOR UPDATE SKIP LOCKED \\gset\n\
         INSERT INTO customers (email, name, country) SELECT lower(source_data->>'email'), source_data->>'name', nullif(upper(source_data->>'country'), '') FROM import_batch_items WHERE id = ':item' ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id AS customer \\gset\n\
         UPDATE import_batch_items SET status = 'completed', target_table = 'customers', target_id = ':customer', attempts = attempts + 1, finished_at = now() WHERE id = ':item';\n\
         INSERT INTO import_logs (batch_id, item_id, log_level, message) VALUES (':batch', ':item', 'info', 'imported');\n\
         END;\n",
    )
    .ok()?;
    let per_client = n / clients;
    let output = tokio::process::Command::new("pgbench")
        .args(["-n", "-c", &clients.to_string(), "-j", &clients.to_string(), "-t", &per_client.to_string()])
        .arg("-f")
        .arg(&script)
        .args(["-D", &format!("batch={batch}")])
        .arg(&db.url)
        .output()
        .await
        .ok()?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
}

/// A raw COPY of the rows Ingot would store for `n` customers.
async fn raw_copy(db: &TestDb, n: usize) -> f64 {
    let batch = uuid::Uuid::now_v7();
    let mut rows = Vec::with_capacity(n * 110);
    for i in 0..n {
        let country = ["US", "DE", "", "FR"][i % 4];
        let data = json!({"email": format!("customer{i}@example.com"), "name": format!("Customer {i}"), "country": country});
        writeln!(rows, "{}\t{batch}\t{i}\t{data}", uuid::Uuid::now_v7()).unwrap();
    }
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let started = Instant::now();
    let mut tx = conn.begin().await.unwrap();
    let mut copy = tx
        .copy_in_raw("COPY import_batch_items (id, batch_id, item_index, source_data) FROM STDIN")
        .await
        .unwrap();
    for chunk in rows.chunks(1 << 20) {
        copy.send(chunk).await.unwrap();
    }
    copy.finish().await.unwrap();
    tx.commit().await.unwrap();
    started.elapsed().as_secs_f64()
}

/// Peak RSS (bytes) and duration of `ingot batch process` as a child process.
fn process_with_peak_rss(
    db: &TestDb,
    processors: &Processors,
    cache: &Path,
    batch: uuid::Uuid,
    workers: usize,
) -> (u64, f64) {
    let started = Instant::now();
    let args = ["batch", "process", &batch.to_string(), "--workers", &workers.to_string(), "--json"];
    let child = support::ingot_command(&root(), &db.url, processors.path(), &args)
        .env("INGOT_CACHE_DIR", cache)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (_status, peak) = wait_measuring_peak_rss(child);
    (peak, started.elapsed().as_secs_f64())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(0, |kb| kb >> 20);
    format!("{cores} cores ({cpu}), {memory} GiB")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let large = std::env::var("BENCH_LARGE").map_or(true, |v| v != "0");
    let wasm = root().join("processors/customer_data.wasm");
    assert!(wasm.exists(), "run `make processors` first");
    let manifest = support::example_manifest("customer_data");
    let processors = Processors::new(&[("customer_data", &wasm, Some(&manifest))]);
    let cache = root().join("target/bench/cache");
    let runtime = Arc::new(
        Runtime::new(RuntimeConfig { cache_dir: Some(cache.clone()), fuel_metering: false }).unwrap(),
    );
    let files = tempfile::tempdir().unwrap();
    let csv = files.path().join("customers.csv");
    write_csv(&csv, n);
    let machine = machine();
    let mut results = serde_json::Map::new();
    results.insert("machine".into(), json!(machine));
    results.insert("items".into(), json!(n));
    // Each measurement is repeated (BENCH_REPEAT, default 3) with the three kinds interleaved, so
    // that background noise hits them alike; the median is reported.
    let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    println!("Ingot throughput on {machine} — {n} customers per run, median of {repeat} runs\n");
    println!("{:<34} {:>10} {:>10} {:>10}", "processing (items/s)", "1 worker", "2 workers", "4 workers");
    // The kinds measured, by their index in `kinds`.
    const RAW: usize = 0;
    const WASM: usize = 1;
    const NATIVE: usize = 2;
    let kinds = ["raw sqlx loop (baseline)", "Ingot, customer_data.wasm", "Ingot, same logic native"];
    let mut samples = vec![vec![Vec::new(); 3]; kinds.len()];
    for _ in 0..repeat {
        for (w, workers) in [1, 2, 4].into_iter().enumerate() {
            for (k, runs) in samples.iter_mut().enumerate() {
                let db = bench_db().await;
                let manager = manager(&db, &runtime, &processors);
                let manager = if k == NATIVE {
                    manager.with_native_logic(Arc::new(NativeCustomerData))
                } else {
                    manager
                };
                let batch = create(&manager, &csv).await;
                let seconds = match k {
                    RAW => raw_loop(&db, batch, workers).await,
                    _ => ingot_run(&manager, batch, workers).await,
                };
                let customers: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM customers").fetch_one(&db.pool).await.unwrap();
                assert_eq!(customers, n as i64);
                runs[w].push(n as f64 / seconds);
                drop(db);
            }
        }
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    for (label, per_workers) in kinds.iter().zip(&samples) {
        let rates: Vec<f64> = per_workers.iter().map(|s| median(s)).collect();
        println!("{label:<34} {:>10.0} {:>10.0} {:>10.0}", rates[0], rates[1], rates[2]);
        rows.push(((*label).to_owned(), rates));
    }
    results.insert("repeat".into(), json!(repeat));
    for (a, b, label, target) in [(WASM, RAW, "Ingot / raw", 70), (WASM, NATIVE, "WebAssembly / native", 90)]
    {
        let ratio = |i: usize| 100.0 * rows[a].1[i] / rows[b].1[i];
        println!(
            "{label:<34} {:>9.0}% {:>9.0}% {:>9.0}%   (target ≥ {target} %)",
            ratio(0),
            ratio(1),
            ratio(2)
        );
    }
    for (label, rates) in &rows {
        results.insert(
            format!("processing: {label}"),
            json!({"workers_1": rates[0], "workers_2": rates[1], "workers_4": rates[2]}),
        );
    }

    // pgbench, 2 clients, against Ingot at 2 workers (measured above).
    let db = bench_db().await;
    let batch = create(&manager(&db, &runtime, &processors), &csv).await;
    match pgbench(&db, batch, n, 2).await {
        Some(tps) => {
            println!(
                "\npgbench, same five statements, 2 clients: {tps:.0} tps; Ingot at 2 workers: {:.0}% of it (target ≥ 70 %)",
                100.0 * rows[WASM].1[1] / tps
            );
            results.insert("pgbench_2_clients_tps".into(), json!(tps));
        }
        None => println!("\npgbench not found on PATH: skipped"),
    }
    drop(db);

    if large {
        println!("\n{:<34} {:>12} {:>12} {:>8}", "batch creation (items/s)", "Ingot", "raw COPY", "ratio");
        for size in [100_000, 1_000_000] {
            let big = files.path().join(format!("big-{size}.csv"));
            write_csv(&big, size);
            let db = bench_db().await;
            let copy = size as f64 / raw_copy(&db, size).await;
            let manager = manager(&db, &runtime, &processors);
            let started = Instant::now();
            let batch = create(&manager, &big).await;
            let ingot = size as f64 / started.elapsed().as_secs_f64();
            println!(
                "{:<34} {ingot:>12.0} {copy:>12.0} {:>7.0}%   (target ≥ 80 %)",
                format!("{size} items"),
                100.0 * ingot / copy
            );
            results.insert(format!("creation_{size}"), json!({"ingot": ingot, "raw_copy": copy}));
            if size == 1_000_000 {
                // `ingot batch show`: the summary's queries, median of 20.
                let mut times_ms = Vec::new();
                for _ in 0..20 {
                    let t = Instant::now();
                    manager.summary(batch).await.unwrap();
                    times_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                let show_ms = median(&times_ms);
                println!(
                    "\n`ingot batch show` on 1,000,000 items: {show_ms:.2} ms median wall time, round trips included (target < 10 ms)"
                );
                results.insert("batch_show_ms".into(), json!(show_ms));
                let (rss, seconds) = process_with_peak_rss(&db, &processors, &cache, batch, 4);
                println!(
                    "`ingot batch process` of 1,000,000 items, 4 workers: {:.0} items/s, peak RSS {} MB (target < 150 MB)",
                    size as f64 / seconds,
                    rss >> 20
                );
                results.insert(
                    "process_1m".into(),
                    json!({"items_per_second": size as f64 / seconds, "peak_rss_bytes": rss}),
                );
            }
            drop(db);
            let _ = std::fs::remove_file(&big);
        }
    }
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = serde_json::to_string_pretty(&Value::Object(results)).unwrap();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    std::fs::write(out.join(format!("throughput-{stamp}.json")), &json).unwrap();
    std::fs::write(out.join("throughput-latest.json"), &json).unwrap();
    println!("\nwritten to target/bench/throughput-latest.json");
}
