//! The byte layers under the parsers: decompression (gzip, zstd) and text encodings
//! (UTF-8 as is; Windows-1252 and UTF-16 transcoded to UTF-8), each a streaming reader.
//!
//! Compression is recognised by its magic bytes, never by name alone, so a `.csv.gz` on stdin
//! works and a misnamed file is not misread.

use std::io::{BufRead, BufReader, Read};

use encoding_rs::{DecoderResult, Encoding};
use serde::Serialize;

/// A compression layer, from the stream's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (RFC 1952), one member or several.
    Gzip,
    /// Zstandard, one frame or several.
    Zstd,
}

impl Compression {
    /// The compression `head` starts with, if any.
    pub(super) fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// A file-name extension that names this compression (dropped to find the format).
    pub(super) fn extension(ext: &str) -> bool {
        matches!(ext, "gz" | "gzip" | "zst" | "zstd")
    }
}

/// Decompresses `reader` if it starts with a compression's magic bytes.
pub(super) fn decompress<'a>(
    mut reader: impl BufRead + Send + 'a,
) -> std::io::Result<(Box<dyn BufRead + Send + 'a>, Option<Compression>)> {
    let compression = Compression::sniff(reader.fill_buf()?);
    let out: Box<dyn BufRead + Send + 'a> = match compression {
        None => Box::new(reader),
        Some(Compression::Gzip) => {
            Box::new(BufReader::with_capacity(64 << 10, flate2::bufread::MultiGzDecoder::new(reader)))
        }
        Some(Compression::Zstd) => {
            Box::new(BufReader::with_capacity(64 << 10, ZstdFrames { source: Some(reader), frame: None }))
        }
    };
    Ok((out, compression))
}

/// Zstandard frames one after another (as `zstd` writes for concatenated or multi-threaded
/// output); the decoder reads one frame at a time.
struct ZstdFrames<R: BufRead> {
    source: Option<R>,
    frame: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(frame) = &mut self.frame {
                let n = frame.read(buf).map_err(|e| damaged("zstd", &e))?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.source = self.frame.take().map(ruzstd::decoding::StreamingDecoder::into_inner);
            }
            let Some(mut source) = self.source.take() else { return Ok(0) };
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let frame = ruzstd::decoding::StreamingDecoder::new(source).map_err(|e| damaged("zstd", &e))?;
            self.frame = Some(frame);
        }
    }
}

fn damaged(what: &str, e: &dyn std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("the {what} data is damaged ({e})"))
}

/// A text encoding of an input file (`--encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum TextEncoding {
    /// UTF-8 (the default); a UTF-16 byte-order mark is still recognised.
    #[value(name = "utf-8", alias = "utf8")]
    #[serde(rename = "utf-8")]
    Utf8,
    /// ISO-8859-1 as the web reads it: Windows-1252 (what Excel writes as "CSV" in the west).
    #[value(name = "latin1", alias = "iso-8859-1")]
    #[serde(rename = "latin1")]
    Latin1,
    /// Windows-1252.
    #[value(name = "windows-1252", alias = "cp1252")]
    #[serde(rename = "windows-1252")]
    Windows1252,
    /// UTF-16, little- or big-endian as its byte-order mark says.
    #[value(name = "utf-16", alias = "utf16")]
    #[serde(rename = "utf-16")]
    Utf16,
}

impl TextEncoding {
    /// The name used in messages and `source_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Latin1 => "latin1",
            TextEncoding::Windows1252 => "windows-1252",
            TextEncoding::Utf16 => "utf-16",
        }
    }
}

/// Decodes `reader` from `encoding` to UTF-8. UTF-8 passes through untouched (its parsers refuse
/// invalid bytes, naming the line); a UTF-16 byte-order mark switches to UTF-16 whatever was
/// asked, since no UTF-8 text starts with one. Returns the encoding actually used.
pub(super) fn decode_text<'a>(
    mut reader: impl BufRead + Send + 'a,
    encoding: Option<TextEncoding>,
) -> std::io::Result<(Box<dyn BufRead + Send + 'a>, TextEncoding)> {
    let bom = Encoding::for_bom(reader.fill_buf()?).filter(|(e, _)| *e != encoding_rs::UTF_8);
    let (decoder, used) = match (bom, encoding.unwrap_or(TextEncoding::Utf8)) {
        (Some((utf16, _)), _) => (utf16.new_decoder_with_bom_removal(), TextEncoding::Utf16),
        (None, TextEncoding::Utf8) => return Ok((Box::new(reader), TextEncoding::Utf8)),
        (None, TextEncoding::Utf16) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file does not start with a UTF-16 byte-order mark, so its byte order is unknown; \
                 save it as \"UTF-16\" (with BOM) or as UTF-8",
            ));
        }
        (None, used) => (encoding_rs::WINDOWS_1252.new_decoder_without_bom_handling(), used),
    };
    let transcode = Transcode { inner: reader, decoder, pending: Vec::new(), start: 0, done: false };
    Ok((Box::new(BufReader::with_capacity(64 << 10, transcode)), used))
}

/// Streams text from another encoding to UTF-8; bytes that are not valid in it are an error,
/// never a replacement character.
struct Transcode<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    /// Decoded bytes not yet handed out.
    pending: Vec<u8>,
    start: usize,
    done: bool,
}

impl<R: BufRead> Read for Transcode<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.start == self.pending.len() && !self.done {
            let src = self.inner.fill_buf()?;
            let last = src.is_empty();
            let capacity = self.decoder.max_utf8_buffer_length(src.len()).unwrap_or(src.len() * 3 + 16);
            self.pending.resize(capacity.max(16), 0);
            self.start = 0;
            let (result, read, written) =
                self.decoder.decode_to_utf8_without_replacement(src, &mut self.pending, last);
            self.inner.consume(read);
            self.pending.truncate(written);
            match result {
                DecoderResult::Malformed(..) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the text is not valid {}", self.decoder.encoding().name()),
                    ));
                }
                DecoderResult::InputEmpty if last => self.done = true,
                DecoderResult::InputEmpty | DecoderResult::OutputFull => {}
            }
        }
        let n = buf.len().min(self.pending.len() - self.start);
        buf[..n].copy_from_slice(&self.pending[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}
