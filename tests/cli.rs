//! The `ingot` command line: exit codes, signals, JSON documents, logs, listing, stdin, the progress
//! bar, streaming a large file, and the embedded database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use support::peak_rss::wait_measuring_peak_rss;
use support::{Processors, TestDb, guest, ingot, ingot_command, json_of, stderr_of};

const PROBE_MANIFEST: &str = "[grants]\nprobe_rows = [\"select\", \"insert\", \"update\", \"delete\"]\n";
const SLOW_MANIFEST: &str = "[grants]\nprobe_rows = [\"select\", \"insert\", \"update\", \"delete\"]\n\n\
                             [limits]\ntimeout_ms = 60000\nstatement_timeout_ms = 60000\n";

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

    /// `ingot` started with stdout and stderr piped, to be signalled.
    fn spawn(&self, args: &[&str]) -> Child {
        ingot_command(self.cwd.path(), &self.db.url, self.processors.path(), args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Gives the probe a minute per call and per statement, so slow items are never timed out.
    fn allow_slow_items(&self) {
        std::fs::write(self.processors.path().join("probe.toml"), SLOW_MANIFEST).unwrap();
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
    assert_eq!(
        stderr_of(&missing).matches("No such file or directory").count(),
        1,
        "said once: {}",
        stderr_of(&missing)
    );
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

/// The read commands do not check the schema before reading (one round trip less on a new
/// connection): on a database without it, they apply it and read.
#[tokio::test]
async fn read_commands_apply_a_missing_schema_before_reading() {
    let db = TestDb::empty().await;
    let processors = Processors::new(&[("probe", &guest("probe"), Some(PROBE_MANIFEST))]);
    let cwd = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| ingot(cwd.path(), &db.url, processors.path(), args);
    let missing = "00000000-0000-0000-0000-000000000000";
    for (args, expected) in [
        (vec!["batch", "list", "--json"], 0),
        (vec!["batch", "show", missing, "--json"], 1),
        (vec!["logs", missing], 1),
    ] {
        let newest = "SELECT coalesce(max(version), 0) FROM _sqlx_migrations";
        sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public").execute(&db.pool).await.unwrap();
        let output = cli(&args);
        assert_eq!(code(&output), expected, "{args:?}: {}", stderr_of(&output));
        if expected == 0 {
            assert_eq!(json_of(&output), json!([]));
        } else {
            assert!(stderr_of(&output).contains("does not exist (see `ingot batch list`)"), "{args:?}");
        }
        assert!(db.scalar_i64(newest).await > 0, "{args:?}: the schema was not applied");
    }
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

    // Compressed, in Windows-1252, semicolon-separated, on stdin: the options and the magic
    // bytes say how to read it, and source_info records what was found.
    let (latin, _, _) = encoding_rs::WINDOWS_1252.encode("mode;name\nok;Müller\nok;café\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&latin).unwrap();
    let gz = gz.finish().unwrap();
    let mut child = ingot_command(
        cli.cwd.path(),
        &cli.db.url,
        cli.processors.path(),
        &["run", "probe", "-", "--format", "csv", "--encoding", "windows-1252", "--json"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(summary["total"], 2);
    let info = &summary["source_info"];
    assert_eq!(
        (&info["compression"], &info["encoding"], &info["delimiter"]),
        (&json!("gzip"), &json!("windows-1252"), &json!(";"))
    );
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT source_data->>'name' FROM import_batch_items i JOIN import_batches b ON b.id = i.batch_id \
         WHERE b.source_info->>'compression' = 'gzip' ORDER BY item_index",
    )
    .fetch_all(&cli.db.pool)
    .await
    .unwrap();
    assert_eq!(names, ["Müller", "café"]);
    let wrong = cli.run(&["run", "probe", "-", "--format", "json", "--delimiter", ";"]);
    assert_eq!(code(&wrong), 1);
    assert!(stderr_of(&wrong).contains("--delimiter applies to CSV"), "{}", stderr_of(&wrong));
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

    // The same rows gzipped (a hundredth of the size): decompressed as a stream, never whole.
    let gz = cli.cwd.path().join("big.csv.gz");
    {
        let mut encoder =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
        std::io::copy(&mut std::fs::File::open(&path).unwrap(), &mut encoder).unwrap();
        encoder.finish().unwrap();
    }
    let mut command = ingot_command(
        cli.cwd.path(),
        &cli.db.url,
        cli.processors.path(),
        &["batch", "create", "probe", gz.to_str().unwrap()],
    );
    let child = command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    let (status, gz_peak) = wait_measuring_peak_rss(child);
    assert!(status.success());
    assert!(gz_peak < 80 << 20, "peak RSS {} MB for the gzipped {} MB file", gz_peak >> 20, size >> 20);
    assert_eq!(cli.db.scalar_i64("SELECT count(*) FROM import_batch_items").await, 200_000);
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

    // What a newcomer's psql or own tool connects with: the URL, and psql opened on it.
    let url = embedded(&["db", "url"]);
    assert_eq!(code(&url), 0, "{}", stderr_of(&url));
    let url = String::from_utf8(url.stdout).unwrap().trim().to_owned();
    assert!(url.starts_with("postgres"), "{url}");
    let reached = std::process::Command::new("psql")
        .args([url.as_str(), "-Atc", "SELECT count(*) FROM import_batches"])
        .output()
        .unwrap();
    let count = String::from_utf8_lossy(&reached.stdout);
    assert_eq!(count.trim(), "1", "the URL reaches the database the run wrote to: {}", stderr_of(&reached));
    let psql = embedded(&["db", "psql", "-Atc", "SELECT status FROM import_batches"]);
    assert_eq!(code(&psql), 0, "{}", stderr_of(&psql));
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "completed");

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

/// Sends SIGINT to a child, as Ctrl-C on its terminal would.
#[allow(unsafe_code)]
fn sigint(child: &Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT) }, 0);
}

/// Items that take about 50 ms each: long enough to interrupt a run between them.
fn slow_items(n: usize) -> Vec<Value> {
    vec![json!({"mode": "sql", "sql": "SELECT pg_sleep(0.05)"}); n]
}

/// Waits until the count `sql` returns reaches `at_least`, failing if `child` exits first.
async fn wait_for_count(db: &TestDb, sql: &str, at_least: i64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.scalar_i64(sql).await < at_least {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("ingot exited ({status}) before `{sql}` reached {at_least}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`{sql}` never reached {at_least}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a graceful stop must leave: exit code 5, the resume command on stderr, and a summary
/// whose pending items are still pending in the database, none of them half-done; the batch
/// reads `interrupted` (nobody works on it), its time has stopped, and what it suggests is the
/// resume, not a reprocess.
async fn assert_interrupted(cli: &Cli, output: &std::process::Output, id: &str) {
    let db = &cli.db;
    assert_eq!(output.status.code(), Some(5), "{:?}: {}", output.status, stderr_of(output));
    assert!(
        stderr_of(output).contains(&format!("resume with `ingot batch process {id}`")),
        "{}",
        stderr_of(output)
    );
    let summary = json_of(output);
    assert_eq!(summary["status"], "interrupted", "{summary}");
    let shown = json_of(&cli.run(&["batch", "show", id, "--json"]));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = json_of(&cli.run(&["batch", "show", id, "--json"]));
    assert_eq!(later["status"], "interrupted");
    assert_eq!(shown["duration_ms"], later["duration_ms"], "an interrupted batch's time went on");
    let text = String::from_utf8(cli.run(&["batch", "show", id]).stdout).unwrap();
    assert!(
        text.contains("was interrupted") && text.contains(&format!("ingot batch process {id}")),
        "{text}"
    );
    assert!(!text.contains("still processing") && !text.contains("--failed-only"), "{text}");
    let count = |status: &str| {
        format!("SELECT count(*) FROM import_batch_items WHERE batch_id = '{id}' AND status = '{status}'")
    };
    let pending = db.scalar_i64(&count("pending")).await;
    assert!(pending > 0, "the stop left nothing pending: {summary}");
    assert_eq!(summary["pending"].as_i64(), Some(pending));
    assert_eq!(summary["completed"].as_i64(), Some(db.scalar_i64(&count("completed")).await));
    assert_eq!(summary["total"].as_i64(), Some(pending + db.scalar_i64(&count("completed")).await));
}

/// Resumes batch `id` and checks it ends completed with every item run exactly once.
async fn assert_resume_finishes(cli: &Cli, id: &str, total: i64) {
    let resumed = cli.run(&["batch", "process", id, "--json"]);
    assert_eq!(code(&resumed), 0, "{}", stderr_of(&resumed));
    let summary = json_of(&resumed);
    assert_eq!(summary["status"], "completed");
    assert_eq!((summary["completed"].as_i64(), summary["pending"].as_i64()), (Some(total), Some(0)));
    let rerun = format!("SELECT count(*) FROM import_batch_items WHERE batch_id = '{id}' AND attempts <> 1");
    assert_eq!(cli.db.scalar_i64(&rerun).await, 0, "an item completed before the stop ran again");
}

// Ctrl-C on `ingot run` is a pause, not a loss: exit 5, the command to resume, and a resume that
// finishes the batch without running a completed item again.
#[tokio::test]
async fn sigint_during_run_exits_5_with_the_resume_command_and_the_resume_finishes_the_batch() {
    let cli = Cli::new().await;
    cli.allow_slow_items();
    let file = cli.write("slow.ndjson", &slow_items(40));
    let mut child = cli.spawn(&["run", "probe", &file, "--workers", "1", "--json"]);
    let done = "SELECT count(*) FROM import_batch_items WHERE status = 'completed'";
    wait_for_count(&cli.db, done, 3, &mut child).await;
    sigint(&child);
    let output = child.wait_with_output().unwrap();
    let id: String =
        sqlx::query_scalar("SELECT id::text FROM import_batches").fetch_one(&cli.db.pool).await.unwrap();
    assert_interrupted(&cli, &output, &id).await;
    assert_resume_finishes(&cli, &id, 40).await;
}

// The same promise for `ingot reprocess`, whose new batch is interrupted and resumed like any other.
#[tokio::test]
async fn sigint_during_reprocess_exits_5_with_the_resume_command_and_the_resume_finishes_the_batch() {
    let cli = Cli::new().await;
    cli.allow_slow_items();
    let file = cli.write("slow.ndjson", &slow_items(40));
    let parent = cli.run(&["run", "probe", &file, "--workers", "2", "--json"]);
    assert_eq!(code(&parent), 0, "{}", stderr_of(&parent));
    let parent_id = json_of(&parent)["batch_id"].as_str().unwrap().to_owned();
    let mut child = cli.spawn(&["reprocess", &parent_id, "--workers", "1", "--json"]);
    let done = format!(
        "SELECT count(*) FROM import_batch_items i JOIN import_batches b ON b.id = i.batch_id
         WHERE b.parent_batch_id = '{parent_id}' AND i.status = 'completed'"
    );
    wait_for_count(&cli.db, &done, 3, &mut child).await;
    sigint(&child);
    let output = child.wait_with_output().unwrap();
    let id: String =
        sqlx::query_scalar("SELECT id::text FROM import_batches WHERE parent_batch_id = $1::uuid")
            .bind(&parent_id)
            .fetch_one(&cli.db.pool)
            .await
            .unwrap();
    assert_interrupted(&cli, &output, &id).await;
    assert_resume_finishes(&cli, &id, 40).await;
}

// Whether a processing batch is being worked on is the database's to say, not a guess: while a
// run works on it, it reads `processing`; the moment its host dies (kill -9, no chance to write
// anything), it reads `interrupted`, its time stops, and the lists filter on it.
#[tokio::test]
async fn a_batch_whose_host_died_reads_interrupted_and_one_being_worked_on_reads_processing() {
    let cli = Cli::new().await;
    cli.allow_slow_items();
    let file = cli.write("slow.ndjson", &slow_items(60));
    let mut child = cli.spawn(&["run", "probe", &file, "--workers", "1", "--json"]);
    let done = "SELECT count(*) FROM import_batch_items WHERE status = 'completed'";
    wait_for_count(&cli.db, done, 3, &mut child).await;
    let id: String =
        sqlx::query_scalar("SELECT id::text FROM import_batches").fetch_one(&cli.db.pool).await.unwrap();
    let live = json_of(&cli.run(&["batch", "show", &id, "--json"]));
    assert_eq!(live["status"], "processing", "{live}");
    let text = String::from_utf8(cli.run(&["batch", "show", &id]).stdout).unwrap();
    assert!(text.contains("is being processed by another worker or host"), "{text}");
    let listed = |status: &str| {
        let list = json_of(&cli.run(&["batch", "list", "--status", status, "--json"]));
        list.as_array()
            .unwrap()
            .iter()
            .map(|b| b["batch_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed("processing"), vec![id.clone()]);
    assert!(listed("interrupted").is_empty());

    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let shown = json_of(&cli.run(&["batch", "show", &id, "--json"]));
        if shown["status"] == "interrupted" || Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead["status"], "interrupted", "{dead}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = json_of(&cli.run(&["batch", "show", &id, "--json"]));
    assert_eq!(dead["duration_ms"], later["duration_ms"], "a dead batch's time went on");
    assert_eq!(listed("interrupted"), vec![id.clone()]);
    assert!(listed("processing").is_empty());
    // The stored status is unchanged: a resume takes it up like any interrupted batch.
    assert_resume_finishes(&cli, &id, 60).await;
}

// The first Ctrl-C waits for the item in flight however long it takes; the second must not:
// the process ends at once, and the abandoned item is simply pending for the resume.
#[tokio::test]
async fn a_second_sigint_exits_at_once_and_the_item_in_flight_stays_pending_for_the_resume() {
    let cli = Cli::new().await;
    cli.allow_slow_items();
    // Without this PostgreSQL would notice the vanished host only when the sleep ends, 20 s on,
    // holding the item's row lock until then.
    cli.db
        .apply(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET client_connection_check_interval = 100', \
             current_database()); END $$",
        )
        .await;
    // Only the first attempt sleeps (a sequence does not roll back), so the resume is quick.
    let slow = "INSERT INTO probe_rows (label) SELECT 'slow' \
                FROM pg_sleep(CASE WHEN nextval('probe_rows_id_seq') = 1 THEN 20 ELSE 0 END)";
    let file = cli.write("long.ndjson", &[json!({"mode": "sql", "sql": slow}), json!({"mode": "ok"})]);
    let mut child = cli.spawn(&["run", "probe", &file, "--workers", "1", "--json"]);
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                    AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE '%pg_sleep(CASE%'";
    wait_for_count(&cli.db, sleeping, 1, &mut child).await;

    sigint(&child);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "the first SIGINT must let the item in flight finish");
    assert_eq!(cli.db.scalar_i64(sleeping).await, 1, "the item in flight is still running");

    sigint(&child);
    let second = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if second.elapsed() > Duration::from_secs(2) {
            let _ = child.kill();
            panic!("a second SIGINT did not end ingot within 2 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(5), "{:?}: {}", output.status, stderr_of(&output));
    assert!(stderr_of(&output).contains("finishing the items in flight"), "{}", stderr_of(&output));

    let id: String =
        sqlx::query_scalar("SELECT id::text FROM import_batches").fetch_one(&cli.db.pool).await.unwrap();
    let first: String = sqlx::query_scalar("SELECT status FROM import_batch_items WHERE item_index = 0")
        .fetch_one(&cli.db.pool)
        .await
        .unwrap();
    assert_eq!(first, "pending");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli.db.scalar_i64(sleeping).await > 0 {
        assert!(Instant::now() < deadline, "the abandoned item's transaction never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cli.db.scalar_i64("SELECT count(*) FROM probe_rows").await, 0, "its write died with it");
    assert_resume_finishes(&cli, &id, 2).await;
    assert_eq!(cli.db.scalar_i64("SELECT count(*) FROM probe_rows WHERE label = 'slow'").await, 1);
}

/// The summary's keys as README lists them (plus `dry_run`, on dry runs only).
const SUMMARY_KEYS: [&str; 24] = [
    "batch_id",
    "batch_type",
    "status",
    "total",
    "completed",
    "failed",
    "skipped",
    "pending",
    "atomic",
    "parent_batch_id",
    "after_batch_id",
    "retry_count",
    "processor_digest",
    "error_message",
    "source_info",
    "created_at",
    "started_at",
    "completed_at",
    "duration_ms",
    "items_per_second",
    "top_errors",
    "top_errors_more",
    "reprocessed_by",
    "failures_fixed",
];

/// A log line's keys, as `store::logs::LogLine` serialises them.
const LOG_LINE_KEYS: [&str; 8] =
    ["id", "item_index", "level", "source", "message", "details", "created_at", "item_data"];

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().map(String::as_str).collect()
}

fn key_set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

// Scripts read these documents: every documented key is there, null or not, and nothing else is,
// in every command that prints one.
#[tokio::test]
async fn every_json_document_has_exactly_its_documented_keys() {
    let cli = Cli::new().await;
    let summary = key_set(&SUMMARY_KEYS);
    let file = cli.write(
        "mixed.ndjson",
        &[
            json!({"mode": "log", "lines": 1, "message": "hello"}),
            json!({"mode": "invalid", "code": "bad", "message": "no"}),
        ],
    );
    let created = cli.run(&["batch", "create", "probe", &file, "--json"]);
    assert_eq!(code(&created), 0, "{}", stderr_of(&created));
    let created = json_of(&created);
    assert_eq!(keys(&created), summary, "batch create --json");
    let id = created["batch_id"].as_str().unwrap().to_owned();

    let processed = cli.run(&["batch", "process", &id, "--json", "--workers", "1"]);
    assert_eq!(code(&processed), 3, "{}", stderr_of(&processed));
    assert_eq!(keys(&json_of(&processed)), summary, "batch process --json");
    let shown = json_of(&cli.run(&["batch", "show", &id, "--json"]));
    assert_eq!(keys(&shown), summary, "batch show --json");
    assert_eq!(keys(&shown["top_errors"][0]), key_set(&["code", "message", "count"]), "{shown}");

    let reprocessed = cli.run(&["reprocess", &id, "--failed-only", "--json"]);
    assert_eq!(code(&reprocessed), 3, "{}", stderr_of(&reprocessed));
    assert_eq!(keys(&json_of(&reprocessed)), summary, "reprocess --json");

    let ok = cli.write("ok.ndjson", &[json!({"mode": "ok"})]);
    let run = cli.run(&["run", "probe", &ok, "--json"]);
    assert_eq!(code(&run), 0, "{}", stderr_of(&run));
    let run = json_of(&run);
    assert_eq!(keys(&run), summary, "run --json");
    let ok_id = run["batch_id"].as_str().unwrap().to_owned();
    let nothing = cli.run(&["reprocess", &ok_id, "--failed-only", "--json"]);
    assert_eq!(code(&nothing), 0, "{}", stderr_of(&nothing));
    let nothing = json_of(&nothing);
    assert_eq!(keys(&nothing), key_set(&["reprocessed", "reason", "batch_id"]), "{nothing}");
    assert_eq!(
        (&nothing["reprocessed"], nothing["batch_id"].as_str()),
        (&json!(false), Some(ok_id.as_str()))
    );

    let dry = json_of(&cli.run(&["run", "probe", &ok, "--dry-run", "--json", "--allow-duplicate"]));
    let mut dry_keys = summary.clone();
    dry_keys.insert("dry_run");
    assert_eq!(keys(&dry), dry_keys, "run --dry-run --json");

    let listed = json_of(&cli.run(&["batch", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    for batch in listed.as_array().unwrap() {
        assert_eq!(keys(batch), summary, "batch list --json");
    }

    let lines = json_of(&cli.run(&["logs", &id, "--json"]));
    let lines = lines.as_array().unwrap();
    assert!(lines.iter().any(|l| l["item_data"].is_object()), "a failed item's line: {lines:?}");
    assert!(lines.iter().any(|l| l["item_data"].is_null()), "a line without item data: {lines:?}");
    for line in lines {
        assert_eq!(keys(line), key_set(&LOG_LINE_KEYS), "logs --json");
    }
}

/// How a command's output streams are attached in [`on_terminal`].
#[derive(Clone, Copy, PartialEq)]
enum Terminal {
    /// stderr on the pseudo-terminal, stdout piped.
    Stderr,
    /// stdout on the pseudo-terminal, stderr piped.
    Stdout,
}

/// What `ingot` wrote on a pseudo-terminal of 24×120 (attached as `on`), and its other output.
#[allow(unsafe_code)]
fn on_terminal(cli: &Cli, args: &[&str], on: Terminal) -> (String, std::process::Output) {
    // Every descriptor is close-on-exec, so no other test's child keeps the terminal open.
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(master >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor is new and owned by nothing else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt, unlockpt and ptsname_r on our own master, with the buffer's true length.
    unsafe {
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        assert_eq!(libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()), 0);
    }
    // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_str().unwrap().to_owned();
    let slave =
        std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(&path).unwrap();
    let size = libc::winsize { ws_row: 24, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    assert_eq!(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) }, 0);
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut seen = Vec::new();
        let mut chunk = [0_u8; 4096];
        // The read fails (EIO) once the last descriptor of the terminal's other side closes.
        while let Ok(n @ 1..) = master.read(&mut chunk) {
            seen.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let mut command = ingot_command(cli.cwd.path(), &cli.db.url, cli.processors.path(), args);
    command.env("TERM", "xterm-256color").stdin(Stdio::null());
    let tty = Stdio::from(slave);
    match on {
        Terminal::Stderr => command.stderr(tty).stdout(Stdio::piped()),
        Terminal::Stdout => command.stdout(tty).stderr(Stdio::piped()),
    };
    let child = command.spawn().unwrap();
    // The command holds the terminal's descriptor: drop it so the child's are the last.
    drop(command);
    let output = child.wait_with_output().unwrap();
    (reader.join().unwrap(), output)
}

// The bar is for people watching a long run, and must never mix into JSON, a log file or a pipe.
#[tokio::test]
async fn a_progress_bar_appears_only_on_a_terminal_for_runs_over_a_second_and_never_with_json() {
    let cli = Cli::new().await;
    cli.allow_slow_items();
    let slow = cli.write("slow.ndjson", &slow_items(40));
    // The same file, run again and again.
    let run = ["run", "probe", slow.as_str(), "--workers", "1", "--allow-duplicate"];

    let stdout = |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).into_owned();
    let (terminal, output) = on_terminal(&cli, &run, Terminal::Stderr);
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    assert!(terminal.contains("/40 items"), "no progress bar on the terminal: {terminal:?}");
    // The rate is this run's average: 40 items of 50 ms on one worker make at most 20 a second,
    // never the burst a first tick used to show.
    let pieces: Vec<&str> = terminal.split("/s · eta").collect();
    let rates: Vec<u64> = pieces[..pieces.len() - 1]
        .iter()
        .filter_map(|before| {
            let digits: String = before
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            digits.parse().ok()
        })
        .collect();
    assert!(!rates.is_empty() && rates.iter().all(|&r| r <= 25), "rates shown: {rates:?}");

    let (terminal, output) = on_terminal(&cli, &[&run[..], &["--json"]].concat(), Terminal::Stderr);
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    assert_eq!(json_of(&output)["completed"], 40);
    assert!(!terminal.contains("items") && !terminal.contains('\u{1b}'), "a bar with --json: {terminal:?}");

    let (terminal, output) = on_terminal(&cli, &run, Terminal::Stdout);
    assert_eq!(code(&output), 0, "{terminal}");
    let stderr = stderr_of(&output);
    assert!(!stderr.contains("items") && !stderr.contains('\u{1b}'), "a bar on a pipe: {stderr:?}");
    assert!(!terminal.contains("/40 items"), "a bar on stdout: {terminal:?}");

    let quick = cli.write("quick.ndjson", &[json!({"mode": "ok"})]);
    let (terminal, output) = on_terminal(&cli, &["run", "probe", &quick], Terminal::Stderr);
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    assert!(!terminal.contains("items"), "a bar for a run under a second: {terminal:?}");
}

#[allow(unsafe_code)]
fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

// PostgreSQL refuses to run as root, and a private database must not be reachable over the
// network: as root the embedded cluster runs as `postgres`, and always on a socket in its folder.
#[tokio::test]
async fn the_embedded_cluster_listens_on_its_own_socket_only_and_as_root_runs_as_postgres() {
    let dir = support::cluster_dir();
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let _stop = support::StopCluster(dir.path(), processors.path());
    let migrate = support::embedded_command(dir.path(), processors.path(), &["migrate"]).output().unwrap();
    assert_eq!(code(&migrate), 0, "{}", stderr_of(&migrate));
    let pg = dir.path().join(".ingot/pg");
    let socket = pg.join("run/.s.PGSQL.5432");
    let socket_type = std::fs::metadata(&socket)
        .unwrap_or_else(|e| panic!("no socket at {}: {e}", socket.display()))
        .file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&socket_type), "{} is no socket", socket.display());

    let options =
        sqlx::postgres::PgConnectOptions::new().socket(pg.join("run")).username("ingot").database("ingot");
    let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let listen: String = sqlx::query_scalar("SHOW listen_addresses").fetch_one(&mut conn).await.unwrap();
    assert_eq!(listen, "", "the embedded cluster listens on TCP");
    conn.close().await.unwrap();

    // Run as an ordinary user, the cluster is that user's: only the socket part applies.
    if running_as_root() {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let postgres_uid = passwd
            .lines()
            .find_map(|l| l.strip_prefix("postgres:"))
            .and_then(|rest| rest.split(':').nth(1))
            .expect("a postgres system user");
        let pid_file = std::fs::read_to_string(pg.join("data/postmaster.pid")).unwrap();
        let pid = pid_file.lines().next().unwrap().trim();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uids: Vec<&str> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .expect("a Uid line")
            .split_whitespace()
            .collect();
        assert_eq!(uids, [postgres_uid; 4], "the postmaster (pid {pid}) runs as uid {uids:?}");
        assert!(
            stderr_of(&migrate).contains("runs as the `postgres` system user"),
            "{}",
            stderr_of(&migrate)
        );
    }
}

/// `ingot batch cancel`: a running batch takes no new item from that moment (the one in flight
/// finishes), its run ends `cancelled` with exit 4, and the batch is final: processing it again
/// exits 1 saying so and processes nothing. A pending batch is cancelled before any item runs;
/// cancelling twice says so; a completed batch cannot be cancelled.
#[tokio::test]
async fn a_cancelled_batch_takes_no_new_item_and_stays_cancelled() {
    let cli = Cli::new().await;
    cli.allow_slow_items();
    let file = cli.write("slow.ndjson", &slow_items(40));
    let mut child = cli.spawn(&["run", "probe", &file, "--workers", "1", "--json"]);
    let done = "SELECT count(*) FROM import_batch_items WHERE status = 'completed'";
    wait_for_count(&cli.db, done, 3, &mut child).await;
    let id: String =
        sqlx::query_scalar("SELECT id::text FROM import_batches").fetch_one(&cli.db.pool).await.unwrap();
    let cancel = cli.run(&["batch", "cancel", &id, "--reason", "wrong file"]);
    assert_eq!(code(&cancel), 0, "{}", stderr_of(&cancel));
    let at_cancel = cli.db.scalar_i64(done).await;
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 4, "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(summary["status"], "cancelled");
    let completed = cli.db.scalar_i64(done).await;
    assert!(completed <= at_cancel + 1, "only the item in flight finished: {at_cancel} then {completed}");
    assert_eq!(
        cli.db.scalar_i64("SELECT count(*) FROM import_batch_items WHERE status = 'pending'").await,
        40 - completed
    );
    assert!(completed < 40);

    let again = cli.run(&["batch", "process", &id]);
    assert_eq!(code(&again), 1);
    assert!(stderr_of(&again).contains("was cancelled (wrong file)"), "{}", stderr_of(&again));
    assert_eq!(cli.db.scalar_i64(done).await, completed, "nothing ran");
    let twice = cli.run(&["batch", "cancel", &id]);
    assert_eq!(code(&twice), 0);
    assert!(String::from_utf8_lossy(&twice.stdout).contains("already cancelled"));
    let show = cli.run(&["batch", "show", &id, "--json"]);
    assert_eq!(json_of(&show)["status"], "cancelled");

    let pending = cli.write("pending.ndjson", &[json!({"mode": "ok"}), json!({"mode": "ok"})]);
    let created =
        support::created_batch(&cli.run(&["batch", "create", "probe", &pending, "--json"])).to_string();
    let cancel = cli.run(&["batch", "cancel", &created]);
    assert!(String::from_utf8_lossy(&cancel.stdout).contains("its 2 pending items"), "{cancel:?}");
    // A worker never takes either up.
    let mut conn = cli.db.pool.acquire().await.unwrap();
    let next = ingot::store::batches::next_runnable(&mut conn, &["probe".to_owned()], &[]).await.unwrap();
    assert_eq!(next, None, "a worker would take a cancelled batch up");

    let finished = cli.write("done.ndjson", &[json!({"mode": "ok"})]);
    let run = json_of(&cli.run(&["run", "probe", &finished, "--json"]));
    let batch = run["batch_id"].as_str().unwrap();
    let refused = cli.run(&["batch", "cancel", batch]);
    assert_eq!(code(&refused), 1);
    assert!(stderr_of(&refused).contains("has completed"), "{}", stderr_of(&refused));
}

/// `--max-failures` and `--max-failure-rate` (a share or a percentage) fail the batch with exit 4
/// once exceeded; a rate that is no share of the items is bad usage.
#[tokio::test]
async fn failure_thresholds_from_the_command_line_fail_the_batch_with_exit_4() {
    let cli = Cli::new().await;
    let items: Vec<Value> =
        (0..10).map(|i| json!({"mode": if i % 2 == 0 { "invalid" } else { "ok" }})).collect();
    let file = cli.write("half.ndjson", &items);
    for threshold in [["--max-failures", "3"], ["--max-failure-rate", "25%"], ["--max-failure-rate", "0.25"]]
    {
        let output = cli.run(&[
            "run",
            "probe",
            &file,
            "--workers",
            "1",
            "--json",
            "--allow-duplicate",
            threshold[0],
            threshold[1],
        ]);
        assert_eq!(code(&output), 4, "{threshold:?}: {}", stderr_of(&output));
        assert_eq!(json_of(&output)["status"], "failed");
    }
    let output = cli.run(&["run", "probe", &file, "--json", "--allow-duplicate", "--max-failures", "5"]);
    assert_eq!(code(&output), 3, "5 failed is not more than 5: {}", stderr_of(&output));
    let bad = cli.run(&["run", "probe", &file, "--max-failure-rate", "150%"]);
    assert_eq!(code(&bad), 2);
    assert!(stderr_of(&bad).contains("at most 1"), "{}", stderr_of(&bad));
}

/// Retention. `batch prune --older-than` deletes the ended batches created before that age, with
/// their items, log lines and counters, in chunks; never a pending one or a newer one; `--type`
/// and `--keep-failed` narrow it and `--dry-run` deletes nothing; a reprocess of a pruned batch
/// keeps its items. `batch purge-source` removes the source data of completed items only, and a
/// reprocess of every item leaves those out.
#[tokio::test]
async fn retention_prunes_old_ended_batches_and_purges_source_data() {
    let cli = Cli::new().await;
    let count = |sql: String| {
        let db = &cli.db;
        async move { db.scalar_i64(&sql).await }
    };
    let run = |name: &str, items: Vec<Value>| {
        let file = cli.write(name, &items);
        json_of(&cli.run(&["run", "probe", &file, "--json"]))["batch_id"].as_str().unwrap().to_owned()
    };
    let big = run("big.ndjson", (0..6_000).map(|i| json!({"mode": "log", "n": i})).collect());
    let failed = run("failed.ndjson", vec![json!({"mode": "invalid", "code": "bad"}), json!({"mode": "ok"})]);
    let child = json_of(&cli.run(&["reprocess", &failed, "--failed-only", "--json"]))["batch_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = cli.write("pending.ndjson", &[json!({"mode": "ok"})]);
    let pending =
        support::created_batch(&cli.run(&["batch", "create", "probe", &other, "--json"])).to_string();
    let recent = run(
        "recent.ndjson",
        vec![json!({"mode": "ok", "secret": "x"}), json!({"mode": "invalid", "secret": "y"})],
    );
    cli.db
        .apply(&format!(
            "UPDATE import_batches SET created_at = now() - interval '100 days' WHERE id IN ('{big}', '{failed}', '{pending}')"
        ))
        .await;
    assert!(count(format!("SELECT count(*) FROM import_logs WHERE batch_id = '{big}'")).await >= 6_000);

    let ids = |output: &std::process::Output| -> Vec<String> {
        let pruned = json_of(output);
        pruned["batches"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    let dry = cli.run(&["batch", "prune", "--older-than", "90d", "--keep-failed", "--dry-run", "--json"]);
    assert_eq!(ids(&dry), [big.as_str()]);
    assert_eq!(count("SELECT count(*) FROM import_batches".into()).await, 5, "a dry run deletes nothing");

    let kept_failed = cli.run(&["batch", "prune", "--older-than", "90d", "--keep-failed", "--json"]);
    assert_eq!(code(&kept_failed), 0, "{}", stderr_of(&kept_failed));
    assert_eq!(ids(&kept_failed), [big.as_str()]);
    assert_eq!(json_of(&kept_failed)["items"], 6_000);
    for table in ["import_batch_items", "import_logs", "import_batch_counters", "import_batches"] {
        let column = if table == "import_batches" { "id" } else { "batch_id" };
        assert_eq!(
            count(format!("SELECT count(*) FROM {table} WHERE {column} = '{big}'")).await,
            0,
            "{table}"
        );
    }
    let typed = cli.run(&["batch", "prune", "--older-than", "90d", "--type", "other", "--json"]);
    assert_eq!(ids(&typed), Vec::<String>::new());
    let all = cli.run(&["batch", "prune", "--older-than", "90d", "--json"]);
    assert_eq!(ids(&all), [failed.as_str()], "neither the pending batch nor the newer ones");
    let (parent, items): (Option<uuid::Uuid>, i64) = sqlx::query_as(&format!(
        "SELECT parent_batch_id, (SELECT count(*) FROM import_batch_items WHERE batch_id = b.id) FROM import_batches b WHERE id = '{child}'"
    ))
    .fetch_one(&cli.db.pool)
    .await
    .unwrap();
    assert_eq!((parent, items), (None, 1), "the reprocess keeps its items, not the link");
    assert_eq!(count(format!("SELECT count(*) FROM import_batches WHERE id = '{pending}'")).await, 1);
    let bad_age = cli.run(&["batch", "prune", "--older-than", "90 days"]);
    assert_eq!(code(&bad_age), 2);

    let purge = cli.run(&["batch", "purge-source", &recent, "--json"]);
    assert_eq!(code(&purge), 0, "{}", stderr_of(&purge));
    assert_eq!(json_of(&purge)["purged_items"], 1);
    let secrets: Vec<(String, Option<String>, bool)> = sqlx::query_as(&format!(
        "SELECT status, source_data->>'secret', source_purged_at IS NOT NULL FROM import_batch_items
         WHERE batch_id = '{recent}' ORDER BY item_index"
    ))
    .fetch_all(&cli.db.pool)
    .await
    .unwrap();
    assert_eq!(secrets, [("completed".into(), None, true), ("failed".into(), Some("y".into()), false)]);
    let shown = json_of(&cli.run(&["batch", "show", &recent, "--json"]));
    assert_eq!(
        (shown["completed"].as_i64(), shown["source_info"]["source_purged_items"].as_i64()),
        (Some(1), Some(1))
    );
    let again = json_of(&cli.run(&["reprocess", &recent, "--json"]));
    assert_eq!(again["total"], 1, "the purged item is not run again: {again}");
    let missing = cli.run(&["batch", "purge-source", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(code(&missing), 1);
}

/// What an atomic batch's probe items may touch: their rows, and a reference table they read.
const ATOMIC_MANIFEST: &str = "[grants]\nprobe_rows = [\"select\", \"insert\"]\nprobe_ref = [\"select\"]\n\n\
                               [limits]\ntimeout_ms = 60000\nstatement_timeout_ms = 60000\n";

impl Cli {
    /// A Cli whose probe may read `probe_ref`, which starts empty.
    async fn atomic() -> Cli {
        let cli = Cli::new().await;
        cli.db.apply("CREATE TABLE probe_ref (n int)").await;
        std::fs::write(cli.processors.path().join("probe.toml"), ATOMIC_MANIFEST).unwrap();
        cli
    }

    async fn rows(&self) -> i64 {
        self.db.scalar_i64("SELECT count(*) FROM probe_rows").await
    }
}

/// `n` items that each insert a row (taking `sleep` seconds); those in `needing_ref` divide by
/// the number of rows in probe_ref, so they fail until it has one.
fn atomic_items(n: usize, needing_ref: &[usize], sleep: f64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let check = if needing_ref.contains(&i) { " WHERE 1 / (SELECT count(*) FROM probe_ref) = 1" } else { "" };
            json!({"mode": "sql", "sql": format!("INSERT INTO probe_rows (label) SELECT 'row{i}' FROM pg_sleep({sleep}){check}")})
        })
        .collect()
}

/// The "item failed" lines of a batch's items: exactly one per failed item, whatever happened.
async fn item_failure_lines(db: &TestDb, id: &str) -> i64 {
    db.scalar_i64(&format!(
        "SELECT count(*) FROM import_logs WHERE batch_id = '{id}' AND source = 'host' AND message LIKE 'item failed%'"
    ))
    .await
}

// All or nothing: one failed item and no item's writes are kept; the failures are recorded and
// explained, the rest is pending; once the cause is fixed, the batch runs again as a whole.
#[tokio::test]
async fn an_atomic_batch_keeps_every_items_writes_or_none() {
    let cli = Cli::atomic().await;
    let file = cli.write("orders.ndjson", &atomic_items(30, &[7, 19], 0.0));
    let run = cli.run(&["run", "probe", &file, "--atomic", "--workers", "2", "--json"]);
    assert_eq!(code(&run), 4, "{}", stderr_of(&run));
    let summary = json_of(&run);
    let id = summary["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(summary["status"], "failed", "{summary}");
    assert_eq!(summary["atomic"], true);
    let error = summary["error_message"].as_str().unwrap();
    assert!(
        error.contains("2 of its 30 items failed") && error.contains("nothing of it was kept"),
        "{error}"
    );
    assert!(error.contains(&format!("ingot batch process {id}")), "{error}");
    assert_eq!((summary["completed"].as_i64(), summary["failed"].as_i64()), (Some(0), Some(2)), "{summary}");
    assert_eq!(summary["pending"].as_i64(), Some(28));
    assert_eq!(summary["top_errors"][0]["code"], "sql_error", "{summary}");
    assert_eq!(cli.rows().await, 0, "an atomic batch that failed kept writes");
    // The failures are explained, once each, with the item's data.
    assert_eq!(item_failure_lines(&cli.db, &id).await, 2);
    let logs = json_of(&cli.run(&["logs", &id, "--level", "error", "--json"]));
    let failed: BTreeSet<i64> =
        logs.as_array().unwrap().iter().filter_map(|l| l["item_index"].as_i64()).collect();
    assert_eq!(failed, BTreeSet::from([7, 19]), "{logs}");
    let text = String::from_utf8(cli.run(&["batch", "show", &id]).stdout).unwrap();
    assert!(text.contains(&format!("ingot batch process {id}")) && !text.contains("--failed-only"), "{text}");

    // The fix is in the reference data: the whole batch runs again, every item once.
    cli.db.apply("INSERT INTO probe_ref VALUES (1)").await;
    let again = cli.run(&["batch", "process", &id, "--json"]);
    assert_eq!(code(&again), 0, "{}", stderr_of(&again));
    let summary = json_of(&again);
    assert_eq!((summary["status"].as_str(), summary["completed"].as_i64()), (Some("completed"), Some(30)));
    assert_eq!((summary["failed"].as_i64(), summary["pending"].as_i64()), (Some(0), Some(0)), "{summary}");
    assert_eq!(cli.rows().await, 30);
    assert_eq!(cli.db.scalar_i64("SELECT count(DISTINCT label) FROM probe_rows").await, 30);
}

// With thresholds, an atomic batch keeps its valid items' writes as long as they hold, and keeps
// nothing once they are exceeded: it stops there. The manifest can make a type atomic.
#[tokio::test]
async fn an_atomic_batch_within_its_thresholds_is_kept_and_one_beyond_them_is_not() {
    let cli = Cli::atomic().await;
    let within = cli.write("within.ndjson", &atomic_items(20, &[3, 11], 0.0));
    let run = cli.run(&["run", "probe", &within, "--atomic", "--max-failures", "2", "--json"]);
    assert_eq!(code(&run), 3, "{}", stderr_of(&run));
    let summary = json_of(&run);
    let id = summary["batch_id"].as_str().unwrap().to_owned();
    assert_eq!((summary["status"].as_str(), summary["completed"].as_i64()), (Some("completed"), Some(18)));
    assert_eq!(summary["failed"].as_i64(), Some(2), "{summary}");
    assert_eq!(cli.rows().await, 18);
    // Written once, outside the batch's transaction, and not again when it committed.
    assert_eq!(item_failure_lines(&cli.db, &id).await, 2);

    std::fs::write(
        cli.processors.path().join("probe.toml"),
        format!("{ATOMIC_MANIFEST}\n[batch]\natomic = true\n"),
    )
    .unwrap();
    let beyond = cli.write("beyond.ndjson", &atomic_items(20, &[2, 5, 9], 0.0));
    let run = cli.run(&["run", "probe", &beyond, "--max-failures", "1", "--json"]);
    assert_eq!(code(&run), 4, "{}", stderr_of(&run));
    let summary = json_of(&run);
    assert_eq!(summary["atomic"], true, "the manifest made it atomic: {summary}");
    let error = summary["error_message"].as_str().unwrap();
    assert!(error.contains("max_failures (1)") && error.contains("nothing of it was kept"), "{error}");
    // It stopped at the failure that broke the threshold (item 5): item 9 never ran.
    assert_eq!((summary["failed"].as_i64(), summary["pending"].as_i64()), (Some(2), Some(18)), "{summary}");
    assert_eq!(cli.rows().await, 18, "the second batch kept something");
}

// An atomic batch stopped half-way — by a signal, or by its host dying — keeps nothing; its one
// transaction cannot be shared by a second host; and a resume runs it whole, every item once.
#[tokio::test]
async fn an_interrupted_atomic_batch_keeps_nothing_and_is_run_again_whole_by_one_host() {
    let cli = Cli::atomic().await;
    let file = cli.write("slow.ndjson", &atomic_items(40, &[], 0.05));
    let mut child = cli.spawn(&["run", "probe", &file, "--atomic", "--json"]);
    let id = loop {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id::text FROM import_batches WHERE status = 'processing'")
                .fetch_optional(&cli.db.pool)
                .await
                .unwrap();
        if let Some(id) = id {
            break id;
        }
        assert!(child.try_wait().unwrap().is_none(), "ingot ended early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A second host may not join in: the batch's one transaction is the first host's.
    let second = cli.run(&["batch", "process", &id]);
    assert_eq!(code(&second), 1, "{}", stderr_of(&second));
    assert!(stderr_of(&second).contains("another host is processing it now"), "{}", stderr_of(&second));
    sigint(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!(summary["status"], "interrupted", "{summary}");
    assert_eq!((summary["completed"].as_i64(), summary["pending"].as_i64()), (Some(0), Some(40)));
    assert_eq!(cli.rows().await, 0, "a stopped atomic batch kept writes");

    // Its host dies mid-way: nothing either.
    let mut child = cli.spawn(&["batch", "process", &id, "--json"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(cli.rows().await, 0, "a dead host's atomic batch kept writes");

    let resumed = cli.run(&["batch", "process", &id, "--json"]);
    assert_eq!(code(&resumed), 0, "{}", stderr_of(&resumed));
    assert_eq!(json_of(&resumed)["completed"].as_i64(), Some(40));
    assert_eq!(cli.db.scalar_i64("SELECT count(DISTINCT label) FROM probe_rows").await, 40);
    assert_eq!(cli.rows().await, 40);
}

/// `n` items over `keys` keys, the versions of each key side by side in the file, each upserting
/// its key's version; earlier items take longer, so that with workers racing, an earlier version
/// of a key would commit after a later one.
fn versioned_items(n: usize, keys: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let sleep = (n - i) as f64 * 0.015;
            let key = i / (n / keys);
            json!({
                "key": format!("K{key}"),
                "mode": "sql",
                "sql": format!(
                    "INSERT INTO probe_kv (k, v) SELECT 'K{key}', {i} FROM pg_sleep({sleep}) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                ),
            })
        })
        .collect()
}

// "The last row wins" for a repeated key whatever the worker count, once the manifest names the
// key: items of one key run one at a time in file order; without it, four workers race and an
// earlier row can win. Reprocessing keeps the order.
#[tokio::test]
async fn a_manifest_key_makes_the_last_row_of_a_repeated_key_win_under_four_workers() {
    let cli = Cli::new().await;
    cli.db.apply("CREATE TABLE probe_kv (k text PRIMARY KEY, v int NOT NULL)").await;
    let grants = "[grants]\nprobe_kv = [\"select\", \"insert\", \"update\"]\n\n\
                  [limits]\ntimeout_ms = 60000\nstatement_timeout_ms = 60000\n";
    let manifest = cli.processors.path().join("probe.toml");
    let (n, keys) = (24, 4);
    let file = cli.write("versions.ndjson", &versioned_items(n, keys));
    let latest: Vec<(String, i32)> =
        (0..keys).map(|k| (format!("K{k}"), ((k + 1) * (n / keys) - 1) as i32)).collect();
    let table = || async {
        sqlx::query_as::<_, (String, i32)>("SELECT k, v FROM probe_kv ORDER BY k")
            .fetch_all(&cli.db.pool)
            .await
            .unwrap()
    };

    std::fs::write(&manifest, grants).unwrap();
    let run = cli.run(&["run", "probe", &file, "--workers", "4", "--allow-duplicate", "--json"]);
    assert_eq!(code(&run), 0, "{}", stderr_of(&run));
    assert_ne!(table().await, latest, "without a key, four workers should have let an earlier row win");

    cli.db.apply("TRUNCATE probe_kv").await;
    std::fs::write(&manifest, format!("{grants}\n[batch]\nkey = \"Key\"\n")).unwrap();
    let run = cli.run(&["run", "probe", &file, "--workers", "4", "--allow-duplicate", "--json"]);
    assert_eq!(code(&run), 0, "{}", stderr_of(&run));
    assert_eq!(table().await, latest, "with the key, the last row of each key must win");
    // Its items of other keys still ran side by side: well under the one-at-a-time time.
    let id = json_of(&run)["batch_id"].as_str().unwrap().to_owned();
    let ms = json_of(&run)["duration_ms"].as_i64().unwrap();
    let serial: i64 = (0..n).map(|i| (n - i) as i64 * 15).sum();
    assert!(ms < serial * 3 / 4, "{ms} ms: keys did not run in parallel (all in a row: {serial} ms)");

    cli.db.apply("TRUNCATE probe_kv").await;
    let again = cli.run(&["reprocess", &id, "--workers", "4", "--json"]);
    assert_eq!(code(&again), 0, "{}", stderr_of(&again));
    assert_eq!(table().await, latest, "a reprocess must keep the key's order");
}
