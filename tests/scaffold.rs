//! `ingot new`: each language's project builds with its one documented command (`build.sh`)
//! and processes its sample item unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use ingot::scaffold::{COMPONENTIZE_PY_VERSION, Language, ScaffoldError, ZIG_VERSION, create};
use serde_json::Value;
use support::{TestDb, ingot, json_of, root, stderr_of};

/// Builds a scaffold with the toolchains `make processors` installed, so the test does not
/// download them again.
fn build(project: &Path) {
    let output = std::process::Command::new("sh")
        .arg(project.join("build.sh"))
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .env("COMPONENTIZE_PY", root().join("target/toolchains/python/bin/componentize-py"))
        .env("COMPONENTIZE_JS", root().join("processors/product_catalog/node_modules/.bin/componentize-js"))
        .env("ZIG", root().join("target/toolchains/zig/zig"))
        .env("INGOT", env!("CARGO_BIN_EXE_ingot"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
}

async fn scaffold_builds_and_runs(language: Language, name: &str) {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let processors = dir.path().join("processors");
    let created = create(name, language, &processors).unwrap();
    assert_eq!(created.project, processors.join(name));
    build(&created.project);
    assert!(processors.join(format!("{name}.wasm")).exists());

    // The tests file it ships passes: a kept sample and a refused item.
    let tested = ingot(dir.path(), &db.url, &processors, &["test", name]);
    assert_eq!(
        tested.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&tested.stdout),
        stderr_of(&tested)
    );
    assert!(String::from_utf8_lossy(&tested.stdout).contains("2 passed, 0 failed"));

    let sample = created.project.join("sample.ndjson");
    let output = ingot(dir.path(), &db.url, &processors, &["run", name, sample.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!((summary["total"].as_i64(), summary["completed"].as_i64()), (Some(1), Some(1)));
    let processed: Value = sqlx::query_scalar("SELECT processed_data FROM import_batch_items")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        processed,
        serde_json::json!({"name": "Ada Lovelace", "email": "ada@example.com"}),
        "the kit normalises the sample"
    );
    let logged =
        db.scalar_i64("SELECT count(*) FROM import_logs WHERE message = 'item 0 is ada@example.com'").await;
    assert_eq!(logged, 1);
}

#[tokio::test]
async fn a_rust_scaffold_builds_and_processes_its_sample() {
    scaffold_builds_and_runs(Language::Rust, "hello_rust").await;
}

/// `cargo test` in a new Rust project, outside this repository: its rules' own tests pass
/// against the SDK copy it carries (before: an absolute path to the SDK, and a wasm test binary
/// the machine could not execute).
#[test]
fn a_rust_scaffold_tests_its_rules_with_cargo_test() {
    let dir = tempfile::tempdir().unwrap();
    let created = create("rules_rust", Language::Rust, dir.path()).unwrap();
    let manifest = std::fs::read_to_string(created.project.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains(root().to_str().unwrap()), "no path into this repository:\n{manifest}");
    let output = std::process::Command::new("cargo")
        .args(["test", "--quiet"])
        .current_dir(&created.project)
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo test failed:\n{stdout}\n{}", stderr_of(&output));
    assert!(stdout.contains("2 passed"), "{stdout}");
}

#[tokio::test]
async fn a_python_scaffold_builds_and_processes_its_sample() {
    scaffold_builds_and_runs(Language::Python, "hello_python").await;
}

#[tokio::test]
async fn a_javascript_scaffold_builds_and_processes_its_sample() {
    scaffold_builds_and_runs(Language::Js, "hello_js").await;
}

#[tokio::test]
async fn a_c_scaffold_builds_and_processes_its_sample() {
    scaffold_builds_and_runs(Language::C, "hello_c").await;
}

#[tokio::test]
async fn a_zig_scaffold_builds_and_processes_its_sample() {
    scaffold_builds_and_runs(Language::Zig, "hello_zig").await;
}

/// The C and Zig projects carry the helper they build against, and the compiler pin is the one
/// `make processors` builds the C example with.
#[test]
fn the_c_and_zig_templates_carry_the_helper_and_pin_the_zig_the_build_uses() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    assert!(makefile.contains(&format!("ZIG_VERSION := {ZIG_VERSION}")));
    let example = std::fs::read_to_string(root().join("processors/inventory/build.sh")).unwrap();
    assert!(example.contains(&format!("ziglang=={ZIG_VERSION}")), "{example}");
    let dir = tempfile::tempdir().unwrap();
    for (language, name) in [(Language::C, "pinned_c"), (Language::Zig, "pinned_zig")] {
        let created = create(name, language, dir.path()).unwrap();
        let build = std::fs::read_to_string(created.project.join("build.sh")).unwrap();
        assert!(build.contains(&format!("ziglang=={ZIG_VERSION}")), "{build}");
        let header = std::fs::read_to_string(created.project.join("ingot.h")).unwrap();
        assert_eq!(header, std::fs::read_to_string(root().join("guest-sdk/c/ingot.h")).unwrap());
        assert!(created.project.join("ingot.c").exists());
    }
}

/// A C or Zig build needs `ingot` (bindings, componentize): without it, build.sh says so and
/// how to point at one, instead of a shell's "not found" halfway through.
#[test]
fn a_c_build_without_ingot_on_path_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    for (language, name) in [(Language::C, "lost_c"), (Language::Zig, "lost_zig")] {
        let created = create(name, language, dir.path()).unwrap();
        let output = std::process::Command::new("sh")
            .arg(created.project.join("build.sh"))
            .env("PATH", "/usr/bin:/bin")
            .env("ZIG", root().join("target/toolchains/zig/zig"))
            .env_remove("INGOT")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = stderr_of(&output);
        assert!(stderr.contains("ingot is not on PATH") && stderr.contains("INGOT="), "{stderr}");
        assert!(!dir.path().join(format!("{name}.wasm")).exists());
    }
}

/// `ingot bindings` writes what a C or Zig build links; `ingot componentize` refuses what cannot
/// become a processor with one sentence naming the file and what to do, and writes nothing.
#[test]
fn bindings_are_written_and_componentize_refuses_what_is_no_processor_module() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ingot"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let written = run(&["bindings", "--lang", "c", "--out", "gen"]);
    assert_eq!(written.status.code(), Some(0), "{}", stderr_of(&written));
    for file in ["import_processor.h", "import_processor.c", "import_processor_component_type.o"] {
        assert!(dir.path().join("gen").join(file).exists(), "{file}");
    }

    std::fs::write(dir.path().join("notes.wasm"), "not wasm at all").unwrap();
    let component = root().join("processors/inventory.wasm");
    let cases = [
        ("notes.wasm", "notes.wasm is not a WebAssembly module"),
        (component.to_str().unwrap(), "is already a component"),
        ("missing.wasm", "missing.wasm: No such file"),
    ];
    for (input, expected) in cases {
        let output = run(&["componentize", input, "-o", "out.wasm"]);
        assert_eq!(output.status.code(), Some(1), "{input}");
        let stderr = stderr_of(&output);
        assert!(stderr.contains(expected), "{input}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
        assert!(!dir.path().join("out.wasm").exists(), "nothing written for {input}");
    }
}

#[test]
fn names_are_checked_and_projects_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(create("9lives", Language::Js, dir.path()), Err(ScaffoldError::BadName(_))));
    assert!(matches!(create("Ingot", Language::Rust, dir.path()), Err(ScaffoldError::Reserved)));
    assert!(!dir.path().join("ingot.toml").exists());
    let created = create("order-lines", Language::Js, dir.path()).unwrap();
    assert_eq!(created.batch_type, "order_lines");
    let again = create("order_lines", Language::Python, dir.path()).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
}

#[test]
fn the_python_template_pins_the_componentize_py_the_build_uses() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    assert!(makefile.contains(&format!("COMPONENTIZE_PY_VERSION := {COMPONENTIZE_PY_VERSION}")));
}

/// An exception the processor does not catch fails only its item, with code `exception` and
/// `Class: message` in the processor's own language, its traceback in the item's log, and
/// neither wasm trap wording nor a language runtime's Rust panic; the next item still runs.
async fn an_exception_reads_as_the_processors_own(
    language: Language,
    name: &str,
    app: (&str, &str),
    class: &str,
) {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let processors = dir.path().join("processors");
    let created = create(name, language, &processors).unwrap();
    std::fs::write(created.project.join(app.0), app.1).unwrap();
    build(&created.project);
    let items = dir.path().join("items.ndjson");
    std::fs::write(&items, "{\"boom\": true}\n{\"boom\": false}\n").unwrap();
    let output = ingot(
        dir.path(),
        &db.url,
        &processors,
        &["run", name, items.to_str().unwrap(), "--json", "--workers", "1"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!((summary["completed"].as_i64(), summary["failed"].as_i64()), (Some(1), Some(1)));
    let (code, message): (String, String) =
        sqlx::query_as("SELECT error_code, error_message FROM import_batch_items WHERE item_index = 0")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(code, "exception");
    assert_eq!(message, format!("{class}: the rules broke"));
    let logs: Vec<String> = sqlx::query_scalar("SELECT message FROM import_logs WHERE item_index = 0")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let logs = logs.join("\n");
    assert!(
        logs.contains("the rules broke") && logs.contains("explode"),
        "the traceback names the function: {logs}"
    );
    for noise in ["wasm", "unreachable", "panicked", "Python function threw"] {
        assert!(!logs.contains(noise) && !message.contains(noise), "{noise:?} in {message} / {logs}");
    }
}

#[tokio::test]
async fn a_python_exception_reads_as_python() {
    let app = "import ingot\n\n\ndef explode():\n    raise ValueError(\"the rules broke\")\n\n\nclass Processor(ingot.Processor):\n    def process_item(self, item):\n        if ingot.data(item)[\"boom\"]:\n            explode()\n        return ingot.outcome(None)\n";
    an_exception_reads_as_the_processors_own(Language::Python, "boom_py", ("app.py", app), "ValueError")
        .await;
}

#[tokio::test]
async fn a_javascript_exception_reads_as_javascript() {
    let app = "import * as ingot from './ingot.js';\n\nfunction explode() {\n  throw new RangeError('the rules broke');\n}\n\nexport const processor = ingot.processor({\n  processItem(item) {\n    if (ingot.data(item).boom) explode();\n    return ingot.outcome();\n  },\n});\n";
    an_exception_reads_as_the_processors_own(Language::Js, "boom_js", ("app.js", app), "RangeError").await;
}
