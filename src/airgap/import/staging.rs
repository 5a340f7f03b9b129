//! The verified copies an import makes under the cache's `tmp/`, and the walk that checks each
//! image is whole before anything is loaded.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::{ImportError, MAX_MANIFEST, Survey, each_entry};
use crate::airgap::layout;
use crate::airgap::progress::Progress;
use crate::cache::Loader;
use crate::manifest::{Descriptor, Listing};
use crate::media_type::manifest_media_type;
use crate::reference::{Digest, Hasher};

/// A file an import knows, checked: its size, whether it has a verified copy (at
/// `Loader::temp_path`, else the cache held it already), and whether an image being loaded
/// lists it. About 60 bytes a digest, whatever the archive's size.
pub(super) struct Staged {
    pub(super) size: u64,
    pub(super) copied: bool,
    pub(super) used: bool,
}

/// The verified copies, removed on drop unless moved into the store.
pub(super) struct Staging<'a> {
    pub(super) cache: &'a Loader,
    pub(super) files: HashMap<Digest, Staged>,
    pub(super) held_bytes: u64,
    /// The used copies have been moved into the store (`Loader::commit_copies`).
    pub(super) moved: bool,
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        for (d, f) in &self.files {
            if f.copied && !(self.moved && f.used) {
                let _ = std::fs::remove_file(self.cache.temp_path(d));
            }
        }
    }
}

/// What one image brings: its files (digest, size, is a manifest) and manifests (digest, media
/// type, bytes).
pub(super) struct Walked {
    pub(super) files: Vec<(Digest, u64, bool)>,
    pub(super) manifests: Vec<(Digest, String, bytes::Bytes)>,
}

impl<'a> Staging<'a> {
    pub(super) fn new(cache: &'a Loader) -> Staging<'a> {
        Staging {
            cache,
            files: HashMap::new(),
            held_bytes: 0,
            moved: false,
        }
    }

    /// Reads every blob of the source, checking it against its name.
    pub(super) fn stage(&mut self, source: &Path, survey: &Survey) -> Result<(), ImportError> {
        let total = survey.blobs.values().sum();
        self.files.reserve(survey.blobs.len());
        let progress = Progress::new(total, "bytes");
        let bar = progress.overall().clone();
        if source.is_dir() {
            for d in survey.blobs.keys() {
                let path = source.join(layout::blob_path(d));
                let f = File::open(&path).map_err(|source| ImportError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                self.take(d, f, &bar)?;
            }
        } else {
            each_entry(source, |path, entry| match layout::blob_at(path) {
                Some(d)
                    if entry.header().entry_type().is_file() && !self.files.contains_key(&d) =>
                {
                    self.take(&d, entry, &bar)
                }
                _ => Ok(()),
            })?;
        }
        progress.finish();
        Ok(())
    }

    /// Hashes one blob as it is read; copies it under `tmp/` (synced with the rest at load) unless the cache holds it.
    fn take(
        &mut self,
        digest: &Digest,
        from: impl Read,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), ImportError> {
        let held = self.cache.holds(digest).is_some();
        let temp = (!held).then(|| self.cache.temp_path(digest));
        // Recorded before the first write, so a failure removes the partial copy.
        let staged = Staged {
            size: 0,
            copied: !held,
            used: false,
        };
        self.files.insert(digest.clone(), staged);
        let (actual, size) =
            copy_hashed(from, temp.as_deref(), digest.algorithm(), bar).map_err(|e| {
                ImportError::Blob {
                    digest: digest.clone(),
                    source: Box::new(e),
                }
            })?;
        if actual != *digest {
            return Err(ImportError::Mismatch(digest.clone()));
        }
        if held {
            self.held_bytes += size;
        }
        if let Some(f) = self.files.get_mut(digest) {
            f.size = size;
        }
        Ok(())
    }

    /// Copies content whose digest is not known yet under `tmp/`, hashing it; keeps the copy
    /// only if the cache does not hold that digest already. Returns its digest and size.
    pub(super) fn take_unnamed(
        &mut self,
        from: impl Read,
        bar: &indicatif::ProgressBar,
    ) -> Result<(Digest, u64), ImportError> {
        // Each copy goes here first, then to its digest's temp path once its digest is known.
        let temp = self.cache.temp_path(&Digest::sha256_of(b"unnamed"));
        let copied = copy_hashed(from, Some(&temp), crate::reference::Algorithm::Sha256, bar);
        let (digest, size) = match copied {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        if self.files.contains_key(&digest) || self.cache.holds(&digest).is_some() {
            let _ = std::fs::remove_file(&temp);
            if !self.files.contains_key(&digest) {
                self.held_bytes += size;
                let staged = Staged {
                    size,
                    copied: false,
                    used: false,
                };
                self.files.insert(digest.clone(), staged);
            }
        } else {
            if let Err(e) = std::fs::rename(&temp, self.cache.temp_path(&digest)) {
                let _ = std::fs::remove_file(&temp);
                return Err(ImportError::Tmp(e));
            }
            let staged = Staged {
                size,
                copied: true,
                used: false,
            };
            self.files.insert(digest.clone(), staged);
        }
        Ok((digest, size))
    }

    /// A verified file's size, from the source or the cache.
    fn size_of(&self, d: &Digest) -> Option<u64> {
        match self.files.get(d) {
            Some(f) => Some(f.size),
            None => self.cache.holds(d),
        }
    }

    /// A verified manifest's bytes, from its copy, the store, or the cache.
    pub(super) fn read(&self, d: &Digest) -> Result<Vec<u8>, ImportError> {
        let path = match self.files.get(d) {
            Some(f) if f.copied && !(self.moved && f.used) => self.cache.temp_path(d),
            Some(f) if f.copied => self.cache.store_path(d),
            _ => self
                .cache
                .stored_file(d)
                .map(|(p, _)| p)
                .ok_or_else(|| ImportError::Gone(d.clone()))?,
        };
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(MAX_MANIFEST + 1).read_to_end(&mut bytes))
            .map_err(|source| ImportError::ReadManifest {
                digest: d.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(ImportError::ManifestTooLarge(d.clone()));
        }
        Ok(bytes)
    }

    /// Checks each image from its root (each root once) and marks what they list as used: the
    /// files to move into the store and count against `max_size`. A file the cache holds that
    /// the source does not is recorded here too, so that it counts once.
    pub(super) fn mark<'r>(
        &mut self,
        roots: impl Iterator<Item = (&'r Descriptor, String)>,
    ) -> Result<(), ImportError> {
        let mut walked = HashSet::new();
        for (root, image) in roots {
            if !walked.insert(root.digest.clone()) {
                continue;
            }
            let w = self.walk(root).map_err(|e| e.of_image(image))?;
            for (d, size, _) in w.files {
                let f = self.files.entry(d).or_insert(Staged {
                    size,
                    copied: false,
                    used: false,
                });
                f.used = true;
            }
        }
        Ok(())
    }

    /// Forgets which files are used, for [`Staging::mark`] over fewer images.
    pub(super) fn unmark(&mut self) {
        for f in self.files.values_mut() {
            f.used = false;
        }
    }

    /// The files images use: digest, size, whether it was copied (new to the cache).
    pub(super) fn used(&self) -> impl Iterator<Item = (&Digest, u64, bool)> {
        self.files
            .iter()
            .filter(|(_, f)| f.used)
            .map(|(d, f)| (d, f.size, f.copied))
    }

    /// Checks an image from its root: each manifest and blob it lists must be here (in the
    /// source or the cache) with its descriptor's size. An index's child manifest may be absent
    /// (a platform left out by `warm --platform`).
    pub(super) fn walk(&self, root: &Descriptor) -> Result<Walked, ImportError> {
        let mut out = Walked {
            files: Vec::new(),
            manifests: Vec::new(),
        };
        let mut todo = vec![(root.clone(), true)];
        let mut seen = HashSet::new();
        while let Some((m, required)) = todo.pop() {
            if !seen.insert(m.digest.clone()) {
                continue;
            }
            let Some(size) = self.size_of(&m.digest) else {
                if required {
                    return Err(ImportError::MissingManifest(m.digest));
                }
                continue;
            };
            check_size(&m, size)?;
            let bytes = self.read(&m.digest)?;
            let media_type = manifest_media_type(m.media_type.as_deref(), &bytes).map_err(|e| {
                ImportError::BadManifest {
                    digest: m.digest.clone(),
                    problem: e.to_string(),
                }
            })?;
            let listing = Listing::parse(&m.digest, &bytes)
                .map_err(|e| ImportError::BadListing(e.to_string()))?;
            for child in listing.manifests {
                todo.push((child, false));
            }
            for b in listing.blobs {
                let size = self
                    .size_of(&b.digest)
                    .ok_or_else(|| ImportError::MissingBlob {
                        blob: b.digest.clone(),
                        manifest: m.digest.clone(),
                    })?;
                check_size(&b, size)?;
                out.files.push((b.digest, size, false));
            }
            out.files.push((m.digest.clone(), size, true));
            out.manifests
                .push((m.digest, media_type.to_string(), bytes.into()));
        }
        Ok(out)
    }
}

/// Copies `from` into `to` (synced later, with the rest), or nowhere, hashing it. Returns its digest and size.
fn copy_hashed(
    mut from: impl Read,
    to: Option<&Path>,
    algorithm: crate::reference::Algorithm,
    bar: &indicatif::ProgressBar,
) -> Result<(Digest, u64), ImportError> {
    let mut out = match to {
        Some(t) => Some(File::create(t).map_err(ImportError::Tmp)?),
        None => None,
    };
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(out) = &mut out {
            out.write_all(&buf[..n]).map_err(ImportError::Tmp)?;
        }
        size += n as u64;
        bar.inc(n as u64);
    }
    // No sync here: `Loader::load` syncs the filesystem once before any file is renamed into
    // place, instead of once per blob.
    drop(out);
    Ok((hasher.finish(), size))
}

fn check_size(d: &Descriptor, actual: u64) -> Result<(), ImportError> {
    if d.size != u64::MAX && d.size != actual {
        return Err(ImportError::WrongSize {
            digest: d.digest.clone(),
            actual,
            said: d.size,
        });
    }
    Ok(())
}
