//! `entrepot import`: loads an OCI image layout (a tar, or a directory) into the cache, so the
//! mirror serves its images as if it had pulled them.
//!
//! Nothing becomes visible before everything is verified: every blob in the source is hashed
//! against its name while it is copied under the cache's `tmp/` (content the cache already holds
//! is hashed too, and not copied); then every named image is walked from its root, and each
//! manifest and blob it lists must be in the archive or already in the cache, with the size its
//! descriptor gives. Only then are the files moved into the store and recorded, in index
//! transactions of whole images of a few thousand files each (`Loader::load`). A flipped byte
//! anywhere, a missing blob, an unreadable manifest: nothing is loaded, and the temp files go.
//! Whether it fits is checked first, from the sizes alone.
//!
//! Memory follows the archive's count of files (about 60 bytes each, `Staging`), not its
//! bytes nor its manifests: each image is walked again, from the store, when its part is
//! written.
//!
//! Reads its own archives, `skopeo copy ... oci-archive:` archives and `oci:` directories, and
//! `docker save` archives that carry an OCI layout (Docker 25 and later).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::layout::{self, Entry};
use super::progress::size;
use super::{CommandError, Failure, open};
use crate::cache::Loader;
use crate::config::Config;
use crate::manifest::Descriptor;
use crate::metrics::Metrics;
use crate::reference::{Digest, Reference};
use crate::upstream::Upstreams;

pub struct ImportOptions {
    pub source: PathBuf,
    /// Load without pinning: the LRU may evict it like pulled content.
    pub unpinned: bool,
    /// `--name`: a repository for the images `index.json` names by a tag alone or not at all,
    /// or a whole name (with tag or digest) for a layout of one image.
    pub name: Option<String>,
    /// `--require-signature KEY.pub`: every image must carry a cosign signature by one of these
    /// keys (with `[cache] import_keys`); else nothing is loaded.
    pub require_signature: Vec<PathBuf>,
    /// With keys: leave unsigned images out (named) instead of loading nothing.
    pub skip_unsigned: bool,
}

/// Largest manifest read from an archive (as from an upstream).
const MAX_MANIFEST: u64 = 4 << 20;

mod docker_save;
mod error;
mod parts;
mod signed;
mod staging;

pub(crate) use error::ImportError;
use parts::{images_of, load_parts};
use staging::{Staged, Staging};

pub fn import(config: &Config, opts: ImportOptions) -> Result<(), CommandError> {
    let upstreams = crate::app::upstreams_of(config, &Arc::new(Metrics::new()))?;
    let loader = crate::app::open_loader(config)?;
    let cache = &loader;
    let source = &opts.source;
    let fail = |problem: ImportError| -> CommandError {
        Failure::Import {
            archive: source.display().to_string(),
            problem,
        }
        .into()
    };
    let key_files: Vec<PathBuf> = opts
        .require_signature
        .iter()
        .chain(&config.cache.import_keys)
        .cloned()
        .collect();
    let keys = crate::cosign::Keys::read(&key_files).map_err(Failure::from)?;
    let survey = survey(source).map_err(fail)?;
    let mut staged = Staging::new(cache);
    let roots = match (&survey.index_json, &survey.docker_manifest) {
        (Some(index_json), _) => {
            let roots = layout_roots(&upstreams, index_json, opts.name.as_deref()).map_err(fail)?;
            let sizes = survey.blobs.iter().map(|(d, s)| (Some(d), *s));
            fits(cache, sizes, !opts.unpinned).map_err(fail)?;
            staged.stage(source, &survey).map_err(fail)?;
            roots
        }
        (None, Some(_)) if opts.name.is_some() => {
            return Err(fail(ImportError::NameForSaved));
        }
        (None, Some(manifest_json)) if !source.is_dir() => {
            let saved = docker_save::parse(manifest_json).map_err(fail)?;
            let wanted = docker_save::files(&saved);
            let sizes = wanted
                .iter()
                .filter_map(|p| survey.size_at(p))
                .map(|s| (None, s));
            fits(cache, sizes, !opts.unpinned).map_err(fail)?;
            let mut roots = Vec::new();
            for (descriptor, name) in staged.stage_saved(source, &saved).map_err(fail)? {
                let (up, repo, tag) = named(&upstreams, &name).map_err(fail)?;
                roots.push((descriptor, up, repo, tag));
            }
            roots
        }
        _ => return Err(fail(ImportError::NoIndex)),
    };
    if roots.is_empty() {
        return Err(fail(ImportError::NamesNoImage));
    }
    let pin = !opts.unpinned;
    staged.mark(images_of(&roots)).map_err(fail)?;
    let mut roots = roots;
    if !keys.is_empty() {
        let unsigned = signed::unsigned(&staged, &roots, &keys);
        if let Some((_, image, why)) = unsigned.first()
            && !opts.skip_unsigned
        {
            return Err(fail(ImportError::Unsigned {
                image: image.clone(),
                why: why.clone(),
                more: unsigned.len() - 1,
            }));
        }
        if !unsigned.is_empty() {
            for (_, image, why) in &unsigned {
                eprintln!("left out {image}: {why}");
            }
            roots = signed::without(roots, &unsigned);
            if roots.is_empty() {
                return Err(fail(ImportError::NamesNoImage));
            }
            staged.unmark();
            staged.mark(images_of(&roots)).map_err(fail)?;
        }
    }
    // Exactly what will be pinned, now that it is known: never past max_size.
    let files = staged.used().map(|(d, size, _)| (Some(d), size));
    fits(cache, files, pin).map_err(fail)?;
    let loaded: u64 = staged.used().filter(|f| f.2).map(|f| f.1).sum();
    let copies = staged.used().filter(|f| f.2).map(|f| f.0);
    cache.commit_copies(copies).map_err(|e| fail(e.into()))?;
    staged.moved = true;
    let images = load_parts(&staged, &roots, pin).map_err(fail)?;
    let over = cache.over_bound().map_err(|e| fail(e.into()))?;
    eprintln!(
        "imported {images} images from {}: {} new, {} already held{}",
        source.display(),
        size(loaded),
        size(staged.held_bytes),
        if opts.unpinned { "" } else { "; pinned" }
    );
    if over {
        // Unpinned content took the cache past its bound: opened whole, with its records, the
        // cache evicts the least recently used down to its low-water mark before it is used.
        drop(staged);
        drop(loader);
        open(config)?;
    }
    Ok(())
}

/// An image to load: its root manifest, upstream, repository, and tag (if named by one).
type Root = (Descriptor, String, String, Option<String>);

/// The images an OCI layout's `index.json` names, with `--name` for those it leaves unnamed.
fn layout_roots(
    upstreams: &Upstreams,
    index_json: &[u8],
    name: Option<&str>,
) -> Result<Vec<Root>, ImportError> {
    let entries = layout::entries(index_json)?;
    let images = entries
        .iter()
        .filter(|e| !matches!(e, Entry::Referrer(..)))
        .count();
    let given = name.map(|n| GivenName::of(n, images)).transpose()?;
    let mut roots = Vec::new();
    let mut skipped = 0;
    for entry in entries {
        let (d, name) = match entry {
            Entry::Referrer(d, repository) => {
                let (up, repo, _) =
                    upstreams
                        .locate(&repository)
                        .map_err(|source| ImportError::BadReferrer {
                            digest: d.digest.clone(),
                            source,
                        })?;
                roots.push((d, up.name.clone(), repo.to_string(), None));
                continue;
            }
            Entry::Named(d, n) => {
                let n = match &given {
                    Some(g) if images == 1 => g.name_for(Some(tag_of(&n)), &d.digest),
                    _ => n,
                };
                (d, n)
            }
            Entry::Tagged(d, tag) => match &given {
                Some(g) => {
                    let n = g.name_for(Some(&tag), &d.digest);
                    (d, n)
                }
                None => {
                    eprintln!(
                        "skipping {}: index.json names it by the tag {tag:?} alone: give --name REPOSITORY to say whose",
                        d.digest
                    );
                    skipped += 1;
                    continue;
                }
            },
            Entry::Unnamed(d) => match &given {
                Some(g) => {
                    let n = g.name_for(None, &d.digest);
                    (d, n)
                }
                None => {
                    eprintln!(
                        "skipping {}: index.json gives it no name (org.opencontainers.image.ref.name): give --name REPOSITORY",
                        d.digest
                    );
                    skipped += 1;
                    continue;
                }
            },
        };
        let (up, repo, tag) = named(upstreams, &name)?;
        roots.push((d, up, repo, tag));
    }
    if skipped > 0 && roots.is_empty() {
        return Err(ImportError::NoneNamed(skipped));
    }
    Ok(roots)
}

/// The tag of a reference as written: `latest` when it has none, empty for a digest reference
/// (which [`GivenName::name_for`] then names by digest).
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once('@') {
        Some(_) => "",
        None => last.split_once(':').map_or("latest", |(_, t)| t),
    }
}

/// What `--name` gave: a repository alone, or a whole name for a layout of one image.
enum GivenName {
    Repository(String),
    Whole(String),
}

impl GivenName {
    fn of(name: &str, images: usize) -> Result<GivenName, ImportError> {
        let last = name.rsplit('/').next().unwrap_or(name);
        if !(last.contains(':') || name.contains('@')) {
            return Ok(GivenName::Repository(name.to_owned()));
        }
        if images != 1 {
            return Err(ImportError::NameForMany {
                name: name.to_owned(),
                images,
            });
        }
        Ok(GivenName::Whole(name.to_owned()))
    }

    /// The name an image gets: the whole name given, or the repository given with the image's
    /// own tag (by digest when it has none).
    fn name_for(&self, tag: Option<&str>, digest: &Digest) -> String {
        match (self, tag) {
            (GivenName::Whole(n), _) => n.clone(),
            (GivenName::Repository(r), Some(t)) if !t.is_empty() => format!("{r}:{t}"),
            (GivenName::Repository(r), _) => format!("{r}@{digest}"),
        }
    }
}

/// Upstream, repository and tag (None for a digest) of an image's full name.
fn named(
    upstreams: &Upstreams,
    name: &str,
) -> Result<(String, String, Option<String>), ImportError> {
    let (up, repo, reference) = upstreams
        .locate(name)
        .map_err(|source| ImportError::BadName {
            name: name.to_owned(),
            source,
        })?;
    let tag = match reference {
        Reference::Tag(t) => Some(t.as_str().to_owned()),
        Reference::Digest(_) => None,
    };
    Ok((up.name.clone(), repo.to_string(), tag))
}

/// Whether content of these sizes fits beside what is pinned: checked from the sizes alone,
/// before anything is written, and again with exactly what will be loaded. Pinning, content the
/// cache holds unpinned counts too (it becomes pinned); only what is pinned already is free.
fn fits<'d>(
    cache: &Loader,
    files: impl Iterator<Item = (Option<&'d Digest>, u64)>,
    pin: bool,
) -> Result<(), ImportError> {
    let mut seen = std::collections::HashSet::new();
    let new: u64 = files
        .filter(|(d, _)| d.is_none_or(|d| seen.insert(d.clone())))
        .filter(|(d, _)| {
            d.is_none_or(|d| match cache.holds_pinned(d) {
                Some(pinned) => pin && !pinned,
                None => true,
            })
        })
        .map(|(_, s)| s)
        .sum();
    let pinned = cache.pinned_bytes();
    if pinned + new > cache.max_size() {
        return Err(ImportError::DoesNotFit {
            new: size(new),
            pinned: size(pinned),
            max: size(cache.max_size()),
        });
    }
    Ok(())
}

/// What a source holds, from its headers: `index.json` (or a `docker save` archive's
/// `manifest.json`), each blob's size, and each other regular file's size by path.
struct Survey {
    index_json: Option<Vec<u8>>,
    docker_manifest: Option<Vec<u8>>,
    blobs: HashMap<Digest, u64>,
    sizes: HashMap<String, u64>,
}

impl Survey {
    /// The size of the regular file at `path` in a tar archive.
    fn size_at(&self, path: &str) -> Option<u64> {
        match layout::blob_at(path) {
            Some(d) => self.blobs.get(&d).copied(),
            None => self.sizes.get(path).copied(),
        }
    }
}

fn survey(source: &Path) -> Result<Survey, ImportError> {
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
            Err(e) => return Err(ImportError::ReadIndex(e)),
        };
        for alg in ["sha256", "sha512"] {
            let Ok(dir) = std::fs::read_dir(source.join("blobs").join(alg)) else {
                continue;
            };
            for f in dir {
                let f = f?;
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
        // Staging reads the first copy of a path: a second would hide its size from this survey.
        // A blob's size is kept by digest alone (an archive's paths are mostly blobs').
        let again = match layout::blob_at(path) {
            Some(d) => s.blobs.insert(d, entry.size()).is_some(),
            None => s.sizes.insert(path.to_owned(), entry.size()).is_some(),
        };
        if again {
            return Err(ImportError::DuplicateEntry(path.to_owned()));
        }
        let mut small = || -> Result<Vec<u8>, ImportError> {
            if entry.size() > layout::MAX_INDEX_JSON {
                return Err(ImportError::TooLarge(path.to_owned()));
            }
            let mut b = Vec::new();
            entry.read_to_end(&mut b).map_err(not_a_tar)?;
            Ok(b)
        };
        if path == layout::INDEX_JSON {
            s.index_json = Some(small()?);
        } else if path == "manifest.json" {
            s.docker_manifest = Some(small()?);
        }
        Ok(())
    })?;
    Ok(s)
}

/// Calls `f` with each entry of a tar archive and its path (without a leading `./`); entries
/// whose data `f` does not read are skipped with a seek.
fn each_entry(
    source: &Path,
    mut f: impl FnMut(&str, tar::Entry<'_, File>) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let mut archive = tar::Archive::new(File::open(source)?);
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

fn not_a_tar(e: std::io::Error) -> ImportError {
    ImportError::NotATar(e)
}
