//! Spreadsheets (.xlsx, .ods): the first sheet, or the one named, read like a CSV file — its
//! first non-empty row names the columns, every later non-empty row is one item.
//!
//! Values are the cells' stored values as text, not their display formats: numbers in their
//! shortest exact form (`12.5`, not `12.50 €`), dates and times in ISO 8601 (`2024-03-01`,
//! `2024-03-01T09:30:00`, `09:30:00`), booleans as `true`/`false`, formula errors as Excel shows
//! them (`#DIV/0!`), empty cells as `""`. A workbook is a zip archive read whole, so memory grows
//! with the sheet (about 10× the file size), unlike the streamed text formats.

use std::collections::HashSet;
use std::io::{Cursor, Read};

use calamine::{Data, ExcelDateTime, Ods, Reader, Xlsx};
use serde_json::{Map, Value};

use super::{Format, InputError, ItemSink};

/// Parses the sheet `sheet` (or the first) of the workbook read from `reader` into `sink`.
pub(super) fn parse(
    mut reader: impl Read,
    format: Format,
    sheet: Option<&str>,
    sink: &mut ItemSink,
) -> Result<String, InputError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| sink.malformed(1, format!("read error: {e}")))?;
    let kind = if format == Format::Ods { "an OpenDocument spreadsheet" } else { "an Excel workbook" };
    let unreadable = |e: &dyn std::fmt::Display| {
        sink.malformed(
            1,
            format!("cannot read the file as {kind} ({e}); check that it is one, or pass --format"),
        )
    };
    let (chosen, range) = match format {
        Format::Ods => {
            let mut book: Ods<_> =
                calamine::open_workbook_from_rs(Cursor::new(bytes)).map_err(|e| unreadable(&e))?;
            let chosen = choose(&book.sheet_names(), sheet, sink)?;
            let range = book.worksheet_range(&chosen).map_err(|e| unreadable(&e))?;
            (chosen, range)
        }
        _ => {
            let mut book: Xlsx<_> =
                calamine::open_workbook_from_rs(Cursor::new(bytes)).map_err(|e| unreadable(&e))?;
            let chosen = choose(&book.sheet_names(), sheet, sink)?;
            let range = book.worksheet_range(&chosen).map_err(|e| unreadable(&e))?;
            (chosen, range)
        }
    };
    let first_row = u64::from(range.start().map_or(0, |(row, _)| row));
    let first_column = range.start().map_or(0, |(_, column)| column);
    let mut columns: Option<Vec<Option<String>>> = None;
    for (i, row) in range.rows().enumerate() {
        let line = first_row + i as u64 + 1;
        if row.iter().all(|cell| matches!(cell, Data::Empty)) {
            continue;
        }
        let columns = match &columns {
            Some(columns) => columns,
            None => {
                columns = Some(header(row, line, first_column, sink)?);
                continue;
            }
        };
        let mut object = Map::with_capacity(columns.len());
        for (j, cell) in row.iter().enumerate() {
            match &columns[j] {
                Some(name) => {
                    object.insert(name.clone(), Value::String(text(cell)));
                }
                None if matches!(cell, Data::Empty) => {}
                None => {
                    return Err(sink.malformed(
                        line,
                        format!(
                            "column {} has a value ({:?}) but no name in the header row",
                            column_letters(first_column + j as u32),
                            text(cell)
                        ),
                    ));
                }
            }
        }
        sink.push(Value::Object(object).to_string(), line)?;
    }
    Ok(chosen)
}

/// The sheet to read: the one named, or the first.
fn choose(names: &[String], sheet: Option<&str>, sink: &ItemSink) -> Result<String, InputError> {
    match sheet {
        None => names.first().cloned().ok_or_else(|| sink.malformed(1, "the workbook has no sheets")),
        Some(wanted) => names.iter().find(|name| name.as_str() == wanted).cloned().ok_or_else(|| {
            sink.malformed(1, format!("the workbook has no sheet named {wanted:?}; its sheets are {names:?}"))
        }),
    }
}

/// The header row's column names; an empty header cell names no column (its values must be empty).
fn header(
    row: &[Data],
    line: u64,
    first_column: u32,
    sink: &ItemSink,
) -> Result<Vec<Option<String>>, InputError> {
    let mut seen = HashSet::with_capacity(row.len());
    let mut columns = Vec::with_capacity(row.len());
    for (j, cell) in row.iter().enumerate() {
        let name = text(cell).trim().to_owned();
        if name.is_empty() {
            columns.push(None);
            continue;
        }
        if !seen.insert(name.clone()) {
            return Err(sink.malformed(
                line,
                format!(
                    "the header row names column {name:?} twice (again in column {})",
                    column_letters(first_column + j as u32)
                ),
            ));
        }
        columns.push(Some(name));
    }
    Ok(columns)
}

/// A cell's value as text (see the module's documentation).
fn text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) => date_time(dt),
        Data::Error(e) => e.to_string(),
    }
}

fn date_time(dt: &ExcelDateTime) -> String {
    if dt.is_duration() {
        // As Excel's [h]:mm:ss shows it: hours past 24 are kept.
        let seconds = (dt.as_f64() * 86_400.0).round() as i64;
        let sign = if seconds < 0 { "-" } else { "" };
        let seconds = seconds.abs();
        return format!("{sign}{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60);
    }
    let (year, month, day, hour, minute, second, milli) = dt.to_ymd_hms_milli();
    let time = match milli {
        0 => format!("{hour:02}:{minute:02}:{second:02}"),
        _ => format!("{hour:02}:{minute:02}:{second:02}.{milli:03}"),
    };
    if dt.as_f64() < 1.0 && dt.as_f64() >= 0.0 {
        time // a time of day, with no date
    } else if (hour, minute, second, milli) == (0, 0, 0, 0) {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{time}")
    }
}

/// A column's spreadsheet name: 0 → A, 26 → AA.
fn column_letters(mut index: u32) -> String {
    let mut letters = Vec::new();
    loop {
        letters.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    letters.reverse();
    String::from_utf8_lossy(&letters).into_owned()
}

#[cfg(test)]
mod tests {
    use super::column_letters;

    #[test]
    fn columns_are_named_as_spreadsheets_name_them() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
    }
}
