//! Manifests and tags: manifests cached by digest with their exact bytes and media type, tags
//! answered from the cache within `tag_ttl` and revalidated with an upstream HEAD after it.
//!
//! A HEAD costs nothing against Docker Hub's pull limit, so a tag past its TTL costs one HEAD,
//! and a GET only when the tag now points at a digest the cache does not hold. When the upstream
//! fails, times out or limits us, a cached tag is served stale. Concurrent lookups of one manifest
//! share one upstream exchange (`coalesce.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::index::{Index, KIND_MANIFEST, TagEntry};
use super::store::BlobStore;
use super::{Cache, CacheError, blocking, now_millis};
use crate::media_type::{is_manifest_type, manifest_media_type};
use crate::metrics::{FillFailure, Lookup, LookupResult};
use crate::reference::{Digest, Reference, RepoName, Tag};
use crate::upstream::Upstream;

/// A manifest to serve. `bytes` is `None` only for a HEAD answered from the upstream's headers.
#[derive(Clone, Debug)]
pub(crate) struct Manifest {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) size: u64,
    pub(crate) bytes: Option<Bytes>,
}

/// What identifies one manifest lookup for coalescing: upstream, repository, reference, and
/// whether a HEAD's answer (no body) will do.
pub(super) type ManifestKey = (String, RepoName, Reference, bool);

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
        let key = (up.name.clone(), repo.clone(), reference.clone(), head_only);
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
                    if !self.linked(&up.name, repo, d) {
                        // Held, but never seen in this repository: ask it first.
                        up.head_manifest(repo, reference).await?;
                        self.link_served(up, repo, &m).await?;
                    }
                    self.metrics.lookup(Lookup::Manifest, LookupResult::Hit);
                    return Ok(m);
                }
                self.metrics.lookup(Lookup::Manifest, LookupResult::Miss);
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
        let (cached, fresh) = self.cached_tag(up, repo, tag).await?;
        if let Some(m) = fresh {
            self.link_served(up, repo, &m).await?;
            self.metrics.lookup(Lookup::Tag, LookupResult::Hit);
            return Ok(m);
        }
        match self.revalidate_tag(up, repo, tag, head_only).await {
            Ok(m) => Ok(m),
            Err(CacheError::Upstream(e)) if e.stale_ok() => {
                if let Some(t) = &cached
                    && let Some(m) = self.load_manifest(up, &t.digest).await?
                {
                    tracing::info!(upstream = %up.name, %repo, %tag, origin = %e.origin(), error = %e, "upstream failing: serving the cached tag");
                    self.link_served(up, repo, &m).await?;
                    self.metrics.lookup(Lookup::Tag, LookupResult::Stale);
                    return Ok(m);
                }
                // Another replica's last answer for it, from the shared tier.
                if let Some(m) = self.shared_tag(up, repo, tag).await? {
                    tracing::info!(upstream = %up.name, %repo, %tag, error = %e, "upstream failing: serving the tag as the shared tier last saw it");
                    self.link_served(up, repo, &m).await?;
                    self.metrics.lookup(Lookup::Tag, LookupResult::Stale);
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
        self.metrics.lookup(Lookup::Tag, LookupResult::Revalidate);
        let head = up.head_manifest(repo, &Reference::Tag(tag.clone())).await?;
        let manifest = match head.digest {
            Some(d) => match self.load_manifest(up, &d).await? {
                Some(m) => m,
                None if head_only => {
                    let media_type = head.media_type.filter(|t| is_manifest_type(t));
                    match (media_type, head.size) {
                        (Some(media_type), Some(size)) => {
                            // The mapping is confirmed; the bytes come with the client's GET.
                            self.put_tag(up, repo, tag, &d).await?;
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
        self.put_tag(up, repo, tag, &manifest.digest).await?;
        self.link_served(up, repo, &manifest).await?;
        Ok(manifest)
    }

    /// Links a manifest served for (upstream, repo), and what it lists, to that repository: the
    /// repository's tag or the upstream named it there. Costs nothing when already linked.
    async fn link_served(
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

    async fn put_tag(
        &self,
        up: &Upstream,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), CacheError> {
        let entry = TagEntry {
            digest: digest.clone(),
            checked_at_ms: now_millis(),
        };
        self.hot
            .put_tag(&up.name, repo.as_str(), tag.as_str(), &entry);
        if let Some(shared) = &self.shared {
            shared.put_tag(&up.name, repo.as_str(), tag.as_str(), digest);
        }
        let (upstream, repo, tag) = (up.name.clone(), repo.to_string(), tag.as_str().to_owned());
        self.with_index(move |ix| ix.put_tag(&upstream, &repo, &tag, &entry))
            .await
    }

    /// A cached manifest for this upstream, if we hold it.
    async fn load_manifest(
        &self,
        up: &Upstream,
        digest: &Digest,
    ) -> Result<Option<Manifest>, CacheError> {
        if let Some(m) = self.hot_manifest(up, digest) {
            return Ok(Some(m));
        }
        let (index, store) = (self.index.clone(), self.store.clone());
        let (upstream, d) = (up.name.clone(), digest.clone());
        let found = blocking(move || read_manifest(&index, &store, &upstream, &d)).await?;
        Ok(found.map(|(media_type, bytes)| self.loaded(up, digest, media_type, bytes)))
    }

    /// A manifest from memory (`hot.rs`), if it is there and still held.
    fn hot_manifest(&self, up: &Upstream, digest: &Digest) -> Option<Manifest> {
        let (media_type, bytes) = self.hot.manifest(&up.name, digest)?;
        let mut s = self.lock();
        if !s.entries.contains_key(digest) {
            return None;
        }
        s.touch(digest);
        Some(Manifest {
            digest: digest.clone(),
            media_type,
            size: bytes.len() as u64,
            bytes: Some(bytes),
        })
    }

    /// How long this upstream's tags are trusted: `tag_ttl`, or for ever offline (there is no
    /// one to ask).
    fn tag_ttl_for(&self, up: &Upstream) -> Duration {
        if up.offline {
            Duration::MAX
        } else {
            self.tag_ttl
        }
    }

    /// A repository's cached tag, and its manifest if the tag is within `tag_ttl`: one trip to
    /// the blocking pool, as this is the hot path of a warm pull.
    async fn cached_tag(
        &self,
        up: &Upstream,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(Option<TagEntry>, Option<Manifest>), CacheError> {
        let ttl = self.tag_ttl_for(up);
        if let Some(entry) = self.hot.tag(&up.name, repo.as_str(), tag.as_str())
            && fresh(&entry, ttl)
            && let Some(m) = self.hot_manifest(up, &entry.digest)
        {
            return Ok((Some(entry), Some(m)));
        }
        let (index, store) = (self.index.clone(), self.store.clone());
        let (upstream, r, t) = (up.name.clone(), repo.to_string(), tag.as_str().to_owned());
        let (entry, found) = blocking(move || {
            let entry = index.tag(&upstream, &r, &t)?;
            let found = match &entry {
                Some(e) if fresh(e, ttl) => read_manifest(&index, &store, &upstream, &e.digest)?,
                _ => None,
            };
            Ok::<_, CacheError>((entry, found))
        })
        .await?;
        if let Some(e) = &entry {
            self.hot.put_tag(&up.name, repo.as_str(), tag.as_str(), e);
        }
        let fresh = match (&entry, found) {
            (Some(e), Some((media_type, bytes))) => {
                Some(self.loaded(up, &e.digest, media_type, bytes))
            }
            _ => None,
        };
        Ok((entry, fresh))
    }

    /// A manifest read from the store, marked as just used and kept in memory.
    fn loaded(
        &self,
        up: &Upstream,
        digest: &Digest,
        media_type: String,
        bytes: Vec<u8>,
    ) -> Manifest {
        self.lock().touch(digest);
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

    /// GETs a manifest (by digest from the shared tier if it holds it, else from the upstream),
    /// checks it against its digest, and stores it.
    async fn fetch_manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Manifest, CacheError> {
        if let Reference::Digest(d) = reference
            && let Some(m) = self.shared_manifest(up, repo, d).await?
        {
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
            shared.upload_manifest(digest.clone(), media_type.clone(), bytes.clone());
        }
        Ok(Manifest {
            digest,
            media_type,
            size: bytes.len() as u64,
            bytes: Some(bytes),
        })
    }

    /// A manifest from the shared tier, checked against its digest and stored, if it is there.
    /// A copy that fails its check is refused (and counted); the upstream is asked instead.
    async fn shared_manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Manifest>, CacheError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let (media_type, bytes) = match shared.manifest(digest).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "shared tier unavailable: asking the upstream");
                return Ok(None);
            }
        };
        if digest.of_same_kind(&bytes) != *digest || !is_manifest_type(&media_type) {
            self.metrics.shared("get_manifest", "corrupt");
            tracing::warn!(%digest, "shared tier copy of a manifest refused: it does not match");
            return Ok(None);
        }
        self.store_manifest(up, repo, digest, &media_type, &bytes)
            .await?;
        self.link_manifest(&up.name, repo, digest, &bytes).await?;
        Ok(Some(Manifest {
            digest: digest.clone(),
            media_type,
            size: bytes.len() as u64,
            bytes: Some(bytes),
        }))
    }

    /// The digest the shared tier last recorded for a tag (another replica saw the upstream
    /// answer it), with its manifest: for serving tags while the upstream fails.
    async fn shared_tag(
        &self,
        up: &Upstream,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<Manifest>, CacheError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let digest = match shared.tag(&up.name, repo.as_str(), tag.as_str()).await {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(%repo, %tag, error = %e, "shared tier unavailable");
                return Ok(None);
            }
        };
        let found = match self.load_manifest(up, &digest).await? {
            Some(m) => Some(m),
            None => self.shared_manifest(up, repo, &digest).await?,
        };
        Ok(found)
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
        let (upstream, r, d, t) = (
            up.name.clone(),
            repo.to_string(),
            digest.clone(),
            media_type.to_owned(),
        );
        self.with_index(move |ix| ix.put_manifest(&upstream, &r, &d, meta, &t))
            .await?;
        self.note_referrer(&up.name, repo, digest, media_type, bytes)
            .await?;
        self.publish_size();
        Ok(())
    }
}

/// Whether a tag confirmed at `entry.checked_at_ms` is still within `ttl`.
fn fresh(entry: &TagEntry, ttl: Duration) -> bool {
    Duration::from_millis(now_millis().saturating_sub(entry.checked_at_ms)) < ttl
}

/// A manifest's media type (for this upstream) and bytes, if the cache holds it. Blocking.
pub(super) fn read_manifest(
    index: &Index,
    store: &BlobStore,
    upstream: &str,
    digest: &Digest,
) -> Result<Option<(String, Vec<u8>)>, CacheError> {
    let Some(media_type) = index.manifest_type(upstream, digest)? else {
        return Ok(None);
    };
    match std::fs::read(store.path(digest)) {
        Ok(bytes) => Ok(Some((media_type, bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}
