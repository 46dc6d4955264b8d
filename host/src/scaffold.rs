//! `ingot init`: a project folder. `ingot new`: a processor project that builds with one command
//! (`./build.sh`) into `<dir>/<name>.wasm`, with test cases that `ingot test` runs, in Rust,
//! Python, JavaScript, C or Zig. Every project carries its own copy of what it builds against —
//! the contract (`wit/`), the Python, JavaScript or C helper, or the Rust SDK (the SDK is not
//! published: this binary holds its sources) — so it builds anywhere, outside Ingot's repository
//! too, against exactly the contract this `ingot` speaks. C and Zig take the contract's bindings
//! from `ingot bindings` at build time, for the same reason.

use std::path::{Path, PathBuf};

use heck::ToUpperCamelCase;

use crate::registry::naming::RESERVED_BATCH_TYPE;
use crate::registry::{Registry, batch_type_from_stem};

/// componentize-py version the Python template installs; the one `make processors` uses.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

const WIT: &str = include_str!("../../wit/processor.wit");
const PYTHON_SDK: &str = include_str!("../../guest-sdk/python/ingot.py");
const JS_SDK: &str = include_str!("../../guest-sdk/js/ingot.js");
const C_HEADER: &str = include_str!("../../guest-sdk/c/ingot.h");
const C_HELPER: &str = include_str!("../../guest-sdk/c/ingot.c");

/// The ziglang (PyPI) version the C and Zig templates install: `zig cc` with wasi-libc, the
/// compiler `make processors` builds the C example with.
pub const ZIG_VERSION: &str = "0.15.2";
/// What the C and Zig build.sh share: find or install zig, find ingot, write the bindings.
const ZIG_TOOLCHAIN: &str = include_str!("../templates/zig-toolchain.sh");

/// The Rust SDK's sources, as a project's `ingot-sdk/` holds them (the paths keep the SDK's
/// `../wit` reference to the contract).
const RUST_SDK: &[(&str, &str)] = &[
    ("ingot-sdk/guest-sdk/Cargo.toml", include_str!("../templates/rust/sdk/Cargo.toml")),
    ("ingot-sdk/guest-sdk/macros/Cargo.toml", include_str!("../templates/rust/sdk/macros.Cargo.toml")),
    ("ingot-sdk/guest-sdk/macros/src/lib.rs", include_str!("../../guest-sdk/macros/src/lib.rs")),
    ("ingot-sdk/guest-sdk/src/lib.rs", include_str!("../../guest-sdk/src/lib.rs")),
    ("ingot-sdk/guest-sdk/src/db.rs", include_str!("../../guest-sdk/src/db.rs")),
    ("ingot-sdk/guest-sdk/src/error.rs", include_str!("../../guest-sdk/src/error.rs")),
    ("ingot-sdk/guest-sdk/src/fields.rs", include_str!("../../guest-sdk/src/fields.rs")),
    ("ingot-sdk/guest-sdk/src/item.rs", include_str!("../../guest-sdk/src/item.rs")),
    ("ingot-sdk/guest-sdk/src/log.rs", include_str!("../../guest-sdk/src/log.rs")),
    ("ingot-sdk/guest-sdk/src/metadata.rs", include_str!("../../guest-sdk/src/metadata.rs")),
    ("ingot-sdk/guest-sdk/src/outcome.rs", include_str!("../../guest-sdk/src/outcome.rs")),
    ("ingot-sdk/guest-sdk/src/processor.rs", include_str!("../../guest-sdk/src/processor.rs")),
    ("ingot-sdk/wit/processor.wit", WIT),
];

/// A processor language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust with the ingot-guest crate.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
    /// C with the C helper, compiled by zig cc, componentized by `ingot componentize`.
    C,
    /// Zig over the C helper, componentized by `ingot componentize`.
    Zig,
}

/// Why a project could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name makes no batch type.
    #[error(
        "{0:?} cannot name a processor: use letters, digits and _ (it becomes the batch type), starting with a letter"
    )]
    BadName(String),
    /// The name is the one batch type no processor may have.
    #[error(
        "\"ingot\" cannot name a processor: its manifest would be the directory's ingot.toml; pick another name"
    )]
    Reserved,
    /// The project folder exists.
    #[error("{0} already exists; pick another name or remove it")]
    Exists(PathBuf),
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The sample item every new project processes.
const SAMPLE: &str = "{\"id\": 1, \"name\": \"Ada Lovelace\", \"email\": \"Ada@Example.com\"}\n";

/// The test cases every new project passes: its sample, and an item its rules refuse.
const TESTS: &str = concat!(
    r#"{"name": "the sample is kept, normalised", "item": {"id": 1, "name": "Ada Lovelace", "email": "Ada@Example.com"}, "expect": {"status": "completed", "outcome": {"processed_data": {"name": "Ada Lovelace", "email": "ada@example.com"}}}}"#,
    "\n",
    r#"{"name": "an item without an email is refused", "item": {"id": 2, "name": "Grace Hopper"}, "expect": {"status": "failed", "code": "missing_email", "field": "email"}}"#,
    "\n",
);

/// What was created.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The batch type.
    pub batch_type: String,
    /// The project folder.
    pub project: PathBuf,
    /// The manifest beside the component.
    pub manifest: PathBuf,
}

fn render(template: &str, name: &str) -> String {
    template
        .replace("{{zig_toolchain}}", ZIG_TOOLCHAIN)
        .replace("{{name}}", name)
        .replace("{{type_name}}", &name.to_upper_camel_case())
        .replace("{{componentize_py}}", COMPONENTIZE_PY_VERSION)
        .replace("{{zig}}", ZIG_VERSION)
}

fn write(path: &Path, contents: &str) -> Result<(), ScaffoldError> {
    let io = |source| ScaffoldError::Io { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)
}

fn make_executable(path: &Path) -> Result<(), ScaffoldError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|source| ScaffoldError::Io { path: path.to_owned(), source })
}

/// Creates `dir/<name>/` with a processor project in `language`, and `dir/<name>.toml`.
pub fn create(name: &str, language: Language, dir: &Path) -> Result<Scaffold, ScaffoldError> {
    let batch_type = batch_type_from_stem(name).ok_or_else(|| ScaffoldError::BadName(name.to_owned()))?;
    if batch_type == RESERVED_BATCH_TYPE {
        return Err(ScaffoldError::Reserved);
    }
    let project = dir.join(&batch_type);
    if project.exists() {
        return Err(ScaffoldError::Exists(project));
    }
    let files: Vec<(&str, String)> = match language {
        Language::Rust => {
            let mut files = vec![
                ("Cargo.toml", render(include_str!("../templates/rust/Cargo.toml"), &batch_type)),
                ("src/lib.rs", render(include_str!("../templates/rust/lib.rs"), &batch_type)),
                ("tests/rules.rs", render(include_str!("../templates/rust/rules.rs"), &batch_type)),
                ("build.sh", render(include_str!("../templates/rust/build.sh"), &batch_type)),
                (".gitignore", "/target\n".to_owned()),
            ];
            files.extend(RUST_SDK.iter().map(|(path, text)| (*path, (*text).to_owned())));
            files
        }
        Language::Python => vec![
            ("app.py", render(include_str!("../templates/python/app.py"), &batch_type)),
            ("ingot.py", PYTHON_SDK.to_owned()),
            ("wit/processor.wit", WIT.to_owned()),
            ("build.sh", render(include_str!("../templates/python/build.sh"), &batch_type)),
            (".gitignore", ".venv/\n__pycache__/\n".to_owned()),
        ],
        Language::Js => vec![
            ("app.js", render(include_str!("../templates/js/app.js"), &batch_type)),
            ("ingot.js", JS_SDK.to_owned()),
            ("package.json", render(include_str!("../templates/js/package.json"), &batch_type)),
            ("wit/processor.wit", WIT.to_owned()),
            ("build.sh", render(include_str!("../templates/js/build.sh"), &batch_type)),
            (".gitignore", "node_modules/\n".to_owned()),
        ],
        Language::C => vec![
            ("app.c", render(include_str!("../templates/c/app.c"), &batch_type)),
            ("ingot.h", C_HEADER.to_owned()),
            ("ingot.c", C_HELPER.to_owned()),
            ("build.sh", render(include_str!("../templates/c/build.sh"), &batch_type)),
            (".gitignore", ".venv/\n/target\n".to_owned()),
        ],
        Language::Zig => vec![
            ("app.zig", render(include_str!("../templates/zig/app.zig"), &batch_type)),
            ("ingot.h", C_HEADER.to_owned()),
            ("ingot.c", C_HELPER.to_owned()),
            ("build.sh", render(include_str!("../templates/zig/build.sh"), &batch_type)),
            (".gitignore", ".venv/\n/target\n/.zig-cache\n".to_owned()),
        ],
    };
    for (file, contents) in &files {
        write(&project.join(file), contents)?;
    }
    make_executable(&project.join("build.sh"))?;
    write(&project.join("sample.ndjson"), SAMPLE)?;
    write(&project.join("tests.ndjson"), TESTS)?;
    let manifest = Registry::new(dir).manifest_path(&batch_type);
    if !manifest.exists() {
        // What each language's runtime needs on top of the item: none in C and Zig, an
        // interpreter's heap in Python and JavaScript.
        let memory = match language {
            Language::C | Language::Zig => 16,
            Language::Rust => 64,
            Language::Python | Language::Js => 256,
        };
        write(
            &manifest,
            &format!(
                "# What {batch_type} may touch. List each table it needs and the privileges, e.g.\n\
                 #   customers = [\"select\", \"insert\", \"update\"]\n\
                 [grants]\n\n[limits]\ntimeout_ms = 10000\nmemory_mb = {memory}\n"
            ),
        )?;
    }
    Ok(Scaffold { batch_type, project, manifest })
}

/// What `ingot init` made.
#[derive(Debug, Clone, Default)]
pub struct Initialized {
    /// Files and folders it created (what was there already is left as it was).
    pub created: Vec<PathBuf>,
}

/// Makes `dir` an Ingot project folder: `processors/`, a `.gitignore` that keeps `.ingot/` (the
/// embedded database and the compile cache) out of version control, and a README that says how
/// to go on. Never overwrites: what is there already stays.
pub fn init(dir: &Path) -> Result<Initialized, ScaffoldError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    let mut done = Initialized::default();
    let processors = dir.join("processors");
    if !processors.is_dir() {
        std::fs::create_dir_all(&processors).map_err(io(&processors))?;
        done.created.push(processors);
    }
    let gitignore = dir.join(".gitignore");
    // A .gitignore that cannot be read is never written over.
    let ignored = match std::fs::read_to_string(&gitignore) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ScaffoldError::Io { path: gitignore, source }),
    };
    if !ignored.lines().any(|l| matches!(l.trim(), ".ingot" | ".ingot/" | "/.ingot" | "/.ingot/")) {
        let mut text = ignored.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("# Ingot's embedded database and compile cache\n/.ingot/\n# Built processors (each builds from its folder)\n/processors/*.wasm\n");
        std::fs::write(&gitignore, text).map_err(io(&gitignore))?;
        if ignored.is_empty() {
            done.created.push(gitignore);
        }
    }
    let readme = dir.join("README.md");
    if !readme.exists() {
        let name = std::fs::canonicalize(dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "imports".to_owned());
        write(&readme, &include_str!("../templates/project/README.md").replace("{{project}}", &name))?;
        done.created.push(readme);
    }
    Ok(done)
}
