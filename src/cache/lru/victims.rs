//! Choosing eviction's victims: the least recently used unpinned entries whose sizes cover what
//! must go, in one pass over the records that can be made in steps (`evictor.rs` lets go of the
//! cache's lock between them).

use std::collections::BinaryHeap;

use super::Lru;
use crate::cache::index::{EntryMeta, KIND_PINNED};
use crate::reference::Digest;

impl Lru {
    /// Removes least-recently-used entries until the stored bytes are at most `target`; only
    /// does anything if they are above `trigger` (0: always). Returns what was removed, oldest
    /// first; their bytes count as `deleting` until the caller has deleted the files. Pinned
    /// entries (imported) are never chosen. One [`VictimScan`] over every entry at once: for
    /// start-up and tests; `serve` scans in steps, letting go of the lock between them.
    pub(in crate::cache) fn evict_to(
        &mut self,
        target: u64,
        trigger: u64,
    ) -> Vec<(Digest, EntryMeta)> {
        let Some(mut scan) = self.scan_for_victims(target, trigger) else {
            return Vec::new();
        };
        self.scan_step(&mut scan, usize::MAX);
        let chosen = scan.chosen();
        self.take_victims(&chosen, target)
    }

    /// A scan for the entries to evict so that the stored bytes come down to `target`, if they
    /// are above `trigger` and `target`.
    pub(in crate::cache) fn scan_for_victims(
        &self,
        target: u64,
        trigger: u64,
    ) -> Option<VictimScan> {
        if self.committed <= trigger.max(target) {
            return None;
        }
        Some(VictimScan {
            need: self.committed - target,
            next: 0,
            sum: 0,
            heap: BinaryHeap::new(),
        })
    }

    /// Scans up to `slots` more slots; true once every slot has been looked at (slots made
    /// since the scan began too: they hold the newest entries, which are never chosen before
    /// older ones).
    pub(in crate::cache) fn scan_step(&self, scan: &mut VictimScan, slots: usize) -> bool {
        let end = scan
            .next
            .saturating_add(slots)
            .min(self.records.slot_count());
        for (d, r) in self.records.in_slots(scan.next, end) {
            let Some(m) = r.held() else { continue };
            if m.kinds & KIND_PINNED != 0 {
                continue;
            }
            if scan.sum >= scan.need
                && scan
                    .heap
                    .peek()
                    .is_some_and(|top| (m.last_access_ms, d) >= (top.0, &top.1))
            {
                continue;
            }
            scan.heap.push((m.last_access_ms, d.clone(), m.size));
            scan.sum += m.size;
            while let Some(&(_, _, size)) = scan.heap.peek() {
                if scan.sum - size < scan.need {
                    break;
                }
                scan.sum -= size;
                scan.heap.pop();
            }
        }
        scan.next = end;
        end >= self.records.slot_count()
    }

    /// Removes `chosen` entries (oldest first) from the view until the stored bytes are at
    /// most `target`, and returns them: each only if it is still held as it was when chosen
    /// (one used since is not least recent any more). Their bytes count as `deleting`.
    pub(in crate::cache) fn take_victims(
        &mut self,
        chosen: &[(u64, Digest)],
        target: u64,
    ) -> Vec<(Digest, EntryMeta)> {
        let mut victims = Vec::with_capacity(chosen.len());
        for (last_use, d) in chosen {
            if self.committed <= target {
                break;
            }
            if self.get(d).is_none_or(|m| m.last_access_ms != *last_use) {
                continue;
            }
            if let Some(m) = self.forget(d) {
                self.deleting += m.size;
                victims.push((d.clone(), m));
            }
        }
        victims
    }
}

/// A pass over the entries, in steps, choosing the least recently used whose sizes add up to
/// what must go: a heap of the oldest seen so far, newest on top (the first to leave once the
/// rest cover the need). No copy nor sort of every entry; only the chosen digests are cloned.
/// Between steps the cache's lock is let go: at a million entries the whole pass takes a few
/// hundred milliseconds, which no request may wait for.
pub(in crate::cache) struct VictimScan {
    need: u64,
    /// The next slot to look at.
    next: usize,
    /// Bytes of the entries in the heap.
    sum: u64,
    heap: BinaryHeap<(u64, Digest, u64)>,
}

impl VictimScan {
    /// What the scan chose, oldest first: each entry's last use when seen, and its digest.
    pub(in crate::cache) fn chosen(self) -> Vec<(u64, Digest)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|(t, d, _)| (t, d))
            .collect()
    }
}
