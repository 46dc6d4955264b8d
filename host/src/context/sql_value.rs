//! Typed SQL values across the guest boundary: binding a guest's `sql-value` to a parameter of
//! whatever type PostgreSQL inferred for it, and reading result columns back as `sql-value`s.
//!
//! Values travel in PostgreSQL's binary format. The host asks the server for each parameter's
//! type (the statement is described once per connection and cached), then converts the guest's
//! value to exactly that type, so `$1` may be an `int4`, a `numeric(12,2)`, a domain, an enum or
//! a `text[]` and the guest still passes a plain int, text or JSON array. Text converts to any
//! scalar type the way PostgreSQL's own text input would, because CSV data arrives as text.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgTypeKind};
use sqlx::{Encode, Postgres, Type, TypeInfo};
use uuid::Uuid;

use crate::runtime::bindings::SqlValue;

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The scalar types the context converts. Anything else must be cast in the SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    /// Every type whose binary form is its UTF-8 text: text, varchar, bpchar, name, enums, citext.
    Text,
    Json,
    Jsonb,
    Uuid,
    TimestampTz,
    Timestamp,
    Date,
    Bytea,
}

/// What a PostgreSQL type is, for conversion purposes.
#[derive(Debug, Clone)]
enum Shape {
    Scalar(Scalar),
    Array { element: Scalar, element_type: PgTypeInfo },
}

fn scalar_of(ty: &PgTypeInfo) -> Option<Scalar> {
    match ty.kind() {
        PgTypeKind::Domain(base) => return scalar_of(base),
        PgTypeKind::Enum(_) => return Some(Scalar::Text),
        _ => {}
    }
    Some(match ty.name() {
        "BOOL" => Scalar::Bool,
        "INT2" => Scalar::Int2,
        "INT4" => Scalar::Int4,
        "INT8" => Scalar::Int8,
        "FLOAT4" => Scalar::Float4,
        "FLOAT8" => Scalar::Float8,
        "NUMERIC" => Scalar::Numeric,
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "UNKNOWN" | "citext" => Scalar::Text,
        "JSON" => Scalar::Json,
        "JSONB" => Scalar::Jsonb,
        "UUID" => Scalar::Uuid,
        "TIMESTAMPTZ" => Scalar::TimestampTz,
        "TIMESTAMP" => Scalar::Timestamp,
        "DATE" => Scalar::Date,
        "BYTEA" => Scalar::Bytea,
        _ => return None,
    })
}

fn shape_of(ty: &PgTypeInfo) -> Option<Shape> {
    match ty.kind() {
        PgTypeKind::Array(element) => {
            Some(Shape::Array { element: scalar_of(element)?, element_type: element.clone() })
        }
        PgTypeKind::Domain(base) => shape_of(base),
        _ => scalar_of(ty).map(Shape::Scalar),
    }
}

fn type_label(ty: &PgTypeInfo) -> String {
    ty.name().to_lowercase()
}

/// A guest value converted to the binary form of one parameter's type.
#[derive(Debug)]
pub(crate) struct BoundParam {
    ty: PgTypeInfo,
    bytes: Option<Vec<u8>>,
}

impl BoundParam {
    /// Converts `value` for parameter `$position` of type `ty`. The error is a sentence naming
    /// the parameter, its type and what was wrong.
    pub(crate) fn new(position: usize, ty: &PgTypeInfo, value: SqlValue) -> Result<Self, String> {
        let Some(shape) = shape_of(ty) else {
            let name = type_label(ty);
            return Err(format!(
                "parameter ${position} has type {name}, which the context cannot bind; pass text \
                 and cast it in the SQL (${position}::text::{name})"
            ));
        };
        let bytes = match (shape, value) {
            (_, SqlValue::Null) => None,
            (Shape::Scalar(scalar), value) => Some(encode_scalar(scalar, value)),
            (Shape::Array { element, element_type }, value) => {
                Some(encode_array(element, &element_type, value))
            }
        }
        .transpose()
        .map_err(|e| format!("parameter ${position} ({}): {e}", type_label(ty)))?;
        Ok(BoundParam { ty: ty.clone(), bytes })
    }
}

impl Type<Postgres> for BoundParam {
    fn type_info() -> PgTypeInfo {
        // Never used: `produces` always names the described type.
        <String as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for BoundParam {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.bytes {
            None => Ok(IsNull::Yes),
            Some(bytes) => {
                buf.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.ty.clone())
    }
}

fn encode_scalar(scalar: Scalar, value: SqlValue) -> Result<Vec<u8>, String> {
    use SqlValue as V;
    Ok(match (scalar, value) {
        (_, V::Null) => return Err("NULL inside an array is written as JSON null".into()),
        (Scalar::Bool, V::Boolean(b)) => vec![u8::from(b)],
        (Scalar::Bool, V::Text(s)) => vec![u8::from(parse_bool(&s)?)],
        (Scalar::Int2, v) => i16::try_from(integer(v)?)
            .map_err(|_| "out of range for smallint".to_owned())?
            .to_be_bytes()
            .to_vec(),
        (Scalar::Int4, v) => i32::try_from(integer(v)?)
            .map_err(|_| "out of range for integer".to_owned())?
            .to_be_bytes()
            .to_vec(),
        (Scalar::Int8, v) => integer(v)?.to_be_bytes().to_vec(),
        #[allow(clippy::cast_possible_truncation)]
        (Scalar::Float4, v) => (float(v)? as f32).to_be_bytes().to_vec(),
        (Scalar::Float8, v) => float(v)?.to_be_bytes().to_vec(),
        (Scalar::Numeric, V::Int(i)) => encode_numeric(&i.to_string())?,
        (Scalar::Numeric, V::Float(f)) if f.is_finite() => encode_numeric(&f.to_string())?,
        (Scalar::Numeric, V::Text(s)) => encode_numeric(s.trim())?,
        (Scalar::Text, v) => text(v)?.into_bytes(),
        (Scalar::Json, v) => json_text(v)?.into_bytes(),
        (Scalar::Jsonb, v) => {
            let mut bytes = vec![1];
            bytes.extend_from_slice(json_text(v)?.as_bytes());
            bytes
        }
        (Scalar::Uuid, V::Uuid(s) | V::Text(s)) => {
            Uuid::parse_str(s.trim()).map_err(|_| format!("{s:?} is not a uuid"))?.as_bytes().to_vec()
        }
        (Scalar::TimestampTz, V::Timestamp(s) | V::Text(s)) => {
            micros_since_pg_epoch(parse_timestamptz(&s)?.naive_utc()).to_be_bytes().to_vec()
        }
        (Scalar::Timestamp, V::Timestamp(s) | V::Text(s)) => {
            micros_since_pg_epoch(parse_timestamp(&s)?).to_be_bytes().to_vec()
        }
        (Scalar::Date, V::Timestamp(s) | V::Text(s)) => {
            let date = parse_date(&s)?;
            let days = i32::try_from(date.signed_duration_since(NaiveDate::default()).num_days())
                .map_err(|_| format!("{s:?} is out of range for date"))?;
            (days - PG_EPOCH_DAYS).to_be_bytes().to_vec()
        }
        (Scalar::Bytea, V::Bytes(b)) => b,
        (Scalar::Bytea, V::Text(s)) => s.into_bytes(),
        (scalar, value) => {
            return Err(format!("{} cannot be converted to {scalar:?}", describe(&value)));
        }
    })
}

/// A JSON array bound to an array parameter, element by element, in PostgreSQL's binary array
/// format (one dimension, lower bound 1).
fn encode_array(element: Scalar, element_type: &PgTypeInfo, value: SqlValue) -> Result<Vec<u8>, String> {
    let SqlValue::Json(json) = value else {
        return Err(format!("{} given; array parameters take a JSON array", describe(&value)));
    };
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&json).map_err(|_| "array parameters take a JSON array".to_owned())?;
    let oid = element_type
        .oid()
        .ok_or_else(|| format!("the element type {} has no known oid", type_label(element_type)))?;
    let mut out = Vec::with_capacity(20 + items.len() * 8);
    let has_null = items.iter().any(serde_json::Value::is_null);
    out.extend_from_slice(&1_i32.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&oid.0.to_be_bytes());
    let len = i32::try_from(items.len()).map_err(|_| "the array is too long".to_owned())?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&1_i32.to_be_bytes());
    for (i, item) in items.into_iter().enumerate() {
        let value = match item {
            serde_json::Value::Null => {
                out.extend_from_slice(&(-1_i32).to_be_bytes());
                continue;
            }
            serde_json::Value::Bool(b) => SqlValue::Boolean(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Int(i),
                None => SqlValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => SqlValue::Text(s),
            other => SqlValue::Json(other.to_string()),
        };
        let bytes = encode_scalar(element, value).map_err(|e| format!("element {}: {e}", i + 1))?;
        let len = i32::try_from(bytes.len()).map_err(|_| "an element is too large".to_owned())?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

fn describe(value: &SqlValue) -> String {
    match value {
        SqlValue::Null => "NULL".into(),
        SqlValue::Boolean(b) => format!("the boolean {b}"),
        SqlValue::Int(i) => format!("the integer {i}"),
        SqlValue::Float(f) => format!("the float {f}"),
        SqlValue::Text(_) => "text".into(),
        SqlValue::Json(_) => "JSON".into(),
        SqlValue::Uuid(_) => "a uuid".into(),
        SqlValue::Timestamp(_) => "a timestamp".into(),
        SqlValue::Bytes(_) => "bytes".into(),
    }
}

fn integer(value: SqlValue) -> Result<i64, String> {
    match value {
        SqlValue::Int(i) => Ok(i),
        #[allow(clippy::cast_possible_truncation)]
        SqlValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        SqlValue::Text(s) => s.trim().parse().map_err(|_| format!("{s:?} is not an integer")),
        other => Err(format!("{} is not an integer", describe(&other))),
    }
}

fn float(value: SqlValue) -> Result<f64, String> {
    match value {
        SqlValue::Float(f) => Ok(f),
        // Integers beyond 2^53 round, exactly as PostgreSQL's own int8-to-float8 cast does.
        #[allow(clippy::cast_precision_loss)]
        SqlValue::Int(i) => Ok(i as f64),
        SqlValue::Text(s) => s.trim().parse().map_err(|_| format!("{s:?} is not a number")),
        other => Err(format!("{} is not a number", describe(&other))),
    }
}

fn text(value: SqlValue) -> Result<String, String> {
    Ok(match value {
        SqlValue::Text(s) | SqlValue::Json(s) | SqlValue::Uuid(s) | SqlValue::Timestamp(s) => s,
        SqlValue::Int(i) => i.to_string(),
        SqlValue::Float(f) => f.to_string(),
        SqlValue::Boolean(b) => b.to_string(),
        SqlValue::Bytes(b) => String::from_utf8(b).map_err(|_| "bytes that are not UTF-8".to_owned())?,
        SqlValue::Null => return Err("NULL".into()),
    })
}

fn json_text(value: SqlValue) -> Result<String, String> {
    let json = match value {
        SqlValue::Json(s) => s,
        SqlValue::Text(s) => s,
        SqlValue::Int(i) => i.to_string(),
        SqlValue::Float(f) => f.to_string(),
        SqlValue::Boolean(b) => b.to_string(),
        other => return Err(format!("{} is not JSON", describe(&other))),
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(json)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean")),
    }
}

fn micros_since_pg_epoch(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_micros() - PG_EPOCH_MICROS
}

/// RFC 3339 or PostgreSQL's own output form; a value without an offset is taken as UTC.
fn parse_timestamptz(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    for format in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    parse_timestamp(s).map(|t| t.and_utc())
}

fn parse_timestamp(s: &str) -> Result<NaiveDateTime, String> {
    let s = s.trim();
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t);
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.naive_local());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN))
        .map_err(|_| format!("{s:?} is not a timestamp (use RFC 3339, e.g. 2026-01-31T09:30:00Z)"))
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .or_else(|_| parse_timestamp(s).map(|t| t.date()))
        .map_err(|_| format!("{s:?} is not a date (use YYYY-MM-DD)"))
}

/// Encodes decimal text (optionally signed, with a fraction and an exponent) as PostgreSQL's
/// binary numeric: base-10000 digits, a weight and a display scale. Exact at any precision.
fn encode_numeric(s: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("{s:?} is not a number");
    if s.eq_ignore_ascii_case("nan") {
        return Ok([0_i16.to_be_bytes(), 0_i16.to_be_bytes(), 0xC000_u16.to_be_bytes(), 0_u16.to_be_bytes()]
            .concat());
    }
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i32>().map_err(|_| invalid())?),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let valid = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !valid(int_part) || !valid(frac_part) {
        return Err(invalid());
    }
    // All digits, and where the decimal point sits among them once the exponent is applied.
    let digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).map(|b| b - b'0').collect();
    let point = i64::try_from(int_part.len()).map_err(|_| invalid())? + i64::from(exponent);
    let scale = (i64::try_from(digits.len()).map_err(|_| invalid())? - point).max(0);
    if !(-131_072..=131_072).contains(&point) || scale > 16_383 {
        return Err(format!("{s:?} is out of range for numeric"));
    }
    // Pad so that the point falls on a group boundary, then group by four.
    let lead = (4 - point.rem_euclid(4)) % 4;
    let mut padded: Vec<u8> =
        std::iter::repeat_n(0, usize::try_from(lead).unwrap_or(0)).chain(digits).collect();
    while !padded.len().is_multiple_of(4) {
        padded.push(0);
    }
    let mut groups: Vec<i16> =
        padded.chunks(4).map(|c| c.iter().fold(0_i16, |acc, d| acc * 10 + i16::from(*d))).collect();
    let mut weight = (point + lead) / 4 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !groups.is_empty() { 0x4000 } else { 0 };
    let mut out = Vec::with_capacity(8 + groups.len() * 2);
    out.extend_from_slice(&i16::try_from(groups.len()).map_err(|_| invalid())?.to_be_bytes());
    out.extend_from_slice(&i16::try_from(weight).map_err(|_| invalid())?.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&u16::try_from(scale).map_err(|_| invalid())?.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// Reads PostgreSQL's binary numeric back as exact decimal text with its display scale.
fn decode_numeric(bytes: &[u8]) -> Option<String> {
    let word = |i: usize| bytes.get(i..i + 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i64::from(word(2)?);
    let sign = u16::from_be_bytes([*bytes.get(4)?, *bytes.get(5)?]);
    let scale = usize::from(u16::from_be_bytes([*bytes.get(6)?, *bytes.get(7)?]));
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let groups: Vec<i16> = (0..ndigits).map(|i| word(8 + i * 2)).collect::<Option<_>>()?;
    let group = |position: i64| -> i16 {
        usize::try_from(position).ok().and_then(|p| groups.get(p).copied()).unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&group(0).to_string());
        for position in 1..=weight {
            out.push_str(&format!("{:04}", group(position)));
        }
    }
    if scale > 0 {
        let mut fraction = String::new();
        let mut position = weight + 1;
        while fraction.len() < scale {
            fraction.push_str(&format!("{:04}", group(position)));
            position += 1;
        }
        fraction.truncate(scale);
        out.push('.');
        out.push_str(&fraction);
    }
    Some(out)
}

/// Reads one binary result value of type `ty` as a guest value. `None` bytes is SQL NULL.
pub(crate) fn decode(ty: &PgTypeInfo, bytes: Option<&[u8]>) -> Result<SqlValue, String> {
    let Some(bytes) = bytes else {
        return Ok(SqlValue::Null);
    };
    match shape_of(ty) {
        Some(Shape::Scalar(scalar)) => decode_scalar(scalar, bytes),
        Some(Shape::Array { element, .. }) => {
            decode_array(element, bytes).map(|v| SqlValue::Json(v.to_string()))
        }
        None => Err(format!("has type {}", type_label(ty))),
    }
}

fn decode_scalar(scalar: Scalar, bytes: &[u8]) -> Result<SqlValue, String> {
    let corrupt = || format!("{scalar:?} value has an unexpected binary form");
    let fixed = |n: usize| bytes.get(..n).filter(|_| bytes.len() == n).ok_or_else(corrupt);
    Ok(match scalar {
        Scalar::Bool => SqlValue::Boolean(fixed(1)?[0] != 0),
        Scalar::Int2 => {
            SqlValue::Int(i64::from(i16::from_be_bytes(fixed(2)?.try_into().map_err(|_| corrupt())?)))
        }
        Scalar::Int4 => {
            SqlValue::Int(i64::from(i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| corrupt())?)))
        }
        Scalar::Int8 => SqlValue::Int(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| corrupt())?)),
        Scalar::Float4 => {
            SqlValue::Float(f64::from(f32::from_be_bytes(fixed(4)?.try_into().map_err(|_| corrupt())?)))
        }
        Scalar::Float8 => SqlValue::Float(f64::from_be_bytes(fixed(8)?.try_into().map_err(|_| corrupt())?)),
        Scalar::Numeric => SqlValue::Text(decode_numeric(bytes).ok_or_else(corrupt)?),
        Scalar::Text => SqlValue::Text(utf8(bytes)?),
        Scalar::Json => SqlValue::Json(utf8(bytes)?),
        Scalar::Jsonb => SqlValue::Json(utf8(bytes.get(1..).ok_or_else(corrupt)?)?),
        Scalar::Uuid => {
            SqlValue::Uuid(Uuid::from_slice(bytes).map_err(|_| corrupt())?.hyphenated().to_string())
        }
        Scalar::TimestampTz | Scalar::Timestamp => {
            let micros = i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| corrupt())?);
            SqlValue::Timestamp(match micros {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                _ => {
                    let t = DateTime::from_timestamp_micros(micros + PG_EPOCH_MICROS).ok_or_else(corrupt)?;
                    if scalar == Scalar::TimestampTz {
                        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                    } else {
                        t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()
                    }
                }
            })
        }
        Scalar::Date => {
            let days = i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| corrupt())?);
            let date = NaiveDate::default()
                .checked_add_signed(chrono::Duration::days(i64::from(days) + i64::from(PG_EPOCH_DAYS)))
                .ok_or_else(corrupt)?;
            SqlValue::Timestamp(date.format("%Y-%m-%d").to_string())
        }
        Scalar::Bytea => SqlValue::Bytes(bytes.to_vec()),
    })
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "text that is not UTF-8".to_owned())
}

/// A one-dimensional binary array as a JSON array (multi-dimensional arrays are flattened).
fn decode_array(element: Scalar, bytes: &[u8]) -> Result<serde_json::Value, String> {
    let corrupt = || "array value has an unexpected binary form".to_owned();
    let int = |at: usize| -> Result<i32, String> {
        bytes.get(at..at + 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(corrupt)
    };
    let dims = usize::try_from(int(0)?).map_err(|_| corrupt())?;
    let mut count = 1_usize;
    for d in 0..dims {
        count = count.saturating_mul(usize::try_from(int(12 + d * 8)?).map_err(|_| corrupt())?);
    }
    if dims == 0 {
        count = 0;
    }
    let mut at = 12 + dims * 8;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            out.push(serde_json::Value::Null);
            continue;
        }
        let end = at + usize::try_from(len).map_err(|_| corrupt())?;
        let value = decode_scalar(element, bytes.get(at..end).ok_or_else(corrupt)?)?;
        at = end;
        out.push(match value {
            SqlValue::Null => serde_json::Value::Null,
            SqlValue::Boolean(b) => b.into(),
            SqlValue::Int(i) => i.into(),
            SqlValue::Float(f) => f.into(),
            SqlValue::Json(s) => serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)),
            SqlValue::Text(s) | SqlValue::Uuid(s) | SqlValue::Timestamp(s) => s.into(),
            SqlValue::Bytes(b) => hex::encode(b).into(),
        });
    }
    Ok(serde_json::Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) -> String {
        decode_numeric(&encode_numeric(s).expect("encodes")).expect("decodes")
    }

    #[test]
    fn numeric_text_survives_the_binary_form_exactly() {
        assert_eq!(roundtrip("0"), "0");
        assert_eq!(roundtrip("12.50"), "12.50");
        assert_eq!(roundtrip("-12.5"), "-12.5");
        assert_eq!(roundtrip("10000"), "10000");
        assert_eq!(roundtrip("0.0001"), "0.0001");
        assert_eq!(
            roundtrip("123456789012345678901234567890.123456789"),
            "123456789012345678901234567890.123456789"
        );
        assert_eq!(roundtrip("1e3"), "1000");
        assert_eq!(roundtrip("1.5E-3"), "0.0015");
        assert_eq!(roundtrip(".5"), "0.5");
        assert_eq!(roundtrip("-0"), "0");
        assert_eq!(roundtrip("NaN"), "NaN");
    }

    #[test]
    fn numeric_rejects_what_is_not_a_number() {
        for bad in ["", ".", "1.2.3", "12a", "--1", "1e", "e5"] {
            assert!(encode_numeric(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn text_parses_like_postgres_text_input() {
        assert_eq!(integer(SqlValue::Text(" 42 ".into())), Ok(42));
        assert!(integer(SqlValue::Text("4.2".into())).is_err());
        assert_eq!(parse_bool("Yes"), Ok(true));
        assert!(parse_bool("maybe").is_err());
        let t = parse_timestamptz("2026-01-31T09:30:00+01:00").expect("parses");
        assert_eq!(t.to_rfc3339(), "2026-01-31T08:30:00+00:00");
        assert!(parse_timestamptz("31/01/2026").is_err());
    }
}
