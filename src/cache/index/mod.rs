//! The index: what the cache holds, in redb (an embedded, crash-safe, ACID key-value store).
//!
//! Tables:
//! - `entries`: digest -> size, last access, and whether it is a blob, a manifest or both;
//! - `manifests`: digest + upstream -> media type (a manifest is served per upstream);
//! - `tags`: upstream + repo + tag -> digest and when the upstream last confirmed it;
//! - `repos`: upstream + repo, for `_catalog`;
//! - `links`: digest + upstream + repo -> the size a manifest gave (or `u64::MAX`): which
//!   repositories may be served which cached content (`links.rs`);
//! - `referrers`: subject digest + upstream + repo + referrer digest -> the referrer's descriptor
//!   (JSON), so the referrers API can be answered from the cache offline (`batch.rs`).
//!
//! Keys join their parts with NUL, which no name, tag or digest can contain. Writes are small
//! transactions; access times reach the index in batches (see `Cache::flush_access_times`).

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::reference::Digest;

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const MANIFESTS: TableDefinition<&str, &str> = TableDefinition::new("manifests");
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
const REPOS: TableDefinition<&str, u64> = TableDefinition::new("repos");
const LINKS: TableDefinition<&str, u64> = TableDefinition::new("links");
const REFERRERS: TableDefinition<&str, &str> = TableDefinition::new("referrers");

mod batch;
pub(super) use batch::Batch;

/// A link's size when no manifest said one.
const NO_SIZE: u64 = u64::MAX;

/// The index's page cache: 1/256 of `max_size`, within these bounds. Its hot pages (tags, the
/// manifests clients ask for again) fit in far less; a uniform load over a million entries
/// misses any cache much smaller than the index (about 1 GB there) anyway, and start-up, which
/// reads every entry, would fill a larger one with pages nobody asks for again.
const MIN_PAGE_CACHE: u64 = 16 << 20;
const MAX_PAGE_CACHE: u64 = 64 << 20;

/// The page cache for a cache of `max_size` bytes.
pub(super) fn page_cache_for(max_size: u64) -> u64 {
    (max_size / 256).clamp(MIN_PAGE_CACHE, MAX_PAGE_CACHE)
}

/// Kinds an entry can be, as bit flags (one digest can be both).
pub(super) const KIND_BLOB: u8 = 1;
pub(super) const KIND_MANIFEST: u8 = 2;
/// Imported content: never evicted by the LRU (`entrepot import`, unless `--unpinned`).
pub(super) const KIND_PINNED: u8 = 4;

#[derive(Debug, thiserror::Error)]
#[error("index: {0}")]
pub(crate) struct IndexError(String);

fn ie(e: impl std::fmt::Display) -> IndexError {
    IndexError(e.to_string())
}

/// What the index knows of one stored file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EntryMeta {
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub last_access_ms: u64,
    pub kinds: u8,
}

impl EntryMeta {
    fn encode(&self) -> [u8; 17] {
        let mut b = [0u8; 17];
        b[..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..16].copy_from_slice(&self.last_access_ms.to_le_bytes());
        b[16] = self.kinds;
        b
    }

    fn decode(b: &[u8]) -> Option<EntryMeta> {
        (b.len() == 17).then(|| EntryMeta {
            size: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            last_access_ms: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            kinds: b[16],
        })
    }
}

/// A tag's cached answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TagEntry {
    pub digest: Digest,
    /// Milliseconds since the Unix epoch when the upstream last confirmed the mapping.
    pub checked_at_ms: u64,
}

impl TagEntry {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.checked_at_ms.to_le_bytes().to_vec();
        v.extend_from_slice(self.digest.to_string().as_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<TagEntry> {
        let checked_at_ms = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
        let digest = Digest::parse(std::str::from_utf8(&v[8..]).ok()?).ok()?;
        Some(TagEntry {
            digest,
            checked_at_ms,
        })
    }
}

/// The redb database, reopened after an I/O error: redb refuses every transaction after one
/// (`PreviousIo`, "close and re-open the database") and repairs itself when opened again, so
/// a disk that was full for a moment does not leave the index unwritable until a restart.
pub(super) struct Index {
    path: PathBuf,
    /// redb's page cache, in bytes.
    cache_bytes: usize,
    /// None while a reopen failed (the next transaction tries again).
    db: RwLock<Option<Database>>,
}

fn key(parts: &[&str]) -> String {
    parts.join("\0")
}

/// What redb says of every transaction after an I/O error.
fn previous_io(e: &redb::TransactionError) -> bool {
    matches!(
        e,
        redb::TransactionError::Storage(redb::StorageError::PreviousIo)
    )
}

impl Index {
    fn begin_write(&self) -> Result<redb::WriteTransaction, redb::TransactionError> {
        super::assert_off_the_workers();
        self.begin(Database::begin_write)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        super::assert_off_the_workers();
        self.begin(Database::begin_read)
    }

    /// Begins a transaction, reopening the database first if redb refuses it after an I/O error.
    fn begin<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, redb::TransactionError>,
    ) -> Result<T, redb::TransactionError> {
        let first = self.with_db(&begin);
        match first {
            Err(e) if previous_io(&e) => {
                self.reopen();
                self.with_db(&begin)
            }
            other => other,
        }
    }

    fn with_db<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, redb::TransactionError>,
    ) -> Result<T, redb::TransactionError> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        match db.as_ref() {
            Some(db) => begin(db),
            None => Err(redb::TransactionError::Storage(
                redb::StorageError::PreviousIo,
            )),
        }
    }

    /// Closes and opens the database again (redb repairs it on open). Transactions still in
    /// flight keep the file locked for a moment: it tries for up to a second.
    fn reopen(&self) {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = slot.as_ref()
            && !db.begin_read().is_err_and(|e| previous_io(&e))
            && !db.begin_write().is_err_and(|e| previous_io(&e))
        {
            return; // another thread reopened it meanwhile
        }
        *slot = None;
        for _ in 0..100 {
            match Database::builder()
                .set_cache_size(self.cache_bytes)
                .create(&self.path)
            {
                Ok(db) => {
                    tracing::warn!(path = %self.path.display(), "index reopened after an I/O error");
                    *slot = Some(db);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "index not reopened yet");
                    #[allow(
                        clippy::disallowed_methods,
                        reason = "a blocking-pool thread, waiting for the file lock"
                    )]
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        tracing::error!(path = %self.path.display(), "index could not be reopened after an I/O error: will try again");
    }

    #[cfg(test)]
    pub(super) fn open(path: &Path) -> Result<Index, IndexError> {
        Self::open_with_cache(path, MIN_PAGE_CACHE)
    }

    /// Opens the index with a page cache of `cache_bytes` (redb's default is 1 GiB, which a
    /// large index fills: memory the bound does not see).
    pub(super) fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Index, IndexError> {
        let cache_bytes = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => IndexError(format!(
                    "{} is in use by another entrepot process (a running `entrepot serve`?): \
                 only one process may use a cache directory at a time",
                    path.display()
                )),
                e => ie(e),
            })?;
        let tx = db.begin_write().map_err(ie)?;
        tx.open_table(ENTRIES).map_err(ie)?;
        tx.open_table(MANIFESTS).map_err(ie)?;
        tx.open_table(TAGS).map_err(ie)?;
        tx.open_table(REPOS).map_err(ie)?;
        tx.open_table(LINKS).map_err(ie)?;
        tx.open_table(REFERRERS).map_err(ie)?;
        tx.commit().map_err(ie)?;
        Ok(Index {
            path: path.to_owned(),
            cache_bytes,
            db: RwLock::new(Some(db)),
        })
    }

    /// The bytes of the index's file, which count towards `max_size` beside the stored files.
    /// Blocking.
    pub(super) fn file_size(&self) -> u64 {
        super::assert_off_the_workers();
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Gives the file's free pages back (redb's `compact`): after a year of eviction churn the
    /// file is mostly pages freed by removals, and its size counts towards `max_size`. Every
    /// transaction waits meanwhile (those already begun may end: it waits up to a second for
    /// them). Returns the file's size before and after, or None if a transaction still in
    /// flight kept it from compacting (try again later). Blocking.
    pub(super) fn compact(&self) -> Result<Option<(u64, u64)>, IndexError> {
        super::assert_off_the_workers();
        let before = self.file_size();
        {
            let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
            let Some(db) = slot.as_mut() else {
                return Ok(None);
            };
            let mut tries = 0;
            loop {
                match db.compact() {
                    Ok(_) => break,
                    Err(redb::CompactionError::TransactionInProgress) if tries < 100 => {
                        tries += 1;
                        #[allow(
                            clippy::disallowed_methods,
                            reason = "a blocking-pool thread, waiting for transactions to end"
                        )]
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(redb::CompactionError::TransactionInProgress) => return Ok(None),
                    Err(e) => return Err(ie(e)),
                }
            }
        }
        Ok(Some((before, self.file_size())))
    }

    /// A read transaction on the entries table: the database answers.
    pub(super) fn check(&self) -> Result<(), IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        tx.open_table(ENTRIES).map_err(ie)?;
        Ok(())
    }

    /// Every entry (the tests' view; start-up reads them one by one: `each_entry`).
    #[cfg(test)]
    pub(super) fn entries(&self) -> Result<Vec<(Digest, EntryMeta)>, IndexError> {
        let mut out = Vec::new();
        self.each_entry(|d, m| out.push((d, m)))?;
        Ok(out)
    }

    /// Gives every entry to `f` as it is read, without a list of them all in memory (a
    /// million at start-up), and says how many there are first.
    pub(super) fn each_entry(
        &self,
        mut f: impl FnMut(Digest, EntryMeta),
    ) -> Result<(), IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(ENTRIES).map_err(ie)?;
        for item in t.iter().map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            if let (Ok(d), Some(m)) = (Digest::parse(k.value()), EntryMeta::decode(v.value())) {
                f(d, m);
            }
        }
        Ok(())
    }

    /// How many entries the index has.
    pub(super) fn entry_count(&self) -> Result<u64, IndexError> {
        use redb::ReadableTableMetadata as _;
        let tx = self.begin_read().map_err(ie)?;
        tx.open_table(ENTRIES).map_err(ie)?.len().map_err(ie)
    }

    /// Records entries (new files, or batched access times).
    pub(super) fn put_entries(&self, entries: &[(Digest, EntryMeta)]) -> Result<(), IndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.begin_write().map_err(ie)?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(ie)?;
            for (d, m) in entries {
                t.insert(d.to_string().as_str(), m.encode().as_slice())
                    .map_err(ie)?;
            }
        }
        tx.commit().map_err(ie)
    }

    /// Forgets entries whose files are gone (evicted, or lost), with their manifest types and
    /// links.
    pub(super) fn remove_entries(&self, digests: &[Digest]) -> Result<(), IndexError> {
        let all: Vec<(&Digest, u8)> = digests.iter().map(|d| (d, KIND_MANIFEST)).collect();
        self.remove_entries_of(&all)
    }

    /// [`Index::remove_entries`] for entries whose kinds are known (evicted ones): a blob that
    /// was never a manifest has no manifest types and is no referrers' subject (a subject is a
    /// manifest), so only its entry and links are looked for. An eviction of tiny blobs removes
    /// tens of thousands of entries, while fills wait for their room.
    pub(super) fn remove_entries_of(&self, victims: &[(&Digest, u8)]) -> Result<(), IndexError> {
        if victims.is_empty() {
            return Ok(());
        }
        let tx = self.begin_write().map_err(ie)?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(ie)?;
            let mut m = tx.open_table(MANIFESTS).map_err(ie)?;
            let mut l = tx.open_table(LINKS).map_err(ie)?;
            let mut r = tx.open_table(REFERRERS).map_err(ie)?;
            for (d, kinds) in victims {
                let ds = d.to_string();
                t.remove(ds.as_str()).map_err(ie)?;
                let prefix = format!("{ds}\0");
                let end = format!("{ds}\u{1}");
                l.retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                    .map_err(ie)?;
                if kinds & KIND_MANIFEST != 0 {
                    m.retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                        .map_err(ie)?;
                    r.retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                        .map_err(ie)?;
                }
            }
        }
        tx.commit().map_err(ie)
    }

    /// Every link: digest, `upstream\0repo`, and the size a manifest gave.
    #[cfg(test)]
    pub(super) fn links(&self) -> Result<Vec<(Digest, String, Option<u64>)>, IndexError> {
        let mut out = Vec::new();
        self.each_link(|d, scope, size| out.push((d, scope.to_owned(), size)))?;
        Ok(out)
    }

    /// Gives every link (digest, `upstream\0repo`, size) to `f` as it is read.
    pub(super) fn each_link(
        &self,
        mut f: impl FnMut(Digest, &str, Option<u64>),
    ) -> Result<(), IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(LINKS).map_err(ie)?;
        for item in t.iter().map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            let Some((d, scope)) = k.value().split_once('\0') else {
                continue;
            };
            if let Ok(d) = Digest::parse(d) {
                f(d, scope, Some(v.value()).filter(|&s| s != NO_SIZE));
            }
        }
        Ok(())
    }

    /// Records links (digest, `upstream\0repo`, size) in one transaction.
    pub(super) fn put_links(
        &self,
        links: &[(Digest, String, Option<u64>)],
    ) -> Result<(), IndexError> {
        if links.is_empty() {
            return Ok(());
        }
        let tx = self.begin_write().map_err(ie)?;
        {
            let mut t = tx.open_table(LINKS).map_err(ie)?;
            for (d, scope, size) in links {
                t.insert(
                    key(&[&d.to_string(), scope]).as_str(),
                    size.unwrap_or(NO_SIZE),
                )
                .map_err(ie)?;
            }
        }
        tx.commit().map_err(ie)
    }

    /// Records a manifest fetched from `upstream` for `repo`, its entry and media type together.
    pub(super) fn put_manifest(
        &self,
        upstream: &str,
        repo: &str,
        digest: &Digest,
        meta: EntryMeta,
        media_type: &str,
    ) -> Result<(), IndexError> {
        let tx = self.begin_write().map_err(ie)?;
        {
            let ds = digest.to_string();
            tx.open_table(ENTRIES)
                .map_err(ie)?
                .insert(ds.as_str(), meta.encode().as_slice())
                .map_err(ie)?;
            tx.open_table(MANIFESTS)
                .map_err(ie)?
                .insert(key(&[&ds, upstream]).as_str(), media_type)
                .map_err(ie)?;
            tx.open_table(REPOS)
                .map_err(ie)?
                .insert(key(&[upstream, repo]).as_str(), meta.last_access_ms)
                .map_err(ie)?;
        }
        tx.commit().map_err(ie)
    }

    pub(super) fn manifest_type(
        &self,
        upstream: &str,
        digest: &Digest,
    ) -> Result<Option<String>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(MANIFESTS).map_err(ie)?;
        Ok(t.get(key(&[&digest.to_string(), upstream]).as_str())
            .map_err(ie)?
            .map(|v| v.value().to_owned()))
    }

    pub(super) fn tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
    ) -> Result<Option<TagEntry>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(TAGS).map_err(ie)?;
        let Some(v) = t.get(key(&[upstream, repo, tag]).as_str()).map_err(ie)? else {
            return Ok(None);
        };
        Ok(TagEntry::decode(v.value()))
    }

    pub(super) fn put_tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
        entry: &TagEntry,
    ) -> Result<(), IndexError> {
        let v = entry.encode();
        let tx = self.begin_write().map_err(ie)?;
        {
            tx.open_table(TAGS)
                .map_err(ie)?
                .insert(key(&[upstream, repo, tag]).as_str(), v.as_slice())
                .map_err(ie)?;
            tx.open_table(REPOS)
                .map_err(ie)?
                .insert(key(&[upstream, repo]).as_str(), entry.checked_at_ms)
                .map_err(ie)?;
        }
        tx.commit().map_err(ie)
    }

    /// Tags cached for a repository, in lexical order.
    pub(super) fn tags(&self, upstream: &str, repo: &str) -> Result<Vec<String>, IndexError> {
        let mut out: Vec<String> = self
            .repo_tags(upstream, repo)?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Tags cached for a repository, with what each points at.
    pub(super) fn repo_tags(
        &self,
        upstream: &str,
        repo: &str,
    ) -> Result<Vec<(String, TagEntry)>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(TAGS).map_err(ie)?;
        let prefix = key(&[upstream, repo, ""]);
        let end = format!("{upstream}\0{repo}\u{1}");
        let mut out = Vec::new();
        for item in t.range(prefix.as_str()..end.as_str()).map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            if let Some(entry) = TagEntry::decode(v.value()) {
                out.push((k.value()[prefix.len()..].to_owned(), entry));
            }
        }
        Ok(out)
    }

    /// Every (upstream, repo) the cache has served.
    pub(super) fn repos(&self) -> Result<Vec<(String, String)>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(REPOS).map_err(ie)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(ie)? {
            let (k, _) = item.map_err(ie)?;
            if let Some((u, r)) = k.value().split_once('\0') {
                out.push((u.to_owned(), r.to_owned()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
