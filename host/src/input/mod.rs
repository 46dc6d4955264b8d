//! Reading import files: CSV/TSV, a JSON array, NDJSON or a spreadsheet, from a file or stdin,
//! plain or compressed (gzip, zstd), in UTF-8, Windows-1252 or UTF-16.
//!
//! A parser thread reads the source once, hashing it as it goes, and hands items in chunks over a
//! bounded channel to the async side, which streams them into PostgreSQL with COPY. Memory use is
//! a few chunks, whatever the file size (spreadsheets aside: a workbook is read whole). Every
//! parse error names the file and the line.

mod csv;
mod decode;
mod json;
mod sheet;

pub use decode::{Compression, TextEncoding};

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
    /// Delimiter-separated values with a header row (RFC 4180); the delimiter is detected.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// One JSON array of items.
    Json,
    /// One JSON value per line.
    Ndjson,
    /// An Excel workbook (.xlsx).
    Xlsx,
    /// An OpenDocument spreadsheet (.ods).
    Ods,
}

impl Format {
    /// The format a file name's extension implies; a compression extension (`orders.csv.gz`)
    /// is looked through.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "tsv" | "tab" => Some(Format::Tsv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "xlsx" | "xlsm" => Some(Format::Xlsx),
            "ods" => Some(Format::Ods),
            ext if Compression::extension(ext) => Format::from_path(Path::new(path.file_stem()?)),
            _ => None,
        }
    }

    /// The name used in messages and `source_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Xlsx => "xlsx",
            Format::Ods => "ods",
        }
    }

    fn is_text_table(self) -> bool {
        matches!(self, Format::Csv | Format::Tsv)
    }

    fn is_spreadsheet(self) -> bool {
        matches!(self, Format::Xlsx | Format::Ods)
    }
}

/// How to read an input, beyond its bytes: every field is optional, and by default taken from
/// the file itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The format; by default from the extension.
    pub format: Option<Format>,
    /// A CSV delimiter; by default detected from the header line (`\t` for .tsv).
    pub delimiter: Option<u8>,
    /// The text encoding; by default UTF-8 (UTF-16 when the file starts with its byte-order mark).
    pub encoding: Option<TextEncoding>,
    /// A spreadsheet's sheet; by default the first.
    pub sheet: Option<String>,
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
    #[error(
        "{name}: cannot tell the format from the file name; pass --format csv, tsv, json, ndjson, xlsx or ods"
    )]
    UnknownFormat {
        /// The file name.
        name: String,
    },
    /// An option does not apply to the input's format.
    #[error("{name}: {message}")]
    Option {
        /// The file name.
        name: String,
        /// What does not apply, and what to do.
        message: String,
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
    /// The rest of how to read it.
    pub options: ReadOptions,
}

impl InputSource {
    /// An input from a command-line argument: a path, or `-` for stdin (which needs `format`).
    pub fn from_arg(arg: &str, format: Option<Format>) -> Result<InputSource, InputError> {
        InputSource::from_arg_with(arg, ReadOptions { format, ..ReadOptions::default() })
    }

    /// An input from a command-line argument, read as `options` say.
    pub fn from_arg_with(arg: &str, options: ReadOptions) -> Result<InputSource, InputError> {
        let (path, name) = match arg {
            "-" => (None, "stdin".to_owned()),
            _ => (Some(PathBuf::from(arg)), arg.to_owned()),
        };
        let format = options
            .format
            .or_else(|| path.as_deref().and_then(Format::from_path))
            .ok_or_else(|| InputError::UnknownFormat { name: name.clone() })?;
        let refuse = |message: String| Err(InputError::Option { name: name.clone(), message });
        if options.delimiter.is_some() && !format.is_text_table() {
            return refuse(format!(
                "--delimiter applies to CSV files, and this is read as {}",
                format.as_str()
            ));
        }
        if options.sheet.is_some() && !format.is_spreadsheet() {
            return refuse(format!(
                "--sheet applies to .xlsx and .ods files, and this is read as {}",
                format.as_str()
            ));
        }
        if options.encoding.is_some() && format.is_spreadsheet() {
            return refuse(
                "--encoding applies to text files; a spreadsheet says its own encoding".to_owned(),
            );
        }
        if let Some(path) = &path
            && let Err(source) = std::fs::metadata(path)
        {
            return Err(InputError::Io { name, source });
        }
        Ok(InputSource { path, name, format, options })
    }
}

/// The message for text that is not UTF-8, wherever a parser finds it.
pub(crate) const NOT_UTF8: &str = "the text is not valid UTF-8; if the file was saved as Latin-1 or \
     Windows-1252 (as Excel saves \"CSV\" in much of the world), pass --encoding windows-1252, or save it as UTF-8";

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
    /// The compression, found from the file's first bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// The text encoding it was read in (none for spreadsheets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<TextEncoding>,
    /// The CSV delimiter used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// The sheet read, for spreadsheets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// Bytes read (as stored, before decompression).
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
    let options = &source.options;
    let (compression, encoding, delimiter, sheet) = {
        let reader = BufReader::with_capacity(64 << 10, &mut hashing);
        let (reader, compression) =
            decode::decompress(reader).map_err(|e| sink.malformed(1, e.to_string()))?;
        if source.format.is_spreadsheet() {
            let sheet = sheet::parse(reader, source.format, options.sheet.as_deref(), &mut sink)?;
            (compression, None, None, Some(sheet))
        } else {
            let (reader, encoding) = decode::decode_text(reader, options.encoding)
                .map_err(|e| sink.malformed(1, e.to_string()))?;
            let delimiter = match source.format {
                Format::Tsv => Some(csv::parse(reader, Some(options.delimiter.unwrap_or(b'\t')), &mut sink)?),
                Format::Csv => Some(csv::parse(reader, options.delimiter, &mut sink)?),
                Format::Json => json::parse_array(reader, &mut sink).map(|()| None)?,
                Format::Ndjson => json::parse_lines(reader, &mut sink).map(|()| None)?,
                Format::Xlsx | Format::Ods => None,
            };
            (compression, Some(encoding), delimiter, None)
        }
    };
    if sink.items == 0 {
        // An empty file (or a header row alone) is almost always the wrong file.
        return Err(sink.malformed(1, "the file holds no items, so there is nothing to import"));
    }
    sink.flush()?;
    // Whatever the parser did not need (e.g. trailing whitespace) still belongs in the hash.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io_error)?;
    Ok(SourceStats {
        file_name: source.name.clone(),
        format: source.format,
        compression,
        encoding,
        delimiter: delimiter.map(|d| char::from(d).to_string()),
        sheet,
        bytes: hashing.bytes,
        sha256: hex::encode(hashing.hasher.finalize()),
        items: sink.items,
    })
}
