//! `ingot new`: each language's project builds with its one documented command (`build.sh`)
//! and processes its sample item unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use ingot::scaffold::{COMPONENTIZE_PY_VERSION, Language, ScaffoldError, create};
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
    let sample = created.project.join("sample.ndjson");
    let output = ingot(dir.path(), &db.url, &processors, &["run", name, sample.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let summary = json_of(&output);
    assert_eq!((summary["total"].as_i64(), summary["completed"].as_i64()), (Some(1), Some(1)));
    let processed: Value = sqlx::query_scalar("SELECT processed_data FROM import_batch_items")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let expected: Value = serde_json::from_str(std::fs::read_to_string(&sample).unwrap().trim()).unwrap();
    assert_eq!(processed, expected, "the sample item comes through unchanged");
    let logged =
        db.scalar_i64("SELECT count(*) FROM import_logs WHERE message = 'item 0 has 3 fields'").await;
    assert_eq!(logged, 1);
}

#[tokio::test]
async fn a_rust_scaffold_builds_and_processes_its_sample() {
    scaffold_builds_and_runs(Language::Rust, "hello_rust").await;
}

#[tokio::test]
async fn a_python_scaffold_builds_and_processes_its_sample() {
    scaffold_builds_and_runs(Language::Python, "hello_python").await;
}

#[tokio::test]
async fn a_javascript_scaffold_builds_and_processes_its_sample() {
    scaffold_builds_and_runs(Language::Js, "hello_js").await;
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
