//! Reading stored and filling blobs a byte range at a time: from the page cache on the worker
//! when it holds the bytes, else with `pread` on the blocking pool.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

use super::buffers::{BUFFER_SIZE, Buffer};

/// Size of each read from a stored or filling blob: large, so a fast client gets big writes.
pub(super) const READ_CHUNK: usize = BUFFER_SIZE;

/// Reads a byte range of a file in large chunks into pooled buffers: from the page cache on the
/// worker itself when every byte is there (`RWF_NOWAIT`), else with `pread` on the blocking pool.
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
        let mut buf = Buffer::take();
        let result = if read_cached(&self.file, &mut buf, len, self.pos) {
            Ok(buf.freeze())
        } else {
            let file = self.file.clone();
            let pos = self.pos;
            super::off_the_workers(move || read_blocking(&file, buf, len, pos)).await
        };
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

/// Reads up to `len` bytes at `pos` only if the page cache holds them, without blocking: the
/// worker never waits for a disk. False if nothing could be read that way.
fn read_cached(file: &File, buf: &mut Buffer, len: usize, pos: u64) -> bool {
    let mut slices = [io::IoSliceMut::new(&mut buf.spare()[..len])];
    match rustix::io::preadv2(file, &mut slices, pos, rustix::io::ReadWriteFlags::NOWAIT) {
        Ok(n) if n > 0 => {
            buf.advance(n);
            true
        }
        _ => false,
    }
}

/// Reads `len` bytes at `pos` (fewer at the end of the file), on a thread that may block.
fn read_blocking(file: &File, mut buf: Buffer, len: usize, pos: u64) -> io::Result<Bytes> {
    while buf.len() < len {
        let at = pos + buf.len() as u64;
        let room = len - buf.len();
        match file.read_at(&mut buf.spare()[..room], at) {
            Ok(0) => break,
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if buf.len() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stored file is shorter than its size",
        ));
    }
    Ok(buf.freeze())
}
