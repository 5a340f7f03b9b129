//! The disk side of a fill: hashing and writing its chunks off the async workers.
//!
//! Hashing runs on one blocking thread and writing on another, each fed through a bounded queue,
//! so the network, the clients, the hash and the disk all run at once. Clients wait only for the
//! hash (to release the last byte); keeping the file waits for the disk too.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::CacheError;
use super::fill::{FillState, Outcome};
use super::room::{FULL_RETRIES, is_full};
use crate::blocking::marked_off_the_workers;
use crate::reference::Hasher;

/// Hashes a fill's chunks on one blocking thread and writes them to its temp file on another,
/// each fed through a bounded queue: the network, the clients, the hash and the disk all run at
/// once. Clients wait only for the hash (to release the last byte); keeping the file waits for
/// the disk too. A full queue makes the fill wait, so memory stays bounded.
pub(super) struct FillWriter {
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
pub(super) struct PendingWrites(Option<tokio::task::JoinHandle<io::Result<u64>>>);

impl PendingWrites {
    /// Waits for every chunk to be on disk; returns how many bytes were written.
    pub(super) async fn wait(mut self) -> io::Result<u64> {
        match self.0.take() {
            Some(w) => w.await.map_err(|e| io::Error::other(e.to_string()))?,
            None => Err(io::Error::other("the fill's writes already ended")),
        }
    }
}

impl FillWriter {
    /// Starts the hashing and writing threads; the writer reports `FillState::written`. Without a
    /// file (a blob streamed through), only the hash runs.
    ///
    /// A write the disk refuses for want of space calls `make_room` (on the writer's thread) and
    /// is tried again while that frees something, at most [`FULL_RETRIES`] times.
    pub(super) fn start(
        file: Option<File>,
        mut hasher: Hasher,
        progress: Arc<watch::Sender<FillState>>,
        make_room: Box<dyn Fn() -> bool + Send>,
    ) -> FillWriter {
        let (to_hash, mut hash_rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
        // Two long-lived threads a fill, joined by their handles (not one piece of work each).
        #[allow(clippy::disallowed_methods, reason = "joined through its handle")]
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some(data) = hash_rx.blocking_recv() {
                hasher.update(&data);
            }
            hasher
        });
        let Some(file) = file else {
            return FillWriter {
                to_hash: Some(to_hash),
                to_disk: None,
                hashing: Some(hashing),
                writing: None,
                queued: 0,
            };
        };
        let (to_disk, mut disk_rx) = tokio::sync::mpsc::channel::<Bytes>(DISK_QUEUE);
        #[allow(clippy::disallowed_methods, reason = "joined through its handle")]
        let writing = tokio::task::spawn_blocking(move || {
            marked_off_the_workers(|| {
                let mut pos = 0u64;
                while let Some(data) = disk_rx.blocking_recv() {
                    let mut written = file.write_all_at(&data, pos);
                    let mut tries = 0;
                    while let Err(e) = &written
                        && is_full(e)
                        && tries < FULL_RETRIES
                        && make_room()
                    {
                        tries += 1;
                        written = file.write_all_at(&data, pos);
                    }
                    if let Err(e) = written {
                        if is_full(&e) {
                            // No room could be made: the fill passes the rest through from
                            // memory (`Intake::pass_through`). What it was given and could not
                            // write stays in memory for the readers behind.
                            disk_rx.close();
                            let mut stranded = vec![(pos, data.clone())];
                            let mut at = pos + data.len() as u64;
                            while let Ok(more) = disk_rx.try_recv() {
                                let len = more.len() as u64;
                                stranded.push((at, more));
                                at += len;
                            }
                            progress.send_modify(|s| {
                                s.disk_stopped = true;
                                s.stranded = stranded;
                            });
                            return Err(e);
                        }
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
            })
        });
        FillWriter {
            to_hash: Some(to_hash),
            to_disk: Some(to_disk),
            hashing: Some(hashing),
            writing: Some(writing),
            queued: 0,
        }
    }

    /// Hands a chunk to the hash and the disk, waiting while either queue is full.
    pub(super) async fn push(&mut self, data: Bytes) -> io::Result<()> {
        self.queued += data.len() as u64;
        let hashed = match &self.to_hash {
            Some(tx) => tx.send(data.clone()).await.is_ok(),
            None => false,
        };
        let stored = match &self.to_disk {
            Some(tx) => tx.send(data).await.is_ok(),
            None => self.writing.is_none(),
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

    /// Writes no more to the file: what is queued is written (or refused), and the writer ends.
    /// Later chunks go to the hash alone.
    pub(super) async fn stop_writing(&mut self) {
        self.to_disk = None;
        if let Some(w) = self.writing.take() {
            let _ = w.await;
        }
    }

    /// Waits for the hash of everything; the writes may still be going on.
    pub(super) async fn finish(mut self) -> io::Result<(Hasher, u64, PendingWrites)> {
        self.to_hash = None;
        self.to_disk = None;
        let hasher = match self.hashing.take() {
            Some(h) => h.await.map_err(|e| io::Error::other(e.to_string()))?,
            None => return Err(io::Error::other("the fill's hash already ended")),
        };
        Ok((hasher, self.queued, PendingWrites(self.writing.take())))
    }
}
