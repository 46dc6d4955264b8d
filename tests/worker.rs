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
use support::{Processors, TestDb, guest, ingot_command, sigterm, stderr_of};
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
        &["batch", "create", batch_type, file.to_str().unwrap(), "--json"],
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

#[tokio::test]
async fn a_worker_picks_up_new_batches_at_once_and_serves_metrics() {
    let db = TestDb::new().await;
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let worker = spawn_worker(&db, &processors, cwd.path(), &["--metrics", &format!("127.0.0.1:{port}")]);
    wait_for_port(port).await;

    let file = cwd.path().join("items.ndjson");
    let items: String =
        (0..50).map(|i| format!("{{\"mode\": \"{}\"}}\n", if i % 10 == 0 { "skip" } else { "ok" })).collect();
    std::fs::write(&file, items).unwrap();
    let started = Instant::now();
    let id = create(&db, &processors, cwd.path(), "probe", &file);
    // The poll interval is 60 s: finishing in seconds means the NOTIFY woke the worker.
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
    assert_eq!((summary.status, summary.pending), (BatchStatus::Processing, 2));
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
