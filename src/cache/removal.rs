//! Clearing the cache out, for the offline commands (`rm`, `gc`): an image's tags and the content
//! nothing else reaches, and blobs no held manifest lists. They run as `inventory.rs`'s listings
//! do: in the command's own process or in a running `serve` for its admin socket, calling the
//! index and the store directly (blocking calls, made outside any async worker).

use std::collections::HashSet;
use std::time::Duration;

use super::index::{KIND_BLOB, KIND_MANIFEST};
use super::inventory::{DigestImage, TaggedImage};
use super::links::scope;
use super::lru::{bytes_of, remove_victims};
use super::{Cache, CacheError, Compaction, now_millis};
use crate::manifest::Listing;
use crate::reference::{Digest, Tag};

impl Cache {
    /// Removes tags (every tag of the repository pointing at `digest` if `tag` is None), then the
    /// content they reached that nothing else reaches. Returns the files and bytes removed.
    ///
    /// The work is proportional to the image and its repository, not to the cache: content
    /// linked to another repository is kept without looking further (a link is made only where
    /// a manifest listed it or a client fetched it), so only this repository's other tags and
    /// images held by digest are walked.
    pub(crate) fn remove_image(
        &self,
        upstream: &str,
        repo: &str,
        tag: Option<&str>,
        digest: &Digest,
    ) -> Result<(usize, u64), CacheError> {
        let this = scope(upstream, repo);
        let all: Vec<TaggedImage> = self
            .index
            .repo_tags(upstream, repo)?
            .into_iter()
            .filter_map(|(t, e)| {
                Some(TaggedImage {
                    upstream: upstream.to_owned(),
                    repo: repo.to_owned(),
                    tag: Tag::parse(&t)?,
                    digest: e.digest,
                })
            })
            .collect();
        // Images held by digest alone keep what they reach (found before any tag goes, so the
        // image removed is not one of them).
        let by_digest: Vec<DigestImage> = self
            .digest_images_where(&all, Some(&this))?
            .into_iter()
            .filter(|i| i.digest != *digest)
            .collect();
        let (gone, kept): (Vec<_>, Vec<_>) = all.into_iter().partition(|t| {
            t.upstream == upstream
                && t.repo == repo
                && tag.map_or(t.digest == *digest, |tag| t.tag.as_str() == tag)
        });
        let names: Vec<_> = gone
            .iter()
            .map(|t| {
                (
                    t.upstream.clone(),
                    t.repo.clone(),
                    t.tag.as_str().to_owned(),
                )
            })
            .collect();
        self.index.remove_tags(&names)?;
        for (u, r, t) in &names {
            self.hot.forget_tag(u, r, t);
        }
        let reached = self.reached(upstream, repo, digest)?;
        let mut keep: HashSet<Digest> = {
            let s = self.lock();
            reached
                .iter()
                .filter(|d| s.link_scopes(d).any(|sc| sc.as_str() != this.as_str()))
                .cloned()
                .collect()
        };
        let elsewhere = keep.clone();
        let mut here = HashSet::new();
        for t in &kept {
            here.extend(self.reached(&t.upstream, &t.repo, &t.digest)?);
        }
        for i in &by_digest {
            here.extend(self.reached(&i.upstream, &i.repo, &i.digest)?);
        }
        // Kept for another repository alone: this one's link goes with its image, so that
        // removing that other repository's image later removes the content too.
        let unlinked: Vec<(Digest, String)> = elsewhere
            .iter()
            .filter(|d| !here.contains(*d))
            .map(|d| (d.clone(), this.as_str().to_owned()))
            .collect();
        {
            let mut s = self.lock();
            for (d, _) in &unlinked {
                s.unlink(d, &this);
            }
        }
        self.index.remove_links(&unlinked)?;
        keep.extend(here);
        self.delete(reached.into_iter().filter(|d| !keep.contains(d)).collect())
    }

    /// A manifest's digests held: itself, its children, their blobs, and their referrers.
    fn reached(
        &self,
        upstream: &str,
        repo: &str,
        root: &Digest,
    ) -> Result<Vec<Digest>, CacheError> {
        let Some(held) = self.held(upstream, root)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Digest> = held.blobs.into_iter().map(|(d, _)| d).collect();
        for m in held.manifests {
            for r in self.referrers_held(upstream, repo, &m.digest)? {
                out.extend(self.reached(upstream, repo, &r)?);
            }
            out.push(m.digest);
        }
        Ok(out)
    }

    /// Removes blobs that no held manifest lists and that nobody has used for `grace` (a blob a
    /// client fetched just now may be waiting for its manifest). Returns files and bytes removed.
    pub(crate) fn gc(&self, grace: Duration) -> Result<(usize, u64), CacheError> {
        let entries: Vec<(Digest, u8, u64)> = {
            let s = self.lock();
            s.lru
                .held()
                .map(|(d, m)| (d.clone(), m.kinds, m.last_access_ms))
                .collect()
        };
        let mut listed = HashSet::new();
        for (d, kinds, _) in &entries {
            if kinds & KIND_MANIFEST == 0 {
                continue;
            }
            if let Ok(bytes) = std::fs::read(self.store.path(d))
                && let Ok(l) = Listing::parse(d, &bytes)
            {
                listed.extend(l.blobs.into_iter().map(|b| b.digest));
                listed.extend(l.manifests.into_iter().map(|m| m.digest));
            }
        }
        let before = now_millis().saturating_sub(grace.as_millis() as u64);
        let unlisted = entries
            .into_iter()
            .filter(|(d, kinds, used)| {
                kinds & KIND_BLOB != 0
                    && kinds & KIND_MANIFEST == 0
                    && *used < before
                    && !listed.contains(d)
            })
            .map(|(d, _, _)| d)
            .collect();
        self.delete(unlisted)
    }

    /// Compacts the index's file when it is worth it (`Index::compact`) and measures the room
    /// again, as the file's size counts towards the bound. Blocking.
    pub(crate) fn compact_index(&self) -> Result<Compaction, CacheError> {
        let done = self.index.compact()?;
        if let Compaction::Done { before, after } = done {
            tracing::info!(before, after, "index compacted");
            self.measure_room()?;
        }
        Ok(done)
    }

    /// Deletes held content: files, index entries and links.
    fn delete(&self, digests: Vec<Digest>) -> Result<(usize, u64), CacheError> {
        let victims: Vec<_> = {
            let mut s = self.lock();
            digests
                .into_iter()
                .filter_map(|d| {
                    let m = s.lru.forget(&d)?;
                    s.forget_links_of(&d);
                    Some((d, m))
                })
                .collect()
        };
        let (count, bytes) = (victims.len(), bytes_of(&victims));
        remove_victims(&self.store, &self.index, &self.metrics, &victims)?;
        Ok((count, bytes))
    }
}
