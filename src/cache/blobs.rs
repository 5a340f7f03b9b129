//! Blobs: answered from the store when held, else from a [`Fill`] that one upstream fetch feeds
//! for every client that asks meanwhile.
//!
//! A fill runs in its own task, to the end even if every client leaves. It reserves space for the
//! blob, streams the upstream body to the clients (from memory while they keep up) and to the
//! hash and the temp file (`fill_writer.rs`), releases the last byte only once the digest has
//! matched, and then fsyncs and renames the file into place. Any failure ends every client's body
//! with an error and keeps nothing (ARCHITECTURE.md, invariants 1 and 2).

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::fill::{FillState, Outcome};
use super::fill_writer::{FillWriter, PendingWrites};
use super::index::KIND_BLOB;
use super::{Cache, CacheError, Fill, blocking, now_millis};
use crate::metrics::{Lookup, LookupResult};
use crate::reference::{Digest, Hasher, RepoName};
use crate::upstream::{BlobBody, Upstream, UpstreamError};

/// Size of the writes a fill makes to its temp file (and of the steps readers see it grow by).
const FILL_WRITE_CHUNK: usize = 256 * 1024;

/// A blob to serve: a stored file, or a fill in progress.
pub(crate) enum BlobSource {
    Stored {
        file: std::fs::File,
        size: u64,
    },
    Filling {
        fill: Arc<Fill>,
        file: std::fs::File,
    },
}

/// A blob fetched and verified, ready to be committed.
struct Fetched {
    size: u64,
    /// False for a blob larger than the whole cache: served, not kept.
    keep: bool,
    /// Bytes reserved for it in the cache's accounting.
    reserved: u64,
    /// The temp file's writes, which may still be going on.
    writes: PendingWrites,
}

type Progress = Arc<watch::Sender<FillState>>;

impl Cache {
    /// The size of a blob without fetching it: from the store, a fill in flight, or an upstream
    /// HEAD.
    pub(crate) async fn blob_size(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64, Arc<CacheError>> {
        let fill = {
            let s = self.lock();
            match s.entries.get(digest) {
                Some(m) if m.kinds & KIND_BLOB != 0 => {
                    self.metrics.lookup(Lookup::Blob, LookupResult::Hit);
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
        up.head_blob(repo, digest)
            .await
            .map_err(|e| Arc::new(CacheError::Upstream(e)))
    }

    /// A blob to stream: the stored file if we have it, else a fill (joined if one is in flight,
    /// started otherwise). The upstream fetch runs to the end even if every client leaves.
    pub(crate) fn blob(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<BlobSource, CacheError> {
        let mut s = self.lock();
        if let Some(&meta) = s.entries.get(digest) {
            if meta.kinds & KIND_BLOB == 0 {
                return Err(CacheError::NotABlob(digest.clone()));
            }
            match std::fs::File::open(self.store.path(digest)) {
                Ok(file) => {
                    s.touch(digest);
                    let size = meta.size;
                    self.metrics.lookup(Lookup::Blob, LookupResult::Hit);
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
            self.metrics.lookup(Lookup::Blob, LookupResult::Join);
            let file = fill.file()?;
            return Ok(BlobSource::Filling {
                fill: fill.clone(),
                file,
            });
        }
        self.metrics.lookup(Lookup::Blob, LookupResult::Miss);
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
        tx: Progress,
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
            self.metrics.fill_failed(e.failure_reason());
            tracing::warn!(digest = %fill.digest, upstream = %up.name, origin = %e.origin(), error = %e, "fill failed; nothing kept");
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

    /// Fetches the blob into the fill's temp file, hashing as it goes, and checks its length
    /// and digest.
    async fn fetch_into(
        &self,
        up: &Upstream,
        repo: &RepoName,
        fill: &Fill,
        tx: &Progress,
        reserved: &mut u64,
    ) -> Result<Fetched, CacheError> {
        let digest = &fill.digest;
        let mut body = up.get_blob(repo, digest).await?;
        let total = body.content_length();
        let mut keep = true;
        if let Some(t) = total {
            keep = self.reserve(t).await?;
            if keep {
                *reserved = t;
            }
        }
        tx.send_modify(|s| s.total = total);
        let (hasher, pos, writes) = self.receive(up, fill, tx, &mut body, total).await?;
        if let Some(t) = total {
            if pos != t {
                return Err(bad_response(
                    up,
                    format!("blob body has {pos} bytes, Content-Length said {t}"),
                ));
            }
        } else {
            keep = self.reserve(pos).await?;
            if keep {
                *reserved = pos;
            }
        }
        if &hasher.finish() != digest {
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

    /// Streams the upstream body into the fill: readers may have each chunk from memory at once;
    /// the writer hashes it and puts it on disk meanwhile. Returns the hash, the length and the
    /// writes still going on.
    async fn receive(
        &self,
        up: &Upstream,
        fill: &Fill,
        tx: &Progress,
        body: &mut BlobBody,
        total: Option<u64>,
    ) -> Result<(Hasher, u64, PendingWrites), CacheError> {
        let mut writer = FillWriter::start(
            fill.file()?,
            Hasher::new(fill.digest.algorithm()),
            tx.clone(),
        );
        let mut buf: Vec<u8> = Vec::with_capacity(FILL_WRITE_CHUNK);
        let mut received = 0u64;
        let mut hand_over = |data: Vec<u8>| {
            let data = Bytes::from(data);
            fill.remember(received, data.clone());
            received += data.len() as u64;
            self.metrics.upstream_bytes(&up.name, data.len() as u64);
            tx.send_modify(|s| s.received = received);
            data
        };
        while let Some(c) = body.chunk().await? {
            if total.is_some_and(|t| writer.queued() + (buf.len() + c.len()) as u64 > t) {
                return Err(bad_response(
                    up,
                    "blob body longer than its Content-Length".into(),
                ));
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
        Ok(writer.finish().await?)
    }

    /// A verified fill: fsync and rename into place (if it fits), and record it.
    async fn keep_fill(
        &self,
        up: &Upstream,
        repo: &RepoName,
        fill: &Fill,
        fetched: Fetched,
    ) -> Result<(), CacheError> {
        let Fetched {
            size,
            keep,
            reserved,
            writes,
        } = fetched;
        let digest = fill.digest.clone();
        if !keep {
            tracing::info!(%digest, size, max_size = self.max_size, "blob larger than the cache: served, not kept");
            let _ = std::fs::remove_file(&fill.temp_path);
            self.lock().fills.remove(&digest);
            return Ok(());
        }
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
            .and_then(|()| self.index.note_repo(&up.name, repo.as_str(), now_millis()));
        if let Err(e) = recorded {
            tracing::error!(%digest, error = %e, "could not record a stored blob in the index");
        }
        self.publish_size();
        Ok(())
    }
}

/// The upstream sent something that cannot be the blob asked for.
fn bad_response(up: &Upstream, reason: String) -> CacheError {
    CacheError::Upstream(UpstreamError::BadResponse {
        upstream: up.name.clone(),
        reason,
    })
}
