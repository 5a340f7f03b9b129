//! `entrepot ls`, `rm` and `gc`: what the cache holds, image by image, and clearing it out.
//! Beside a running `serve`, that process does the work (`admin/`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::progress::{StreamedTable, size};
use super::{CommandError, Failure, full_name, locate, open_existing, remote, short};
use crate::admin::{self, Console};
use crate::app::App;
use crate::cache::{Cache, Compaction, TaggedImage};
use crate::config::Config;
use crate::cosign::is_cosign_tag;
use crate::reference::{Digest, Reference};

/// Prints every cached image: name, digest, platforms, size, last use, and whether pinned.
/// Images held by digest alone are listed by digest; cosign's signature, attestation and SBOM
/// tags are counted apart (they go with their image: `export` takes them along).
pub fn ls(config: &Config) -> Result<(), CommandError> {
    if let Some(done) = remote(config, &admin::Request::Ls) {
        return done;
    }
    let app = open_existing(config)?;
    admin::stdio(|c| ls_in(&app, c))
}

/// [`ls`] on an open cache, its output on `console`.
pub(crate) fn ls_in(app: &App, console: &mut Console<'_>) -> Result<(), CommandError> {
    let cache = &app.cache;
    let tagged = cache.tagged_images()?;
    const HEADER: [&str; 7] = [
        "IMAGE",
        "DIGEST",
        "PLATFORMS",
        "SIZE",
        "LAST USED",
        "PINNED",
        "SIGNATURES",
    ];
    // Each row is printed as it is made: a million-blob cache lists for seconds.
    let mut rows = StreamedTable::new(&HEADER);
    let mut print = |text: &str| console.print(text);
    let mut attached = 0;
    for t in &tagged {
        if is_cosign_tag(t.tag.as_str()) {
            attached += 1;
            continue;
        }
        let name = full_name(&t.upstream, &t.repo, &Reference::Tag(t.tag.clone()));
        let image = Listed {
            upstream: &t.upstream,
            repo: &t.repo,
            digest: &t.digest,
        };
        rows.push(row(cache, &tagged, name, image)?, &mut print);
    }
    let by_digest = cache.digest_images(&tagged)?;
    for i in &by_digest {
        let name = full_name(&i.upstream, &i.repo, &Reference::Digest(i.digest.clone()));
        let image = Listed {
            upstream: &i.upstream,
            repo: &i.repo,
            digest: &i.digest,
        };
        rows.push(row(cache, &tagged, name, image)?, &mut print);
    }
    rows.flush(&mut print);
    let attached = if attached == 0 {
        String::new()
    } else {
        format!(" (and {attached} signature, attestation or SBOM tags)")
    };
    console.line(format!(
        "{} images{attached}, {} of them by digest alone; {} stored of cache.max_size {}, {} pinned",
        rows.len(),
        by_digest.len(),
        size(cache.stored_bytes()),
        size(cache.max_size()),
        size(cache.pinned_bytes())
    ));
    Ok(())
}

/// An image `ls` lists: where, and its root manifest.
struct Listed<'a> {
    upstream: &'a str,
    repo: &'a str,
    digest: &'a Digest,
}

/// One `ls` row: what the cache holds of the image.
fn row(
    cache: &Cache,
    tagged: &[TaggedImage],
    name: String,
    image: Listed<'_>,
) -> Result<Vec<String>, CommandError> {
    let digest = image.digest;
    let mut row = match cache.held(image.upstream, digest)? {
        Some(h) => {
            let complete = if h.missing.is_empty() {
                String::new()
            } else {
                format!(" (incomplete: {} blobs not held)", h.missing.len())
            };
            vec![
                name,
                short(digest),
                platforms(&h.platforms),
                format!("{}{complete}", size(h.bytes)),
                ago(h.last_used_ms),
                if h.pinned { "yes" } else { "no" }.into(),
            ]
        }
        None => vec![
            name,
            short(digest),
            "-".into(),
            "(manifest evicted)".into(),
            "-".into(),
            "no".into(),
        ],
    };
    row.push(signatures(cache, tagged, &image)?.to_string());
    Ok(row)
}

/// How many signatures, attestations and SBOMs the cache holds for an image: cosign's tags of
/// its root and the referrers of its root, each once.
fn signatures(
    cache: &Cache,
    tagged: &[TaggedImage],
    image: &Listed<'_>,
) -> Result<usize, CommandError> {
    let prefix = format!(
        "{}-{}.",
        image.digest.algorithm().name(),
        image.digest.hex()
    );
    // `tagged` is sorted by upstream, repository and tag: the image's cosign tags are one run,
    // found by bisection (a scan per row made `ls` quadratic in the number of tags).
    let start = tagged.partition_point(|t| {
        (t.upstream.as_str(), t.repo.as_str(), t.tag.as_str())
            < (image.upstream, image.repo, prefix.as_str())
    });
    let mut found: std::collections::HashSet<Digest> = tagged[start..]
        .iter()
        .take_while(|t| {
            t.upstream == image.upstream
                && t.repo == image.repo
                && t.tag.as_str().starts_with(&prefix)
        })
        .filter(|t| is_cosign_tag(t.tag.as_str()))
        .map(|t| t.digest.clone())
        .collect();
    found.extend(cache.referrers_held(image.upstream, image.repo, image.digest)?);
    Ok(found.len())
}

/// The platforms of an index, or `-`; many are counted rather than listed (a table row stays
/// narrower than a terminal).
pub(super) fn platforms(platforms: &[String]) -> String {
    let all = platforms.join(",");
    match platforms.len() {
        0 => "-".to_owned(),
        n if all.len() > 40 => format!("{n} platforms"),
        _ => all,
    }
}

/// Removes images: their tags, and the content no other cached image uses.
pub fn rm(config: &Config, images: &[String]) -> Result<(), CommandError> {
    if images.is_empty() {
        return Err(Failure::Usage("no images named: give IMAGE...").into());
    }
    let request = admin::Request::Rm {
        images: images.to_vec(),
    };
    if let Some(done) = remote(config, &request) {
        return done;
    }
    let app = open_existing(config)?;
    admin::stdio(|c| rm_in(&app, images, c))
}

/// [`rm`] on an open cache, its output on `console`.
pub(crate) fn rm_in(
    app: &App,
    images: &[String],
    console: &mut Console<'_>,
) -> Result<(), CommandError> {
    let cache = &app.cache;
    for name in images {
        let (upstream, repo, reference) = locate(app, name)?;
        let shown = full_name(&upstream, &repo, &reference);
        let (tag, digest) = match &reference {
            // One lookup in the index, not a list of every tag the cache holds.
            Reference::Tag(t) => match cache.tagged_digest(&upstream, &repo, t.as_str())? {
                Some(d) => (Some(t.as_str()), d),
                None => return Err(Failure::NotCached(shown).into()),
            },
            Reference::Digest(d) => {
                if cache.manifest_bytes(&upstream, d)?.is_none() {
                    return Err(Failure::NotCached(shown).into());
                }
                (None, d.clone())
            }
        };
        let (files, bytes) = cache.remove_image(&upstream, &repo, tag, &digest)?;
        console.line(format!("removed {shown}: {files} files, {}", size(bytes)));
    }
    Ok(())
}

/// Removes blobs no cached manifest lists, unused for `grace`.
pub fn gc(config: &Config, grace: Duration) -> Result<(), CommandError> {
    if let Some(done) = remote(config, &admin::Request::Gc { grace }) {
        return done;
    }
    let app = open_existing(config)?;
    admin::stdio(|c| gc_in(&app, grace, c))
}

/// [`gc`] on an open cache, its output on `console`.
pub(crate) fn gc_in(
    app: &App,
    grace: Duration,
    console: &mut Console<'_>,
) -> Result<(), CommandError> {
    let (files, bytes) = app.cache.gc(grace)?;
    console.line(format!(
        "removed {files} blobs no cached manifest lists ({}), unused for {}",
        size(bytes),
        humantime::format_duration(grace)
    ));
    // What eviction and removals freed in the index's file goes back to the disk (and, as the
    // file counts towards max_size, to the cache).
    match app.cache.compact_index()? {
        Compaction::Done { before, after } => console.line(format!(
            "index compacted: {} -> {}",
            size(before),
            size(after)
        )),
        Compaction::Busy => {
            console.line("index not compacted: a request was using it; run gc again to compact it")
        }
        // The compaction would stop every request that needs the index for seconds.
        Compaction::NotWorthIt { file, free } => console.line(format!(
            "index not compacted: {} of its {} are free, too little to stop the index for",
            size(free),
            size(file)
        )),
    }
    Ok(())
}

/// `3m ago`, from milliseconds since the Unix epoch.
fn ago(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let secs = now.saturating_sub(ms) / 1000;
    // The largest unit only: `3h ago`, not `3h 4m 12s ago`.
    let (n, unit) = match secs {
        s if s < 60 => (s, "s"),
        s if s < 3600 => (s / 60, "m"),
        s if s < 86_400 => (s / 3600, "h"),
        s => (s / 86_400, "d"),
    };
    format!("{n}{unit} ago")
}
