//! The blob store: verified content as flat files named by digest.
//!
//! `blobs/<alg>/<2 hex>/<hex>` holds exactly the bytes whose digest is its name (ARCHITECTURE.md,
//! invariant 2): content is written under `tmp/` first, hashed on the way in, fsynced, and only
//! then renamed into place. A file's name is a promise about its content. The interface is deliberately small
//! (temp file, commit, open, remove, list) so another backend can slot in later.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::reference::{Algorithm, Digest, Hasher};

pub(super) struct BlobStore {
    blobs: PathBuf,
    /// `blobs/`, open: stored files are opened on the workers relative to it (`open_cached`),
    /// a lookup of two names instead of the whole path.
    blobs_dir: fs::File,
    tmp: PathBuf,
    next_temp: AtomicU64,
}

/// A stored file's name under `blobs/`: `<alg>/<2 hex>/<hex>`.
fn stored_name(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}/{}/{hex}", digest.algorithm().name(), &hex[..2])
}

impl BlobStore {
    /// Opens (creating) the store under `dir`, deleting whatever a previous run left in `tmp/`.
    pub(super) fn open(dir: &Path) -> io::Result<BlobStore> {
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blobs)?;
        match fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(&tmp)?;
        let blobs_dir = fs::File::open(&blobs)?;
        Ok(BlobStore {
            blobs,
            blobs_dir,
            tmp,
            next_temp: AtomicU64::new(0),
        })
    }

    /// The directory of temp files (on the cache's filesystem: what `statvfs` is asked about).
    pub(super) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Deletes everything under `tmp/` (content in flight that will never be committed): for a
    /// command interrupted with fills unfinished, while it alone holds the cache. Blocking.
    pub(super) fn clear_temp(&self) -> io::Result<()> {
        super::assert_off_the_workers();
        fs::remove_dir_all(&self.tmp)?;
        fs::create_dir_all(&self.tmp)
    }

    /// Writes, syncs and removes a small file under `tmp/`: the disk takes writes. Blocking.
    pub(super) fn check_writable(&self) -> io::Result<()> {
        super::assert_off_the_workers();
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let probe = self.tmp.join(format!("ready-{}-{n}", std::process::id()));
        let written = fs::write(&probe, b"ready").and_then(|()| fs::File::open(&probe)?.sync_all());
        let removed = fs::remove_file(&probe);
        written.and(removed)
    }

    /// The size of the stored file for `digest`. Blocking.
    pub(super) fn size(&self, digest: &Digest) -> io::Result<u64> {
        super::assert_off_the_workers();
        Ok(fs::metadata(self.path(digest))?.len())
    }

    /// Whether the stored file for `digest` still holds exactly the bytes its name promises
    /// (read and hashed whole). Blocking.
    pub(super) fn matches_its_name(&self, digest: &Digest) -> io::Result<bool> {
        super::assert_off_the_workers();
        let mut file = fs::File::open(self.path(digest))?;
        let mut hasher = Hasher::new(digest.algorithm());
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finish() == *digest)
    }

    /// Opens the stored file for `digest` only if that cannot block, so an async worker may call
    /// it: every part of its path is in the kernel's lookup cache (`openat2` with
    /// `RESOLVE_CACHED`). None otherwise, whatever the reason (not cached, not there, a kernel
    /// without it): open it on the blocking pool instead, which gives the real error.
    pub(super) fn open_cached(&self, digest: &Digest) -> Option<fs::File> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        rustix::fs::openat2(
            &self.blobs_dir,
            stored_name(digest).as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::CACHED,
        )
        .ok()
        .map(fs::File::from)
    }

    /// The `size` bytes of the stored file for `digest`, only if the kernel holds all of them
    /// and its path in memory (as [`Self::open_cached`], and `RWF_NOWAIT`): an async worker may
    /// call it. None otherwise: read it on the blocking pool instead.
    pub(super) fn read_cached(&self, digest: &Digest, size: u64) -> Option<Vec<u8>> {
        let file = self.open_cached(digest)?;
        let mut bytes = vec![0u8; usize::try_from(size).ok()?];
        let mut slices = [io::IoSliceMut::new(&mut bytes)];
        let n = rustix::io::preadv2(&file, &mut slices, 0, rustix::io::ReadWriteFlags::NOWAIT);
        (n.ok()? as u64 == size).then_some(bytes)
    }

    /// Where the verified content for `digest` lives.
    pub(super) fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(stored_name(digest))
    }

    /// A fresh, unique path under `tmp/` for content in flight.
    pub(super) fn temp_path(&self, digest: &Digest) -> PathBuf {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        self.tmp
            .join(format!("{}-{}-{n}", digest.hex(), std::process::id()))
    }

    /// The one temp path `import` gives `digest`'s content (it copies each digest once).
    pub(super) fn import_temp_path(&self, digest: &Digest) -> PathBuf {
        self.tmp
            .join(format!("{}-{}-import", digest.hex(), std::process::id()))
    }

    /// Moves a verified, fsynced temp file into place under its digest name, and makes the rename
    /// durable. Blocking: call from a blocking context.
    pub(super) fn commit(&self, temp: &Path, digest: &Digest) -> io::Result<()> {
        let parent = self.rename_into_place(temp, digest)?;
        fs::File::open(parent)?.sync_all()
    }

    /// Moves a verified temp file into place, durable only at the next [`BlobStore::sync`]: for
    /// many files at once (an import), where one filesystem sync replaces a sync per file.
    /// Blocking.
    pub(super) fn commit_unsynced(&self, temp: &Path, digest: &Digest) -> io::Result<()> {
        self.rename_into_place(temp, digest).map(drop)
    }

    fn rename_into_place(&self, temp: &Path, digest: &Digest) -> io::Result<PathBuf> {
        super::assert_off_the_workers();
        let dest = self.path(digest);
        let parent = dest.parent().expect("blob paths have parents");
        fs::create_dir_all(parent)?;
        fs::rename(temp, &dest)?;
        Ok(parent.to_owned())
    }

    /// Makes every write and rename on the store's filesystem durable (`syncfs`): one sync for a
    /// group of files, each written without its own. Blocking.
    pub(super) fn sync(&self) -> io::Result<()> {
        super::assert_off_the_workers();
        let dir = fs::File::open(&self.tmp)?;
        rustix::fs::syncfs(&dir)?;
        Ok(())
    }

    /// Writes a small verified value (a manifest) under its digest: temp, fsync, rename.
    /// Blocking.
    pub(super) fn write_verified(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        super::assert_off_the_workers();
        let temp = self.temp_path(digest);
        let result = (|| {
            let mut f = fs::File::create(&temp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            self.commit(&temp, digest)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    pub(super) fn remove(&self, digest: &Digest) -> io::Result<()> {
        super::assert_off_the_workers();
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Gives `f` each directory of the store in turn: the algorithm and the first two hex
    /// digits its files' names share, and the digests of those files, sorted. Anything else
    /// found there (stray names, directories) is removed: nothing but verified content lives
    /// here. Reads the directories only (the type comes with each name): no `stat` per file,
    /// which at a million files was most of a start-up. Blocking.
    pub(super) fn each_directory<E: From<io::Error>>(
        &self,
        mut f: impl FnMut(Algorithm, &str, Vec<Digest>) -> Result<(), E>,
    ) -> Result<(), E> {
        super::assert_off_the_workers();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.blobs.join(alg.name());
            let Ok(prefixes) = fs::read_dir(&dir) else {
                continue;
            };
            for prefix in prefixes {
                let prefix = prefix?;
                let Ok(files) = fs::read_dir(prefix.path()) else {
                    continue;
                };
                let name = prefix.file_name();
                let first = name.to_str().unwrap_or_default();
                let mut found = Vec::new();
                let mut text = format!("{}:", alg.name());
                let at = text.len();
                for file in files {
                    let file = file?;
                    let name = file.file_name();
                    text.truncate(at);
                    text.push_str(name.to_str().unwrap_or_default());
                    let parsed = Digest::parse(&text)
                        .ok()
                        .filter(|_| first.len() == 2 && text[at..].starts_with(first));
                    match parsed {
                        Some(d) if file.file_type()?.is_file() => found.push(d),
                        _ => {
                            tracing::warn!(path = %file.path().display(), "removing a stray file from the blob store");
                            let _ = fs::remove_file(file.path());
                        }
                    }
                }
                found.sort_unstable();
                f(alg, first, found)?;
            }
        }
        Ok(())
    }

    /// When a stored file was last written (a file renamed into place keeps its temp file's).
    /// Blocking.
    pub(super) fn modified(&self, digest: &Digest) -> io::Result<std::time::SystemTime> {
        super::assert_off_the_workers();
        fs::metadata(self.path(digest))?.modified()
    }
}
