//! The cache: what the mirror holds, and how it gets what it lacks.
//!
//! [`Cache`] joins the blob store (files named by digest), the index (redb) and an in-memory view
//! of both (sizes, access times, fills in flight) behind one small lock. It answers three
//! questions for the API layer: give me this blob (stored, or joining/starting a [`Fill`]), give me
//! this manifest (by digest, or by tag through the tag TTL and an upstream HEAD), and what is
//! cached (for `_catalog` and tags when the upstream is down). It keeps the disk within `max_size`
//! by evicting least-recently-used entries down to a low watermark.

pub mod coalesce;
pub mod fill;
pub mod index;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};

use crate::metrics::Metrics;
use crate::reference::{Digest, Hasher, Reference, RepoName, Tag};
use crate::upstream::{self, MANIFEST_ACCEPT, Upstream, UpstreamError};
pub use fill::{FileReader, Fill, FillState, Outcome};
use index::{EntryMeta, Index, IndexError, KIND_BLOB, KIND_MANIFEST, TagEntry};
use store::BlobStore;

/// Largest manifest we accept from an upstream (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Size of the writes a fill makes to its temp file (and of the steps readers see it grow by).
const FILL_WRITE_CHUNK: usize = 256 * 1024;

/// Manifest media types we store and serve.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
];

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("content from upstream {upstream} does not match digest {digest}")]
    DigestMismatch { upstream: String, digest: Digest },
    #[error("{0} is a manifest, not a blob")]
    NotABlob(Digest),
    #[error("cache storage: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the fill was abandoned")]
    Abandoned,
}

impl CacheError {
    fn metric_reason(&self) -> &'static str {
        match self {
            CacheError::DigestMismatch { .. } => "digest_mismatch",
            CacheError::Upstream(UpstreamError::BadResponse { .. }) => "bad_response",
            CacheError::Upstream(UpstreamError::Unreachable { .. }) => "unreachable",
            CacheError::Upstream(_) => "upstream_status",
            CacheError::Io(_) | CacheError::Index(_) => "storage",
            CacheError::NotABlob(_) | CacheError::Abandoned => "other",
        }
    }
}

/// A blob to serve: a stored file, or a fill in progress.
pub enum BlobSource {
    Stored {
        file: std::fs::File,
        size: u64,
    },
    Filling {
        fill: Arc<Fill>,
        file: std::fs::File,
    },
}

/// A manifest to serve. `bytes` is `None` only for a HEAD answered from the upstream's headers.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub bytes: Option<Bytes>,
}

/// A blob fetched and verified, ready to be committed.
struct Fetched {
    size: u64,
    /// False for a blob larger than the whole cache: served, not kept.
    keep: bool,
    /// Bytes reserved for it in the cache's accounting.
    reserved: u64,
    /// The temp file's writes, which may still be going on.
    writes: fill::PendingWrites,
}

/// Everything under the lock: the in-memory view of what is stored and what is in flight.
#[derive(Default)]
struct State {
    entries: HashMap<Digest, EntryMeta>,
    /// Entries whose access time changed since the last flush to the index.
    dirty: HashSet<Digest>,
    fills: HashMap<Digest, Arc<Fill>>,
    /// Bytes of stored files.
    committed: u64,
    /// Bytes promised to fills in flight.
    reserved: u64,
}

/// What identifies one manifest lookup for coalescing.
type ManifestKey = (String, RepoName, Reference, bool);

pub struct Cache {
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
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Cache {
    /// Opens the cache under `dir`: deletes temp files, reconciles the index with the files on
    /// disk (entries without a file are dropped, files the index does not know are deleted), and
    /// evicts down to the bound if `max_size` was lowered.
    pub fn open(
        dir: &Path,
        max_size: u64,
        tag_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Cache>, CacheError> {
        std::fs::create_dir_all(dir)?;
        let store = BlobStore::open(dir)?;
        let index = Index::open(&dir.join("index.redb"))?;
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
        self.metrics.cache_bytes.set(committed as i64);
    }

    /// Writes batched access times to the index. Called periodically and at shutdown.
    pub fn flush_access_times(&self) -> Result<(), CacheError> {
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

    /// Makes room for `size` more bytes, evicting if needed. Returns false if the item can never
    /// fit (larger than `max_size`): it is then streamed through and not kept.
    async fn reserve(&self, size: u64) -> Result<bool, CacheError> {
        if size > self.max_size {
            return Ok(false);
        }
        let victims = {
            let mut s = self.lock();
            let victims = if s.committed + s.reserved + size > self.max_size {
                let target = self.low_watermark.saturating_sub(s.reserved + size);
                s.evict_to(target, 0)
            } else {
                Vec::new()
            };
            s.reserved += size;
            victims
        };
        if !victims.is_empty() {
            let (store, index, metrics) =
                (self.store.clone(), self.index.clone(), self.metrics.clone());
            blocking(move || remove_victims(&store, &index, &metrics, victims)).await?;
            self.publish_size();
        }
        Ok(true)
    }

    fn release(&self, size: u64) {
        let mut s = self.lock();
        s.reserved = s.reserved.saturating_sub(size);
    }

    // ---- blobs -----------------------------------------------------------------------------

    /// The size of a blob without fetching it: from the store, a fill in flight, or an upstream
    /// HEAD.
    pub async fn blob_size(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64, Arc<CacheError>> {
        let fill = {
            let s = self.lock();
            match s.entries.get(digest) {
                Some(m) if m.kinds & KIND_BLOB != 0 => {
                    self.metrics
                        .cache_lookups
                        .with_label_values(&["blob", "hit"])
                        .inc();
                    return Ok(m.size);
                }
                Some(_) => return Err(Arc::new(CacheError::NotABlob(digest.clone()))),
                None => s.fills.get(digest).cloned(),
            }
        };
        if let Some(fill) = fill {
            // A failed fill's error is shared by everyone who asked about it.
            return fill.total().await;
        }
        let resp = up
            .blob(Method::HEAD, repo, digest)
            .await
            .map_err(|e| Arc::new(CacheError::Upstream(e)))?;
        upstream::declared_length(&resp).ok_or_else(|| {
            Arc::new(CacheError::Upstream(UpstreamError::BadResponse {
                upstream: up.name.clone(),
                reason: "blob HEAD without Content-Length".into(),
            }))
        })
    }

    /// A blob to stream: the stored file if we have it, else a fill (joined if one is in flight,
    /// started otherwise). The upstream fetch runs to the end even if every client leaves.
    pub fn blob(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<BlobSource, CacheError> {
        let mut s = self.lock();
        if let Some(meta) = s.entries.get_mut(digest) {
            if meta.kinds & KIND_BLOB == 0 {
                return Err(CacheError::NotABlob(digest.clone()));
            }
            match std::fs::File::open(self.store.path(digest)) {
                Ok(file) => {
                    meta.last_access_ms = now_millis();
                    let size = meta.size;
                    s.dirty.insert(digest.clone());
                    self.metrics
                        .cache_lookups
                        .with_label_values(&["blob", "hit"])
                        .inc();
                    return Ok(BlobSource::Stored { file, size });
                }
                Err(e) => {
                    tracing::error!(%digest, error = %e, "stored blob cannot be opened: fetching it again");
                    if let Some(m) = s.entries.remove(digest) {
                        s.committed -= m.size;
                    }
                }
            }
        }
        if let Some(fill) = s.fills.get(digest) {
            self.metrics
                .cache_lookups
                .with_label_values(&["blob", "join"])
                .inc();
            let file = fill.file()?;
            return Ok(BlobSource::Filling {
                fill: fill.clone(),
                file,
            });
        }
        self.metrics
            .cache_lookups
            .with_label_values(&["blob", "miss"])
            .inc();
        let (fill, tx) = Fill::create(digest.clone(), self.store.temp_path(digest))?;
        let file = fill.file()?;
        s.fills.insert(digest.clone(), fill.clone());
        drop(s);
        let this = self.clone();
        let up = up.clone();
        let repo = repo.clone();
        let task_fill = fill.clone();
        let tx = Arc::new(tx);
        tokio::spawn(async move { this.run_fill(up, repo, task_fill, tx).await });
        Ok(BlobSource::Filling { fill, file })
    }

    async fn run_fill(
        self: Arc<Self>,
        up: Arc<Upstream>,
        repo: RepoName,
        fill: Arc<Fill>,
        tx: Arc<tokio::sync::watch::Sender<FillState>>,
    ) {
        let mut reserved = 0;
        let (result, verified) = match self.fetch_into(&up, &repo, &fill, &tx, &mut reserved).await
        {
            Ok(fetched) => {
                // The digest matched: every client may have its last byte now, before the fsync
                // and rename, which only decide whether the cache keeps the file.
                tx.send_modify(|s| {
                    s.total = Some(fetched.size);
                    s.outcome = Outcome::Verified;
                });
                (self.keep_fill(&up, &repo, &fill, fetched).await, true)
            }
            Err(e) => (Err(e), false),
        };
        if let Err(e) = result {
            self.metrics
                .fill_failures
                .with_label_values(&[e.metric_reason()])
                .inc();
            tracing::warn!(digest = %fill.digest, upstream = %up.name, error = %e, "fill failed; nothing kept");
            let _ = std::fs::remove_file(&fill.temp_path);
            // After the digest matched, clients keep what they have: only keeping it failed.
            // (A failed disk write has already ended the readers that needed the file.)
            if !verified {
                tx.send_modify(|s| s.outcome = Outcome::Failed(Arc::new(e)));
            }
            let mut s = self.lock();
            s.fills.remove(&fill.digest);
            s.reserved = s.reserved.saturating_sub(reserved);
        }
    }

    /// Streams the upstream blob into the fill's temp file, hashing as it goes.
    async fn fetch_into(
        &self,
        up: &Upstream,
        repo: &RepoName,
        fill: &Fill,
        tx: &Arc<tokio::sync::watch::Sender<FillState>>,
        reserved: &mut u64,
    ) -> Result<Fetched, CacheError> {
        let digest = &fill.digest;
        let mut resp = up.blob(Method::GET, repo, digest).await?;
        let total = resp.content_length();
        let mut keep = true;
        if let Some(t) = total {
            keep = self.reserve(t).await?;
            if keep {
                *reserved = t;
            }
        }
        tx.send_modify(|s| s.total = total);

        let mut writer =
            fill::FillWriter::start(fill.file()?, Hasher::new(digest.algorithm()), tx.clone());
        let mut buf: Vec<u8> = Vec::with_capacity(FILL_WRITE_CHUNK);
        let bad = |reason: String| {
            CacheError::Upstream(UpstreamError::BadResponse {
                upstream: up.name.clone(),
                reason,
            })
        };
        // A chunk has arrived: readers may have it from memory at once; the writer hashes it and
        // puts it on disk meanwhile.
        let mut received = 0u64;
        let mut hand_over = |data: Vec<u8>| {
            let data = Bytes::from(data);
            fill.remember(received, data.clone());
            received += data.len() as u64;
            self.metrics
                .upstream_bytes
                .with_label_values(&[up.name.as_str()])
                .inc_by(data.len() as u64);
            tx.send_modify(|s| s.received = received);
            data
        };
        while let Some(c) = resp.chunk().await.map_err(|e| {
            CacheError::Upstream(UpstreamError::Unreachable {
                upstream: up.name.clone(),
                reason: format!("blob body cut short: {}", upstream::error_chain(&e)),
            })
        })? {
            if total.is_some_and(|t| writer.queued() + (buf.len() + c.len()) as u64 > t) {
                return Err(bad("blob body longer than its Content-Length".into()));
            }
            buf.extend_from_slice(&c);
            if buf.len() >= FILL_WRITE_CHUNK {
                let data = std::mem::replace(&mut buf, Vec::with_capacity(FILL_WRITE_CHUNK));
                writer.push(hand_over(data)).await?;
            }
        }
        if !buf.is_empty() {
            writer.push(hand_over(buf)).await?;
        }
        let (hasher, pos, writes) = writer.finish().await?;
        if let Some(t) = total {
            if pos != t {
                return Err(bad(format!(
                    "blob body has {pos} bytes, Content-Length said {t}"
                )));
            }
        } else {
            keep = self.reserve(pos).await?;
            if keep {
                *reserved = pos;
            }
        }
        let actual = hasher.finish();
        if &actual != digest {
            return Err(CacheError::DigestMismatch {
                upstream: up.name.clone(),
                digest: digest.clone(),
            });
        }
        Ok(Fetched {
            size: pos,
            keep,
            reserved: *reserved,
            writes,
        })
    }

    /// A verified fill: fsync and rename into place (if it fits), and record it.
    async fn keep_fill(
        &self,
        up: &Upstream,
        repo: &RepoName,
        fill: &Fill,
        Fetched {
            size,
            keep,
            reserved,
            writes,
        }: Fetched,
    ) -> Result<(), CacheError> {
        let digest = fill.digest.clone();
        if keep {
            let written = writes.wait().await?;
            if written != size {
                return Err(io::Error::other(format!("wrote {written} of {size} bytes")).into());
            }
            let store = self.store.clone();
            let (temp, d) = (fill.temp_path.clone(), digest.clone());
            // Any descriptor of the file flushes all of it.
            let f = fill.file()?;
            blocking(move || f.sync_all().and_then(|()| store.commit(&temp, &d))).await?;
            let meta = {
                let mut s = self.lock();
                let meta = s.record(&digest, size, KIND_BLOB, reserved);
                s.fills.remove(&digest);
                meta
            };
            // The file is verified and in place; if the index write fails, the next start forgets
            // the file, which costs a refetch and nothing else.
            let recorded = self
                .index
                .put_entries(&[(digest.clone(), meta)])
                .and_then(|()| {
                    self.index
                        .note_repo(&up.name, up.upstream_repo(repo).as_str(), now_millis())
                });
            if let Err(e) = recorded {
                tracing::error!(%digest, error = %e, "could not record a stored blob in the index");
            }
            self.publish_size();
        } else {
            tracing::info!(%digest, size, max_size = self.max_size, "blob larger than the cache: served, not kept");
            let _ = std::fs::remove_file(&fill.temp_path);
            self.lock().fills.remove(&digest);
        }
        Ok(())
    }

    // ---- manifests -------------------------------------------------------------------------

    /// A manifest by tag or digest. `head_only` lets a HEAD by tag be answered from the upstream's
    /// headers when the manifest is not cached, so it costs no upstream GET.
    pub async fn manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        reference: &Reference,
        head_only: bool,
    ) -> Result<Manifest, Arc<CacheError>> {
        let key = (
            up.name.clone(),
            up.upstream_repo(repo),
            reference.clone(),
            head_only,
        );
        self.manifests_in_flight
            .run(key, || async {
                self.manifest_alone(up, repo, reference, head_only)
                    .await
                    .map_err(Arc::new)
            })
            .await
    }

    async fn manifest_alone(
        &self,
        up: &Upstream,
        repo: &RepoName,
        reference: &Reference,
        head_only: bool,
    ) -> Result<Manifest, CacheError> {
        match reference {
            Reference::Digest(d) => {
                if let Some(m) = self.load_manifest(up, d).await? {
                    self.metrics
                        .cache_lookups
                        .with_label_values(&["manifest", "hit"])
                        .inc();
                    return Ok(m);
                }
                self.metrics
                    .cache_lookups
                    .with_label_values(&["manifest", "miss"])
                    .inc();
                self.fetch_manifest(up, repo, reference).await
            }
            Reference::Tag(tag) => self.manifest_by_tag(up, repo, tag, head_only).await,
        }
    }

    async fn manifest_by_tag(
        &self,
        up: &Upstream,
        repo: &RepoName,
        tag: &Tag,
        head_only: bool,
    ) -> Result<Manifest, CacheError> {
        let key_repo = up.upstream_repo(repo);
        let cached = self.index.tag(&up.name, key_repo.as_str(), tag.as_str())?;
        if let Some(t) = &cached
            && Duration::from_millis(now_millis().saturating_sub(t.checked_at_ms)) < self.tag_ttl
            && let Some(m) = self.load_manifest(up, &t.digest).await?
        {
            self.metrics
                .cache_lookups
                .with_label_values(&["tag", "hit"])
                .inc();
            return Ok(m);
        }
        match self.revalidate_tag(up, repo, tag, head_only).await {
            Ok(m) => Ok(m),
            Err(CacheError::Upstream(e)) if e.is_transient() => {
                if let Some(t) = &cached
                    && let Some(m) = self.load_manifest(up, &t.digest).await?
                {
                    tracing::info!(upstream = %up.name, %repo, %tag, error = %e, "upstream failing: serving the cached tag");
                    self.metrics
                        .cache_lookups
                        .with_label_values(&["tag", "stale"])
                        .inc();
                    return Ok(m);
                }
                Err(CacheError::Upstream(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Asks the upstream what the tag points at now (a HEAD, which Docker Hub does not count),
    /// and GETs the manifest only if that digest is not cached.
    async fn revalidate_tag(
        &self,
        up: &Upstream,
        repo: &RepoName,
        tag: &Tag,
        head_only: bool,
    ) -> Result<Manifest, CacheError> {
        self.metrics
            .cache_lookups
            .with_label_values(&["tag", "revalidate"])
            .inc();
        let key_repo = up.upstream_repo(repo);
        let resp = up
            .send(
                Method::HEAD,
                repo,
                &format!("manifests/{tag}"),
                None,
                accept_all(),
                "manifest",
            )
            .await?;
        let manifest = match content_digest(resp.headers()) {
            Some(d) => match self.load_manifest(up, &d).await? {
                Some(m) => m,
                None if head_only => {
                    let media_type = content_type(resp.headers())
                        .filter(|t| MANIFEST_TYPES.contains(&t.as_str()));
                    match (media_type, upstream::declared_length(&resp)) {
                        (Some(media_type), Some(size)) => {
                            // The mapping is confirmed; the bytes come with the client's GET.
                            self.put_tag(up, &key_repo, tag, &d)?;
                            return Ok(Manifest {
                                digest: d,
                                media_type,
                                size,
                                bytes: None,
                            });
                        }
                        _ => self.fetch_manifest(up, repo, &Reference::Digest(d)).await?,
                    }
                }
                None => self.fetch_manifest(up, repo, &Reference::Digest(d)).await?,
            },
            None => {
                self.fetch_manifest(up, repo, &Reference::Tag(tag.clone()))
                    .await?
            }
        };
        self.put_tag(up, &key_repo, tag, &manifest.digest)?;
        Ok(manifest)
    }

    fn put_tag(
        &self,
        up: &Upstream,
        key_repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), CacheError> {
        let entry = TagEntry {
            digest: digest.clone(),
            checked_at_ms: now_millis(),
        };
        Ok(self
            .index
            .put_tag(&up.name, key_repo.as_str(), tag.as_str(), &entry)?)
    }

    /// A cached manifest for this upstream, if we hold it.
    async fn load_manifest(
        &self,
        up: &Upstream,
        digest: &Digest,
    ) -> Result<Option<Manifest>, CacheError> {
        let Some(media_type) = self.index.manifest_type(&up.name, digest)? else {
            return Ok(None);
        };
        let bytes = match tokio::fs::read(self.store.path(digest)).await {
            Ok(b) => Bytes::from(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        {
            let mut s = self.lock();
            if let Some(m) = s.entries.get_mut(digest) {
                m.last_access_ms = now_millis();
                s.dirty.insert(digest.clone());
            }
        }
        Ok(Some(Manifest {
            digest: digest.clone(),
            media_type,
            size: bytes.len() as u64,
            bytes: Some(bytes),
        }))
    }

    /// GETs a manifest, checks it against its digest, and stores it.
    async fn fetch_manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Manifest, CacheError> {
        let resp = up
            .send(
                Method::GET,
                repo,
                &format!("manifests/{reference}"),
                None,
                accept_all(),
                "manifest",
            )
            .await?;
        let (content_type, header_digest) =
            (content_type(resp.headers()), content_digest(resp.headers()));
        let bytes = upstream::read_limited(resp, MAX_MANIFEST_BYTES, &up.name).await?;
        let bad = |reason: String| {
            self.metrics
                .fill_failures
                .with_label_values(&["bad_response"])
                .inc();
            CacheError::Upstream(UpstreamError::BadResponse {
                upstream: up.name.clone(),
                reason,
            })
        };
        let media_type = manifest_media_type(content_type.as_deref(), &bytes).map_err(bad)?;
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => header_digest,
        };
        let digest = match expected {
            Some(d) => {
                if d.of_same_kind(&bytes) != d {
                    self.metrics
                        .fill_failures
                        .with_label_values(&["digest_mismatch"])
                        .inc();
                    return Err(CacheError::DigestMismatch {
                        upstream: up.name.clone(),
                        digest: d,
                    });
                }
                d
            }
            None => Digest::sha256_of(&bytes),
        };
        self.store_manifest(up, repo, &digest, &media_type, &bytes)
            .await?;
        Ok(Manifest {
            digest,
            media_type,
            size: bytes.len() as u64,
            bytes: Some(Bytes::from(bytes)),
        })
    }

    async fn store_manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), CacheError> {
        let size = bytes.len() as u64;
        let already = self.lock().entries.contains_key(digest);
        let mut reserved = 0;
        if !already {
            if !self.reserve(size).await? {
                return Ok(());
            }
            reserved = size;
            let store = self.store.clone();
            let (d, b) = (digest.clone(), bytes.to_vec());
            if let Err(e) = blocking(move || store.write_verified(&d, &b)).await {
                self.release(reserved);
                return Err(e);
            }
        }
        let meta = self.lock().record(digest, size, KIND_MANIFEST, reserved);
        self.index.put_manifest(
            &up.name,
            up.upstream_repo(repo).as_str(),
            digest,
            meta,
            media_type,
        )?;
        self.publish_size();
        Ok(())
    }

    // ---- what is cached --------------------------------------------------------------------

    pub fn cached_tags(&self, up: &Upstream, repo: &RepoName) -> Result<Vec<String>, CacheError> {
        Ok(self.index.tags(&up.name, up.upstream_repo(repo).as_str())?)
    }

    pub fn cached_repos(&self) -> Result<Vec<(String, String)>, CacheError> {
        Ok(self.index.repos()?)
    }

    /// Bytes of stored files (for tests and metrics).
    pub fn stored_bytes(&self) -> u64 {
        self.lock().committed
    }
}

/// Deletes evicted files and their index entries.
fn remove_victims(
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
            "blob"
        } else {
            "manifest"
        };
        metrics.evictions.with_label_values(&[kind]).inc();
        tracing::debug!(digest = %d, size = meta.size, "evicted");
        store.remove(d)?;
    }
    index.remove_entries(&digests)?;
    Ok(())
}

impl State {
    /// Records a stored file (or another kind for one already stored) as just used, and moves its
    /// bytes from `reserved` to `committed`.
    fn record(&mut self, digest: &Digest, size: u64, kind: u8, reserved: u64) -> EntryMeta {
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

    /// Removes least-recently-used entries until the stored bytes are at most `target`; only
    /// does anything if they are above `trigger` (0: always). Returns what was removed.
    fn evict_to(&mut self, target: u64, trigger: u64) -> Vec<(Digest, EntryMeta)> {
        if self.committed <= trigger.max(target) {
            return Vec::new();
        }
        let mut by_age: Vec<(u64, Digest)> = self
            .entries
            .iter()
            .map(|(d, m)| (m.last_access_ms, d.clone()))
            .collect();
        by_age.sort();
        let mut victims = Vec::new();
        for (_, d) in by_age {
            if self.committed <= target {
                break;
            }
            if let Some(m) = self.entries.remove(&d) {
                self.committed -= m.size;
                self.dirty.remove(&d);
                victims.push((d, m));
            }
        }
        victims
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
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(io::Error::other(e.to_string()).into()),
    }
}

/// An answer's `Docker-Content-Digest`, if it holds a valid digest.
fn content_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v.trim()).ok())
}

/// An answer's media type, parameters dropped.
fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type_of)
}

fn accept_all() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
    h
}

/// `application/json; charset=utf-8` -> `application/json`
pub fn media_type_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The media type to store a manifest under: the upstream's `Content-Type` if it is a manifest
/// type, else the document's own `mediaType`, else schema 1 for `schemaVersion: 1`. An HTML page or
/// anything that is not a JSON object is refused.
fn manifest_media_type(content_type: Option<&str>, bytes: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        schema_version: Option<u64>,
        media_type: Option<String>,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "manifest is not a JSON object ({e}); Content-Type was {}",
            content_type.unwrap_or("missing")
        )
    })?;
    if let Some(ct) = content_type.filter(|ct| MANIFEST_TYPES.contains(ct)) {
        return Ok(ct.to_owned());
    }
    if let Some(mt) = head
        .media_type
        .filter(|mt| MANIFEST_TYPES.contains(&mt.as_str()))
    {
        return Ok(mt);
    }
    if head.schema_version == Some(1) {
        return Ok("application/vnd.docker.distribution.manifest.v1+prettyjws".into());
    }
    Err(format!(
        "not a manifest media type: {}",
        content_type.unwrap_or("missing")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let oci =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        assert_eq!(
            manifest_media_type(Some("application/vnd.oci.image.manifest.v1+json"), oci).unwrap(),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            manifest_media_type(Some("application/json"), oci).unwrap(),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert!(manifest_media_type(Some("text/html"), b"<html></html>").is_err());
        assert!(manifest_media_type(Some("application/json"), br#"{"schemaVersion":2}"#).is_err());
        assert_eq!(
            media_type_of("Application/JSON; charset=utf-8"),
            "application/json"
        );
    }

    #[test]
    fn lru_evicts_oldest_first() {
        let mut s = State::default();
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
}
