//! `make bench`: Ingot's throughput against raw PostgreSQL doing the same work, on this machine,
//! in one run. Reports items/s and ratios, and writes them as JSON under target/bench/.
//!
//! - processing N customers (BENCH_ITEMS, default 20,000) at 1, 2 and 4 workers, each kind
//!   repeated BENCH_REPEAT times (default 3) interleaved with the others, median reported:
//!   a plain sqlx loop issuing exactly Ingot's item transaction for customer_data (claim with the
//!   same index floor, upsert the customer, write the item's final state, add to the counter
//!   slot, commit) with a WAL flush per item and with asynchronous commits; Ingot with
//!   customer_data.wasm in both durabilities; the same logic compiled into the host (to isolate
//!   the sandbox's cost); and the same logic in Python, JavaScript, C and Zig (bench-only
//!   processors); with BENCH_ONLY=languages only Rust and those, plus each component's size and
//!   its first and cached load time;
//! - pgbench running the same statements (prepared), 1 and 2 clients, flushed and asynchronous;
//! - creating batches of 100,000 and 1,000,000 items from CSV, against a raw COPY of the rows;
//! - creating batches from a CSV file of BENCH_CREATE_MB megabytes (default 1,024) and from
//!   1,000,000 NDJSON rows, against `psql \copy` of the same rows from a file (this part alone
//!   with BENCH_ONLY=creation);
//! - `ingot batch show` run as a command on the processed 1,000,000-item batch;
//! - the peak RSS of `ingot batch process` over the 1,000,000-item batch (skip both large parts
//!   with BENCH_LARGE=0);
//! - all-or-nothing (`--atomic`) batches of 10,000 and 100,000 items (and 1,000,000 unless
//!   BENCH_LARGE=0) against the normal mode on the same batch at 1 and 2 workers (this part
//!   alone with BENCH_ONLY=atomic).
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
use ingot::batch::{BatchManager, CreateOptions, Durability, ProcessOptions};
use ingot::context::ProcessorContext;
use ingot::input::InputSource;
use ingot::runtime::bindings::{ErrorDetail, Item, ItemError, Outcome, SqlValue};
use ingot::runtime::{Runtime, RuntimeConfig};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, Row};
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

/// Customer `i` as the JSON item Ingot stores for it.
fn customer_json(i: usize) -> Value {
    let country = ["US", "DE", "", "FR"][i % 4];
    json!({"email": format!("customer{i}@example.com"), "name": format!("Customer {i}"), "country": country})
}

/// Writes a CSV of about `megabytes` MB of customers; returns how many.
fn write_csv_of_size(path: &Path, megabytes: u64) -> usize {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(file, "email,name,country").unwrap();
    let (mut written, mut n) = (0_u64, 0_usize);
    while written < megabytes << 20 {
        let line = format!("customer{n}@example.com,Customer {n},{}\n", ["US", "DE", "", "FR"][n % 4]);
        file.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        n += 1;
    }
    n
}

fn write_ndjson(path: &Path, n: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(file, "{}", customer_json(i)).unwrap();
    }
}

/// Starts a timed part from a quiet disk: the files just written flushed, and the server's dirty
/// pages checkpointed, so that neither side pays for the other's writes.
async fn settle(db: &TestDb) {
    assert!(std::process::Command::new("sync").status().is_ok_and(|s| s.success()), "sync failed");
    sqlx::query("CHECKPOINT").execute(&db.pool).await.unwrap();
}

/// Seconds for `psql \copy` to load the rows Ingot would store for `n` customers, from a file in
/// `dir` written beforehand (as Ingot reads its input from a file).
async fn psql_copy(db: &TestDb, dir: &Path, n: usize) -> f64 {
    let rows = dir.join("rows.copy");
    {
        let batch = uuid::Uuid::now_v7();
        let mut file = std::io::BufWriter::new(std::fs::File::create(&rows).unwrap());
        for i in 0..n {
            writeln!(file, "{}\t{batch}\t{i}\t{}", uuid::Uuid::now_v7(), customer_json(i)).unwrap();
        }
    }
    settle(db).await;
    let command = format!(
        "\\copy import_batch_items (id, batch_id, item_index, source_data) FROM '{}'",
        rows.display()
    );
    let started = Instant::now();
    let output = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", &command, &db.url])
        .output()
        .await
        .expect("psql must be installed for the creation benchmark");
    let seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "psql \\copy failed: {}", String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_file(&rows);
    seconds
}

fn manager(db: &TestDb, runtime: &Arc<Runtime>, processors: &Processors) -> BatchManager {
    support::manager(db, processors, Arc::clone(runtime))
}

async fn create(manager: &BatchManager, csv: &Path) -> uuid::Uuid {
    create_with(manager, csv, false).await
}

async fn create_with(manager: &BatchManager, csv: &Path, atomic: bool) -> uuid::Uuid {
    let source = InputSource::from_arg(csv.to_str().unwrap(), None).unwrap();
    // Every measurement imports the same customers again.
    let again = CreateOptions { allow_duplicate: true, atomic, ..CreateOptions::default() };
    manager.create("customer_data", source, &again).await.unwrap()
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

/// The raw-PostgreSQL baseline: Ingot's item transaction for customer_data, issued directly —
/// the claim with the same index floor, the processor's upsert, the item's final state with its
/// processed data, the counter slot, the commit — with a WAL flush per item or asynchronous
/// commits (and one flushed commit at the end, as Ingot's batch end).
async fn raw_loop(db: &TestDb, batch: uuid::Uuid, workers: usize, flush_each: bool) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for slot in 0..workers {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            if !flush_each {
                conn.execute("SET synchronous_commit = off").await.unwrap();
            }
            let mut floor: i64 = 0;
            loop {
                let mut tx = conn.begin().await.unwrap();
                let row = sqlx::query(
                    "SELECT id, item_index, source_data::text AS data FROM import_batch_items
                     WHERE batch_id = $1 AND status = 'pending' AND item_index >= $2
                     ORDER BY item_index LIMIT 1 FOR UPDATE SKIP LOCKED",
                )
                .bind(batch)
                .bind(floor)
                .fetch_optional(&mut *tx)
                .await
                .unwrap();
                let Some(row) = row else {
                    tx.commit().await.unwrap();
                    if floor == 0 {
                        return;
                    }
                    floor = 0;
                    continue;
                };
                let item: uuid::Uuid = row.get("id");
                floor = row.get::<i64, _>("item_index") + 1;
                let data: Value = serde_json::from_str(row.get("data")).unwrap();
                let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default().trim().to_owned();
                let (email, name) = (text("email").to_lowercase(), text("name"));
                let country = Some(text("country").to_ascii_uppercase()).filter(|c| !c.is_empty());
                let id: uuid::Uuid = sqlx::query_scalar(
                    "INSERT INTO customers (email, name, country) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE \
                     SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id",
                )
                .bind(&email)
                .bind(&name)
                .bind(&country)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                let processed = json!({"email": email, "name": name, "country": country}).to_string();
                sqlx::query(
                    "UPDATE import_batch_items SET status = 'completed', processed_data = $3::jsonb,
                            target_table = 'customers', target_id = $2, attempts = attempts + 1,
                            started_at = now(), finished_at = now(), duration_ms = 0 WHERE id = $1",
                )
                .bind(item)
                .bind(id.to_string())
                .bind(processed)
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query(
                    "INSERT INTO import_batch_counters AS c (batch_id, slot, completed) VALUES ($1, $2, 1)
                     ON CONFLICT (batch_id, slot) DO UPDATE SET completed = c.completed + 1",
                )
                .bind(batch)
                .bind(slot as i16)
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
    if !flush_each {
        ingot::store::batches::flush(&db.pool).await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

async fn ingot_run(manager: &BatchManager, batch: uuid::Uuid, workers: usize, durability: Durability) -> f64 {
    let started = Instant::now();
    let options = ProcessOptions::workers(workers).with_durability(Some(durability));
    let summary = manager.process(batch, &options, None).await.unwrap();
    assert_eq!(summary.failed, 0, "{:?}", summary.top_errors);
    assert_eq!(summary.status, ingot::store::BatchStatus::Completed);
    started.elapsed().as_secs_f64()
}

/// pgbench running the raw loop's statements (prepared) with `clients` clients; tps, or `None`
/// without pgbench.
async fn pgbench(db: &TestDb, batch: uuid::Uuid, n: usize, clients: usize, flush_each: bool) -> Option<f64> {
    let script = std::env::temp_dir().join(format!("ingot-bench-{}.sql", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &script,
        "BEGIN;\n\
         SELECT id AS item FROM import_batch_items WHERE batch_id = :batch AND status = 'pending' ORDER BY item_index LIMIT 1 FOR UPDATE SKIP LOCKED \\gset\n\
         INSERT INTO customers (email, name, country) SELECT lower(source_data->>'email'), source_data->>'name', nullif(upper(source_data->>'country'), '') FROM import_batch_items WHERE id = :item ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id AS customer \\gset\n\
         UPDATE import_batch_items SET status = 'completed', processed_data = jsonb_build_object('email', source_data->>'email'), target_table = 'customers', target_id = :customer, attempts = attempts + 1, started_at = now(), finished_at = now(), duration_ms = 0 WHERE id = :item;\n\
         INSERT INTO import_batch_counters AS c (batch_id, slot, completed) VALUES (:batch, :client_id, 1) ON CONFLICT (batch_id, slot) DO UPDATE SET completed = c.completed + 1;\n\
         END;\n",
    )
    .ok()?;
    let per_client = n / clients;
    let mut command = tokio::process::Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", &clients.to_string()])
        .args(["-t", &per_client.to_string()])
        .arg("-f")
        .arg(&script)
        .args(["-D", &format!("batch={batch}")])
        .arg(&db.url);
    if !flush_each {
        command.env("PGOPTIONS", "-c synchronous_commit=off");
    }
    let output = command.output().await.ok()?;
    let _ = std::fs::remove_file(&script);
    assert!(output.status.success(), "pgbench failed: {}", String::from_utf8_lossy(&output.stderr));
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

/// Peak RSS (bytes) and duration of `ingot batch process` as a child process, which must succeed.
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
    let (status, peak) = wait_measuring_peak_rss(child);
    assert!(status.success(), "`ingot batch process` of the large batch exited with {status}");
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

/// The processing kinds measured, in the order they are printed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    RawFlushed,
    RawAsync,
    IngotItem,
    IngotBatch,
    Native,
    Python,
    JavaScript,
    C,
    Zig,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::RawFlushed,
        Kind::RawAsync,
        Kind::IngotItem,
        Kind::IngotBatch,
        Kind::Native,
        Kind::Python,
        Kind::JavaScript,
        Kind::C,
        Kind::Zig,
    ];
    /// What BENCH_ONLY=languages runs: the Rust processor and the same logic in each language.
    const LANGUAGES: [Kind; 5] = [Kind::IngotBatch, Kind::Python, Kind::JavaScript, Kind::C, Kind::Zig];

    fn label(self) -> &'static str {
        match self {
            Kind::RawFlushed => "raw sqlx loop, a flush per item",
            Kind::RawAsync => "raw sqlx loop, async commits",
            Kind::IngotItem => "Ingot, durability item",
            Kind::IngotBatch => "Ingot, durability batch",
            Kind::Native => "Ingot batch, same logic native",
            Kind::Python => "Ingot batch, same logic Python",
            Kind::JavaScript => "Ingot batch, same logic JS",
            Kind::C => "Ingot batch, same logic C",
            Kind::Zig => "Ingot batch, same logic Zig",
        }
    }
}

/// Median of the ratios `a / b` of the samples taken in the same round.
fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Creating batches from files against `psql \\copy` of the same rows: a CSV of
/// BENCH_CREATE_MB megabytes (default 1,024) and 1,000,000 NDJSON rows.
async fn creation_vs_psql(
    runtime: &Arc<Runtime>,
    processors: &Processors,
    dir: &Path,
    results: &mut serde_json::Map<String, Value>,
) {
    // From files to the stored rows, Ingot against psql's \copy of the same rows.
    let megabytes: u64 = std::env::var("BENCH_CREATE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    println!("\n{:<34} {:>12} {:>12} {:>8}", "batch creation (items/s)", "Ingot", "psql \\copy", "ratio");
    for kind in ["csv", "ndjson"] {
        let input = dir.join(format!("create.{kind}"));
        let (n, label) = if kind == "csv" {
            let n = write_csv_of_size(&input, megabytes);
            (n, format!("CSV, {megabytes} MB ({n} items)"))
        } else {
            write_ndjson(&input, 1_000_000);
            (1_000_000, "NDJSON, 1,000,000 items".to_owned())
        };
        let db = bench_db().await;
        let copy = n as f64 / psql_copy(&db, dir, n).await;
        db.apply("TRUNCATE import_batch_items").await;
        settle(&db).await;
        let manager = manager(&db, runtime, processors);
        let started = Instant::now();
        create(&manager, &input).await;
        let ingot = n as f64 / started.elapsed().as_secs_f64();
        println!("{label:<34} {ingot:>12.0} {copy:>12.0} {:>7.0}%   (target ≥ 70 %)", 100.0 * ingot / copy);
        results.insert(
            format!("creation_vs_psql_{kind}"),
            json!({"items": n, "ingot": ingot, "psql_copy": copy}),
        );
        drop(db);
        let _ = std::fs::remove_file(&input);
    }
}

/// All-or-nothing batches (one transaction, a savepoint per item, one connection) against the
/// normal mode on the same items, by size: whether the rate holds as the transaction grows.
async fn atomic_vs_normal(
    runtime: &Arc<Runtime>,
    processors: &Processors,
    dir: &Path,
    large: bool,
    results: &mut serde_json::Map<String, Value>,
) {
    println!(
        "\n{:<34} {:>12} {:>12} {:>12} {:>8}",
        "all-or-nothing (items/s)", "atomic", "normal, 1 w", "normal, 2 w", "ratio"
    );
    let sizes: &[usize] = if large { &[10_000, 100_000, 1_000_000] } else { &[10_000, 100_000] };
    for &size in sizes {
        let csv = dir.join(format!("atomic-{size}.csv"));
        write_csv(&csv, size);
        let mut rates = Vec::new();
        for (atomic, workers) in [(true, 1), (false, 1), (false, 2)] {
            let db = bench_db().await;
            let manager = manager(&db, runtime, processors);
            let batch = create_with(&manager, &csv, atomic).await;
            settle(&db).await;
            let seconds = ingot_run(&manager, batch, workers, Durability::Batch).await;
            let customers: i64 =
                sqlx::query_scalar("SELECT count(*) FROM customers").fetch_one(&db.pool).await.unwrap();
            assert_eq!(customers, size as i64);
            rates.push(size as f64 / seconds);
        }
        println!(
            "{:<34} {:>12.0} {:>12.0} {:>12.0} {:>7.0}%",
            format!("{size} items"),
            rates[0],
            rates[1],
            rates[2],
            100.0 * rates[0] / rates[1]
        );
        results.insert(
            format!("atomic_{size}"),
            json!({"atomic": rates[0], "normal_1_worker": rates[1], "normal_2_workers": rates[2]}),
        );
        let _ = std::fs::remove_file(&csv);
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let large = std::env::var("BENCH_LARGE").map_or(true, |v| v != "0");
    let wasm = root().join("processors/customer_data.wasm");
    assert!(wasm.exists(), "run `make processors` first");
    let bench_processors = root().join("target/bench/processors");
    let components = [
        ("Rust", wasm.clone()),
        ("Python", bench_processors.join("customer_data_py.wasm")),
        ("JavaScript", bench_processors.join("customer_data_js.wasm")),
        ("C", bench_processors.join("customer_data_c.wasm")),
        ("Zig", bench_processors.join("customer_data_zig.wasm")),
    ];
    assert!(
        components.iter().all(|(_, path)| path.exists()),
        "run `make bench` (it builds the Python, JS, C and Zig bench processors)"
    );
    let manifest = support::example_manifest("customer_data");
    let on = |path: &Path| Processors::new(&[("customer_data", path, Some(&manifest))]);
    let processors = on(&wasm);
    let [python, javascript, c, zig] = [1, 2, 3, 4].map(|i| on(&components[i].1));
    let languages_only = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "languages");
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
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "creation") {
        println!("Ingot batch creation on {machine}");
        creation_vs_psql(&runtime, &processors, files.path(), &mut results).await;
        write_results(&results, "creation");
        return;
    }
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "atomic") {
        println!("Ingot all-or-nothing batches on {machine}");
        atomic_vs_normal(&runtime, &processors, files.path(), large, &mut results).await;
        write_results(&results, "atomic");
        return;
    }
    results.insert("items".into(), json!(n));
    if languages_only {
        load_times(&components, &mut results);
    }
    // Each measurement is repeated (BENCH_REPEAT, default 3) with the kinds interleaved, so that
    // background noise hits them alike; medians are reported, and ratios are the median of the
    // ratios within each round.
    let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    results.insert("repeat".into(), json!(repeat));
    println!("Ingot throughput on {machine} — {n} customers per run, median of {repeat} runs\n");
    println!("{:<34} {:>10} {:>10} {:>10}", "processing (items/s)", "1 worker", "2 workers", "4 workers");
    // samples[kind][workers][round]
    let mut samples = vec![vec![Vec::new(); 3]; Kind::ALL.len()];
    for _ in 0..repeat {
        for (w, workers) in [1, 2, 4].into_iter().enumerate() {
            for (k, kind) in Kind::ALL.into_iter().enumerate() {
                if languages_only && !Kind::LANGUAGES.contains(&kind) {
                    continue;
                }
                let db = bench_db().await;
                let on = match kind {
                    Kind::Python => &python,
                    Kind::JavaScript => &javascript,
                    Kind::C => &c,
                    Kind::Zig => &zig,
                    _ => &processors,
                };
                let manager = manager(&db, &runtime, on);
                let manager = if kind == Kind::Native {
                    manager.with_native_logic(Arc::new(NativeCustomerData))
                } else {
                    manager
                };
                let batch = create(&manager, &csv).await;
                let seconds = match kind {
                    Kind::RawFlushed => raw_loop(&db, batch, workers, true).await,
                    Kind::RawAsync => raw_loop(&db, batch, workers, false).await,
                    Kind::IngotItem => ingot_run(&manager, batch, workers, Durability::Item).await,
                    _ => ingot_run(&manager, batch, workers, Durability::Batch).await,
                };
                let customers: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM customers").fetch_one(&db.pool).await.unwrap();
                assert_eq!(customers, n as i64, "{}", kind.label());
                let completed: i64 = sqlx::query_scalar(
                    "SELECT coalesce(sum(completed), 0)::bigint FROM import_batch_counters WHERE batch_id = $1",
                )
                .bind(batch)
                .fetch_one(&db.pool)
                .await
                .unwrap();
                assert_eq!(completed, n as i64, "{}: the counters", kind.label());
                samples[k][w].push(n as f64 / seconds);
                drop(db);
            }
        }
    }
    for (k, kind) in Kind::ALL.into_iter().enumerate() {
        if samples[k][0].is_empty() {
            continue;
        }
        let rates: Vec<f64> = samples[k].iter().map(|s| median(s)).collect();
        println!("{:<34} {:>10.0} {:>10.0} {:>10.0}", kind.label(), rates[0], rates[1], rates[2]);
        results.insert(
            format!("processing: {}", kind.label()),
            json!({"workers_1": rates[0], "workers_2": rates[1], "workers_4": rates[2]}),
        );
    }
    let index = |kind: Kind| Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    println!();
    for (a, b, label, target) in [
        (Kind::IngotItem, Kind::RawFlushed, "Ingot item / raw, flushed", "≥ 70 %"),
        (Kind::IngotBatch, Kind::RawAsync, "Ingot batch / raw, async", "≥ 85 %"),
        (Kind::IngotBatch, Kind::Native, "WebAssembly / native", "≥ 95 %"),
        (Kind::Python, Kind::IngotBatch, "Python / Rust", "≥ 80 %"),
        (Kind::JavaScript, Kind::IngotBatch, "JavaScript / Rust", "≥ 80 %"),
        (Kind::C, Kind::IngotBatch, "C / Rust", ""),
        (Kind::Zig, Kind::IngotBatch, "Zig / Rust", ""),
        (Kind::IngotBatch, Kind::IngotItem, "Ingot batch / Ingot item", ""),
    ] {
        if samples[index(a)][0].is_empty() || samples[index(b)][0].is_empty() {
            continue;
        }
        let ratios: Vec<f64> =
            (0..3).map(|w| 100.0 * median_ratio(&samples[index(a)][w], &samples[index(b)][w])).collect();
        println!(
            "{label:<34} {:>9.0}% {:>9.0}% {:>9.0}%   {}",
            ratios[0],
            ratios[1],
            ratios[2],
            if target.is_empty() { String::new() } else { format!("(target {target})") }
        );
        results.insert(format!("ratio: {label}"), json!(ratios));
    }

    if languages_only {
        write_results(&results, "languages");
        return;
    }

    // pgbench: the raw loop's statements, prepared, repeated like the rest.
    println!("\n{:<34} {:>10} {:>10}", "pgbench (tps, median)", "1 client", "2 clients");
    let mut pgbench_tps = Vec::new();
    for flush_each in [true, false] {
        let mut tps = vec![Vec::new(); 2];
        for _ in 0..repeat {
            for (c, clients) in [1, 2].into_iter().enumerate() {
                let db = bench_db().await;
                let batch = create(&manager(&db, &runtime, &processors), &csv).await;
                match pgbench(&db, batch, n, clients, flush_each).await {
                    Some(t) => tps[c].push(t),
                    None => {
                        println!("pgbench not found on PATH: skipped");
                        break;
                    }
                }
            }
        }
        if tps[0].is_empty() || tps[1].is_empty() {
            break;
        }
        let (one, two) = (median(&tps[0]), median(&tps[1]));
        let label = if flush_each { "pgbench, a flush per item" } else { "pgbench, async commits" };
        println!("{label:<34} {one:>10.0} {two:>10.0}");
        results.insert(label.into(), json!({"clients_1": one, "clients_2": two}));
        pgbench_tps.push((flush_each, one, two));
    }
    if let Some((_, one, two)) = pgbench_tps.iter().find(|(flushed, ..)| *flushed) {
        let batch_rates: Vec<f64> = samples[index(Kind::IngotBatch)].iter().map(|s| median(s)).collect();
        println!(
            "{:<34} {:>9.1}× {:>9.1}×   (target ≥ 2.5×)",
            "Ingot batch / flushed pgbench",
            batch_rates[0] / one,
            batch_rates[1] / two
        );
        results.insert(
            "ratio: Ingot batch / flushed pgbench".into(),
            json!([batch_rates[0] / one, batch_rates[1] / two]),
        );
    }

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
                let (rss, seconds) = process_with_peak_rss(&db, &processors, &cache, batch, 4);
                println!(
                    "\n`ingot batch process` of 1,000,000 items, 4 workers, durability batch: {:.0} items/s, peak RSS {} MB (target < 64 MB)",
                    size as f64 / seconds,
                    rss >> 20
                );
                results.insert(
                    "process_1m".into(),
                    json!({"items_per_second": size as f64 / seconds, "peak_rss_bytes": rss}),
                );
                // `ingot batch show` as a user runs it, on the processed batch: the whole command,
                // process start and connection included, median of 20.
                let mut times_ms = Vec::new();
                let mut query_ms = Vec::new();
                for _ in 0..20 {
                    let t = Instant::now();
                    let output = support::ingot_command(
                        &root(),
                        &db.url,
                        processors.path(),
                        &["batch", "show", &batch.to_string(), "--json"],
                    )
                    .output()
                    .unwrap();
                    times_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    assert!(
                        output.status.success(),
                        "batch show: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                    let t = Instant::now();
                    manager.summary(batch).await.unwrap();
                    query_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                let (show_ms, summary_ms) = (median(&times_ms), median(&query_ms));
                println!(
                    "`ingot batch show` on it: {show_ms:.1} ms for the whole command, {summary_ms:.2} ms for its queries (target < 10 ms)"
                );
                results.insert("batch_show_ms".into(), json!({"command": show_ms, "queries": summary_ms}));
            }
            drop(db);
            let _ = std::fs::remove_file(&big);
        }

        creation_vs_psql(&runtime, &processors, files.path(), &mut results).await;
    }
    atomic_vs_normal(&runtime, &processors, files.path(), large, &mut results).await;
    write_results(&results, "throughput");
}

/// Each language's component: its size, its first load (compiled, then written to the compile
/// cache) and a later load in a new runtime (from that cache, as every later `ingot` process
/// loads it); the median of 5 loads each.
fn load_times(components: &[(&str, std::path::PathBuf)], results: &mut serde_json::Map<String, Value>) {
    println!(
        "{:<34} {:>10} {:>12} {:>12}",
        "customer_data component", "size (KB)", "first load", "cached load"
    );
    for (language, path) in components {
        let mut first = Vec::new();
        let mut cached = Vec::new();
        for _ in 0..5 {
            let cache = tempfile::tempdir().unwrap();
            for times in [&mut first, &mut cached] {
                let runtime = Runtime::new(RuntimeConfig {
                    cache_dir: Some(cache.path().to_owned()),
                    fuel_metering: false,
                })
                .unwrap();
                let started = Instant::now();
                runtime.load(path).unwrap();
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let size = std::fs::metadata(path).unwrap().len() as f64 / 1024.0;
        let (first, cached) = (median(&first), median(&cached));
        println!("{language:<34} {size:>10.0} {first:>10.0}ms {cached:>10.1}ms");
        results.insert(
            format!("component: {language}"),
            json!({"size_kb": size, "first_load_ms": first, "cached_load_ms": cached}),
        );
    }
    println!();
}

fn write_results(results: &serde_json::Map<String, Value>, name: &str) {
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = serde_json::to_string_pretty(&Value::Object(results.clone())).unwrap();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    std::fs::write(out.join(format!("{name}-{stamp}.json")), &json).unwrap();
    std::fs::write(out.join(format!("{name}-latest.json")), &json).unwrap();
    println!("\nwritten to target/bench/{name}-latest.json");
}
