//! Reading import files: CSV, a JSON array, or NDJSON, from a file or stdin, streamed.
//!
//! A parser thread reads the source once, hashing it as it goes, and hands items in chunks over a
//! bounded channel to the async side, which streams them into PostgreSQL with COPY. Memory use is
//! a few chunks, whatever the file size. Every parse error names the file and the line.

mod csv;
mod json;

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Items per chunk sent from the parser thread.
const CHUNK_ITEMS: usize = 1_000;
/// Chunks buffered between the parser thread and the database.
const CHUNKS_IN_FLIGHT: usize = 4;

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header row (RFC 4180).
    Csv,
    /// One JSON array of items.
    Json,
    /// One JSON value per line.
    Ndjson,
}

impl Format {
    /// The format a file name's extension implies.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }

    /// The name used in messages and `source_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
        }
    }
}

/// Why an input cannot be imported. Every message names the file, and the line where there is
/// one.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened or read.
    #[error("{name}: {source}")]
    Io {
        /// The file name.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The format could not be determined.
    #[error("{name}: cannot tell the format from the file name; pass --format csv, json or ndjson")]
    UnknownFormat {
        /// The file name.
        name: String,
    },
    /// The content is malformed.
    #[error("{name}: line {line}: {message}")]
    Malformed {
        /// The file name.
        name: String,
        /// The line (from 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The reader stopped because the database side went away.
    #[error("{name}: reading stopped because the import was aborted")]
    Cancelled {
        /// The file name.
        name: String,
    },
}

/// Where the items come from.
#[derive(Debug, Clone)]
pub struct InputSource {
    /// The path, or `None` for stdin.
    pub path: Option<PathBuf>,
    /// The name shown in messages: the path as given, or `stdin`.
    pub name: String,
    /// How to parse it.
    pub format: Format,
}

impl InputSource {
    /// An input from a command-line argument: a path, or `-` for stdin (which needs `format`).
    pub fn from_arg(arg: &str, format: Option<Format>) -> Result<InputSource, InputError> {
        if arg == "-" {
            let format = format.ok_or_else(|| InputError::UnknownFormat { name: "stdin".into() })?;
            return Ok(InputSource { path: None, name: "stdin".into(), format });
        }
        let path = PathBuf::from(arg);
        let format = format
            .or_else(|| Format::from_path(&path))
            .ok_or_else(|| InputError::UnknownFormat { name: arg.to_owned() })?;
        if let Err(source) = std::fs::metadata(&path) {
            return Err(InputError::Io { name: arg.to_owned(), source });
        }
        Ok(InputSource { path: Some(path), name: arg.to_owned(), format })
    }
}

/// One parsed item: its JSON text and the line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedItem {
    /// The item as JSON text.
    pub json: String,
    /// The line it started on (from 1).
    pub line: u64,
}

/// What was read: for `source_info`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceStats {
    /// The file name as given.
    pub file_name: String,
    /// The format.
    pub format: Format,
    /// Bytes read.
    pub bytes: u64,
    /// Hex sha256 of the bytes read.
    pub sha256: String,
    /// Items found.
    pub items: u64,
}

/// Counts and hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Hands chunks of parsed items to the receiving side.
pub(crate) struct ItemSink {
    name: String,
    tx: mpsc::Sender<Vec<ParsedItem>>,
    chunk: Vec<ParsedItem>,
    items: u64,
}

impl ItemSink {
    /// Adds one item, its JSON text kept exactly as written (PostgreSQL stores its numbers as
    /// `numeric`, every digit). Text PostgreSQL would refuse is refused here, naming the line:
    /// a NUL character (a `\u0000` escape), half a surrogate pair, a number out of range.
    pub(crate) fn push(&mut self, json: String, line: u64) -> Result<(), InputError> {
        let refused = match crate::context::jsonb::check(&json) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(_)) => {
                Some("the item contains a NUL character (\\u0000), which PostgreSQL cannot store".to_owned())
            }
            Err(refused) if refused.syntax => Some(format!("the item is not valid JSON: {refused}")),
            Err(refused) => Some(format!("PostgreSQL cannot store the item: {refused}")),
        };
        if let Some(message) = refused {
            return Err(InputError::Malformed { name: self.name.clone(), line, message });
        }
        self.chunk.push(ParsedItem { json, line });
        self.items += 1;
        if self.chunk.len() >= CHUNK_ITEMS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), InputError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_ITEMS));
        self.tx.blocking_send(chunk).map_err(|_| InputError::Cancelled { name: self.name.clone() })
    }

    pub(crate) fn malformed(&self, line: u64, message: impl Into<String>) -> InputError {
        InputError::Malformed { name: self.name.clone(), line, message: message.into() }
    }
}

/// A running parse: chunks arrive on `items`; `finish` gives the totals or the first error.
pub struct Reader {
    /// Parsed items, in order, in chunks.
    pub items: mpsc::Receiver<Vec<ParsedItem>>,
    handle: tokio::task::JoinHandle<Result<SourceStats, InputError>>,
}

impl Reader {
    /// Waits for the parser to end. Call after `items` is exhausted (or dropped, to abort).
    pub async fn finish(self) -> Result<SourceStats, InputError> {
        drop(self.items);
        match self.handle.await {
            Ok(result) => result,
            Err(e) => {
                Err(InputError::Io { name: "input".into(), source: std::io::Error::other(e.to_string()) })
            }
        }
    }
}

/// Starts parsing `source` on a blocking thread.
pub fn read(source: InputSource) -> Reader {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let handle = tokio::task::spawn_blocking(move || parse(&source, tx));
    Reader { items: rx, handle }
}

fn parse(source: &InputSource, tx: mpsc::Sender<Vec<ParsedItem>>) -> Result<SourceStats, InputError> {
    let io_error = |source_error| InputError::Io { name: source.name.clone(), source: source_error };
    let raw: Box<dyn Read + Send> = match &source.path {
        Some(path) => Box::new(std::fs::File::open(path).map_err(io_error)?),
        None => Box::new(std::io::stdin()),
    };
    let mut hashing = Hashing { inner: raw, hasher: Sha256::new(), bytes: 0 };
    let mut sink =
        ItemSink { name: source.name.clone(), tx, chunk: Vec::with_capacity(CHUNK_ITEMS), items: 0 };
    {
        let reader = BufReader::with_capacity(64 << 10, &mut hashing);
        match source.format {
            Format::Csv => csv::parse(reader, &mut sink)?,
            Format::Json => json::parse_array(reader, &mut sink)?,
            Format::Ndjson => json::parse_lines(reader, &mut sink)?,
        }
    }
    sink.flush()?;
    // Whatever the parser did not need (e.g. trailing whitespace) still belongs in the hash.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io_error)?;
    Ok(SourceStats {
        file_name: source.name.clone(),
        format: source.format,
        bytes: hashing.bytes,
        sha256: hex::encode(hashing.hasher.finalize()),
        items: sink.items,
    })
}
