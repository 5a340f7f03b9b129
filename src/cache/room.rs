//! Room on the disk: the bound the cache keeps is the smaller of `max_size` and what its
//! filesystem can hold beside its other users.
//!
//! `max_size` is what the operator allows; the filesystem may hold less (a volume smaller than
//! configured, or one shared with something that grew). The cache measures it (`statvfs`) at
//! start-up, at every access-time flush, before it streams a blob through as too large, and
//! whenever a write is refused for want of space (`ENOSPC`), and keeps its bound at what it
//! stores plus what is free, less a headroom for the index and the filesystem, never above
//! `max_size` less the index's own file (it counts towards `max_size` too). A lower bound evicts least-recently-used entries as any other; when space comes
//! back, the bound rises again, without a restart.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::lru::{bytes_of, remove_victims};
use super::{Cache, CacheError, blocking};
use crate::metrics::Content;

/// How many times a write refused for want of space is tried again, each after evicting.
pub(super) const FULL_RETRIES: usize = 3;

/// About what redb's file takes with little in it (its header and first region, 1 MiB and 8 KiB
/// when empty): not counted, so that even a tiny cache keeps its bound.
const EMPTY_INDEX: u64 = 2 << 20;

/// Space the cache leaves free on its filesystem, for the index and the filesystem's own needs:
/// 2% of it, at least 4 MiB.
fn headroom(total: u64) -> u64 {
    (total / 50).max(4 << 20)
}

/// A filesystem's size and the bytes an unprivileged writer may still use on it.
struct Room {
    total: u64,
    free: u64,
}

fn measure(dir: &Path) -> io::Result<Room> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(Room {
        total: st.f_blocks.saturating_mul(st.f_frsize),
        free: st.f_bavail.saturating_mul(st.f_frsize),
    })
}

/// What a cache holding `held` bytes could hold on a filesystem with this room, and the bound it
/// keeps: at most `max_size` less its index's file of `index_file` bytes.
fn bound_from(room: &Room, held: u64, max_size: u64, index_file: u64) -> (u64, u64) {
    let holds = (held + room.free).saturating_sub(headroom(room.total));
    // The index is on the same disk and within the same `max_size`: what it grows to beyond its
    // first 2 MiB counts.
    let index = index_file.saturating_sub(EMPTY_INDEX);
    (holds, holds.min(max_size.saturating_sub(index)))
}

/// The bound of a cache that holds `held` bytes, its temp files in `tmp_dir` (as
/// [`Cache::measure_room`] sets it), for a command that has not loaded the cache's records.
pub(super) fn bound_of(
    tmp_dir: &Path,
    held: u64,
    max_size: u64,
    index_file: u64,
) -> io::Result<u64> {
    Ok(bound_from(&measure(tmp_dir)?, held, max_size, index_file).1)
}

/// Whether an I/O error says the disk is full.
pub(super) fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
}

impl Cache {
    /// The bound the cache keeps now.
    pub(super) fn bound(&self) -> u64 {
        self.bound.load(Ordering::Relaxed)
    }

    /// The low-water mark eviction goes down to: 90% of the bound.
    pub(super) fn low_watermark(&self) -> u64 {
        self.bound() / 10 * 9
    }

    /// Measures the filesystem and sets the bound from it: what the cache stores (evicted files
    /// not yet deleted, and fills' reserved bytes, most of them written, included) plus what is
    /// free, less the headroom, at most `max_size` less the index's file. Returns what the
    /// filesystem could hold.
    /// Blocking.
    pub(super) fn measure_room(&self) -> io::Result<u64> {
        super::assert_off_the_workers();
        let room = measure(self.store.tmp_dir())?;
        let held = {
            let s = self.lock();
            s.lru.committed + s.lru.deleting + s.lru.reserved
        };
        let (holds, bound) = bound_from(&room, held, self.max_size, self.index.file_size());
        let before = self.bound.swap(bound, Ordering::Relaxed);
        if before != bound {
            self.metrics.set_cache_bound_bytes(bound);
            if holds < self.max_size && before.abs_diff(bound) > before / 20 {
                tracing::info!(
                    bound,
                    max_size = self.max_size,
                    free = room.free,
                    "the cache's filesystem holds less than max_size: keeping the cache within what it holds"
                );
            }
        }
        Ok(holds)
    }

    /// Measures the filesystem again (`measure_room`) and, if the bound fell below what is
    /// stored, starts the background eviction (down to the low-water mark).
    pub(crate) async fn refresh_room(self: &Arc<Self>) {
        let cache = self.clone();
        let measured = blocking(move || cache.measure_room()).await;
        if let Err(e) = measured {
            tracing::warn!(error = %e, "could not measure the cache's filesystem");
            return;
        }
        let over = {
            let s = self.lock();
            s.lru.committed + s.lru.deleting + s.lru.reserved > self.bound()
        };
        if over {
            self.start_eviction();
        }
    }

    /// What could not be stored for want of space is served all the same: a manifest, a tag or
    /// a link is passed through uncached (counted, and logged), and the request goes on.
    pub(super) fn unless_full(
        &self,
        result: Result<(), CacheError>,
        what: &str,
    ) -> Result<(), CacheError> {
        match result {
            Err(e) if e.is_disk_full() => {
                self.metrics.disk_full(Content::Manifest);
                tracing::warn!(what, error = %e, "the cache's disk is full: served, not kept");
                Ok(())
            }
            other => other,
        }
    }

    /// A write of `kind` was refused for want of space (blocking: the writer's thread). Counts
    /// it, measures the filesystem, evicts least-recently-used entries down to the new low-water
    /// mark, and measures again; true if anything was freed (the write is worth another try).
    pub(super) fn make_room_after_full(&self, kind: Content) -> bool {
        super::assert_off_the_workers();
        self.metrics.disk_full(kind);
        // An eviction running now (a fill's reservation) frees its space before this measures.
        let _one = self.evicting.blocking_lock();
        if let Err(e) = self.measure_room() {
            tracing::warn!(error = %e, "could not measure the cache's filesystem");
            return false;
        }
        // Chosen in steps, as the background eviction chooses (`evictor.rs`): requests go on
        // between them.
        let (scan, target) = {
            let s = self.lock();
            let target = self.low_watermark().saturating_sub(s.lru.reserved);
            (s.lru.scan_for_victims(target, 0), target)
        };
        let victims = match scan {
            Some(mut scan) => {
                while !self
                    .lock()
                    .lru
                    .scan_step(&mut scan, super::evictor::SCAN_STEP)
                {}
                self.lock().take_victims(&scan.chosen(), target)
            }
            None => Vec::new(),
        };
        let freed = bytes_of(&victims);
        let removed = remove_victims(&self.store, &self.index, &self.metrics, &victims);
        self.give_back(freed);
        self.publish_size();
        if let Err(e) = removed {
            tracing::warn!(error = %e, "could not delete evicted files");
        }
        let _ = self.measure_room();
        tracing::warn!(
            kind = kind.label(),
            freed,
            bound = self.bound(),
            "the cache's disk is full: evicted least-recently-used entries to make room"
        );
        freed > 0
    }
}
