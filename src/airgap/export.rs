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
use super::{CommandError, Failure, full_name, locate, open_existing};
use crate::admin::{self, Console};
use crate::app::App;
use crate::cache::{Cache, TaggedImage};
use crate::config::Config;
use crate::reference::{Digest, Reference};

pub struct ExportOptions {
    pub output: PathBuf,
    pub images: Vec<String>,
    pub all: bool,
    /// With `all`: an incomplete image fails the export instead of being left out.
    pub strict: bool,
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
    /// Images left out (with `--all`), and why.
    left_out: Vec<(String, Failure)>,
}

pub fn export(config: &Config, opts: ExportOptions) -> Result<(), CommandError> {
    // A running `serve` writes the archive itself: the paths must mean the same there.
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|source| Failure::Io {
            what: p.display().to_string(),
            source,
        })
    };
    let request = admin::Request::Export {
        output: absolute(&opts.output)?,
        images: opts.images.clone(),
        all: opts.all,
        strict: opts.strict,
        exclude_from: opts.exclude_from.as_deref().map(absolute).transpose()?,
    };
    if let Some(done) = super::remote(config, &request) {
        return done;
    }
    let app = open_existing(config)?;
    admin::stdio(|c| export_in(&app, opts, c))
}

/// [`export`] on an open cache, its output on `console`.
pub(crate) fn export_in(
    app: &App,
    opts: ExportOptions,
    console: &mut Console<'_>,
) -> Result<(), CommandError> {
    let cache = &app.cache;
    let tagged = cache.tagged_images()?;
    let roots = roots(app, &tagged, &opts)?;
    let excluded = match &opts.exclude_from {
        Some(old) => blobs_in_archive(old)?,
        None => HashSet::new(),
    };
    let plan = Plan::of(cache, &tagged, roots, opts.all && !opts.strict)?;
    for (_, why) in &plan.left_out {
        console.line(format!("left out: {why}"));
    }
    let written = write(cache, &plan, &excluded, &opts.output, console.terminal())?;
    console.line(format!(
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
    ));
    Ok(())
}

/// An image to export: upstream, repository, how it was named, and its root manifest's digest.
type Root = (String, String, Reference, Digest);

/// The images the command line names: each one given, or with `--all` every image held, tagged
/// or by digest alone.
fn roots(
    app: &App,
    tagged: &[TaggedImage],
    opts: &ExportOptions,
) -> Result<Vec<Root>, CommandError> {
    match (opts.all, opts.images.is_empty()) {
        (true, true) => {
            let by_digest = app.cache.digest_images(tagged)?;
            Ok(tagged
                .iter()
                .map(tagged_root)
                .chain(by_digest.into_iter().map(|i| {
                    let reference = Reference::Digest(i.digest.clone());
                    (i.upstream, i.repo, reference, i.digest)
                }))
                .collect())
        }
        (false, false) => opts
            .images
            .iter()
            .map(|name| find(&app.cache, tagged, locate(app, name)?))
            .collect(),
        (true, false) => Err(Failure::Usage("give IMAGE... or --all, not both").into()),
        (false, true) => Err(Failure::Usage("nothing to export: give IMAGE... or --all").into()),
    }
}

/// A tagged image as a root to export.
fn tagged_root(t: &TaggedImage) -> Root {
    (
        t.upstream.clone(),
        t.repo.clone(),
        Reference::Tag(t.tag.clone()),
        t.digest.clone(),
    )
}

impl Plan {
    /// What to write for these images, with their signatures and attestations (referrers, and
    /// cosign's tags, which join the roots). An image not held whole stops the export, or with
    /// `skip_incomplete` is left out and named.
    fn of(
        cache: &Cache,
        tagged: &[TaggedImage],
        mut roots: Vec<Root>,
        skip_incomplete: bool,
    ) -> Result<Plan, CommandError> {
        let mut plan = Plan::default();
        let mut i = 0;
        while i < roots.len() {
            let (upstream, repo, reference, digest) = roots[i].clone();
            i += 1;
            let name = full_name(&upstream, &repo, &reference);
            if !plan.named.insert(name.clone()) {
                continue;
            }
            let held = match cache.held(&upstream, &digest)? {
                Some(h) => h,
                None if skip_incomplete => {
                    plan.named.remove(&name);
                    plan.left_out
                        .push((name.clone(), Failure::ManifestGone(name)));
                    continue;
                }
                None => return Err(Failure::ManifestGone(name).into()),
            };
            if let Some(lost) = held.missing.first() {
                let why = Failure::Incomplete {
                    name: name.clone(),
                    lost: lost.clone(),
                };
                if skip_incomplete {
                    plan.named.remove(&name);
                    plan.left_out.push((name, why));
                    continue;
                }
                return Err(why.into());
            }
            let root = &held.manifests[0];
            plan.entries.push(layout::entry(
                &root.digest,
                &root.media_type,
                root.bytes.len() as u64,
                (REF_NAME, &name),
            ));
            plan.add(&held);
            for m in &held.manifests {
                plan.add_referrers(cache, &upstream, &repo, &m.digest)?;
                roots.extend(cosign_tags(tagged, &upstream, &repo, &m.digest));
            }
        }
        Ok(plan)
    }

    /// The referrers of `digest` the cache holds, each as an entry of its own.
    fn add_referrers(
        &mut self,
        cache: &Cache,
        upstream: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<(), CommandError> {
        for r in cache.referrers_held(upstream, repo, digest)? {
            let Some(rh) = cache.held(upstream, &r)? else {
                continue;
            };
            let first = &rh.manifests[0];
            let key = format!("{upstream}/{repo}@{r}");
            if self.named.insert(key) {
                self.entries.push(layout::entry(
                    &r,
                    &first.media_type,
                    first.bytes.len() as u64,
                    (REPOSITORY, &format!("{upstream}/{repo}")),
                ));
                self.add(&rh);
            }
        }
        Ok(())
    }
}

/// cosign's `sha256-<hex>.sig|.att|.sbom` tags of `digest` that the cache holds, as roots.
fn cosign_tags(tagged: &[TaggedImage], upstream: &str, repo: &str, digest: &Digest) -> Vec<Root> {
    ["sig", "att", "sbom"]
        .iter()
        .filter_map(|suffix| {
            let tag = format!("{}-{}.{suffix}", digest.algorithm().name(), digest.hex());
            tagged
                .iter()
                .find(|t| t.upstream == upstream && t.repo == repo && t.tag.as_str() == tag)
                .map(tagged_root)
        })
        .collect()
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
) -> Result<Root, CommandError> {
    let digest = match &reference {
        Reference::Tag(t) => tagged
            .iter()
            .find(|i| i.upstream == upstream && i.repo == repo && i.tag == *t)
            .map(|i| i.digest.clone()),
        Reference::Digest(d) => cache.manifest_bytes(&upstream, d)?.map(|_| d.clone()),
    };
    match digest {
        Some(d) => Ok((upstream, repo, reference, d)),
        None => Err(Failure::NotWarmed(full_name(&upstream, &repo, &reference)).into()),
    }
}

/// The blobs an earlier archive carries (read from its headers only).
fn blobs_in_archive(path: &Path) -> Result<HashSet<Digest>, CommandError> {
    let fail = |source| Failure::Io {
        what: format!("--exclude-from {}", path.display()),
        source,
    };
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
    bars: bool,
) -> Result<Written, CommandError> {
    let partial = PathBuf::from(format!("{}.partial", output.display()));
    let result = write_to(cache, plan, excluded, &partial, bars);
    match result {
        Ok(w) => {
            std::fs::rename(&partial, output).map_err(|source| Failure::Io {
                what: format!("cannot rename {} into place", partial.display()),
                source,
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
    bars: bool,
) -> Result<Written, CommandError> {
    let fail = |source| Failure::Io {
        what: path.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    let mut left_out = 0;
    for (d, is_manifest) in &plan.files {
        if !is_manifest && excluded.contains(d) {
            left_out += 1;
            continue;
        }
        let (p, size) = cache
            .stored_file(d)
            .ok_or_else(|| Failure::BlobGone(d.clone()))?;
        files.push((d, p, size));
    }
    let total: u64 = files.iter().map(|(_, _, s)| s).sum();
    let progress = Progress::drawn(total, "bytes", bars);
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
