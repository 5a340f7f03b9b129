//! Space accounting and least-recently-used eviction: how the cache stays within `max_size`.
//!
//! [`State`] is the in-memory view of what is stored (sizes, access times, kinds) and of the
//! bytes promised to fills in flight. A fill reserves its size before it writes; when stored plus
//! reserved bytes would pass `max_size`, the oldest entries are evicted down to the low watermark
//! (90%). Access times change in memory on every hit and reach the index in batches.

use std::collections::{HashMap, HashSet};

use super::fills::Fills;
use super::index::{EntryMeta, Index, KIND_BLOB, KIND_PINNED};
use super::links::Links;
use super::store::BlobStore;
use super::{Cache, CacheError, blocking, now_millis};
use crate::metrics::{Content, Metrics};
use crate::reference::Digest;

/// Everything under the cache's lock: the in-memory view of what is stored and what is in flight.
///
/// One lock, because the decisions that read it span its parts in one step: "stored and linked,
/// else in flight, else start a fill" (entries, links, fills) and "reserve, or evict first"
/// (entries and the byte counts). Each part that is an idea of its own is a type of its own:
/// [`Lru`] (what is stored, and the bytes the bound is kept by), [`Fills`] (single-flight),
/// `Links` (who may be served what). The lock is held for map operations only, never across an
/// await or a system call (invariant 11).
#[derive(Default)]
pub(super) struct State {
    /// What is stored and the byte counts (this file).
    pub(super) lru: Lru,
    /// Blob fills in flight (`fills.rs`).
    pub(super) fills: Fills,
    /// Which repositories may be served which digests (`links.rs`).
    pub(super) links: Links,
    /// Digests whose shared-tier copy failed its check: fetched from the upstream instead.
    pub(super) shared_refused: HashSet<Digest>,
}

impl State {
    /// Evicts as [`Lru::evict_to`] does, and forgets the links of what went.
    pub(super) fn evict_to(&mut self, target: u64, trigger: u64) -> Vec<(Digest, EntryMeta)> {
        let victims = self.lru.evict_to(target, trigger);
        self.forget_links(&victims);
        victims
    }

    /// Evicts as [`Lru::evict_in_order`] does, and forgets the links of what went.
    fn evict_in_order(
        &mut self,
        by_age: Vec<(u64, Digest)>,
        target: u64,
    ) -> Vec<(Digest, EntryMeta)> {
        let victims = self.lru.evict_in_order(by_age, target);
        self.forget_links(&victims);
        victims
    }

    fn forget_links(&mut self, victims: &[(Digest, EntryMeta)]) {
        for (d, _) in victims {
            self.links.forget(d);
        }
    }
}

/// The LRU's accounting: every stored entry (size, last use, kinds) and the byte counts that keep
/// the disk within `max_size`.
///
/// It exists because the bound is a sum over three kinds of bytes (stored, promised to fills in
/// flight, evicted but not yet deleted) that must be decided on together with the entries: a fill
/// reserves before it writes, and whoever finds the sum past `max_size` evicts the oldest entries
/// first. It keeps `committed` equal to the sum of its entries' sizes; read its fields anywhere in
/// the cache, but change them through its methods. It lives in [`State`], under the cache's lock.
#[derive(Default)]
pub(super) struct Lru {
    pub(super) entries: HashMap<Digest, EntryMeta>,
    /// Entries whose access time changed since the last flush to the index.
    pub(super) dirty: HashSet<Digest>,
    /// Bytes of stored files.
    pub(super) committed: u64,
    /// Bytes promised to fills in flight.
    pub(super) reserved: u64,
    /// Bytes of evicted files not yet deleted from the disk.
    pub(super) deleting: u64,
    /// Entries removed since the start: while it is unchanged, whatever was held still is.
    pub(super) removals: u64,
}

impl Lru {
    /// Whether `digest` is stored.
    pub(super) fn holds(&self, digest: &Digest) -> bool {
        self.entries.contains_key(digest)
    }

    /// The stored entry for `digest`.
    pub(super) fn get(&self, digest: &Digest) -> Option<&EntryMeta> {
        self.entries.get(digest)
    }

    /// Adds an entry found on disk at start-up (its file is there, its time as recorded).
    pub(super) fn insert_found(&mut self, digest: Digest, meta: EntryMeta) {
        self.committed += meta.size;
        self.entries.insert(digest, meta);
    }

    /// Records a stored file (or another kind for one already stored) as just used, and moves its
    /// bytes from `reserved` to `committed`.
    pub(super) fn record(
        &mut self,
        digest: &Digest,
        size: u64,
        kind: u8,
        reserved: u64,
    ) -> EntryMeta {
        let now = now_millis();
        let meta = match self.entries.get(digest) {
            Some(m) => EntryMeta {
                kinds: m.kinds | kind,
                last_access_ms: now,
                size: m.size,
            },
            None => {
                self.committed += size;
                EntryMeta {
                    size,
                    last_access_ms: now,
                    kinds: kind,
                }
            }
        };
        self.entries.insert(digest.clone(), meta);
        self.reserved = self.reserved.saturating_sub(reserved);
        meta
    }

    /// Removes an entry and its bytes from the view (the caller deletes its file and links).
    pub(super) fn forget(&mut self, digest: &Digest) -> Option<EntryMeta> {
        let m = self.entries.remove(digest)?;
        self.removals += 1;
        self.committed -= m.size;
        self.dirty.remove(digest);
        Some(m)
    }

    /// Marks an entry as just used (its new time reaches the index with the next flush).
    pub(super) fn touch(&mut self, digest: &Digest) {
        if let Some(m) = self.entries.get_mut(digest) {
            m.last_access_ms = now_millis();
            self.dirty.insert(digest.clone());
        }
    }

    /// The entries used since the last flush, with their new times (taken: the next flush sends
    /// only what changes after this).
    pub(super) fn take_dirty(&mut self) -> Vec<(Digest, EntryMeta)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|d| self.entries.get(&d).map(|m| (d, *m)))
            .collect()
    }

    /// Gives back bytes reserved for something that will not be stored.
    pub(super) fn release(&mut self, size: u64) {
        self.reserved = self.reserved.saturating_sub(size);
    }

    /// Removes least-recently-used entries until the stored bytes are at most `target`; only
    /// does anything if they are above `trigger` (0: always). Returns what was removed.
    pub(super) fn evict_to(&mut self, target: u64, trigger: u64) -> Vec<(Digest, EntryMeta)> {
        if self.committed <= trigger.max(target) {
            return Vec::new();
        }
        let by_age = oldest_first(self.ages());
        self.evict_in_order(by_age, target)
    }

    /// Every entry's last access, unsorted: cheap to take under the lock.
    fn ages(&self) -> Vec<(u64, Digest)> {
        self.entries
            .iter()
            .map(|(d, m)| (m.last_access_ms, d.clone()))
            .collect()
    }

    /// Removes entries in the order given until the stored bytes are at most `target`, skipping
    /// any used since the order was taken (it is no longer old) and pinned ones (imported). Their
    /// bytes count as `deleting` until the caller has deleted the files.
    fn evict_in_order(
        &mut self,
        by_age: Vec<(u64, Digest)>,
        target: u64,
    ) -> Vec<(Digest, EntryMeta)> {
        let mut victims = Vec::new();
        for (at, d) in by_age {
            if self.committed <= target {
                break;
            }
            if self
                .entries
                .get(&d)
                .is_none_or(|m| m.last_access_ms != at || m.kinds & KIND_PINNED != 0)
            {
                continue;
            }
            if let Some(m) = self.forget(&d) {
                self.deleting += m.size;
                victims.push((d, m));
            }
        }
        victims
    }
}

/// Sorts entries' ages oldest first (outside the lock: it is the costly part of an eviction).
fn oldest_first(mut ages: Vec<(u64, Digest)>) -> Vec<(u64, Digest)> {
    ages.sort_unstable();
    ages
}

impl Cache {
    /// Makes room for `size` more bytes, evicting if needed. Returns false if the item can never
    /// fit (larger than `max_size`): it is then streamed through and not kept. On return, the
    /// bytes on disk plus every reservation are within `max_size`.
    pub(super) async fn reserve(&self, size: u64) -> Result<bool, CacheError> {
        if size > self.bound() {
            return Ok(false);
        }
        let over = {
            let mut s = self.lock();
            s.lru.reserved += size;
            s.lru.committed + s.lru.deleting + s.lru.reserved > self.bound()
        };
        if over {
            // One eviction at a time; whoever waited here finds the room the last one made.
            let _one = self.evicting.lock().await;
            self.evict(|s| self.low_watermark().saturating_sub(s.lru.reserved))
                .await?;
            let mut s = self.lock();
            if s.lru.committed + s.lru.reserved > self.bound() {
                // Fills in flight alone would pass the bound: this one cannot go on.
                s.lru.reserved -= size;
                return Err(CacheError::NoRoom(self.bound()));
            }
        }
        Ok(true)
    }

    /// Evicts least-recently-used entries down to `target(state)` stored bytes: ages are taken
    /// under the lock, sorted outside it, and the files deleted on the blocking pool.
    pub(super) async fn evict(&self, target: impl Fn(&State) -> u64) -> Result<(), CacheError> {
        let ages = {
            let s = self.lock();
            if s.lru.committed <= target(&s) {
                return Ok(());
            }
            s.lru.ages()
        };
        let by_age = oldest_first(ages);
        let victims = {
            let mut s = self.lock();
            let target = target(&s);
            s.evict_in_order(by_age, target)
        };
        let freed: u64 = victims.iter().map(|(_, m)| m.size).sum();
        let (store, index, metrics) =
            (self.store.clone(), self.index.clone(), self.metrics.clone());
        let removed = blocking(move || remove_victims(&store, &index, &metrics, victims)).await;
        self.lock().lru.deleting -= freed;
        self.publish_size();
        removed
    }

    /// Gives back bytes reserved for something that will not be stored.
    pub(super) fn release(&self, size: u64) {
        self.lock().lru.release(size);
    }
}

/// Deletes evicted files and their index entries.
pub(super) fn remove_victims(
    store: &BlobStore,
    index: &Index,
    metrics: &Metrics,
    victims: Vec<(Digest, EntryMeta)>,
) -> Result<(), CacheError> {
    if victims.is_empty() {
        return Ok(());
    }
    let digests: Vec<Digest> = victims.iter().map(|(d, _)| d.clone()).collect();
    for (d, meta) in &victims {
        let kind = if meta.kinds & KIND_BLOB != 0 {
            Content::Blob
        } else {
            Content::Manifest
        };
        metrics.evicted(kind, meta.size);
        tracing::debug!(digest = %d, size = meta.size, "evicted");
        store.remove(d)?;
    }
    index.remove_entries(&digests)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_oldest_first() {
        let mut s = Lru::default();
        for (i, size) in [(1u8, 100u64), (2, 100), (3, 100)] {
            let d = Digest::sha256_of(&[i]);
            s.entries.insert(
                d,
                EntryMeta {
                    size,
                    last_access_ms: i as u64,
                    kinds: KIND_BLOB,
                },
            );
            s.committed += size;
        }
        // Touch the oldest: it becomes the youngest.
        s.entries
            .get_mut(&Digest::sha256_of(&[1]))
            .unwrap()
            .last_access_ms = 10;
        let victims = s.evict_to(150, 0);
        let gone: Vec<Digest> = victims.into_iter().map(|(d, _)| d).collect();
        assert_eq!(gone, vec![Digest::sha256_of(&[2]), Digest::sha256_of(&[3])]);
        assert_eq!(s.committed, 100);
        assert!(s.evict_to(150, 200).is_empty());
    }

    #[test]
    fn pinned_entries_are_never_evicted() {
        let mut s = Lru::default();
        for (i, kinds) in [(1u8, KIND_BLOB | KIND_PINNED), (2, KIND_BLOB)] {
            s.entries.insert(
                Digest::sha256_of(&[i]),
                EntryMeta {
                    size: 100,
                    last_access_ms: i as u64,
                    kinds,
                },
            );
            s.committed += 100;
        }
        // The pinned entry is the oldest, yet only the other one goes.
        let gone: Vec<Digest> = s.evict_to(0, 0).into_iter().map(|(d, _)| d).collect();
        assert_eq!(gone, vec![Digest::sha256_of(&[2])]);
        assert_eq!(s.committed, 100);
    }
}
