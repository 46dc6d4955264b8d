//! The validation kit: typed readers of an item's fields that fail with a standard code, the
//! field's name and a sentence, so a processor's rules are one line each.
//!
//! ```
//! # use ingot_guest::prelude::*;
//! # fn rules(item: &Item) -> Result<(), ItemError> {
//! let order_id = item.get("Order ID").upper().pattern("[A-Z0-9-]{3,20}").text()?;
//! let email = item.get("Customer Email").email()?;
//! let total = item.get("Total").min(0).decimal(2)?;
//! let notes = item.get("Notes").max_len(500).optional().text()?;
//! # Ok(()) }
//! ```
//!
//! A column is found by its exact name, else by the one name that is the same ignoring case,
//! spaces and punctuation (`"Order ID"` finds `order_id`, `ORDER-ID`, `OrderId`). Values are
//! trimmed; a blank one is missing. Codes: `missing_<field>` when a required value is missing,
//! `invalid_<field>` for any other failure, with `<field>` the name asked for in snake_case
//! (`"Order ID"` → `order_id`); `.code(…)` and `.missing_code(…)` override them. Messages name
//! the field and the rule, never the value, so that summaries count them together. The Python
//! and JavaScript helpers apply the same rules with the same codes and messages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::db::{SqlValue, ToSql};
use crate::{Item, ItemError};

/// One field of an item, with the rules to check it by; end with a reader (`text`, `email`,
/// `integer`, `decimal`, `date`, `timestamp`, `one_of`, `boolean`), or with `.optional()` and
/// then a reader, to allow it to be missing.
#[derive(Debug, Clone)]
#[must_use = "a field is read by a reader such as `.text()?`"]
pub struct Field<'a> {
    item: &'a Item,
    name: String,
    upper: bool,
    lower: bool,
    min_len: Option<usize>,
    max_len: Option<usize>,
    pattern: Option<String>,
    min: Option<String>,
    max: Option<String>,
    comma: bool,
    format: Option<String>,
    code: Option<String>,
    missing_code: Option<String>,
}

/// A field that may be missing: its readers return `None` for a missing or blank value.
#[derive(Debug, Clone)]
#[must_use = "a field is read by a reader such as `.text()?`"]
pub struct Optional<'a>(Field<'a>);

impl Item {
    /// Field `name` of the item, to read with the validation kit (see [`Field`]).
    pub fn get(&self, name: &str) -> Field<'_> {
        Field {
            item: self,
            name: name.to_owned(),
            upper: false,
            lower: false,
            min_len: None,
            max_len: None,
            pattern: None,
            min: None,
            max: None,
            comma: false,
            format: None,
            code: None,
            missing_code: None,
        }
    }
}

impl<'a> Field<'a> {
    /// Upper-cases the value before it is checked.
    pub fn upper(mut self) -> Self {
        self.upper = true;
        self
    }

    /// Lower-cases the value before it is checked.
    pub fn lower(mut self) -> Self {
        self.lower = true;
        self
    }

    /// At least `n` characters.
    pub fn min_len(mut self, n: usize) -> Self {
        self.min_len = Some(n);
        self
    }

    /// At most `n` characters.
    pub fn max_len(mut self, n: usize) -> Self {
        self.max_len = Some(n);
        self
    }

    /// The whole value must match this regular expression (after upper/lower).
    pub fn pattern(mut self, regex: &str) -> Self {
        self.pattern = Some(regex.to_owned());
        self
    }

    /// A number at least `min` (compared exactly: `min("0.01")`, `min(0)`).
    pub fn min(mut self, min: impl fmt::Display) -> Self {
        self.min = Some(min.to_string());
        self
    }

    /// A number at most `max` (compared exactly).
    pub fn max(mut self, max: impl fmt::Display) -> Self {
        self.max = Some(max.to_string());
        self
    }

    /// Decimals are written with a comma (`12,50`), not a dot; a dot is then refused.
    pub fn decimal_comma(mut self) -> Self {
        self.comma = true;
        self
    }

    /// Dates and timestamps are written in this format instead of ISO 8601: `%Y` (4 digits),
    /// `%m %d %H %M %S` (1 or 2 digits), `%%`, and literal characters, e.g. `"%d/%m/%Y"`.
    pub fn format(mut self, format: &str) -> Self {
        self.format = Some(format.to_owned());
        self
    }

    /// The code of an invalid value, instead of `invalid_<field>`.
    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// The code of a missing value, instead of `missing_<field>`.
    pub fn missing_code(mut self, code: &str) -> Self {
        self.missing_code = Some(code.to_owned());
        self
    }

    /// Allows the value to be missing (or blank): the reader then returns `None`.
    pub fn optional(self) -> Optional<'a> {
        Optional(self)
    }

    /// The field's name in snake_case, as codes use it.
    fn key(&self) -> String {
        snake_case(&self.name)
    }

    fn missing(&self) -> ItemError {
        let code = self.missing_code.clone().unwrap_or_else(|| format!("missing_{}", self.key()));
        ItemError::invalid(format!("{} is required", self.name)).code(code).field(&self.name)
    }

    /// An invalid value: `{name} {rule}`.
    fn invalid(&self, rule: impl fmt::Display) -> ItemError {
        let code = self.code.clone().unwrap_or_else(|| format!("invalid_{}", self.key()));
        ItemError::invalid(format!("{} {rule}", self.name)).code(code).field(&self.name)
    }

    /// The value as text, trimmed, upper- or lower-cased, its length and pattern checked; `None`
    /// when missing or blank.
    fn value(&self) -> Result<Option<String>, ItemError> {
        let Some(raw) = self.item.lookup(&self.name)? else { return Ok(None) };
        let json = raw.get().trim();
        let text = match json.as_bytes().first() {
            Some(b'n') => return Ok(None),
            Some(b'"') => serde_json::from_str::<String>(json).map_err(|e| {
                ItemError::invalid(format!("item data is not valid JSON: {e}")).code("invalid_data")
            })?,
            Some(b'{' | b'[') => return Err(self.invalid("must be a single value, not a list or object")),
            // Numbers and booleans as written: no digit is lost to a float.
            _ => json.to_owned(),
        };
        let mut text = text.trim().to_owned();
        if text.is_empty() {
            return Ok(None);
        }
        if self.upper {
            text = text.to_uppercase();
        }
        if self.lower {
            text = text.to_lowercase();
        }
        let chars = text.chars().count();
        if let Some(n) = self.min_len.filter(|n| chars < *n) {
            return Err(self.invalid(format!("must be at least {n} characters")));
        }
        if let Some(n) = self.max_len.filter(|n| chars > *n) {
            return Err(self.invalid(format!("must be at most {n} characters")));
        }
        if let Some(pattern) = &self.pattern
            && !full_match(pattern, &text).map_err(|e| {
                ItemError::invalid(format!(
                    "the processor's pattern for {} is not a regular expression: {e}",
                    self.name
                ))
                .code("invalid_pattern")
            })?
        {
            return Err(self.invalid(format!("does not match the expected pattern {pattern}")));
        }
        Ok(Some(text))
    }

    fn present(&self) -> Result<String, ItemError> {
        self.value()?.ok_or_else(|| self.missing())
    }

    fn parse_text(&self, text: String) -> Result<String, ItemError> {
        Ok(text)
    }

    fn parse_email(&self, text: String) -> Result<String, ItemError> {
        let email = text.to_lowercase();
        if is_email(&email) { Ok(email) } else { Err(self.invalid("is not a valid email address")) }
    }

    fn parse_one_of(&self, text: String, choices: &[&str]) -> Result<String, ItemError> {
        if choices.contains(&text.as_str()) {
            Ok(text)
        } else {
            Err(self.invalid(format!("must be one of {}", choices.join(", "))))
        }
    }

    fn parse_boolean(&self, text: String) -> Result<bool, ItemError> {
        match text.to_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => Ok(true),
            "false" | "no" | "n" | "0" => Ok(false),
            _ => Err(self.invalid("must be true or false")),
        }
    }

    /// Checks `number` (an exact decimal, dot-separated) against min and max.
    fn bounded(&self, number: &str) -> Result<(), ItemError> {
        for (bound, at_least) in [(&self.min, true), (&self.max, false)] {
            let Some(bound) = bound else { continue };
            let ordering = compare_decimals(number, bound).ok_or_else(|| {
                ItemError::invalid(format!(
                    "the processor's bound {bound:?} for {} is not a number",
                    self.name
                ))
                .code("invalid_bound")
            })?;
            if at_least && ordering.is_lt() {
                return Err(self.invalid(format!("must be at least {bound}")));
            }
            if !at_least && ordering.is_gt() {
                return Err(self.invalid(format!("must be at most {bound}")));
            }
        }
        Ok(())
    }

    fn parse_integer(&self, text: String) -> Result<i64, ItemError> {
        let digits = text.strip_prefix(['+', '-']).unwrap_or(&text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.invalid("must be a whole number"));
        }
        let n: i64 =
            text.trim_start_matches('+').parse().map_err(|_| self.invalid("must be a whole number"))?;
        self.bounded(&n.to_string())?;
        Ok(n)
    }

    fn parse_decimal(&self, text: String, scale: u32) -> Result<Decimal, ItemError> {
        let (separator, other, wrong) = if self.comma {
            (',', '.', "must be a number with a decimal comma")
        } else {
            ('.', ',', "must be a number with a dot as decimal separator")
        };
        let unsigned = text.strip_prefix(['+', '-']).unwrap_or(&text);
        let (whole, fraction) = match unsigned.split_once(separator) {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (unsigned, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|f| !digits(f)) || unsigned.contains(other) {
            return Err(self.invalid(wrong));
        }
        if fraction.is_some_and(|f| f.len() > scale as usize) {
            return Err(self.invalid(format!("must have at most {scale} decimal places")));
        }
        let sign = if text.starts_with('-') { "-" } else { "" };
        let number = match fraction {
            Some(fraction) => format!("{sign}{whole}.{fraction}"),
            None => format!("{sign}{whole}"),
        };
        self.bounded(&number)?;
        Ok(Decimal(number))
    }

    fn date_form(&self) -> &str {
        self.format.as_deref().unwrap_or("YYYY-MM-DD")
    }

    fn parse_date(&self, text: String) -> Result<Date, ItemError> {
        let wrong = || self.invalid(format!("must be a date as {}", self.date_form()));
        let parts = match &self.format {
            Some(format) => strptime(format, &text).ok_or_else(wrong)?,
            None => iso_date(&text).ok_or_else(wrong)?,
        };
        let (Some(year), Some(month), Some(day)) = (parts.year, parts.month, parts.day) else {
            return Err(wrong());
        };
        if !is_day(year, month, day) {
            return Err(self.invalid("is not a day of the calendar"));
        }
        Ok(Date { year, month, day })
    }

    fn parse_timestamp(&self, text: String) -> Result<Timestamp, ItemError> {
        let form = self.format.as_deref().unwrap_or("YYYY-MM-DDTHH:MM:SS");
        let wrong = || self.invalid(format!("must be a timestamp as {form}"));
        let (parts, fraction, zone) = match &self.format {
            Some(format) => (strptime(format, &text).ok_or_else(wrong)?, String::new(), String::new()),
            None => iso_timestamp(&text).ok_or_else(wrong)?,
        };
        let (Some(year), Some(month), Some(day)) = (parts.year, parts.month, parts.day) else {
            return Err(wrong());
        };
        let (hour, minute, second) =
            (parts.hour.unwrap_or(0), parts.minute.unwrap_or(0), parts.second.unwrap_or(0));
        if hour > 23 || minute > 59 || second > 59 {
            return Err(wrong());
        }
        if !is_day(year, month, day) {
            return Err(self.invalid("is not a day of the calendar"));
        }
        Ok(Timestamp(format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
        )))
    }
}

/// The readers, each for a required field (`Field`) and a field that may be missing (`Optional`).
macro_rules! readers {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty = $parse:ident;)*) => {
        impl Field<'_> {
            $($(#[$doc])* pub fn $name(self, $($arg: $ty),*) -> Result<$out, ItemError> {
                let text = self.present()?;
                self.$parse(text, $($arg),*)
            })*
        }
        impl Optional<'_> {
            $($(#[$doc])* pub fn $name(self, $($arg: $ty),*) -> Result<Option<$out>, ItemError> {
                match self.0.value()? {
                    Some(text) => self.0.$parse(text, $($arg),*).map(Some),
                    None => Ok(None),
                }
            })*
        }
    };
}

readers! {
    /// The value as text (trimmed).
    fn text() -> String = parse_text;
    /// An email address, lower-cased.
    fn email() -> String = parse_email;
    /// One of `choices` (after upper/lower).
    fn one_of(choices: &[&str]) -> String = parse_one_of;
    /// `true`/`false`, `yes`/`no`, `y`/`n` or `1`/`0`, in any case.
    fn boolean() -> bool = parse_boolean;
    /// A whole number (an optional sign and digits), within min and max.
    fn integer() -> i64 = parse_integer;
    /// A decimal number with at most `scale` decimal places, within min and max, written with a
    /// dot (or a comma, with `decimal_comma`); kept exactly as written.
    fn decimal(scale: u32) -> Decimal = parse_decimal;
    /// A day of the calendar, as `YYYY-MM-DD` (or the `format`).
    fn date() -> Date = parse_date;
    /// A date and time, as `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH:MM]` (or the `format`).
    fn timestamp() -> Timestamp = parse_timestamp;
}

impl Item {
    /// The raw JSON of the column `name` (exact, else the one loosely equal name), `None` when
    /// there is none.
    fn lookup(&self, name: &str) -> Result<Option<&RawValue>, ItemError> {
        let columns = self.columns()?;
        if let Some((_, value)) = columns.iter().find(|(key, _)| key == name) {
            return Ok(Some(value));
        }
        let wanted = loose(name);
        let found: Vec<&crate::item::Column> =
            columns.iter().filter(|(key, _)| loose(key) == wanted).collect();
        match found.as_slice() {
            [] => Ok(None),
            [(_, value)] => Ok(Some(value)),
            many => {
                let names: Vec<String> = many.iter().map(|(key, _)| format!("{key:?}")).collect();
                Err(ItemError::invalid(format!("{name} matches more than one column: {}", names.join(", ")))
                    .code("invalid_data")
                    .field(name))
            }
        }
    }
}

/// A name without case, spaces or punctuation: how columns are matched loosely.
fn loose(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// `"Order ID"` → `order_id`.
pub(crate) fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for word in name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push('_');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

thread_local! {
    // Patterns are compiled once per instance, not once per item.
    static PATTERNS: RefCell<HashMap<String, regex_lite::Regex>> = RefCell::new(HashMap::new());
}

fn full_match(pattern: &str, text: &str) -> Result<bool, regex_lite::Error> {
    PATTERNS.with(|patterns| {
        let mut patterns = patterns.borrow_mut();
        if !patterns.contains_key(pattern) {
            let regex = regex_lite::Regex::new(&format!("^(?:{pattern})$"))?;
            patterns.insert(pattern.to_owned(), regex);
        }
        Ok(patterns.get(pattern).is_some_and(|regex| regex.is_match(text)))
    })
}

fn is_email(s: &str) -> bool {
    if s.len() > 254 || s.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else { return false };
    if local.is_empty() || domain.contains('@') || !domain.contains('.') {
        return false;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    })
}

/// Compares two decimal numbers exactly; `None` when either is not one.
fn compare_decimals(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    fn parts(s: &str) -> Option<(bool, String, String)> {
        let s = s.trim();
        let negative = s.starts_with('-');
        let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) {
            return None;
        }
        let whole = whole.trim_start_matches('0').to_owned();
        let fraction = fraction.trim_end_matches('0').to_owned();
        // -0 is 0.
        let negative = negative && !(whole.is_empty() && fraction.is_empty());
        Some((negative, whole, fraction))
    }
    let (a_neg, a_whole, a_fraction) = parts(a)?;
    let (b_neg, b_whole, b_fraction) = parts(b)?;
    let magnitude = a_whole
        .len()
        .cmp(&b_whole.len())
        .then_with(|| a_whole.cmp(&b_whole))
        .then_with(|| a_fraction.cmp(&b_fraction));
    Some(match (a_neg, b_neg) {
        (false, true) => std::cmp::Ordering::Greater,
        (true, false) => std::cmp::Ordering::Less,
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
    })
}

/// Date and time fields read from a text.
#[derive(Debug, Default)]
struct Parts {
    year: Option<i32>,
    month: Option<u32>,
    day: Option<u32>,
    hour: Option<u32>,
    minute: Option<u32>,
    second: Option<u32>,
}

fn digits_at(text: &[u8], at: usize, min: usize, max: usize) -> Option<(u32, usize)> {
    let count = text[at.min(text.len())..].iter().take(max).take_while(|b| b.is_ascii_digit()).count();
    if count < min {
        return None;
    }
    let value = std::str::from_utf8(&text[at..at + count]).ok()?.parse().ok()?;
    Some((value, at + count))
}

/// Reads `text` in `format` (`%Y %m %d %H %M %S %%` and literals), all of it.
fn strptime(format: &str, text: &str) -> Option<Parts> {
    let (text, mut at, mut parts) = (text.as_bytes(), 0, Parts::default());
    let mut spec = format.chars();
    while let Some(c) = spec.next() {
        if c != '%' {
            let mut buf = [0; 4];
            let literal = c.encode_utf8(&mut buf).as_bytes();
            if !text[at.min(text.len())..].starts_with(literal) {
                return None;
            }
            at += literal.len();
            continue;
        }
        let directive = spec.next()?;
        if directive == '%' {
            if text.get(at) != Some(&b'%') {
                return None;
            }
            at += 1;
            continue;
        }
        let (value, next) = match directive {
            'Y' => digits_at(text, at, 4, 4)?,
            'm' | 'd' | 'H' | 'M' | 'S' => digits_at(text, at, 1, 2)?,
            _ => return None,
        };
        at = next;
        match directive {
            'Y' => parts.year = i32::try_from(value).ok(),
            'm' => parts.month = Some(value),
            'd' => parts.day = Some(value),
            'H' => parts.hour = Some(value),
            'M' => parts.minute = Some(value),
            _ => parts.second = Some(value),
        }
    }
    (at == text.len()).then_some(parts)
}

fn iso_date(text: &str) -> Option<Parts> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, _) = digits_at(b, 0, 4, 4)?;
    let (month, _) = digits_at(b, 5, 2, 2)?;
    let (day, _) = digits_at(b, 8, 2, 2)?;
    Some(Parts { year: i32::try_from(year).ok(), month: Some(month), day: Some(day), ..Parts::default() })
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH:MM]`: the parts, the fraction (with its dot) and
/// the zone as written.
fn iso_timestamp(text: &str) -> Option<(Parts, String, String)> {
    let b = text.as_bytes();
    if b.len() < 16 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    let mut parts = iso_date(text.get(..10)?)?;
    parts.hour = Some(digits_at(b, 11, 2, 2)?.0);
    parts.minute = Some(digits_at(b, 14, 2, 2)?.0);
    let mut at = 16;
    if b.get(at) == Some(&b':') {
        parts.second = Some(digits_at(b, at + 1, 2, 2)?.0);
        at += 3;
    }
    let mut fraction = String::new();
    if b.get(at) == Some(&b'.') && parts.second.is_some() {
        let (_, end) = digits_at(b, at + 1, 1, 9)?;
        fraction = text.get(at..end)?.to_owned();
        at = end;
    }
    let zone = text.get(at..)?;
    let zone_ok = match zone.as_bytes() {
        [] => true,
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
                && (*h1 - b'0') * 10 + (*h2 - b'0') <= 23
                && (*m1 - b'0') * 10 + (*m2 - b'0') <= 59
        }
        _ => false,
    };
    let zone = if zone == "z" { "Z".to_owned() } else { zone.to_owned() };
    zone_ok.then_some((parts, fraction, zone))
}

fn is_day(year: i32, month: u32, day: u32) -> bool {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// An exact decimal number, as written (with a dot). Binds as `numeric` text, serializes as a
/// JSON string, so no digit is lost to a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Decimal(String);

impl Decimal {
    /// The number as text, e.g. `"12.50"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ToSql for Decimal {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Text(self.0.clone())
    }
}

/// A day of the calendar. Displays, binds and serializes as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// The year.
    pub year: i32,
    /// The month, 1-12.
    pub month: u32,
    /// The day of the month, from 1.
    pub day: u32,
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl ToSql for Date {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Text(self.to_string())
    }
}

/// A date and time, as ISO 8601 text (`2024-03-01T12:00:00`, with the fraction and the zone the
/// value had). Binds as text PostgreSQL reads as `timestamp`/`timestamptz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Timestamp(String);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> SqlValue {
        SqlValue::Text(self.0.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn item(data: serde_json::Value) -> Item {
        Item::from_json(&data)
    }

    fn code(e: ItemError) -> (String, String, Option<String>) {
        (
            e.code_str().unwrap_or_default().to_owned(),
            e.message().to_owned(),
            e.field_str().map(str::to_owned),
        )
    }

    #[test]
    fn columns_are_found_ignoring_case_spaces_and_punctuation_and_exact_names_win() {
        let row = item(serde_json::json!({"order_id": " a-1 ", "Order ID": "exact", "ORDER-NO": "x"}));
        assert_eq!(row.get("Order ID").text().unwrap(), "exact");
        assert_eq!(row.get("order-no").text().unwrap(), "x");
        let loose = item(serde_json::json!({"ORDER ID": " a-1 "}));
        assert_eq!(loose.get("Order ID").upper().text().unwrap(), "A-1");
        let twice = item(serde_json::json!({"order id": "a", "Order-Id": "b"}));
        let (c, m, f) = code(twice.get("OrderId").text().unwrap_err());
        assert_eq!((c.as_str(), f.as_deref()), ("invalid_data", Some("OrderId")));
        assert!(m.contains("matches more than one column"), "{m}");
    }

    #[test]
    fn missing_blank_and_null_values_fail_required_fields_and_are_none_when_optional() {
        let row = item(serde_json::json!({"Name": "  ", "Notes": null}));
        for name in ["Name", "Notes", "Absent Field"] {
            let (c, m, f) = code(row.get(name).text().unwrap_err());
            assert_eq!(c, format!("missing_{}", snake_case(name)));
            assert_eq!((m, f), (format!("{name} is required"), Some(name.to_owned())));
            assert_eq!(row.get(name).optional().text().unwrap(), None);
        }
        let (c, ..) = code(row.get("Name").missing_code("no_name").text().unwrap_err());
        assert_eq!(c, "no_name");
    }

    #[test]
    fn text_rules_check_length_and_pattern_after_case() {
        let row = item(serde_json::json!({"Code": " ab-12 ", "List": [1]}));
        assert_eq!(row.get("Code").upper().pattern("[A-Z]{2}-[0-9]+").text().unwrap(), "AB-12");
        let (c, m, _) = code(row.get("Code").pattern("[A-Z]{2}-[0-9]+").text().unwrap_err());
        assert_eq!(
            (c.as_str(), m.as_str()),
            ("invalid_code", "Code does not match the expected pattern [A-Z]{2}-[0-9]+")
        );
        assert_eq!(
            code(row.get("Code").max_len(4).text().unwrap_err()).1,
            "Code must be at most 4 characters"
        );
        assert_eq!(
            code(row.get("Code").min_len(6).text().unwrap_err()).1,
            "Code must be at least 6 characters"
        );
        assert_eq!(code(row.get("Code").code("bad").max_len(1).text().unwrap_err()).0, "bad");
        assert_eq!(
            code(row.get("List").text().unwrap_err()).1,
            "List must be a single value, not a list or object"
        );
        assert_eq!(code(row.get("Code").pattern("(").text().unwrap_err()).0, "invalid_pattern");
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        let row = item(
            serde_json::json!({"a": "Ada@Example.COM", "b": "a@b", "c": "a b@c.de", "d": "a@-b.de", "e": "a@b..de"}),
        );
        assert_eq!(row.get("a").email().unwrap(), "ada@example.com");
        for bad in ["b", "c", "d", "e"] {
            assert_eq!(
                code(row.get(bad).email().unwrap_err()).1,
                format!("{bad} is not a valid email address")
            );
        }
    }

    #[test]
    fn numbers_are_exact_and_bounded() {
        let row = item(
            serde_json::json!({"q": "+12", "f": "1.0", "t": "12.50", "c": "12,5", "neg": "-0.01", "big": "99999999999999999999.99"}),
        );
        let written = r#"{"n": 12.50}"#.to_owned();
        let number = Item::from_wit(crate::__private::wit::Item {
            id: String::new(),
            index: 0,
            data: written,
            attempt: 1,
        });
        assert_eq!(row.get("q").min(1).max(12).integer().unwrap(), 12);
        assert_eq!(code(row.get("q").max(11).integer().unwrap_err()).1, "q must be at most 11");
        assert_eq!(code(row.get("f").integer().unwrap_err()).1, "f must be a whole number");
        assert_eq!(row.get("t").decimal(2).unwrap().as_str(), "12.50");
        assert_eq!(number.get("n").decimal(2).unwrap().as_str(), "12.50", "a JSON number keeps its digits");
        assert_eq!(code(row.get("t").decimal(1).unwrap_err()).1, "t must have at most 1 decimal places");
        assert_eq!(
            code(row.get("c").decimal(2).unwrap_err()).1,
            "c must be a number with a dot as decimal separator"
        );
        assert_eq!(row.get("c").decimal_comma().decimal(2).unwrap().as_str(), "12.5");
        assert_eq!(
            code(row.get("t").decimal_comma().decimal(2).unwrap_err()).1,
            "t must be a number with a decimal comma"
        );
        assert_eq!(code(row.get("neg").min(0).decimal(2).unwrap_err()).1, "neg must be at least 0");
        assert!(row.get("big").min("0.01").max("100000000000000000000").decimal(2).is_ok());
        assert!(row.get("big").max("99999999999999999999.98").decimal(2).is_err());
    }

    #[test]
    fn dates_and_timestamps_are_days_of_the_calendar() {
        let row = item(
            serde_json::json!({"ok": "2024-02-29", "no": "2023-02-29", "apr": "2024-04-31", "us": "3/1/2024", "bad": "2024-1-05"}),
        );
        assert_eq!(row.get("ok").date().unwrap().to_string(), "2024-02-29");
        assert_eq!(code(row.get("no").date().unwrap_err()).1, "no is not a day of the calendar");
        assert_eq!(code(row.get("apr").date().unwrap_err()).1, "apr is not a day of the calendar");
        assert_eq!(code(row.get("bad").date().unwrap_err()).1, "bad must be a date as YYYY-MM-DD");
        assert_eq!(row.get("us").format("%m/%d/%Y").date().unwrap().to_string(), "2024-03-01");
        assert_eq!(
            code(row.get("us").format("%d.%m.%Y").date().unwrap_err()).1,
            "us must be a date as %d.%m.%Y"
        );
        let ts = item(
            serde_json::json!({"a": "2024-03-01 12:30", "b": "2024-03-01T12:30:05.25+02:00", "c": "2024-03-01T24:00:00", "d": "2024-02-30T10:00:00Z"}),
        );
        assert_eq!(ts.get("a").timestamp().unwrap().to_string(), "2024-03-01T12:30:00");
        assert_eq!(ts.get("b").timestamp().unwrap().to_string(), "2024-03-01T12:30:05.25+02:00");
        assert_eq!(
            code(ts.get("c").timestamp().unwrap_err()).1,
            "c must be a timestamp as YYYY-MM-DDTHH:MM:SS"
        );
        assert_eq!(code(ts.get("d").timestamp().unwrap_err()).1, "d is not a day of the calendar");
    }

    #[test]
    fn choices_and_booleans() {
        let row = item(serde_json::json!({"Currency": "eur", "Paid": "Yes", "x": "maybe"}));
        assert_eq!(row.get("Currency").upper().one_of(&["EUR", "USD"]).unwrap(), "EUR");
        assert_eq!(
            code(row.get("Currency").one_of(&["EUR", "USD"]).unwrap_err()).1,
            "Currency must be one of EUR, USD"
        );
        assert!(row.get("Paid").boolean().unwrap());
        assert_eq!(code(row.get("x").boolean().unwrap_err()).1, "x must be true or false");
        assert_eq!(row.get("absent").optional().boolean().unwrap(), None);
    }

    #[test]
    fn snake_case_names_the_codes() {
        assert_eq!(snake_case("Order ID"), "order_id");
        assert_eq!(snake_case(" Customer  E-mail "), "customer_e_mail");
        assert_eq!(snake_case("total"), "total");
    }
}
