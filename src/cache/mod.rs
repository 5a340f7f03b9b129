//! The cache: what the mirror holds, and how it gets what it lacks.
//!
//! [`Cache`] joins the blob store (files named by digest), the index (redb) and an in-memory view
//! of both (sizes, access times, fills in flight) behind one small lock. It answers the API
//! layer's questions: give me this blob (stored, or joining/starting a [`Fill`]: `blobs.rs`), give
//! me this manifest (by digest, or by tag through the tag TTL and an upstream HEAD:
//! `manifests.rs`), list this repository's tags or a manifest's referrers (`lists.rs`), and what
//! is cached (for `_catalog`). It keeps the disk within `max_size` by evicting
//! least-recently-used entries down to a low watermark, in the background (`lru.rs`,
//! `evictor.rs`). The cache is the only caller
//! of the upstream layer.

mod blobs;
mod buffers;
mod coalesce;
mod commits;
mod error;
mod evictor;
mod file_reader;
mod fill;
mod fill_task;
mod fill_writer;
mod fills;
mod held_all;
mod hot;
mod index;
mod inventory;
mod links;
mod lists;
mod load;
mod lru;
mod manifests;
mod prefetch;
mod reconcile;
mod records;
mod referrers;
mod removal;
mod room;
mod source;
mod store;
mod tags;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::blocking::assert_off_the_workers;
use crate::blocking::off_the_workers;
use crate::metrics::Metrics;
use crate::reference::Digest;
use crate::shared::Shared;
pub(crate) use blobs::Blob;
pub(crate) use error::CacheError;
pub(crate) use file_reader::FileReader;
pub(crate) use fill::Fill;
pub(crate) use index::Compaction;
use index::{EntryMeta, Index};
pub(crate) use inventory::{Held, TaggedImage};
pub(crate) use lists::paginate;
pub(crate) use load::{Load, Loader};
use lru::{State, remove_victims};
pub(crate) use manifests::Manifest;
use manifests::{ManifestKey, ManifestName};
use store::BlobStore;

pub(crate) struct Cache {
    store: Arc<BlobStore>,
    /// Concurrent lookups of one manifest share one upstream exchange.
    manifests_in_flight: coalesce::Coalescer<ManifestKey, Result<Manifest, Arc<CacheError>>>,
    index: Arc<Index>,
    state: Mutex<State>,
    /// Held while evicting, so one eviction runs at a time.
    evicting: tokio::sync::Mutex<()>,
    /// The background eviction (`evictor.rs`).
    evictor: Arc<evictor::Evictor>,
    /// Fills' index records, written together (`commits.rs`).
    commits: Arc<commits::Commits>,
    /// This cache, for the tasks it spawns (which must not keep it alive).
    me: Weak<Cache>,
    /// Recently used tags and manifests, in memory (`hot.rs`).
    hot: hot::Hot,
    /// The fills' memory budget, in chunks (`fill_task.rs`).
    fill_memory: Arc<tokio::sync::Semaphore>,
    /// The configured `max_size`.
    max_size: u64,
    /// The bound kept: `max_size`, or less when the filesystem holds less (`room.rs`).
    bound: AtomicU64,
    tag_ttl: Duration,
    /// Manifests and tags the upstream said it does not have, for `negative_ttl` (`manifests.rs`).
    negatives: Option<moka::sync::Cache<ManifestName, ()>>,
    metrics: Arc<Metrics>,
    /// The tier shared with other replicas (`[shared]`), read before the upstream.
    shared: Option<Arc<Shared>>,
    /// Start fills of a manifest's missing layers when a client GETs it (`prefetch.rs`).
    prefetch_layers: bool,
}

/// Milliseconds since the Unix epoch: LRU order and tag ages need better than seconds.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Cache {
    /// Opens the cache under `dir`: deletes temp files, reads the index, reconciles it with the
    /// files on disk (entries without a file are dropped, files the index does not know are
    /// hashed and kept or deleted: `reconcile.rs`), and evicts down to the bound if `max_size`
    /// was lowered. Both in the background when opened within a runtime, as `serve` opens it.
    pub(crate) fn open(
        dir: &Path,
        max_size: u64,
        tag_ttl: Duration,
        negative_ttl: Duration,
        metrics: Arc<Metrics>,
        shared: Option<Arc<Shared>>,
        prefetch_layers: bool,
    ) -> Result<Arc<Cache>, CacheError> {
        std::fs::create_dir_all(dir)?;
        // The index first: its lock keeps a second process from clearing the first's temp files.
        let index = Index::open_with_cache(&dir.join("index.redb"), index::PAGE_CACHE)?;
        let store = BlobStore::open(dir)?;
        let state = reconcile::load(&index)?;
        let opened_at = SystemTime::now();
        let cache = Arc::new_cyclic(|me| Cache {
            me: me.clone(),
            evictor: Arc::default(),
            commits: Arc::default(),
            store: Arc::new(store),
            manifests_in_flight: coalesce::Coalescer::new(),
            index: Arc::new(index),
            state: Mutex::new(state),
            evicting: tokio::sync::Mutex::new(()),
            hot: hot::Hot::new(tag_ttl),
            fill_memory: Arc::new(tokio::sync::Semaphore::new(
                fill_task::FILL_MEMORY / fill_task::FILL_WRITE_CHUNK,
            )),
            max_size,
            bound: AtomicU64::new(max_size),
            tag_ttl,
            negatives: (!negative_ttl.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(negative_ttl)
                    .build()
            }),
            metrics,
            shared,
            prefetch_layers,
        });
        let holds = cache.measure_room()?;
        if holds < max_size {
            tracing::warn!(
                max_size,
                holds,
                dir = %dir.display(),
                "max_size is larger than the cache's filesystem can hold beside its other users: the cache keeps within what it holds"
            );
        }
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        if in_runtime {
            // The manifests' media types are read, and the files checked against the index,
            // once serving has begun (lru/manifest_types.rs, reconcile.rs).
            let c = cache.clone();
            tokio::spawn(off_the_workers(move || {
                if let Err(e) = c.note_manifest_types() {
                    tracing::warn!(error = %e, "could not read the manifests' media types");
                }
                if let Err(e) = c.reconcile_files(opened_at) {
                    tracing::warn!(error = %e, "could not check the files against the index");
                }
            }));
        } else {
            cache.reconcile_files(opened_at)?;
        }
        let over = cache.lock().lru.committed > cache.bound();
        if over && in_runtime {
            // A lowered max_size: serve at once, and shrink in the background (a million files
            // deleted before listening was minutes without a listener).
            cache.start_eviction();
        } else if over {
            let victims = cache.lock().evict_to(cache.low_watermark(), cache.bound());
            remove_victims(&cache.store, &cache.index, &cache.metrics, &victims)?;
            cache.lock().lru.deleting = 0;
        }
        cache.publish_size();
        cache.metrics.set_cache_max_bytes(max_size);
        cache.metrics.set_cache_bound_bytes(cache.bound());
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that matters
        // more than refusing service would, so recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_size(&self) {
        let committed = self.lock().lru.committed;
        self.metrics.set_cache_bytes(committed);
    }

    /// Writes batched access times to the index. Called periodically and at shutdown.
    ///
    /// In key order, [`FLUSH_CHUNK`] entries a transaction: after warm traffic over a large
    /// cache, hundreds of thousands of entries changed, and one transaction of all of them held
    /// redb's one writer (every fill's commit, eviction, `rm`) for its whole length and its
    /// changed pages in memory. A chunk writes its entries as they are when it is written, and
    /// leaves out those no longer held.
    pub(crate) async fn flush_access_times(&self) -> Result<(), CacheError> {
        let mut batch: Vec<(Digest, EntryMeta)> = self.lock().lru.take_dirty();
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for chunk in batch.chunks(FLUSH_CHUNK) {
            let held: Vec<(Digest, EntryMeta)> = {
                let s = self.lock();
                chunk
                    .iter()
                    .filter_map(|(d, _)| Some((d.clone(), s.lru.get(d)?)))
                    .collect()
            };
            self.with_index(move |ix| ix.put_entries(&held)).await?;
        }
        Ok(())
    }

    /// Every (upstream, repository) the cache has served, for `_catalog`.
    pub(crate) async fn cached_repos(&self) -> Result<Vec<(String, String)>, CacheError> {
        self.with_index(Index::repos).await
    }

    /// Whether the cache can serve: the index answers a read and the store takes a write.
    pub(crate) async fn check_ready(&self) -> Result<(), CacheError> {
        let (index, store) = (self.index.clone(), self.store.clone());
        blocking(move || {
            index.check()?;
            store.check_writable()?;
            Ok::<_, CacheError>(())
        })
        .await
    }

    /// Bytes of stored files.
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.lock().lru.committed
    }
}

/// Entries of the access-time flush written in one index transaction.
const FLUSH_CHUNK: usize = 4096;

impl Cache {
    /// Runs index work (redb reads, and writes that fsync) on the blocking pool.
    async fn with_index<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Index) -> Result<T, index::IndexError> + Send + 'static,
    ) -> Result<T, CacheError> {
        let index = self.index.clone();
        blocking(move || work(&index)).await
    }
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, CacheError>
where
    T: Send + 'static,
    E: Into<CacheError> + Send + 'static,
{
    off_the_workers(work).await.map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(debug_assertions)]
    #[test]
    fn index_work_on_an_async_worker_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&dir.path().join("i.redb")).unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let on_worker = index.clone();
        let caught = rt.block_on(rt.spawn(async move { on_worker.entries().map(|_| ()) }));
        assert!(caught.unwrap_err().is_panic());
        let off = rt.block_on(off_the_workers(move || index.entries()));
        assert!(off.unwrap().is_empty());
    }

    /// A verified file whose record was lost (a stop between its rename and its index write) is
    /// kept at start-up; a file that no longer matches its name goes.
    #[test]
    fn a_verified_file_the_index_lost_is_kept_and_a_damaged_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (good, bad) = (b"kept bytes".as_slice(), b"other bytes".as_slice());
        let (kept, damaged) = (Digest::sha256_of(good), Digest::sha256_of(bad));
        store.write_verified(&kept, good).unwrap();
        store.write_verified(&damaged, bad).unwrap();
        std::fs::write(store.path(&damaged), b"flipped bytes").unwrap();
        // Written before this process: an earlier one's, whose records were lost.
        let earlier = SystemTime::now() - Duration::from_secs(60);
        for d in [&kept, &damaged] {
            std::fs::File::options()
                .write(true)
                .open(store.path(d))
                .unwrap()
                .set_modified(earlier)
                .unwrap();
        }
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let minute = Duration::from_secs(60);
        let cache = Cache::open(dir.path(), 1 << 20, minute, minute, metrics, None, false).unwrap();
        let state = &cache.lock().lru;
        assert_eq!(state.get(&kept).map(|m| m.size), Some(good.len() as u64));
        assert_eq!(state.committed, good.len() as u64);
        assert!(!state.holds(&damaged));
        assert!(!store.path(&damaged).exists());
        let index = &cache.index;
        let recorded: Vec<Digest> = index
            .entries()
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(recorded, vec![kept], "the kept file is in the index again");
    }
}
