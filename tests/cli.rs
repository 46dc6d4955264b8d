//! The `ingot` command line: exit codes, JSON documents, logs, listing, stdin, streaming a large
//! file, and the embedded database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::Stdio;

use serde_json::{Value, json};
use support::peak_rss::wait_measuring_peak_rss;
use support::{Processors, TestDb, guest, ingot, ingot_command, json_of, stderr_of};

const PROBE_MANIFEST: &str = "[grants]\nprobe_rows = [\"select\", \"insert\", \"update\", \"delete\"]\n";

struct Cli {
    db: TestDb,
    processors: Processors,
    cwd: tempfile::TempDir,
}

impl Cli {
    async fn new() -> Cli {
        let db = TestDb::new().await;
        db.apply("CREATE TABLE probe_rows (id serial PRIMARY KEY, label text UNIQUE NOT NULL)").await;
        let processors = Processors::new(&[("probe", &guest("probe"), Some(PROBE_MANIFEST))]);
        Cli { db, processors, cwd: tempfile::tempdir().unwrap() }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        ingot(self.cwd.path(), &self.db.url, self.processors.path(), args)
    }

    fn write(&self, name: &str, items: &[Value]) -> String {
        let path = self.cwd.path().join(name);
        let text: String = items.iter().map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn code(output: &std::process::Output) -> i32 {
    output.status.code().expect("exited")
}

#[tokio::test]
async fn exit_code_0_when_every_item_completes() {
    let cli = Cli::new().await;
    let file = cli.write("ok.ndjson", &[json!({"mode": "ok"}), json!({"mode": "skip"})]);
    let output = cli.run(&["run", "probe", &file, "--json", "--workers", "2"]);
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["skipped"], 1);
}

#[tokio::test]
async fn exit_code_3_when_items_failed_and_the_summary_has_every_documented_key() {
    let cli = Cli::new().await;
    let file = cli.write(
        "mixed.ndjson",
        &[json!({"mode": "ok"}), json!({"mode": "invalid", "code": "bad", "message": "no"})],
    );
    let output = cli.run(&["run", "probe", &file, "--json"]);
    assert_eq!(code(&output), 3, "{}", stderr_of(&output));
    let summary = json_of(&output);
    for key in [
        "batch_id",
        "batch_type",
        "status",
        "total",
        "completed",
        "failed",
        "skipped",
        "parent_batch_id",
        "retry_count",
        "processor_digest",
        "created_at",
        "started_at",
        "completed_at",
        "duration_ms",
        "items_per_second",
        "top_errors",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}: {summary}");
    }
    assert_eq!(summary["top_errors"], json!([{"code": "bad", "message": "no", "count": 1}]));
    assert_eq!(
        (summary["total"].as_i64(), summary["completed"].as_i64(), summary["failed"].as_i64()),
        (Some(2), Some(1), Some(1))
    );
}

#[tokio::test]
async fn exit_code_4_when_the_batch_fails() {
    let cli = Cli::new().await;
    let file = cli.write("reject.ndjson", &[json!({"mode": "ok"})]);
    let output = cli.run(&["run", "probe", &file, "--json", "--metadata", r#"{"reject": true}"#]);
    assert_eq!(code(&output), 4, "{}", stderr_of(&output));
    assert_eq!(json_of(&output)["status"], "failed");
    let stopped =
        cli.write("stop.ndjson", &[json!({"mode": "invalid", "message": "x"}), json!({"mode": "ok"})]);
    let output = cli.run(&["run", "probe", &stopped, "--stop-on-error", "--workers", "1"]);
    assert_eq!(code(&output), 4);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("FAILED") && text.contains("stopped at item 0"), "{text}");
}

#[tokio::test]
async fn exit_code_1_with_one_sentence_for_errors_outside_a_batch() {
    let cli = Cli::new().await;
    let missing = cli.run(&["run", "probe", "/nonexistent/input.csv"]);
    assert_eq!(code(&missing), 1);
    assert!(stderr_of(&missing).contains("/nonexistent/input.csv"), "{}", stderr_of(&missing));
    let file = cli.write("x.ndjson", &[json!({})]);
    let unknown = cli.run(&["run", "orders", &file]);
    assert_eq!(code(&unknown), 1);
    assert!(
        stderr_of(&unknown).contains("no processor for batch type \"orders\""),
        "{}",
        stderr_of(&unknown)
    );
    let unreachable = ingot(
        cli.cwd.path(),
        "postgres://nobody@127.0.0.1:1/none",
        cli.processors.path(),
        &["run", "probe", &file],
    );
    assert_eq!(code(&unreachable), 1);
    assert!(
        stderr_of(&unreachable).contains("cannot connect to the database"),
        "{}",
        stderr_of(&unreachable)
    );
    let lines = stderr_of(&unreachable).trim().lines().count();
    assert_eq!(lines, 1, "one sentence, not a backtrace: {}", stderr_of(&unreachable));
    let bad_csv = cli.cwd.path().join("bad.csv");
    std::fs::write(&bad_csv, "a,b\n1,2\n3,\"4\n").unwrap();
    let malformed = cli.run(&["run", "probe", bad_csv.to_str().unwrap()]);
    assert_eq!(code(&malformed), 1);
    assert!(
        stderr_of(&malformed).contains("bad.csv: line 3: a quoted field is never closed"),
        "{}",
        stderr_of(&malformed)
    );
    assert_eq!(cli.db.scalar_i64("SELECT count(*) FROM import_batches").await, 0);
}

#[tokio::test]
async fn exit_code_2_for_bad_usage() {
    let cli = Cli::new().await;
    assert_eq!(code(&cli.run(&["run", "probe"])), 2);
    assert_eq!(code(&cli.run(&["batch", "show", "not-a-uuid"])), 2);
    assert_eq!(code(&cli.run(&["logs", "00000000-0000-0000-0000-000000000000", "--level", "loud"])), 2);
}

#[tokio::test]
async fn create_then_process_then_show_and_list() {
    let cli = Cli::new().await;
    let file = cli.write("two.ndjson", &[json!({"mode": "ok"}), json!({"mode": "ok"})]);
    let created = cli.run(&["batch", "create", "probe", &file, "--json"]);
    assert_eq!(code(&created), 0, "{}", stderr_of(&created));
    let created = json_of(&created);
    assert_eq!(created["status"], "pending");
    let id = created["batch_id"].as_str().unwrap().to_owned();
    let processed = cli.run(&["batch", "process", &id, "--json"]);
    assert_eq!(code(&processed), 0, "{}", stderr_of(&processed));
    assert_eq!(json_of(&processed)["completed"], 2);
    let shown = json_of(&cli.run(&["batch", "show", &id, "--json"]));
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["source_info"]["items"], 2);
    let listed = json_of(&cli.run(&["batch", "list", "--type", "probe", "--status", "completed", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["batch_id"], id.as_str());
    assert!(
        json_of(&cli.run(&["batch", "list", "--status", "failed", "--json"])).as_array().unwrap().is_empty()
    );
    let human = cli.run(&["batch", "show", &id]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("completed 2"));
    let missing = cli.run(&["batch", "show", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(code(&missing), 1);
    assert!(stderr_of(&missing).contains("does not exist"));
}

#[tokio::test]
async fn logs_are_filtered_by_item_and_level_and_show_the_failed_items_data() {
    let cli = Cli::new().await;
    let file = cli.write(
        "logs.ndjson",
        &[
            json!({"mode": "log", "lines": 2, "message": "hello"}),
            json!({"mode": "invalid", "message": "bad email", "email": "x@"}),
        ],
    );
    let run = json_of(&cli.run(&["run", "probe", &file, "--json", "--workers", "1"]));
    let id = run["batch_id"].as_str().unwrap().to_owned();
    let all = json_of(&cli.run(&["logs", &id, "--json"]));
    assert!(all.as_array().unwrap().len() >= 5, "{all}");
    let item0 = json_of(&cli.run(&["logs", &id, "--item", "0", "--json"]));
    let messages: Vec<&str> =
        item0.as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["line 0: hello", "line 1: hello"]);
    assert_eq!(item0[0]["details"], json!({"i": 0}));
    let errors = json_of(&cli.run(&["logs", &id, "--level", "error", "--json"]));
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["item_index"], 1);
    assert_eq!(errors[0]["message"], "item failed: bad email");
    assert_eq!(errors[0]["item_data"]["email"], "x@");
    let human = String::from_utf8_lossy(&cli.run(&["logs", &id, "--level", "error"]).stdout).into_owned();
    assert!(
        human.contains("[item 1] ERROR host: item failed: bad email") && human.contains("\"email\":\"x@\""),
        "{human}"
    );
}

#[tokio::test]
async fn reprocess_failed_only_prints_the_new_linked_batch() {
    let cli = Cli::new().await;
    let file =
        cli.write("r.ndjson", &[json!({"mode": "ok"}), json!({"mode": "invalid", "message": "still bad"})]);
    let parent = json_of(&cli.run(&["run", "probe", &file, "--json"]));
    let id = parent["batch_id"].as_str().unwrap();
    let output = cli.run(&["reprocess", id, "--failed-only", "--json"]);
    assert_eq!(code(&output), 3, "{}", stderr_of(&output));
    let child = json_of(&output);
    assert_eq!(child["parent_batch_id"], id);
    assert_eq!(child["retry_count"], 1);
    assert_eq!((child["total"].as_i64(), child["failed"].as_i64()), (Some(1), Some(1)));
}

#[tokio::test]
async fn dry_run_through_the_cli_keeps_nothing() {
    let cli = Cli::new().await;
    let file = cli.write(
        "dry.ndjson",
        &[
            json!({"mode": "sql", "sql": "INSERT INTO probe_rows (label) VALUES ('x')"}),
            json!({"mode": "invalid", "message": "n"}),
        ],
    );
    let output = cli.run(&["run", "probe", &file, "--dry-run", "--json"]);
    assert_eq!(code(&output), 3);
    let summary = json_of(&output);
    assert_eq!(summary["dry_run"], true);
    assert_eq!((summary["completed"].as_i64(), summary["failed"].as_i64()), (Some(1), Some(1)));
    assert_eq!(cli.db.scalar_i64("SELECT count(*) FROM import_batches").await, 0);
    assert_eq!(cli.db.scalar_i64("SELECT count(*) FROM probe_rows").await, 0);
}

#[tokio::test]
async fn stdin_is_read_with_an_explicit_format() {
    let cli = Cli::new().await;
    let mut child = ingot_command(
        cli.cwd.path(),
        &cli.db.url,
        cli.processors.path(),
        &["run", "probe", "-", "--format", "ndjson", "--json"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"mode\": \"ok\"}\n{\"mode\": \"ok\"}\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(summary["total"], 2);
    assert_eq!(summary["source_info"]["file_name"], "stdin");
    let no_format = cli.run(&["run", "probe", "-"]);
    assert_eq!(code(&no_format), 1);
    assert!(stderr_of(&no_format).contains("--format"));
}

#[tokio::test]
async fn a_100k_item_csv_is_streamed_without_holding_the_file_in_memory() {
    let cli = Cli::new().await;
    let path = cli.cwd.path().join("big.csv");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(file, "email,name,note").unwrap();
        let padding = "p".repeat(1000);
        for i in 0..100_000 {
            writeln!(file, "user{i}@example.com,User {i},\"{padding}\"").unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 100_000_000, "the file is {size} bytes");
    let mut command = ingot_command(
        cli.cwd.path(),
        &cli.db.url,
        cli.processors.path(),
        &["batch", "create", "probe", path.to_str().unwrap()],
    );
    let child = command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    let (status, peak) = wait_measuring_peak_rss(child);
    assert!(status.success());
    assert!(peak < 80 << 20, "peak RSS {} MB for a {} MB file", peak >> 20, size >> 20);
    assert_eq!(cli.db.scalar_i64("SELECT count(*) FROM import_batch_items").await, 100_000);
    assert_eq!(cli.db.scalar_i64("SELECT total_items FROM import_batches").await, 100_000);
    let last: Value =
        sqlx::query_scalar("SELECT source_data FROM import_batch_items WHERE item_index = 99999")
            .fetch_one(&cli.db.pool)
            .await
            .unwrap();
    assert_eq!(last["email"], "user99999@example.com");
}

#[tokio::test]
async fn without_database_url_an_embedded_cluster_starts_on_demand() {
    let dir = support::cluster_dir();
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let _stop = support::StopCluster(dir.path(), processors.path());
    let embedded =
        |args: &[&str]| support::embedded_command(dir.path(), processors.path(), args).output().unwrap();
    let migrate = embedded(&["migrate"]);
    assert_eq!(code(&migrate), 0, "{}", stderr_of(&migrate));
    let status = json_of(&embedded(&["db", "status", "--json"]));
    assert_eq!(status["running"], true);
    assert!(dir.path().join(".ingot/pg/data/PG_VERSION").exists());
    let file = dir.path().join("x.ndjson");
    std::fs::write(&file, "{\"mode\": \"ok\"}\n").unwrap();
    let run = embedded(&["run", "probe", file.to_str().unwrap(), "--json"]);
    assert_eq!(code(&run), 0, "{}", stderr_of(&run));
    assert_eq!(json_of(&run)["completed"], 1);
    let stop = embedded(&["db", "stop"]);
    assert_eq!(code(&stop), 0, "{}", stderr_of(&stop));
    assert_eq!(json_of(&embedded(&["db", "status", "--json"]))["running"], false);
}

#[tokio::test]
async fn text_a_processor_wrote_cannot_draw_on_the_operators_terminal() {
    let cli = Cli::new().await;
    let osc52 = "\u{1b}]52;c;cGF5bG9hZA==\u{7}";
    let file = cli.write(
        "escapes.ndjson",
        &[
            json!({"mode": "log", "lines": 1, "message": format!("clipboard {osc52} then\n[item 7] ERROR processor: forged")}),
            json!({"mode": "invalid", "message": "wipe \u{1b}[2J\u{1b}[H\rscreen\u{9b}31m", "code": "evil\u{1b}[1m"}),
        ],
    );
    let run = cli.run(&["run", "probe", &file, "--workers", "1"]);
    assert_eq!(code(&run), 3, "{}", stderr_of(&run));
    let id = json_of(&cli.run(&["batch", "list", "--limit", "1", "--json"]))[0]["batch_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for output in [run, cli.run(&["logs", &id]), cli.run(&["batch", "show", &id])] {
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reached the terminal: {text:?}"
        );
        assert!(!text.lines().any(|l| l.starts_with("[item 7]")), "a forged line: {text}");
        assert!(text.contains("\\x1b") || text.contains("\\n"), "the escapes are shown, not hidden: {text}");
    }
    // JSON keeps the text exactly (JSON escapes control characters itself).
    let logs = json_of(&cli.run(&["logs", &id, "--item", "0", "--json"]));
    assert!(logs[0]["message"].as_str().unwrap().contains(osc52));
}

#[tokio::test]
async fn a_component_over_the_size_cap_is_refused_without_being_read() {
    let cli = Cli::new().await;
    // 300 MB, sparse: reading it whole would show in the peak memory.
    let big = std::fs::File::create(cli.processors.path().join("huge.wasm")).unwrap();
    big.set_len(300 << 20).unwrap();
    let mut command =
        ingot_command(cli.cwd.path(), &cli.db.url, cli.processors.path(), &["processors", "--json"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let (status, peak) = wait_measuring_peak_rss(child);
    assert!(status.success());
    assert!(peak < 64 << 20, "listing a 300 MB file took {} MiB", peak >> 20);
    let listed = json_of(&cli.run(&["processors", "--json"]));
    let huge = listed.as_array().unwrap().iter().find(|p| p["batch_type"] == "huge").unwrap().clone();
    assert_eq!(huge["status"], "error");
    let error = huge["error"].as_str().unwrap();
    assert!(
        error.contains("huge.wasm is 300 MiB, over the 256 MiB") && error.contains("INGOT_MAX_COMPONENT_MB"),
        "{error}"
    );
    assert_eq!(huge["digest"].as_str().map(str::len), Some(64), "its digest is still computed, in pieces");
    // The cap is the operator's to move: with 1 MiB, a 2 MiB file is refused and the probe is not.
    std::fs::File::create(cli.processors.path().join("medium.wasm")).unwrap().set_len(2 << 20).unwrap();
    let mut command =
        ingot_command(cli.cwd.path(), &cli.db.url, cli.processors.path(), &["processors", "--json"]);
    let listed = json_of(&command.env("INGOT_MAX_COMPONENT_MB", "1").output().unwrap());
    let entry =
        |name: &str| listed.as_array().unwrap().iter().find(|p| p["batch_type"] == name).unwrap().clone();
    assert!(entry("medium")["error"].as_str().unwrap().contains("over the 1 MiB"), "{listed}");
    assert_eq!(entry("probe")["status"], "ok", "{listed}");
}
