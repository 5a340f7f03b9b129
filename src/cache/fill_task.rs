//! A fill runs in its own task, to the end even if every client leaves. It streams the upstream
//! body to the clients (from memory while they keep up) and to the hash and the temp file
//! (`fill_writer.rs`), reserving space as the bytes arrive (never more than it has received, so
//! a lying `Content-Length` evicts nothing), releases the last byte only once the digest has
//! matched, and then fsyncs and renames the file into place. Any failure ends every client's body
//! with an error and keeps nothing (ARCHITECTURE.md, invariants 1 and 2).
//!
//! A blob that cannot fit (its length is more than `max_size`) is streamed through: no file, and
//! the upstream is read at the pace of the slowest client. One of unknown length that grows past
//! `max_size` fails. Either way the bytes under the cache never pass `max_size` (ARCHITECTURE.md, invariant 4).

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::buffers::{BUFFER_SIZE, Buffer};
use super::fill::Outcome;
use super::fill_writer::{FillWriter, PendingWrites};
use super::fills::{FillPermit, Progress};
use super::index::{Batch, KIND_BLOB};
use super::links::scope;
use super::source::FillSource;
use super::{Cache, CacheError, Fill, blocking};
use crate::metrics::Content;
use crate::reference::{Hasher, RepoName};
use crate::upstream::{Upstream, UpstreamError};

/// Size of the writes a fill makes to its temp file (and of the steps readers see it grow by).
pub(super) const FILL_WRITE_CHUNK: usize = BUFFER_SIZE;

/// Memory for every fill's chunks together (in memory for clients, queued for the hash and the
/// disk): 32 cold fills at once stay within it (the README's peak RSS figure).
pub(super) const FILL_MEMORY: usize = 48 << 20;

/// A blob fetched and verified, ready to be committed.
struct Fetched {
    size: u64,
    /// False for a blob larger than the whole cache, or one the disk had no room left for:
    /// served, not kept.
    keep: bool,
    /// Bytes reserved for it in the cache's accounting.
    reserved: u64,
    /// The temp file's writes, which may still be going on.
    writes: PendingWrites,
}

impl Cache {
    /// Forgets a fill in flight (if it is still the one for its digest), so the next client of
    /// that digest starts another.
    pub(super) fn forget_fill(&self, fill: &Arc<Fill>) {
        self.lock().fills.forget(fill);
    }

    /// Runs a fill to its end: fetched, verified and kept, or failed with nothing kept.
    pub(super) async fn run_fill(
        self: Arc<Self>,
        up: Arc<Upstream>,
        repo: RepoName,
        mut permit: FillPermit,
    ) {
        let fetched = self.fetch_into(&up, &repo, &mut permit).await;
        let (fill, tx) = (permit.fill.clone(), permit.tx.clone());
        let (result, verified) = match fetched {
            Ok(fetched) => {
                // The digest matched: every client may have its last byte now, before the fsync
                // and rename, which only decide whether the cache keeps the file.
                tx.send_modify(|s| {
                    s.total = Some(fetched.size);
                    s.outcome = Outcome::Verified;
                });
                let kept = self.keep_fill(&up, &repo, &fill, fetched).await;
                if kept.is_ok() && !permit.shared {
                    self.share_blob(&fill.digest).await;
                }
                (kept, true)
            }
            Err(e) => (Err(e), false),
        };
        if let Err(e) = &result
            && permit.shared
            && !verified
        {
            // The shared tier's copy is wrong (or unreadable): the next fill asks the upstream,
            // whose verified copy then replaces it there.
            self.lock().shared_refused.insert(fill.digest.clone());
            self.metrics.shared("get_blob", "corrupt");
            tracing::warn!(digest = %fill.digest, error = %e, "shared tier copy refused");
        }
        match result {
            Ok(()) => permit.finish(),
            Err(e) => self.fill_failed(&up, permit, e, verified).await,
        }
    }

    /// Logs and counts a failed fill, and ends it (`FillPermit::fail`): after the digest matched
    /// (`verified`), clients keep what they have and only keeping it failed. (A failed disk write
    /// has already ended the readers that needed the file.)
    async fn fill_failed(&self, up: &Upstream, permit: FillPermit, e: CacheError, verified: bool) {
        let digest = &permit.fill.digest;
        if matches!(e, CacheError::Abandoned) {
            tracing::info!(%digest, upstream = %up.name, "every client left a blob too large to keep: stopped streaming it");
        } else {
            self.metrics.fill_failed(e.failure_reason());
            tracing::warn!(%digest, upstream = %up.name, origin = %e.origin(), error = %e, "fill failed; nothing kept");
        }
        permit.fail(e, verified).await;
    }

    /// Fetches the blob into the fill's temp file (or only through memory, if it cannot fit),
    /// hashing as it goes, and checks its length and digest. The permit learns where the bytes
    /// came from and counts the bytes reserved so far, to give back if this fails.
    async fn fetch_into(
        self: &Arc<Self>,
        up: &Upstream,
        repo: &RepoName,
        permit: &mut FillPermit,
    ) -> Result<Fetched, CacheError> {
        let FillPermit {
            fill,
            tx,
            reserved,
            shared,
            ..
        } = permit;
        let digest = &fill.digest;
        let mut body = self.blob_source(up, repo, digest).await?;
        *shared = body.is_shared();
        let source = body.name(up);
        let length = body.content_length();
        // A manifest the cache holds may already say how long this blob is.
        let expected = self.lock().link_size(digest, &fill.scope);
        if let (Some(e), Some(l)) = (expected, length)
            && e != l
        {
            return Err(bad_response(
                &source,
                format!("blob Content-Length is {l}, but its manifest says {e} bytes"),
            ));
        }
        let total = length.or(expected);
        let keep = self.fits(total).await;
        if !keep {
            // Nothing will be written: the temp file goes now, and the next client of this
            // digest starts its own fill rather than joining one that keeps no bytes behind it.
            fill.remove_temp().await;
            self.forget_fill(fill);
        }
        tx.send_modify(|s| s.total = total);
        let mut intake = Intake {
            cache: self,
            up: (!*shared).then_some(up),
            fill,
            tx,
            writer: FillWriter::start(
                keep.then(|| fill.file()).transpose()?,
                Hasher::new(digest.algorithm()),
                tx.clone(),
                {
                    let cache = self.clone();
                    Box::new(move || cache.make_room_after_full(Content::Blob))
                },
            ),
            received: 0,
            reserved,
            keep,
        };
        intake.take_body(&mut body, total, &source).await?;
        let (hasher, pos, writes) = intake.writer.finish().await?;
        let (keep, reserved) = (intake.keep, *intake.reserved);
        if let Some(t) = total
            && pos != t
        {
            return Err(bad_response(
                &source,
                format!("blob body has {pos} bytes, its Content-Length (or manifest) said {t}"),
            ));
        }
        if &hasher.finish() != digest {
            return Err(CacheError::DigestMismatch {
                upstream: source,
                digest: digest.clone(),
            });
        }
        Ok(Fetched {
            size: pos,
            keep,
            reserved,
            writes,
        })
    }

    /// Whether a blob of `total` bytes (None: not known yet) can be kept: at most the bound. One
    /// that looks too large is measured against the filesystem again first (space may have come
    /// back since the last measure).
    async fn fits(self: &Arc<Self>, total: Option<u64>) -> bool {
        let Some(t) = total else { return true };
        if t <= self.bound() {
            return true;
        }
        if t > self.max_size {
            return false;
        }
        let cache = self.clone();
        let _ = blocking(move || cache.measure_room()).await;
        t <= self.bound()
    }

    /// Hands a blob just fetched from the upstream and kept to the shared tier (if there is one),
    /// from its stored file, in the background.
    async fn share_blob(&self, digest: &crate::reference::Digest) {
        let Some(shared) = &self.shared else { return };
        let path = self.store.path(digest);
        if let Ok(file) = blocking(move || std::fs::File::open(path)).await {
            shared.upload_blob(digest.clone(), file);
        }
    }

    /// A verified fill: fsync and rename into place (if it fits), and record it.
    async fn keep_fill(
        &self,
        up: &Upstream,
        repo: &RepoName,
        fill: &Arc<Fill>,
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
            tracing::info!(%digest, size, max_size = self.max_size, bound = self.bound(), "blob streamed through, not kept: larger than the cache, or no room was left");
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
        // The repository that fetched it is linked to it before anyone can see it stored.
        let scope = scope(&up.name, repo);
        let (meta, new_link) = {
            let mut s = self.lock();
            let new_link = s.add_link(&digest, &scope, Some(size));
            (s.lru.record(&digest, size, KIND_BLOB, reserved), new_link)
        };
        self.forget_fill(fill);
        // The file is verified and in place; if the index write fails, the next start forgets
        // the file, which costs a refetch and nothing else.
        // One transaction (one commit, one fsync, shared with the fills that end beside it:
        // `commits.rs`) for the entry, its link and the repository.
        let batch = Batch {
            entries: vec![(digest.clone(), meta)],
            links: new_link
                .then(|| (digest.clone(), scope.as_str().to_owned(), Some(size)))
                .into_iter()
                .collect(),
            repos: vec![(up.name.clone(), repo.to_string())],
            ..Batch::default()
        };
        let recorded = self.commits.write(&self.index, batch).await;
        if let Err(e) = recorded {
            tracing::error!(%digest, error = %e, "could not record a stored blob in the index");
        }
        self.publish_size();
        Ok(())
    }
}

/// The body of one fill as it arrives: each chunk is given space (or, streamed through, waits
/// for the clients), then goes to the clients, the hash and the disk.
struct Intake<'a> {
    cache: &'a Cache,
    /// The upstream whose bytes these are (None: the shared tier's).
    up: Option<&'a Upstream>,
    fill: &'a Arc<Fill>,
    tx: &'a Progress,
    writer: FillWriter,
    received: u64,
    reserved: &'a mut u64,
    keep: bool,
}

impl Intake<'_> {
    /// Takes the body's chunks in writes of exactly [`FILL_WRITE_CHUNK`] bytes, refusing a body
    /// longer than `total` (or, kept, than the cache).
    async fn take_body(
        &mut self,
        body: &mut FillSource,
        total: Option<u64>,
        source: &str,
    ) -> Result<(), CacheError> {
        let mut buf: Option<Chunk> = None;
        while let Some(c) = body.chunk().await? {
            let buffered = buf.as_ref().map_or(0, |b| b.data.len());
            let arrived = self.received + (buffered + c.len()) as u64;
            if total.is_some_and(|t| arrived > t) {
                return Err(bad_response(
                    source,
                    "blob body longer than its Content-Length (or its manifest's size)".into(),
                ));
            }
            if total.is_none() && arrived > self.cache.max_size {
                return Err(bad_response(
                    source,
                    format!(
                        "blob without a Content-Length grew past the cache's max_size ({} bytes)",
                        self.cache.max_size
                    ),
                ));
            }
            // The room left shrank below the blob (the disk filled), or one of unknown length
            // grew past it: served all the same, not kept.
            if arrived > self.cache.bound() && self.keep {
                self.pass_through("the room left is smaller than the blob")
                    .await;
            }
            // Exactly FILL_WRITE_CHUNK bytes a chunk: a buffer never grows past what it was
            // given from the budget.
            let mut rest = &c[..];
            while !rest.is_empty() {
                let b = match &mut buf {
                    Some(b) => b,
                    None => buf.insert(self.new_chunk().await),
                };
                let took = b.data.extend(rest);
                rest = &rest[took..];
                if b.data.is_full()
                    && let Some(full) = buf.take()
                {
                    self.hand_over(full).await?;
                }
            }
        }
        if let Some(last) = buf.take() {
            self.hand_over(last).await?;
        }
        Ok(())
    }
}

/// One chunk's buffer, holding its share of the fills' memory budget until every copy of it
/// (in the ring, the queues, a client's response) is gone.
struct Chunk {
    data: Buffer,
    _budget: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self.data.filled()
    }
}

impl Intake<'_> {
    /// An empty chunk buffer, once the budget allows one. A fill that must wait first lets go of
    /// its chunks in memory (its clients read the file instead), so fills waiting on each other
    /// always free what they wait for. Streamed through, a fill has no file to fall back on: its
    /// few chunks are outside the budget.
    async fn new_chunk(&self) -> Chunk {
        let budget = if self.keep {
            let memory = self.cache.fill_memory.clone();
            match memory.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.fill.forget_recent();
                    memory.acquire_owned().await.ok()
                }
            }
        } else {
            None
        };
        Chunk {
            data: Buffer::take(),
            _budget: budget,
        }
    }

    async fn hand_over(&mut self, chunk: Chunk) -> Result<(), CacheError> {
        let len = chunk.data.len() as u64;
        if self.keep {
            // Space for what has arrived, never for what the upstream says will.
            match self.cache.reserve(len).await {
                Ok(_) => *self.reserved += len,
                Err(CacheError::NoRoom(_)) => self.pass_through("no room was made").await,
                Err(e) => return Err(e),
            }
        }
        if !self.keep && !self.fill.make_room().await {
            return Err(CacheError::Abandoned);
        }
        let data = Bytes::from_owner(chunk);
        self.fill.remember(self.received, data.clone());
        self.received += len;
        if let Some(up) = self.up {
            self.cache.metrics.upstream_bytes(&up.name, len);
        }
        let received = self.received;
        self.tx.send_modify(|s| s.received = received);
        match self.writer.push(data).await {
            // The disk filled and eviction freed nothing (the writer has tried).
            Err(e) if self.keep && super::room::is_full(&e) => {
                self.pass_through("the disk is full").await;
                Ok(())
            }
            written => Ok(written?),
        }
    }

    /// Stops keeping the blob midway, for want of space, and serves the rest of it to its
    /// clients from memory, at the slowest one's pace, as a blob too large for the cache is:
    /// the file takes no more bytes and its name goes, the reservation is given back, and the
    /// next client of the digest starts a fill of its own. A client that had fallen behind onto
    /// bytes no longer in memory nor written ends in an error; the others get every byte.
    async fn pass_through(&mut self, why: &'static str) {
        self.keep = false;
        self.writer.stop_writing().await;
        self.tx.send_modify(|s| s.disk_stopped = true);
        self.cache.release(std::mem::take(&mut *self.reserved));
        self.fill.remove_temp().await;
        self.cache.forget_fill(self.fill);
        self.cache.metrics.disk_full(Content::Blob);
        tracing::warn!(
            digest = %self.fill.digest,
            received = self.received,
            why,
            "cannot keep this blob: passing the rest of it through uncached"
        );
    }
}

/// The upstream sent something that cannot be the blob asked for.
fn bad_response(source: &str, reason: String) -> CacheError {
    CacheError::Upstream(UpstreamError::BadResponse {
        upstream: source.to_owned(),
        reason,
    })
}
