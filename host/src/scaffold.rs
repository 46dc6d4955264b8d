//! `ingot new`: a processor project that builds with one command (`./build.sh`) into
//! `<dir>/<name>.wasm` and processes its sample item unchanged, in Rust, Python or JavaScript.
//! Python and JavaScript projects carry their own copy of the contract (`wit/`) and, for Python,
//! of the `ingot` helper module, so they build anywhere.

use std::path::{Path, PathBuf};

use heck::ToUpperCamelCase;

use crate::registry::naming::RESERVED_BATCH_TYPE;
use crate::registry::{Registry, batch_type_from_stem};

/// componentize-py version the Python template installs; the one `make processors` uses.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

const WIT: &str = include_str!("../../wit/processor.wit");
const PYTHON_SDK: &str = include_str!("../../guest-sdk/python/ingot.py");

/// A processor language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust with the ingot-guest crate.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
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
    /// The Rust SDK could not be found.
    #[error(
        "cannot find the ingot-guest SDK for a Rust processor; set INGOT_GUEST_SDK to the guest-sdk folder of \
         Ingot's source"
    )]
    NoSdk,
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

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
        .replace("{{name}}", name)
        .replace("{{type_name}}", &name.to_upper_camel_case())
        .replace("{{componentize_py}}", COMPONENTIZE_PY_VERSION)
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

/// The guest SDK a Rust project depends on: `INGOT_GUEST_SDK`, else the one this binary was
/// built from.
fn guest_sdk() -> Result<PathBuf, ScaffoldError> {
    let candidate = std::env::var_os("INGOT_GUEST_SDK")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"));
    let sdk = std::fs::canonicalize(&candidate).map_err(|_| ScaffoldError::NoSdk)?;
    if sdk.join("Cargo.toml").is_file() { Ok(sdk) } else { Err(ScaffoldError::NoSdk) }
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
            let sdk = guest_sdk()?;
            vec![
                (
                    "Cargo.toml",
                    render(include_str!("../templates/rust/Cargo.toml"), &batch_type)
                        .replace("{{sdk}}", &sdk.to_string_lossy()),
                ),
                ("src/lib.rs", render(include_str!("../templates/rust/lib.rs"), &batch_type)),
                (".cargo/config.toml", "[build]\ntarget = \"wasm32-wasip2\"\n".to_owned()),
                ("build.sh", render(include_str!("../templates/rust/build.sh"), &batch_type)),
                (".gitignore", "/target\n".to_owned()),
            ]
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
            ("package.json", render(include_str!("../templates/js/package.json"), &batch_type)),
            ("wit/processor.wit", WIT.to_owned()),
            ("build.sh", render(include_str!("../templates/js/build.sh"), &batch_type)),
            (".gitignore", "node_modules/\n".to_owned()),
        ],
    };
    for (file, contents) in &files {
        write(&project.join(file), contents)?;
    }
    make_executable(&project.join("build.sh"))?;
    write(
        &project.join("sample.ndjson"),
        "{\"id\": 1, \"name\": \"Ada Lovelace\", \"email\": \"ada@example.com\"}\n",
    )?;
    let manifest = Registry::new(dir).manifest_path(&batch_type);
    if !manifest.exists() {
        let memory = if language == Language::Rust { 64 } else { 256 };
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
