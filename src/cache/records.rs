//! A map from digest to record, laid out for a million of them: the records in one vector, each
//! in a slot of its own, found through a hash table of slot numbers.
//!
//! A `HashMap<Digest, Record>` keeps its table at a power of two of (digest, record) pairs, up
//! to twice what is held: at a million digests, 2^21 slots of 88 bytes, 185 MB. Here the table
//! holds a slot number (4 bytes) per place, and the vector holds what is there, grown as it fills
//! and reused through a free list when a record goes: about 83 bytes a digest at a million. A
//! slot's number is stable while its record lives, so the access times not yet flushed are kept
//! as slot numbers (`lru.rs`). Hashing is the standard library's keyed SipHash, as the map had:
//! a tenant can name any digest in a manifest, and chosen collisions must not slow the table.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::reference::Digest;

pub(super) struct Records<V> {
    slots: Vec<Option<(Digest, V)>>,
    /// Slots whose record went, to be used again first.
    free: Vec<u32>,
    /// Slot numbers, placed by their digest's hash.
    table: HashTable<u32>,
    hasher: RandomState,
}

impl<V> Default for Records<V> {
    fn default() -> Self {
        Records {
            slots: Vec::new(),
            free: Vec::new(),
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

/// The digest in slot `i` (every number in the table names a filled slot).
fn key<V>(slots: &[Option<(Digest, V)>], i: u32) -> &Digest {
    &slots[i as usize]
        .as_ref()
        .expect("the table names filled slots")
        .0
}

impl<V> Records<V> {
    /// Room for `n` more records without growing.
    pub(super) fn reserve(&mut self, n: usize) {
        self.slots.reserve_exact(n.saturating_sub(self.free.len()));
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.table.reserve(n, |&i| hasher.hash_one(key(slots, i)));
    }

    /// The slot of `digest`'s record.
    pub(super) fn slot_of(&self, digest: &Digest) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(self.hasher.hash_one(digest), |&i| key(slots, i) == digest)
            .copied()
    }

    pub(super) fn get(&self, digest: &Digest) -> Option<&V> {
        let i = self.slot_of(digest)?;
        self.slots[i as usize].as_ref().map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, digest: &Digest) -> Option<&mut V> {
        self.find_mut(digest).map(|(_, v)| v)
    }

    /// The record of `digest`, to change, and its slot.
    pub(super) fn find_mut(&mut self, digest: &Digest) -> Option<(u32, &mut V)> {
        let i = self.slot_of(digest)?;
        self.slots[i as usize].as_mut().map(|(_, v)| (i, v))
    }

    /// The record in slot `i`, with its digest.
    pub(super) fn at(&self, i: u32) -> Option<(&Digest, &V)> {
        self.slots.get(i as usize)?.as_ref().map(|(d, v)| (d, v))
    }

    /// The record of `digest` and its slot, made by `make` if there was none.
    pub(super) fn get_or_insert_with(
        &mut self,
        digest: &Digest,
        make: impl FnOnce() -> V,
    ) -> (u32, &mut V) {
        let i = match self.slot_of(digest) {
            Some(i) => i,
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = Some((digest.clone(), make()));
                        i
                    }
                    None => {
                        let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 digests");
                        self.slots.push(Some((digest.clone(), make())));
                        i
                    }
                };
                let (slots, hasher) = (&self.slots, &self.hasher);
                self.table.insert_unique(hasher.hash_one(digest), i, |&j| {
                    hasher.hash_one(key(slots, j))
                });
                i
            }
        };
        let (_, v) = self.slots[i as usize].as_mut().expect("just found or made");
        (i, v)
    }

    /// Removes the record of `digest`; returns its slot (free from now on) and the record.
    pub(super) fn remove(&mut self, digest: &Digest) -> Option<(u32, V)> {
        let slots = &self.slots;
        let found = self
            .table
            .find_entry(self.hasher.hash_one(digest), |&i| key(slots, i) == digest)
            .ok()?;
        let (i, _) = found.remove();
        let (_, v) = self.slots[i as usize]
            .take()
            .expect("the table names filled slots");
        self.free.push(i);
        Some((i, v))
    }

    /// Every record, with its digest, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Digest, &V)> {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().map(|(d, v)| (d, v)))
    }

    /// How many slots there are, filled or free: slot numbers are below it.
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The records in slots `from..to` (within [`Records::slot_count`]), with their digests.
    pub(super) fn in_slots(&self, from: usize, to: usize) -> impl Iterator<Item = (&Digest, &V)> {
        self.slots[from.min(to)..to.min(self.slots.len())]
            .iter()
            .filter_map(|s| s.as_ref().map(|(d, v)| (d, v)))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes in is found, what is removed is not, and a freed slot is used again.
    #[test]
    fn records_are_found_by_digest_and_slots_are_reused() {
        let mut r: Records<u32> = Records::default();
        r.reserve(10);
        let d = |i: u32| Digest::sha256_of(&i.to_le_bytes());
        for i in 0..1000 {
            let (_, v) = r.get_or_insert_with(&d(i), || i);
            assert_eq!(*v, i);
        }
        assert_eq!(r.len(), 1000);
        // Asking again finds the same record.
        let (slot, v) = r.get_or_insert_with(&d(7), || 0);
        assert_eq!(*v, 7);
        assert_eq!(r.slot_of(&d(7)), Some(slot));
        for i in (0..1000).step_by(2) {
            assert_eq!(r.remove(&d(i)).map(|(_, v)| v), Some(i));
        }
        assert_eq!(r.remove(&d(0)), None);
        assert_eq!(r.len(), 500);
        for i in 0..1000 {
            assert_eq!(r.get(&d(i)).copied(), (i % 2 == 1).then_some(i));
        }
        *r.get_mut(&d(1)).unwrap() = 11;
        assert_eq!(r.at(r.slot_of(&d(1)).unwrap()), Some((&d(1), &11)));
        // New records take the freed slots before the vector grows.
        let len = r.slots.len();
        for i in 1000..1500 {
            r.get_or_insert_with(&d(i), || i);
        }
        assert_eq!(r.slots.len(), len);
        let mut all: Vec<u32> = r.iter().map(|(_, v)| *v).collect();
        all.sort_unstable();
        assert_eq!(all.len(), 1000);
        assert_eq!(all[0], 3);
    }
}
