//! Group commit: the index records of fills that finish together go in one transaction, with
//! one fsync.
//!
//! redb has one writer at a time, and a durable commit holds it for its fsync. Sixteen fills
//! ending at once each made a commit of their own, one after another, and eviction's removals
//! (`evictor.rs`) waited behind all of them. Here a fill queues its [`Batch`] and waits; the
//! first to find no writer running starts one on the blocking pool, which writes everything
//! queued in one transaction, answers each fill, and goes on while more is queued. A fill's
//! record is still durable before its fill ends (invariant: a stored blob's entry is never
//! lost to a stop that came after its fill).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::index::{self, Batch, Index, IndexError};
use super::{CacheError, blocking, now_millis};

/// Batches waiting for the writer, and whether it runs.
#[derive(Default)]
pub(super) struct Commits {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Batch, oneshot::Sender<Result<(), IndexError>>)>,
    writing: bool,
    /// Transactions written, for the tests.
    #[cfg(test)]
    groups: usize,
}

impl Commits {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `batch` to the index, with whatever other batches are queued beside it, and
    /// returns once it is durable.
    pub(super) async fn write(
        self: &Arc<Self>,
        index: &Arc<Index>,
        batch: Batch,
    ) -> Result<(), CacheError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue();
            q.waiting.push((batch, tx));
            !std::mem::replace(&mut q.writing, true)
        };
        if start {
            let (commits, index) = (self.clone(), index.clone());
            tokio::spawn(blocking(move || {
                commits.write_queued(&index);
                Ok::<(), CacheError>(())
            }));
        }
        match rx.await {
            Ok(written) => written.map_err(Into::into),
            Err(_) => Err(index::ie("the index's writer stopped").into()),
        }
    }

    /// Writes what is queued, a transaction per group, until nothing is. Blocking.
    fn write_queued(&self, index: &Index) {
        // Should a write panic, the next batch starts a writer again.
        struct Stopped<'a>(&'a Commits);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.queue().writing = false;
                }
            }
        }
        let _stopped = Stopped(self);
        loop {
            let group = {
                let mut q = self.queue();
                if q.waiting.is_empty() {
                    q.writing = false;
                    return;
                }
                #[cfg(test)]
                {
                    q.groups += 1;
                }
                std::mem::take(&mut q.waiting)
            };
            let (batches, answers): (Vec<Batch>, Vec<_>) = group.into_iter().unzip();
            let written = index.write_all(&batches, now_millis());
            for answer in answers {
                let _ = answer.send(written.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::index::{EntryMeta, KIND_BLOB};
    use crate::reference::Digest;

    /// Sixteen fills ending together make one transaction, and every record is in the index
    /// once each write has returned.
    #[test]
    fn records_queued_together_are_written_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let index = Arc::new(Index::open(&path).unwrap());
        let commits = Arc::new(Commits::default());
        // One thread: the writer cannot start before all sixteen have queued.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let writes = (0..16u8).map(|i| {
                let batch = Batch {
                    entries: vec![(
                        Digest::sha256_of(&[i]),
                        EntryMeta {
                            size: 10,
                            last_access_ms: 1,
                            kinds: KIND_BLOB,
                        },
                    )],
                    ..Batch::default()
                };
                commits.write(&index, batch)
            });
            for written in futures_util::future::join_all(writes).await {
                written.unwrap();
            }
        });
        assert_eq!(commits.queue().groups, 1);
        assert!(!commits.queue().writing);
        assert_eq!(index.entries().unwrap().len(), 16);
    }
}
