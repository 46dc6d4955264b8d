//! The SQL a processor ships for its own tables: `processors/<type>/schema.sql`, then
//! `processors/<type>/migrations/*.sql` in name order. `ingot migrate` applies each file once
//! (see `store::schemas`); a processor's folder is its project folder, so this works before its
//! `.wasm` is built.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::batch_type_from_stem;

/// One file of a processor's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    /// The processor's batch type (its folder's name).
    pub batch_type: String,
    /// Its name as recorded: `schema.sql` or `migrations/<name>.sql`.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its SQL.
    pub sql: String,
    /// sha256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// Why a schema file cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct SchemaError {
    /// The file or folder.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// Every processor folder's schema files under `dir`, by type, each type's in the order they
/// apply.
pub fn schema_files(dir: &Path) -> Result<Vec<SchemaFile>, SchemaError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SchemaError { path, source }
    };
    let mut folders: Vec<(String, PathBuf)> = Vec::new();
    if !dir.exists() {
        return Ok(Vec::new());
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if !entry.file_type().map_err(io(&entry.path()))?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        if let Some(batch_type) = name.to_str().and_then(batch_type_from_stem) {
            folders.push((batch_type, entry.path()));
        }
    }
    folders.sort();
    let mut files = Vec::new();
    for (batch_type, folder) in folders {
        let mut names = Vec::new();
        if folder.join("schema.sql").is_file() {
            names.push("schema.sql".to_owned());
        }
        let migrations = folder.join("migrations");
        if migrations.is_dir() {
            let mut found: Vec<String> = std::fs::read_dir(&migrations)
                .map_err(io(&migrations))?
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "sql") && e.path().is_file())
                .filter_map(|e| e.file_name().to_str().map(|n| format!("migrations/{n}")))
                .collect();
            found.sort();
            names.extend(found);
        }
        for name in names {
            let path = folder.join(&name);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let sql = String::from_utf8(bytes.clone()).map_err(|_| SchemaError {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"),
            })?;
            let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
            files.push(SchemaFile { batch_type: batch_type.clone(), name, path, sql, sha256 });
        }
    }
    Ok(files)
}
