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

/// How many of a fill's most recent chunks stay in memory, so readers that keep up with the
/// upstream get them without reading the file back (at most this many times the write size).
const RECENT_CHUNKS: usize = 8;

/// Where a fill has got to.
#[derive(Clone, Debug)]
pub struct FillState {
    /// The blob's size, once the upstream has said it (or the fill has ended).
    pub total: Option<u64>,
    /// Bytes received in order and readable from memory (the last byte is still held back
    /// until the digest matches).
    pub received: u64,
    /// Bytes hashed and written to the temp file so far (readers behind the memory ring read
    /// the file up to here).
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
    /// The last chunks received (offset, bytes): what readers at the head of the fill want next.
    recent: std::sync::Mutex<std::collections::VecDeque<(u64, Bytes)>>,
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
            received: 0,
            written: 0,
            outcome: Outcome::Running,
        });
        Ok((
            Arc::new(Fill {
                digest,
                temp_path,
                file,
                state: rx,
                recent: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(
                    RECENT_CHUNKS,
                )),
            }),
            tx,
        ))
    }

    /// A descriptor for writing (the fill task's) or reading (a client's).
    pub fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Keeps a just-received chunk in memory for the readers following the fill.
    pub fn remember(&self, offset: u64, bytes: Bytes) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RECENT_CHUNKS {
            r.pop_front();
        }
        r.push_back((offset, bytes));
    }

    /// The bytes from `pos` (not past `limit`) if they are among the recent chunks.
    fn recent_slice(&self, pos: u64, limit: u64) -> Option<Bytes> {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (off, b) = r
            .iter()
            .find(|(off, b)| *off <= pos && pos < off + b.len() as u64)?;
        let start = (pos - off) as usize;
        let end = ((limit - off).min(b.len() as u64) as usize).min(start + READ_CHUNK);
        (end > start).then(|| b.slice(start..end))
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
                    (Outcome::Verified, None) => return Ok(s.received),
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
                    let progress = {
                        let s = rx.borrow_and_update();
                        match &s.outcome {
                            Outcome::Failed(e) => Err(io::Error::other(e.to_string())),
                            // Every byte may go; those behind the memory ring come from the
                            // file as the disk writer gets there.
                            Outcome::Verified => Ok((u64::MAX, s.written)),
                            // Hold back the last byte until the digest is known to match.
                            Outcome::Running => Ok((
                                s.received
                                    .min(s.total.unwrap_or(u64::MAX).saturating_sub(1)),
                                s.written,
                            )),
                        }
                    };
                    let (released, written) = match progress {
                        Ok(p) => p,
                        Err(err) => {
                            reader.finish();
                            return Some((Err(err), (reader, rx, fill)));
                        }
                    };
                    if released > reader.pos {
                        let limit = released.min(reader.end);
                        if let Some(b) = fill.recent_slice(reader.pos, limit) {
                            reader.pos += b.len() as u64;
                            return Some((Ok(b), (reader, rx, fill)));
                        }
                        if written > reader.pos {
                            let item = reader.read_next(limit.min(written)).await;
                            return Some((item, (reader, rx, fill)));
                        }
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

/// Hashes a fill's chunks on one blocking thread and writes them to its temp file on another,
/// each fed through a bounded queue: the network, the clients, the hash and the disk all run at
/// once. Clients wait only for the hash (to release the last byte); keeping the file waits for
/// the disk too. A full queue makes the fill wait, so memory stays bounded.
pub struct FillWriter {
    to_hash: Option<tokio::sync::mpsc::Sender<Bytes>>,
    to_disk: Option<tokio::sync::mpsc::Sender<Bytes>>,
    hashing: Option<tokio::task::JoinHandle<Hasher>>,
    writing: Option<tokio::task::JoinHandle<io::Result<u64>>>,
    /// Bytes handed over so far.
    queued: u64,
}

/// Chunks waiting to be hashed, and to be written, at most (with 256 KiB chunks: 2 and 16 MiB).
const HASH_QUEUE: usize = 8;
const DISK_QUEUE: usize = 64;

/// The disk side of a fill, still running after the hash is done.
pub struct PendingWrites(Option<tokio::task::JoinHandle<io::Result<u64>>>);

impl PendingWrites {
    /// Waits for every chunk to be on disk; returns how many bytes were written.
    pub async fn wait(mut self) -> io::Result<u64> {
        match self.0.take() {
            Some(w) => w.await.map_err(|e| io::Error::other(e.to_string()))?,
            None => Err(io::Error::other("the fill's writes already ended")),
        }
    }
}

impl FillWriter {
    /// Starts the hashing and writing threads; the writer reports `FillState::written`.
    pub fn start(
        file: File,
        mut hasher: Hasher,
        progress: Arc<watch::Sender<FillState>>,
    ) -> FillWriter {
        let (to_hash, mut hash_rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
        let (to_disk, mut disk_rx) = tokio::sync::mpsc::channel::<Bytes>(DISK_QUEUE);
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some(data) = hash_rx.blocking_recv() {
                hasher.update(&data);
            }
            hasher
        });
        let writing = tokio::task::spawn_blocking(move || {
            let mut pos = 0u64;
            while let Some(data) = disk_rx.blocking_recv() {
                if let Err(e) = file.write_all_at(&data, pos) {
                    // Readers waiting for these bytes from the file would wait forever: end them
                    // now, whoever else is waiting for this writer.
                    let shared = CacheError::Io(io::Error::new(e.kind(), e.to_string()));
                    progress.send_modify(|s| s.outcome = Outcome::Failed(Arc::new(shared)));
                    return Err(e);
                }
                pos += data.len() as u64;
                progress.send_modify(|s| s.written = pos);
            }
            Ok(pos)
        });
        FillWriter {
            to_hash: Some(to_hash),
            to_disk: Some(to_disk),
            hashing: Some(hashing),
            writing: Some(writing),
            queued: 0,
        }
    }

    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Hands a chunk to the hash and the disk, waiting while either queue is full.
    pub async fn push(&mut self, data: Bytes) -> io::Result<()> {
        self.queued += data.len() as u64;
        let hashed = match &self.to_hash {
            Some(tx) => tx.send(data.clone()).await.is_ok(),
            None => false,
        };
        let stored = match &self.to_disk {
            Some(tx) => tx.send(data).await.is_ok(),
            None => false,
        };
        if hashed && stored {
            return Ok(());
        }
        // The disk writer stopped early (the hash cannot fail): its error says why.
        self.to_disk = None;
        match PendingWrites(self.writing.take()).wait().await {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("the fill's writer stopped")),
        }
    }

    /// Waits for the hash of everything; the writes may still be going on.
    pub async fn finish(mut self) -> io::Result<(Hasher, u64, PendingWrites)> {
        self.to_hash = None;
        self.to_disk = None;
        let hasher = match self.hashing.take() {
            Some(h) => h.await.map_err(|e| io::Error::other(e.to_string()))?,
            None => return Err(io::Error::other("the fill's hash already ended")),
        };
        Ok((hasher, self.queued, PendingWrites(self.writing.take())))
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
