//! Tags: answered from the cache within `tag_ttl`, revalidated with an upstream HEAD after it,
//! and served stale when the upstream fails (from this replica's index, or from the shared
//! tier's record of the last answer).
//!
//! A HEAD costs nothing against Docker Hub's pull limit, so a tag past its TTL costs one HEAD,
//! and a GET only when the tag now points at a digest the cache does not hold.

use std::time::Duration;

use super::index::TagEntry;
use super::manifests::{Manifest, read_manifest};
use super::{Cache, CacheError, blocking, now_millis};
use crate::media_type::MediaType;
use crate::metrics::{Lookup, LookupResult};
use crate::reference::{Digest, Reference, RepoName, Tag};
use crate::upstream::Upstream;

impl Cache {
    pub(super) async fn manifest_by_tag(
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
        // A tag never seen is a miss; one past its TTL is revalidated (the log and the hit ratio
        // tell them apart).
        let result = match cached {
            Some(_) => LookupResult::Revalidate,
            None => LookupResult::Miss,
        };
        match self.revalidate_tag(up, repo, tag, head_only, result).await {
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
    /// and GETs the manifest only if that digest is not cached. `result` is what the lookup
    /// counts as: a miss for a tag never seen, a revalidation for one past its TTL.
    pub(super) async fn revalidate_tag(
        &self,
        up: &Upstream,
        repo: &RepoName,
        tag: &Tag,
        head_only: bool,
        result: LookupResult,
    ) -> Result<Manifest, CacheError> {
        self.metrics.lookup(Lookup::Tag, result);
        let head = up.head_manifest(repo, &Reference::Tag(tag.clone())).await?;
        let manifest = match head.digest {
            Some(d) => match self.load_manifest(up, &d).await? {
                Some(m) => m,
                None if head_only => {
                    let media_type = head
                        .media_type
                        .as_deref()
                        .map(MediaType::parse)
                        .filter(MediaType::is_manifest);
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
                        _ => {
                            self.fetch_manifest(up, repo, &Reference::Digest(d), true)
                                .await?
                        }
                    }
                }
                None => {
                    self.fetch_manifest(up, repo, &Reference::Digest(d), true)
                        .await?
                }
            },
            None => {
                self.fetch_manifest(up, repo, &Reference::Tag(tag.clone()), true)
                    .await?
            }
        };
        self.put_tag(up, repo, tag, &manifest.digest).await?;
        self.link_served(up, repo, &manifest).await?;
        Ok(manifest)
    }

    pub(super) async fn put_tag(
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
        let stored = self
            .with_index(move |ix| ix.put_tag(&upstream, &repo, &tag, &entry))
            .await;
        self.unless_full(stored, "tag")
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
    pub(super) async fn cached_tag(
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
                Some(e) if fresh(e, ttl) => {
                    read_manifest(&index, &store, &upstream, &e.digest, None)?
                }
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
}

/// Whether a tag confirmed at `entry.checked_at_ms` is still within `ttl`.
fn fresh(entry: &TagEntry, ttl: Duration) -> bool {
    Duration::from_millis(now_millis().saturating_sub(entry.checked_at_ms)) < ttl
}
