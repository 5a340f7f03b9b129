//! Removing entries: forgotten ones (their files are gone) and evicted ones, each with its
//! manifest types, links and referrers.

use std::sync::atomic::Ordering;

use super::{ENTRIES, Index, IndexError, KIND_MANIFEST, LINKS, MANIFESTS, REFERRERS, ie};
use crate::reference::Digest;

/// Eviction's commits in a row without an fsync, at most (see [`Index::unindex_evicted`]).
const UNDURABLE_RUN: u32 = 16;

impl Index {
    /// Forgets entries whose files are gone (evicted, or lost), with their manifest types and
    /// links.
    pub(in crate::cache) fn remove_entries(&self, digests: &[Digest]) -> Result<(), IndexError> {
        let all: Vec<(&Digest, u8)> = digests.iter().map(|d| (d, KIND_MANIFEST)).collect();
        self.remove_entries_of(&all)
    }

    /// [`Index::remove_entries`] for entries whose kinds are known (evicted ones): a blob that
    /// was never a manifest has no manifest types and is no referrers' subject (a subject is a
    /// manifest), so only its entry and links are looked for. An eviction of tiny blobs removes
    /// tens of thousands of entries, while fills wait for their room.
    pub(in crate::cache) fn remove_entries_of(
        &self,
        victims: &[(&Digest, u8)],
    ) -> Result<(), IndexError> {
        self.remove_entries_with(victims, redb::Durability::Immediate)
    }

    /// [`Index::remove_entries_of`] for eviction, whose files are deleted next: committed
    /// without an fsync of its own. The next durable commit (any fill's, or the one
    /// [`Index::persist`] makes at the end of each eviction) makes it durable; a crash before
    /// that brings back entries whose files are gone, which start-up's reconcile forgets (and a
    /// request for one finds its file missing and fetches it again), as after any lost file.
    ///
    /// Every [`UNDURABLE_RUN`]th is durable all the same: redb gives back the pages a commit
    /// without an fsync leaves behind only at a durable commit, and an eviction with no fill
    /// committing beside it (a lowered `max_size`, a cache far over its bound) otherwise took
    /// new pages for every batch, the file growing towards twice its size.
    pub(in crate::cache) fn unindex_evicted(
        &self,
        victims: &[(&Digest, u8)],
    ) -> Result<(), IndexError> {
        let run = self.undurable.fetch_add(1, Ordering::Relaxed) + 1;
        if run < UNDURABLE_RUN {
            return self.remove_entries_with(victims, redb::Durability::None);
        }
        self.undurable.store(0, Ordering::Relaxed);
        self.remove_entries_with(victims, redb::Durability::Immediate)
    }

    /// Makes every commit so far durable (one empty commit with an fsync).
    pub(in crate::cache) fn persist(&self) -> Result<(), IndexError> {
        self.begin_write().map_err(ie)?.commit().map_err(ie)
    }

    fn remove_entries_with(
        &self,
        victims: &[(&Digest, u8)],
        durability: redb::Durability,
    ) -> Result<(), IndexError> {
        if victims.is_empty() {
            return Ok(());
        }
        // In key order: neighbours share the B-tree's pages, each copied once per transaction.
        let mut victims: Vec<(String, u8)> =
            victims.iter().map(|(d, k)| (d.to_string(), *k)).collect();
        victims.sort_unstable();
        let mut tx = self.begin_write().map_err(ie)?;
        tx.set_durability(durability).map_err(ie)?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(ie)?;
            let mut m = tx.open_table(MANIFESTS).map_err(ie)?;
            let mut l = tx.open_table(LINKS).map_err(ie)?;
            let mut r = tx.open_table(REFERRERS).map_err(ie)?;
            for (ds, kinds) in &victims {
                t.remove(ds.as_str()).map_err(ie)?;
                let prefix = format!("{ds}\0");
                let end = format!("{ds}\u{1}");
                l.retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                    .map_err(ie)?;
                if kinds & KIND_MANIFEST != 0 {
                    m.retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                        .map_err(ie)?;
                    r.retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                        .map_err(ie)?;
                }
            }
        }
        tx.commit().map_err(ie)
    }
}
