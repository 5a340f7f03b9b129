//! Image manifests whose every listed blob was held, each with the cache's removal count when
//! that was seen: layer prefetch (`prefetch.rs`) skips parsing a warm pull's manifest again
//! while nothing has been removed since.
//!
//! A table of fixed places, each holding a manifest digest's keyed hash and a removal count;
//! the hash chooses the place, and a newer manifest takes the place of an older one. It has
//! room for a quarter of a million manifests in 4 MiB, taken from the system as they come: a
//! cache of a million blobs holds 200,000 image manifests, and a memory of 10,000 of them (a
//! `moka` cache before) missed for nineteen pulls in twenty, each then paid a parse of the
//! manifest and an insert. A hash that two manifests share costs nothing but a prefetch: only
//! whether to look is decided here, never what is served.

use std::hash::{BuildHasher, RandomState};

use crate::reference::Digest;

/// Places in the table: a power of two.
const PLACES: usize = 1 << 18;

pub(super) struct HeldAll {
    /// Per place: the manifest's hash, and the removal count plus one (0: empty). Allocated
    /// zeroed, on first use, so a cache that serves no image manifest costs nothing.
    places: Vec<[u64; 2]>,
    hasher: RandomState,
}

impl Default for HeldAll {
    fn default() -> Self {
        HeldAll {
            places: Vec::new(),
            hasher: RandomState::new(),
        }
    }
}

impl HeldAll {
    fn place(&self, manifest: &Digest) -> (usize, u64) {
        let hash = self.hasher.hash_one(manifest);
        ((hash as usize) & (PLACES - 1), hash)
    }

    /// Whether every blob `manifest` lists was held when the removal count was `removals`.
    pub(super) fn held_at(&self, manifest: &Digest, removals: u64) -> bool {
        let (i, hash) = self.place(manifest);
        self.places
            .get(i)
            .is_some_and(|p| *p == [hash, removals.wrapping_add(1)])
    }

    /// Notes that every blob `manifest` lists was held when the removal count was `removals`.
    pub(super) fn put(&mut self, manifest: &Digest, removals: u64) {
        if self.places.is_empty() {
            self.places = vec![[0; 2]; PLACES];
        }
        let (i, hash) = self.place(manifest);
        self.places[i] = [hash, removals.wrapping_add(1)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest noted at a removal count is found at that count only, and a quarter of a
    /// million noted in a row are mostly kept (one place each, a newer one taking it).
    #[test]
    fn a_manifest_is_held_at_the_count_it_was_noted_at() {
        let mut h = HeldAll::default();
        let d = |i: u32| Digest::sha256_of(&i.to_le_bytes());
        assert!(!h.held_at(&d(0), 0));
        h.put(&d(0), 7);
        assert!(h.held_at(&d(0), 7));
        assert!(!h.held_at(&d(0), 8));
        assert!(!h.held_at(&d(1), 7));
        let n = 200_000;
        for i in 0..n {
            h.put(&d(i), 9);
        }
        let kept = (0..n).filter(|&i| h.held_at(&d(i), 9)).count();
        assert!(kept > n as usize * 6 / 10, "{kept} of {n} kept");
    }
}
