//! CSV: a header row, then one item per record, each a JSON object keyed by the header.
//!
//! RFC 4180: quoted fields may hold commas, doubled quotes and line breaks; CRLF or LF line ends;
//! a UTF-8 byte-order mark is dropped. The `csv` crate does the parsing; it is lenient about a
//! quote that is never closed (the rest of the file becomes one field), so [`QuoteWatch`] follows
//! the quoting byte by byte to report the line where such a quote opened.

use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use super::{InputError, ItemSink};

/// Tracks RFC 4180 quoting state over the raw bytes as the parser reads them.
struct QuoteWatch<R> {
    inner: R,
    state: QuoteState,
    line: u64,
    opened_on: u64,
    bom_checked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl<R> QuoteWatch<R> {
    fn observe(&mut self, bytes: &[u8]) {
        use QuoteState::{FieldStart, QuoteInQuoted, Quoted, Unquoted};
        for &b in bytes {
            if b == b'\n' {
                self.line += 1;
            }
            let separator = matches!(b, b',' | b'\n' | b'\r');
            self.state = match self.state {
                FieldStart if b == b'"' => {
                    self.opened_on = self.line;
                    Quoted
                }
                Quoted if b == b'"' => QuoteInQuoted,
                Quoted => Quoted,
                // A doubled quote inside a quoted field.
                QuoteInQuoted if b == b'"' => Quoted,
                FieldStart | Unquoted | QuoteInQuoted if separator => FieldStart,
                FieldStart | Unquoted | QuoteInQuoted => Unquoted,
            };
        }
    }

    /// The line of a quote still open at the end of the input.
    fn unterminated(&self) -> Option<u64> {
        (self.state == QuoteState::Quoted).then_some(self.opened_on)
    }
}

impl<R: BufRead> Read for QuoteWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.bom_checked {
            self.bom_checked = true;
            if self.inner.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
                self.inner.consume(3);
            }
        }
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

/// Parses CSV from `reader` into `sink`.
pub(super) fn parse(reader: impl BufRead, sink: &mut ItemSink) -> Result<(), InputError> {
    let mut watch = QuoteWatch {
        inner: reader,
        state: QuoteState::FieldStart,
        line: 1,
        opened_on: 1,
        bom_checked: false,
    };
    let result = parse_records(&mut watch, sink);
    if let Err(InputError::Malformed { .. }) = result {
        // Read to the end: an error caused by an unclosed quote is best reported where it opened.
        let _ = std::io::copy(&mut watch, &mut std::io::sink());
    }
    if !matches!(result, Err(InputError::Cancelled { .. }) | Err(InputError::Io { .. }))
        && let Some(line) = watch.unterminated()
    {
        return Err(sink.malformed(line, "a quoted field is never closed (unterminated quote)"));
    }
    result
}

fn parse_records<R: BufRead>(watch: &mut QuoteWatch<R>, sink: &mut ItemSink) -> Result<(), InputError> {
    let mut csv = ::csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(watch);
    let mut records = csv.records();
    let header = match records.next() {
        None => return Ok(()),
        Some(record) => record.map_err(|e| csv_error(sink, &e))?,
    };
    let mut columns: Vec<String> = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(sink.malformed(1, format!("column {} of the header row has no name", i + 1)));
        }
        if columns.contains(&name) {
            return Err(sink.malformed(1, format!("the header row names column {name:?} twice")));
        }
        columns.push(name);
    }
    for record in records {
        let record = record.map_err(|e| csv_error(sink, &e))?;
        let line = record.position().map_or(0, ::csv::Position::line);
        if record.len() == 1 && record.get(0) == Some("") && columns.len() > 1 {
            continue; // a blank line
        }
        if record.len() != columns.len() {
            return Err(sink.malformed(
                line,
                format!("expected {} fields (as in the header row), found {}", columns.len(), record.len()),
            ));
        }
        let object: Map<String, Value> =
            columns.iter().cloned().zip(record.iter().map(|v| Value::String(v.to_owned()))).collect();
        sink.push(Value::Object(object).to_string(), line)?;
    }
    Ok(())
}

fn csv_error(sink: &ItemSink, e: &::csv::Error) -> InputError {
    let line = e.position().map_or(0, ::csv::Position::line);
    match e.kind() {
        ::csv::ErrorKind::Utf8 { .. } => {
            sink.malformed(line, "the text is not valid UTF-8; save the file as UTF-8")
        }
        ::csv::ErrorKind::Io(io) => sink.malformed(line, format!("read error: {io}")),
        _ => sink.malformed(line, e.to_string()),
    }
}
