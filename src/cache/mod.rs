//! The cache: what the mirror holds, and how it gets what it lacks.
//!
//! [`Cache`] joins the blob store (files named by digest), the index (redb) and an in-memory view
//! of both (sizes, access times, fills in flight) behind one small lock. It answers the API
//! layer's questions: give me this blob (stored, or joining/starting a [`Fill`]: `blobs.rs`), give
//! me this manifest (by digest, or by tag through the tag TTL and an upstream HEAD:
//! `manifests.rs`), list this repository's tags or a manifest's referrers (`lists.rs`), and what
//! is cached (for `_catalog`). It keeps the disk within `max_size` by evicting
//! least-recently-used entries down to a low watermark (`lru.rs`). The cache is the only caller
//! of the upstream layer.

mod blobs;
mod coalesce;
mod error;
mod file_reader;
mod fill;
mod fill_writer;
mod index;
mod lists;
mod lru;
mod manifests;
mod store;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;
use crate::reference::Digest;
pub(crate) use blobs::BlobSource;
pub(crate) use error::CacheError;
pub(crate) use file_reader::FileReader;
pub(crate) use fill::Fill;
use index::{EntryMeta, Index};
pub(crate) use lists::{MAX_PAGE, paginate};
use lru::{State, remove_victims};
pub(crate) use manifests::Manifest;
use manifests::ManifestKey;
use store::BlobStore;

pub(crate) struct Cache {
    store: Arc<BlobStore>,
    /// Concurrent lookups of one manifest share one upstream exchange.
    manifests_in_flight: coalesce::Coalescer<ManifestKey, Result<Manifest, Arc<CacheError>>>,
    index: Arc<Index>,
    state: Mutex<State>,
    max_size: u64,
    low_watermark: u64,
    tag_ttl: Duration,
    metrics: Arc<Metrics>,
}

/// Milliseconds since the Unix epoch: LRU order and tag ages need better than seconds.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Cache {
    /// Opens the cache under `dir`: deletes temp files, reconciles the index with the files on
    /// disk (entries without a file are dropped, files the index does not know are deleted), and
    /// evicts down to the bound if `max_size` was lowered.
    pub(crate) fn open(
        dir: &Path,
        max_size: u64,
        tag_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Cache>, CacheError> {
        std::fs::create_dir_all(dir)?;
        let store = BlobStore::open(dir)?;
        let index = Index::open(&dir.join("index.redb"))?;
        let state = reconcile(&store, &index)?;
        let cache = Arc::new(Cache {
            store: Arc::new(store),
            manifests_in_flight: coalesce::Coalescer::new(),
            index: Arc::new(index),
            state: Mutex::new(state),
            max_size,
            low_watermark: max_size / 10 * 9,
            tag_ttl,
            metrics,
        });
        let victims = cache.lock().evict_to(cache.low_watermark, cache.max_size);
        remove_victims(&cache.store, &cache.index, &cache.metrics, victims)?;
        cache.publish_size();
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that matters
        // more than refusing service would, so recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_size(&self) {
        let committed = self.lock().committed;
        self.metrics.set_cache_bytes(committed);
    }

    /// Writes batched access times to the index. Called periodically and at shutdown.
    pub(crate) fn flush_access_times(&self) -> Result<(), CacheError> {
        let batch: Vec<(Digest, EntryMeta)> = {
            let mut s = self.lock();
            let dirty = std::mem::take(&mut s.dirty);
            dirty
                .into_iter()
                .filter_map(|d| s.entries.get(&d).map(|m| (d, *m)))
                .collect()
        };
        self.index.put_entries(&batch)?;
        Ok(())
    }

    /// Every (upstream, repository) the cache has served, for `_catalog`.
    pub(crate) fn cached_repos(&self) -> Result<Vec<(String, String)>, CacheError> {
        Ok(self.index.repos()?)
    }

    /// Bytes of stored files.
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.lock().committed
    }
}

/// The in-memory view of what is stored, from the index and the files: entries without a file
/// are forgotten, files the index does not know are deleted.
fn reconcile(store: &BlobStore, index: &Index) -> Result<State, CacheError> {
    let on_disk: HashMap<Digest, u64> = store.list()?.into_iter().collect();
    let mut state = State::default();
    let mut lost = Vec::new();
    for (digest, mut meta) in index.entries()? {
        match on_disk.get(&digest) {
            Some(&size) => {
                meta.size = size;
                state.committed += size;
                state.entries.insert(digest, meta);
            }
            None => lost.push(digest),
        }
    }
    if !lost.is_empty() {
        tracing::warn!(
            count = lost.len(),
            "index entries without files: forgetting them"
        );
        index.remove_entries(&lost)?;
    }
    for digest in on_disk.keys() {
        if !state.entries.contains_key(digest) {
            tracing::warn!(%digest, "file unknown to the index: removing it");
            store.remove(digest)?;
        }
    }
    Ok(state)
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, CacheError>
where
    T: Send + 'static,
    E: Into<CacheError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(io::Error::other(e.to_string()).into()),
    }
}
