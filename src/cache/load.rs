//! Loading verified content from outside (`entrepot import`): files already written and
//! checked against their digests under the cache's `tmp/`, moved into the store, then made
//! visible in one index transaction with their manifests' types, links, tags and referrers.
//!
//! Files first, index second: a crash between the two leaves files the index does not know,
//! which the next open hashes again and keeps as unlinked blobs, or deletes (`reconcile`). Imported content is pinned unless asked otherwise:
//! the LRU never evicts it (`lru.rs`), though its bytes count towards `max_size`.

use std::path::PathBuf;

use super::index::{Batch, KIND_BLOB, KIND_MANIFEST, KIND_PINNED, TagEntry};
use super::links::scope;
use super::lru::remove_victims;
use super::{Cache, CacheError, now_millis};
use crate::manifest::{descriptors, referrer_of};
use crate::reference::Digest;

/// Content to load, all of it verified.
#[derive(Default)]
pub(crate) struct Load {
    /// Every file the import brings, each once: its digest, its verified temp file (None when
    /// the cache already holds it), size, and whether it is a manifest (else a blob).
    pub(crate) files: Vec<(Digest, Option<PathBuf>, u64, bool)>,
    /// Manifests per repository: upstream, repository, digest, media type, bytes.
    pub(crate) manifests: Vec<(String, String, Digest, String, bytes::Bytes)>,
    /// Tags: upstream, repository, tag, digest.
    pub(crate) tags: Vec<(String, String, String, Digest)>,
    /// Pin what is loaded (never evicted by the LRU).
    pub(crate) pin: bool,
}

impl Cache {
    /// A fresh temp path for content on its way in.
    pub(crate) fn temp_path(&self, digest: &Digest) -> PathBuf {
        self.store.temp_path(digest)
    }

    /// Moves verified files into the store and records everything in one transaction, then
    /// evicts unpinned content if the cache is now over `max_size`. Blocking.
    ///
    /// The temp files were written without a sync each: one filesystem sync makes them durable
    /// before any is renamed into place (a name promises its content), and a second makes the
    /// renames durable before the index records them. Two syncs per import, not two per file.
    pub(crate) fn load(&self, load: Load) -> Result<(), CacheError> {
        if load.files.iter().any(|(_, temp, _, _)| temp.is_some()) {
            self.store.sync()?;
            for (digest, temp, _, _) in &load.files {
                if let Some(temp) = temp {
                    self.store.commit_unsynced(temp, digest)?;
                }
            }
            self.store.sync()?;
        }
        let now = now_millis();
        let pin = if load.pin { KIND_PINNED } else { 0 };
        let mut batch = Batch::default();
        {
            let mut s = self.lock();
            for (digest, temp, size, is_manifest) in &load.files {
                let kind = pin
                    | if *is_manifest {
                        KIND_MANIFEST
                    } else {
                        KIND_BLOB
                    };
                debug_assert!(temp.is_some() || s.lru.holds(digest));
                let meta = s.lru.record(digest, *size, kind, 0);
                batch.entries.push((digest.clone(), meta));
            }
            for (upstream, repo, digest, media_type, bytes) in &load.manifests {
                let scope = scope(upstream, repo);
                let listed = std::iter::once((digest.clone(), Some(bytes.len() as u64)))
                    .chain(descriptors(bytes));
                for (d, size) in listed {
                    s.add_link(&d, &scope, size);
                    batch.links.push((d, scope.as_str().to_owned(), size));
                }
                batch.manifests.push((
                    upstream.clone(),
                    repo.clone(),
                    digest.clone(),
                    media_type.clone(),
                ));
                if let Some((subject, descriptor)) = referrer_of(digest, media_type, bytes) {
                    batch.referrers.push((
                        subject,
                        scope.as_str().to_owned(),
                        digest.clone(),
                        descriptor,
                    ));
                }
            }
        }
        batch.tags = load
            .tags
            .into_iter()
            .map(|(u, r, t, digest)| {
                let entry = TagEntry {
                    digest,
                    checked_at_ms: now,
                };
                (u, r, t, entry)
            })
            .collect();
        self.index.write(&batch, now)?;
        let victims = self.lock().evict_to(self.low_watermark(), self.bound());
        remove_victims(&self.store, &self.index, &self.metrics, &victims, true)?;
        self.lock().lru.deleting = 0;
        Ok(())
    }
}
