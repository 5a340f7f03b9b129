//! Reading stored and filling blobs: large `pread`s on the blocking pool, a byte range at a time.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

/// Size of each read from a stored or filling blob: large, so a fast client gets big writes.
pub(super) const READ_CHUNK: usize = 256 * 1024;

/// Reads a byte range of a file in large chunks with `pread` on the blocking pool.
pub(crate) struct FileReader {
    file: Arc<File>,
    pub(super) pos: u64,
    pub(super) end: u64,
}

impl FileReader {
    pub(crate) fn new(file: File, start: u64, end: u64) -> FileReader {
        FileReader {
            file: Arc::new(file),
            pos: start,
            end,
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.pos >= self.end
    }

    pub(super) fn finish(&mut self) {
        self.pos = self.end;
    }

    /// Reads the next chunk, not past `limit`.
    pub(super) async fn read_next(&mut self, limit: u64) -> io::Result<Bytes> {
        let len = (self.end.min(limit) - self.pos).min(READ_CHUNK as u64) as usize;
        let file = self.file.clone();
        let pos = self.pos;
        let result = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                match file.read_at(&mut buf[filled..], pos + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stored file is shorter than its size",
                ));
            }
            buf.truncate(filled);
            Ok(Bytes::from(buf))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match &result {
            Ok(b) => self.pos += b.len() as u64,
            Err(_) => self.finish(),
        }
        result
    }

    /// The bytes `[start, end)` of a stored (verified, complete) file.
    pub(crate) fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send {
        futures_util::stream::unfold(self, |mut reader| async move {
            if reader.done() {
                return None;
            }
            let item = reader.read_next(u64::MAX).await;
            Some((item, reader))
        })
    }
}
