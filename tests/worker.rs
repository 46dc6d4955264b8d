//! `ingot worker`: batches picked up as they appear (NOTIFY, not polling), several workers sharing
//! one database, processors replaced without a restart, Prometheus metrics, graceful stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ingot::batch::{CreateOptions, ProcessOptions, Progress};
use ingot::input::InputSource;
use ingot::store::BatchStatus;
use sha2::Digest;
use support::{Processors, TestDb, guest, ingot_command, json_of, sigterm, stderr_of};
use uuid::Uuid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_worker(db: &TestDb, processors: &Processors, cwd: &std::path::Path, extra: &[&str]) -> Child {
    let mut args = vec!["worker", "--workers", "2", "--poll-interval", "60"];
    args.extend_from_slice(extra);
    ingot_command(cwd, &db.url, processors.path(), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) -> String {
    sigterm(&child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the worker did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    stderr_of(&output)
}

fn create(
    db: &TestDb,
    processors: &Processors,
    cwd: &std::path::Path,
    batch_type: &str,
    file: &std::path::Path,
) -> Uuid {
    let output = ingot_command(
        cwd,
        &db.url,
        processors.path(),
        // The tests make several batches from one file.
        &["batch", "create", batch_type, file.to_str().unwrap(), "--json", "--allow-duplicate"],
    )
    .output()
    .unwrap();
    support::created_batch(&output)
}

async fn wait_until_finished(db: &TestDb, id: Uuid, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let status: String = sqlx::query_scalar("SELECT status FROM import_batches WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if status == "completed" || status == "failed" {
            return status;
        }
        assert!(Instant::now() < deadline, "batch {id} still {status} after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the worker never served metrics");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the worker's first look at the database, made once it listens and before it waits,
/// is over: `pg_stat_activity` shows its `LISTEN` connection idle after `LISTEN`, and a connection
/// idle after the look's query (the one `next_runnable` sends). This is certain where a fixed sleep
/// only guesses: the look's snapshot was taken before anything the test commits afterwards, so a
/// batch created next can only be found by a second look, which needs a notification (or the
/// 60 s poll). The periodic flush, 2 s after start, may reuse the look's connection; polling every
/// 10 ms sees the look well before.
async fn wait_until_waiting(db: &TestDb) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (listening, looked): (bool, bool) = sqlx::query_as(
            "SELECT coalesce(bool_or(query LIKE 'LISTEN %ingot_batches%'), false),
                    coalesce(bool_or(query LIKE 'SELECT id FROM import_batches%'), false)
             FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'ingot' AND state = 'idle'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if listening && looked {
            return;
        }
        assert!(Instant::now() < deadline, "the worker never listened and looked (listening: {listening})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one series in a scrape, matched on the whole name and labels.
fn series<'a>(metrics: &'a str, name: &str) -> Option<&'a str> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
}

// A batch created while the worker waits is run at once: the NOTIFY woke it, not a poll or its
// first look; and the metrics count what it did.
#[tokio::test]
async fn a_worker_picks_up_new_batches_at_once_and_serves_metrics() {
    let db = TestDb::new().await;
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let worker = spawn_worker(&db, &processors, cwd.path(), &["--metrics", &format!("127.0.0.1:{port}")]);
    wait_for_port(port).await;
    // The metrics port opens before the worker listens and looks: a batch created then could be
    // found by that first look, with no notification at all.
    wait_until_waiting(&db).await;

    let file = cwd.path().join("items.ndjson");
    let items: String =
        (0..50).map(|i| format!("{{\"mode\": \"{}\"}}\n", if i % 10 == 0 { "skip" } else { "ok" })).collect();
    std::fs::write(&file, items).unwrap();
    let started = Instant::now();
    let id = create(&db, &processors, cwd.path(), "probe", &file);
    // The poll interval is 60 s and the first look is over: finishing in seconds means the NOTIFY
    // woke the worker.
    assert_eq!(wait_until_finished(&db, id, Duration::from_secs(20)).await, "completed");
    assert!(started.elapsed() < Duration::from_secs(20));

    let metrics = scrape(port);
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        metrics.contains("ingot_items_total{batch_type=\"probe\",outcome=\"completed\"} 45"),
        "{metrics}"
    );
    assert!(metrics.contains("ingot_items_total{batch_type=\"probe\",outcome=\"skipped\"} 5"), "{metrics}");
    assert!(metrics.contains("ingot_item_duration_seconds_count{batch_type=\"probe\"} 50"), "{metrics}");
    assert!(metrics.contains("ingot_batches{status=\"completed\"} 1"), "{metrics}");
    let stderr = stop(worker);
    assert!(stderr.contains("stopped after 50 items in 1 batches"), "{stderr}");
}

// Failed items and retried attempts are counted apart: each attempt that will be tried again is one
// `retry`, an item out of attempts one `failed`, and every attempt one duration sample.
#[tokio::test]
async fn metrics_count_failed_items_and_each_attempt_that_is_retried() {
    let db = TestDb::new().await;
    let processors = Processors::new(&[("probe", &guest("probe"), Some("[batch]\nmax_attempts = 3\n"))]);
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("items.ndjson");
    let flaky = |until: u32| format!("{{\"mode\": \"flaky\", \"until\": {until}, \"sql\": \"SELECT 1\"}}\n");
    let mut items = String::new();
    // Completed: 4 at once, 3 after 1 + 1 + 2 retries. Failed: 3 invalid (never retried) and one
    // retryable out of attempts after 2 retries.
    items.push_str(&"{\"mode\": \"ok\"}\n".repeat(4));
    items.push_str(&"{\"mode\": \"invalid\", \"message\": \"bad\"}\n".repeat(3));
    items.push_str(&flaky(2).repeat(2));
    items.push_str(&flaky(3));
    items.push_str("{\"mode\": \"retryable\", \"message\": \"down\"}\n");
    std::fs::write(&file, items).unwrap();
    let id = create(&db, &processors, cwd.path(), "probe", &file);
    let port = free_port();
    let worker = spawn_worker(&db, &processors, cwd.path(), &["--metrics", &format!("127.0.0.1:{port}")]);
    assert_eq!(wait_until_finished(&db, id, Duration::from_secs(30)).await, "completed");
    wait_for_port(port).await;

    let metrics = scrape(port);
    let items_total = |outcome: &str| {
        series(&metrics, &format!("ingot_items_total{{batch_type=\"probe\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!(items_total("completed"), Some("7"), "{metrics}");
    assert_eq!(items_total("failed"), Some("4"), "{metrics}");
    assert_eq!(items_total("retry"), Some("6"), "{metrics}");
    assert_eq!(items_total("skipped"), None, "{metrics}");
    assert_eq!(
        series(&metrics, "ingot_item_duration_seconds_count{batch_type=\"probe\"}"),
        Some("17"),
        "{metrics}"
    );
    // The database agrees: its attempts are the retries plus the final outcomes.
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT sum(attempts)::bigint FROM import_batch_items WHERE batch_id = '{id}'"
        ))
        .await,
        17
    );
    let stderr = stop(worker);
    assert!(stderr.contains("stopped after 11 items in 1 batches"), "{stderr}");
}

// `--types` is a filter on what a worker takes, not a preference: another type's batch, older and
// so first in line, is not started, claimed or attempted.
#[tokio::test]
async fn a_worker_given_types_leaves_batches_of_other_types_pending_and_untouched() {
    let db = TestDb::new().await;
    let processors = Processors::new(&[("a", &guest("probe"), None), ("b", &guest("probe"), None)]);
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("items.ndjson");
    std::fs::write(&file, "{\"mode\": \"ok\"}\n".repeat(3)).unwrap();
    // b's batch is the older: a worker ignoring --types would take it first, so it would be
    // touched before a's batch is done.
    let b = create(&db, &processors, cwd.path(), "b", &file);
    let a = create(&db, &processors, cwd.path(), "a", &file);
    let worker = spawn_worker(&db, &processors, cwd.path(), &["--types", "a"]);
    assert_eq!(wait_until_finished(&db, a, Duration::from_secs(20)).await, "completed");
    let stderr = stop(worker);

    let (status, started, digest): (String, bool, Option<String>) = sqlx::query_as(
        "SELECT status, started_at IS NOT NULL, processor_digest FROM import_batches WHERE id = $1",
    )
    .bind(b)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), started, digest), ("pending", false, None));
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM import_batch_items WHERE batch_id = '{b}'
               AND (status <> 'pending' OR attempts <> 0 OR interruptions <> 0 OR started_at IS NOT NULL)"
        ))
        .await,
        0,
        "an item of b was attempted"
    );
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(ingot::store::batches::counts(&mut conn, b).await.unwrap(), Default::default());
    assert!(stderr.contains("serving a with"), "{stderr}");
    assert!(stderr.contains("stopped after 3 items in 1 batches"), "{stderr}");
}

// A graceful stop mid-batch: the items in flight finish, nothing else is claimed, the batch stays
// `processing` with the rest pending, and a later run finishes it with each item applied once.
#[tokio::test]
async fn sigterm_mid_batch_exits_at_once_and_leaves_the_rest_pending_for_a_later_run() {
    const ITEMS: i64 = 500;
    let db = TestDb::new().await;
    // Each item writes its own row (a second write would break the key) and takes at least 20 ms,
    // so the batch runs for 5 s or more with 2 workers: it is surely mid-way when the signal comes.
    db.apply("CREATE TABLE slow_rows (n bigint PRIMARY KEY)").await;
    let manifest = "[grants]\nslow_rows = [\"insert\"]\n";
    let processors = Processors::new(&[("probe", &guest("probe"), Some(manifest))]);
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("items.ndjson");
    let items: String = (0..ITEMS)
        .map(|i| {
            format!(
                "{{\"mode\": \"sql\", \"sql\": \"INSERT INTO slow_rows (n) SELECT $1 FROM pg_sleep(0.02)\", \"params\": [{i}]}}\n"
            )
        })
        .collect();
    std::fs::write(&file, items).unwrap();
    let id = create(&db, &processors, cwd.path(), "probe", &file);
    let counts = || async {
        let mut conn = db.pool.acquire().await.unwrap();
        ingot::store::batches::counts(&mut conn, id).await.unwrap()
    };

    let mut worker = spawn_worker(&db, &processors, cwd.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts().await.completed < 20 {
        assert!(Instant::now() < deadline, "no progress within 60 s");
        assert!(worker.try_wait().unwrap().is_none(), "the worker exited on its own");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sigterm(&worker);
    let signalled = Instant::now();
    while worker.try_wait().unwrap().is_none() {
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "the worker did not stop within 5 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let output = worker.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));

    let status: String = sqlx::query_scalar("SELECT status FROM import_batches WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "processing");
    let stopped = counts().await;
    assert!(stopped.completed > 0 && stopped.completed < ITEMS, "{stopped:?}");
    assert_eq!((stopped.failed, stopped.skipped), (0, 0));
    // The worker's own report is what the database holds: its in-flight items were finished, and
    // committed, before it said it stopped.
    let stderr = stderr_of(&output);
    assert!(stderr.contains(&format!("stopped after {} items in 1 batches", stopped.completed)), "{stderr}");
    let db = &db;
    let by_status = |status: &'static str| async move {
        db.scalar_i64(&format!(
            "SELECT count(*) FROM import_batch_items WHERE batch_id = '{id}' AND status = '{status}'"
        ))
        .await
    };
    assert_eq!(by_status("completed").await, stopped.completed, "the counters equal the item rows");
    assert_eq!(by_status("pending").await, ITEMS - stopped.completed, "every other item is pending");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM slow_rows").await, stopped.completed);
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM import_batch_items WHERE batch_id = '{id}' AND status = 'pending'
               AND (attempts <> 0 OR interruptions <> 0)"
        ))
        .await,
        0,
        "a pending item carries an attempt"
    );

    let output = ingot_command(
        cwd.path(),
        &db.url,
        processors.path(),
        &["batch", "process", &id.to_string(), "--json"],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(json_of(&output)["status"], "completed");
    assert_eq!(by_status("completed").await, ITEMS);
    assert_eq!(counts().await.completed, ITEMS);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM slow_rows").await, ITEMS);
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM import_batch_items WHERE batch_id = '{id}' AND attempts <> 1"
        ))
        .await,
        0,
        "an item was run more than once"
    );
}

#[tokio::test]
async fn several_workers_share_one_batch_and_every_item_lands_once() {
    let db = TestDb::new().await;
    db.apply(&support::example_schema("customer_data")).await;
    let manifest = support::example_manifest("customer_data");
    let processors = Processors::new(&[("customer_data", &guest("customer_data"), Some(&manifest))]);
    let cwd = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let a = spawn_worker(&db, &processors, cwd.path(), &["--metrics", &format!("127.0.0.1:{port_a}")]);
    let b = spawn_worker(&db, &processors, cwd.path(), &["--metrics", &format!("127.0.0.1:{port_b}")]);
    wait_for_port(port_a).await;
    wait_for_port(port_b).await;

    let file = cwd.path().join("customers.csv");
    let mut csv = String::from("email,name\n");
    for i in 0..3000 {
        csv.push_str(&format!("c{i}@example.com,Customer {i}\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let id = create(&db, &processors, cwd.path(), "customer_data", &file);
    assert_eq!(wait_until_finished(&db, id, Duration::from_secs(120)).await, "completed");

    let processed = |port: u16| {
        scrape(port)
            .lines()
            .find(|l| l.starts_with("ingot_items_total{batch_type=\"customer_data\",outcome=\"completed\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let (by_a, by_b) = (processed(port_a), processed(port_b));
    assert_eq!(by_a + by_b, 3000, "each item counted once");
    assert!(by_a > 0 && by_b > 0, "both workers took part ({by_a} and {by_b})");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM customers").await, 3000);
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM import_batch_items WHERE batch_id = '{id}' AND attempts <> 1"
        ))
        .await,
        0
    );
    stop(a);
    stop(b);
}

#[tokio::test]
async fn a_replaced_processor_is_picked_up_without_a_restart() {
    let db = TestDb::new().await;
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let cwd = tempfile::tempdir().unwrap();
    let worker = spawn_worker(&db, &processors, cwd.path(), &[]);
    let file = cwd.path().join("one.ndjson");
    std::fs::write(&file, "{\"mode\": \"ok\"}\n").unwrap();

    let first = create(&db, &processors, cwd.path(), "probe", &file);
    wait_until_finished(&db, first, Duration::from_secs(20)).await;
    // A new version of the processor: here, different code under the same name.
    let replacement = std::fs::read(guest("customer_data")).unwrap();
    std::fs::write(processors.path().join("probe.wasm"), &replacement).unwrap();
    let second = create(&db, &processors, cwd.path(), "probe", &file);
    wait_until_finished(&db, second, Duration::from_secs(20)).await;

    let digest = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT processor_digest FROM import_batches WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        digest(first).await,
        hex::encode(sha2::Sha256::digest(std::fs::read(guest("probe")).unwrap()))
    );
    assert_eq!(digest(second).await, hex::encode(sha2::Sha256::digest(&replacement)));
    stop(worker);
}

#[tokio::test]
async fn a_running_batch_keeps_the_processor_version_it_started_with() {
    let db = TestDb::new().await;
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let manager = |runtime| support::manager(&db, &processors, runtime);
    let first = manager(support::runtime());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.ndjson");
    std::fs::write(&file, "{\"mode\": \"ok\"}\n{\"mode\": \"ok\"}\n").unwrap();
    let id = first
        .create(
            "probe",
            InputSource::from_arg(file.to_str().unwrap(), None).unwrap(),
            &CreateOptions::default(),
        )
        .await
        .unwrap();
    // Start the batch, then stop before any item: it is `processing` on the probe's version.
    let stopped = Progress::default();
    stopped.stop();
    let summary = first.process(id, &ProcessOptions::workers(1), Some(&stopped)).await.unwrap();
    assert_eq!((summary.status, summary.pending), (BatchStatus::Interrupted, 2));
    let started_with = summary.processor_digest.unwrap();

    std::fs::write(processors.path().join("probe.wasm"), std::fs::read(guest("customer_data")).unwrap())
        .unwrap();
    // A fresh host (new runtime) finds the old version in the compile cache.
    let summary = manager(support::runtime()).process(id, &ProcessOptions::workers(1), None).await.unwrap();
    assert_eq!((summary.status, summary.completed), (BatchStatus::Completed, 2), "{:?}", summary.top_errors);
    assert_eq!(summary.processor_digest.as_deref(), Some(started_with.as_str()));
    let tables: Vec<Option<String>> =
        sqlx::query_scalar("SELECT target_table FROM import_batch_items WHERE batch_id = $1")
            .bind(id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        tables,
        [Some("probe".to_owned()), Some("probe".to_owned())],
        "the probe's code ran, not the replacement's"
    );
}

#[tokio::test]
async fn forged_notifications_are_only_hints_a_worker_checks_against_the_database() {
    let db = TestDb::new().await;
    let processors = Processors::new(&[("probe", &guest("probe"), None), ("other", &guest("probe"), None)]);
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("items.ndjson");
    std::fs::write(&file, "{\"mode\": \"ok\"}\n").unwrap();
    // A pending batch of a type this worker does not serve: a notification naming it must not
    // make the worker run it.
    let other = create(&db, &processors, cwd.path(), "other", &file);
    let worker = spawn_worker(&db, &processors, cwd.path(), &["--types", "probe"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A flood on the framework's channel, as any role can send: junk, and the other batch's id.
    for i in 0..2_000 {
        let payload = if i % 2 == 0 { other.to_string() } else { format!("junk {i}; DROP TABLE x") };
        sqlx::query("SELECT pg_notify('ingot_batches', $1)").bind(payload).execute(&db.pool).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status: String = sqlx::query_scalar("SELECT status FROM import_batches WHERE id = $1")
        .bind(other)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending", "a notification alone made the worker run a batch it does not serve");
    // The worker is still listening: a real batch is picked up at once (the poll interval is 60 s).
    let id = create(&db, &processors, cwd.path(), "probe", &file);
    assert_eq!(wait_until_finished(&db, id, Duration::from_secs(10)).await, "completed");
    let stderr = stop(worker);
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

/// A long-running host keeps every processor version it has loaded in memory: with no compile
/// cache at all, the batch that started on the old version still runs it after the file is
/// replaced — and a host that never loaded it (a fresh runtime, no cache) can only run the new one.
#[tokio::test]
async fn a_host_keeps_every_version_it_has_loaded_in_memory() {
    let db = TestDb::new().await;
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let uncached = || {
        std::sync::Arc::new(
            ingot::runtime::Runtime::new(ingot::runtime::RuntimeConfig {
                cache_dir: None,
                fuel_metering: false,
            })
            .unwrap(),
        )
    };
    let host = support::manager(&db, &processors, uncached());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.ndjson");
    std::fs::write(&file, "{\"mode\": \"ok\"}\n{\"mode\": \"ok\"}\n").unwrap();
    let source = || InputSource::from_arg(file.to_str().unwrap(), None).unwrap();
    // Two batches of the same file, on purpose.
    let twice = CreateOptions { allow_duplicate: true, ..CreateOptions::default() };
    let id = host.create("probe", source(), &twice).await.unwrap();
    let stopped = Progress::default();
    stopped.stop();
    let summary = host.process(id, &ProcessOptions::workers(1), Some(&stopped)).await.unwrap();
    assert_eq!(summary.status, BatchStatus::Interrupted);
    let started_with = summary.processor_digest.unwrap();
    let other = host.create("probe", source(), &twice).await.unwrap();
    let stopped = Progress::default();
    stopped.stop();
    host.process(other, &ProcessOptions::workers(1), Some(&stopped)).await.unwrap();

    std::fs::write(processors.path().join("probe.wasm"), std::fs::read(guest("customer_data")).unwrap())
        .unwrap();
    let summary = host.process(id, &ProcessOptions::workers(1), None).await.unwrap();
    assert_eq!((summary.status, summary.completed), (BatchStatus::Completed, 2), "{:?}", summary.top_errors);
    assert_eq!(
        summary.processor_digest.as_deref(),
        Some(started_with.as_str()),
        "the same host kept the old version"
    );
    // A host without it runs what is installed now, and says so.
    let fresh = support::manager(&db, &processors, uncached());
    let summary = fresh.process(other, &ProcessOptions::workers(1), None).await.unwrap();
    // customer_data ran: the probe's items have no email.
    assert_eq!(summary.failed, 2, "{:?}", summary.top_errors);
    assert_eq!(summary.top_errors[0].code.as_deref(), Some("invalid_email"));
    let warned = db
        .scalar_i64(&format!(
            "SELECT count(*) FROM import_logs WHERE batch_id = '{other}' AND message LIKE '%is no longer available on this host%'"
        ))
        .await;
    assert_eq!(warned, 1);
}
