//! The sandboxed runtime: calls, limits, WASI denial, output capture, contract checks, discovery
//! and the compile cache. These run processors without a database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use ingot::context::ProcessorContext;
use ingot::context::logs::{LogLevel, LogSource};
use ingot::registry::{Registry, RegistryError};
use ingot::runtime::bindings::{ItemError, Outcome};
use ingot::runtime::cache::CacheOutcome;
use ingot::runtime::{CallError, Instance, Limits, LoadError, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use support::{guest, item, runtime};

fn probe(limits: Limits) -> Instance {
    let code = runtime().load(&guest("probe")).expect("probe loads");
    Instance::new(code, limits)
}

async fn process(
    instance: &mut Instance,
    ctx: &mut ProcessorContext,
    data: Value,
) -> Result<Result<Outcome, ItemError>, CallError> {
    instance.process_item(ctx, &item(0, data)).await
}

fn processed(outcome: Result<Result<Outcome, ItemError>, CallError>) -> Value {
    let outcome = outcome.expect("no trap").expect("no item error");
    serde_json::from_str(outcome.processed_data.as_deref().expect("processed data")).expect("JSON")
}

async fn assert_next_item_succeeds(instance: &mut Instance, ctx: &mut ProcessorContext) {
    let data = processed(process(instance, ctx, json!({"mode": "ok", "n": 1})).await);
    assert_eq!(data["echo"]["n"], 1, "the instance is usable again after a failure");
}

#[tokio::test]
async fn normal_call_returns_the_processors_outcome() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    let outcome =
        process(&mut instance, &mut ctx, json!({"mode": "ok", "name": "Ada"})).await.unwrap().unwrap();
    assert_eq!(outcome.target_table.as_deref(), Some("probe"));
    assert_eq!(outcome.target_id.as_deref(), Some("0"));
    let data: Value = serde_json::from_str(outcome.processed_data.as_deref().unwrap()).unwrap();
    assert_eq!(data["echo"]["name"], "Ada");
    // One instance serves many items.
    assert_next_item_succeeds(&mut instance, &mut ctx).await;
    assert_eq!(instance.instantiations(), 1);
}

#[tokio::test]
async fn item_errors_come_back_typed_without_replacing_the_instance() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    let result = process(
        &mut instance,
        &mut ctx,
        json!({"mode": "invalid", "message": "bad email", "code": "invalid_email", "field": "email"}),
    )
    .await;
    match result.unwrap() {
        Err(ItemError::Invalid(detail)) => {
            assert_eq!(detail.message, "bad email");
            assert_eq!(detail.code.as_deref(), Some("invalid_email"));
            assert_eq!(detail.field.as_deref(), Some("email"));
        }
        other => panic!("expected an invalid item error, got {other:?}"),
    }
    assert!(matches!(
        process(&mut instance, &mut ctx, json!({"mode": "skip"})).await.unwrap(),
        Err(ItemError::Skip(_))
    ));
    assert!(matches!(
        process(&mut instance, &mut ctx, json!({"mode": "retryable"})).await.unwrap(),
        Err(ItemError::Retryable(_))
    ));
    assert_eq!(instance.instantiations(), 1, "a returned error is not a trap");
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_the_time_limit_and_the_next_item_succeeds() {
    let mut instance = probe(Limits { timeout: Duration::from_millis(300), ..Limits::default() });
    let mut ctx = ProcessorContext::default();
    let started = Instant::now();
    let result = process(&mut instance, &mut ctx, json!({"mode": "loop"})).await;
    let elapsed = started.elapsed();
    assert_eq!(result.unwrap_err(), CallError::Timeout { limit: Duration::from_millis(300) });
    assert!(elapsed >= Duration::from_millis(290), "stopped too early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "stopped too late: {elapsed:?}");
    assert_next_item_succeeds(&mut instance, &mut ctx).await;
    assert_eq!(instance.instantiations(), 2, "the trapped store was replaced");
}

#[tokio::test]
async fn memory_bomb_is_stopped_at_the_cap() {
    let mut instance = probe(Limits { memory_bytes: 32 << 20, ..Limits::default() });
    let mut ctx = ProcessorContext::default();
    let result = process(&mut instance, &mut ctx, json!({"mode": "alloc"})).await;
    let error = result.unwrap_err();
    assert_eq!(error, CallError::MemoryLimit { limit_bytes: 32 << 20 });
    assert_eq!(error.to_string(), "processor needed more than its 32 MiB memory limit");
    assert_next_item_succeeds(&mut instance, &mut ctx).await;
}

#[tokio::test]
async fn allocation_within_the_cap_succeeds() {
    let mut instance = probe(Limits { memory_bytes: 64 << 20, ..Limits::default() });
    let mut ctx = ProcessorContext::default();
    let data = processed(process(&mut instance, &mut ctx, json!({"mode": "alloc_some", "mb": 16})).await);
    assert_eq!(data["allocated_mb"], 16);
}

#[tokio::test]
async fn deep_recursion_traps_and_the_host_continues() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    let error = process(&mut instance, &mut ctx, json!({"mode": "recurse"})).await.unwrap_err();
    assert!(matches!(error, CallError::Trap { ref message } if message.contains("stack")), "{error}");
    assert_next_item_succeeds(&mut instance, &mut ctx).await;
}

#[tokio::test]
async fn a_panic_fails_only_that_call_and_reports_the_panic_message() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    let error =
        process(&mut instance, &mut ctx, json!({"mode": "panic", "message": "boom"})).await.unwrap_err();
    assert_eq!(error.code(), "panic");
    let message = error.to_string();
    assert!(
        message.starts_with("the processor panicked at ") && message.ends_with(": probe panic: boom"),
        "{message}"
    );
    assert!(!message.contains("wasm") && !message.contains("thread '"), "{message}");
    assert_next_item_succeeds(&mut instance, &mut ctx).await;
}

#[tokio::test]
async fn file_access_is_denied() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    for (mode, path) in [
        ("file", "/etc/passwd"),
        ("file", "Cargo.toml"),
        ("list_dir", "/"),
        ("list_dir", "."),
        ("write_file", "/tmp/ingot-escape"),
    ] {
        let data = processed(process(&mut instance, &mut ctx, json!({"mode": mode, "path": path})).await);
        let result = data["result"].as_str().unwrap();
        assert!(result.starts_with("Err("), "{mode} {path} was not denied: {result}");
    }
    assert!(!std::path::Path::new("/tmp/ingot-escape").exists());
}

#[tokio::test]
async fn environment_and_arguments_are_empty() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    let data = processed(process(&mut instance, &mut ctx, json!({"mode": "env"})).await);
    assert_eq!(data["vars"], 0);
    assert_eq!(data["args"], 0);
    assert_eq!(data["home"], "Err(NotPresent)");
}

#[tokio::test]
async fn sockets_and_name_lookup_are_denied() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    for addr in ["127.0.0.1:5432", "10.0.0.1:80"] {
        let data = processed(process(&mut instance, &mut ctx, json!({"mode": "socket", "addr": addr})).await);
        let result = data["result"].as_str().unwrap();
        assert!(result.starts_with("Err(") && result.contains("PermissionDenied"), "{addr}: {result}");
    }
    let data = processed(process(&mut instance, &mut ctx, json!({"mode": "dns"})).await);
    assert!(data["result"].as_str().unwrap().starts_with("Err("), "{}", data["result"]);
}

#[tokio::test]
async fn clocks_are_allowed() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    let data = processed(process(&mut instance, &mut ctx, json!({"mode": "clock"})).await);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(data["unix_seconds"].as_u64().unwrap().abs_diff(now) < 60);
}

#[tokio::test]
async fn stdout_becomes_log_lines_and_is_capped_per_item() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    processed(process(&mut instance, &mut ctx, json!({"mode": "print", "bytes": 300})).await);
    let stdout: Vec<_> = ctx.logs.entries().iter().filter(|e| e.source == LogSource::Stdout).collect();
    assert_eq!(stdout.len(), 1);
    assert_eq!(stdout[0].message.lines().count(), 3);

    ctx.begin_scope();
    processed(process(&mut instance, &mut ctx, json!({"mode": "print", "bytes": 1_000_000})).await);
    let kept: usize =
        ctx.logs.entries().iter().filter(|e| e.source == LogSource::Stdout).map(|e| e.message.len()).sum();
    assert!(kept <= 64 << 10, "kept {kept} bytes");
    assert!(kept >= 60 << 10, "kept only {kept} bytes");
    let notes: Vec<_> = ctx.logs.entries().iter().filter(|e| e.source == LogSource::Host).collect();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].message.contains("truncated"), "{}", notes[0].message);
}

/// The log-line cap is exact: 1,000 lines pass, the 1,001st fails the item naming the cap, and
/// stdout and stderr lines count against the same budget as `context.log`.
#[tokio::test]
async fn the_log_line_cap_allows_exactly_1000_lines_shared_with_stdout_and_stderr() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    processed(process(&mut instance, &mut ctx, json!({"mode": "log", "lines": 1000})).await);
    assert_eq!(ctx.logs.entries().len(), 1000);

    ctx.begin_scope();
    let error = process(&mut instance, &mut ctx, json!({"mode": "log", "lines": 1001})).await.unwrap_err();
    assert_eq!(error.code(), "cap_exceeded");
    assert!(error.to_string().contains("log lines per item (1000 lines)"), "{error}");
    ctx.begin_scope();
    assert_next_item_succeeds(&mut instance, &mut ctx).await;

    // Two calls in one scope, as validate-item and process-item share an item: one stderr line
    // leaves room for 999 more.
    ctx.begin_scope();
    processed(process(&mut instance, &mut ctx, json!({"mode": "stderr", "message": "first"})).await);
    let error = process(&mut instance, &mut ctx, json!({"mode": "log", "lines": 1000})).await.unwrap_err();
    assert!(error.to_string().contains("log lines per item (1000 lines)"), "{error}");
}

/// What a processor writes to stderr and stdout becomes its item's log lines, each marked with
/// the stream it came from: stderr as warnings, stdout as info.
#[tokio::test]
async fn stderr_and_stdout_become_log_lines_marked_with_their_source() {
    let mut instance = probe(Limits::default());
    let mut ctx = ProcessorContext::default();
    processed(process(&mut instance, &mut ctx, json!({"mode": "stderr", "message": "disk is odd"})).await);
    processed(process(&mut instance, &mut ctx, json!({"mode": "print", "bytes": 100})).await);
    let lines: Vec<_> =
        ctx.logs.entries().iter().map(|e| (e.source.as_str(), e.level, e.message.as_str())).collect();
    let printed = "x".repeat(99);
    assert_eq!(
        lines,
        [("stderr", LogLevel::Warning, "disk is odd"), ("stdout", LogLevel::Info, printed.as_str())]
    );
}

#[tokio::test]
async fn fuel_limit_stops_a_loop_and_fuel_use_is_counted() {
    let runtime =
        Runtime::new(RuntimeConfig { cache_dir: Some(support::cache_dir()), fuel_metering: true }).unwrap();
    let code = runtime.load(&guest("probe")).unwrap();
    let mut instance = Instance::new(code, Limits { fuel: Some(5_000_000), ..Limits::default() });
    let mut ctx = ProcessorContext::default();
    let error = process(&mut instance, &mut ctx, json!({"mode": "loop"})).await.unwrap_err();
    assert_eq!(error, CallError::OutOfFuel { limit: 5_000_000 });
    ctx.begin_scope();
    assert_next_item_succeeds(&mut instance, &mut ctx).await;
    assert!(ctx.fuel_used > 0 && ctx.fuel_used < 5_000_000, "fuel used: {}", ctx.fuel_used);
}

#[test]
fn a_component_built_for_another_contract_version_is_refused() {
    let error = runtime().load(&guest("wrong_version")).unwrap_err();
    assert!(
        matches!(error, LoadError::IncompatibleContract { ref found, .. } if found == "ingot:processor@0.2.0")
    );
    let message = error.to_string();
    assert!(message.contains("wrong_version.wasm was built for ingot:processor@0.2.0"), "{message}");
    assert!(message.contains("this host speaks ingot:processor@0.1.0"), "{message}");
    assert!(message.contains("rebuild"), "{message}");
}

/// A real component importing wasi:http (componentize-js without `--disable http fetch-event`)
/// is refused when loaded, naming the import, rather than failing at its first item.
#[test]
fn a_component_importing_wasi_http_is_refused_at_load_naming_the_import() {
    let project = support::root().join("processors/product_catalog");
    let cli = project.join("node_modules/.bin/componentize-js");
    let node = std::process::Command::new("node").arg("--version").output();
    if !cli.exists() || !node.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: needs node and componentize-js in {} (npm ci there)",
            project.join("node_modules").display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("with_http.wasm");
    let wit = support::root().join("wit");
    let started = Instant::now();
    let build = std::process::Command::new(&cli)
        .current_dir(&project)
        .args(["app.js", "--wit", wit.to_str().unwrap(), "--world-name", "import-processor", "--out"])
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(build.status.success(), "componentize-js: {}", String::from_utf8_lossy(&build.stderr));
    eprintln!("componentize-js took {:?}", started.elapsed());

    // Every build differs: a cache of its own keeps the shared one from growing by 37 MB a run.
    let config = RuntimeConfig { cache_dir: Some(dir.path().join("cache")), fuel_metering: false };
    let error = Runtime::new(config).unwrap().load(&wasm).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, LoadError::UnsupportedImport { ref import, .. } if import.starts_with("wasi:http/")),
        "{message}"
    );
    assert!(message.contains("imports wasi:http/"), "{message}");
    assert!(message.contains("which Ingot does not provide"), "{message}");
}

#[test]
fn a_component_that_is_not_a_processor_is_refused() {
    let error = runtime().load(&guest("not_a_processor")).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, LoadError::NotAProcessor { .. }), "{message}");
    assert!(message.contains("does not export ingot:processor/processor"), "{message}");
    assert!(message.contains("wasi:cli/run"), "{message}");
}

#[test]
fn a_core_module_and_a_non_wasm_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let error = runtime().load(&core).unwrap_err();
    assert!(matches!(error, LoadError::CoreModule { .. }));
    assert!(error.to_string().contains("core WebAssembly module, not a component"), "{error}");
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, b"hello").unwrap();
    assert!(matches!(runtime().load(&text).unwrap_err(), LoadError::NotWasm { .. }));
}

#[test]
fn the_second_load_comes_from_the_compile_cache() {
    let cache = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig { cache_dir: Some(cache.path().to_owned()), fuel_metering: false };
    let first = Runtime::new(config()).unwrap().load(&guest("probe")).unwrap();
    assert_eq!(first.cache, CacheOutcome::Compiled);
    // A new runtime, as in a second `ingot` process.
    let started = Instant::now();
    let second = Runtime::new(config()).unwrap().load(&guest("probe")).unwrap();
    assert_eq!(second.cache, CacheOutcome::Hit);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(first.digest, second.digest);
    // Fuel changes compiled code: a fuel engine must not load the epoch-only entry.
    let fuel = Runtime::new(RuntimeConfig { fuel_metering: true, ..config() })
        .unwrap()
        .load(&guest("probe"))
        .unwrap();
    assert_eq!(fuel.cache, CacheOutcome::Compiled);
}

#[test]
fn a_corrupt_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig { cache_dir: Some(cache.path().to_owned()), fuel_metering: false };
    Runtime::new(config()).unwrap().load(&guest("probe")).unwrap();
    let entries: Vec<_> =
        walk(cache.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect();
    assert_eq!(entries.len(), 1);
    std::fs::write(&entries[0], b"garbage").unwrap();
    let reloaded = Runtime::new(config()).unwrap().load(&guest("probe")).unwrap();
    assert_eq!(reloaded.cache, CacheOutcome::Compiled);
    assert_eq!(Runtime::new(config()).unwrap().load(&guest("probe")).unwrap().cache, CacheOutcome::Hit);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn discovery_names_batch_types_in_snake_case() {
    let dir = tempfile::tempdir().unwrap();
    for name in
        ["CustomerData.wasm", "transaction-feed.wasm", "product_catalog.wasm", "README.md", "9lives.wasm"]
    {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    let found = Registry::new(dir.path()).discover().unwrap();
    let types: Vec<&str> = found.iter().map(|d| d.batch_type.as_str()).collect();
    assert_eq!(types, ["customer_data", "product_catalog", "transaction_feed"]);
    assert!(found[0].path.ends_with("CustomerData.wasm"));
}

#[test]
fn two_files_for_one_batch_type_is_an_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("CustomerData.wasm"), b"").unwrap();
    std::fs::write(dir.path().join("customer-data.wasm"), b"").unwrap();
    let error = Registry::new(dir.path()).find("customer_data").unwrap_err();
    assert!(matches!(error, RegistryError::Duplicate { .. }));
    let message = error.to_string();
    assert!(message.contains("CustomerData.wasm") && message.contains("customer-data.wasm"), "{message}");
}

#[test]
fn ingot_toml_names_a_component_whose_file_name_does_not_say_its_type() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("customer_data"), dir.path().join("acme-crm-export-v7.wasm")).unwrap();
    std::fs::write(dir.path().join("9lives.wasm"), b"").unwrap();
    std::fs::write(
        dir.path().join("ingot.toml"),
        "[batch_types]\n\"acme-crm-export-v7.wasm\" = \"customer_data\"\n\"9lives.wasm\" = \"lives\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("customer_data.toml"), "[grants]\ncustomers = [\"select\"]\n").unwrap();
    let registry = Registry::new(dir.path());
    let types: Vec<String> = registry.discover().unwrap().into_iter().map(|d| d.batch_type).collect();
    assert_eq!(types, ["customer_data", "lives"]);
    // The manifest follows the batch type, not the file name.
    let processor = registry.load(&runtime(), "customer_data").unwrap();
    assert!(processor.path.ends_with("acme-crm-export-v7.wasm"));
    assert_eq!(processor.manifest.grants.keys().collect::<Vec<_>>(), ["customers"]);

    // A mapped type that a stem already gives is the same clash as two files for one type.
    std::fs::write(dir.path().join("customer_data.wasm"), b"").unwrap();
    let message = registry.find("customer_data").unwrap_err().to_string();
    assert!(
        message.contains("acme-crm-export-v7.wasm") && message.contains("customer_data.wasm"),
        "{message}"
    );

    // A broken ingot.toml stops discovery with a message naming it, rather than running a
    // component under a name nobody chose.
    std::fs::write(
        dir.path().join("ingot.toml"),
        "[batch_types]\n\"acme-crm-export-v8.wasm\" = \"customer_data\"\n",
    )
    .unwrap();
    let error = registry.discover().unwrap_err();
    assert!(matches!(error, RegistryError::Names(_)), "{error}");
    assert!(error.to_string().contains("acme-crm-export-v8.wasm"), "{error}");
}

#[test]
fn an_unknown_batch_type_names_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("customer_data.wasm"), b"").unwrap();
    let message = Registry::new(dir.path()).find("orders").unwrap_err().to_string();
    assert!(message.contains("no processor for batch type \"orders\""), "{message}");
    assert!(message.contains("it has: customer_data"), "{message}");
}

#[test]
fn processors_json_lists_each_processor_with_its_digest_and_status() {
    use sha2::Digest;
    let processors = support::Processors::new(&[
        ("customer_data", &guest("customer_data"), None),
        ("future", &guest("wrong_version"), None),
    ]);
    std::fs::copy(guest("customer_data"), processors.path().join("acme-crm-v7.wasm")).unwrap();
    std::fs::write(processors.path().join("ingot.toml"), "[batch_types]\n\"acme-crm-v7.wasm\" = \"crm\"\n")
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let output = support::ingot(
        cwd.path(),
        "postgres://unused@127.0.0.1:1/none",
        processors.path(),
        &["processors", "--json"],
    );
    assert!(output.status.success(), "{}", support::stderr_of(&output));
    let list = support::json_of(&output);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let crm = &list[0];
    assert_eq!((crm["batch_type"].as_str(), crm["named_by"].as_str()), (Some("crm"), Some("ingot.toml")));
    assert!(crm["path"].as_str().unwrap().ends_with("acme-crm-v7.wasm"));
    let list = &list[1..];
    let customer = &list[0];
    assert_eq!(customer["named_by"], "file name");
    assert_eq!(customer["batch_type"], "customer_data");
    assert_eq!(customer["status"], "ok");
    assert_eq!(customer["contract"], "ingot:processor@0.1.0");
    assert_eq!(customer["error"], Value::Null);
    let expected = hex::encode(sha2::Sha256::digest(std::fs::read(guest("customer_data")).unwrap()));
    assert_eq!(customer["digest"], expected);
    let future = &list[1];
    assert_eq!(future["status"], "error");
    assert_eq!(future["contract"], "ingot:processor@0.2.0");
    assert!(future["error"].as_str().unwrap().contains("rebuild"));
}
