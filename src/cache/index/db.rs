//! The index's database handle: redb opened with a page cache sized from `max_size`, reopened
//! after an I/O error, compacted on request. The tables' reads and writes are `mod.rs`'s.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::AtomicU32;

use redb::{Database, ReadableDatabase, ReadableTableMetadata};

#[cfg(test)]
use super::PAGE_CACHE;
use super::{ENTRIES, IndexError, LINKS, MANIFESTS, REFERRERS, REPOS, TAGS, ie};

/// The redb database, reopened after an I/O error: redb refuses every transaction after one
/// (`PreviousIo`, "close and re-open the database") and repairs itself when opened again, so
/// a disk that was full for a moment does not leave the index unwritable until a restart.
pub(in crate::cache) struct Index {
    path: PathBuf,
    /// redb's page cache, in bytes.
    cache_bytes: usize,
    /// None while a reopen failed (the next transaction tries again).
    db: RwLock<Option<Database>>,
    /// Eviction's removals committed without an fsync since its last durable one
    /// (`removal.rs`).
    pub(super) undurable: AtomicU32,
}

/// Files smaller than this are compacted whatever they gain: the index stops for little time.
const COMPACT_ALWAYS_BELOW: u64 = 64 << 20;

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compaction {
    /// The file's bytes on the disk before and after.
    Done { before: u64, after: u64 },
    /// A transaction in flight (or a failed reopen) kept it from compacting: try again later.
    Busy,
    /// Less than a quarter of a large file is free: not worth stopping the index for.
    NotWorthIt { file: u64, free: u64 },
}

/// What redb says of every transaction after an I/O error.
fn previous_io(e: &redb::TransactionError) -> bool {
    matches!(
        e,
        redb::TransactionError::Storage(redb::StorageError::PreviousIo)
    )
}

impl Index {
    pub(super) fn begin_write(&self) -> Result<redb::WriteTransaction, redb::TransactionError> {
        super::super::assert_off_the_workers();
        self.begin(Database::begin_write)
    }

    pub(super) fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        super::super::assert_off_the_workers();
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
    pub(in crate::cache) fn open(path: &Path) -> Result<Index, IndexError> {
        Self::open_with_cache(path, PAGE_CACHE)
    }

    /// Opens the index with a page cache of `cache_bytes` (redb's default is 1 GiB, which a
    /// large index fills: memory the bound does not see).
    pub(in crate::cache) fn open_with_cache(
        path: &Path,
        cache_bytes: u64,
    ) -> Result<Index, IndexError> {
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
            undurable: AtomicU32::new(0),
        })
    }

    /// The bytes the index's file takes on the disk, which count towards `max_size` beside the
    /// stored files: its length, less the holes in it. redb grows the file by doubling its
    /// length (until it is 4 GiB), and the new half takes no space until pages are written
    /// there: counted as its length, a 539 MB index that needed one page more made the cache's
    /// bound 539 MB smaller at once. Blocking.
    pub(in crate::cache) fn file_size(&self) -> u64 {
        super::super::assert_off_the_workers();
        std::fs::metadata(&self.path).map_or(0, |m| m.len().min(m.blocks() * 512))
    }

    /// Gives the file's free pages back (redb's `compact`): after a year of eviction churn the
    /// file is mostly pages freed by removals, and its size counts towards `max_size`. Every
    /// transaction waits meanwhile (those already begun may end: it waits up to a second for
    /// them), 5.2 s for a 397 MiB file at a million blobs, so a file of [`COMPACT_ALWAYS_BELOW`]
    /// or more is compacted only when at least a quarter of it is free (counted beside the
    /// other transactions, from the pages its tables use). Blocking.
    pub(in crate::cache) fn compact(&self) -> Result<Compaction, IndexError> {
        self.compact_past(COMPACT_ALWAYS_BELOW)
    }

    /// [`Index::compact`], its file always compacted below `always_below` bytes.
    pub(super) fn compact_past(&self, always_below: u64) -> Result<Compaction, IndexError> {
        super::super::assert_off_the_workers();
        let before = self.file_size();
        if before >= always_below {
            let free = before.saturating_sub(self.table_bytes()?);
            if free < before / 4 {
                return Ok(Compaction::NotWorthIt { file: before, free });
            }
        }
        {
            let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
            let Some(db) = slot.as_mut() else {
                return Ok(Compaction::Busy);
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
                    Err(redb::CompactionError::TransactionInProgress) => {
                        return Ok(Compaction::Busy);
                    }
                    Err(e) => return Err(ie(e)),
                }
            }
        }
        Ok(Compaction::Done {
            before,
            after: self.file_size(),
        })
    }

    /// The bytes of the pages the tables use (their entries, their branches and what is unused
    /// inside those pages), every table read in one read transaction: writers and readers go
    /// on meanwhile.
    fn table_bytes(&self) -> Result<u64, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let mut bytes = 0;
        for handle in tx.list_tables().map_err(ie)? {
            let s = tx
                .open_untyped_table(handle)
                .map_err(ie)?
                .stats()
                .map_err(ie)?;
            bytes += s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes();
        }
        Ok(bytes)
    }

    /// A read transaction on the entries table: the database answers.
    pub(in crate::cache) fn check(&self) -> Result<(), IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        tx.open_table(ENTRIES).map_err(ie)?;
        Ok(())
    }
}
