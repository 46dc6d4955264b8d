//! Batches on PostgreSQL: the item transaction, hooks, stop-on-error, reprocessing, inputs,
//! dry runs and counters, through the library API. Each test has a database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ingot::batch::{BatchError, BatchManager, CreateOptions, ProcessOptions};
use ingot::input::{Format, InputError, InputSource};
use ingot::store::BatchStatus;
use ingot::store::batches::Summary;
use serde_json::{Value, json};
use sqlx::Row;
use support::{Processors, TestDb, guest};
use uuid::Uuid;

const PROBE_SCHEMA: &str = "CREATE TABLE probe_rows (id serial PRIMARY KEY, label text UNIQUE NOT NULL)";
/// The probe's manifest: it may use probe_rows. Tests append more grant lines or sections.
const PROBE_GRANTS: &str = "[grants]\nprobe_rows = [\"select\", \"insert\", \"update\", \"delete\"]\n";

struct Fixture {
    db: TestDb,
    manager: BatchManager,
    processors: Processors,
    files: tempfile::TempDir,
}

impl Fixture {
    /// A database with probe_rows, and the probe processor with `PROBE_GRANTS` plus `extra`
    /// appended to its manifest.
    async fn new(extra: Option<&str>) -> Fixture {
        let db = TestDb::new().await;
        db.apply(PROBE_SCHEMA).await;
        let manifest = format!("{PROBE_GRANTS}{}", extra.unwrap_or_default());
        let processors = Processors::new(&[("probe", &guest("probe"), Some(&manifest))]);
        let manager = support::manager(&db, &processors, support::runtime());
        Fixture { db, manager, processors, files: tempfile::tempdir().unwrap() }
    }

    fn file(&self, name: &str, content: &[u8]) -> InputSource {
        let path = self.files.path().join(name);
        std::fs::write(&path, content).unwrap();
        InputSource::from_arg(path.to_str().unwrap(), None).unwrap()
    }

    fn ndjson(&self, items: &[Value]) -> InputSource {
        let text: String = items.iter().map(|i| format!("{i}\n")).collect();
        self.file(&format!("{}.ndjson", Uuid::new_v4().simple()), text.as_bytes())
    }

    /// Runs `items` as a new import (the same items may be run again: each run is its own file).
    async fn run(&self, items: &[Value], create: CreateOptions, workers: usize) -> Summary {
        let create = CreateOptions { allow_duplicate: true, ..create };
        self.manager
            .run("probe", self.ndjson(items), &create, &ProcessOptions::workers(workers), None)
            .await
            .expect("run")
    }

    async fn labels(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT label FROM probe_rows ORDER BY label")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    /// The batch's items' source data, in index order.
    async fn source_data(&self, batch: Uuid) -> Vec<Value> {
        sqlx::query_scalar(
            "SELECT source_data FROM import_batch_items WHERE batch_id = $1 ORDER BY item_index",
        )
        .bind(batch)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    async fn item(&self, batch: Uuid, index: i64) -> sqlx::postgres::PgRow {
        sqlx::query("SELECT * FROM import_batch_items WHERE batch_id = $1 AND item_index = $2")
            .bind(batch)
            .bind(index)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn log_messages(&self, batch: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT message FROM import_logs WHERE batch_id = $1 ORDER BY id")
            .bind(batch)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    /// The counters agree with the item rows.
    async fn assert_counters_match_items(&self, batch: Uuid) {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FILTER (WHERE status = 'completed') FROM import_batch_items WHERE batch_id = $1) AS completed,
                    (SELECT count(*) FILTER (WHERE status = 'failed') FROM import_batch_items WHERE batch_id = $1) AS failed,
                    (SELECT count(*) FILTER (WHERE status = 'skipped') FROM import_batch_items WHERE batch_id = $1) AS skipped,
                    (SELECT count(*) FROM import_batch_items WHERE batch_id = $1) AS total",
        )
        .bind(batch)
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        let summary = self.manager.summary(batch).await.unwrap();
        assert_eq!(summary.completed, row.get::<i64, _>("completed"));
        assert_eq!(summary.failed, row.get::<i64, _>("failed"));
        assert_eq!(summary.skipped, row.get::<i64, _>("skipped"));
        assert_eq!(summary.total, row.get::<i64, _>("total"));
    }
}

fn insert(label: &str) -> Value {
    json!({"mode": "sql", "sql": "INSERT INTO probe_rows (label) VALUES ($1)", "params": [label]})
}

#[tokio::test]
async fn a_processor_sql_error_rolls_back_only_that_items_writes() {
    let f = Fixture::new(None).await;
    let mut failing = insert("b");
    failing["mode"] = json!("sql_then_invalid");
    let summary = f.run(&[insert("a"), failing, insert("a"), insert("c")], CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed), (2, 2));
    assert_eq!(f.labels().await, ["a", "c"]);
    let after_write = f.item(summary.batch_id, 1).await;
    assert_eq!(after_write.get::<String, _>("status"), "failed");
    assert_eq!(after_write.get::<Option<String>, _>("error_code").as_deref(), Some("after_write"));
    let duplicate = f.item(summary.batch_id, 2).await;
    assert_eq!(duplicate.get::<Option<String>, _>("error_code").as_deref(), Some("sql_error"));
    let message: String = duplicate.get("error_message");
    assert!(message.contains("duplicate key") && message.contains("23505"), "{message}");
    f.assert_counters_match_items(summary.batch_id).await;
}

#[tokio::test]
async fn a_statement_error_the_processor_ignores_still_fails_the_item() {
    let f = Fixture::new(None).await;
    let ignored =
        json!({"mode": "sql_ignore_error", "sql": "INSERT INTO probe_rows (no_such_column) VALUES (1)"});
    let summary = f.run(&[ignored, insert("next")], CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed), (1, 1));
    let item = f.item(summary.batch_id, 0).await;
    assert_eq!(item.get::<Option<String>, _>("error_code").as_deref(), Some("sql_error"));
    assert!(item.get::<String, _>("error_message").contains("no_such_column"));
    assert_eq!(f.labels().await, ["next"]);
}

#[tokio::test]
async fn logs_written_before_a_failure_survive_the_rollback() {
    let f = Fixture::new(None).await;
    let item = json!({"mode": "log_then_fail", "message": "checkpoint", "sql": "INSERT INTO probe_rows (label) VALUES ('gone')"});
    let summary = f.run(&[item], CreateOptions::default(), 1).await;
    assert_eq!(summary.failed, 1);
    assert!(f.labels().await.is_empty(), "the item's write was rolled back");
    let lines = f.log_messages(summary.batch_id).await;
    assert!(lines.contains(&"about to fail: checkpoint".to_owned()), "{lines:?}");
    assert!(lines.iter().any(|l| l == "item failed: failed after logging"), "{lines:?}");
}

#[tokio::test]
async fn completed_items_record_outcome_duration_and_attempts() {
    let f = Fixture::new(None).await;
    let summary = f.run(&[json!({"mode": "ok", "name": "Ada"})], CreateOptions::default(), 1).await;
    let item = f.item(summary.batch_id, 0).await;
    assert_eq!(item.get::<String, _>("status"), "completed");
    assert_eq!(item.get::<Option<String>, _>("target_table").as_deref(), Some("probe"));
    assert_eq!(item.get::<Option<String>, _>("target_id").as_deref(), Some("0"));
    assert_eq!(item.get::<Option<Value>, _>("processed_data").unwrap()["echo"]["name"], "Ada");
    assert_eq!(item.get::<i32, _>("attempts"), 1);
    assert!(item.get::<Option<f64>, _>("duration_ms").unwrap() > 0.0);
    assert!(item.get::<Option<chrono::DateTime<chrono::Utc>>, _>("finished_at").is_some());
    let batch = f.manager.summary(summary.batch_id).await.unwrap();
    let digest = batch.processor_digest.expect("digest recorded");
    assert_eq!(digest.len(), 64);
}

#[tokio::test]
async fn hooks_run_in_order_with_the_right_success_flag() {
    let f = Fixture::new(None).await;
    let summary = f
        .run(
            &[json!({"mode": "ok"}), json!({"mode": "invalid", "message": "nope"})],
            CreateOptions::default(),
            1,
        )
        .await;
    assert_eq!(summary.status, BatchStatus::Completed);
    let hooks: Vec<String> =
        f.log_messages(summary.batch_id).await.into_iter().filter(|l| l.starts_with("hook:")).collect();
    assert_eq!(
        hooks,
        [
            "hook:validate_batch",
            "hook:on_batch_start",
            "hook:on_item_error index=1 message=nope",
            "hook:on_batch_complete success=true completed=1 failed=1",
        ]
    );

    let stopped = f
        .run(
            &[json!({"mode": "invalid", "message": "first"}), json!({"mode": "ok"})],
            CreateOptions { stop_on_error: true, ..Default::default() },
            1,
        )
        .await;
    assert_eq!(stopped.status, BatchStatus::Failed);
    let last = f.log_messages(stopped.batch_id).await.into_iter().rfind(|l| l.starts_with("hook:")).unwrap();
    assert_eq!(last, "hook:on_batch_complete success=false completed=0 failed=1");
}

#[tokio::test]
async fn validate_batch_can_reject_a_batch_before_any_item_runs() {
    let f = Fixture::new(None).await;
    let create = CreateOptions { metadata: Some(json!({"reject": true})), ..Default::default() };
    let summary = f.run(&[insert("never")], create, 1).await;
    assert_eq!(summary.status, BatchStatus::Failed);
    assert!(
        summary.error_message.as_deref().unwrap().contains("rejected by probe"),
        "{:?}",
        summary.error_message
    );
    assert_eq!((summary.completed, summary.failed, summary.pending), (0, 0, 1));
    assert!(f.labels().await.is_empty());
    let lines = f.log_messages(summary.batch_id).await;
    assert!(lines.iter().any(|l| l.starts_with("hook:on_batch_complete success=false")), "{lines:?}");
}

#[tokio::test]
async fn a_rejected_batch_is_validated_again_when_it_is_processed_again() {
    let f = Fixture::new(None).await;
    let create = CreateOptions { metadata: Some(json!({"reject": true})), ..Default::default() };
    let summary = f.run(&[insert("never")], create, 1).await;
    let again = f.manager.process(summary.batch_id, &ProcessOptions::workers(1), None).await.unwrap();
    assert_eq!(again.status, BatchStatus::Failed);
    assert_eq!(again.pending, 1, "no item ran past the rejection");
    let validations =
        f.log_messages(summary.batch_id).await.iter().filter(|l| *l == "hook:validate_batch").count();
    assert_eq!(validations, 2);
    assert!(f.labels().await.is_empty());
}

#[tokio::test]
async fn a_failing_on_batch_start_fails_the_batch_and_rolls_back_its_writes() {
    let f = Fixture::new(None).await;
    let create = CreateOptions {
        metadata: Some(
            json!({"fail_start": true, "start_sql": "INSERT INTO probe_rows (label) VALUES ('from-start')"}),
        ),
        ..Default::default()
    };
    let summary = f.run(&[insert("never")], create, 1).await;
    assert_eq!(summary.status, BatchStatus::Failed);
    assert!(
        summary.error_message.as_deref().unwrap().contains("on-batch-start failed: start failed on purpose")
    );
    assert!(f.labels().await.is_empty());
}

#[tokio::test]
async fn on_batch_start_writes_commit_with_the_start() {
    let f = Fixture::new(None).await;
    let create = CreateOptions {
        metadata: Some(json!({"start_sql": "INSERT INTO probe_rows (label) VALUES ('from-start')"})),
        ..Default::default()
    };
    let summary = f.run(&[insert("item")], create, 1).await;
    assert_eq!(summary.status, BatchStatus::Completed);
    assert_eq!(f.labels().await, ["from-start", "item"]);
}

#[tokio::test]
async fn a_failing_on_batch_complete_is_logged_and_leaves_the_status() {
    let f = Fixture::new(None).await;
    for flag in ["fail_complete", "trap_complete"] {
        let create = CreateOptions { metadata: Some(json!({ flag: true })), ..Default::default() };
        let summary = f.run(&[json!({"mode": "ok"})], create, 1).await;
        assert_eq!(summary.status, BatchStatus::Completed, "{flag}");
        let lines = f.log_messages(summary.batch_id).await;
        assert!(
            lines.iter().any(|l| l.starts_with("on-batch-complete failed (the batch status is unchanged)")),
            "{flag}: {lines:?}"
        );
    }
}

#[tokio::test]
async fn a_trap_in_on_item_error_does_not_change_the_recorded_error() {
    let f = Fixture::new(None).await;
    let item = json!({"mode": "invalid", "message": "bad row", "code": "bad", "trap_in_error_hook": true,
                      "error_hook_sql": "INSERT INTO probe_rows (label) VALUES ('from-error-hook')"});
    let summary = f.run(&[item, json!({"mode": "ok"})], CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed), (1, 1));
    let failed = f.item(summary.batch_id, 0).await;
    assert_eq!(failed.get::<String, _>("error_message"), "bad row");
    assert_eq!(failed.get::<Option<String>, _>("error_code").as_deref(), Some("bad"));
    assert!(f.labels().await.is_empty(), "the trapped hook's write was rolled back");
    let lines = f.log_messages(summary.batch_id).await;
    assert!(
        lines.iter().any(|l| l.starts_with("on-item-error failed: the processor panicked at ")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn on_item_error_writes_commit_with_the_failure() {
    let f = Fixture::new(None).await;
    let item = json!({"mode": "invalid", "message": "bad", "error_hook_sql": "INSERT INTO probe_rows (label) VALUES ('error-noted')"});
    f.run(&[item], CreateOptions::default(), 1).await;
    assert_eq!(f.labels().await, ["error-noted"]);
}

#[tokio::test]
async fn stop_on_error_stops_at_the_first_failed_item_and_a_rerun_resumes() {
    let f = Fixture::new(None).await;
    let items = [insert("a"), json!({"mode": "invalid", "message": "broken"}), insert("b"), insert("c")];
    let summary = f.run(&items, CreateOptions { stop_on_error: true, ..Default::default() }, 1).await;
    assert_eq!(summary.status, BatchStatus::Failed);
    assert_eq!((summary.completed, summary.failed, summary.pending), (1, 1, 2));
    let reason = summary.error_message.unwrap();
    assert!(reason.contains("stopped at item 1") && reason.contains("broken"), "{reason}");
    assert_eq!(f.labels().await, ["a"]);

    let resumed = f.manager.process(summary.batch_id, &ProcessOptions::workers(1), None).await.unwrap();
    assert_eq!(resumed.status, BatchStatus::Completed);
    assert_eq!((resumed.completed, resumed.failed, resumed.pending), (3, 1, 0));
    assert_eq!(f.labels().await, ["a", "b", "c"]);
    f.assert_counters_match_items(summary.batch_id).await;
}

#[tokio::test]
async fn the_manifest_can_turn_on_stop_on_error() {
    let f = Fixture::new(Some("[batch]\nstop_on_error = true\n")).await;
    let summary = f
        .run(
            &[json!({"mode": "invalid", "message": "x"}), json!({"mode": "ok"})],
            CreateOptions::default(),
            1,
        )
        .await;
    assert_eq!(summary.status, BatchStatus::Failed);
    assert_eq!(summary.pending, 1);
}

#[tokio::test]
async fn a_skipped_item_is_recorded_with_its_reason_and_its_writes_undone() {
    let f = Fixture::new(None).await;
    let summary =
        f.run(&[json!({"mode": "skip", "message": "seen before"})], CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed, summary.skipped), (0, 0, 1));
    assert_eq!(summary.status, BatchStatus::Completed);
    let item = f.item(summary.batch_id, 0).await;
    assert_eq!(item.get::<String, _>("status"), "skipped");
    assert_eq!(item.get::<String, _>("error_message"), "seen before");
    assert_eq!(item.get::<Option<String>, _>("error_code").as_deref(), Some("duplicate"));
}

#[tokio::test]
async fn traps_and_timeouts_fail_their_item_and_the_batch_goes_on() {
    let f = Fixture::new(Some("[limits]\ntimeout_ms = 300\nmemory_mb = 32\n")).await;
    let items = [
        json!({"mode": "loop"}),
        json!({"mode": "panic", "message": "kaboom"}),
        json!({"mode": "alloc"}),
        insert("survivor"),
    ];
    let summary = f.run(&items, CreateOptions::default(), 1).await;
    assert_eq!(summary.status, BatchStatus::Completed);
    assert_eq!((summary.completed, summary.failed), (1, 3));
    let codes: Vec<Option<String>> = {
        let mut codes = Vec::new();
        for i in 0..3 {
            codes.push(f.item(summary.batch_id, i).await.get("error_code"));
        }
        codes
    };
    assert_eq!(codes, [Some("timeout".into()), Some("panic".into()), Some("memory_limit".into())]);
    assert!(
        f.item(summary.batch_id, 1)
            .await
            .get::<String, _>("error_message")
            .starts_with("the processor panicked at ")
    );
    let message: String = f.item(summary.batch_id, 1).await.get("error_message");
    assert!(message.ends_with(": probe panic: kaboom") && !message.contains("wasm"), "{message}");
    assert_eq!(f.labels().await, ["survivor"]);
}

#[tokio::test]
async fn reprocess_failed_only_links_to_the_parent_and_keeps_indexes() {
    let f = Fixture::new(None).await;
    let items = [
        insert("a"),
        json!({"mode": "invalid", "message": "x", "code": "bad"}),
        insert("b"),
        json!({"mode": "invalid", "message": "y", "code": "bad"}),
    ];
    let parent = f.run(&items, CreateOptions::default(), 1).await;
    assert_eq!(parent.failed, 2);
    let child =
        f.manager.reprocess(parent.batch_id, true, &ProcessOptions::workers(1), None).await.unwrap().unwrap();
    assert_eq!(child.parent_batch_id, Some(parent.batch_id));
    assert_eq!(child.retry_count, 1);
    assert_eq!((child.total, child.failed), (2, 2));
    let indexes: Vec<i64> = sqlx::query_scalar(
        "SELECT item_index FROM import_batch_items WHERE batch_id = $1 ORDER BY item_index",
    )
    .bind(child.batch_id)
    .fetch_all(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(indexes, [1, 3]);
    assert_eq!(child.source_info["reprocess_of"], parent.batch_id.to_string());

    let grandchild =
        f.manager.reprocess(child.batch_id, true, &ProcessOptions::workers(1), None).await.unwrap().unwrap();
    assert_eq!(grandchild.retry_count, 2);
}

// Reprocessing everything copies completed and skipped items too; "failed only" with nothing
// failed makes no batch at all.
#[tokio::test]
async fn reprocess_all_copies_every_item_and_failed_only_with_none_failed_does_nothing() {
    let f = Fixture::new(None).await;
    let parent = f.run(&[json!({"mode": "ok"}), json!({"mode": "skip"})], CreateOptions::default(), 1).await;
    let child = f
        .manager
        .reprocess(parent.batch_id, false, &ProcessOptions::workers(1), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((child.total, child.completed, child.skipped), (2, 1, 1));
    assert!(
        f.manager
            .reprocess(parent.batch_id, true, &ProcessOptions::workers(1), None)
            .await
            .unwrap()
            .is_none(),
        "no failed items: nothing to do"
    );
}

fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

// The operator replaced the batch type's .wasm with another component after the first run: the
// reprocess must run (and record) the new one, not a copy the host still holds in memory.
#[tokio::test]
async fn reprocess_runs_the_processor_installed_now_and_records_its_digest() {
    let f = Fixture::new(Some("customers = [\"select\", \"insert\", \"update\"]\n")).await;
    f.db.apply(&support::example_schema("customer_data")).await;
    // The probe completes the first and refuses the second; customer_data does the opposite
    // (the first has no email, the second is a valid customer).
    let items = [
        json!({"mode": "ok"}),
        json!({"mode": "invalid", "message": "the probe refuses it", "code": "probe_refused",
               "email": " Ada@Example.COM ", "name": "Ada", "country": "gb"}),
    ];
    let parent = f.run(&items, CreateOptions::default(), 1).await;
    assert_eq!((parent.completed, parent.failed), (1, 1));
    let probe = sha256_of(&guest("probe"));
    let customer_data = sha256_of(&guest("customer_data"));
    assert_ne!(probe, customer_data);
    assert_eq!(parent.processor_digest.as_deref(), Some(probe.as_str()));

    std::fs::copy(guest("customer_data"), f.processors.path().join("probe.wasm")).unwrap();
    let child = f
        .manager
        .reprocess(parent.batch_id, false, &ProcessOptions::workers(1), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.processor_digest.as_deref(), Some(customer_data.as_str()));
    assert_eq!((child.total, child.completed, child.failed), (2, 1, 1), "{:?}", child.top_errors);
    let no_email = f.item(child.batch_id, 0).await;
    assert_eq!(no_email.get::<String, _>("status"), "failed");
    assert_eq!(no_email.get::<Option<String>, _>("error_code").as_deref(), Some("invalid_email"));
    let ada = f.item(child.batch_id, 1).await;
    assert_eq!(ada.get::<String, _>("status"), "completed");
    assert_eq!(ada.get::<Option<String>, _>("target_table").as_deref(), Some("customers"));
    assert_eq!(
        ada.get::<Option<Value>, _>("processed_data").unwrap(),
        json!({"email": "ada@example.com", "name": "Ada", "country": "GB"})
    );
    let customers: Vec<(String, String)> =
        sqlx::query_as("SELECT email, name FROM customers").fetch_all(&f.db.pool).await.unwrap();
    assert_eq!(customers, [("ada@example.com".to_owned(), "Ada".to_owned())]);
    // customer_data has no hooks of its own; the probe logs each of its hooks.
    let lines = f.log_messages(child.batch_id).await;
    assert!(!lines.iter().any(|l| l.starts_with("hook:")), "the probe ran: {lines:?}");
}

#[tokio::test]
async fn concurrent_workers_process_every_item_exactly_once_and_counters_match() {
    let f = Fixture::new(None).await;
    let items: Vec<Value> = (0..400)
        .map(|i| match i % 10 {
            0 => json!({"mode": "invalid", "message": "tenth"}),
            5 => json!({"mode": "skip"}),
            _ => insert(&format!("row-{i:03}")),
        })
        .collect();
    let summary = f.run(&items, CreateOptions::default(), 4).await;
    assert_eq!(summary.status, BatchStatus::Completed);
    assert_eq!((summary.completed, summary.failed, summary.skipped), (320, 40, 40));
    assert_eq!(f.labels().await.len(), 320);
    f.assert_counters_match_items(summary.batch_id).await;
    let slots =
        f.db.scalar_i64(&format!(
            "SELECT count(*) FROM import_batch_counters WHERE batch_id = '{}'",
            summary.batch_id
        ))
        .await;
    assert!(slots >= 2, "workers counted into their own slots ({slots})");
}

#[tokio::test]
async fn metadata_set_by_an_item_commits_with_it_and_vanishes_with_a_failed_one() {
    let f = Fixture::new(None).await;
    let items = [
        json!({"mode": "metadata_set", "key": "kept", "value": 42}),
        json!({"mode": "metadata_set", "key": "dropped", "value": 1, "fail": true}),
        json!({"mode": "metadata_get", "key": "kept"}),
    ];
    let create = CreateOptions { metadata: Some(json!({"source": "crm"})), ..Default::default() };
    let summary = f.run(&items, create, 1).await;
    assert_eq!((summary.completed, summary.failed), (2, 1));
    let metadata: Value = sqlx::query_scalar("SELECT metadata FROM import_batches WHERE id = $1")
        .bind(summary.batch_id)
        .fetch_one(&f.db.pool)
        .await
        .unwrap();
    assert_eq!(metadata, json!({"source": "crm", "kept": 42}));
    let read = f.item(summary.batch_id, 2).await.get::<Option<Value>, _>("processed_data").unwrap();
    assert_eq!(read["value"], 42, "a later item reads what an earlier one set");
}

/// Each item's transaction id (`xmin` of its row, written by the commit that ended it) with its
/// index, in index order.
async fn commits(f: &Fixture, batch: Uuid) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT item_index, xmin::text FROM import_batch_items WHERE batch_id = $1 ORDER BY item_index",
    )
    .bind(batch)
    .fetch_all(&f.db.pool)
    .await
    .unwrap()
}

/// How many items each transaction committed, in the order the transactions ran.
fn group_sizes(commits: &[(i64, String)]) -> Vec<usize> {
    let mut sizes: Vec<(String, usize)> = Vec::new();
    for (_, xid) in commits {
        match sizes.last_mut() {
            Some((last, n)) if last == xid => *n += 1,
            _ => sizes.push((xid.clone(), 1)),
        }
    }
    sizes.into_iter().map(|(_, n)| n).collect()
}

#[tokio::test]
async fn under_batch_durability_items_commit_together_up_to_items_per_commit() {
    let f = Fixture::new(None).await;
    let items: Vec<Value> = (0..60).map(|i| insert(&format!("row {i:02}"))).collect();
    let summary = f.run(&items, CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed), (60, 0));
    let commits = commits(&f, summary.batch_id).await;
    let sizes = group_sizes(&commits);
    // Claims start with one item and double while transactions commit whole, up to 16.
    assert_eq!(&sizes[..5], &[1, 2, 4, 8, 16], "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 16), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 60);
    assert_eq!(f.labels().await.len(), 60);
    f.assert_counters_match_items(summary.batch_id).await;
}

#[tokio::test]
async fn one_item_per_commit_under_item_durability_or_when_the_manifest_says_so() {
    let items: Vec<Value> = (0..40).map(|i| insert(&format!("row {i:02}"))).collect();
    let f = Fixture::new(None).await;
    let options = ProcessOptions::workers(1).with_durability(Some(ingot::batch::Durability::Item));
    let create = CreateOptions { allow_duplicate: true, ..CreateOptions::default() };
    let summary = f.manager.run("probe", f.ndjson(&items), &create, &options, None).await.unwrap();
    assert_eq!(summary.completed, 40);
    assert!(group_sizes(&commits(&f, summary.batch_id).await).iter().all(|n| *n == 1));

    let f = Fixture::new(Some("[batch]\nitems_per_commit = 1\n")).await;
    let summary = f.run(&items, CreateOptions::default(), 2).await;
    assert_eq!(summary.completed, 40);
    assert!(group_sizes(&commits(&f, summary.batch_id).await).iter().all(|n| *n == 1));
}

#[tokio::test]
async fn a_failed_item_commits_at_once_with_the_items_before_it_and_alone_loses_its_writes() {
    let f = Fixture::new(None).await;
    let mut items: Vec<Value> = (0..30).map(|i| insert(&format!("row {i:02}"))).collect();
    items[20]["mode"] = json!("sql_then_invalid");
    let summary = f.run(&items, CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed), (29, 1));
    let labels = f.labels().await;
    assert_eq!(labels.len(), 29);
    assert!(!labels.contains(&"row 20".to_owned()), "the failed item's write was kept");
    let commits = commits(&f, summary.batch_id).await;
    // The failure ends its transaction: the next item starts a new one.
    assert_ne!(commits[20].1, commits[21].1);
    // ... and the items run before it in that transaction committed with it.
    assert_eq!(commits[19].1, commits[20].1);
    let attempts: i64 =
        f.db.scalar_i64(&format!(
            "SELECT count(*) FROM import_batch_items WHERE batch_id = '{}' AND attempts <> 1",
            summary.batch_id
        ))
        .await;
    assert_eq!(attempts, 0);
    f.assert_counters_match_items(summary.batch_id).await;
}

/// A deferred constraint stays deferred for every item of a transaction, and one item's
/// violation fails that item alone.
#[tokio::test]
async fn deferred_constraints_are_deferred_for_each_item_and_checked_with_it() {
    let f = Fixture::new(Some("parents = [\"insert\"]\nchildren = [\"insert\"]\n")).await;
    f.db.apply(
        "CREATE TABLE parents (id int PRIMARY KEY);
         CREATE TABLE children (id int PRIMARY KEY, parent int REFERENCES parents DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    let family = |i: i64, with_parent: bool| {
        let mut statements = vec![format!("INSERT INTO children VALUES ({i}, {i})")];
        if with_parent {
            statements.push(format!("INSERT INTO parents VALUES ({i})"));
        }
        json!({"mode": "sql_sequence", "statements": statements})
    };
    let items: Vec<Value> = (0..40).map(|i| family(i, i != 25)).collect();
    let summary = f.run(&items, CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed), (39, 1), "{:?}", summary.top_errors);
    let failed = f.item(summary.batch_id, 25).await;
    assert_eq!(failed.get::<String, _>("status"), "failed");
    let message: String = failed.get("error_message");
    assert!(message.contains("children_parent_fkey") && message.contains("deferred"), "{message}");
    let children = f.db.scalar_i64("SELECT count(*) FROM children").await;
    assert_eq!(children, 39, "the violating item's child was kept, or another item's was lost");
    let sizes = group_sizes(&commits(&f, summary.batch_id).await);
    assert!(sizes.iter().any(|n| *n > 1), "the items did not share transactions: {sizes:?}");
    f.assert_counters_match_items(summary.batch_id).await;
}

/// A transaction lost with its connection takes none of its items: the ones that ran before the
/// item that lost it run again, once, and only that item's attempts are counted.
#[tokio::test]
async fn the_items_of_a_lost_transaction_run_again_exactly_once() {
    let f = Fixture::new(None).await;
    // The wall alone: the gate would refuse the backend's self-termination.
    let manager = f.manager.clone().without_sql_gate();
    let mut items: Vec<Value> = (0..40).map(|i| insert(&format!("row {i:02}"))).collect();
    items[20] = json!({"mode": "sql_sequence", "statements": [
        "INSERT INTO probe_rows (label) VALUES ('row 20')",
        "SELECT pg_terminate_backend(pg_backend_pid())",
    ]});
    let create = CreateOptions { allow_duplicate: true, ..CreateOptions::default() };
    let summary =
        manager.run("probe", f.ndjson(&items), &create, &ProcessOptions::workers(1), None).await.unwrap();
    assert_eq!((summary.completed, summary.failed), (39, 1), "{:?}", summary.top_errors);
    let labels = f.labels().await;
    assert_eq!(labels.len(), 39);
    assert!(!labels.contains(&"row 20".to_owned()));
    let batch = summary.batch_id;
    let items = |condition: &str| {
        format!("SELECT count(*) FROM import_batch_items WHERE batch_id = '{batch}' AND {condition}")
    };
    assert_eq!(f.db.scalar_i64(&items("attempts <> 1 AND status = 'completed'")).await, 0);
    assert_eq!(
        f.db.scalar_i64(&items("interruptions > 0")).await,
        1,
        "only the item that lost the connection counts lost attempts"
    );
    assert_eq!(f.db.scalar_i64(&items("interruptions = 3 AND item_index = 20")).await, 1);
    f.assert_counters_match_items(summary.batch_id).await;
}

/// Metadata changes of the items of one transaction are merged in the order they ran, and each
/// item sees those of the items before it.
#[tokio::test]
async fn metadata_changes_within_a_transaction_merge_in_order() {
    let f = Fixture::new(None).await;
    let mut items: Vec<Value> =
        (0..20).map(|i| json!({"mode": "metadata_set", "key": "last", "value": i})).collect();
    items.push(json!({"mode": "metadata_get", "key": "last"}));
    let summary = f.run(&items, CreateOptions::default(), 1).await;
    assert_eq!(summary.completed, 21);
    let commits = commits(&f, summary.batch_id).await;
    assert_eq!(
        commits[19].1, commits[20].1,
        "the reading item ran in the same transaction as the last writer"
    );
    let read = f.item(summary.batch_id, 20).await.get::<Option<Value>, _>("processed_data").unwrap();
    assert_eq!(read["value"], 19, "an item reads what an earlier one of its transaction set");
    let last: Value = sqlx::query_scalar("SELECT metadata->'last' FROM import_batches WHERE id = $1")
        .bind(summary.batch_id)
        .fetch_one(&f.db.pool)
        .await
        .unwrap();
    assert_eq!(last, json!(19));
}

#[tokio::test]
async fn sql_values_round_trip_through_the_context() {
    let f = Fixture::new(Some("typed = [\"select\", \"insert\"]\n")).await;
    f.db.apply(
        "CREATE TYPE mood AS ENUM ('calm', 'busy');
         CREATE TABLE typed (i4 int, i8 bigint, n numeric(12,2), f float8, b bool, t text, c char(2), j jsonb,
                             u uuid, ts timestamptz, d date, tags text[], m mood, raw bytea)",
    )
    .await;
    let insert = json!({"mode": "sql", "sql": "INSERT INTO typed VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        "params": ["7", 9_000_000_000_i64, "12.50", 1.5, "yes", "text", "de", {"a": [1, 2]}, "0b6c3f3e-8f3a-4a41-9d0e-5c3f7a8e2b11",
                   "2026-01-31T09:30:00+01:00", "2026-01-31", ["x", null, "z"], "busy", "bytes"]});
    let read = json!({"mode": "sql", "query": true, "sql": "SELECT * FROM typed"});
    let summary = f.run(&[insert, read], CreateOptions::default(), 1).await;
    assert_eq!(summary.failed, 0, "{:?}", summary.top_errors);
    let data = f.item(summary.batch_id, 1).await.get::<Option<Value>, _>("processed_data").unwrap();
    let row = &data[0];
    assert_eq!(row["i4"], 7);
    assert_eq!(row["i8"], 9_000_000_000_i64);
    assert_eq!(row["n"], "12.50");
    assert_eq!(row["f"], 1.5);
    assert_eq!(row["b"], true);
    assert_eq!(row["c"], "de");
    assert_eq!(row["j"], json!({"a": [1, 2]}));
    assert_eq!(row["u"], "0b6c3f3e-8f3a-4a41-9d0e-5c3f7a8e2b11");
    assert_eq!(row["ts"], "2026-01-31T08:30:00Z");
    assert_eq!(row["d"], "2026-01-31");
    assert_eq!(row["tags"], json!(["x", null, "z"]));
    assert_eq!(row["m"], "busy");
    assert_eq!(row["raw"], json!(b"bytes".to_vec()));
}

#[tokio::test]
async fn a_parameter_that_does_not_fit_its_column_fails_the_item_with_a_clear_message() {
    let f = Fixture::new(None).await;
    let item = json!({"mode": "sql", "sql": "INSERT INTO probe_rows (id, label) VALUES ($1, $2)", "params": ["not a number", "x"]});
    let summary = f.run(&[item], CreateOptions::default(), 1).await;
    let message: String = f.item(summary.batch_id, 0).await.get("error_message");
    assert!(message.contains("parameter $1 (int4)") && message.contains("is not an integer"), "{message}");
}

fn csv_source(f: &Fixture, content: &[u8]) -> InputSource {
    f.file(&format!("{}.csv", Uuid::new_v4().simple()), content)
}

async fn assert_no_batch_left(f: &Fixture) {
    assert_eq!(f.db.scalar_i64("SELECT count(*) FROM import_batches").await, 0);
    assert_eq!(f.db.scalar_i64("SELECT count(*) FROM import_batch_items").await, 0);
}

#[tokio::test]
async fn a_csv_with_an_unterminated_quote_names_its_line_and_leaves_no_batch() {
    let f = Fixture::new(None).await;
    let csv = b"email,name\na@x.io,Ann\nb@x.io,Bob\nc@x.io,\"Carl\nd@x.io,Dee\n";
    let error = f.manager.create("probe", csv_source(&f, csv), &CreateOptions::default()).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, BatchError::Input(InputError::Malformed { line: 4, .. })), "{message}");
    assert!(message.contains("line 4") && message.contains("unterminated quote"), "{message}");
    assert_no_batch_left(&f).await;
}

#[tokio::test]
async fn malformed_csv_rows_name_their_line() {
    let f = Fixture::new(None).await;
    let cases: [(&[u8], u64, &str); 4] = [
        (b"a,b\n1,2\n3\n", 3, "expected 2 fields"),
        (b"a,b\n1,2\n\xff\xfe,3\n", 3, "not valid UTF-8"),
        (b"a,a\n1,2\n", 1, "names column \"a\" twice"),
        (b"a,,c\n1,2,3\n", 1, "column 2 of the header row has no name"),
    ];
    for (csv, line, text) in cases {
        let error =
            f.manager.create("probe", csv_source(&f, csv), &CreateOptions::default()).await.unwrap_err();
        match &error {
            BatchError::Input(InputError::Malformed { line: l, message, .. }) => {
                assert_eq!(*l, line, "{error}");
                assert!(message.contains(text), "{error}");
            }
            other => panic!("expected a malformed-input error, got {other}"),
        }
    }
    assert_no_batch_left(&f).await;
}

/// Every error names the file's true line, whatever ends its lines (LF, CRLF as Excel writes,
/// a lone CR as old Mac tools do), after multi-line quoted fields, in headers below blank lines,
/// and in JSON arrays (the element's own line).
#[tokio::test]
async fn errors_name_the_true_line_whatever_ends_the_files_lines() {
    let f = Fixture::new(None).await;
    for end in ["\n", "\r\n", "\r"] {
        let ragged = format!("a,b{end}1,2{end}3{end}4,5{end}");
        let multiline = format!("a,b{end}\"x{end}y\",2{end}3{end}");
        let header = format!("{end}{end}a,,c{end}1,2,3{end}");
        for (csv, line, text) in [
            (ragged, 3, "expected 2 fields"),
            (multiline, 4, "expected 2 fields"),
            (header, 3, "column 2 of the header row has no name"),
        ] {
            let error = f
                .manager
                .create("probe", csv_source(&f, csv.as_bytes()), &CreateOptions::default())
                .await
                .unwrap_err();
            match &error {
                BatchError::Input(InputError::Malformed { line: l, message, .. }) => {
                    assert_eq!((*l, message.contains(text)), (line, true), "{end:?} {csv:?}: {error}");
                }
                other => panic!("expected a malformed-input error, got {other}"),
            }
        }
    }
    let array = f.file("lines.json", b"[\n  {\"a\": 1},\n  {\"a\": 2},\n  {\"a\": \"\\ud800\"}\n]\n");
    let error = f.manager.create("probe", array, &CreateOptions::default()).await.unwrap_err();
    assert!(matches!(error, BatchError::Input(InputError::Malformed { line: 4, .. })), "{error}");
    assert_no_batch_left(&f).await;
}

/// Semicolon- and tab-separated files (spreadsheets in much of Europe) import as their columns,
/// not as one column named "name;email".
#[tokio::test]
async fn semicolon_and_tab_separated_files_import_as_their_columns() {
    let f = Fixture::new(None).await;
    for csv in ["name;email;note\nAda;a@x.io;\"1,5; or 2\"\n", "name\temail\tnote\nAda\ta@x.io\t1,5; or 2\n"]
    {
        let id = f
            .manager
            .create("probe", csv_source(&f, csv.as_bytes()), &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            f.source_data(id).await,
            [json!({"name": "Ada", "email": "a@x.io", "note": "1,5; or 2"})],
            "{csv:?}"
        );
    }
}

/// What is not an item is said, not dropped: a line holding `""` is a record with one empty
/// field (blank lines are skipped); an empty file, or a header alone, has nothing to import; a
/// JSON array on an NDJSON line is not one item; and a header of 200,000 columns is read in
/// linear time.
#[tokio::test]
async fn rows_and_files_that_hold_no_item_are_refused_not_dropped() {
    let f = Fixture::new(None).await;
    let cases: [(&str, &[u8], u64, &str); 5] = [
        ("quoted.csv", b"a,b\n1,2\n\"\"\n3,4\n", 3, "expected 2 fields"),
        ("empty.csv", b"", 1, "holds no items"),
        ("header.csv", b"a,b\n\n", 1, "holds no items"),
        ("empty.ndjson", b"\n\n", 1, "holds no items"),
        ("array.ndjson", b"{\"a\": 1}\n[{\"a\": 2}, {\"a\": 3}]\n", 2, "this line is a JSON array"),
    ];
    for (name, content, line, text) in cases {
        let error =
            f.manager.create("probe", f.file(name, content), &CreateOptions::default()).await.unwrap_err();
        match &error {
            BatchError::Input(InputError::Malformed { line: l, message, .. }) => {
                assert_eq!((*l, message.contains(text)), (line, true), "{name}: {error}");
            }
            other => panic!("{name}: expected a malformed-input error, got {other}"),
        }
    }
    assert_no_batch_left(&f).await;
    let columns = 200_000;
    let header: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
    let row: Vec<String> = (0..columns).map(|i| i.to_string()).collect();
    let csv = format!("{}\n{}\n", header.join(","), row.join(","));
    let started = std::time::Instant::now();
    let id =
        f.manager.create("probe", csv_source(&f, csv.as_bytes()), &CreateOptions::default()).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(f.manager.summary(id).await.unwrap().total, 1);
}

/// A value PostgreSQL refuses while the items stream in (here a character a LATIN1 database
/// cannot hold) is reported like a malformed line: the file, the line and the item, once.
#[tokio::test]
async fn an_item_postgresql_refuses_names_its_file_and_line() {
    let db = TestDb::created_with("ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").await;
    let processors = Processors::new(&[("probe", &guest("probe"), Some(PROBE_GRANTS))]);
    let manager = support::manager(&db, &processors, support::runtime());
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("names.csv");
    let mut csv = String::from("name,note\n");
    for i in 0..2_500 {
        csv.push_str(&format!("n{i},\"two\nlines\"\n"));
    }
    csv.push_str("Müller,ok\nʤ,not latin1\n");
    std::fs::write(&path, &csv).unwrap();
    let source = InputSource::from_arg(path.to_str().unwrap(), None).unwrap();
    let error = manager.create("probe", source, &CreateOptions::default()).await.unwrap_err();
    match &error {
        BatchError::Input(InputError::Malformed { name, line, message }) => {
            assert!(name.ends_with("names.csv"), "{error}");
            assert_eq!(*line, 1 + 2 * 2_500 + 2, "{error}");
            assert!(message.contains("item 2501") && message.contains("LATIN1"), "{error}");
        }
        other => panic!("expected an error naming the line, got {other}"),
    }
    assert_eq!(db.scalar_i64("SELECT count(*) FROM import_batches").await, 0);
}

#[tokio::test]
async fn csv_quoting_crlf_bom_and_multiline_fields_parse_exactly() {
    let f = Fixture::new(None).await;
    let csv = "\u{feff}email,name,note\r\n\"a@x.io\",\"Lovelace, Ada\",\"line one\r\nline two\"\r\nb@x.io,\"Grace \"\"Amazing\"\" Hopper\",\r\n\r\n";
    let id =
        f.manager.create("probe", csv_source(&f, csv.as_bytes()), &CreateOptions::default()).await.unwrap();
    let rows = f.source_data(id).await;
    assert_eq!(
        rows,
        [
            json!({"email": "a@x.io", "name": "Lovelace, Ada", "note": "line one\r\nline two"}),
            json!({"email": "b@x.io", "name": "Grace \"Amazing\" Hopper", "note": ""}),
        ]
    );
    let summary = f.manager.summary(id).await.unwrap();
    assert_eq!(summary.source_info["bytes"], csv.len());
    assert_eq!(summary.source_info["format"], "csv");
    assert_eq!(summary.source_info["items"], 2);
    use sha2::Digest;
    assert_eq!(summary.source_info["sha256"], hex::encode(sha2::Sha256::digest(csv.as_bytes())));
}

#[tokio::test]
async fn json_arrays_and_ndjson_become_one_item_per_element_or_line() {
    let f = Fixture::new(None).await;
    let array =
        f.file("items.json", br#"[{"sku": "A-1", "price_cents": 100}, {"sku": "B-2", "tags": ["x"]}, 7]"#);
    let id = f.manager.create("probe", array, &CreateOptions::default()).await.unwrap();
    assert_eq!(f.manager.summary(id).await.unwrap().total, 3);
    let lines = f.file("items.ndjson", b"{\"a\": 1}\n\n{\"a\": 2}\r\n");
    let id = f.manager.create("probe", lines, &CreateOptions::default()).await.unwrap();
    assert_eq!(f.manager.summary(id).await.unwrap().total, 2);
    let data = f.source_data(id).await;
    assert_eq!(data, [json!({"a": 1}), json!({"a": 2})]);
    // Pretty-printed elements: their line breaks and tabs are whitespace, not COPY's row and
    // column separators; a backslash in a string stays one.
    let pretty = f
        .file("pretty.json", b"[\n\t{\n\t\t\"a\":\t1,\r\n\t\t\"p\": \"C:\\\\tmp\"\n\t},\n\t[\n1,\n2\n]\n]\n");
    let id = f.manager.create("probe", pretty, &CreateOptions::default()).await.unwrap();
    assert_eq!(f.source_data(id).await, [json!({"a": 1, "p": "C:\\tmp"}), json!([1, 2])]);
}

/// JSON items are stored exactly as written: numbers beyond f64's precision and beyond the
/// i64/u64 range, high-precision decimals and trailing zeros come back digit for digit (jsonb
/// keeps them as numeric), from a JSON array as from NDJSON, and a processor reads them so.
#[tokio::test]
async fn json_numbers_are_stored_exactly_as_written() {
    let f = Fixture::new(None).await;
    let numbers = [
        "123456789012345.67",
        "12345678901234567890123456789",
        "0.1000000000000000055511151231257827",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "1.10",
        "100.00",
        "0.000000000000000000000000000001",
        "179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000.5",
    ];
    let items: Vec<String> =
        numbers.iter().map(|n| format!("{{\"x\": {n}, \"path\": \"C:\\\\u0000\"}}")).collect();
    let ndjson = items.join("\n");
    let array = format!("[{}]", items.join(",\n"));
    for (name, content) in [("exact.ndjson", ndjson), ("exact.json", array)] {
        let id = f
            .manager
            .create("probe", f.file(name, content.as_bytes()), &CreateOptions::default())
            .await
            .unwrap();
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT source_data->>'x' FROM import_batch_items WHERE batch_id = $1 ORDER BY item_index",
        )
        .bind(id)
        .fetch_all(&f.db.pool)
        .await
        .unwrap();
        assert_eq!(stored, numbers, "{name}");
        // An escaped backslash followed by "u0000" is text, not a NUL.
        let paths: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT source_data->>'path' FROM import_batch_items WHERE batch_id = $1",
        )
        .bind(id)
        .fetch_all(&f.db.pool)
        .await
        .unwrap();
        assert_eq!(paths, ["C:\\u0000"], "{name}");
    }
}

#[tokio::test]
async fn malformed_json_inputs_name_their_line_and_leave_no_batch() {
    let f = Fixture::new(None).await;
    let cases: [(&str, &[u8], u64); 6] = [
        ("bad.ndjson", b"{\"a\": 1}\n{\"a\": \n{\"a\": 3}\n", 2),
        ("bad.json", b"[\n{\"a\": 1},\n{\"a\" 2}\n]", 3),
        ("object.json", b"{\"a\": 1}", 1),
        ("nul.ndjson", b"{\"a\": \"\\u0000\"}\n", 1),
        ("surrogate.ndjson", b"{\"a\": 1}\n{\"a\": \"\\ud800\"}\n", 2),
        ("huge.ndjson", b"{\"a\": 1e999999}\n", 1),
    ];
    for (name, content, line) in cases {
        let error =
            f.manager.create("probe", f.file(name, content), &CreateOptions::default()).await.unwrap_err();
        assert!(
            matches!(error, BatchError::Input(InputError::Malformed { line: l, .. }) if l == line),
            "{name}: {error}"
        );
        assert!(error.to_string().contains(name), "{error}");
    }
    assert_no_batch_left(&f).await;
}

#[tokio::test]
async fn the_format_comes_from_the_extension_or_must_be_given() {
    let error = InputSource::from_arg("data.txt", None).unwrap_err();
    assert!(error.to_string().contains("pass --format"), "{error}");
    assert!(InputSource::from_arg("-", None).is_err());
    assert_eq!(InputSource::from_arg("-", Some(Format::Ndjson)).unwrap().name, "stdin");
    let missing = InputSource::from_arg("/nonexistent/file.csv", None).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/file.csv"), "{missing}");
}

#[tokio::test]
async fn a_dry_run_reports_what_would_happen_and_keeps_nothing() {
    let f = Fixture::new(None).await;
    let before =
        f.db.scalar_i64("SELECT (SELECT count(*) FROM import_batches) + (SELECT count(*) FROM import_logs)")
            .await;
    let items = [insert("a"), insert("a"), json!({"mode": "invalid", "message": "bad", "code": "bad"})];
    let summary = f.manager.dry_run("probe", f.ndjson(&items), &CreateOptions::default()).await.unwrap();
    assert!(summary.dry_run);
    // Each item's writes are rolled back right after it, so the second "a" does not collide.
    assert_eq!((summary.total, summary.completed, summary.failed), (3, 2, 1));
    assert_eq!(summary.top_errors[0].code.as_deref(), Some("bad"));
    assert!(f.labels().await.is_empty());
    let after =
        f.db.scalar_i64("SELECT (SELECT count(*) FROM import_batches) + (SELECT count(*) FROM import_logs)")
            .await;
    assert_eq!(before, after);
    assert_eq!(f.db.scalar_i64("SELECT count(*) FROM import_batch_items").await, 0);
}

/// Everything a dry run could change outside its own transaction: roles under the test's
/// prefix (attributes, memberships, settings, dependencies), every privilege in the database (as
/// it takes effect: an ACL PostgreSQL has spelled out equals the default it spells out), and the
/// rows of every table. (Sequences a processor draws from move on, as for any transaction rolled
/// back.)
async fn catalog(db: &TestDb) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT string_agg(r.rolname || r.rolsuper || r.rolcreaterole || r.rolcanlogin || r.rolinherit, ',' ORDER BY r.rolname)
         FROM pg_roles r WHERE starts_with(r.rolname, $1)",
        "SELECT string_agg(m.roleid::regrole::text || '>' || m.member::regrole::text, ',' ORDER BY 1)
         FROM pg_auth_members m JOIN pg_roles r ON r.oid IN (m.roleid, m.member) WHERE starts_with(r.rolname, $1)",
        "SELECT string_agg(s.setrole::regrole::text, ',' ORDER BY 1) FROM pg_db_role_setting s
         JOIN pg_roles r ON r.oid = s.setrole WHERE starts_with(r.rolname, $1)",
        "SELECT string_agg(c.relname || ':' || coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))::text, ',' ORDER BY c.relname)
         FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND $1 IS NOT NULL",
        "SELECT string_agg(p.oid::regprocedure::text || ':' || coalesce(p.proacl, acldefault('f'::\"char\", p.proowner))::text, ',' ORDER BY p.oid::regprocedure::text)
         FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND $1 IS NOT NULL",
        "SELECT coalesce(d.datacl, acldefault('d'::\"char\", d.datdba))::text
                || (SELECT coalesce(nspacl, acldefault('n'::\"char\", nspowner))::text FROM pg_namespace WHERE nspname = 'public')
         FROM pg_database d WHERE d.datname = current_database() AND $1 IS NOT NULL",
        "SELECT string_agg(d.classid::regclass::text || d.objid::text || d.deptype::text, ',' ORDER BY 1) FROM pg_shdepend d
         JOIN pg_roles r ON r.oid = d.refobjid WHERE starts_with(r.rolname, $1)",
    ] {
        out.push(sqlx::query_scalar(sql).bind(db.role_prefix()).fetch_one(&db.pool).await.unwrap());
    }
    for table in [
        "import_batches",
        "import_batch_items",
        "import_batch_counters",
        "import_logs",
        "ingot_processor_roles",
        "probe_rows",
    ] {
        let sql =
            format!("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t");
        out.push(sqlx::query_scalar(&sql).fetch_one(&db.pool).await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_dry_run_leaves_roles_grants_and_every_table_as_they_were() {
    let f = Fixture::new(None).await;
    // On a fresh database (no role yet), and again once a real run has made the processor's role.
    for round in ["fresh", "after a run"] {
        let before = catalog(&f.db).await;
        let items = [
            insert("kept?"),
            json!({"mode": "log", "lines": 2, "message": "logged"}),
            json!({"mode": "metadata_set", "key": "k", "value": 1}),
            json!({"mode": "invalid", "message": "bad", "code": "bad"}),
        ];
        let summary = f.manager.dry_run("probe", f.ndjson(&items), &CreateOptions::default()).await.unwrap();
        assert_eq!((summary.completed, summary.failed), (3, 1), "{round}");
        assert_eq!(catalog(&f.db).await, before, "{round}: the dry run changed the database");
        if round == "fresh" {
            f.manager
                .run(
                    "probe",
                    f.ndjson(&[insert("real")]),
                    &CreateOptions::default(),
                    &ProcessOptions::workers(1),
                    None,
                )
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn several_hosts_migrating_at_once_all_succeed() {
    let db = TestDb::empty().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
            let result = ingot::store::migrate(&pool).await;
            pool.close().await;
            result
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("concurrent migrate");
    }
    assert_eq!(db.scalar_i64("SELECT count(*) FROM import_batches").await, 0);
}

/// A database that applied 20261204000001 as it first shipped (with a non-ASCII comment, since
/// made ASCII so LATIN1 databases migrate) still takes every later migration.
#[tokio::test]
async fn a_database_migrated_before_a_reworded_migration_still_migrates() {
    let db = TestDb::new().await;
    let shipped =
        "6c4c10fe53eefb81fab86709ab145524e2ec086f5e0be1ba0ca3aa3b892c8aa08112d96882d8fcbe13c488e9890efda6";
    db.apply(&format!(
        "UPDATE _sqlx_migrations SET checksum = decode('{shipped}', 'hex') WHERE version = 20261204000001;
         DELETE FROM _sqlx_migrations WHERE version = 20261205000004;
         ALTER TABLE import_batches DROP COLUMN after_batch_id"
    ))
    .await;
    ingot::store::migrate(&db.pool).await.expect("migrate after the reword");
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM _sqlx_migrations WHERE version = 20261205000004").await,
        1
    );
    ingot::store::migrate(&db.pool).await.expect("and again");
}

#[tokio::test]
async fn summary_reports_top_errors_by_code_most_frequent_first() {
    let f = Fixture::new(None).await;
    let bad = |code: &str, message: &str| json!({"mode": "invalid", "code": code, "message": message});
    let items = [
        bad("b", "bee"),
        bad("a", "ay"),
        bad("b", "bee"),
        bad("b", "bee2"),
        bad("a", "ay"),
        json!({"mode": "ok"}),
    ];
    let summary = f.run(&items, CreateOptions::default(), 1).await;
    let top: Vec<(Option<&str>, &str, i64)> =
        summary.top_errors.iter().map(|e| (e.code.as_deref(), e.message.as_str(), e.count)).collect();
    assert_eq!(top, [(Some("b"), "bee", 3), (Some("a"), "ay", 2)]);
    assert_eq!(summary.top_errors_more, 0);
    assert!(summary.duration_ms.is_some() && summary.items_per_second.is_some());

    // Sixty failures over twelve codes: ten are listed, the rest counted, and the two add up to
    // every failed item, in `show` and in `list` alike.
    let items: Vec<Value> = (0..60).map(|i| bad(&format!("c{:02}", i % 12), "no")).collect();
    let summary = f.run(&items, CreateOptions::default(), 2).await;
    assert_eq!(summary.top_errors.len(), 10);
    assert_eq!(summary.top_errors.iter().map(|e| e.count).sum::<i64>() + summary.top_errors_more, 60);
    assert_eq!(summary.top_errors_more, 10);
    let mut conn = f.db.pool.acquire().await.unwrap();
    let filter = ingot::store::batches::ListFilter { limit: 1, ..Default::default() };
    let listed = ingot::store::batches::list(&mut conn, &filter).await.unwrap();
    assert_eq!((listed[0].top_errors.len(), listed[0].top_errors_more), (10, 10));
}

#[tokio::test]
async fn a_retryable_failure_is_retried_with_backoff_until_it_succeeds() {
    let f = Fixture::new(None).await;
    let flaky =
        json!({"mode": "flaky", "until": 3, "sql": "INSERT INTO probe_rows (label) VALUES ('flaky')"});
    let started = std::time::Instant::now();
    let summary = f.run(&[flaky, insert("steady")], CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed, summary.status), (2, 0, BatchStatus::Completed));
    // Two backoffs: about 0.1-0.2 s, then 0.2-0.4 s.
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "{:?}", started.elapsed());
    let item = f.item(summary.batch_id, 0).await;
    assert_eq!(item.get::<i32, _>("attempts"), 3);
    assert_eq!(
        item.get::<Option<String>, _>("error_message"),
        None,
        "a success clears the last attempt's error"
    );
    assert_eq!(f.labels().await, ["flaky", "steady"], "failed attempts' writes were rolled back");
    let lines = f.log_messages(summary.batch_id).await;
    let attempts: Vec<&String> = lines.iter().filter(|l| l.starts_with("attempt ")).collect();
    assert_eq!(attempts.len(), 2, "{lines:?}");
    assert!(
        attempts[0].starts_with("attempt 1 of 3 failed, retrying in")
            && attempts[0].ends_with("not yet (attempt 1)")
    );
    assert!(
        attempts[1].starts_with("attempt 2 of 3 failed, retrying in")
            && attempts[1].ends_with("not yet (attempt 2)")
    );
    f.assert_counters_match_items(summary.batch_id).await;
}

#[tokio::test]
async fn an_item_that_exhausts_its_attempts_fails_with_every_attempt_logged() {
    let f = Fixture::new(Some("[batch]\nmax_attempts = 2\n")).await;
    let summary = f
        .run(
            &[json!({"mode": "retryable", "message": "still down"}), insert("after")],
            CreateOptions::default(),
            1,
        )
        .await;
    assert_eq!((summary.completed, summary.failed), (1, 1));
    let item = f.item(summary.batch_id, 0).await;
    assert_eq!(item.get::<String, _>("status"), "failed");
    assert_eq!(item.get::<i32, _>("attempts"), 2);
    assert_eq!(item.get::<String, _>("error_message"), "still down");
    let lines = f.log_messages(summary.batch_id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("attempt 1 of 2 failed, retrying in") && l.ends_with("still down")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "item failed after 2 attempts: still down"), "{lines:?}");
    let hooks = lines.iter().filter(|l| l.starts_with("hook:on_item_error")).count();
    assert_eq!(hooks, 1, "on-item-error runs once, when the item finally fails");
}

#[tokio::test]
async fn invalid_data_is_never_retried() {
    let f = Fixture::new(None).await;
    let summary = f.run(&[json!({"mode": "invalid", "message": "bad"})], CreateOptions::default(), 1).await;
    assert_eq!(f.item(summary.batch_id, 0).await.get::<i32, _>("attempts"), 1);
    assert_eq!(summary.failed, 1);
}

/// A function that fails with a serialization failure (SQLSTATE 40001) the first `failures`
/// times it is called for a key, then returns `<key> on call <n>`. A sequence per key counts the
/// calls, because a failed attempt's rollback does not undo `nextval`; it is `SECURITY DEFINER`
/// so that the processor needs no privilege on the sequences.
const CONFLICTS: &str = "
CREATE SEQUENCE conflict_calls_sdk;
CREATE SEQUENCE conflict_calls_host;
CREATE FUNCTION conflict_until(key text, failures int) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    call bigint := nextval(format('public.%I', 'conflict_calls_' || key)::regclass);
BEGIN
    IF call <= failures THEN
        RAISE EXCEPTION 'could not serialize access due to concurrent update (call %)', call
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN key || ' on call ' || call;
END $$";

/// Two items that hit `failures` serialization failures: `sdk` returns the SDK's error (`?`),
/// `host` swallows it and claims success, so the host must classify the failure itself.
fn conflicting_items(failures: i64) -> [Value; 2] {
    let item = |mode: &str, key: &str| {
        json!({"mode": mode, "sql": "INSERT INTO probe_rows (label) VALUES (conflict_until($1, $2))",
               "params": [key, failures]})
    };
    [item("sql", "sdk"), item("sql_ignore_error", "host")]
}

impl Fixture {
    /// How many times `conflict_until` was called for `key`.
    async fn conflict_calls(&self, key: &str) -> i64 {
        self.db.scalar_i64(&format!("SELECT last_value FROM conflict_calls_{key}")).await
    }

    /// The host's lines at `level` for one item: (message, the attempt in its details).
    async fn host_lines(&self, batch: Uuid, index: i64, level: &str) -> Vec<(String, Option<Value>)> {
        sqlx::query_as(
            "SELECT message, details -> 'attempt' FROM import_logs
             WHERE batch_id = $1 AND item_index = $2 AND log_level = $3 AND source = 'host' ORDER BY id",
        )
        .bind(batch)
        .bind(index)
        .bind(level)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }
}

// A serialization failure in the processor's SQL is transient: the item is tried again after a
// backoff, each failed attempt logged, until it succeeds, whether the processor passed the error
// on or swallowed it.
#[tokio::test]
async fn a_serialization_failure_is_retried_with_backoff_until_the_item_succeeds() {
    let f = Fixture::new(None).await;
    f.db.apply(CONFLICTS).await;
    let started = std::time::Instant::now();
    let summary = f.run(&conflicting_items(2), CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed), (2, 0), "{:?}", summary.top_errors);
    // Two backoffs per item, one after the other: at least 0.1 s, then 0.2 s.
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(f.labels().await, ["host on call 3", "sdk on call 3"]);
    for (index, key) in [(0, "sdk"), (1, "host")] {
        let item = f.item(summary.batch_id, index).await;
        assert_eq!(item.get::<String, _>("status"), "completed", "{key}");
        assert_eq!(item.get::<i32, _>("attempts"), 3, "{key}");
        assert_eq!(f.conflict_calls(key).await, 3, "{key}: one call per attempt");
        let retries = f.host_lines(summary.batch_id, index, "warning").await;
        assert_eq!(retries.len(), 2, "{key}: {retries:?}");
        for (n, (message, attempt)) in (1..).zip(&retries) {
            assert!(
                message.starts_with(&format!("attempt {n} of 3 failed, retrying in ")),
                "{key}: {message}"
            );
            assert!(
                message.contains("40001")
                    && message
                        .contains(&format!("could not serialize access due to concurrent update (call {n})")),
                "{key}: {message}"
            );
            assert_eq!(attempt, &Some(json!(n)), "{key}");
        }
    }
    f.assert_counters_match_items(summary.batch_id).await;
}

// Retrying a serialization failure stops at max_attempts: the item fails with sql_error after
// exactly that many attempts, and on-item-error runs once.
#[tokio::test]
async fn a_serialization_failure_that_outlasts_max_attempts_fails_the_item_with_sql_error() {
    let f = Fixture::new(Some("[batch]\nmax_attempts = 2\n")).await;
    f.db.apply(CONFLICTS).await;
    let summary = f.run(&conflicting_items(5), CreateOptions::default(), 1).await;
    assert_eq!((summary.completed, summary.failed), (0, 2));
    assert!(f.labels().await.is_empty());
    for (index, key) in [(0, "sdk"), (1, "host")] {
        let item = f.item(summary.batch_id, index).await;
        assert_eq!(item.get::<String, _>("status"), "failed", "{key}");
        assert_eq!(item.get::<i32, _>("attempts"), 2, "{key}");
        assert_eq!(f.conflict_calls(key).await, 2, "{key}: no attempt past max_attempts");
        assert_eq!(item.get::<Option<String>, _>("error_code").as_deref(), Some("sql_error"), "{key}");
        let message: String = item.get("error_message");
        assert!(message.contains("40001") && message.contains("(call 2)"), "{key}: {message}");
        let retries = f.host_lines(summary.batch_id, index, "warning").await;
        assert_eq!(retries.len(), 1, "{key}: {retries:?}");
        assert!(retries[0].0.starts_with("attempt 1 of 2 failed, retrying in "), "{key}: {retries:?}");
        let failures = f.host_lines(summary.batch_id, index, "error").await;
        assert_eq!(failures.len(), 1, "{key}: {failures:?}");
        assert!(failures[0].0.starts_with("item failed after 2 attempts: "), "{key}: {failures:?}");
    }
    let hooks = f
        .log_messages(summary.batch_id)
        .await
        .into_iter()
        .filter(|l| l.starts_with("hook:on_item_error"))
        .count();
    assert_eq!(hooks, 2, "on-item-error runs once per item, when it finally fails");
}

/// A batch that cannot start is not left for a worker to take up later: a processor that does
/// not load refuses the file before any batch exists, and a batch whose start fails after it was
/// created (here: its manifest grants a table that does not exist) ends `failed`, with the
/// reason, where no worker looks.
#[tokio::test]
async fn a_batch_that_cannot_start_is_failed_with_the_reason_and_never_taken_up() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.ndjson");
    std::fs::write(&file, "{\"mode\": \"ok\"}\n").unwrap();
    let source = || InputSource::from_arg(file.to_str().unwrap(), None).unwrap();

    let broken = Processors::new(&[("probe", &guest("probe"), None)]);
    std::fs::write(broken.path().join("probe.wasm"), b"\0asm but not really").unwrap();
    let manager = support::manager(&db, &broken, support::runtime());
    let error = manager
        .run("probe", source(), &CreateOptions::default(), &ProcessOptions::workers(1), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("probe.wasm"), "{error}");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM import_batches").await, 0, "no batch was created");

    let missing = Processors::new(&[("probe", &guest("probe"), Some("[grants]\nnowhere = [\"select\"]\n"))]);
    let manager = support::manager(&db, &missing, support::runtime());
    let error = manager
        .run("probe", source(), &CreateOptions::default(), &ProcessOptions::workers(1), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no such table"), "{error}");
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_message FROM import_batches").fetch_one(&db.pool).await.unwrap();
    assert_eq!(status, "failed");
    let reason = reason.unwrap_or_default();
    assert!(reason.starts_with("the batch could not start:") && reason.contains("nowhere"), "{reason}");
    let mut conn = db.pool.acquire().await.unwrap();
    let next = ingot::store::batches::next_runnable(&mut conn, &["probe".to_owned()], &[]).await.unwrap();
    assert_eq!(next, None, "a worker would take the refused batch up");
}

/// Error thresholds: once more items failed than `max_failures` allows (or a larger share than
/// `max_failure_rate`, judged once 100 items have finished) the batch stops `failed` with the
/// reason and the rest stays pending; processing it again goes on from there and stops again at
/// the next failure over the threshold. The manifest's `[batch]` sets them too.
#[tokio::test]
async fn a_batch_over_its_failure_threshold_stops_failed_with_the_rest_pending() {
    let f = Fixture::new(None).await;
    let every = |n: usize, of: usize| -> Vec<Value> {
        (0..of)
            .map(|i| if i % n == n - 1 { json!({"mode": "invalid"}) } else { json!({"mode": "ok"}) })
            .collect()
    };
    let counts = |s: &Summary| (s.status, s.completed, s.failed, s.pending);
    let create = CreateOptions { max_failures: Some(2), ..Default::default() };
    let summary = f.run(&every(3, 30), create, 1).await;
    assert_eq!(counts(&summary), (BatchStatus::Failed, 6, 3, 21));
    let reason = summary.error_message.clone().unwrap_or_default();
    assert!(reason.contains("3 items failed, more than max_failures (2) allows"), "{reason}");
    assert!(reason.contains(&format!("ingot batch process {}", summary.batch_id)), "{reason}");
    let again = f.manager.process(summary.batch_id, &ProcessOptions::workers(1), None).await.unwrap();
    assert_eq!(counts(&again), (BatchStatus::Failed, 8, 4, 18));

    let create = CreateOptions { max_failure_rate: Some(0.25), ..Default::default() };
    let summary = f.run(&every(2, 200), create, 1).await;
    assert_eq!(counts(&summary), (BatchStatus::Failed, 50, 50, 100), "judged once 100 finished");
    let reason = summary.error_message.unwrap_or_default();
    assert!(reason.contains("50 of the 100 items finished so far failed (50.0 %)"), "{reason}");
    // Under the rate, the batch completes with its failures.
    let create = CreateOptions { max_failure_rate: Some(0.6), ..Default::default() };
    let summary = f.run(&every(2, 200), create, 2).await;
    assert_eq!(counts(&summary), (BatchStatus::Completed, 100, 100, 0));

    let f = Fixture::new(Some("\n[batch]\nmax_failures = 0\n")).await;
    let summary = f.run(&every(2, 3), CreateOptions::default(), 1).await;
    assert_eq!(counts(&summary), (BatchStatus::Failed, 1, 1, 1));
    let f = Fixture::new(Some("\n[batch]\nmax_failure_rate = 1.5\n")).await;
    let error =
        f.manager.create("probe", f.ndjson(&every(2, 2)), &CreateOptions::default()).await.unwrap_err();
    assert!(error.to_string().contains("max_failure_rate must be a share"), "{error}");
}

/// The same file imported twice as the same type is refused, naming the earlier batch and
/// leaving no batch behind; `allow_duplicate` imports it anyway. Another type, other bytes, and
/// an earlier batch refused before any item ran (the operator's fix is to import it again) do
/// not count.
#[tokio::test]
async fn a_file_already_imported_is_refused_naming_the_earlier_batch() {
    let f = Fixture::new(None).await;
    let items = [json!({"mode": "ok"}), json!({"mode": "ok"})];
    let first = f.run(&items, CreateOptions::default(), 1).await;
    let text: String = items.iter().map(|i| format!("{i}\n")).collect();
    let again = f.file("again.ndjson", text.as_bytes());
    let error = f.manager.create("probe", again.clone(), &CreateOptions::default()).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, BatchError::Duplicate { earlier, .. } if earlier == first.batch_id), "{message}");
    assert!(
        message.contains("again.ndjson was already imported as batch")
            && message.contains("--allow-duplicate")
    );
    assert_eq!(
        f.db.scalar_i64("SELECT count(*) FROM import_batches").await,
        1,
        "the refused one left nothing"
    );
    let dry = f.manager.dry_run("probe", again.clone(), &CreateOptions::default()).await.unwrap_err();
    assert!(matches!(dry, BatchError::Duplicate { .. }), "{dry}");
    let allowed = CreateOptions { allow_duplicate: true, ..Default::default() };
    f.manager.create("probe", again.clone(), &allowed).await.unwrap();
    let other = f.file("other.ndjson", b"{\"mode\": \"ok\"}\n");
    f.manager.create("probe", other, &CreateOptions::default()).await.unwrap();

    // Refused before any item ran: a processor that cannot start. The same file is then welcome.
    let db = TestDb::new().await;
    let processors =
        Processors::new(&[("probe", &guest("probe"), Some("[grants]\nnowhere = [\"select\"]\n"))]);
    let manager = support::manager(&db, &processors, support::runtime());
    let file = f.file("refused.ndjson", b"{\"mode\": \"ok\"}\n");
    manager
        .run("probe", file.clone(), &CreateOptions::default(), &ProcessOptions::workers(1), None)
        .await
        .unwrap_err();
    assert_eq!(db.scalar_i64("SELECT count(*) FROM import_batches WHERE status = 'failed'").await, 1);
    manager.create("probe", file, &CreateOptions::default()).await.unwrap();
}

/// Dependencies: a batch created `after` another waits until that one completes (no worker
/// takes it up before), then runs; after one that failed or was cancelled it is failed with the
/// reason and none of its items run; an unknown batch is refused when creating.
#[tokio::test]
async fn a_batch_after_another_starts_only_once_that_one_completed() {
    let f = Fixture::new(None).await;
    let first = f.manager.create("probe", f.ndjson(&[insert("a")]), &CreateOptions::default()).await.unwrap();
    let after = |id| CreateOptions { after: Some(id), ..Default::default() };
    let second = f.manager.create("probe", f.ndjson(&[insert("b")]), &after(first)).await.unwrap();
    let mut conn = f.db.pool.acquire().await.unwrap();
    let types = ["probe".to_owned()];
    let next = ingot::store::batches::next_runnable(&mut conn, &types, &[]).await.unwrap();
    assert_eq!(next, Some(first));
    let next = ingot::store::batches::next_runnable(&mut conn, &types, &[first]).await.unwrap();
    assert_eq!(next, None, "a worker would start the second before the first completed");

    let one = ProcessOptions::workers(1);
    let waiting = f.manager.process(second, &one, None);
    let meanwhile = async {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let before = f.labels().await;
        f.manager.process(first, &ProcessOptions::workers(1), None).await.unwrap();
        before
    };
    let (second_summary, before) = tokio::join!(waiting, meanwhile);
    assert_eq!(before, Vec::<String>::new(), "the second ran before the first");
    assert_eq!(second_summary.unwrap().status, BatchStatus::Completed);
    assert_eq!(f.labels().await, ["a", "b"]);

    let third = f.manager.create("probe", f.ndjson(&[insert("c")]), &CreateOptions::default()).await.unwrap();
    f.manager.cancel(third, "wrong file").await.unwrap();
    let fourth = f.manager.create("probe", f.ndjson(&[insert("d")]), &after(third)).await.unwrap();
    let summary = f.manager.process(fourth, &ProcessOptions::workers(1), None).await.unwrap();
    assert_eq!((summary.status, summary.completed), (BatchStatus::Failed, 0));
    let reason = summary.error_message.unwrap_or_default();
    assert!(
        reason.contains(&format!("batch {third}, which it waits for (--after), was cancelled")),
        "{reason}"
    );
    assert_eq!(f.labels().await, ["a", "b"]);

    let unknown = Uuid::new_v4();
    let error = f.manager.create("probe", f.ndjson(&[insert("e")]), &after(unknown)).await.unwrap_err();
    assert!(matches!(error, BatchError::NoSuchDependency(id) if id == unknown), "{error}");
}

/// A parent's summary lists the batches that reprocess it and how many of its failures they
/// (or their own reprocesses) have since fixed; its own counts stay what happened in it.
#[tokio::test]
async fn a_parent_shows_its_reprocesses_and_the_failures_they_fixed() {
    let f = Fixture::new(None).await;
    f.db.apply("INSERT INTO probe_rows (label) VALUES ('taken1'), ('taken2')").await;
    let items = [insert("a"), insert("taken1"), insert("taken2"), json!({"mode": "invalid", "code": "bad"})];
    let parent = f.run(&items, CreateOptions::default(), 1).await;
    assert_eq!((parent.failed, parent.reprocessed_by.len()), (3, 0));
    let one = ProcessOptions::workers(1);
    f.db.apply("DELETE FROM probe_rows WHERE label = 'taken1'").await;
    let child = f.manager.reprocess(parent.batch_id, true, &one, None).await.unwrap().unwrap();
    assert_eq!((child.completed, child.failed), (1, 2));
    f.db.apply("DELETE FROM probe_rows WHERE label = 'taken2'").await;
    let grandchild = f.manager.reprocess(child.batch_id, true, &one, None).await.unwrap().unwrap();
    assert_eq!((grandchild.completed, grandchild.failed), (1, 1));

    let shown = f.manager.summary(parent.batch_id).await.unwrap();
    assert_eq!(shown.failed, 3, "the parent's own counts stay");
    let children: Vec<_> =
        shown.reprocessed_by.iter().map(|c| (c.batch_id, c.status, c.total, c.completed, c.failed)).collect();
    assert_eq!(children, [(child.batch_id, BatchStatus::Completed, 3, 1, 2)]);
    assert_eq!(shown.failures_fixed, 2, "one by the child, one by the grandchild");
    let child_shown = f.manager.summary(child.batch_id).await.unwrap();
    assert_eq!((child_shown.reprocessed_by.len(), child_shown.failures_fixed), (1, 1));
}
