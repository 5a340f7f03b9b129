//! The index and the files, at start-up: the index is the truth the cache opens with, and the
//! files are checked against it afterwards, off the path of every request.
//!
//! Opening reads the index alone (its entries and their links, in one pass: no `stat` and no
//! directory read), so `serve` listens within seconds at a million entries. Then, a directory of
//! the store at a time, the files and the index's entries for that directory are compared:
//! - an entry without a file is forgotten (a disk restored from an older backup, a file deleted
//!   by hand). Until then a request for it finds the file missing, forgets it and fetches it
//!   again, as it would at any time;
//! - a file the index does not know was renamed into place only once verified, so only its
//!   record was lost (a stop between the rename and the index write): it is hashed again against
//!   its name and kept as a blob linked to no repository (a client's request then confirms it
//!   upstream with a HEAD, not a refetch), or deleted if it no longer matches.
//!
//! A file stored after the listing of its directory is not taken for an entry without a file
//! (its existence is checked again before anything is forgotten), and a file written since the
//! cache opened belongs to a fill of this process, which records it itself. Each directory is
//! checked holding `evicting`, so no eviction deletes a file it is looking at, and an eviction
//! waits for one directory at most (holding it for the whole check, a second or more at a
//! million files, stalled the first fills of a cache at its bound). Within `serve` this runs in
//! the background; an offline command runs it before it goes on.

use std::time::{Duration, SystemTime};

use super::index::{self, EntryMeta, Index, Row};
use super::lru::State;
use super::{Cache, CacheError};
use crate::reference::Digest;

/// The in-memory view of what is stored, from the index alone: its entries, and the links of
/// the digests it has entries for. Links of content not held (a manifest listed it and it was
/// never fetched, or it was evicted) go from the index.
pub(super) fn load(index: &Index) -> Result<State, CacheError> {
    let mut state = State::default();
    state.lru.reserve(index.entry_count()? as usize);
    let unheld = index.each_entry_and_link(|row| match row {
        Row::Entry(digest, meta) => state.lru.insert_found(digest.clone(), meta),
        Row::Link(digest, scope, size) => {
            state.add_link(digest, scope, size);
        }
    })?;
    if !unheld.is_empty() {
        index.remove_entries(&unheld)?;
    }
    Ok(state)
}

/// A file written this long before the cache opened may be one of an earlier process's; one
/// written later is this process's own (clocks of one machine, and a margin for coarse mtimes).
const OWN_FILES_MARGIN: Duration = Duration::from_secs(2);

impl Cache {
    /// Checks the files against the index (see the module's text). Blocking.
    pub(super) fn reconcile_files(&self, opened_at: SystemTime) -> Result<(), CacheError> {
        let since = opened_at.checked_sub(OWN_FILES_MARGIN).unwrap_or(opened_at);
        let started = std::time::Instant::now();
        let (mut lost_count, mut files, mut kept) = (0, 0, 0);
        self.store
            .each_directory(|alg, first, on_disk| -> Result<(), CacheError> {
                let _one = self.evicting.blocking_lock();
                let indexed = self
                    .index
                    .entries_with_prefix(&format!("{}:{first}", alg.name()))?;
                files += on_disk.len();
                let (lost, unknown) = differences(&indexed, &on_disk);
                // Stored since the directory was read: not lost.
                let lost: Vec<Digest> = lost
                    .into_iter()
                    .filter(|d| !self.store.path(d).exists())
                    .collect();
                if !lost.is_empty() {
                    {
                        let mut s = self.lock();
                        for d in &lost {
                            s.lru.forget(d);
                            s.forget_links_of(d);
                        }
                    }
                    self.index.remove_entries(&lost)?;
                    lost_count += lost.len();
                }
                let mut adopted = Vec::new();
                for digest in unknown {
                    let written = match self.store.modified(&digest) {
                        Ok(t) if t < since => t,
                        // This process's own, or gone already.
                        _ => continue,
                    };
                    if self.store.matches_its_name(&digest).unwrap_or(false) {
                        let size = self.store.size(&digest)?;
                        // Last used when it was written, for all we know: a file whose entry
                        // an eviction had removed when a stop came before its deletion is
                        // among the least recently used, and stays so (kept as used now, it
                        // outlived everything used since).
                        let meta = EntryMeta {
                            size,
                            last_access_ms: millis_since_epoch(written),
                            kinds: index::KIND_BLOB,
                        };
                        let mut s = self.lock();
                        if !s.lru.holds(&digest) {
                            tracing::info!(%digest, size, "verified file missing from the index: kept");
                            s.lru.insert_found(digest.clone(), meta);
                            adopted.push((digest, meta));
                        }
                    } else {
                        tracing::warn!(%digest, "file unknown to the index: removing it");
                        self.store.remove(&digest)?;
                    }
                }
                if !adopted.is_empty() {
                    self.index.put_entries(&adopted)?;
                    kept += adopted.len();
                }
                Ok(())
            })?;
        if lost_count > 0 {
            tracing::warn!(
                count = lost_count,
                "index entries without files: forgetting them"
            );
        }
        self.publish_size();
        tracing::info!(
            files,
            forgotten = lost_count,
            kept,
            seconds = started.elapsed().as_secs_f64(),
            "files checked against the index"
        );
        Ok(())
    }
}

/// What only the index has, and what only the disk has: both lists sorted.
fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn differences(indexed: &[Digest], on_disk: &[Digest]) -> (Vec<Digest>, Vec<Digest>) {
    let (mut lost, mut unknown) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < indexed.len() || j < on_disk.len() {
        match (indexed.get(i), on_disk.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                lost.push(a.clone());
                i += 1;
            }
            (Some(a), None) => {
                lost.push(a.clone());
                i += 1;
            }
            (_, Some(b)) => {
                unknown.push(b.clone());
                j += 1;
            }
            (None, None) => unreachable!("the loop ends first"),
        }
    }
    (lost, unknown)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A verified file the index does not know (an eviction's victim whose deletion a stop cut
    /// short, or a fill's whose record was lost) is kept as last used when it was written.
    #[test]
    fn a_file_kept_at_the_check_is_as_old_as_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let minute = Duration::from_secs(60);
        let cache = Cache::open(
            dir.path(),
            1 << 20,
            minute,
            Duration::ZERO,
            metrics,
            None,
            false,
        )
        .unwrap();
        let bytes = b"an evicted blob whose file outlived its entry";
        let digest = Digest::sha256_of(bytes);
        let path = cache.store.path(&digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let written = SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(written)
            .unwrap();
        cache.reconcile_files(SystemTime::now()).unwrap();
        let meta = cache.lock().lru.get(&digest).expect("kept");
        assert_eq!(meta.size, bytes.len() as u64);
        assert_eq!(meta.last_access_ms, millis_since_epoch(written));
    }

    #[test]
    fn differences_are_what_one_side_alone_has() {
        let d: Vec<Digest> = (0u8..6).map(|i| Digest::sha256_of(&[i])).collect();
        let mut indexed = vec![d[0].clone(), d[1].clone(), d[2].clone(), d[4].clone()];
        let mut on_disk = vec![d[1].clone(), d[3].clone(), d[4].clone(), d[5].clone()];
        indexed.sort();
        on_disk.sort();
        let (mut lost, mut unknown) = differences(&indexed, &on_disk);
        lost.sort();
        unknown.sort();
        let mut want_lost = vec![d[0].clone(), d[2].clone()];
        let mut want_unknown = vec![d[3].clone(), d[5].clone()];
        want_lost.sort();
        want_unknown.sort();
        assert_eq!((lost, unknown), (want_lost, want_unknown));
    }
}
