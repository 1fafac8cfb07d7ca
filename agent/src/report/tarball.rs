//! Writes a bundle as a gzip-compressed tar into a channel of chunks, bounded in size, flushed section by section.

use std::io::{self, Write as _};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::limits::MAX_REPORT_BYTES;

/// Bytes per chunk sent: a gRPC message well under the 4 MiB default, a few per section.
const CHUNK_BYTES: usize = 64 * 1024;

/// Why a bundle stopped being written.
#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("the receiver of the bundle went away")]
    Gone,
    #[error("the bundle grew past {MAX_REPORT_BYTES} bytes compressed; it ends here")]
    TooLarge,
    #[error("writing the bundle: {0}")]
    Io(#[from] io::Error),
}

/// Where the compressed bytes go: a bounded channel, so a slow receiver slows the writer
/// rather than growing memory.
#[derive(Debug)]
pub struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    pending: Vec<u8>,
    sent_bytes: usize,
    too_large: bool,
    gone: bool,
}

impl ChunkSink {
    pub fn new(tx: tokio::sync::mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            tx,
            pending: Vec::with_capacity(CHUNK_BYTES),
            sent_bytes: 0,
            too_large: false,
            gone: false,
        }
    }

    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_BYTES));
        if self.tx.blocking_send(chunk).is_err() {
            self.gone = true;
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "receiver gone"));
        }
        Ok(())
    }
}

impl io::Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.sent_bytes + buf.len() > MAX_REPORT_BYTES {
            self.too_large = true;
            return Err(io::Error::other("bundle too large"));
        }
        self.sent_bytes += buf.len();
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= CHUNK_BYTES {
            self.send_pending()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

/// The tar being written.
pub(super) struct Tarball {
    builder: tar::Builder<GzEncoder<ChunkSink>>,
    /// Every entry's time (the file's own when it matters, as for a pod log).
    now_sec: u64,
}

impl Tarball {
    pub(super) fn new(sink: ChunkSink) -> Self {
        let mut builder = tar::Builder::new(GzEncoder::new(sink, Compression::default()));
        builder.mode(tar::HeaderMode::Deterministic);
        Self {
            builder,
            now_sec: u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0),
        }
    }

    fn error(&mut self, e: io::Error) -> TarballError {
        let sink = self.builder.get_ref().get_ref();
        if sink.gone {
            TarballError::Gone
        } else if sink.too_large {
            TarballError::TooLarge
        } else {
            TarballError::Io(e)
        }
    }

    fn header(
        &self,
        kind: tar::EntryType,
        mode: u32,
        modified: Option<jiff::Timestamp>,
    ) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        let mtime = modified
            .and_then(|t| u64::try_from(t.as_second()).ok())
            .unwrap_or(self.now_sec);
        header.set_mtime(mtime);
        header.set_size(0);
        header
    }

    pub(super) fn file(
        &mut self,
        path: &Path,
        bytes: &[u8],
        modified: Option<jiff::Timestamp>,
    ) -> Result<(), TarballError> {
        let mut header = self.header(tar::EntryType::Regular, 0o644, modified);
        header.set_size(bytes.len() as u64);
        self.builder
            .append_data(&mut header, path, bytes)
            .map_err(|e| self.error(e))
    }

    pub(super) fn link(&mut self, path: &Path, target: &Path) -> Result<(), TarballError> {
        let mut header = self.header(tar::EntryType::Symlink, 0o777, None);
        self.builder
            .append_link(&mut header, path, target)
            .map_err(|e| self.error(e))
    }

    pub(super) fn dir(&mut self, path: &Path) -> Result<(), TarballError> {
        let mut header = self.header(tar::EntryType::Directory, 0o755, None);
        self.builder
            .append_data(&mut header, path, io::empty())
            .map_err(|e| self.error(e))
    }

    /// Sends what was written so far, decodable on its own (a gzip sync flush).
    pub(super) fn flush(&mut self) -> Result<(), TarballError> {
        let flushed = self.builder.get_mut().flush();
        flushed.map_err(|e| self.error(e))
    }

    /// Ends the tar and the gzip stream and sends the rest.
    pub(super) fn finish(self) -> Result<(), TarballError> {
        let Self { builder, .. } = self;
        let gz = builder.into_inner()?;
        let mut sink = gz.finish()?;
        sink.flush()?;
        Ok(())
    }
}
