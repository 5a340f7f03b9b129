//! `entrepot import`: loads an OCI image layout (a tar, or a directory) into the cache, so the
//! mirror serves its images as if it had pulled them.
//!
//! Nothing becomes visible before everything is verified: every blob in the source is hashed
//! against its name while it is copied under the cache's `tmp/` (content the cache already holds
//! is hashed too, and not copied); then every named image is walked from its root, and each
//! manifest and blob it lists must be in the archive or already in the cache, with the size its
//! descriptor gives. Only then are the files moved into the store and recorded in one index
//! transaction (`Cache::load`). A flipped byte anywhere, a missing blob, an unreadable manifest:
//! nothing is loaded, and the temp files go. Whether it fits is checked first, from the sizes alone.
//!
//! Reads its own archives, `skopeo copy ... oci-archive:` archives and `oci:` directories, and
//! `docker save` archives that carry an OCI layout (Docker 25 and later).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::layout::{self, Entry};
use super::progress::{Progress, size};
use super::{CommandError, locate, open};
use crate::app::App;
use crate::cache::{Cache, Load};
use crate::config::Config;
use crate::manifest::{Descriptor, Listing};
use crate::media_type::manifest_media_type;
use crate::reference::{Digest, Hasher, Reference};

pub struct ImportOptions {
    pub source: PathBuf,
    /// Load without pinning: the LRU may evict it like pulled content.
    pub unpinned: bool,
}

/// Largest manifest read from an archive (as from an upstream).
const MAX_MANIFEST: u64 = 4 << 20;

mod docker_save;

pub fn import(config: &Config, opts: ImportOptions) -> Result<(), CommandError> {
    let app = open(config)?;
    let cache = &app.cache;
    let source = &opts.source;
    let fail =
        |e: String| CommandError::new(format!("{}: {e}; nothing was loaded", source.display()));
    let survey = survey(source).map_err(fail)?;
    let mut staged = Staging::new(cache);
    let roots = match (&survey.index_json, &survey.docker_manifest) {
        (Some(index_json), _) => {
            let roots = layout_roots(&app, index_json).map_err(fail)?;
            fits(cache, survey.blobs.iter().map(|(d, s)| (Some(d), *s))).map_err(fail)?;
            staged.stage(source, &survey).map_err(fail)?;
            roots
        }
        (None, Some(manifest_json)) if !source.is_dir() => {
            let saved = docker_save::parse(manifest_json).map_err(fail)?;
            let wanted = docker_save::files(&saved);
            let sizes = wanted
                .iter()
                .filter_map(|p| survey.sizes.get(p))
                .map(|s| (None, *s));
            fits(cache, sizes).map_err(fail)?;
            let mut roots = Vec::new();
            for (descriptor, name) in staged.stage_saved(source, &saved).map_err(fail)? {
                let (up, repo, tag) = named(&app, &name).map_err(fail)?;
                roots.push((descriptor, up, repo, tag));
            }
            roots
        }
        _ => return Err(fail("not an OCI image layout: no index.json".into())),
    };
    if roots.is_empty() {
        return Err(fail("it names no image to load".into()));
    }
    let mut load = Load {
        pin: !opts.unpinned,
        ..Load::default()
    };
    // Each file once; one digest can be both a blob and a manifest.
    let mut files: HashMap<Digest, usize> = HashMap::new();
    for (root, up, repo, tag) in &roots {
        let walked = staged.walk(root).map_err(fail)?;
        for (d, size, is_manifest) in walked.files {
            match files.get(&d) {
                Some(&i) => load.files[i].3 |= is_manifest,
                None => {
                    files.insert(d.clone(), load.files.len());
                    let temp = staged.files.get(&d).and_then(|f| f.temp.clone());
                    load.files.push((d, temp, size, is_manifest));
                }
            }
        }
        for (d, media_type, bytes) in walked.manifests {
            load.manifests
                .push((up.clone(), repo.clone(), d, media_type, bytes));
        }
        if let Some(tag) = tag {
            load.tags
                .push((up.clone(), repo.clone(), tag.clone(), root.digest.clone()));
        }
    }
    let images = load.tags.len();
    let loaded: u64 = load
        .files
        .iter()
        .filter(|f| f.1.is_some())
        .map(|f| f.2)
        .sum();
    cache.load(load).map_err(|e| fail(e.to_string()))?;
    eprintln!(
        "imported {images} images from {}: {} new, {} already held{}",
        source.display(),
        size(loaded),
        size(staged.held_bytes),
        if opts.unpinned { "" } else { "; pinned" }
    );
    Ok(())
}

/// An image to load: its root manifest, upstream, repository, and tag (if named by one).
type Root = (Descriptor, String, String, Option<String>);

/// The images an OCI layout's `index.json` names.
fn layout_roots(app: &App, index_json: &[u8]) -> Result<Vec<Root>, String> {
    let mut roots = Vec::new();
    for entry in layout::entries(index_json)? {
        match entry {
            Entry::Named(d, name) => {
                let (up, repo, tag) = named(app, &name)?;
                roots.push((d, up, repo, tag));
            }
            Entry::Referrer(d, repository) => {
                let (up, repo, _) =
                    locate(app, &repository).map_err(|e| format!("referrer {}: {e}", d.digest))?;
                roots.push((d, up, repo, None));
            }
            Entry::Unnamed(d) => eprintln!(
                "skipping {}: index.json gives it no name (org.opencontainers.image.ref.name with a full reference)",
                d.digest
            ),
        }
    }
    Ok(roots)
}

/// Upstream, repository and tag (None for a digest) of an image's full name.
fn named(app: &App, name: &str) -> Result<(String, String, Option<String>), String> {
    let (up, repo, reference) = locate(app, name).map_err(|e| format!("image {name:?}: {e}"))?;
    let tag = match reference {
        Reference::Tag(t) => Some(t.as_str().to_owned()),
        Reference::Digest(_) => None,
    };
    Ok((up, repo, tag))
}

/// Whether content of these sizes (not counting digests the cache holds) fits beside what is
/// pinned: checked from the sizes alone, before anything is written.
fn fits<'d>(
    cache: &Cache,
    files: impl Iterator<Item = (Option<&'d Digest>, u64)>,
) -> Result<(), String> {
    let new: u64 = files
        .filter(|(d, _)| d.is_none_or(|d| cache.holds(d).is_none()))
        .map(|(_, s)| s)
        .sum();
    let pinned = cache.pinned_bytes();
    if pinned + new > cache.max_size() {
        return Err(format!(
            "does not fit: {} new + {} already pinned is more than cache.max_size ({})",
            size(new),
            size(pinned),
            size(cache.max_size())
        ));
    }
    Ok(())
}

/// What a source holds, from its headers: `index.json` (or a `docker save` archive's
/// `manifest.json`), each blob's size, and each regular file's size by path.
struct Survey {
    index_json: Option<Vec<u8>>,
    docker_manifest: Option<Vec<u8>>,
    blobs: HashMap<Digest, u64>,
    sizes: HashMap<String, u64>,
}

fn survey(source: &Path) -> Result<Survey, String> {
    let mut s = Survey {
        index_json: None,
        docker_manifest: None,
        blobs: HashMap::new(),
        sizes: HashMap::new(),
    };
    if source.is_dir() {
        s.index_json = match std::fs::read(source.join(layout::INDEX_JSON)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("index.json: {e}")),
        };
        for alg in ["sha256", "sha512"] {
            let Ok(dir) = std::fs::read_dir(source.join("blobs").join(alg)) else {
                continue;
            };
            for f in dir {
                let f = f.map_err(|e| e.to_string())?;
                let name = format!("blobs/{alg}/{}", f.file_name().to_string_lossy());
                if let (Some(d), Ok(m)) = (layout::blob_at(&name), f.metadata())
                    && m.is_file()
                {
                    s.blobs.insert(d, m.len());
                }
            }
        }
        return Ok(s);
    }
    each_entry(source, |path, mut entry| {
        if !entry.header().entry_type().is_file() {
            return Ok(());
        }
        s.sizes.insert(path.to_owned(), entry.size());
        let mut small = || -> Result<Vec<u8>, String> {
            if entry.size() > layout::MAX_INDEX_JSON {
                return Err(format!("{path} is too large"));
            }
            let mut b = Vec::new();
            entry.read_to_end(&mut b).map_err(not_a_tar)?;
            Ok(b)
        };
        if path == layout::INDEX_JSON {
            s.index_json = Some(small()?);
        } else if path == "manifest.json" {
            s.docker_manifest = Some(small()?);
        } else if let Some(d) = layout::blob_at(path) {
            s.blobs.insert(d, entry.size());
        }
        Ok(())
    })?;
    Ok(s)
}

/// Calls `f` with each entry of a tar archive and its path (without a leading `./`); entries
/// whose data `f` does not read are skipped with a seek.
fn each_entry(
    source: &Path,
    mut f: impl FnMut(&str, tar::Entry<'_, File>) -> Result<(), String>,
) -> Result<(), String> {
    let mut archive = tar::Archive::new(File::open(source).map_err(|e| e.to_string())?);
    for entry in archive.entries_with_seek().map_err(not_a_tar)? {
        let entry = entry.map_err(not_a_tar)?;
        let path = entry
            .path()
            .map_err(not_a_tar)?
            .to_string_lossy()
            .into_owned();
        f(path.trim_start_matches("./"), entry)?;
    }
    Ok(())
}

fn not_a_tar(e: std::io::Error) -> String {
    format!("not a readable tar archive or OCI layout directory: {e}")
}

/// A blob read from the source and checked: where its verified copy is (None when the cache
/// already holds it), and its size.
struct Staged {
    temp: Option<PathBuf>,
    size: u64,
}

/// The verified copies, removed on drop unless loaded (a loaded copy has been moved away).
struct Staging<'a> {
    cache: &'a Cache,
    files: HashMap<Digest, Staged>,
    held_bytes: u64,
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        for f in self.files.values() {
            if let Some(t) = &f.temp {
                let _ = std::fs::remove_file(t);
            }
        }
    }
}

/// What one image brings: its files (digest, size, is a manifest) and manifests (digest, media
/// type, bytes).
struct Walked {
    files: Vec<(Digest, u64, bool)>,
    manifests: Vec<(Digest, String, Vec<u8>)>,
}

impl<'a> Staging<'a> {
    fn new(cache: &'a Cache) -> Staging<'a> {
        Staging {
            cache,
            files: HashMap::new(),
            held_bytes: 0,
        }
    }

    /// Reads every blob of the source, checking it against its name.
    fn stage(&mut self, source: &Path, survey: &Survey) -> Result<(), String> {
        let total = survey.blobs.values().sum();
        let progress = Progress::new(total, "bytes");
        let bar = progress.overall().clone();
        if source.is_dir() {
            for d in survey.blobs.keys() {
                let path = source.join(layout::blob_path(d));
                let f = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
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

    /// Hashes one blob as it is read; copies it under `tmp/` (fsynced) unless the cache holds it.
    fn take(
        &mut self,
        digest: &Digest,
        from: impl Read,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), String> {
        let held = self.cache.holds(digest).is_some();
        let temp = (!held).then(|| self.cache.temp_path(digest));
        // Recorded before the first write, so a failure removes the partial copy.
        let staged = Staged {
            temp: temp.clone(),
            size: 0,
        };
        self.files.insert(digest.clone(), staged);
        let (actual, size) = copy_hashed(from, temp.as_deref(), digest.algorithm(), bar)
            .map_err(|e| format!("blob {digest}: {e}"))?;
        if actual != *digest {
            return Err(format!(
                "blob {digest} does not match its digest: the archive is corrupt"
            ));
        }
        if held {
            self.held_bytes += size;
        }
        self.files.insert(digest.clone(), Staged { temp, size });
        Ok(())
    }

    /// Copies content whose digest is not known yet under `tmp/`, hashing it; keeps the copy
    /// only if the cache does not hold that digest already. Returns its digest and size.
    fn take_unnamed(
        &mut self,
        from: impl Read,
        bar: &indicatif::ProgressBar,
    ) -> Result<(Digest, u64), String> {
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
                self.files
                    .insert(digest.clone(), Staged { temp: None, size });
            }
        } else {
            let staged = Staged {
                temp: Some(temp),
                size,
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

    /// A verified manifest's bytes, from the source or the cache.
    fn read(&self, d: &Digest) -> Result<Vec<u8>, String> {
        let path = match self.files.get(d).and_then(|f| f.temp.clone()) {
            Some(p) => p,
            None => self
                .cache
                .stored_file(d)
                .map(|(p, _)| p)
                .ok_or_else(|| format!("{d} is gone"))?,
        };
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(MAX_MANIFEST + 1).read_to_end(&mut bytes))
            .map_err(|e| format!("manifest {d}: {e}"))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(format!("manifest {d} is larger than 4 MiB"));
        }
        Ok(bytes)
    }

    /// Checks an image from its root: each manifest and blob it lists must be here (in the
    /// source or the cache) with its descriptor's size. An index's child manifest may be absent
    /// (a platform left out by `warm --platform`).
    fn walk(&self, root: &Descriptor) -> Result<Walked, String> {
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
                    return Err(format!(
                        "manifest {} is neither in the archive nor in the cache",
                        m.digest
                    ));
                }
                continue;
            };
            check_size(&m, size)?;
            let bytes = self.read(&m.digest)?;
            let media_type = manifest_media_type(m.media_type.as_deref(), &bytes)
                .map_err(|e| format!("{}: {e}", m.digest))?;
            let listing = Listing::parse(&m.digest, &bytes).map_err(|e| e.to_string())?;
            for child in listing.manifests {
                todo.push((child, false));
            }
            for b in listing.blobs {
                let size = self.size_of(&b.digest).ok_or_else(|| {
                    format!(
                        "blob {} of {} is neither in the archive nor in the cache",
                        b.digest, m.digest
                    )
                })?;
                check_size(&b, size)?;
                out.files.push((b.digest, size, false));
            }
            out.files.push((m.digest.clone(), size, true));
            out.manifests.push((m.digest, media_type, bytes));
        }
        Ok(out)
    }
}

/// Copies `from` into `to` (fsynced), or nowhere, hashing it. Returns its digest and size.
fn copy_hashed(
    mut from: impl Read,
    to: Option<&Path>,
    algorithm: crate::reference::Algorithm,
    bar: &indicatif::ProgressBar,
) -> Result<(Digest, u64), String> {
    let mut out = match to {
        Some(t) => Some(File::create(t).map_err(|e| format!("cache tmp/: {e}"))?),
        None => None,
    };
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(out) = &mut out {
            out.write_all(&buf[..n])
                .map_err(|e| format!("cache tmp/: {e}"))?;
        }
        size += n as u64;
        bar.inc(n as u64);
    }
    if let Some(out) = out {
        out.sync_all().map_err(|e| format!("cache tmp/: {e}"))?;
    }
    Ok((hasher.finish(), size))
}

fn check_size(d: &Descriptor, actual: u64) -> Result<(), String> {
    if d.size != u64::MAX && d.size != actual {
        return Err(format!(
            "{} is {actual} bytes but its descriptor says {}",
            d.digest, d.size
        ));
    }
    Ok(())
}
