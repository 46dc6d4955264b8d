//! CSV: a header row, then one item per record, each a JSON object keyed by the header.
//!
//! RFC 4180: quoted fields may hold the delimiter, doubled quotes and line breaks; a UTF-8
//! byte-order mark is dropped. The delimiter is what the header row says: a comma, or a
//! semicolon or tab when the header has more of those (as spreadsheets write in much of Europe).
//! The `csv` crate does the parsing; [`LineWatch`] follows the raw bytes beside it, so that every
//! error names the line of the file it is on — line breaks counted as a person would (LF, CRLF
//! and a lone CR each end a line) — and the line where a quote that is never closed opened.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use super::{InputError, ItemSink};

/// Follows the raw bytes the parser reads: where each line break is, and the quoting state.
struct LineWatch<R> {
    inner: R,
    delimiter: u8,
    /// Bytes read so far.
    offset: u64,
    /// Line breaks seen so far.
    breaks: u64,
    /// Byte offsets and lengths of the breaks the parser may not have reached yet.
    pending: VecDeque<(u64, u64)>,
    /// Breaks before the oldest entry of `pending`.
    settled: u64,
    /// The last byte was a CR (a following LF belongs to the same break).
    after_cr: bool,
    state: QuoteState,
    opened_on: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl<R> LineWatch<R> {
    fn observe(&mut self, bytes: &[u8]) {
        use QuoteState::{FieldStart, QuoteInQuoted, Quoted, Unquoted};
        for &b in bytes {
            let lf_after_cr = self.after_cr && b == b'\n';
            if lf_after_cr {
                if let Some(last) = self.pending.back_mut() {
                    last.1 = 2;
                }
            } else if b == b'\n' || b == b'\r' {
                self.breaks += 1;
                self.pending.push_back((self.offset, 1));
            }
            self.after_cr = b == b'\r';
            self.offset += 1;
            let separator = b == self.delimiter || b == b'\n' || b == b'\r';
            self.state = match self.state {
                FieldStart if b == b'"' => {
                    self.opened_on = self.breaks + 1;
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

    /// The line (from 1) of what starts at `offset`, past any empty lines there (the parser
    /// skips them, and reports the position before them); offsets must not go backwards.
    fn line_at(&mut self, mut offset: u64) -> u64 {
        while let Some(&(at, len)) = self.pending.front() {
            if at > offset {
                break;
            }
            if at == offset {
                offset += len;
            }
            self.pending.pop_front();
            self.settled += 1;
        }
        self.settled + 1
    }

    /// The line of a quote still open at the end of the input.
    fn unterminated(&self) -> Option<u64> {
        (self.state == QuoteState::Quoted).then_some(self.opened_on)
    }
}

impl<R: BufRead> Read for LineWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

/// The delimiter the first line of `head` uses: a comma, unless it holds more semicolons or tabs
/// (outside quotes).
fn detect_delimiter(head: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in head {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    match counts {
        [c, s, t] if s > c && s >= t => b';',
        [c, _, t] if t > c => b'\t',
        _ => b',',
    }
}

/// Parses CSV from `reader` into `sink`, split on `delimiter` or the one the header shows.
/// Returns the delimiter used.
pub(super) fn parse(
    mut reader: impl BufRead,
    delimiter: Option<u8>,
    sink: &mut ItemSink,
) -> Result<u8, InputError> {
    let head = reader.fill_buf().map_err(|e| sink.malformed(1, format!("read error: {e}")))?;
    let bom = head.starts_with(b"\xEF\xBB\xBF");
    let delimiter = delimiter.unwrap_or_else(|| detect_delimiter(if bom { &head[3..] } else { head }));
    if bom {
        reader.consume(3);
    }
    let mut watch = LineWatch {
        inner: reader,
        delimiter,
        offset: 0,
        breaks: 0,
        pending: VecDeque::new(),
        settled: 0,
        after_cr: false,
        state: QuoteState::FieldStart,
        opened_on: 1,
    };
    let result = parse_records(&mut watch, delimiter, sink);
    if let Err(InputError::Malformed { .. }) = result {
        // Read to the end: an error caused by an unclosed quote is best reported where it opened.
        let _ = std::io::copy(&mut watch, &mut std::io::sink());
    }
    if !matches!(result, Err(InputError::Cancelled { .. }) | Err(InputError::Io { .. }))
        && let Some(line) = watch.unterminated()
    {
        return Err(sink.malformed(line, "a quoted field is never closed (unterminated quote)"));
    }
    result.map(|()| delimiter)
}

fn parse_records<R: BufRead>(
    watch: &mut LineWatch<R>,
    delimiter: u8,
    sink: &mut ItemSink,
) -> Result<(), InputError> {
    let mut csv = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(&mut *watch);
    let mut record = ::csv::StringRecord::new();
    if !read(&mut csv, &mut record, sink)? {
        return Ok(());
    }
    let header_line = csv.get_mut().line_at(record.position().map_or(0, ::csv::Position::byte));
    if record.len() == 1
        && let Some(other) = [b';', b'\t', b'|', b',']
            .into_iter()
            .find(|&d| d != delimiter && record[0].contains(char::from(d)))
    {
        // One column that holds another delimiter is a file read with the wrong one: importing
        // it would turn every row into one field.
        let shown = if other == b'\t' { "\\t".to_owned() } else { char::from(other).to_string() };
        return Err(sink.malformed(
            header_line,
            format!("the header row is one column, {:?}, which holds {shown:?}: pass --delimiter '{shown}' if that separates the columns", &record[0]),
        ));
    }
    let mut columns: Vec<String> = Vec::with_capacity(record.len());
    let mut seen = HashSet::with_capacity(record.len());
    for (i, name) in record.iter().enumerate() {
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(
                sink.malformed(header_line, format!("column {} of the header row has no name", i + 1))
            );
        }
        if !seen.insert(name.clone()) {
            return Err(sink.malformed(header_line, format!("the header row names column {name:?} twice")));
        }
        columns.push(name);
    }
    loop {
        if !read(&mut csv, &mut record, sink)? {
            return Ok(());
        }
        let start = record.position().map_or(0, ::csv::Position::byte);
        // The parser skips empty lines; a line holding `""` is a record with one empty field.
        let line = csv.get_mut().line_at(start);
        if record.len() != columns.len() {
            return Err(sink.malformed(
                line,
                format!(
                    "expected {} fields (as in the header row), found {}{}",
                    columns.len(),
                    record.len(),
                    if delimiter == b',' { "" } else { " (fields are separated by the header's delimiter)" }
                ),
            ));
        }
        let object: Map<String, Value> =
            columns.iter().cloned().zip(record.iter().map(|v| Value::String(v.to_owned()))).collect();
        sink.push(Value::Object(object).to_string(), line)?;
    }
}

/// Reads the next record; an error names the line it is on.
fn read<R: BufRead>(
    csv: &mut ::csv::Reader<&mut LineWatch<R>>,
    record: &mut ::csv::StringRecord,
    sink: &ItemSink,
) -> Result<bool, InputError> {
    csv.read_record(record).map_err(|e| {
        let line = e.position().map(::csv::Position::byte).map(|byte| csv.get_mut().line_at(byte));
        csv_error(sink, &e, line)
    })
}

fn csv_error(sink: &ItemSink, e: &::csv::Error, line: Option<u64>) -> InputError {
    let line = line.unwrap_or(1);
    match e.kind() {
        ::csv::ErrorKind::Utf8 { .. } => sink.malformed(line, super::NOT_UTF8),
        ::csv::ErrorKind::Io(io) => sink.malformed(line, format!("read error: {io}")),
        _ => sink.malformed(line, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::detect_delimiter;

    #[test]
    fn the_header_says_which_delimiter_the_file_uses() {
        assert_eq!(detect_delimiter(b"name,email\nA;a,b\n"), b',');
        assert_eq!(detect_delimiter(b"name;email;note\nA;a@x;\"1,2\"\n"), b';');
        assert_eq!(detect_delimiter(b"name\temail\n"), b'\t');
        assert_eq!(detect_delimiter(b"\"a;b\",c\n"), b',');
        assert_eq!(detect_delimiter(b"single\n"), b',');
    }
}
