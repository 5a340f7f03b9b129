//! Blob lookups: answered from the store when held and linked to the repository asking
//! (`links.rs`), else from a [`Fill`] that one upstream fetch feeds for every client that asks
//! meanwhile (`fill_task.rs` runs it). File opens and temp-file creation run on the blocking pool;
//! nothing here holds the cache's lock across a system call.

use std::sync::Arc;

use super::fill::Reader;
use super::fills::FillPermit;
use super::index::KIND_BLOB;
use super::links::{Scope, scope};
use super::{Cache, CacheError, Fill, blocking};
use crate::metrics::{Lookup, LookupResult};
use crate::reference::{Digest, RepoName};
use crate::upstream::{Resource, Upstream, UpstreamError};

/// A blob to serve: a stored file, or a fill in progress.
pub(crate) enum Blob {
    Stored { file: std::fs::File, size: u64 },
    Filling { reader: Reader, file: std::fs::File },
}

/// What a blob lookup found, under the lock.
enum Found {
    Stored(u64),
    Filling(Reader),
    /// Held or in flight, but not (yet) linked to the repository asking.
    Unlinked,
    Nothing,
}

impl Cache {
    /// The size of a blob without fetching it: from the store or a fill in flight (if this
    /// repository may see it), else an upstream HEAD, whose 200 links a stored blob to the
    /// repository.
    pub(crate) async fn blob_size(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64, Arc<CacheError>> {
        let scope = scope(&up.name, repo);
        let (fill, stored) = {
            let s = self.lock();
            let linked = s.has_link(digest, &scope);
            match s.lru.get(digest) {
                Some(m) if m.kinds & KIND_BLOB == 0 => {
                    return Err(Arc::new(CacheError::NotABlob(digest.clone())));
                }
                Some(m) if linked => {
                    self.metrics.lookup(Lookup::Blob, LookupResult::Hit);
                    return Ok(m.size);
                }
                Some(_) => (None, true),
                None => {
                    let fill = s.fills.get(digest).filter(|f| linked || f.scope == scope);
                    (fill.cloned(), false)
                }
            }
        };
        if let Some(fill) = fill {
            // A failed fill's error is shared by everyone who asked about it.
            return fill.total().await;
        }
        let size = up
            .head_blob(repo, digest)
            .await
            .map_err(|e| Arc::new(CacheError::Upstream(e)))?;
        if stored {
            self.link(&up.name, repo, [(digest.clone(), None)])
                .await
                .map_err(Arc::new)?;
        }
        Ok(size)
    }

    /// A blob to stream: the stored file if we have it, else a fill (joined if one is in flight,
    /// started otherwise). The upstream fetch runs to the end even if every client leaves.
    /// Content this repository is not linked to is first confirmed with an upstream HEAD.
    pub(crate) async fn blob(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Blob, CacheError> {
        let scope = scope(&up.name, repo);
        let mut confirmed = false;
        loop {
            let found = {
                let s = self.lock();
                let linked = confirmed || s.has_link(digest, &scope);
                match (s.lru.get(digest), s.fills.get(digest)) {
                    (Some(m), _) if m.kinds & KIND_BLOB == 0 => {
                        return Err(CacheError::NotABlob(digest.clone()));
                    }
                    (Some(m), _) if linked => Found::Stored(m.size),
                    (None, Some(f)) if linked || f.scope == scope => Found::Filling(f.join()),
                    (None, None) => Found::Nothing,
                    _ => Found::Unlinked,
                }
            };
            match found {
                Found::Unlinked => {
                    up.head_blob(repo, digest).await?;
                    self.link(&up.name, repo, [(digest.clone(), None)]).await?;
                    confirmed = true;
                }
                Found::Stored(size) => {
                    if let Some(file) = self.open_stored(digest).await {
                        self.lock().lru.touch(digest);
                        self.metrics.lookup(Lookup::Blob, LookupResult::Hit);
                        return Ok(Blob::Stored { file, size });
                    }
                }
                Found::Filling(reader) => {
                    self.metrics.lookup(Lookup::Blob, LookupResult::Join);
                    let file = reader.fill().file()?;
                    return Ok(Blob::Filling { reader, file });
                }
                Found::Nothing if up.offline => {
                    // No fill, no temp file: there is nowhere to fetch from.
                    return Err(CacheError::Upstream(UpstreamError::Offline {
                        upstream: up.name.clone(),
                        what: Resource::Blob,
                    }));
                }
                Found::Nothing => {
                    if let Some(source) = self.start_fill(up, repo, digest, scope.clone()).await? {
                        return Ok(source);
                    }
                }
            }
        }
    }

    /// Opens a stored blob: on the worker when that cannot block (`BlobStore::open_cached`),
    /// else on the blocking pool. One that cannot be opened is forgotten, to be fetched again.
    async fn open_stored(&self, digest: &Digest) -> Option<std::fs::File> {
        if let Some(file) = self.store.open_cached(digest) {
            return Some(file);
        }
        let path = self.store.path(digest);
        match blocking(move || std::fs::File::open(path)).await {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::error!(%digest, error = %e, "stored blob cannot be opened: fetching it again");
                self.lock().lru.forget(digest);
                None
            }
        }
    }

    /// Starts a fill (its temp file made on the blocking pool) and its task. None if another
    /// request started one, or stored the blob, meanwhile: the caller looks again.
    async fn start_fill(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &RepoName,
        digest: &Digest,
        scope: Scope,
    ) -> Result<Option<Blob>, CacheError> {
        let (d, temp) = (digest.clone(), self.store.temp_path(digest));
        let (fill, tx) = blocking(move || Fill::create(d, temp, scope)).await?;
        let reader = {
            let mut s = self.lock();
            if !s.lru.holds(digest) && s.fills.start(&fill) {
                Some(fill.join())
            } else {
                None
            }
        };
        let Some(reader) = reader else {
            fill.remove_temp().await;
            return Ok(None);
        };
        // From here the permit ends the fill however this function or the task ends.
        let permit = FillPermit::new(self.clone(), fill.clone(), tx);
        self.metrics.lookup(Lookup::Blob, LookupResult::Miss);
        let file = fill.file()?;
        let this = self.clone();
        let (up, repo) = (up.clone(), repo.clone());
        tokio::spawn(this.run_fill(up, repo, permit));
        Ok(Some(Blob::Filling { reader, file }))
    }
}
