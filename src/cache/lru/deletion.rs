//! Removing evicted entries: from the index, and their files from the store.

use crate::cache::CacheError;
use crate::cache::index::{EntryMeta, Index, KIND_BLOB};
use crate::cache::store::BlobStore;
use crate::metrics::{Content, Metrics};
use crate::reference::Digest;

/// Removes evicted entries from the index, then deletes their files: a stop in between leaves
/// files the index does not know, which the next start hashes and keeps or deletes
/// (`reconcile`). On a full disk the index cannot take even a removal: the files go first
/// then, and the index is written once they have made room (an entry whose file is gone is
/// forgotten at the next start, or when it is next read). Blocking.
pub(in crate::cache) fn remove_victims(
    store: &BlobStore,
    index: &Index,
    metrics: &Metrics,
    victims: &[(Digest, EntryMeta)],
) -> Result<(), CacheError> {
    if victims.is_empty() {
        return Ok(());
    }
    let kinds = kinds_of(victims);
    let indexed = index.remove_entries_of(&kinds);
    delete_evicted_files(store, metrics, victims)?;
    if indexed.is_err() {
        index.remove_entries_of(&kinds)?;
    }
    Ok(())
}

/// The bytes of evicted entries.
pub(in crate::cache) fn bytes_of(victims: &[(Digest, EntryMeta)]) -> u64 {
    victims.iter().map(|(_, m)| m.size).sum()
}

/// Each victim's digest and kinds, as the index's removals take them.
pub(in crate::cache) fn kinds_of(victims: &[(Digest, EntryMeta)]) -> Vec<(&Digest, u8)> {
    victims.iter().map(|(d, m)| (d, m.kinds)).collect()
}

/// Deletes evicted entries' files (already gone from the index), counting each. Blocking.
pub(in crate::cache) fn delete_evicted_files(
    store: &BlobStore,
    metrics: &Metrics,
    victims: &[(Digest, EntryMeta)],
) -> Result<(), CacheError> {
    for (d, meta) in victims {
        let kind = if meta.kinds & KIND_BLOB != 0 {
            Content::Blob
        } else {
            Content::Manifest
        };
        metrics.evicted(kind, meta.size);
        tracing::debug!(digest = %d, size = meta.size, "evicted");
        store.remove(d)?;
    }
    Ok(())
}
