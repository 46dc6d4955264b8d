//! Crash safety under faults: `kill -9` at random moments, terminated connections, a restarted
//! server, SIGTERM, and a failing framework write. After each, finishing the batch must leave
//! every item completed exactly once: as many customers as items, none written twice (a second
//! write would move `updated_at`), one attempt per item, and counters equal to the item rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use support::{Processors, TestDb, guest, ingot_command, json_of, stderr_of};
use uuid::Uuid;

const ITEMS: usize = 3_000;

fn customer_csv(dir: &Path) -> PathBuf {
    let path = dir.join("customers.csv");
    let mut csv = String::from("email,name,country\n");
    for i in 0..ITEMS {
        csv.push_str(&format!("customer{i}@example.com,Customer {i},{}\n", ["US", "DE", "", "FR"][i % 4]));
    }
    std::fs::write(&path, csv).unwrap();
    path
}

fn customer_processors() -> Processors {
    let manifest = support::example_manifest("customer_data");
    Processors::new(&[("customer_data", &guest("customer_data"), Some(&manifest))])
}

/// Where a test's `ingot` runs: the database URL (empty for the embedded cluster) and folders.
struct Site {
    url: String,
    processors: Processors,
    cwd: tempfile::TempDir,
}

impl Site {
    fn command(&self, args: &[&str]) -> std::process::Command {
        if self.url.is_empty() {
            support::embedded_command(self.cwd.path(), self.processors.path(), args)
        } else {
            ingot_command(self.cwd.path(), &self.url, self.processors.path(), args)
        }
    }

    fn create(&self) -> Uuid {
        let file = customer_csv(self.cwd.path());
        let output = self
            .command(&["batch", "create", "customer_data", file.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        support::created_batch(&output)
    }

    fn spawn_process(&self, id: Uuid) -> Child {
        self.command(&["batch", "process", &id.to_string(), "--workers", "2", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn finish(&self, id: Uuid) {
        let output = self.command(&["batch", "process", &id.to_string(), "--json"]).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        assert_eq!(json_of(&output)["status"], "completed");
    }
}

async fn completed(pool: &PgPool, id: Uuid) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    ingot::store::batches::counts(&mut conn, id).await.unwrap().completed
}

/// Waits until the running process has completed more items than `before` (or exited).
async fn wait_for_progress(pool: &PgPool, id: Uuid, before: i64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() || completed(pool, id).await > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no progress within 60 s");
}

/// Every item completed exactly once.
async fn assert_exactly_once(pool: &PgPool, id: Uuid) {
    let scalar = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql).bind(id).fetch_one(pool).await.unwrap()
    };
    assert_eq!(scalar("SELECT count(*) FROM customers WHERE $1 IS NOT NULL").await, ITEMS as i64);
    assert_eq!(
        scalar("SELECT count(*) FROM customers WHERE updated_at <> created_at AND $1 IS NOT NULL").await,
        0,
        "a customer was written twice"
    );
    assert_eq!(
        scalar("SELECT count(*) FROM import_batch_items WHERE batch_id = $1 AND status = 'completed'").await,
        ITEMS as i64
    );
    assert_eq!(
        scalar("SELECT count(*) FROM import_batch_items WHERE batch_id = $1 AND attempts <> 1").await,
        0,
        "an item was committed more than once"
    );
    assert_eq!(completed(pool, id).await, ITEMS as i64, "the counters equal the item rows");
    let status: String = sqlx::query_scalar("SELECT status FROM import_batches WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(status, "completed");
}

async fn site_on_test_db() -> (TestDb, Site) {
    let db = TestDb::new().await;
    db.apply(&support::example_schema("customer_data")).await;
    let site =
        Site { url: db.url.clone(), processors: customer_processors(), cwd: tempfile::tempdir().unwrap() };
    (db, site)
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice() {
    let (db, site) = site_on_test_db().await;
    let id = site.create();
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut kills = 0;
    while kills < 12 {
        let before = completed(&db.pool, id).await;
        if before >= ITEMS as i64 {
            break;
        }
        let mut child = site.spawn_process(id);
        wait_for_progress(&db.pool, id, before, &mut child).await;
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        tokio::time::sleep(Duration::from_millis((seed >> 33) % 120)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
    }
    assert!(kills >= 10, "only {kills} kills landed while the batch was running");
    assert!(completed(&db.pool, id).await < ITEMS as i64, "the kills all happened mid-batch");
    site.finish(id);
    assert_exactly_once(&db.pool, id).await;
}

/// Backends killed under a running `ingot` (three times, each mid-batch) cost it nothing: it
/// reconnects, and every item still completes exactly once.
#[tokio::test]
async fn terminated_connections_are_replaced_and_the_batch_completes() {
    let (db, site) = site_on_test_db().await;
    let id = site.create();
    let mut child = site.spawn_process(id);
    for round in 0..3 {
        let before = completed(&db.pool, id).await;
        wait_for_progress(&db.pool, id, before, &mut child).await;
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'ingot%'",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        // A round that ended nothing, or ended it after the last item, would prove nothing.
        let ended = terminated.iter().filter(|t| **t).count();
        assert!(ended >= 1, "round {round}: no ingot connection was terminated");
        let done = completed(&db.pool, id).await;
        assert!(done < ITEMS as i64, "round {round}: the batch had already finished ({done} items)");
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(json_of(&output)["status"], "completed");
    assert_exactly_once(&db.pool, id).await;
}

#[tokio::test]
async fn sigterm_stops_gracefully_with_exit_code_5_and_the_batch_resumes() {
    let (db, site) = site_on_test_db().await;
    let id = site.create();
    let mut child = site.spawn_process(id);
    wait_for_progress(&db.pool, id, 0, &mut child).await;
    support::sigterm(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains(&format!("interrupted; resume with `ingot batch process {id}`")));
    let summary = json_of(&output);
    assert_eq!(summary["status"], "interrupted");
    assert!(summary["pending"].as_i64().unwrap() > 0);
    site.finish(id);
    assert_exactly_once(&db.pool, id).await;
}

/// The server stopping and starting again mid-batch does not stop `ingot`: the same process
/// reconnects and finishes the batch, each item exactly once.
#[tokio::test]
async fn a_postgres_restart_mid_batch_is_survived() {
    let (site, options, pool) = embedded_site(false).await;
    let _stop = support::StopCluster(site.cwd.path(), site.processors.path());
    let id = site.create();
    let mut child = site.spawn_process(id);
    wait_for_progress(&pool, id, 0, &mut child).await;
    // A stop after the last item would test nothing: the batch must still be under way.
    let done = completed(&pool, id).await;
    pool.close().await;

    let stop = site.command(&["db", "stop"]).output().unwrap();
    assert!(stop.status.success(), "{}", stderr_of(&stop));
    assert!(done < ITEMS as i64, "the batch had finished ({done} items) before the database stopped");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = site.command(&["db", "status", "--json"]).output().unwrap();
    assert_eq!(json_of(&start)["running"], false);
    let restarted = site.command(&["migrate"]).output().unwrap();
    assert!(restarted.status.success(), "{}", stderr_of(&restarted));

    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let pool = PgPoolOptions::new().max_connections(2).connect_with(options).await.unwrap();
    assert_exactly_once(&pool, id).await;
    // Items written by the restarted server: this process lived through the stop and went on.
    let after_restart: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customers WHERE created_at >= pg_postmaster_start_time()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(after_restart > 0, "every item was written before the restart");
    pool.close().await;
}

fn probe_run(db: &TestDb, items: usize) -> std::process::Output {
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("items.ndjson");
    std::fs::write(&file, "{\"mode\": \"ok\"}\n".repeat(items)).unwrap();
    support::ingot(
        cwd.path(),
        &db.url,
        processors.path(),
        &["run", "probe", file.to_str().unwrap(), "--workers", "1", "--json"],
    )
}

/// The host's own write of item 2 fails (not the processor's): item 2 fails alone, taking its
/// processor's writes with it, and once the cause is gone a reprocess of the failed item writes
/// what is missing, once.
#[tokio::test]
async fn a_framework_write_one_item_breaks_fails_that_item_alone_with_a_clear_message() {
    let db = TestDb::new().await;
    db.apply("CREATE TABLE labels (label text NOT NULL)").await;
    // The host's own write of item 2 will violate this; its failure can still be recorded.
    db.apply(
        "ALTER TABLE import_batch_items ADD CONSTRAINT no_target_two CHECK (target_id IS DISTINCT FROM '2')",
    )
    .await;
    let processors =
        Processors::new(&[("probe", &guest("probe"), Some("[grants]\nlabels = [\"select\", \"insert\"]\n"))]);
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("items.ndjson");
    let items: String = (0..5)
        .map(|i| {
            let item = serde_json::json!({
                "mode": "sql", "sql": "INSERT INTO labels (label) VALUES ($1)", "params": [format!("item {i}")],
            });
            format!("{item}\n")
        })
        .collect();
    std::fs::write(&file, items).unwrap();
    let ingot = |args: &[&str]| support::ingot(cwd.path(), &db.url, processors.path(), args);
    let labels = || async {
        sqlx::query_scalar::<_, String>("SELECT label FROM labels ORDER BY label")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    };

    let output = ingot(&["run", "probe", file.to_str().unwrap(), "--workers", "1", "--json"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(summary["status"], "completed");
    assert_eq!((summary["completed"].as_i64(), summary["failed"].as_i64()), (Some(4), Some(1)));
    let error = &summary["top_errors"][0];
    assert_eq!(error["code"], "transaction_failed");
    let reason = error["message"].as_str().unwrap();
    assert!(reason.contains("could not be completed") && reason.contains("no_target_two"), "{reason}");
    let failed: i64 = db
        .scalar_i64("SELECT count(*) FROM import_batch_items WHERE status = 'failed' AND item_index = 2 AND attempts = 1")
        .await;
    assert_eq!(failed, 1, "item 2 is the one that failed, once");
    assert!(!stderr_of(&output).contains("panicked"));
    // Its status and its processor's write commit together: the failed item's row is gone.
    assert_eq!(labels().await, ["item 0", "item 1", "item 3", "item 4"], "item 2's write was kept");

    db.apply("ALTER TABLE import_batch_items DROP CONSTRAINT no_target_two").await;
    let id = summary["batch_id"].as_str().unwrap();
    let again = ingot(&["reprocess", id, "--failed-only", "--workers", "1", "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr_of(&again));
    let resumed = json_of(&again);
    assert_eq!(resumed["status"], "completed");
    assert_eq!((resumed["total"].as_i64(), resumed["completed"].as_i64()), (Some(1), Some(1)));
    // A repeated item would show as a duplicate label; a lost one as a missing one.
    assert_eq!(labels().await, ["item 0", "item 1", "item 2", "item 3", "item 4"]);
}

#[tokio::test]
async fn a_framework_write_that_cannot_succeed_fails_the_batch_with_a_clear_message() {
    let db = TestDb::new().await;
    // Item 2's write fails, and so does recording its failure: the database, not the item, is
    // what is broken.
    db.apply(
        "ALTER TABLE import_batch_items ADD CONSTRAINT no_target_two CHECK (target_id IS DISTINCT FROM '2');
         ALTER TABLE import_batch_items ADD CONSTRAINT never_failed CHECK (status <> 'failed')",
    )
    .await;
    let output = probe_run(&db, 5);
    assert_eq!(output.status.code(), Some(4), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(summary["status"], "failed");
    let reason = summary["error_message"].as_str().unwrap();
    assert!(reason.contains("processing stopped") && reason.contains("never_failed"), "{reason}");
    assert_eq!(summary["completed"], 2);
    assert!(!stderr_of(&output).contains("panicked"));
}

/// An embedded cluster with customer_data's tables, and a pool on it. `slow_wal`: the server
/// flushes asynchronous commits on its own only every 10 s.
async fn embedded_site(slow_wal: bool) -> (Site, PgConnectOptions, PgPool) {
    let site = Site { url: String::new(), processors: customer_processors(), cwd: support::cluster_dir() };
    let started = site.command(&["migrate"]).output().unwrap();
    assert!(started.status.success(), "{}", stderr_of(&started));
    let socket = site.cwd.path().join(".ingot/pg/run");
    let options = PgConnectOptions::new().socket(&socket).username("ingot").database("ingot");
    let pool = PgPoolOptions::new().max_connections(2).connect_with(options.clone()).await.unwrap();
    sqlx::raw_sql(&support::example_schema("customer_data")).execute(&pool).await.unwrap();
    if slow_wal {
        // The server flushes asynchronous commits on its own every 200 ms; make it wait 10 s, so
        // that only what Ingot itself waited for is on disk when a crash comes.
        sqlx::query("ALTER SYSTEM SET wal_writer_delay = '10s'").execute(&pool).await.unwrap();
        sqlx::query("SELECT pg_reload_conf()").execute(&pool).await.unwrap();
    }
    (site, options, pool)
}

/// Stops the embedded server as a crash would, then starts it again (it replays its log).
fn crash_and_restart(site: &Site) {
    let stop = site.command(&["db", "stop", "--immediate"]).output().unwrap();
    assert!(stop.status.success(), "{}", stderr_of(&stop));
    let restarted = site.command(&["migrate"]).output().unwrap();
    assert!(restarted.status.success(), "{}", stderr_of(&restarted));
}

#[tokio::test]
async fn a_database_crash_mid_batch_with_batch_durability_loses_no_effect_and_applies_none_twice() {
    let (site, options, pool) = embedded_site(true).await;
    let _stop = support::StopCluster(site.cwd.path(), site.processors.path());
    let id = site.create();
    let mut child = site.spawn_process(id);
    wait_for_progress(&pool, id, 0, &mut child).await;
    // Let some item commits land that no flush has made durable yet.
    tokio::time::sleep(Duration::from_millis(150)).await;
    pool.close().await;
    let mid = child.try_wait().unwrap().is_none();
    crash_and_restart(&site);
    assert!(mid, "the crash came after the batch had finished");
    // The running process reconnects and carries on; what the crash took is simply pending again.
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let pool = PgPoolOptions::new().max_connections(2).connect_with(options).await.unwrap();
    assert_exactly_once(&pool, id).await;
    pool.close().await;
}

#[tokio::test]
async fn a_summary_printed_just_before_a_database_crash_is_still_true_after_it() {
    let (site, options, pool) = embedded_site(true).await;
    let _stop = support::StopCluster(site.cwd.path(), site.processors.path());
    pool.close().await;
    for round in 0..3 {
        let file = customer_csv(site.cwd.path());
        let output = site
            // The same customers each round: a new import of the same file.
            .command(&[
                "run",
                "customer_data",
                file.to_str().unwrap(),
                "--workers",
                "2",
                "--json",
                "--allow-duplicate",
            ])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        let printed = json_of(&output);
        assert_eq!(printed["status"], "completed");
        // At once: nothing has had time to reach the disk unless Ingot waited for it.
        crash_and_restart(&site);
        let pool = PgPoolOptions::new().max_connections(2).connect_with(options.clone()).await.unwrap();
        let id: Uuid = printed["batch_id"].as_str().unwrap().parse().unwrap();
        let summary = {
            let mut conn = pool.acquire().await.unwrap();
            ingot::store::batches::summary(&mut conn, id).await.unwrap().unwrap()
        };
        assert_eq!(summary.status.as_str(), "completed", "round {round}: the reported batch rolled back");
        assert_eq!(summary.completed, printed["completed"].as_i64().unwrap(), "round {round}");
        pool.close().await;
    }
}
