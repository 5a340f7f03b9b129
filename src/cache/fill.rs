//! A cold fill: one upstream fetch of one blob, shared by every client that wants it meanwhile.
//!
//! The fill owns a temp file. Its task writes the upstream bytes there while a hash runs over the
//! same bytes, and publishes how far it has got on a `watch` channel. Each client reads the file
//! through its own duplicated descriptor from its own offset, so Range works on a cold blob, a slow
//! client never slows the upstream, and memory stays flat however many clients join. The last
//! byte is held back until the digest has matched: on a mismatch or an upstream failure, every
//! reader's body ends in an error, so no client ever sees a complete wrong response (invariant 1).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::CacheError;
use crate::reference::{Digest, Hasher};

/// Size of each read from a stored or filling blob: large, so a fast client gets big writes.
pub const READ_CHUNK: usize = 256 * 1024;

/// Where a fill has got to.
#[derive(Clone, Debug)]
pub struct FillState {
    /// The blob's size, once the upstream has said it (or the fill has ended).
    pub total: Option<u64>,
    /// Bytes written to the temp file so far.
    pub written: u64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Running,
    /// Every byte arrived and matched the digest.
    Verified,
    Failed(Arc<CacheError>),
}

/// One blob being fetched. Shared (`Arc`) by the fill task and the clients reading from it.
pub struct Fill {
    pub digest: Digest,
    pub temp_path: PathBuf,
    /// The temp file, open for reading and writing; readers get duplicates of it, so they keep
    /// working after it is renamed into place (or unlinked).
    file: File,
    state: watch::Receiver<FillState>,
}

impl Fill {
    /// Creates the temp file and the fill's state channel. Returns the shared fill and the sender
    /// the fill task reports progress on.
    pub fn create(
        digest: Digest,
        temp_path: PathBuf,
    ) -> io::Result<(Arc<Fill>, watch::Sender<FillState>)> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        let (tx, rx) = watch::channel(FillState {
            total: None,
            written: 0,
            outcome: Outcome::Running,
        });
        Ok((
            Arc::new(Fill {
                digest,
                temp_path,
                file,
                state: rx,
            }),
            tx,
        ))
    }

    /// A descriptor for writing (the fill task's) or reading (a client's).
    pub fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Waits until the blob's size is known. Fails if the fill failed first.
    pub async fn total(&self) -> Result<u64, Arc<CacheError>> {
        let mut rx = self.state.clone();
        loop {
            {
                let s = rx.borrow_and_update();
                match (&s.outcome, s.total) {
                    (Outcome::Failed(e), _) => return Err(e.clone()),
                    (_, Some(t)) => return Ok(t),
                    (Outcome::Verified, None) => return Ok(s.written),
                    (Outcome::Running, None) => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(Arc::new(CacheError::Abandoned));
            }
        }
    }

    /// The bytes `[start, end)` of the blob as they arrive. The stream ends with an error if the
    /// fill fails; it never yields the final byte before the digest has matched.
    pub fn stream(
        self: Arc<Self>,
        file: File,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send {
        let rx = self.state.clone();
        let reader = FileReader::new(file, start, end);
        futures_util::stream::unfold(
            (reader, rx, self),
            |(mut reader, mut rx, fill)| async move {
                if reader.done() {
                    return None;
                }
                loop {
                    let available = {
                        let s = rx.borrow_and_update();
                        match &s.outcome {
                            Outcome::Failed(e) => Err(io::Error::other(e.to_string())),
                            Outcome::Verified => Ok(u64::MAX),
                            // Hold back the last byte until the digest is known to match.
                            Outcome::Running => {
                                Ok(s.written.min(s.total.unwrap_or(u64::MAX).saturating_sub(1)))
                            }
                        }
                    };
                    let available = match available {
                        Ok(a) => a,
                        Err(err) => {
                            reader.finish();
                            return Some((Err(err), (reader, rx, fill)));
                        }
                    };
                    if available > reader.pos {
                        let item = reader.read_next(available).await;
                        return Some((item, (reader, rx, fill)));
                    }
                    if rx.changed().await.is_err() {
                        reader.finish();
                        let err = io::Error::other(format!(
                            "fill of {} ended without an outcome",
                            fill.digest
                        ));
                        return Some((Err(err), (reader, rx, fill)));
                    }
                }
            },
        )
    }
}

/// Writes a fill's chunks to its temp file and hashes them on the blocking pool, one chunk at a
/// time but overlapped with the caller: while one chunk is hashed and written, the next arrives
/// from the network.
pub struct FillWriter {
    file: Arc<File>,
    hasher: Option<Hasher>,
    /// Bytes handed to writes so far.
    queued: u64,
    /// Bytes written and hashed so far.
    written: u64,
    pending: Option<tokio::task::JoinHandle<io::Result<(Hasher, u64)>>>,
}

impl FillWriter {
    pub fn new(file: File, hasher: Hasher) -> FillWriter {
        FillWriter {
            file: Arc::new(file),
            hasher: Some(hasher),
            queued: 0,
            written: 0,
            pending: None,
        }
    }

    pub fn queued(&self) -> u64 {
        self.queued
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Waits for the previous chunk's write, then starts this one's. Returns how many bytes the
    /// finished write added.
    pub async fn push(&mut self, data: Vec<u8>) -> io::Result<u64> {
        let done = self.wait().await?;
        let mut h = self.hasher.take().expect("no write is pending");
        let (f, at) = (self.file.clone(), self.queued);
        self.queued += data.len() as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            h.update(&data);
            f.write_all_at(&data, at)?;
            Ok((h, data.len() as u64))
        }));
        Ok(done)
    }

    /// Waits for the last write: the hash of everything, and the size.
    pub async fn finish(mut self) -> io::Result<(Hasher, u64)> {
        self.wait().await?;
        Ok((
            self.hasher.take().expect("no write is pending"),
            self.written,
        ))
    }

    async fn wait(&mut self) -> io::Result<u64> {
        let Some(p) = self.pending.take() else {
            return Ok(0);
        };
        let (h, n) = p.await.map_err(|e| io::Error::other(e.to_string()))??;
        self.hasher = Some(h);
        self.written += n;
        Ok(n)
    }
}

/// Reads a byte range of a file in large chunks with `pread` on the blocking pool.
pub struct FileReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl FileReader {
    pub fn new(file: File, start: u64, end: u64) -> FileReader {
        FileReader {
            file: Arc::new(file),
            pos: start,
            end,
        }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.end
    }

    fn finish(&mut self) {
        self.pos = self.end;
    }

    /// Reads the next chunk, not past `limit`.
    async fn read_next(&mut self, limit: u64) -> io::Result<Bytes> {
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
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send {
        futures_util::stream::unfold(self, |mut reader| async move {
            if reader.done() {
                return None;
            }
            let item = reader.read_next(u64::MAX).await;
            Some((item, reader))
        })
    }
}
