//! What this proves: one processor whose behaviour each item chooses (`{"mode": …}`), so tests
//! can make it succeed, fail, trap, loop, allocate, print, log, run SQL (one statement, or a
//! sequence of them as one attack) or poke at the sandbox,
//! and check that the host contains every case. Batch metadata drives the batch hooks:
//! `reject`, `fail_start`, `fail_complete`, `trap_complete`.

use std::hint::black_box;
use std::io::Write as _;

use ingot_guest::prelude::*;
use ingot_guest::serde_json::{Value, json};

fn str_field<'a>(data: &'a Value, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or("")
}

fn u64_field(data: &Value, key: &str, default: u64) -> u64 {
    data.get(key).and_then(Value::as_u64).unwrap_or(default)
}

/// JSON parameters to SQL values: numbers, strings, booleans and null map directly; arrays and
/// objects go as JSON.
fn params_of(data: &Value) -> Vec<SqlValue> {
    let Some(params) = data.get("params").and_then(Value::as_array) else { return Vec::new() };
    params
        .iter()
        .map(|p| match p {
            Value::Null => SqlValue::Null,
            Value::Bool(b) => SqlValue::Bool(*b),
            Value::Number(n) => {
                n.as_i64().map_or_else(|| SqlValue::Float(n.as_f64().unwrap_or(0.0)), SqlValue::Int)
            }
            Value::String(s) => SqlValue::Text(s.clone()),
            other => SqlValue::Json(other.to_string()),
        })
        .collect()
}

fn rows_json(rows: &[Row]) -> Value {
    rows.iter()
        .map(|row| {
            row.columns()
                .iter()
                .zip(row.values())
                .map(|(c, v)| {
                    let value = match v {
                        SqlValue::Null => Value::Null,
                        SqlValue::Bool(b) => json!(b),
                        SqlValue::Int(i) => json!(i),
                        SqlValue::Float(f) => json!(f),
                        SqlValue::Text(s) | SqlValue::Uuid(s) | SqlValue::Timestamp(s) => json!(s),
                        SqlValue::Json(s) => ingot_guest::serde_json::from_str(s).unwrap_or(Value::Null),
                        SqlValue::Bytes(b) => json!(b),
                    };
                    (c.clone(), value)
                })
                .collect::<ingot_guest::serde_json::Map<String, Value>>()
                .into()
        })
        .collect::<Vec<Value>>()
        .into()
}

fn deep(n: u64) -> u64 {
    if n == 0 { 0 } else { 1 + black_box(deep(black_box(n - 1))) }
}

fn run_sql(data: &Value) -> Result<Value, ItemError> {
    let sql = str_field(data, "sql");
    run_statement(data, sql)
}

/// One statement; `<ITEM_ID>` in it is the current item's id (set by the caller).
fn run_statement(data: &Value, sql: &str) -> Result<Value, ItemError> {
    let params = params_of(data);
    if data.get("query").and_then(Value::as_bool).unwrap_or(false) {
        Ok(rows_json(&db::query(sql, &params)?))
    } else {
        Ok(json!({ "affected": db::execute(sql, &params)? }))
    }
}

/// The context's own imports, for text the SDK would have written as valid JSON.
use ingot_guest::__private::bindings::ingot::processor::context as raw;
use ingot_guest::__private::wit::LogLevel as RawLevel;

/// Logs a line whose details are `details` exactly as given (the SDK only writes valid JSON).
fn raw_log(message: &str, details: &str) {
    raw::log(RawLevel::Info, message, Some(details));
}

struct Probe;

#[ingot_guest::processor]
impl Processor for Probe {
    fn validate_batch(batch: &Batch) -> Result<(), String> {
        log::info("hook:validate_batch");
        match batch.metadata().get("reject") {
            Some(Value::String(reason)) => return Err(reason.replace("<NUL>", "\u{0}")),
            Some(_) => return Err("rejected by probe".into()),
            None => {}
        }
        Ok(())
    }

    fn on_batch_start(batch: &Batch) -> Result<(), String> {
        log::info("hook:on_batch_start");
        if let Some(details) = batch.metadata().get("start_log_details").and_then(Value::as_str) {
            raw_log("start details", details);
        }
        if let Some(sql) = batch.metadata().get("start_sql").and_then(Value::as_str) {
            db::execute(sql, &[]).map_err(|e| e.to_string())?;
        }
        if batch.metadata().get("fail_start").is_some() {
            return Err("start failed on purpose".into());
        }
        Ok(())
    }

    fn on_batch_complete(batch: &Batch, success: bool) -> Result<(), String> {
        log::info(format!(
            "hook:on_batch_complete success={success} completed={} failed={}",
            batch.completed(),
            batch.failed()
        ));
        if let Some(details) = batch.metadata().get("complete_log_details").and_then(Value::as_str) {
            raw_log("complete details", details);
        }
        if batch.metadata().get("trap_complete").is_some() {
            panic!("on_batch_complete trapped on purpose");
        }
        if batch.metadata().get("fail_complete").is_some() {
            return Err("complete failed on purpose".into());
        }
        Ok(())
    }

    fn on_item_error(item: &Item, error: &ItemError) {
        log::info(format!("hook:on_item_error index={} message={}", item.index(), error.message()));
        let data = item.json().cloned().unwrap_or(Value::Null);
        if let Some(sql) = data.get("error_hook_sql").and_then(Value::as_str) {
            let _ = db::execute(sql, &[]);
        }
        if data.get("trap_in_error_hook").is_some() {
            panic!("on_item_error trapped on purpose");
        }
    }

    fn validate_item(item: &Item) -> Result<(), ItemError> {
        let data = item.json()?;
        if str_field(data, "mode") == "invalid_in_validate" {
            return Err(ItemError::invalid("refused by validate_item").code("validate").field("mode"));
        }
        Ok(())
    }

    fn process_item(item: &Item) -> Result<Outcome, ItemError> {
        let data = item.json()?.clone();
        // "<NUL>" lets a test make the processor itself produce NUL characters.
        let message = str_field(&data, "message").replace("<NUL>", "\u{0}");
        let result: Value = match str_field(&data, "mode") {
            "" | "ok" => json!({ "echo": data }),
            "sql" => run_sql(&data)?,
            "sql_sequence" => {
                // Several statements in order, as one attack: the first error fails the item.
                let mut results = Vec::new();
                for statement in data.get("statements").and_then(Value::as_array).into_iter().flatten() {
                    let sql = statement.as_str().unwrap_or("").replace("<ITEM_ID>", item.id());
                    results.push(run_statement(&data, &sql)?);
                }
                json!({ "results": results })
            }
            "sql_then_invalid" => {
                run_sql(&data)?;
                return Err(ItemError::invalid("failed after writing").code("after_write"));
            }
            "sql_ignore_error" => {
                // Swallows the database's error and claims success: the host must still fail it.
                let _ = run_sql(&data);
                json!({ "ignored": true })
            }
            "invalid" => {
                let mut e = ItemError::invalid(message);
                if let Some(code) = data.get("code").and_then(Value::as_str) {
                    e = e.code(code.replace("<NUL>", "\u{0}"));
                }
                if let Some(field) = data.get("field").and_then(Value::as_str) {
                    e = e.field(field);
                }
                return Err(e);
            }
            "retryable" => return Err(ItemError::retryable(message).code("transient")),
            "flaky" => {
                // Fails (transiently) until the given attempt, writing first so a test can check
                // that failed attempts leave nothing behind.
                run_sql(&data)?;
                if u64::from(item.attempt()) < u64_field(&data, "until", 2) {
                    return Err(ItemError::retryable(format!("not yet (attempt {})", item.attempt()))
                        .code("transient"));
                }
                json!({ "attempt": item.attempt() })
            }
            "skip" => return Err(ItemError::skip(message).code("duplicate")),
            "panic" => panic!("probe panic: {message}"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "recurse" => json!({ "depth": deep(u64_field(&data, "depth", 100_000_000)) }),
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1_u8; 1 << 20]));
                }
            }
            "alloc_some" => {
                let mb = u64_field(&data, "mb", 1) as usize;
                let block = black_box(vec![7_u8; mb << 20]);
                json!({ "allocated_mb": block.len() >> 20 })
            }
            "file" => json!({ "result": format!("{:?}", std::fs::read_to_string(str_field(&data, "path"))) }),
            "list_dir" => {
                json!({ "result": format!("{:?}", std::fs::read_dir(str_field(&data, "path")).map(|d| d.count())) })
            }
            "write_file" => {
                json!({ "result": format!("{:?}", std::fs::write(str_field(&data, "path"), b"escaped")) })
            }
            "env" => {
                let vars = std::env::vars().count();
                json!({
                    "vars": vars,
                    "home": format!("{:?}", std::env::var("HOME")),
                    "args": std::env::args().count(),
                    "result": if vars == 0 { "Err(the environment is empty)".to_owned() } else { format!("Ok({vars} variables)") },
                })
            }
            "socket" => json!({
                "result": format!("{:?}", std::net::TcpStream::connect(str_field(&data, "addr")).map(|_| "connected")),
            }),
            "dns" => {
                use std::net::ToSocketAddrs;
                json!({ "result": format!("{:?}", "localhost:80".to_socket_addrs().map(|a| a.count())) })
            }
            "clock" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                json!({ "unix_seconds": now })
            }
            "print" => {
                // `line` bytes per write (with its line break): a flood of many small writes, or of
                // a few big ones.
                let bytes = u64_field(&data, "bytes", 100) as usize;
                let size = (u64_field(&data, "line", 100) as usize).max(1);
                let line = "x".repeat(size - 1);
                for _ in 0..bytes / size {
                    println!("{line}");
                }
                json!({ "printed": bytes })
            }
            "stderr" => {
                eprintln!("{message}");
                json!({ "printed": true })
            }
            "log" => {
                for i in 0..u64_field(&data, "lines", 1) {
                    log::with_details(log::Level::Info, format!("line {i}: {message}"), &json!({ "i": i }));
                }
                json!({ "logged": true })
            }
            "log_then_fail" => {
                log::warn(format!("about to fail: {message}"));
                run_sql(&data)?;
                return Err(ItemError::invalid("failed after logging").code("after_log"));
            }
            "big_log" => {
                log::info("y".repeat(u64_field(&data, "bytes", 1024) as usize));
                json!({ "logged": true })
            }
            "huge_outcome" => json!({ "blob": "z".repeat(u64_field(&data, "bytes", 1024) as usize) }),
            // Processed data exactly as given, e.g. JSON that PostgreSQL refuses.
            "raw_outcome" => return Ok(Outcome::new("probe", item.index()).with_json(str_field(&data, "json"))),
            // A log line with details exactly as given.
            "raw_log" => {
                raw_log("raw details", str_field(&data, "details"));
                json!({ "logged": true })
            }
            // Alternating one-byte writes to stdout and stderr, each flushed.
            "stdio_alternate" => {
                for i in 0..u64_field(&data, "writes", 1000) {
                    if i % 2 == 0 {
                        print!("o");
                        let _ = std::io::stdout().flush();
                    } else {
                        eprint!("e");
                    }
                }
                json!({ "written": true })
            }
            // Many metadata keys, each with a string value of the given size.
            "metadata_many" => {
                let value = json!("m".repeat(u64_field(&data, "bytes", 10) as usize)).to_string();
                for i in 0..u64_field(&data, "keys", 10) {
                    raw::set_metadata(&format!("key{i}"), &value).map_err(ItemError::invalid)?;
                }
                json!({ "set": true })
            }
            // A metadata value exactly as given.
            "raw_metadata" => {
                raw::set_metadata(str_field(&data, "key"), str_field(&data, "value"))
                    .map_err(|e| ItemError::invalid(e).code("metadata_refused"))?;
                json!({ "set": true })
            }
            // An error whose message and code are as long as asked.
            "big_error" => {
                return Err(ItemError::invalid("e".repeat(u64_field(&data, "message_bytes", 10) as usize))
                    .code("c".repeat(u64_field(&data, "code_bytes", 4) as usize))
                    .field("f".repeat(u64_field(&data, "field_bytes", 1) as usize)));
            }
            "metadata_set" => {
                let key = str_field(&data, "key").replace("<NUL>", "\u{0}");
                let value = match data.get("value") {
                    Some(Value::String(s)) => Value::String(s.replace("<NUL>", "\u{0}")),
                    other => other.cloned().unwrap_or(Value::Null),
                };
                metadata::set(&key, &value).map_err(ItemError::invalid)?;
                if data.get("fail").is_some() {
                    return Err(ItemError::invalid("failed after setting metadata").code("after_metadata"));
                }
                json!({ "set": true })
            }
            "metadata_get" => json!({ "value": metadata::get::<Value>(str_field(&data, "key")) }),
            other => return Err(ItemError::invalid(format!("unknown mode {other:?}")).code("unknown_mode")),
        };
        // With "must", an attempt the sandbox refused fails the item instead of being reported.
        if data.get("must").is_some()
            && let Some(outcome) = result.get("result").and_then(Value::as_str)
            && outcome.starts_with("Err")
        {
            return Err(ItemError::invalid(format!("{} was refused: {outcome}", str_field(&data, "mode")))
                .code("denied"));
        }
        Outcome::new("probe", item.index()).with_data(&result)
    }
}
