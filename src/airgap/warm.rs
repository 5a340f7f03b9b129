//! `entrepot warm`: pulls images through the configured upstreams into the cache, with no client.
//!
//! The pull is the mirror's own: `Cache::manifest` and `Cache::blob`, so content is verified,
//! linked and bounded exactly as when a client pulls. An index is kept whole; its platforms are
//! all fetched unless `--platform` narrows them. Signatures and attestations come along: the
//! referrers the upstream lists, and cosign's `sha256-<hex>.sig|.att|.sbom` tags. Interrupted
//! (Ctrl-C, SIGTERM), it deletes the temp files of its unfinished fills before it exits, so no
//! partial file is left.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt as _;
use indicatif::ProgressBar;

use super::progress::{Progress, size, table};
use super::{CommandError, Failure, full_name, open, short};
use crate::app::App;
use crate::blocking::off_the_workers;
use crate::cache::{Blob, CacheError, Manifest};
use crate::config::Config;
use crate::cosign::Keys;
use crate::manifest::{Descriptor, Listing, platform_matches};
use crate::reference::{Digest, ImageName, Reference, RepoName, Tag};
use crate::shutdown::Shutdown;
use crate::upstream::{Unresolved, Upstream, UpstreamError};

/// What to warm.
pub struct WarmOptions {
    pub images: Vec<String>,
    /// A file of image names, one per line (`#` comments and blank lines skipped).
    pub list: Option<PathBuf>,
    /// `os/arch[/variant]` to keep of an index; every platform when empty.
    pub platforms: Vec<String>,
    /// Kubernetes manifests, Compose files or image lists to read the images out of (`-`:
    /// standard input); see `workloads.rs`.
    pub from: Vec<PathBuf>,
    /// Print the images found, with where each came from, and warm nothing.
    pub dry_run: bool,
    /// Public keys (cosign's PEM `.pub`) one of which must have signed each image; an image
    /// without such a signature fails and leaves nothing of it in the cache.
    pub require_signature: Vec<PathBuf>,
}

/// Blobs fetched at once per image.
const PARALLEL_BLOBS: usize = 4;

/// What warming one image came to.
struct Warmed {
    digest: Digest,
    platforms: Vec<String>,
    bytes: u64,
    fetched: u64,
    artifacts: usize,
    /// The root's signatures and attestations, as manifests (for `--require-signature`).
    signatures: Vec<bytes::Bytes>,
}

/// Why one image could not be warmed (the others go on).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WarmError {
    #[error(transparent)]
    Name(#[from] Unresolved),
    #[error("manifest {reference}: {source}")]
    Manifest {
        reference: Reference,
        #[source]
        source: Arc<CacheError>,
    },
    #[error(transparent)]
    Listing(#[from] crate::manifest::BadManifest),
    #[error("the index lists no platform among {asked}: it has {has}")]
    NoPlatform { asked: String, has: String },
    #[error("cosign tag of {digest}: {source}")]
    CosignTag {
        digest: Digest,
        #[source]
        source: Arc<CacheError>,
    },
    #[error("blob {digest}: {problem}")]
    Blob { digest: Digest, problem: String },
    #[error(transparent)]
    Held(#[from] CacheError),
    #[error("the manifest was not kept in the cache")]
    ManifestNotKept,
    #[error("not signed: {0}; nothing of it is kept")]
    Unsigned(crate::cosign::Unsigned),
    #[error(
        "blob {0} was not kept: it is larger than the cache's max_size, or was evicted to make room"
    )]
    BlobNotKept(Digest),
}

pub fn warm(config: &Config, opts: WarmOptions) -> Result<(), CommandError> {
    let named = super::workloads::names(&opts)?;
    let keys = Keys::read(&opts.require_signature).map_err(Failure::from)?;
    if opts.dry_run {
        let rows: Vec<Vec<String>> = named
            .iter()
            .map(|(n, from)| vec![super::workloads::as_kubelet_reads(n), from.clone()])
            .collect();
        print!("{}", table(&["IMAGE", "FROM"], &rows));
        let distinct: std::collections::HashSet<&String> = rows.iter().map(|r| &r[0]).collect();
        eprintln!(
            "{} images found ({} references); nothing warmed (--dry-run)",
            distinct.len(),
            rows.len()
        );
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    let names: Vec<ImageName> = named
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| seen.insert(super::workloads::as_kubelet_reads(n)))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::Runtime)?;
    let app = open(config)?;
    let outcome = runtime.block_on(async {
        // The same stop signals `serve` watches, installed before any work starts.
        let mut stop = Shutdown::on_signals().map_err(Failure::Signals)?;
        let work = warm_all(&app, &names, &opts.platforms, &keys);
        Ok::<_, CommandError>(tokio::select! {
            r = work => Some(r),
            () = stop.recv() => None,
        })
    })?;
    let results = match outcome {
        Some(results) => {
            runtime.block_on(async {
                app.cache.settle().await;
                let _ = app.cache.flush_access_times().await;
            });
            results
        }
        None => {
            // Unfinished fills stop with the runtime; their temp files go with them.
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            app.cache.clear_temp()?;
            return Err(Failure::Interrupted.into());
        }
    };
    print_table(&results);
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::NotAllWarmed {
            failed: failed.len(),
            of: results.len(),
            names: failed.join(", "),
        }
        .into())
    }
}

/// One row per image: what was warmed, or why not.
fn print_table(results: &[(String, Result<Warmed, WarmError>)]) {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(name, r)| match r {
            Ok(w) => vec![
                name.clone(),
                short(&w.digest),
                super::inventory::platforms(&w.platforms),
                size(w.bytes),
                size(w.fetched),
                format!("{}", w.artifacts),
                "ok".into(),
            ],
            Err(e) => vec![
                name.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                e.to_string(),
            ],
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "IMAGE",
                "DIGEST",
                "PLATFORMS",
                "SIZE",
                "FETCHED",
                "SIGNATURES",
                "RESULT"
            ],
            &rows
        )
    );
}

async fn warm_all(
    app: &Arc<App>,
    names: &[ImageName],
    platforms: &[String],
    keys: &Keys,
) -> Vec<(String, Result<Warmed, WarmError>)> {
    // Overall: bytes of every image as each one's size becomes known.
    let progress = Progress::new(0, "bytes");
    let overall = progress.overall().clone();
    let mut out = Vec::new();
    for name in names {
        let started = Instant::now();
        let result = match app.upstreams.for_image(name).map_err(WarmError::from) {
            Ok((up, repo)) => {
                let shown = full_name(&up.name, repo.as_str(), &name.reference);
                overall.set_message(format!("image {} of {}", out.len() + 1, names.len()));
                let bar = progress.item(&shown);
                let bars = [bar.clone(), overall.clone()];
                let mut r = warm_one(app, &up, &repo, &name.reference, platforms, &bars).await;
                if let Ok(w) = &r
                    && !keys.is_empty()
                    && let Err(e) = signed(app, &up, &repo, &name.reference, w, keys).await
                {
                    r = Err(e);
                }
                bar.finish_and_clear();
                (shown, r)
            }
            Err(e) => (name.to_string(), Err(e)),
        };
        match &result.1 {
            Ok(w) => progress.line(format!(
                "warmed {}: {} ({} fetched) in {:.1}s",
                result.0,
                size(w.bytes),
                size(w.fetched),
                started.elapsed().as_secs_f64()
            )),
            Err(e) => progress.line(format!("failed {}: {e}", result.0)),
        }
        out.push(result);
    }
    progress.finish();
    out
}

async fn warm_one(
    app: &Arc<App>,
    up: &Arc<Upstream>,
    repo: &RepoName,
    reference: &Reference,
    platforms: &[String],
    bars: &[ProgressBar; 2],
) -> Result<Warmed, WarmError> {
    let root = manifest(app, up, repo, reference).await?;
    let mut manifests = vec![root.clone()];
    let mut blobs = Vec::new();
    let mut kept_platforms = Vec::new();
    let listing = listing_of(&root)?;
    for child in &listing.manifests {
        if !platform_matches(child.platform.as_deref(), platforms) {
            continue;
        }
        let m = manifest(app, up, repo, &Reference::Digest(child.digest.clone())).await?;
        blobs.extend(listing_of(&m)?.blobs);
        kept_platforms.extend(child.platform.clone());
        manifests.push(m);
    }
    blobs.extend(listing.blobs);
    if listing.manifests.is_empty() {
        kept_platforms.push("-".into());
    } else if kept_platforms.is_empty() {
        let has: Vec<&str> = listing
            .manifests
            .iter()
            .map(|m| m.platform.as_deref().unwrap_or("(none given)"))
            .collect();
        return Err(WarmError::NoPlatform {
            asked: platforms.join(", "),
            has: has.join(", "),
        });
    }
    // Signatures and attestations of every manifest kept, with their own blobs.
    let mut artifacts = 0;
    let mut signatures = Vec::new();
    for m in manifests.clone() {
        for a in artifacts_of(app, up, repo, &m.digest).await? {
            blobs.extend(listing_of(&a)?.blobs);
            if m.digest == root.digest {
                signatures.extend(a.bytes.clone());
            }
            manifests.push(a);
            artifacts += 1;
        }
    }
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    bars[0].set_length(total);
    bars[1].inc_length(total);
    let fetched = futures_util::stream::iter(blobs.iter())
        .map(|b| fetch_blob(app, up, repo, b, bars))
        .buffer_unordered(PARALLEL_BLOBS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<u64>, WarmError>>()?
        .into_iter()
        .sum();
    app.cache.settle().await;
    // A blob larger than max_size is streamed through, never kept: say so.
    let cache = app.cache.clone();
    let (name, d) = (up.name.clone(), root.digest.clone());
    let held = off_the_workers(move || cache.held(&name, &d))
        .await?
        .ok_or(WarmError::ManifestNotKept)?;
    if let Some(lost) = held.missing.first() {
        return Err(WarmError::BlobNotKept(lost.clone()));
    }
    let bytes = manifests.iter().map(|m| m.size).sum::<u64>() + total;
    Ok(Warmed {
        digest: root.digest,
        platforms: kept_platforms,
        bytes,
        fetched,
        artifacts,
        signatures,
    })
}

/// `--require-signature`: whether the image warmed carries a cosign signature by one of `keys`
/// (among the artifacts warmed with it). If not, what it brought into the cache goes again, so
/// it can never reach an archive.
async fn signed(
    app: &Arc<App>,
    up: &Upstream,
    repo: &RepoName,
    reference: &Reference,
    warmed: &Warmed,
    keys: &Keys,
) -> Result<(), WarmError> {
    let cache = app.cache.clone();
    let payload = |d: &Digest| {
        let (path, size) = cache.stored_file(d)?;
        // A payload is a few hundred bytes; anything large is not one.
        (size <= 1 << 20)
            .then(|| std::fs::read(path).ok())
            .flatten()
    };
    let candidates: Vec<&[u8]> = warmed.signatures.iter().map(|b| b.as_ref()).collect();
    let digest = &warmed.digest;
    let Err(why) = crate::cosign::verify(keys, digest, &candidates, payload) else {
        return Ok(());
    };
    let (name, repo, d) = (up.name.clone(), repo.to_string(), digest.clone());
    let tag = match reference {
        Reference::Tag(t) => Some(t.as_str().to_owned()),
        Reference::Digest(_) => None,
    };
    let cache = app.cache.clone();
    off_the_workers(move || cache.remove_image(&name, &repo, tag.as_deref(), &d)).await?;
    Err(WarmError::Unsigned(why))
}

async fn manifest(
    app: &App,
    up: &Upstream,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Manifest, WarmError> {
    app.cache
        .manifest(up, repo, reference, false)
        .await
        .map_err(|source| WarmError::Manifest {
            reference: reference.clone(),
            source,
        })
}

fn listing_of(m: &Manifest) -> Result<Listing, WarmError> {
    let bytes = m.bytes.as_deref().unwrap_or_default();
    Ok(Listing::parse(&m.digest, bytes)?)
}

/// The referrers the upstream lists for `digest`, and its cosign-style tags, as manifests. An
/// upstream without the referrers API, or without such tags, has none.
async fn artifacts_of(
    app: &App,
    up: &Upstream,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Vec<Manifest>, WarmError> {
    let mut out = Vec::new();
    if let Ok(answer) = app.cache.referrers(up, repo, digest, None).await
        && let Ok(listing) = Listing::parse(digest, &answer.body)
    {
        for r in listing.manifests {
            out.push(manifest(app, up, repo, &Reference::Digest(r.digest)).await?);
        }
    }
    for suffix in ["sig", "att", "sbom"] {
        let tag = format!("{}-{}.{suffix}", digest.algorithm().name(), digest.hex());
        let Some(tag) = Tag::parse(&tag) else {
            continue;
        };
        match app
            .cache
            .manifest(up, repo, &Reference::Tag(tag), false)
            .await
        {
            Ok(m) => {
                if !out.iter().any(|o| o.digest == m.digest) {
                    out.push(m);
                }
            }
            Err(e) if matches!(&*e, CacheError::Upstream(UpstreamError::NotFound { .. })) => {}
            Err(source) => {
                return Err(WarmError::CosignTag {
                    digest: digest.clone(),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Fetches one blob into the cache (or finds it there). Returns the bytes fetched upstream.
async fn fetch_blob(
    app: &Arc<App>,
    up: &Arc<Upstream>,
    repo: &RepoName,
    blob: &Descriptor,
    bars: &[ProgressBar; 2],
) -> Result<u64, WarmError> {
    let inc = |n: u64| bars.iter().for_each(|b| b.inc(n));
    let fail = |e: &dyn std::fmt::Display| WarmError::Blob {
        digest: blob.digest.clone(),
        problem: e.to_string(),
    };
    match app.cache.blob(up, repo, &blob.digest).await {
        Ok(Blob::Stored { size, .. }) => {
            inc(size);
            Ok(0)
        }
        Ok(Blob::Filling { reader, file }) => {
            let total = reader.fill().total().await.map_err(|e| fail(&e))?;
            let mut body = std::pin::pin!(reader.stream(file, 0, total));
            while let Some(chunk) = body.next().await {
                inc(chunk.map_err(|e| fail(&e))?.len() as u64);
            }
            Ok(total)
        }
        Err(e) => Err(fail(&e)),
    }
}
