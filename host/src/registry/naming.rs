//! Batch types from file names: the stem in snake_case, unless the directory's `ingot.toml`
//! names the type explicitly.
//!
//! ```toml
//! # processors/ingot.toml: batch types for components whose file names do not say them
//! [batch_types]
//! "acme-crm-export-v7.wasm" = "customer_data"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use heck::ToSnakeCase;
use serde::Deserialize;

/// The directory's own configuration file, beside the processors it names.
pub const CONFIG_FILE: &str = "ingot.toml";

/// The batch type no processor may have: its manifest would be the directory's `ingot.toml`.
pub const RESERVED_BATCH_TYPE: &str = "ingot";

/// The batch type a processor file stem maps to: `CustomerData` and `customer-data` both give
/// `customer_data`. `None` when the stem has nothing to make a name of, or would not start with a
/// letter.
pub fn batch_type_from_stem(stem: &str) -> Option<String> {
    let name = stem.to_snake_case();
    valid_batch_type(&name).then_some(name)
}

/// A batch type is lowercase snake_case starting with a letter, as table-like names are.
pub fn valid_batch_type(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The explicit file → batch type mapping of a processors directory (empty without `ingot.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameMap {
    by_file: BTreeMap<String, String>,
}

/// An `ingot.toml` that cannot be used; the message names the file and the entry.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct NameMapError {
    /// The configuration file.
    pub path: PathBuf,
    /// What is wrong and where.
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    batch_types: BTreeMap<String, String>,
}

impl NameMap {
    /// Reads `dir/ingot.toml`; no file means no exceptions. Every mapped file must exist in `dir`,
    /// so a typo is an error rather than a processor silently running under its stem's name.
    pub fn load(dir: &Path) -> Result<NameMap, NameMapError> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NameMap::default()),
            Err(e) => return Err(NameMapError { path, message: e.to_string() }),
        };
        let map = Self::parse(&path, &text)?;
        if let Some(missing) = map.by_file.keys().find(|file| !dir.join(file).is_file()) {
            return Err(NameMapError {
                message: format!(
                    "[batch_types] names {missing:?}, which is not in {}; fix the name or remove the line",
                    dir.display()
                ),
                path,
            });
        }
        Ok(map)
    }

    /// Parses `ingot.toml` text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<NameMap, NameMapError> {
        let fail = |message: String| NameMapError { path: path.to_owned(), message };
        let raw: RawConfig = toml::from_str(text).map_err(|e| fail(e.to_string().trim_end().to_owned()))?;
        for (file, batch_type) in &raw.batch_types {
            if file.contains(['/', '\\']) || !file.ends_with(".wasm") || file == ".wasm" {
                return Err(fail(format!(
                    "[batch_types] {file:?} is not a component file name in this directory (write it as \"name.wasm\")"
                )));
            }
            if !valid_batch_type(batch_type) {
                return Err(fail(format!(
                    "[batch_types] {file:?} = {batch_type:?}: a batch type is lowercase letters, digits and _, starting with a letter"
                )));
            }
            if batch_type == RESERVED_BATCH_TYPE {
                return Err(fail(format!(
                    "[batch_types] {file:?} = {batch_type:?}: that name is reserved for this file; choose another"
                )));
            }
        }
        Ok(NameMap { by_file: raw.batch_types })
    }

    /// The batch type of a component file: the mapped one, else its stem's.
    pub fn batch_type_of(&self, file_name: &str) -> Option<String> {
        match self.by_file.get(file_name) {
            Some(batch_type) => Some(batch_type.clone()),
            None => batch_type_from_stem(file_name.strip_suffix(".wasm").unwrap_or(file_name)),
        }
    }

    /// Whether `file_name` is named by the mapping rather than by its stem.
    pub fn is_mapped(&self, file_name: &str) -> bool {
        self.by_file.contains_key(file_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_become_snake_case_batch_types() {
        assert_eq!(batch_type_from_stem("CustomerData").as_deref(), Some("customer_data"));
        assert_eq!(batch_type_from_stem("customer-data").as_deref(), Some("customer_data"));
        assert_eq!(batch_type_from_stem("customer_data").as_deref(), Some("customer_data"));
        assert_eq!(batch_type_from_stem("TransactionFeedV2").as_deref(), Some("transaction_feed_v2"));
        assert_eq!(batch_type_from_stem("HTTPImport").as_deref(), Some("http_import"));
    }

    #[test]
    fn stems_without_a_usable_name_are_refused() {
        assert_eq!(batch_type_from_stem(""), None);
        assert_eq!(batch_type_from_stem("2fast"), None);
        assert_eq!(batch_type_from_stem("---"), None);
        assert_eq!(batch_type_from_stem("café"), None);
    }

    fn parse(text: &str) -> Result<NameMap, NameMapError> {
        NameMap::parse(Path::new("processors/ingot.toml"), text)
    }

    #[test]
    fn mapped_files_take_the_mapped_type_and_the_rest_keep_their_stems() {
        let map =
            parse("[batch_types]\n\"acme-export-v7.wasm\" = \"customer_data\"\n\"2fast.wasm\" = \"fast\"\n")
                .expect("parses");
        assert_eq!(map.batch_type_of("acme-export-v7.wasm").as_deref(), Some("customer_data"));
        assert_eq!(map.batch_type_of("2fast.wasm").as_deref(), Some("fast"));
        assert_eq!(map.batch_type_of("OrderFeed.wasm").as_deref(), Some("order_feed"));
        assert!(map.is_mapped("2fast.wasm") && !map.is_mapped("OrderFeed.wasm"));
    }

    #[test]
    fn bad_entries_are_errors_naming_the_file_and_the_entry() {
        for (text, expected) in [
            ("[batch_types]\n\"a.wasm\" = \"Customer Data\"\n", "\"Customer Data\""),
            ("[batch_types]\n\"a.wasm\" = \"ingot\"\n", "reserved"),
            ("[batch_types]\n\"sub/a.wasm\" = \"a\"\n", "\"sub/a.wasm\""),
            ("[batch_types]\n\"a.txt\" = \"a\"\n", "\"a.txt\""),
            ("[batch_type]\n\"a.wasm\" = \"a\"\n", "batch_type"),
            ("[batch_types]\n\"a.wasm\" = 3\n", "line 2"),
        ] {
            let message = parse(text).expect_err(text).to_string();
            assert!(message.starts_with("processors/ingot.toml:"), "{message}");
            assert!(message.contains(expected), "{expected:?} not in {message}");
        }
    }

    #[test]
    fn a_mapping_naming_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CONFIG_FILE), "[batch_types]\n\"gone.wasm\" = \"orders\"\n")
            .expect("write");
        let message = NameMap::load(dir.path()).expect_err("refused").to_string();
        assert!(message.contains("\"gone.wasm\"") && message.contains("ingot.toml"), "{message}");
        assert_eq!(NameMap::load(&dir.path().join("nothing-here")).expect("no file"), NameMap::default());
    }
}
