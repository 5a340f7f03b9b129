//! A cold fill: one upstream fetch of one blob, shared by every client that wants it meanwhile.
//!
//! The fill owns a temp file. Its task writes the upstream bytes there while a hash runs over the
//! same bytes, and publishes how far it has got on a `watch` channel. Each client reads the file
//! through its own duplicated descriptor from its own offset, so Range works on a cold blob, a slow
//! client never slows the upstream, and memory stays flat however many clients join. The last
//! byte is held back until the digest has matched: on a mismatch or an upstream failure, every
//! reader's body ends in an error, so no client ever sees a complete wrong response
//! (ARCHITECTURE.md, invariant 1).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::CacheError;
use super::file_reader::{FileReader, READ_CHUNK};
use crate::reference::Digest;

/// How many of a fill's most recent chunks stay in memory, so readers that keep up with the
/// upstream get them without reading the file back (at most this many times the write size).
const RECENT_CHUNKS: usize = 8;

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
    pub(crate) fn create(
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
    pub(crate) fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Keeps a just-received chunk in memory for the readers following the fill.
    pub(crate) fn remember(&self, offset: u64, bytes: Bytes) {
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

    /// The bytes `[start, end)` of the blob as they arrive. The stream ends with an error if the
    /// fill fails; it never yields the final byte before the digest has matched.
    pub(crate) fn stream(
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
