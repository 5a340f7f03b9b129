//! `entrepot ls`, `rm` and `gc`: what the cache holds, image by image, and clearing it out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::progress::{size, table};
use super::{CommandError, Failure, full_name, locate, open_existing, short};
use crate::config::Config;
use crate::reference::Reference;

/// Prints every cached image: name, digest, platforms, size, last use, and whether pinned.
pub fn ls(config: &Config) -> Result<(), CommandError> {
    let app = open_existing(config)?;
    let cache = &app.cache;
    let mut rows = Vec::new();
    for t in cache.tagged_images()? {
        let name = full_name(&t.upstream, &t.repo, &Reference::Tag(t.tag.clone()));
        let row = match cache.held(&t.upstream, &t.digest)? {
            Some(h) => {
                let platforms = if h.platforms.is_empty() {
                    "-".to_owned()
                } else {
                    h.platforms.join(",")
                };
                let complete = if h.missing.is_empty() {
                    String::new()
                } else {
                    format!(" (incomplete: {} blobs not held)", h.missing.len())
                };
                vec![
                    name,
                    short(&t.digest),
                    platforms,
                    format!("{}{complete}", size(h.bytes)),
                    ago(h.last_used_ms),
                    if h.pinned { "yes" } else { "no" }.into(),
                ]
            }
            None => vec![
                name,
                short(&t.digest),
                "-".into(),
                "(manifest evicted)".into(),
                "-".into(),
                "no".into(),
            ],
        };
        rows.push(row);
    }
    print!(
        "{}",
        table(
            &[
                "IMAGE",
                "DIGEST",
                "PLATFORMS",
                "SIZE",
                "LAST USED",
                "PINNED"
            ],
            &rows
        )
    );
    eprintln!(
        "{} images; {} stored of cache.max_size {}, {} pinned",
        rows.len(),
        size(cache.stored_bytes()),
        size(cache.max_size()),
        size(cache.pinned_bytes())
    );
    Ok(())
}

/// Removes images: their tags, and the content no other cached image uses.
pub fn rm(config: &Config, images: &[String]) -> Result<(), CommandError> {
    if images.is_empty() {
        return Err(Failure::Usage("no images named: give IMAGE...").into());
    }
    let app = open_existing(config)?;
    let cache = &app.cache;
    let tagged = cache.tagged_images()?;
    for name in images {
        let (upstream, repo, reference) = locate(&app, name)?;
        let shown = full_name(&upstream, &repo, &reference);
        let (tag, digest) = match &reference {
            Reference::Tag(t) => {
                let found = tagged
                    .iter()
                    .find(|i| i.upstream == upstream && i.repo == repo && i.tag == *t);
                match found {
                    Some(i) => (Some(t.as_str()), i.digest.clone()),
                    None => return Err(Failure::NotCached(shown).into()),
                }
            }
            Reference::Digest(d) => {
                if cache.manifest_bytes(&upstream, d)?.is_none() {
                    return Err(Failure::NotCached(shown).into());
                }
                (None, d.clone())
            }
        };
        let (files, bytes) = cache.remove_image(&upstream, &repo, tag, &digest)?;
        eprintln!("removed {shown}: {files} files, {}", size(bytes));
    }
    Ok(())
}

/// Removes blobs no cached manifest lists, unused for `grace`.
pub fn gc(config: &Config, grace: Duration) -> Result<(), CommandError> {
    let app = open_existing(config)?;
    let (files, bytes) = app.cache.gc(grace)?;
    eprintln!(
        "removed {files} blobs no cached manifest lists ({}), unused for {}",
        size(bytes),
        humantime::format_duration(grace)
    );
    Ok(())
}

/// `3m ago`, from milliseconds since the Unix epoch.
fn ago(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let secs = now.saturating_sub(ms) / 1000;
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}
