//! Input files read exactly: csv-spectrum's cases, delimiters, text encodings, compression and
//! spreadsheets, through the same reader `ingot run` uses. (Storing the items is batches.rs's.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use ingot::input::{Compression, Format, InputError, InputSource, ReadOptions, SourceStats, TextEncoding};
use serde_json::{Value, json};

/// Files the test writes, in a folder it owns.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }

    fn source(&self, name: &str, content: &[u8], options: ReadOptions) -> InputSource {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).unwrap();
        InputSource::from_arg_with(path.to_str().unwrap(), options).unwrap()
    }

    /// Reads `content` as the file `name`: its items (JSON values, with their lines) and stats.
    async fn read(
        &self,
        name: &str,
        content: &[u8],
        options: ReadOptions,
    ) -> Result<(Vec<(Value, u64)>, SourceStats), InputError> {
        read(self.source(name, content, options)).await
    }

    async fn items(&self, name: &str, content: &[u8], options: ReadOptions) -> Vec<Value> {
        match self.read(name, content, options).await {
            Ok((items, _)) => items.into_iter().map(|(v, _)| v).collect(),
            Err(e) => panic!("{name}: {e}"),
        }
    }

    async fn error(&self, name: &str, content: &[u8], options: ReadOptions) -> (u64, String) {
        match self.read(name, content, options).await {
            Ok((items, _)) => panic!("{name}: expected an error, read {items:?}"),
            Err(InputError::Malformed { name: file, line, message }) => {
                assert!(file.ends_with(name), "the error names the file: {file}");
                (line, message)
            }
            Err(other) => panic!("{name}: expected a malformed-input error, got {other}"),
        }
    }
}

async fn read(source: InputSource) -> Result<(Vec<(Value, u64)>, SourceStats), InputError> {
    let mut reader = ingot::input::read(source);
    let mut items = Vec::new();
    while let Some(chunk) = reader.items.recv().await {
        items.extend(chunk.into_iter().map(|item| (serde_json::from_str(&item.json).unwrap(), item.line)));
    }
    reader.finish().await.map(|stats| (items, stats))
}

fn none() -> ReadOptions {
    ReadOptions::default()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}

/// csv-spectrum's cases (github.com/max-mapper/csv-spectrum), written out here, with the items
/// each must give.
#[tokio::test]
async fn csv_spectrum_cases_read_as_their_expected_records() {
    let files = Files::new();
    let cases: &[(&str, &str, Value)] = &[
        (
            "comma_in_quotes",
            "first,last,address,city,zip\nJohn,Doe,120 any st.,\"Anytown, WW\",08123\n",
            json!([{"first": "John", "last": "Doe", "address": "120 any st.", "city": "Anytown, WW", "zip": "08123"}]),
        ),
        (
            "empty",
            "a,b,c\n1,\"\",\"\"\n2,3,4\n",
            json!([{"a": "1", "b": "", "c": ""}, {"a": "2", "b": "3", "c": "4"}]),
        ),
        (
            "empty_crlf",
            "a,b,c\r\n1,\"\",\"\"\r\n2,3,4\r\n",
            json!([{"a": "1", "b": "", "c": ""}, {"a": "2", "b": "3", "c": "4"}]),
        ),
        (
            "escaped_quotes",
            "a,b\n1,\"ha \"\"ha\"\" ha\"\n3,4\n",
            json!([{"a": "1", "b": "ha \"ha\" ha"}, {"a": "3", "b": "4"}]),
        ),
        (
            "json",
            "key,val\n1,\"{\"\"type\"\": \"\"Point\"\", \"\"coordinates\"\": [102.0, 0.5]}\"\n",
            json!([{"key": "1", "val": "{\"type\": \"Point\", \"coordinates\": [102.0, 0.5]}"}]),
        ),
        (
            "newlines",
            "a,b,c\n1,2,3\n\"Once upon \na time\",5,6\n7,8,9\n",
            json!([{"a": "1", "b": "2", "c": "3"}, {"a": "Once upon \na time", "b": "5", "c": "6"}, {"a": "7", "b": "8", "c": "9"}]),
        ),
        (
            "newlines_crlf",
            "a,b,c\r\n1,2,3\r\n\"Once upon \r\na time\",5,6\r\n7,8,9\r\n",
            json!([{"a": "1", "b": "2", "c": "3"}, {"a": "Once upon \r\na time", "b": "5", "c": "6"}, {"a": "7", "b": "8", "c": "9"}]),
        ),
        (
            "quotes_and_newlines",
            "a,b\n1,\"ha \n\"\"ha\"\" \nha\"\n3,4\n",
            json!([{"a": "1", "b": "ha \n\"ha\" \nha"}, {"a": "3", "b": "4"}]),
        ),
        ("simple", "a,b,c\n1,2,3\n", json!([{"a": "1", "b": "2", "c": "3"}])),
        ("simple_crlf", "a,b,c\r\n1,2,3\r\n", json!([{"a": "1", "b": "2", "c": "3"}])),
        (
            "utf8",
            "a,b,c\n1,2,3\n4,5,ʤ\n",
            json!([{"a": "1", "b": "2", "c": "3"}, {"a": "4", "b": "5", "c": "ʤ"}]),
        ),
    ];
    for (name, csv, expected) in cases {
        let items = files.items(&format!("{name}.csv"), csv.as_bytes(), none()).await;
        assert_eq!(Value::Array(items), *expected, "{name}");
    }
}

/// Every delimiter can be given; .tsv is tab-separated; a header read as one column that holds
/// another delimiter is refused with the option to pass, not imported as one column.
#[tokio::test]
async fn delimiters_are_detected_given_or_refused_with_a_hint() {
    let files = Files::new();
    let expected = vec![json!({"name": "Ada", "city": "Paris, FR"})];
    let pipe = ReadOptions { delimiter: Some(b'|'), ..none() };
    assert_eq!(files.items("pipe.csv", b"name|city\nAda|Paris, FR\n", pipe).await, expected);
    assert_eq!(files.items("tabs.tsv", b"name\tcity\nAda\tParis, FR\n", none()).await, expected);
    assert_eq!(files.items("semi.csv", b"name;city\nAda;Paris, FR\n", none()).await, expected);
    let (_, stats) = files.read("semi2.csv", b"name;city\nAda;Paris, FR\n", none()).await.unwrap();
    assert_eq!(stats.delimiter.as_deref(), Some(";"));

    let comma = ReadOptions { delimiter: Some(b','), ..none() };
    let (line, message) = files.error("wrong.csv", b"\nname;city\nAda;Paris\n", comma).await;
    assert_eq!(line, 2);
    assert!(message.contains("--delimiter ';'"), "{message}");
    let (line, message) = files.error("bars.csv", b"name|city\nAda|Paris\n", none()).await;
    assert_eq!(line, 1);
    assert!(message.contains("--delimiter '|'"), "{message}");

    let path = files.0.path().join("items.json");
    std::fs::write(&path, b"[]").unwrap();
    let refused =
        InputSource::from_arg_with(path.to_str().unwrap(), ReadOptions { delimiter: Some(b';'), ..none() });
    assert!(matches!(refused, Err(InputError::Option { .. })), "{refused:?}");
}

/// Windows-1252 and UTF-16 files read as the characters they hold; a file that is not UTF-8 is
/// refused with the option that reads it, never with replacement characters.
#[tokio::test]
async fn text_encodings_are_transcoded_exactly_and_wrong_ones_refused() {
    let files = Files::new();
    let expected = vec![json!({"name": "Müller", "note": "café 5 € — “ok”"})];
    let text = "name;note\r\nMüller;café 5 € — “ok”\r\n";
    let (cp1252, _, unmappable) = encoding_rs::WINDOWS_1252.encode(text);
    assert!(!unmappable);
    for encoding in [TextEncoding::Windows1252, TextEncoding::Latin1] {
        let options = ReadOptions { encoding: Some(encoding), ..none() };
        assert_eq!(files.items("excel.csv", &cp1252, options).await, expected, "{encoding:?}");
    }
    let (line, message) = files.error("excel.csv", &cp1252, none()).await;
    assert_eq!(line, 2);
    assert!(message.contains("--encoding windows-1252"), "{message}");

    let mut le = vec![0xFF, 0xFE];
    le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let mut be = vec![0xFE, 0xFF];
    be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    for (name, bytes) in [("le.csv", &le), ("be.csv", &be)] {
        let (items, stats) = files.read(name, bytes, none()).await.unwrap();
        assert_eq!(items.into_iter().map(|(v, _)| v).collect::<Vec<_>>(), expected, "{name}");
        assert_eq!(stats.encoding, Some(TextEncoding::Utf16));
    }
    let ndjson: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("{\"n\": 1}\n{\"n\": 2}\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    assert_eq!(files.items("u16.ndjson", &ndjson, none()).await, [json!({"n": 1}), json!({"n": 2})]);

    // A lone surrogate is not UTF-16: refused, not turned into U+FFFD.
    let mut broken = vec![0xFF, 0xFE];
    broken.extend("a\nx".encode_utf16().flat_map(u16::to_le_bytes));
    broken.extend(0xD800_u16.to_le_bytes());
    broken.extend("\n".encode_utf16().flat_map(u16::to_le_bytes));
    let (_, message) = files.error("broken.csv", &broken, none()).await;
    assert!(message.contains("not valid UTF-16"), "{message}");

    let utf16 = ReadOptions { encoding: Some(TextEncoding::Utf16), ..none() };
    let (_, message) = files.error("nobom.csv", "a\n1\n".as_bytes(), utf16).await;
    assert!(message.contains("byte-order mark"), "{message}");
}

/// gzip and zstd files (several members or frames too) read as the plain file does, whatever
/// they are named; a damaged one is refused naming the file.
#[tokio::test]
async fn compressed_files_read_as_their_plain_content() {
    let files = Files::new();
    let csv: String = std::iter::once("id,label\n".to_owned())
        .chain((0..5_000).map(|i| format!("{i},row {i}\n")))
        .collect();
    let plain = files.items("plain.csv", csv.as_bytes(), none()).await;
    assert_eq!(plain.len(), 5_000);
    let (head, tail) = csv.split_at(csv.len() / 2);
    let two_members = [gzip(head.as_bytes()), gzip(tail.as_bytes())].concat();
    let two_frames = [zstd(head.as_bytes()), zstd(tail.as_bytes())].concat();
    for (name, bytes, compression) in [
        ("a.csv.gz", gzip(csv.as_bytes()), Compression::Gzip),
        ("b.csv.gz", two_members, Compression::Gzip),
        ("c.csv.zst", zstd(csv.as_bytes()), Compression::Zstd),
        ("d.csv.zst", two_frames, Compression::Zstd),
        // Found by its magic bytes, not its name.
        ("e.csv", gzip(csv.as_bytes()), Compression::Gzip),
    ] {
        let (items, stats) = files.read(name, &bytes, none()).await.unwrap();
        assert_eq!(items.into_iter().map(|(v, _)| v).collect::<Vec<_>>(), plain, "{name}");
        assert_eq!((stats.compression, stats.format), (Some(compression), Format::Csv), "{name}");
        assert_eq!(stats.bytes, bytes.len() as u64, "{name}: the stored bytes are counted");
    }
    let ndjson = gzip(b"{\"a\": 1}\n{\"a\": 12345678901234567890.5}\n");
    let items = files.read("f.ndjson.gz", &ndjson, none()).await.unwrap().0;
    assert_eq!(items[1].1, 2, "lines are the decompressed file's");
    let raw = files.source("g.data", &ndjson, ReadOptions { format: Some(Format::Ndjson), ..none() });
    assert_eq!(read(raw).await.unwrap().0.len(), 2);

    let mut damaged = gzip(csv.as_bytes());
    let middle = damaged.len() / 2;
    damaged.truncate(middle);
    let (_, message) = files.error("damaged.csv.gz", &damaged, none()).await;
    assert!(!message.is_empty());
    let mut damaged = zstd(csv.as_bytes());
    damaged[10] ^= 0xFF;
    damaged.truncate(damaged.len() - 3);
    files.error("damaged.csv.zst", &damaged, none()).await;
}

/// A minimal .xlsx: shared strings, inline numbers, booleans, an error, and dates styled as
/// dates (numFmt 14) and date-times (numFmt 22), on sheets named `names`.
fn xlsx(sheets: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    let mut file = |name: &str, body: String| {
        zip.start_file(name, options).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    };
    let overrides: String = (1..=sheets.len())
        .map(|i| format!(r#"<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>"#))
        .collect();
    file(
        "[Content_Types].xml",
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>{overrides}</Types>"#
        ),
    );
    file("_rels/.rels", r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.to_owned());
    let entries: String = sheets
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!(r#"<sheet name="{name}" sheetId="{}" r:id="rId{}"/>"#, i + 1, i + 1))
        .collect();
    file(
        "xl/workbook.xml",
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>{entries}</sheets></workbook>"#
        ),
    );
    let rels: String = (1..=sheets.len())
        .map(|i| format!(r#"<Relationship Id="rId{i}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{i}.xml"/>"#))
        .collect();
    file(
        "xl/_rels/workbook.xml.rels",
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"#
        ),
    );
    // Style 1 is a date (numFmt 14), style 2 a date-time (22), style 3 a time (21).
    file("xl/styles.xml", r#"<?xml version="1.0" encoding="UTF-8"?><styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><cellXfs count="4"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/><xf numFmtId="22" applyNumberFormat="1"/><xf numFmtId="21" applyNumberFormat="1"/></cellXfs></styleSheet>"#.to_owned());
    for (i, (_, rows)) in sheets.iter().enumerate() {
        file(
            &format!("xl/worksheets/sheet{}.xml", i + 1),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{rows}</sheetData></worksheet>"#
            ),
        );
    }
    zip.finish().unwrap().into_inner()
}

fn s(cell: &str, text: &str) -> String {
    format!(r#"<c r="{cell}" t="inlineStr"><is><t>{text}</t></is></c>"#)
}

fn n(cell: &str, value: &str, style: u8) -> String {
    format!(r#"<c r="{cell}" s="{style}"><v>{value}</v></c>"#)
}

/// Spreadsheets read like CSV: the first non-empty row names the columns, each later row is an
/// item on its own row number; values as stored (numbers exact, dates ISO 8601); the sheet can
/// be chosen; a value under an unnamed column, a repeated name, or a sheet that is not there is
/// an error naming the row.
#[tokio::test]
async fn spreadsheets_read_as_rows_of_their_first_or_named_sheet() {
    let files = Files::new();
    let orders = [
        format!(
            r#"<row r="2">{}{}{}{}{}</row>"#,
            s("B2", "Order ID"),
            s("C2", "Total"),
            s("D2", "Date"),
            s("E2", "Paid"),
            s("F2", "Check")
        ),
        format!(
            r#"<row r="3">{}{}{}<c r="E3" t="b"><v>1</v></c><c r="F3" t="e"><v>#DIV/0!</v></c></row>"#,
            n("B3", "1001", 0),
            n("C3", "12.5", 0),
            n("D3", "45352", 1)
        ),
        r#"<row r="4"></row>"#.to_owned(),
        format!(r#"<row r="5">{}{}{}</row>"#, s("B5", "A-7"), n("C5", "0.1", 0), n("D5", "45352.5", 2)),
        format!(r#"<row r="6">{}{}</row>"#, s("B6", "T"), n("D6", "0.75", 3)),
    ]
    .concat();
    let other = format!(r#"<row r="1">{}</row><row r="2">{}</row>"#, s("A1", "sku"), s("A2", "X1"));
    let book = xlsx(&[("Orders", &orders), ("Stock", &other)]);
    let (items, stats) = files.read("orders.xlsx", &book, none()).await.unwrap();
    assert_eq!(
        items,
        [
            (
                json!({"Order ID": "1001", "Total": "12.5", "Date": "2024-03-01", "Paid": "true", "Check": "#DIV/0!"}),
                3
            ),
            (
                json!({"Order ID": "A-7", "Total": "0.1", "Date": "2024-03-01T12:00:00", "Paid": "", "Check": ""}),
                5
            ),
            (json!({"Order ID": "T", "Total": "", "Date": "18:00:00", "Paid": "", "Check": ""}), 6),
        ]
    );
    assert_eq!((stats.format, stats.sheet.as_deref()), (Format::Xlsx, Some("Orders")));
    let stock = ReadOptions { sheet: Some("Stock".into()), ..none() };
    assert_eq!(files.items("orders.xlsx", &book, stock).await, [json!({"sku": "X1"})]);
    // Compressed, and on a name that says nothing, with the format given.
    let xlsx_format = ReadOptions { format: Some(Format::Xlsx), ..none() };
    assert_eq!(files.items("upload.bin", &gzip(&book), xlsx_format).await.len(), 3);

    let missing = ReadOptions { sheet: Some("Sales".into()), ..none() };
    let (_, message) = files.error("orders.xlsx", &book, missing).await;
    assert!(message.contains("no sheet named \"Sales\"") && message.contains("Stock"), "{message}");
    let unnamed = format!(
        r#"<row r="1">{}</row><row r="2">{}{}</row>"#,
        s("A1", "sku"),
        s("A2", "X1"),
        s("C2", "stray")
    );
    let (line, message) = files.error("unnamed.xlsx", &xlsx(&[("S", &unnamed)]), none()).await;
    assert_eq!(line, 2);
    assert!(message.contains("column C"), "{message}");
    let twice =
        format!(r#"<row r="1">{}{}</row><row r="2">{}</row>"#, s("A1", "sku"), s("B1", "sku"), s("A2", "X1"));
    let (line, message) = files.error("twice.xlsx", &xlsx(&[("S", &twice)]), none()).await;
    assert_eq!(line, 1);
    assert!(message.contains("twice"), "{message}");
    let (_, message) = files.error("fake.xlsx", b"name,city\nAda,Paris\n", none()).await;
    assert!(message.contains("Excel workbook"), "{message}");
}

/// A minimal .ods holding `rows` (content.xml's table rows).
fn ods(rows: &str) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("mimetype", options).unwrap();
    zip.write_all(b"application/vnd.oasis.opendocument.spreadsheet").unwrap();
    zip.start_file("META-INF/manifest.xml", options).unwrap();
    zip.write_all(br#"<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#).unwrap();
    zip.start_file("content.xml", options).unwrap();
    write!(zip, r#"<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet><table:table table:name="Inventory">{rows}</table:table></office:spreadsheet></office:body></office:document-content>"#).unwrap();
    zip.finish().unwrap().into_inner()
}

#[tokio::test]
async fn ods_spreadsheets_read_like_xlsx() {
    let files = Files::new();
    let text = |t: &str| {
        format!(r#"<table:table-cell office:value-type="string"><text:p>{t}</text:p></table:table-cell>"#)
    };
    let rows = format!(
        r#"<table:table-row>{}{}{}</table:table-row><table:table-row>{}<table:table-cell office:value-type="float" office:value="12.25"><text:p>12.25</text:p></table:table-cell><table:table-cell office:value-type="date" office:date-value="2024-03-01"><text:p>01/03/24</text:p></table:table-cell></table:table-row>"#,
        text("sku"),
        text("quantity"),
        text("counted"),
        text("X1")
    );
    let (items, stats) = files.read("stock.ods", &ods(&rows), none()).await.unwrap();
    assert_eq!(items, [(json!({"sku": "X1", "quantity": "12.25", "counted": "2024-03-01"}), 2)]);
    assert_eq!((stats.format, stats.sheet.as_deref()), (Format::Ods, Some("Inventory")));
}
