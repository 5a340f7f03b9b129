//! Recently used tags and manifests in memory, so a warm manifest by tag (the request every pull
//! starts with) is answered without a trip to the blocking pool for the index and the file.
//!
//! Only a front: the index and the store stay the truth. A tag enters here when it is read or
//! written there, with the same time of confirmation, so `tag_ttl` applies unchanged. A manifest
//! found here is served only while the cache's in-memory view still holds its entry, so an
//! evicted manifest is never served from memory.

use bytes::Bytes;
use moka::sync::Cache as Lru;

use super::index::TagEntry;
use crate::media_type::MediaType;
use crate::reference::Digest;
use crate::upstream::ReferrersAnswer;

/// How many tags, and how many bytes of manifests, are kept in memory.
const HOT_TAGS: u64 = 10_000;
const HOT_MANIFEST_BYTES: u64 = 16 << 20;

pub(super) struct Hot {
    /// (upstream, repository, tag) -> the tag's cached answer.
    tags: Lru<(String, String, String), TagEntry>,
    /// (upstream, digest) -> media type and bytes.
    manifests: Lru<(String, Digest), (MediaType, Bytes)>,
    /// (upstream, repository, subject, artifact type) -> the referrers answer, for `tag_ttl`
    /// (like a tag: a signature pushed just now shows within that).
    referrers: Lru<ReferrersKey, ReferrersAnswer>,
}

/// Which referrers answer: upstream, repository, subject, artifact type.
pub(super) type ReferrersKey = (String, String, Digest, Option<String>);

impl Hot {
    pub(super) fn new(tag_ttl: std::time::Duration) -> Hot {
        Hot {
            referrers: Lru::builder()
                .max_capacity(HOT_TAGS)
                .time_to_live(tag_ttl.max(std::time::Duration::from_millis(1)))
                .build(),
            tags: Lru::new(HOT_TAGS),
            manifests: Lru::builder()
                .weigher(|_, (t, b): &(MediaType, Bytes)| {
                    u32::try_from(t.as_str().len() + b.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(HOT_MANIFEST_BYTES)
                .build(),
        }
    }

    pub(super) fn tag(&self, upstream: &str, repo: &str, tag: &str) -> Option<TagEntry> {
        self.tags
            .get(&(upstream.to_owned(), repo.to_owned(), tag.to_owned()))
    }

    pub(super) fn put_tag(&self, upstream: &str, repo: &str, tag: &str, entry: &TagEntry) {
        let key = (upstream.to_owned(), repo.to_owned(), tag.to_owned());
        self.tags.insert(key, entry.clone());
    }

    /// Forgets a tag (`entrepot rm` through a running `serve`).
    pub(super) fn forget_tag(&self, upstream: &str, repo: &str, tag: &str) {
        self.tags
            .invalidate(&(upstream.to_owned(), repo.to_owned(), tag.to_owned()));
    }

    pub(super) fn manifest(&self, upstream: &str, digest: &Digest) -> Option<(MediaType, Bytes)> {
        self.manifests.get(&(upstream.to_owned(), digest.clone()))
    }

    pub(super) fn put_manifest(
        &self,
        upstream: &str,
        digest: &Digest,
        media_type: &MediaType,
        bytes: Bytes,
    ) {
        let key = (upstream.to_owned(), digest.clone());
        self.manifests.insert(key, (media_type.clone(), bytes));
    }

    pub(super) fn referrers(&self, key: &ReferrersKey) -> Option<ReferrersAnswer> {
        self.referrers.get(key)
    }

    pub(super) fn put_referrers(&self, key: ReferrersKey, answer: ReferrersAnswer) {
        self.referrers.insert(key, answer);
    }
}
