//! A cold fill: one upstream fetch of one blob, shared by every client that wants it meanwhile.
//!
//! The fill owns a temp file. Its task writes the upstream bytes there while a hash runs over the
//! same bytes, and publishes how far it has got on a `watch` channel. Each client reads the file
//! through its own duplicated descriptor from its own offset, so Range works on a cold blob, a slow
//! client never slows the upstream, and memory stays flat however many clients join. The last
//! byte is held back until the digest has matched: on a mismatch or an upstream failure, every
//! reader's body ends in an error, so no client ever sees a complete wrong response
//! (ARCHITECTURE.md, invariant 1).
//!
//! A blob larger than the whole cache is streamed through instead: no file at all, only the
//! chunks in memory, and the fill takes a new chunk from the upstream only once every client is
//! past the oldest one it would drop ([`Fill::make_room`]). Each client is a [`Reader`] that says
//! how far it has got.

use super::links::Scope;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{Notify, watch};

use super::CacheError;
use super::file_reader::{FileReader, READ_CHUNK};
use crate::reference::Digest;

/// How many of a fill's most recent chunks stay in memory, so readers that keep up with the
/// upstream get them without reading the file back (at most this many times the write size).
const RECENT_CHUNKS: usize = 4;

/// Where a fill has got to.
#[derive(Clone, Debug)]
pub(crate) struct FillState {
    /// The blob's size, once the upstream has said it (or the fill has ended).
    pub total: Option<u64>,
    /// Bytes received in order and readable from memory (the last byte is still held back
    /// until the digest matches).
    pub received: u64,
    /// Bytes hashed and written to the temp file so far (readers behind the memory ring read
    /// the file up to here).
    pub written: u64,
    /// The file takes no more bytes (the disk filled, and no room could be made): the fill goes
    /// on to its readers from memory, and a reader whose next bytes are neither in memory nor
    /// in the file ends in an error.
    pub disk_stopped: bool,
    /// The chunks the disk writer had been given but could not write when the disk filled
    /// (offset, bytes): readers behind the memory ring read them here instead of the file.
    pub stranded: Vec<(u64, Bytes)>,
    pub outcome: Outcome,
}

#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Running,
    /// Every byte arrived and matched the digest.
    Verified,
    Failed(Arc<CacheError>),
}

/// One blob being fetched. Shared (`Arc`) by the fill task and the clients reading from it.
pub(crate) struct Fill {
    pub digest: Digest,
    /// `upstream\0repository` of the request that started it: its GET there proves the content
    /// is that repository's (others join only if linked, `links.rs`).
    pub(super) scope: Scope,
    pub temp_path: PathBuf,
    /// The temp file, open for reading and writing; readers get duplicates of it, so they keep
    /// working after it is renamed into place (or unlinked).
    file: File,
    state: watch::Receiver<FillState>,
    /// The last chunks received (offset, bytes): what readers at the head of the fill want next.
    recent: std::sync::Mutex<VecDeque<(u64, Bytes)>>,
    /// The next byte each client wants (`u64::MAX` once it has all it asked for), by reader id.
    readers: std::sync::Mutex<HashMap<u64, u64>>,
    next_reader: AtomicU64,
    /// Told whenever a reader moves on or leaves.
    readers_moved: Notify,
}

/// One client of a fill. Dropping it (the response ended, or was never sent) tells the fill the
/// client is gone.
pub(crate) struct Reader {
    fill: Arc<Fill>,
    id: u64,
}

impl Reader {
    pub(crate) fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    fn at(&self, pos: u64) {
        self.fill.lock_readers().insert(self.id, pos);
        self.fill.readers_moved.notify_waiters();
    }

    /// The bytes `[start, end)` of the blob as they arrive (see [`Fill::stream`]).
    pub(crate) fn stream(
        self,
        file: File,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send {
        self.at(start);
        Fill::stream(self, file, start, end)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.fill.lock_readers().remove(&self.id);
        self.fill.readers_moved.notify_waiters();
    }
}

/// The bytes from `pos` (not past `limit`, at most a read's worth) if one of `chunks` (offset,
/// bytes) holds them.
fn slice_of<'a>(
    chunks: impl IntoIterator<Item = &'a (u64, Bytes)>,
    pos: u64,
    limit: u64,
) -> Option<Bytes> {
    let (off, b) = chunks
        .into_iter()
        .find(|(off, b)| *off <= pos && pos < off + b.len() as u64)?;
    let start = (pos - off) as usize;
    let end = ((limit - off).min(b.len() as u64) as usize).min(start + READ_CHUNK);
    (end > start).then(|| b.slice(start..end))
}

impl Fill {
    /// Creates the temp file and the fill's state channel. Returns the shared fill and the sender
    /// the fill task reports progress on.
    pub(super) fn create(
        digest: Digest,
        temp_path: PathBuf,
        scope: Scope,
    ) -> io::Result<(Arc<Fill>, watch::Sender<FillState>)> {
        super::assert_off_the_workers();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        let (tx, rx) = watch::channel(FillState {
            total: None,
            received: 0,
            written: 0,
            disk_stopped: false,
            stranded: Vec::new(),
            outcome: Outcome::Running,
        });
        Ok((
            Arc::new(Fill {
                digest,
                scope,
                temp_path,
                file,
                state: rx,
                recent: std::sync::Mutex::new(VecDeque::with_capacity(RECENT_CHUNKS)),
                readers: std::sync::Mutex::new(HashMap::new()),
                next_reader: AtomicU64::new(0),
                readers_moved: Notify::new(),
            }),
            tx,
        ))
    }

    /// Deletes the temp file's name (on the blocking pool); descriptors already open keep
    /// reading. A file already gone is fine.
    pub(crate) async fn remove_temp(&self) {
        let temp = self.temp_path.clone();
        let _ = super::off_the_workers(move || std::fs::remove_file(temp)).await;
    }

    /// A descriptor for writing (the fill task's) or reading (a client's).
    pub(crate) fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// A new client of this fill, starting at byte 0 until it says otherwise.
    pub(crate) fn join(self: &Arc<Self>) -> Reader {
        let id = self.next_reader.fetch_add(1, Ordering::Relaxed);
        self.lock_readers().insert(id, 0);
        Reader {
            fill: self.clone(),
            id,
        }
    }

    fn lock_readers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Bytes)>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For a fill streamed through (no file): waits until remembering one more chunk drops
    /// nothing a client still needs. False if no client is left to stream to.
    pub(crate) async fn make_room(&self) -> bool {
        loop {
            let moved = self.readers_moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let needed = {
                let r = self.lock_recent();
                match r.front() {
                    Some((off, b)) if r.len() == RECENT_CHUNKS => off + b.len() as u64,
                    _ => 0,
                }
            };
            {
                let readers = self.lock_readers();
                if readers.is_empty() {
                    return false;
                }
                if readers.values().all(|&pos| pos >= needed) {
                    return true;
                }
            }
            moved.await;
        }
    }

    /// Lets go of the chunks kept in memory (readers read them from the file instead).
    pub(crate) fn forget_recent(&self) {
        self.lock_recent().clear();
    }

    /// Keeps a just-received chunk in memory for the readers following the fill.
    pub(crate) fn remember(&self, offset: u64, bytes: Bytes) {
        let mut r = self.lock_recent();
        if r.len() == RECENT_CHUNKS {
            r.pop_front();
        }
        r.push_back((offset, bytes));
    }

    /// The bytes from `pos` (not past `limit`) if they are among the recent chunks.
    fn recent_slice(&self, pos: u64, limit: u64) -> Option<Bytes> {
        slice_of(self.lock_recent().iter(), pos, limit)
    }

    /// Waits until the fill has ended, verified or failed.
    pub(crate) async fn finished(&self) {
        let mut rx = self.state.clone();
        loop {
            if !matches!(rx.borrow_and_update().outcome, Outcome::Running) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the blob's size is known. Fails if the fill failed first.
    pub(crate) async fn total(&self) -> Result<u64, Arc<CacheError>> {
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

    /// The bytes `[start, end)` of the blob as they arrive, for `client`. The stream ends with an
    /// error if the fill fails; it never yields the final byte before the digest has matched.
    fn stream(
        client: Reader,
        file: File,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send {
        let rx = client.fill.state.clone();
        let reader = FileReader::new(file, start, end);
        futures_util::stream::unfold(
            (reader, rx, client),
            |(mut reader, mut rx, client)| async move {
                client.at(if reader.done() { u64::MAX } else { reader.pos });
                if reader.done() {
                    return None;
                }
                let fill = &client.fill;
                loop {
                    let mut stranded = None;
                    let progress = {
                        let s = rx.borrow_and_update();
                        if !s.stranded.is_empty() {
                            stranded = slice_of(&s.stranded, reader.pos, reader.end);
                        }
                        match &s.outcome {
                            Outcome::Failed(e) => Err(io::Error::other(e.to_string())),
                            // Every byte may go; those behind the memory ring come from the
                            // file as the disk writer gets there.
                            Outcome::Verified => Ok((u64::MAX, s.written, s.disk_stopped)),
                            // Hold back the last byte until the digest is known to match.
                            Outcome::Running => Ok((
                                s.received
                                    .min(s.total.unwrap_or(u64::MAX).saturating_sub(1)),
                                s.written,
                                s.disk_stopped,
                            )),
                        }
                    };
                    let (released, written, disk_stopped) = match progress {
                        Ok(p) => p,
                        Err(err) => {
                            reader.finish();
                            return Some((Err(err), (reader, rx, client)));
                        }
                    };
                    if released > reader.pos {
                        let limit = released.min(reader.end);
                        if let Some(b) = fill
                            .recent_slice(reader.pos, limit)
                            .or_else(|| stranded.filter(|b| reader.pos + (b.len() as u64) <= limit))
                        {
                            reader.pos += b.len() as u64;
                            return Some((Ok(b), (reader, rx, client)));
                        }
                        if written > reader.pos {
                            let item = reader.read_next(limit.min(written)).await;
                            return Some((item, (reader, rx, client)));
                        }
                        if disk_stopped {
                            // Arrived, but no longer in memory and never written: gone.
                            reader.finish();
                            let err = io::Error::other(format!(
                                "the cache's disk filled during the fill of {}, and byte {} was neither written nor still in memory",
                                fill.digest, reader.pos
                            ));
                            return Some((Err(err), (reader, rx, client)));
                        }
                    }
                    if rx.changed().await.is_err() {
                        reader.finish();
                        let err = io::Error::other(format!(
                            "fill of {} ended without an outcome",
                            fill.digest
                        ));
                        return Some((Err(err), (reader, rx, client)));
                    }
                }
            },
        )
    }
}
