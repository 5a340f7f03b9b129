//! Loading verified content from outside (`entrepot import`): files already written and
//! checked against their digests under the cache's `tmp/`, moved into the store, then made
//! visible in index transactions of a bounded size with their manifests' types, links, tags and
//! referrers, each holding whole images (a tag is written in the transaction that writes what
//! it names).
//!
//! Files first, index second: a crash between the two leaves files the index does not know,
//! which the next open hashes again and keeps as unlinked blobs, or deletes (`reconcile`). A
//! crash between two parts leaves the images of the parts written, whole, and the rest not:
//! importing again finishes it. Imported content is pinned unless asked otherwise: the LRU
//! never evicts it (`lru.rs`), though its bytes count towards `max_size`.
//!
//! `entrepot import` loads through a [`Loader`]: the index and the store without the records
//! `serve` holds in memory (about 100 bytes a digest, and a pass over every entry and link), so
//! that an import's memory follows its archive, not the cache it goes into. What it asks of the
//! cache (is this digest held, what is pinned) it asks the index.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::index::{Batch, EntryMeta, Index, KIND_BLOB, KIND_MANIFEST, KIND_PINNED, TagEntry};
use super::links::scope;
use super::store::BlobStore;
use super::{CacheError, now_millis, room};
use crate::manifest::{descriptors, referrer_of};
use crate::reference::Digest;

/// Content to load, all of it verified and its files in the store: one part of an import,
/// written in one index transaction.
#[derive(Default)]
pub(crate) struct Load {
    /// Every file the part brings, each once: its digest, size, and whether it is a manifest
    /// (else a blob).
    pub(crate) files: Vec<(Digest, u64, bool)>,
    /// Manifests per repository: upstream, repository, digest, media type, bytes.
    pub(crate) manifests: Vec<(String, String, Digest, String, bytes::Bytes)>,
    /// Tags: upstream, repository, tag, digest.
    pub(crate) tags: Vec<(String, String, String, Digest)>,
    /// Pin what is loaded (never evicted by the LRU).
    pub(crate) pin: bool,
}

/// The cache opened to load content into, without its records in memory (`entrepot import`).
pub(crate) struct Loader {
    index: Index,
    store: BlobStore,
    max_size: u64,
    /// Bytes of every entry (counted up as parts load), and of the pinned ones when it was
    /// opened.
    held: AtomicU64,
    pinned: u64,
}

/// redb's page cache for a [`Loader`]: its reads are one lookup per digest and one pass, and
/// its one write transaction keeps its own pages in memory until it commits.
const LOADER_PAGE_CACHE: u64 = 4 << 20;

impl Loader {
    /// Opens the cache in `dir` (made if missing) to load into: the index (whose lock keeps
    /// `serve` and other commands out meanwhile) and the store, its `tmp/` emptied. Reads every
    /// entry once for what is held and pinned, and keeps none of them. Blocking.
    pub(crate) fn open(dir: &Path, max_size: u64) -> Result<Loader, CacheError> {
        std::fs::create_dir_all(dir)?;
        let index = Index::open_with_cache(&dir.join("index.redb"), LOADER_PAGE_CACHE)?;
        let store = BlobStore::open(dir)?;
        let (held, pinned) = index.held_bytes()?;
        Ok(Loader {
            index,
            store,
            max_size,
            held: AtomicU64::new(held),
            pinned,
        })
    }

    pub(crate) fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Bytes held pinned (imported), which the LRU never evicts.
    pub(crate) fn pinned_bytes(&self) -> u64 {
        self.pinned
    }

    /// The size of `digest` if the cache holds it. An index that cannot be read holds nothing
    /// here: the content is copied again, and the load's own write says what is wrong.
    pub(crate) fn holds(&self, digest: &Digest) -> Option<u64> {
        self.entry(digest).map(|m| m.size)
    }

    /// Whether the cache holds `digest`, and if so whether it is pinned.
    pub(crate) fn holds_pinned(&self, digest: &Digest) -> Option<bool> {
        self.entry(digest).map(|m| m.kinds & KIND_PINNED != 0)
    }

    /// Where a held file is, and its size.
    pub(crate) fn stored_file(&self, digest: &Digest) -> Option<(PathBuf, u64)> {
        self.holds(digest)
            .map(|size| (self.store.path(digest), size))
    }

    /// The temp path of `digest`'s content on its way in: one per digest, as an import copies
    /// each digest once (the cache's lock keeps every other process out of `tmp/`).
    pub(crate) fn temp_path(&self, digest: &Digest) -> PathBuf {
        self.store.import_temp_path(digest)
    }

    /// Where the store keeps `digest`'s content (whether or not it is there).
    pub(crate) fn store_path(&self, digest: &Digest) -> PathBuf {
        self.store.path(digest)
    }

    fn entry(&self, digest: &Digest) -> Option<EntryMeta> {
        self.index.entry(digest).ok().flatten()
    }

    /// Makes the verified copies of `digests` (at [`Loader::temp_path`]) durable and moves
    /// them into place, before any index transaction names them.
    ///
    /// The copies were written without a sync each: one filesystem sync makes them durable
    /// before any is renamed into place (a name promises its content), and a second makes the
    /// renames durable before the index records them. Two syncs per import, not two per file.
    /// Blocking.
    pub(crate) fn commit_copies<'d>(
        &self,
        digests: impl Iterator<Item = &'d Digest>,
    ) -> Result<(), CacheError> {
        let mut digests = digests.peekable();
        if digests.peek().is_none() {
            return Ok(());
        }
        self.store.sync()?;
        for digest in digests {
            self.store
                .commit_unsynced(&self.store.import_temp_path(digest), digest)?;
        }
        self.store.sync()?;
        Ok(())
    }

    /// Records one part of an import, its files already in the store, in one transaction.
    /// An import writes its images in parts of a bounded size, so that neither it nor redb
    /// holds the whole archive's records at once; each part holds whole images (a tag is
    /// written with everything it names). Blocking.
    pub(crate) fn load(&self, load: Load) -> Result<(), CacheError> {
        let now = now_millis();
        let mut batch = Batch::default();
        let mut added = 0;
        for (digest, size, is_manifest) in &load.files {
            // As the records would: a held entry keeps its size and gains the kind.
            let kind = kind_of(load.pin, *is_manifest);
            let (size, kinds) = match self.index.entry(digest)? {
                Some(held) => (held.size, held.kinds | kind),
                None => {
                    added += size;
                    (*size, kind)
                }
            };
            let meta = EntryMeta {
                size,
                last_access_ms: now,
                kinds,
            };
            batch.entries.push((digest.clone(), meta));
        }
        add_manifests(&load.manifests, &mut batch);
        batch.tags = tags_of(load.tags, now);
        self.index.write(&batch, now)?;
        self.held.fetch_add(added, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the cache is over its bound now (unpinned content loaded), which a cache opened
    /// whole mends: it evicts at open, down to its low-water mark. Blocking.
    pub(crate) fn over_bound(&self) -> Result<bool, CacheError> {
        let held = self.held.load(Ordering::Relaxed);
        let bound = room::bound_of(
            self.store.tmp_dir(),
            held,
            self.max_size,
            self.index.file_size(),
        )?;
        Ok(held > bound)
    }
}

fn kind_of(pin: bool, is_manifest: bool) -> u8 {
    let pin = if pin { KIND_PINNED } else { 0 };
    pin | if is_manifest {
        KIND_MANIFEST
    } else {
        KIND_BLOB
    }
}

/// The manifests' types, links and referrers into `batch`.
fn add_manifests(manifests: &[(String, String, Digest, String, bytes::Bytes)], batch: &mut Batch) {
    for (upstream, repo, digest, media_type, bytes) in manifests {
        let scope = scope(upstream, repo);
        let listed =
            std::iter::once((digest.clone(), Some(bytes.len() as u64))).chain(descriptors(bytes));
        for (d, size) in listed {
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

fn tags_of(
    tags: Vec<(String, String, String, Digest)>,
    now: u64,
) -> Vec<(String, String, String, TagEntry)> {
    tags.into_iter()
        .map(|(u, r, t, digest)| {
            let entry = TagEntry {
                digest,
                checked_at_ms: now,
            };
            (u, r, t, entry)
        })
        .collect()
}
