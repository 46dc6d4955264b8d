//! JSON inputs: one array of items (streamed element by element, never held whole), or NDJSON
//! (one value per line; blank lines are skipped).

use std::cell::RefCell;
use std::fmt;
use std::io::{BufRead, Read};
use std::rc::Rc;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{InputError, ItemSink};

/// Where the JSON parser is in the file (it reads one byte at a time), and the line where the
/// element it is reading began.
#[derive(Debug, Default)]
struct Position {
    line: u64,
    after_cr: bool,
    /// Waiting for the next element's first byte.
    marked: bool,
    element_line: u64,
}

/// A reader that keeps [`Position`] up to date.
struct Lines<R> {
    inner: R,
    at: Rc<RefCell<Position>>,
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut at = self.at.borrow_mut();
        for &b in &buf[..n] {
            if (b == b'\n' && !at.after_cr) || b == b'\r' {
                at.line += 1;
            }
            at.after_cr = b == b'\r';
            if at.marked && !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b'[') {
                at.marked = false;
                at.element_line = at.line;
            }
        }
        Ok(n)
    }
}

/// Parses a top-level JSON array, handing each element to `sink` as soon as it is read.
pub(super) fn parse_array(mut reader: impl BufRead, sink: &mut ItemSink) -> Result<(), InputError> {
    let bom = reader
        .fill_buf()
        .map_err(|e| sink.malformed(1, format!("read error: {e}")))?
        .starts_with(b"\xEF\xBB\xBF");
    if bom {
        reader.consume(3);
    }
    let at = Rc::new(RefCell::new(Position { line: 1, ..Position::default() }));
    let mut de = serde_json::Deserializer::from_reader(Lines { inner: reader, at: Rc::clone(&at) });
    let mut failure = None;
    let seed = ArraySeed { sink, failure: &mut failure, at };
    let result = seed.deserialize(&mut de).and_then(|()| de.end());
    if let Some(failure) = failure {
        return Err(failure);
    }
    result.map_err(|e| sink_error(sink, &e))
}

fn sink_error(sink: &ItemSink, e: &serde_json::Error) -> InputError {
    let message = e.to_string();
    // serde_json appends " at line L column C"; the line goes in front instead.
    let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
    let message = if message.starts_with("invalid type") {
        "expected a JSON array of items (for one item per line, use .ndjson)".to_owned()
    } else {
        message
    };
    sink.malformed(e.line() as u64, message)
}

struct ArraySeed<'a> {
    sink: &'a mut ItemSink,
    failure: &'a mut Option<InputError>,
    at: Rc<RefCell<Position>>,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Each element's text as written: parsing it into a Value would round its numbers
        // through f64.
        loop {
            self.at.borrow_mut().marked = true;
            let Some(value) = seq.next_element::<Box<RawValue>>()? else { break };
            let line = self.at.borrow().element_line;
            if let Err(e) = self.sink.push(value.get().to_owned(), line) {
                *self.failure = Some(e);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// Parses NDJSON: one JSON value per line.
pub(super) fn parse_lines(mut reader: impl BufRead, sink: &mut ItemSink) -> Result<(), InputError> {
    let mut line = Vec::new();
    let mut number = 0_u64;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| sink.malformed(number + 1, format!("read error: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let text = std::str::from_utf8(&line).map_err(|_| sink.malformed(number, super::NOT_UTF8))?;
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            continue;
        }
        if text.starts_with('[') {
            return Err(sink.malformed(
                number,
                "this line is a JSON array, but NDJSON holds one item per line; for one array of items, \
                 name the file .json or pass --format json",
            ));
        }
        // The line's text as written, checked as PostgreSQL will check it.
        sink.push(text.to_owned(), number)?;
    }
}
