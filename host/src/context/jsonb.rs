//! JSON a processor hands the host for a `jsonb` column (processed data, log details, batch
//! metadata), checked the way PostgreSQL will check it — before it reaches SQL. A value
//! PostgreSQL would refuse inside the host's own statement would take the whole item
//! transaction with it; found here, it fails only the item, with a sentence that says what and
//! where.
//!
//! PostgreSQL refuses, and so does this check: text that is not JSON, a `\u` escape that is half
//! of a surrogate pair, a number outside `numeric`'s range (more than 131,072 digits before the
//! decimal point, more than 16,383 after it, an exponent of a billion or more), and nesting
//! deeper than [`MAX_DEPTH`] (PostgreSQL's own limit is its stack, which this stays well under).
//! One thing it cannot store is repaired instead: a `\u0000` escape becomes `\ufffd` (U+FFFD),
//! as NUL does everywhere a processor's text is stored. Numbers are never reformatted, so the
//! values jsonb keeps are exactly the ones the processor wrote.

use std::borrow::Cow;

/// Arrays and objects nested deeper than this are refused.
pub const MAX_DEPTH: usize = 512;

/// Digits `numeric` keeps before the decimal point (its weight is at most 32,767 base-10,000
/// digits).
const MAX_INTEGER_DIGITS: i64 = 131_072;
/// Digits `numeric` keeps after the decimal point.
const MAX_SCALE: i64 = 16_383;
/// PostgreSQL refuses exponents of `INT_MAX / 2` or more, whatever the digits.
const MAX_EXPONENT: i64 = 1_073_741_823;

/// Why PostgreSQL would refuse a JSON text, and where (a byte offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (at byte {at})")]
pub struct Refused {
    /// What is wrong, as a sentence fragment.
    pub what: String,
    /// Byte offset in the text.
    pub at: usize,
    /// The text is not JSON at all (rather than JSON that PostgreSQL cannot store).
    pub syntax: bool,
}

/// Checks `text` as PostgreSQL's `jsonb` input would, and returns it with every `\u0000` escape
/// made `\ufffd`: borrowed when it had none.
pub fn check(text: &str) -> Result<Cow<'_, str>, Refused> {
    let mut scan = Scanner { bytes: text.as_bytes(), at: 0, nuls: Vec::new() };
    scan.document()?;
    if scan.nuls.is_empty() {
        return Ok(Cow::Borrowed(text));
    }
    // Same length: each six-character escape is replaced by another.
    let mut out = text.as_bytes().to_vec();
    for at in scan.nuls {
        out[at..at + 6].copy_from_slice(b"\\ufffd");
    }
    // Only ASCII was replaced by ASCII, so the text is still UTF-8.
    Ok(Cow::Owned(String::from_utf8(out).unwrap_or_default()))
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Where each `\u0000` escape starts.
    nuls: Vec<usize>,
}

/// What a container expects next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Array,
    Object,
}

impl Scanner<'_> {
    /// Not JSON.
    fn refuse<T>(&self, what: impl Into<String>) -> Result<T, Refused> {
        Err(Refused { what: what.into(), at: self.at, syntax: true })
    }

    /// JSON, but not what PostgreSQL can store.
    fn unstorable<T>(&self, what: impl Into<String>) -> Result<T, Refused> {
        Err(Refused { what: what.into(), at: self.at, syntax: false })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), Refused> {
        self.skip_space();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            self.refuse(format!("expected {what}"))
        }
    }

    /// One value and nothing but white space after it. Containers are tracked on an explicit
    /// stack, so depth costs no host stack.
    fn document(&mut self) -> Result<(), Refused> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            // A value starts here.
            self.skip_space();
            match self.peek() {
                Some(b'[') | Some(b'{') => {
                    let kind = if self.peek() == Some(b'[') { Open::Array } else { Open::Object };
                    if open.len() >= MAX_DEPTH {
                        return self
                            .unstorable(format!("arrays and objects nested more than {MAX_DEPTH} deep"));
                    }
                    self.at += 1;
                    self.skip_space();
                    let close = if kind == Open::Array { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        open.push(kind);
                        if kind == Open::Object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                Some(_) => return self.refuse("expected a JSON value"),
                None => return self.refuse("the JSON text ends where a value should be"),
            }
            // A value ended: close what it ends, or go on to the next element.
            loop {
                let Some(&kind) = open.last() else {
                    self.skip_space();
                    if self.at < self.bytes.len() {
                        return self.refuse("unexpected text after the JSON value");
                    }
                    return Ok(());
                };
                self.skip_space();
                let close = if kind == Open::Array { b']' } else { b'}' };
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if kind == Open::Object {
                            self.key()?;
                        }
                        break;
                    }
                    Some(b) if b == close => {
                        self.at += 1;
                        open.pop();
                    }
                    _ => return self.refuse(format!("expected ',' or '{}'", close as char)),
                }
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<(), Refused> {
        self.skip_space();
        if self.peek() != Some(b'"') {
            return self.refuse("expected an object key (a string)");
        }
        self.string()?;
        self.expect(b':', "':' after an object key")
    }

    fn literal(&mut self, word: &str) -> Result<(), Refused> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            self.refuse("expected a JSON value")
        }
    }

    fn hex4(&mut self) -> Result<u32, Refused> {
        let Some(digits) = self.bytes.get(self.at..self.at + 4) else {
            return self.refuse("a \\u escape needs four hex digits");
        };
        let mut value = 0;
        for &d in digits {
            let Some(v) = (d as char).to_digit(16) else {
                return self.refuse("a \\u escape needs four hex digits");
            };
            value = value * 16 + v;
        }
        self.at += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<(), Refused> {
        self.at += 1; // the opening quote
        loop {
            match self.peek() {
                None => return self.refuse("a string is not closed"),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let escape = self.at;
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 1,
                        Some(b'u') => {
                            self.at += 1;
                            let unit = self.hex4()?;
                            match unit {
                                0 => self.nuls.push(escape),
                                0xD800..=0xDBFF => {
                                    // A high surrogate must be followed by an escaped low one.
                                    if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                                        self.at = escape;
                                        return self.unstorable(format!(
                                            "\\u{unit:04x} is half of a surrogate pair, alone (PostgreSQL refuses it)"
                                        ));
                                    }
                                    self.at += 2;
                                    let low = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&low) {
                                        self.at = escape;
                                        return self.unstorable(format!(
                                            "\\u{unit:04x} is half of a surrogate pair, alone (PostgreSQL refuses it)"
                                        ));
                                    }
                                }
                                0xDC00..=0xDFFF => {
                                    self.at = escape;
                                    return self.unstorable(format!(
                                        "\\u{unit:04x} is half of a surrogate pair, alone (PostgreSQL refuses it)"
                                    ));
                                }
                                _ => {}
                            }
                        }
                        _ => return self.refuse("an unknown escape in a string"),
                    }
                }
                Some(b) if b < 0x20 => return self.refuse("a control character in a string must be escaped"),
                Some(_) => self.at += 1,
            }
        }
    }

    /// A JSON number that `numeric` can hold.
    fn number(&mut self) -> Result<(), Refused> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = |s: &mut Self| {
            let from = s.at;
            while let Some(b'0'..=b'9') = s.peek() {
                s.at += 1;
            }
            from..s.at
        };
        let integer = digits(self);
        if integer.is_empty() {
            return self.refuse("a number needs digits");
        }
        if integer.len() > 1 && self.bytes[integer.start] == b'0' {
            self.at = integer.start;
            return self.refuse("a number may not start with 0");
        }
        let mut fraction = self.at..self.at;
        if self.peek() == Some(b'.') {
            self.at += 1;
            fraction = digits(self);
            if fraction.is_empty() {
                return self.refuse("a number needs digits after its decimal point");
            }
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            let negative = match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    true
                }
                Some(b'+') => {
                    self.at += 1;
                    false
                }
                _ => false,
            };
            let exp = digits(self);
            if exp.is_empty() {
                return self.refuse("a number needs digits in its exponent");
            }
            for &d in &self.bytes[exp] {
                exponent = exponent.saturating_mul(10).saturating_add(i64::from(d - b'0'));
            }
            if negative {
                exponent = -exponent;
            }
        }
        let out_of_range = |s: &mut Self| {
            s.at = start;
            s.unstorable("a number outside the range PostgreSQL's numeric can hold")
        };
        if exponent >= MAX_EXPONENT || exponent <= -MAX_EXPONENT {
            return out_of_range(self);
        }
        let scale = (fraction.len() as i64 - exponent).max(0);
        if scale > MAX_SCALE {
            return out_of_range(self);
        }
        // Digits before the decimal point once the exponent is applied, from the first nonzero
        // digit (zero itself has none).
        let significant = self.bytes[integer.clone()].iter().position(|&d| d != b'0');
        let before_point = match significant {
            Some(first) => (integer.len() - first) as i64 + exponent,
            None => match self.bytes[fraction.clone()].iter().position(|&d| d != b'0') {
                Some(zeros) => exponent - zeros as i64,
                None => 0,
            },
        };
        if before_point > MAX_INTEGER_DIGITS {
            return out_of_range(self);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{MAX_DEPTH, check};

    fn refused(text: &str) -> String {
        check(text).expect_err(text).to_string()
    }

    #[test]
    fn json_postgresql_takes_passes_unchanged() {
        for text in [
            "{}",
            "[]",
            " {\"a\": [1, -2.5, 3e10, true, false, null, \"x\"]} ",
            "\"\\ud83d\\ude00 and \\\" and \\\\u0000\"",
            "123456789012345.67",
            "12345678901234567890123456789",
            "0.1000000000000000055511151231257827",
            "1e131071",
            "99e131070",
            "1e-16383",
            "0e99999999",
            "-0",
            "1.10",
        ] {
            assert_eq!(check(text).expect(text), text, "{text}");
        }
    }

    #[test]
    fn what_postgresql_refuses_is_refused_with_its_place() {
        assert!(refused(r#"{"a":"\ud800"}"#).contains("surrogate"));
        assert!(refused(r#""\udc00x""#).contains("surrogate"));
        assert!(refused(r#""\ud800\u0041""#).contains("surrogate"));
        assert!(refused(r#"{"a": 1e999999}"#).contains("numeric"));
        assert!(refused("1e131072").contains("numeric"));
        assert!(refused("0.1e131073").contains("numeric"));
        assert!(refused("1e-16384").contains("numeric"));
        assert!(refused("0e-99999").contains("numeric"));
        assert!(refused("1e2147483648").contains("numeric"));
        assert!(refused(&format!("0.{}", "1".repeat(16_384))).contains("numeric"));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(refused(&deep).contains("nested"));
        let deep_enough = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check(&deep_enough).is_ok());
        assert_eq!(
            refused(r#"{"a": 1e999999}"#),
            "a number outside the range PostgreSQL's numeric can hold (at byte 6)"
        );
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "01",
            "1.",
            "1e",
            "nul",
            "\"a",
            "\"\t\"",
            "1 2",
            "NaN",
            "'a'",
        ] {
            assert!(check(text).is_err(), "{text:?} passed");
        }
    }

    #[test]
    fn nul_escapes_become_the_replacement_character_and_nothing_else_changes() {
        assert_eq!(
            check(r#"{"k\u0000":"v\u0000", "n": 1.50}"#).unwrap(),
            r#"{"k\ufffd":"v\ufffd", "n": 1.50}"#
        );
        // An escaped backslash followed by "u0000" is text, not an escape.
        assert_eq!(check(r#""\\u0000""#).unwrap(), r#""\\u0000""#);
    }
}
