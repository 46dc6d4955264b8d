//! The WASI 0.2 capabilities a processor gets: clocks and randomness, and nothing ambient.
//!
//! Every processor is linked against all of WASI 0.2 so that components from any toolchain
//! instantiate (componentize-py imports sockets and filesystem even when the code never uses
//! them), but the context built here grants none of it: no preopened directories, no
//! environment variables, no arguments, stdin closed, TCP/UDP and name lookup refused. Stdout and
//! stderr go to a bounded in-memory capture that becomes item logs.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// Bytes kept between two drains; a guest writing more in one call loses the excess.
const CAPTURE_LIMIT: usize = 64 << 10;

/// Builds the WASI context of a processor store. Denies by default, and everything not listed
/// here stays at `WasiCtxBuilder::new()`'s defaults: stdin closed, no env, no args, no
/// preopens, host clocks and random.
pub(crate) fn sandboxed_wasi(output: &CapturedOutput) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(CaptureStream { output: output.clone(), stream: Stream::Stdout })
        .stderr(CaptureStream { output: output.clone(), stream: Stream::Stderr })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Which standard stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

#[derive(Debug, Default)]
struct Captured {
    chunks: Vec<(Stream, Vec<u8>)>,
    bytes: usize,
    dropped: usize,
}

/// What a guest wrote to stdout and stderr since the last drain, bounded.
#[derive(Debug, Clone, Default)]
pub(crate) struct CapturedOutput(Arc<Mutex<Captured>>);

/// Output taken from the capture: chunks in write order, and how many bytes were dropped.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    pub(crate) chunks: Vec<(Stream, Vec<u8>)>,
    pub(crate) dropped: usize,
}

impl CapturedOutput {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut captured = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = CAPTURE_LIMIT.saturating_sub(captured.bytes);
        let kept = bytes.len().min(room);
        captured.dropped += bytes.len() - kept;
        if kept == 0 {
            return;
        }
        captured.bytes += kept;
        match captured.chunks.last_mut() {
            Some((last, buf)) if *last == stream => buf.extend_from_slice(&bytes[..kept]),
            _ => captured.chunks.push((stream, bytes[..kept].to_vec())),
        }
    }

    /// Takes everything captured so far.
    pub(crate) fn drain(&self) -> Drained {
        let mut captured = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = std::mem::take(&mut *captured);
        Drained { chunks: taken.chunks, dropped: taken.dropped }
    }
}

#[derive(Clone)]
struct CaptureStream {
    output: CapturedOutput,
    stream: Stream,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

// Always accepts writes, keeping what fits: a guest that prints too much loses output, it is not
// trapped (a trap would fail the item for a log line).
impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.output.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(CAPTURE_LIMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.output.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
