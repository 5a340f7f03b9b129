//! Space accounting and least-recently-used eviction: how the cache stays within `max_size`.
//!
//! [`State`] is the in-memory view of what is stored (sizes, access times, kinds) and of the
//! bytes promised to fills in flight. A fill reserves its bytes as they arrive; eviction runs in
//! the background (`evictor.rs`), started once stored, reserved and deleting bytes pass the
//! high-water mark (95% of the bound), down to the low-water mark (90%), so a fill finds the room
//! made before it needs it. Only a reservation that would pass the bound itself waits, and only
//! until eviction has deleted enough. Access times change in memory on every hit and reach the
//! index in batches.

use std::collections::HashSet;

use super::fills::Fills;
use super::held_all::HeldAll;
#[cfg(test)]
use super::index::KIND_PINNED;
use super::index::{EntryMeta, KIND_BLOB, KIND_MANIFEST};
use super::links::{LinkSet, Links};
use super::records::Records;
use super::{Cache, CacheError, now_millis};
use crate::reference::Digest;
use manifest_types::TYPE_SHIFT;

mod deletion;
mod manifest_types;
pub(super) mod victims;

pub(super) use deletion::{bytes_of, delete_evicted_files, kinds_of, remove_victims};

/// Everything under the cache's lock: the in-memory view of what is stored and what is in flight.
///
/// One lock, because the decisions that read it span its parts in one step: "stored and linked,
/// else in flight, else start a fill" (entries, links, fills) and "reserve, or evict first"
/// (entries and the byte counts). Each part that is an idea of its own is a type of its own:
/// [`Lru`] (what is stored, and the bytes the bound is kept by, with each digest's links beside
/// its entry in one record), [`Fills`] (single-flight), `Links` (the scopes links name; who may
/// be served what is read and changed by `State`'s methods in `links.rs`). The lock is held for map operations only, never across an
/// await or a system call (invariant 11).
#[derive(Default)]
pub(super) struct State {
    /// What is stored and the byte counts (this file).
    pub(super) lru: Lru,
    /// Blob fills in flight (`fills.rs`).
    pub(super) fills: Fills,
    /// The scopes links name (`links.rs`).
    pub(super) links: Links,
    /// Digests whose shared-tier copy failed its check: fetched from the upstream instead.
    pub(super) shared_refused: HashSet<Digest>,
    /// Image manifests whose every listed blob was held, for layer prefetch (`held_all.rs`).
    pub(super) held_all: HeldAll,
}

impl State {
    /// Evicts as [`Lru::evict_to`] does, and forgets the links of what went.
    pub(super) fn evict_to(&mut self, target: u64, trigger: u64) -> Vec<(Digest, EntryMeta)> {
        let victims = self.lru.evict_to(target, trigger);
        self.forget_links(&victims);
        victims
    }

    /// Takes victims as [`Lru::take_victims`] does, and forgets the links of what went.
    pub(super) fn take_victims(
        &mut self,
        chosen: &[(u64, Digest)],
        target: u64,
    ) -> Vec<(Digest, EntryMeta)> {
        let victims = self.lru.take_victims(chosen, target);
        self.forget_links(&victims);
        victims
    }

    fn forget_links(&mut self, victims: &[(Digest, EntryMeta)]) {
        for (d, _) in victims {
            self.forget_links_of(d);
        }
    }
}

/// What the cache knows of one digest: its stored entry, if it is held, and its links (which
/// repositories may be served it, `links.rs`). One map for both: a year-old cache holds a million
/// of each, and a map slot costs its digest and a share of the table again.
///
/// 32 bytes: the entry's kinds and the number of its manifest type (`lru/manifest_types.rs`)
/// share a word with its size (the top 16 bits; no file is 2^48 bytes), and the links take 16
/// (`LinkSet`).
pub(super) struct Record {
    /// The entry's size (bits 0-47), its kinds (48-55: 0 when the digest is not held, a manifest
    /// listed it, or a client was linked to it, and no file is stored), and for a manifest the
    /// number of one upstream's media type for it (56-63: 0 when not known here).
    size_kinds: u64,
    last_access_ms: u64,
    pub(super) links: LinkSet,
}

const _: () = assert!(std::mem::size_of::<Record>() == 32);

/// Where a record's kinds start in `size_kinds`, and the bits below them (its size).
const KINDS_SHIFT: u32 = 48;
const SIZE_MASK: u64 = (1 << KINDS_SHIFT) - 1;

impl Record {
    fn kinds(&self) -> u8 {
        (self.size_kinds >> KINDS_SHIFT) as u8
    }

    fn held(&self) -> Option<EntryMeta> {
        let kinds = self.kinds();
        (kinds != 0).then_some(EntryMeta {
            size: self.size_kinds & SIZE_MASK,
            last_access_ms: self.last_access_ms,
            kinds,
        })
    }

    /// Sets the entry. Its manifest type stays while it is still a manifest.
    fn set(&mut self, meta: EntryMeta) {
        debug_assert!(meta.size <= SIZE_MASK);
        let kept = if meta.kinds & KIND_MANIFEST != 0 {
            self.manifest_type()
        } else {
            0
        };
        self.size_kinds = (meta.size & SIZE_MASK)
            | u64::from(meta.kinds) << KINDS_SHIFT
            | u64::from(kept) << TYPE_SHIFT;
        self.last_access_ms = meta.last_access_ms;
    }
}

const NOT_HELD: EntryMeta = EntryMeta {
    size: 0,
    last_access_ms: 0,
    kinds: 0,
};

/// The LRU's accounting: every stored entry (size, last use, kinds) and the byte counts that keep
/// the disk within `max_size`.
///
/// It exists because the bound is a sum over three kinds of bytes (stored, promised to fills in
/// flight, evicted but not yet deleted) that must be decided on together with the entries: a fill
/// reserves before it writes, and whoever finds the sum past `max_size` evicts the oldest entries
/// first. It keeps `committed` equal to the sum of its entries' sizes; read its fields anywhere in
/// the cache, but change them through its methods. It lives in [`State`], under the cache's lock,
/// and holds each digest's links beside its entry (`links.rs` reads and changes them).
#[derive(Default)]
pub(super) struct Lru {
    records: Records<Record>,
    /// The slots of entries whose access time changed since the last flush to the index.
    dirty: HashSet<u32>,
    /// Bytes of stored files.
    pub(super) committed: u64,
    /// Bytes promised to fills in flight.
    pub(super) reserved: u64,
    /// Bytes of evicted files not yet deleted from the disk.
    pub(super) deleting: u64,
    /// Entries removed since the start: while it is unchanged, whatever was held still is.
    pub(super) removals: u64,
    /// The (upstream, media type) pairs manifests' records are numbered by.
    types: manifest_types::ManifestTypes,
}

impl Lru {
    /// Whether `digest` is stored.
    pub(super) fn holds(&self, digest: &Digest) -> bool {
        self.get(digest).is_some()
    }

    /// The stored entry for `digest`.
    pub(super) fn get(&self, digest: &Digest) -> Option<EntryMeta> {
        self.records.get(digest)?.held()
    }

    /// Every stored entry.
    pub(super) fn held(&self) -> impl Iterator<Item = (&Digest, EntryMeta)> {
        self.records
            .iter()
            .filter_map(|(d, r)| Some((d, r.held()?)))
    }

    /// Room for `n` more entries (at start-up, the index's count: no growth while loading).
    pub(super) fn reserve(&mut self, n: usize) {
        self.records.reserve(n);
    }

    /// Adds an entry found on disk at start-up (its file is there, its time as recorded).
    pub(super) fn insert_found(&mut self, digest: Digest, mut meta: EntryMeta) {
        // Every entry is a blob or a manifest: none is written without a kind.
        if meta.kinds == 0 {
            meta.kinds = KIND_BLOB;
        }
        self.committed += meta.size;
        self.record_of(&digest).set(meta);
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
        let meta = match self.get(digest) {
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
        self.record_of(digest).set(meta);
        self.reserved = self.reserved.saturating_sub(reserved);
        meta
    }

    /// Removes an entry and its bytes from the view (the caller deletes its file and links).
    pub(super) fn forget(&mut self, digest: &Digest) -> Option<EntryMeta> {
        let (slot, r) = self.records.find_mut(digest)?;
        let m = r.held()?;
        r.set(NOT_HELD);
        if matches!(r.links, LinkSet::None) {
            self.records.remove(digest);
        }
        self.removals += 1;
        self.committed -= m.size;
        self.dirty.remove(&slot);
        Some(m)
    }

    /// Marks an entry as just used (its new time reaches the index with the next flush).
    pub(super) fn touch(&mut self, digest: &Digest) {
        if let Some((slot, r)) = self.records.find_mut(digest)
            && r.kinds() != 0
        {
            r.last_access_ms = now_millis();
            self.dirty.insert(slot);
        }
    }

    /// The entries used since the last flush, with their new times (taken: the next flush sends
    /// only what changes after this).
    pub(super) fn take_dirty(&mut self) -> Vec<(Digest, EntryMeta)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|slot| {
                let (d, r) = self.records.at(slot)?;
                Some((d.clone(), r.held()?))
            })
            .collect()
    }

    /// The links of `digest`, if it has any.
    pub(super) fn links(&self, digest: &Digest) -> Option<&LinkSet> {
        self.records
            .get(digest)
            .map(|r| &r.links)
            .filter(|l| !matches!(l, LinkSet::None))
    }

    /// The record of `digest`, made (held by nothing, linked to nothing) if there was none.
    pub(super) fn record_of(&mut self, digest: &Digest) -> &mut Record {
        self.records
            .get_or_insert_with(digest, || Record {
                size_kinds: 0,
                last_access_ms: 0,
                links: LinkSet::None,
            })
            .1
    }

    /// Sets the links of `digest` (none: its record goes unless it is held).
    pub(super) fn set_links(&mut self, digest: &Digest, links: LinkSet) {
        match links {
            LinkSet::None => {
                if let Some(r) = self.records.get_mut(digest) {
                    r.links = LinkSet::None;
                    if r.kinds() == 0 {
                        self.records.remove(digest);
                    }
                }
            }
            links => self.record_of(digest).links = links,
        }
    }

    /// Every digest with links, and its links.
    pub(super) fn all_links(&self) -> impl Iterator<Item = (&Digest, &LinkSet)> {
        self.records
            .iter()
            .filter(|(_, r)| !matches!(r.links, LinkSet::None))
            .map(|(d, r)| (d, &r.links))
    }

    /// Sets a stored entry's last use, in a test.
    #[cfg(test)]
    pub(super) fn set_last_use(&mut self, digest: &Digest, ms: u64) {
        if let Some(r) = self.records.get_mut(digest)
            && r.kinds() != 0
        {
            r.last_access_ms = ms;
        }
    }

    /// Gives back bytes reserved for something that will not be stored.
    pub(super) fn release(&mut self, size: u64) {
        self.reserved = self.reserved.saturating_sub(size);
    }
}

impl Cache {
    /// Makes room for `size` more bytes. Returns false if the item can never fit (larger than
    /// the bound): it is then streamed through and not kept. Past the high-water mark it starts
    /// the background eviction and goes on; only a reservation that would pass the bound waits,
    /// until eviction has deleted enough (`NoRoom` if fills in flight alone would pass it). On
    /// return, the bytes on disk plus every reservation are within the bound.
    pub(super) async fn reserve(&self, size: u64) -> Result<bool, CacheError> {
        if size > self.bound() {
            return Ok(false);
        }
        let total = {
            let mut s = self.lock();
            s.lru.reserved += size;
            s.lru.committed + s.lru.deleting + s.lru.reserved
        };
        if total > self.high_watermark() {
            self.start_eviction();
        }
        if total <= self.bound() {
            return Ok(true);
        }
        self.wait_for_room(size).await
    }

    /// Gives back bytes reserved for something that will not be stored.
    pub(super) fn release(&self, size: u64) {
        self.lock().lru.release(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_oldest_first() {
        let mut s = Lru::default();
        for (i, size) in [(1u8, 100u64), (2, 100), (3, 100)] {
            let d = Digest::sha256_of(&[i]);
            s.insert_found(
                d,
                EntryMeta {
                    size,
                    last_access_ms: i as u64,
                    kinds: KIND_BLOB,
                },
            );
        }
        // Touch the oldest: it becomes the youngest.
        s.set_last_use(&Digest::sha256_of(&[1]), 10);
        let victims = s.evict_to(150, 0);
        let gone: Vec<Digest> = victims.into_iter().map(|(d, _)| d).collect();
        assert_eq!(gone, vec![Digest::sha256_of(&[2]), Digest::sha256_of(&[3])]);
        assert_eq!(s.committed, 100);
        assert!(s.evict_to(150, 200).is_empty());
    }

    /// The one-pass choice takes exactly what sorting every entry by age would: the oldest
    /// unpinned entries, oldest first, until the stored bytes are within the target.
    #[test]
    fn victims_are_exactly_the_oldest_as_a_full_sort_would_choose() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20u32 {
            let mut s = Lru::default();
            for i in 0..2000u32 {
                let kinds = if next() % 7 == 0 {
                    KIND_BLOB | KIND_PINNED
                } else {
                    KIND_BLOB
                };
                let meta = EntryMeta {
                    size: 1 + next() % 5000,
                    // Few distinct times: ties are broken by digest, as a sort would.
                    last_access_ms: next() % 300,
                    kinds,
                };
                s.insert_found(
                    Digest::sha256_of(&[round.to_le_bytes(), i.to_le_bytes()].concat()),
                    meta,
                );
            }
            let target = s.committed / 100 * (next() % 100);
            let mut sorted: Vec<(u64, Digest, EntryMeta)> = s
                .held()
                .filter(|(_, m)| m.kinds & KIND_PINNED == 0)
                .map(|(d, m)| (m.last_access_ms, d.clone(), m))
                .collect();
            sorted.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let mut left = s.committed;
            let mut expected = Vec::new();
            for (_, d, m) in sorted {
                if left <= target {
                    break;
                }
                left -= m.size;
                expected.push(d);
            }
            let gone: Vec<Digest> = s.evict_to(target, 0).into_iter().map(|(d, _)| d).collect();
            assert_eq!(gone, expected, "round {round}");
            assert_eq!(s.committed, left);
        }
    }

    /// A scan in steps chooses what one pass would; an entry used between two steps, or gone,
    /// is not evicted; the rest still come down to the target.
    #[test]
    fn a_scan_in_steps_chooses_as_one_pass_and_spares_what_was_used_meanwhile() {
        let fill = || {
            let mut s = Lru::default();
            for i in 0..100u8 {
                let meta = EntryMeta {
                    size: 10,
                    last_access_ms: u64::from(i) + 1,
                    kinds: KIND_BLOB,
                };
                s.insert_found(Digest::sha256_of(&[i]), meta);
            }
            s
        };
        let mut one = fill();
        let whole: Vec<Digest> = one.evict_to(700, 0).into_iter().map(|(d, _)| d).collect();
        assert_eq!(whole.len(), 30);

        let s = fill();
        let mut scan = s.scan_for_victims(700, 0).unwrap();
        let mut steps = 1;
        while !s.scan_step(&mut scan, 7) {
            steps += 1;
        }
        assert!(steps > 10);
        let chosen = scan.chosen();
        let in_order: Vec<Digest> = chosen.iter().map(|(_, d)| d.clone()).collect();
        assert_eq!(in_order, whole, "the same victims, oldest first");

        // Between choosing and taking, the oldest is used again and the second removed.
        let mut s = fill();
        let mut scan = s.scan_for_victims(700, 0).unwrap();
        while !s.scan_step(&mut scan, 7) {}
        let chosen = scan.chosen();
        s.touch(&Digest::sha256_of(&[0]));
        s.set_last_use(&Digest::sha256_of(&[0]), 1_000);
        s.forget(&Digest::sha256_of(&[1]));
        let gone: Vec<Digest> = s
            .take_victims(&chosen, 700)
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert!(
            s.holds(&Digest::sha256_of(&[0])),
            "used since it was chosen"
        );
        assert_eq!(gone, whole[2..].to_vec());
        assert_eq!(s.deleting, 280);
    }

    #[test]
    fn pinned_entries_are_never_evicted() {
        let mut s = Lru::default();
        for (i, kinds) in [(1u8, KIND_BLOB | KIND_PINNED), (2, KIND_BLOB)] {
            s.insert_found(
                Digest::sha256_of(&[i]),
                EntryMeta {
                    size: 100,
                    last_access_ms: i as u64,
                    kinds,
                },
            );
        }
        // The pinned entry is the oldest, yet only the other one goes.
        let gone: Vec<Digest> = s.evict_to(0, 0).into_iter().map(|(d, _)| d).collect();
        assert_eq!(gone, vec![Digest::sha256_of(&[2])]);
        assert_eq!(s.committed, 100);
    }
}
