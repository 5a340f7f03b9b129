//! Eviction off the fills' path: a background task evicts least-recently-used entries ahead of
//! need, and a fill waits only when its own bytes would pass the bound.
//!
//! Once stored, reserved and deleting bytes pass the high-water mark (95% of the bound), the
//! first reservation to see it wakes the task and goes on. The task chooses its victims in one
//! pass over the entries, in steps that each hold the lock for about a millisecond
//! (`VictimScan`); then, a batch at a time, they leave the in-memory view (their bytes counted
//! as `deleting`; one used since it was chosen stays), leave the index in one transaction
//! without an fsync of its own (the next durable commit carries it, and every 16th has one so
//! that redb reuses the pages they free: `Index::unindex_evicted`),
//! and their files are deleted on several threads of the blocking pool while the next batch
//! leaves the index; each batch's bytes are given back once its files are gone. When fills take
//! the room as fast as it is made, the pass's list runs out with the cache still above its
//! target: the next pass is begun 32 batches before the end (its steps taken while index
//! removals run), so the eviction goes on without a stall for a scan. It ends, once a pass
//! finds nothing more to take, with one durable commit. A reservation that
//! would pass the bound itself waits for those batches, not for the whole eviction; it fails with
//! `NoRoom` when an eviction that began after it asked found nothing more to evict (fills in
//! flight alone would pass the bound), or after [`ROOM_WAIT`], and its fill goes on uncached.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::index::EntryMeta;
use super::lru::victims::VictimScan;
use super::lru::{State, bytes_of, delete_evicted_files, kinds_of, remove_victims};
use super::{Cache, CacheError, blocking};
use crate::reference::Digest;

/// Victims removed from the index in one transaction and deleted before their bytes are given
/// back: small enough that a fill's own index commit, which waits for the transaction, and a
/// waiting fill's room come soon. At 100k tiny entries, with eviction all the time, 1,024 made
/// the longest wait of a cold fill 267 ms and 128 made it 211 ms (each transaction fsynced
/// then); at 1M, without an fsync each, 512 cost as much a victim as 128 (89 and 83 us) and made
/// the p999 267 ms, 128 226 ms (`scripts/bench.sh scale`).
const BATCH: usize = 128;

/// Threads that delete one batch's files together. An unlink waits for the filesystem (on a
/// disk mounted with `discard`, for the device to discard the file's blocks): 62 us a file one
/// at a time here, 40 us with 4 threads, no less with more.
const DELETERS: usize = 4;

/// Batches before the end of a pass at which the next pass begins, its steps taken while the
/// index removals run: about the time of a pass over a million entries.
const AHEAD: usize = 32;

/// Slots the victim scan looks at per hold of the cache's lock: about a millisecond's work.
pub(super) const SCAN_STEP: usize = 8192;

/// A batch's files being deleted, and their bytes (counted as `deleting` until they are gone).
struct Deletion {
    freed: u64,
    parts: Vec<JoinHandle<Result<(), CacheError>>>,
}

/// A pass over the entries choosing victims, the stored bytes it goes down to, and whether
/// every slot has been looked at.
struct Pass {
    scan: VictimScan,
    goal: u64,
    done: bool,
}

/// How long a waiting reservation sleeps before it looks again, should a wake-up be missed.
const RECHECK: Duration = Duration::from_millis(250);

/// The longest a reservation waits for eviction to make room before its fill goes on uncached.
/// While eviction keeps pace, a wait is a batch or a few (the longest 136-379 ms at a million
/// 512-byte entries, 64 KiB fills past the bound all the time, `scripts/bench.sh scale`); after
/// `max_size` is lowered far below what is held, every fill used to wait for the whole shrink
/// (more than 10 s at a million entries).
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// The background eviction's handles.
#[derive(Default)]
pub(super) struct Evictor {
    /// Wakes the task (a permit is kept if it is busy: no request is lost).
    wake: Notify,
    /// Signalled after each batch of deleted files and at the end of each eviction.
    freed: Notify,
    /// Whether the task has been spawned.
    spawned: AtomicBool,
    /// Requests made, and the last request an eviction that has ended began after.
    asked: AtomicU64,
    answered: AtomicU64,
}

impl Cache {
    /// The high-water mark: past it, eviction starts in the background.
    pub(super) fn high_watermark(&self) -> u64 {
        self.bound() / 20 * 19
    }

    /// Wakes the background eviction (spawning it on first use); returns the request's number.
    pub(super) fn start_eviction(&self) -> u64 {
        let asked = self.evictor.asked.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.evictor.spawned.swap(true, Ordering::SeqCst) {
            tokio::spawn(evict_in_background(self.evictor.clone(), self.me.clone()));
        }
        self.evictor.wake.notify_one();
        asked
    }

    /// Waits until the reservation of `size` (already counted) fits within the bound, for
    /// [`ROOM_WAIT`] at most: then it fails with `NoRoom` (and gives its bytes back), and the
    /// fill goes on to its clients uncached, as when nothing can be evicted.
    pub(super) async fn wait_for_room(&self, size: u64) -> Result<bool, CacheError> {
        let asked = self.start_eviction();
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            let freed = self.evictor.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.lock();
                if s.lru.committed + s.lru.deleting + s.lru.reserved <= self.bound() {
                    return Ok(true);
                }
                let ended_since = self.evictor.answered.load(Ordering::SeqCst) >= asked;
                // Eviction found nothing more (fills in flight alone would pass the bound), or
                // is far behind (a lowered `max_size`, a shrunk filesystem): a fill does not
                // stall behind it.
                let nothing_more = ended_since && s.lru.deleting == 0;
                if nothing_more || tokio::time::Instant::now() >= deadline {
                    s.lru.reserved -= size;
                    return Err(CacheError::NoRoom(self.bound()));
                }
            }
            let look_again = deadline.min(tokio::time::Instant::now() + RECHECK);
            let _ = tokio::time::timeout_at(look_again, freed).await;
        }
    }

    /// Evicts least-recently-used entries down to `target(state)` stored bytes: victims chosen
    /// by a scan in steps of [`SCAN_STEP`] slots, the lock let go between them; then a batch
    /// at a time, each victim leaves the view (unless used since it was chosen) and the index,
    /// then its file is deleted (on [`DELETERS`] threads, beside the next batch's removal from
    /// the index) and its bytes are given back. Run by one eviction at a time (the caller holds
    /// `evicting`), which holds it until every file it chose is deleted.
    pub(super) async fn evict(&self, target: impl Fn(&State) -> u64) -> Result<(), CacheError> {
        let Some(first) = self.scan_for(&target) else {
            return Ok(());
        };
        let mut first_error = None;
        // The files of the batch before, being deleted while this batch leaves the index.
        let mut deleting: Option<Deletion> = None;
        let mut pass = Some(first);
        while let Some(Pass {
            mut scan,
            goal,
            mut done,
        }) = pass.take()
        {
            while !done {
                done = self.lock().lru.scan_step(&mut scan, SCAN_STEP);
                tokio::task::yield_now().await;
            }
            let chosen = scan.chosen();
            let batches = chosen.len().div_ceil(BATCH);
            let mut took_any = false;
            for (i, batch) in chosen.chunks(BATCH).enumerate() {
                // The next pass, begun while this one's last batches go, in case fills take
                // the room they free: it is then ready when this one's list runs out.
                if pass.is_none() && batches - i <= AHEAD {
                    pass = self.scan_for(&target);
                }
                let victims = self.lock().take_victims(batch, goal);
                if victims.is_empty() {
                    continue;
                }
                took_any = true;
                self.publish_size();
                let victims = Arc::new(victims);
                let (index, v) = (self.index.clone(), victims.clone());
                let unindex = blocking(move || index.unindex_evicted(&kinds_of(&v)));
                let unindexed = self.scan_while(unindex, pass.as_mut()).await;
                if let Some(before) = deleting.take() {
                    self.deleted(before, &mut first_error).await;
                }
                if unindexed.is_err() {
                    // A full disk refuses even a removal: the files go first, then the index.
                    let (store, index, metrics) =
                        (self.store.clone(), self.index.clone(), self.metrics.clone());
                    let freed = bytes_of(&victims);
                    let removed =
                        blocking(move || remove_victims(&store, &index, &metrics, &victims)).await;
                    self.give_back(freed);
                    if let Err(e) = removed {
                        first_error.get_or_insert(e);
                    }
                    continue;
                }
                deleting = Some(self.delete_files(victims));
            }
            // A pass that took nothing (everything chosen was used since) ends the eviction.
            if !took_any {
                pass = None;
            }
        }
        if let Some(before) = deleting.take() {
            self.deleted(before, &mut first_error).await;
        }
        let index = self.index.clone();
        if let Err(e) = blocking(move || index.persist()).await {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A pass choosing victims down to `target(state)`, if stored bytes are above it.
    fn scan_for(&self, target: &impl Fn(&State) -> u64) -> Option<Pass> {
        let s = self.lock();
        let goal = target(&s);
        let scan = s.lru.scan_for_victims(goal, 0)?;
        Some(Pass {
            scan,
            goal,
            done: false,
        })
    }

    /// Awaits `work`, meanwhile taking the steps of the next pass (if any, until it is done),
    /// one per turn of the runtime.
    async fn scan_while<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        mut next: Option<&mut Pass>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            if let Some(out) = futures_util::FutureExt::now_or_never(work.as_mut()) {
                return out;
            }
            match next.as_mut() {
                Some(pass) if !pass.done => {
                    pass.done = self.lock().lru.scan_step(&mut pass.scan, SCAN_STEP);
                    tokio::task::yield_now().await;
                }
                _ => return work.await,
            }
        }
    }

    /// Starts deleting the files of victims already gone from the index, on [`DELETERS`]
    /// threads of the blocking pool.
    fn delete_files(&self, victims: Arc<Vec<(Digest, EntryMeta)>>) -> Deletion {
        let share = victims.len().div_ceil(DELETERS);
        let parts = (0..victims.len())
            .step_by(share)
            .map(|from| {
                let (store, metrics, victims) =
                    (self.store.clone(), self.metrics.clone(), victims.clone());
                tokio::spawn(blocking(move || {
                    let part = &victims[from..(from + share).min(victims.len())];
                    delete_evicted_files(&store, &metrics, part)
                }))
            })
            .collect();
        Deletion {
            freed: bytes_of(&victims),
            parts,
        }
    }

    /// Waits for a deletion to end, and gives its bytes back.
    async fn deleted(&self, deletion: Deletion, first_error: &mut Option<CacheError>) {
        for part in deletion.parts {
            if let Err(e) = crate::blocking::joined(part.await).await {
                first_error.get_or_insert(e);
            }
        }
        self.give_back(deletion.freed);
    }

    /// Bytes of deleted files are no longer counted: waiting reservations look again.
    pub(super) fn give_back(&self, freed: u64) {
        self.lock().lru.deleting -= freed;
        self.evictor.freed.notify_waiters();
    }
}

/// The background eviction: each wake-up evicts down to the low-water mark (less what fills
/// have reserved). It holds the cache only while evicting, and ends once the cache is gone.
async fn evict_in_background(evictor: Arc<Evictor>, cache: Weak<Cache>) {
    loop {
        evictor.wake.notified().await;
        let Some(c) = cache.upgrade() else { return };
        let asked = evictor.asked.load(Ordering::SeqCst);
        let _one = c.evicting.lock().await;
        let evicted = c
            .evict(|s| c.low_watermark().saturating_sub(s.lru.reserved))
            .await;
        if let Err(e) = evicted {
            tracing::warn!(error = %e, "could not evict least-recently-used entries");
        }
        evictor.answered.fetch_max(asked, Ordering::SeqCst);
        evictor.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::index::{EntryMeta, KIND_BLOB, KIND_PINNED};
    use crate::reference::Digest;

    /// A cache of 1,000 bytes holding `n` entries of 100 bytes, aged in order, kinds as given.
    fn holding(dir: &std::path::Path, n: u8, kinds: u8) -> Arc<Cache> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let minute = Duration::from_secs(60);
        let cache = Cache::open(dir, 1000, minute, Duration::ZERO, metrics, None, false).unwrap();
        let mut s = cache.lock();
        for i in 0..n {
            let meta = EntryMeta {
                size: 100,
                last_access_ms: u64::from(i) + 1,
                kinds,
            };
            s.lru.insert_found(Digest::sha256_of(&[i]), meta);
        }
        drop(s);
        cache
    }

    /// Past the high-water mark a reservation goes on at once and eviction runs behind it, down
    /// to the low-water mark; a reservation that would pass the bound waits for the room.
    #[test]
    fn eviction_runs_behind_the_fills_and_makes_room_ahead_of_need() {
        let dir = tempfile::tempdir().unwrap();
        let cache = holding(dir.path(), 9, KIND_BLOB);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            // 900 + 60 passes 950: eviction starts; 960 is within the bound, so no wait.
            assert!(cache.reserve(60).await.unwrap());
            // Until the victims are chosen and their files deleted (`deleting` back to 0).
            for _ in 0..200 {
                let done = {
                    let s = cache.lock();
                    s.lru.committed <= 900 - 60 && s.lru.deleting == 0
                };
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            {
                let s = cache.lock();
                assert_eq!(
                    s.lru.committed, 800,
                    "the oldest went, down to the low-water mark less what is reserved"
                );
                assert!(!s.lru.holds(&Digest::sha256_of(&[0])));
                assert!(s.lru.holds(&Digest::sha256_of(&[1])));
                assert_eq!(s.lru.deleting, 0);
            }
            // 800 + 60 + 200 passes the bound: this one waits until eviction has deleted.
            assert!(cache.reserve(200).await.unwrap());
            let s = cache.lock();
            assert!(s.lru.committed + s.lru.deleting + s.lru.reserved <= 1000);
        });
    }

    /// When nothing can be evicted (everything pinned) a reservation past the bound fails
    /// rather than waiting for ever, and gives its bytes back.
    #[test]
    fn a_reservation_past_the_bound_with_nothing_to_evict_fails() {
        let dir = tempfile::tempdir().unwrap();
        let cache = holding(dir.path(), 9, KIND_BLOB | KIND_PINNED);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let refused = tokio::time::timeout(Duration::from_secs(5), cache.reserve(200)).await;
            assert!(matches!(refused, Ok(Err(CacheError::NoRoom(1000)))));
        });
        assert_eq!(cache.lock().lru.reserved, 0);
        assert_eq!(cache.lock().lru.committed, 900);
    }

    /// A reservation past the bound while eviction cannot keep up (here it cannot start: another
    /// holds `evicting`) fails after [`ROOM_WAIT`], its fill then going on uncached, instead of
    /// waiting as long as eviction takes.
    #[test]
    fn a_reservation_does_not_wait_long_for_an_eviction_far_behind() {
        let dir = tempfile::tempdir().unwrap();
        let cache = holding(dir.path(), 9, KIND_BLOB);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let _busy = cache.evicting.lock().await;
            let started = std::time::Instant::now();
            let refused = tokio::time::timeout(Duration::from_secs(5), cache.reserve(200)).await;
            assert!(matches!(refused, Ok(Err(CacheError::NoRoom(1000)))));
            assert!(started.elapsed() >= ROOM_WAIT);
        });
        assert_eq!(cache.lock().lru.reserved, 0);
        assert_eq!(cache.lock().lru.committed, 900);
    }
}
