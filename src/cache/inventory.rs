//! What the cache holds, image by image, for the offline commands (`ls`, `export`, and the walks
//! of `rm` in `removal.rs`).
//!
//! An image is a tag and everything its manifest reaches: child manifests (the platforms the cache
//! holds), config and layers; or a manifest held by digest alone. These run in the command's own
//! process, which holds the cache directory alone (the index's lock), or in a running `serve`
//! for a command sent to its admin socket (`admin.rs`). They call the index and the store
//! directly: blocking calls, made outside any async worker.

use std::collections::HashSet;
use std::time::Duration;

use super::index::{KIND_MANIFEST, KIND_PINNED};
use super::links::{Scope, scope};
use super::manifests::read_manifest;
use super::{Cache, CacheError};
use crate::manifest::Listing;
use crate::media_type::MediaType;
use crate::reference::{Digest, Tag};

/// A cached tag.
#[derive(Clone, Debug)]
pub(crate) struct TaggedImage {
    pub(crate) upstream: String,
    pub(crate) repo: String,
    /// Parsed when read from the index: one that does not parse is left out (it could be
    /// neither pulled nor named).
    pub(crate) tag: Tag,
    pub(crate) digest: Digest,
}

/// An image the cache holds by digest alone (pulled as `repo@sha256:...`, as Kubernetes pulls
/// pinned images, or warmed so): a manifest linked to (upstream, repository) that no tag of the
/// repository reaches, that no other manifest held there lists (a platform of an index), and
/// that is not a referrer (a signature or attestation goes with its subject).
#[derive(Clone, Debug)]
pub(crate) struct DigestImage {
    pub(crate) upstream: String,
    pub(crate) repo: String,
    pub(crate) digest: Digest,
}

/// A manifest the cache holds, with its bytes.
pub(crate) struct HeldManifest {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) bytes: Vec<u8>,
}

/// An image's content as the cache holds it.
#[derive(Default)]
pub(crate) struct Held {
    /// Root first, then the child manifests held.
    pub(crate) manifests: Vec<HeldManifest>,
    /// Config and layer blobs held, with sizes (each once).
    pub(crate) blobs: Vec<(Digest, u64)>,
    /// The platforms held (`os/arch[/variant]`), for an index.
    pub(crate) platforms: Vec<String>,
    /// Child manifests of an index the cache does not hold (platforms left out).
    pub(crate) absent: Vec<Digest>,
    /// Blobs an image manifest lists that the cache does not hold (evicted): the image is
    /// incomplete.
    pub(crate) missing: Vec<Digest>,
    pub(crate) bytes: u64,
    pub(crate) last_used_ms: u64,
    /// Whether the root manifest was imported pinned.
    pub(crate) pinned: bool,
}

impl Cache {
    /// Every cached tag, ordered by upstream, repository and tag.
    pub(crate) fn tagged_images(&self) -> Result<Vec<TaggedImage>, CacheError> {
        let mut out: Vec<TaggedImage> = self
            .index
            .all_tags()?
            .into_iter()
            .filter_map(|(upstream, repo, tag, e)| {
                Some(TaggedImage {
                    upstream,
                    repo,
                    tag: Tag::parse(&tag)?,
                    digest: e.digest,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.upstream, &a.repo, &a.tag).cmp(&(&b.upstream, &b.repo, &b.tag)));
        Ok(out)
    }

    /// The digest a cached tag points at.
    pub(crate) fn tagged_digest(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Digest>, CacheError> {
        Ok(self.index.tag(upstream, repo, tag)?.map(|e| e.digest))
    }

    /// Every image held by digest alone (see [`DigestImage`]), ordered by upstream, repository
    /// and digest. `tagged` is [`Cache::tagged_images`]: what they reach is not listed again.
    pub(crate) fn digest_images(
        &self,
        tagged: &[TaggedImage],
    ) -> Result<Vec<DigestImage>, CacheError> {
        self.digest_images_where(tagged, None)
    }

    /// [`Cache::digest_images`], of one (upstream, repository) alone when `only` names one
    /// (`tagged` then need hold only that repository's tags).
    pub(super) fn digest_images_where(
        &self,
        tagged: &[TaggedImage],
        only: Option<&Scope>,
    ) -> Result<Vec<DigestImage>, CacheError> {
        let linked: Vec<(Digest, String, String)> = {
            let s = self.lock();
            let manifest = |d: &Digest| s.lru.get(d).is_some_and(|m| m.kinds & KIND_MANIFEST != 0);
            match only {
                // One repository's: its number compared, no text (rm, beside a million links).
                Some(only) => match only.parts() {
                    Some((up, repo)) => s
                        .linked_to(only)
                        .filter(|d| manifest(d))
                        .map(|d| (d.clone(), up.to_owned(), repo.to_owned()))
                        .collect(),
                    None => Vec::new(),
                },
                None => s
                    .all_links()
                    .filter(|(d, _)| manifest(d))
                    .filter_map(|(d, scope)| {
                        let (up, repo) = scope.parts()?;
                        Some((d.clone(), up.to_owned(), repo.to_owned()))
                    })
                    .collect(),
            }
        };
        // What is reached otherwise, per (upstream, repository): through a tag, as a child of
        // another held manifest, or as a referrer.
        let mut reached: HashSet<(String, String, Digest)> = HashSet::new();
        for t in tagged {
            for m in self.manifests_reached(&t.upstream, &t.digest)? {
                reached.insert((t.upstream.clone(), t.repo.clone(), m));
            }
        }
        let mut candidates = Vec::new();
        for (digest, up, repo) in linked {
            if reached.contains(&(up.clone(), repo.clone(), digest.clone())) {
                continue;
            }
            let Some((media_type, bytes)) = self.manifest_bytes(&up, &digest)? else {
                continue;
            };
            if crate::manifest::referrer_of(&digest, &media_type, &bytes).is_some() {
                continue;
            }
            if let Ok(l) = Listing::parse(&digest, &bytes) {
                for child in l.manifests {
                    reached.insert((up.clone(), repo.clone(), child.digest));
                }
            }
            candidates.push(DigestImage {
                upstream: up,
                repo,
                digest,
            });
        }
        let mut out: Vec<DigestImage> = candidates
            .into_iter()
            .filter(|i| !reached.contains(&(i.upstream.clone(), i.repo.clone(), i.digest.clone())))
            .collect();
        out.sort_by(|a, b| {
            (&a.upstream, &a.repo, a.digest.to_string()).cmp(&(
                &b.upstream,
                &b.repo,
                b.digest.to_string(),
            ))
        });
        Ok(out)
    }

    /// A held root manifest and, for an index, the manifests it lists: only an index's bytes
    /// are read (an image's type is in the index), so walking every tag reads few files.
    fn manifests_reached(&self, upstream: &str, root: &Digest) -> Result<Vec<Digest>, CacheError> {
        let Some(media_type) = self.manifest_type(upstream, root)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![root.clone()];
        if matches!(media_type, MediaType::OciIndex | MediaType::DockerList)
            && let Some((_, bytes)) = self.manifest_bytes(upstream, root)?
            && let Ok(l) = Listing::parse(root, &bytes)
        {
            out.extend(l.manifests.into_iter().map(|m| m.digest));
        }
        Ok(out)
    }

    /// A cached manifest's media type (as served for `upstream`) and bytes.
    pub(crate) fn manifest_bytes(
        &self,
        upstream: &str,
        digest: &Digest,
    ) -> Result<Option<(String, Vec<u8>)>, CacheError> {
        let known = self
            .lock()
            .lru
            .manifest_type(digest, upstream)
            .map(|(t, _)| t);
        let found = read_manifest(&self.index, &self.store, upstream, digest, known)?;
        Ok(found.map(|(t, bytes)| (t.as_str().to_owned(), bytes)))
    }

    /// A held manifest's media type for `upstream`: from its record when it knows it
    /// (`lru/manifest_types.rs`), else from the index.
    fn manifest_type(
        &self,
        upstream: &str,
        digest: &Digest,
    ) -> Result<Option<MediaType>, CacheError> {
        if let Some((t, _)) = self.lock().lru.manifest_type(digest, upstream) {
            return Ok(Some(t));
        }
        Ok(self
            .index
            .manifest_type(upstream, digest)?
            .map(|t| MediaType::parse(&t)))
    }

    /// Everything the manifest `root` reaches that the cache holds, and what it lacks. None if
    /// the root itself is not held.
    pub(crate) fn held(&self, upstream: &str, root: &Digest) -> Result<Option<Held>, CacheError> {
        let mut held = Held::default();
        let mut seen = HashSet::new();
        let mut todo = vec![(root.clone(), None::<String>)];
        while let Some((digest, platform)) = todo.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some((media_type, bytes)) = self.manifest_bytes(upstream, &digest)? else {
                if digest == *root {
                    return Ok(None);
                }
                held.absent.push(digest);
                continue;
            };
            let listing = Listing::parse(&digest, &bytes)
                .map_err(|e| CacheError::Io(std::io::Error::other(e)))?;
            for m in listing.manifests.iter().rev() {
                todo.push((m.digest.clone(), m.platform.clone()));
            }
            held.platforms.extend(platform);
            let s = self.lock();
            if let Some(meta) = s.lru.get(&digest) {
                held.bytes += meta.size;
                held.last_used_ms = held.last_used_ms.max(meta.last_access_ms);
                if digest == *root {
                    held.pinned = meta.kinds & KIND_PINNED != 0;
                }
            }
            for b in listing.blobs {
                if !seen.insert(b.digest.clone()) {
                    continue;
                }
                match s.lru.get(&b.digest) {
                    Some(meta) => {
                        held.bytes += meta.size;
                        held.last_used_ms = held.last_used_ms.max(meta.last_access_ms);
                        held.blobs.push((b.digest, meta.size));
                    }
                    None => held.missing.push(b.digest),
                }
            }
            drop(s);
            held.manifests.push(HeldManifest {
                digest,
                media_type,
                bytes,
            });
        }
        held.platforms.sort();
        held.platforms.dedup();
        Ok(Some(held))
    }

    /// The referrers of `subject` held for (upstream, repo).
    pub(crate) fn referrers_held(
        &self,
        upstream: &str,
        repo: &str,
        subject: &Digest,
    ) -> Result<Vec<Digest>, CacheError> {
        let found = self
            .index
            .referrers(subject, scope(upstream, repo).as_str())?;
        let s = self.lock();
        Ok(found
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| s.lru.holds(d))
            .collect())
    }

    /// Where a held blob's bytes are, and its size.
    pub(crate) fn stored_file(&self, digest: &Digest) -> Option<(std::path::PathBuf, u64)> {
        let size = self.lock().lru.get(digest)?.size;
        Some((self.store.path(digest), size))
    }

    /// Bytes held pinned (imported), which the LRU never evicts.
    pub(crate) fn pinned_bytes(&self) -> u64 {
        let s = self.lock();
        s.lru
            .held()
            .map(|(_, m)| m)
            .filter(|m| m.kinds & KIND_PINNED != 0)
            .map(|m| m.size)
            .sum()
    }

    /// Deletes the temp files of fills that will never finish (their command was interrupted).
    pub(crate) fn clear_temp(&self) -> Result<(), CacheError> {
        Ok(self.store.clear_temp()?)
    }

    /// Waits until no fill is running (each has stored and recorded its blob, or failed).
    pub(crate) async fn settle(&self) {
        while self.metrics.fills_running() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn max_size(&self) -> u64 {
        self.max_size
    }
}
