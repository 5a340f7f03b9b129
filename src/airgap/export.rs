//! `entrepot export`: cached images as one OCI image layout inside a tar.
//!
//! Each image is written whole as the cache holds it (an index with the platforms warmed), with
//! the referrers the cache holds for each of its manifests and its cosign-style tags. Blobs are
//! streamed from the store into the tar, never held in memory; the archive is written under a
//! temporary name and renamed when complete. `--exclude-from OLD.tar` leaves out the layers and
//! configs an earlier archive carried (manifests always go: they are small, and `import` needs
//! them to check the rest is already on the far side).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::layout::{self, REF_NAME, REPOSITORY};
use super::progress::{Progress, size};
use super::{CommandError, full_name, locate, open};
use crate::cache::{Cache, TaggedImage};
use crate::config::Config;
use crate::reference::{Digest, Reference, Tag};

pub struct ExportOptions {
    pub output: PathBuf,
    pub images: Vec<String>,
    pub all: bool,
    pub exclude_from: Option<PathBuf>,
}

/// What goes into the archive.
#[derive(Default)]
struct Plan {
    entries: Vec<Value>,
    named: HashSet<String>,
    /// Files in order, each once: digest, and whether it is a manifest.
    files: Vec<(Digest, bool)>,
    seen: HashSet<Digest>,
}

pub fn export(config: &Config, opts: ExportOptions) -> Result<(), CommandError> {
    let app = open(config)?;
    let cache = &app.cache;
    let tagged = cache.tagged_images()?;
    let mut roots: Vec<(String, String, Reference, Digest)> = Vec::new();
    match (opts.all, opts.images.is_empty()) {
        (true, true) => roots.extend(tagged.iter().map(|t| {
            let tag = Tag::parse(&t.tag).expect("cached tags are valid");
            (
                t.upstream.clone(),
                t.repo.clone(),
                Reference::Tag(tag),
                t.digest.clone(),
            )
        })),
        (false, false) => {
            for name in &opts.images {
                roots.push(find(cache, &tagged, locate(&app, name)?)?);
            }
        }
        (true, false) => return Err(CommandError::new("give IMAGE... or --all, not both")),
        (false, true) => {
            return Err(CommandError::new(
                "nothing to export: give IMAGE... or --all",
            ));
        }
    }
    let excluded = match &opts.exclude_from {
        Some(old) => blobs_in_archive(old)?,
        None => HashSet::new(),
    };
    let mut plan = Plan::default();
    let mut i = 0;
    while i < roots.len() {
        let (upstream, repo, reference, digest) = roots[i].clone();
        i += 1;
        let name = full_name(&upstream, &repo, &reference);
        if !plan.named.insert(name.clone()) {
            continue;
        }
        let held = cache.held(&upstream, &digest)?.ok_or_else(|| {
            CommandError::new(format!("{name}: its manifest is no longer cached"))
        })?;
        if let Some(lost) = held.missing.first() {
            return Err(CommandError::new(format!(
                "{name} is incomplete in the cache (blob {lost} was evicted): warm it again"
            )));
        }
        let root = &held.manifests[0];
        plan.entries.push(layout::entry(
            &root.digest,
            &root.media_type,
            root.bytes.len() as u64,
            (REF_NAME, &name),
        ));
        plan.add(&held);
        // Signatures and attestations: referrers, and cosign's tags.
        for m in &held.manifests {
            for r in cache.referrers_held(&upstream, &repo, &m.digest)? {
                let Some(rh) = cache.held(&upstream, &r)? else {
                    continue;
                };
                let first = &rh.manifests[0];
                let key = format!("{upstream}/{repo}@{r}");
                if plan.named.insert(key) {
                    plan.entries.push(layout::entry(
                        &r,
                        &first.media_type,
                        first.bytes.len() as u64,
                        (REPOSITORY, &format!("{upstream}/{repo}")),
                    ));
                    plan.add(&rh);
                }
            }
            for suffix in ["sig", "att", "sbom"] {
                let tag = format!(
                    "{}-{}.{suffix}",
                    m.digest.algorithm().name(),
                    m.digest.hex()
                );
                if let Some(t) = tagged
                    .iter()
                    .find(|t| t.upstream == upstream && t.repo == repo && t.tag == tag)
                {
                    let tag = Tag::parse(&t.tag).expect("cached tags are valid");
                    roots.push((
                        upstream.clone(),
                        repo.clone(),
                        Reference::Tag(tag),
                        t.digest.clone(),
                    ));
                }
            }
        }
    }
    let written = write(cache, &plan, &excluded, &opts.output)?;
    eprintln!(
        "exported {} images ({} entries) to {}: {} in {} files{}",
        plan.named.len(),
        plan.entries.len(),
        opts.output.display(),
        size(written.bytes),
        written.files,
        if excluded.is_empty() {
            String::new()
        } else {
            format!(
                ", {} blobs left out (already in the earlier archive)",
                written.left_out
            )
        }
    );
    Ok(())
}

impl Plan {
    fn add(&mut self, held: &crate::cache::Held) {
        for m in &held.manifests {
            if self.seen.insert(m.digest.clone()) {
                self.files.push((m.digest.clone(), true));
            }
        }
        for (d, _) in &held.blobs {
            if self.seen.insert(d.clone()) {
                self.files.push((d.clone(), false));
            }
        }
    }
}

/// The cached image a name means: its tag, or a manifest held by digest.
fn find(
    cache: &Cache,
    tagged: &[TaggedImage],
    (upstream, repo, reference): (String, String, Reference),
) -> Result<(String, String, Reference, Digest), CommandError> {
    let digest = match &reference {
        Reference::Tag(t) => tagged
            .iter()
            .find(|i| i.upstream == upstream && i.repo == repo && i.tag == t.as_str())
            .map(|i| i.digest.clone()),
        Reference::Digest(d) => cache.manifest_bytes(&upstream, d)?.map(|_| d.clone()),
    };
    match digest {
        Some(d) => Ok((upstream, repo, reference, d)),
        None => Err(CommandError::new(format!(
            "{} is not in the cache: warm it first (`entrepot warm`)",
            full_name(&upstream, &repo, &reference)
        ))),
    }
}

/// The blobs an earlier archive carries (read from its headers only).
fn blobs_in_archive(path: &Path) -> Result<HashSet<Digest>, CommandError> {
    let fail =
        |e: std::io::Error| CommandError::new(format!("--exclude-from {}: {e}", path.display()));
    let mut archive = tar::Archive::new(File::open(path).map_err(fail)?);
    let mut out = HashSet::new();
    for entry in archive.entries_with_seek().map_err(fail)? {
        let entry = entry.map_err(fail)?;
        if let Some(d) = entry
            .path()
            .ok()
            .and_then(|p| layout::blob_at(&p.to_string_lossy()))
        {
            out.insert(d);
        }
    }
    Ok(out)
}

struct Written {
    bytes: u64,
    files: usize,
    left_out: usize,
}

/// Writes the archive under `OUTPUT.partial`, then renames it: a failed or interrupted export
/// leaves no archive that looks complete.
fn write(
    cache: &Cache,
    plan: &Plan,
    excluded: &HashSet<Digest>,
    output: &Path,
) -> Result<Written, CommandError> {
    let partial = PathBuf::from(format!("{}.partial", output.display()));
    let result = write_to(cache, plan, excluded, &partial);
    match result {
        Ok(w) => {
            std::fs::rename(&partial, output).map_err(|e| {
                CommandError::new(format!(
                    "cannot rename {} into place: {e}",
                    partial.display()
                ))
            })?;
            Ok(w)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn write_to(
    cache: &Cache,
    plan: &Plan,
    excluded: &HashSet<Digest>,
    path: &Path,
) -> Result<Written, CommandError> {
    let fail = |e: std::io::Error| CommandError::new(format!("{}: {e}", path.display()));
    let mut files = Vec::new();
    let mut left_out = 0;
    for (d, is_manifest) in &plan.files {
        if !is_manifest && excluded.contains(d) {
            left_out += 1;
            continue;
        }
        let (p, size) = cache.stored_file(d).ok_or_else(|| {
            CommandError::new(format!("blob {d} left the cache during the export"))
        })?;
        files.push((d, p, size));
    }
    let total: u64 = files.iter().map(|(_, _, s)| s).sum();
    let progress = Progress::new(total, "bytes");
    let out = File::create(path).map_err(fail)?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
    let small = |tar: &mut tar::Builder<BufWriter<File>>, name: &str, bytes: &[u8]| {
        tar.append_data(&mut header(bytes.len() as u64), name, bytes)
    };
    small(&mut tar, layout::OCI_LAYOUT, &layout::oci_layout()).map_err(fail)?;
    small(
        &mut tar,
        layout::INDEX_JSON,
        &layout::index_json(plan.entries.clone()),
    )
    .map_err(fail)?;
    for (d, p, size) in &files {
        let f = File::open(p).map_err(fail)?;
        let counted = Counted {
            inner: f.take(*size),
            bar: progress.overall().clone(),
        };
        tar.append_data(&mut header(*size), layout::blob_path(d), counted)
            .map_err(fail)?;
    }
    let mut out = tar.into_inner().map_err(fail)?;
    out.flush().map_err(fail)?;
    out.get_ref().sync_all().map_err(fail)?;
    progress.finish();
    Ok(Written {
        bytes: total,
        files: files.len(),
        left_out,
    })
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// A reader that moves a progress bar.
struct Counted<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
