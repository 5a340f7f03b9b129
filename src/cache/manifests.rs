//! Manifests: cached by digest with their exact bytes and media type, served per upstream; by
//! tag through `tags.rs`. Concurrent lookups of one manifest share one upstream exchange
//! (`coalesce.rs`).

use std::sync::Arc;

use bytes::Bytes;

use super::index::{Index, KIND_MANIFEST};
use super::store::BlobStore;
use super::{Cache, CacheError, blocking};
use crate::media_type::{MediaType, manifest_media_type};
use crate::metrics::{FillFailure, Lookup, LookupResult};
use crate::reference::{Digest, Reference, RepoName};
use crate::upstream::{Resource, Upstream, UpstreamError};

/// A manifest to serve. `bytes` is `None` only for a HEAD answered from the upstream's headers.
#[derive(Clone, Debug)]
pub(crate) struct Manifest {
    pub(crate) digest: Digest,
    pub(crate) media_type: MediaType,
    pub(crate) size: u64,
    pub(crate) bytes: Option<Bytes>,
}

/// What identifies one manifest lookup for coalescing: upstream, repository, reference, and
/// whether a HEAD's answer (no body) will do.
pub(super) type ManifestKey = (String, RepoName, Reference, bool);

/// A manifest by its name in an upstream: (upstream, repository, reference).
pub(super) type ManifestName = (String, RepoName, Reference);

impl Cache {
    /// A manifest by tag or digest. `head_only` lets a HEAD by tag be answered from the upstream's
    /// headers when the manifest is not cached, so it costs no upstream GET.
    pub(crate) async fn manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        reference: &Reference,
        head_only: bool,
    ) -> Result<Manifest, Arc<CacheError>> {
        let name = (up.name.clone(), repo.clone(), reference.clone());
        if let Some(negatives) = &self.negatives
            && negatives.contains_key(&name)
        {
            let kind = match reference {
                Reference::Tag(_) => Lookup::Tag,
                Reference::Digest(_) => Lookup::Manifest,
            };
            self.metrics.lookup(kind, LookupResult::Negative);
            return Err(Arc::new(CacheError::Upstream(UpstreamError::NotFound {
                upstream: up.name.clone(),
                what: Resource::Manifest,
            })));
        }
        let key = (up.name.clone(), repo.clone(), reference.clone(), head_only);
        let result = self
            .manifests_in_flight
            .run(key, || async {
                self.manifest_alone(up, repo, reference, head_only)
                    .await
                    .map_err(Arc::new)
            })
            .await;
        if let (Err(e), Some(negatives)) = (&result, &self.negatives)
            && matches!(**e, CacheError::Upstream(UpstreamError::NotFound { .. }))
        {
            // A CI loop asking for a tag not pushed yet costs one upstream request a
            // `negative_ttl`, not one each time.
            negatives.insert(name, ());
        }
        result
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
                    if !self.linked(&up.name, repo, d) {
                        // Held, but never seen in this repository: ask it first.
                        up.head_manifest(repo, reference).await?;
                        self.link_served(up, repo, &m).await?;
                    }
                    self.metrics.lookup(Lookup::Manifest, LookupResult::Hit);
                    return Ok(m);
                }
                self.metrics.lookup(Lookup::Manifest, LookupResult::Miss);
                self.fetch_manifest(up, repo, reference, false).await
            }
            Reference::Tag(tag) => self.manifest_by_tag(up, repo, tag, head_only).await,
        }
    }

    /// Links a manifest served for (upstream, repo), and what it lists, to that repository: the
    /// repository's tag or the upstream named it there. Costs nothing when already linked.
    pub(super) async fn link_served(
        &self,
        up: &Upstream,
        repo: &RepoName,
        m: &Manifest,
    ) -> Result<(), CacheError> {
        match &m.bytes {
            // Linked before means what it lists was linked with it.
            Some(bytes) if !self.linked(&up.name, repo, &m.digest) => {
                self.link_manifest(&up.name, repo, &m.digest, bytes).await
            }
            _ => Ok(()),
        }
    }

    /// A cached manifest for this upstream, if we hold it.
    pub(super) async fn load_manifest(
        &self,
        up: &Upstream,
        digest: &Digest,
    ) -> Result<Option<Manifest>, CacheError> {
        if let Some(m) = self.hot_manifest(up, digest) {
            return Ok(Some(m));
        }
        // Its media type from its record, and its bytes from the kernel's cache, on the worker
        // when both are there; else from the index and the file on the blocking pool. Read on
        // the worker, it is not kept in memory: that costs about what a hit there does, and the
        // room is for manifests whose reading needs the blocking pool.
        let known = self.lock().lru.manifest_type(digest, &up.name);
        if let Some((media_type, size)) = &known
            && let Some(bytes) = self.store.read_cached(digest, *size)
        {
            self.lock().lru.touch(digest);
            return Ok(Some(Manifest {
                digest: digest.clone(),
                media_type: media_type.clone(),
                size: *size,
                bytes: Some(Bytes::from(bytes)),
            }));
        }
        let (index, store) = (self.index.clone(), self.store.clone());
        let (upstream, d) = (up.name.clone(), digest.clone());
        let known = known.map(|(t, _)| t);
        let found = blocking(move || read_manifest(&index, &store, &upstream, &d, known)).await?;
        Ok(found.map(|(media_type, bytes)| self.loaded(up, digest, media_type, bytes)))
    }

    /// A manifest from memory (`hot.rs`), if it is there and still held.
    pub(super) fn hot_manifest(&self, up: &Upstream, digest: &Digest) -> Option<Manifest> {
        let (media_type, bytes) = self.hot.manifest(&up.name, digest)?;
        let mut s = self.lock();
        if !s.lru.holds(digest) {
            return None;
        }
        s.lru.touch(digest);
        Some(Manifest {
            digest: digest.clone(),
            media_type,
            size: bytes.len() as u64,
            bytes: Some(bytes),
        })
    }

    /// A manifest read from the store (its type from the index or its record), marked as just
    /// used, its type noted in its record, and kept in memory.
    pub(super) fn loaded(
        &self,
        up: &Upstream,
        digest: &Digest,
        media_type: MediaType,
        bytes: Vec<u8>,
    ) -> Manifest {
        {
            let mut s = self.lock();
            s.lru.touch(digest);
            s.lru.note_manifest_type(digest, &up.name, &media_type);
        }
        let bytes = Bytes::from(bytes);
        self.hot
            .put_manifest(&up.name, digest, &media_type, bytes.clone());
        Manifest {
            digest: digest.clone(),
            media_type,
            size: bytes.len() as u64,
            bytes: Some(bytes),
        }
    }

    /// GETs a manifest (by digest from the shared tier if it holds it and `repo` may be served
    /// it, else from the upstream), checks it against its digest, and stores it. `confirmed`:
    /// the upstream has just named this digest for `repo` (its tag's HEAD).
    pub(super) async fn fetch_manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        reference: &Reference,
        confirmed: bool,
    ) -> Result<Manifest, CacheError> {
        if let Reference::Digest(d) = reference
            && self.shared.is_some()
            && (confirmed || self.shared_may_serve(up, repo, d).await)
            && let Some(m) = self.shared_manifest(up, repo, d).await?
        {
            if confirmed && let Some(shared) = &self.shared {
                shared.put_link(&up.name, repo, d);
            }
            return Ok(m);
        }
        let answer = up.get_manifest(repo, reference).await?;
        let media_type = manifest_media_type(answer.content_type.as_deref(), &answer.bytes)
            .map_err(|e| {
                self.metrics.fill_failed(FillFailure::BadResponse);
                CacheError::not_a_manifest(&up.name, e)
            })?;
        let bytes = answer.bytes;
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => answer.digest,
        };
        let digest = match expected {
            Some(d) => {
                if d.of_same_kind(&bytes) != d {
                    self.metrics.fill_failed(FillFailure::DigestMismatch);
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
        self.link_manifest(&up.name, repo, &digest, &bytes).await?;
        let bytes = Bytes::from(bytes);
        if let Some(shared) = &self.shared {
            shared.upload_manifest(digest.clone(), media_type.to_string(), bytes.clone());
            // The upstream served it under `repo`: other replicas may, during an outage.
            shared.put_link(&up.name, repo, &digest);
        }
        Ok(Manifest {
            digest,
            media_type,
            size: bytes.len() as u64,
            bytes: Some(bytes),
        })
    }

    /// Stores a verified manifest (file, entry, index row, referrer), or, when the disk is full,
    /// passes it through uncached.
    pub(super) async fn store_manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
        media_type: &MediaType,
        bytes: &[u8],
    ) -> Result<(), CacheError> {
        let stored = self
            .keep_manifest(up, repo, digest, media_type, bytes)
            .await;
        self.unless_full(stored, "manifest")
    }

    async fn keep_manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
        media_type: &MediaType,
        bytes: &[u8],
    ) -> Result<(), CacheError> {
        let size = bytes.len() as u64;
        let already = self.lock().lru.holds(digest);
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
        let meta = self
            .lock()
            .lru
            .record(digest, size, KIND_MANIFEST, reserved);
        let (upstream, r, d, t) = (
            up.name.clone(),
            repo.to_string(),
            digest.clone(),
            media_type.to_string(),
        );
        self.with_index(move |ix| ix.put_manifest(&upstream, &r, &d, meta, &t))
            .await?;
        self.lock()
            .lru
            .note_manifest_type(digest, &up.name, media_type);
        self.note_referrer(&up.name, repo, digest, media_type.as_str(), bytes)
            .await?;
        self.publish_size();
        Ok(())
    }
}

/// A manifest's media type (for this upstream) and bytes, if the cache holds it: its type from
/// the index unless `known` already (its record's copy, `lru/manifest_types.rs`). Blocking.
pub(super) fn read_manifest(
    index: &Index,
    store: &BlobStore,
    upstream: &str,
    digest: &Digest,
    known: Option<MediaType>,
) -> Result<Option<(MediaType, Vec<u8>)>, CacheError> {
    let media_type = match known {
        Some(t) => t,
        None => match index.manifest_type(upstream, digest)? {
            Some(t) => MediaType::parse(&t),
            None => return Ok(None),
        },
    };
    match std::fs::read(store.path(digest)) {
        Ok(bytes) => Ok(Some((media_type, bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}
