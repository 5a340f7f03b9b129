//! `[cache] require_signature`: `serve` refuses (403 DENIED, saying why) a manifest it cannot
//! verify as signed with cosign by one of the keys, as Zot's `onlySigned` does.
//!
//! A manifest is verified by its own digest: its signature image (the `sha256-<hex>.sig` tag
//! beside it, through the cache like any manifest) and that image's payload layers (through
//! the cache like any blob), checked by `cosign::verify`. So verifying costs no upstream request
//! beyond the signature image itself, and works offline from what the cache holds. The verdict
//! is kept per (upstream, digest): a signed digest stays signed for the process's life (the keys
//! do not change), an unsigned one is asked again after [`UNSIGNED_TTL`] (it may be signed by
//! then). The platform manifests of a verified index are taken as signed with it (cosign signs
//! the digest a client names, the index; `--recursive` signs each platform too, which also
//! passes). cosign's own artifacts (`.sig`, `.att`, `.sbom` tags, and manifests whose layers are
//! signing payloads) are never refused: they are how a client checks the signature itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use http::StatusCode;

use super::{ApiError, Code, State};
use crate::cache::{Blob, CacheError, Manifest};
use crate::cosign::{Keys, SIMPLE_SIGNING, Unsigned, is_cosign_tag, signature_tag};
use crate::manifest::Listing;
use crate::media_type::MediaType;
use crate::reference::{Digest, Reference, RepoName, Tag};
use crate::upstream::{Upstream, UpstreamError};

/// How long an unsigned verdict is kept before the signature is looked for again.
const UNSIGNED_TTL: Duration = Duration::from_secs(10);

/// Largest signing payload read (a payload is a few hundred bytes).
const MAX_PAYLOAD: u64 = 1 << 20;

/// The keys, and the verdicts so far.
pub(crate) struct Required {
    keys: Keys,
    signed: moka::sync::Cache<(String, Digest), ()>,
    unsigned: moka::sync::Cache<(String, Digest), Unsigned>,
}

impl Required {
    /// The keys of `[cache] require_signature` (checked at config load), or None without any.
    pub(crate) fn from_config(
        files: &[PathBuf],
    ) -> Result<Option<Required>, crate::cosign::KeyError> {
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some(Required {
            keys: Keys::read(files)?,
            signed: moka::sync::Cache::builder().max_capacity(100_000).build(),
            unsigned: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(UNSIGNED_TTL)
                .build(),
        }))
    }
}

/// Whether `m`, asked for as `reference`, may be served: Ok, or 403 DENIED naming why.
pub(super) async fn check(
    app: &Arc<State>,
    up: &Arc<Upstream>,
    repo: &RepoName,
    reference: &Reference,
    m: &Manifest,
) -> Result<(), ApiError> {
    let Some(req) = &app.required else {
        return Ok(());
    };
    if matches!(reference, Reference::Tag(t) if is_cosign_tag(t.as_str())) {
        return Ok(());
    }
    let key = (up.name.clone(), m.digest.clone());
    // A warm GET of a signed digest costs one map lookup: no parse, no verification.
    if req.signed.contains_key(&key) || m.bytes.as_deref().is_some_and(is_signing_artifact) {
        return Ok(());
    }
    if let Some(why) = req.unsigned.get(&key) {
        return Err(refused(app, &m.digest, &why));
    }
    match verify(app, req, up, repo, &m.digest).await? {
        Ok(()) => {
            // An index's platforms are covered from its bytes: one verified by a HEAD (no
            // body) is verified again by the GET that follows, which covers them.
            let index = matches!(m.media_type, MediaType::OciIndex | MediaType::DockerList);
            if !index || m.bytes.is_some() {
                cover_children(req, up, m);
                req.signed.insert(key, ());
            }
            Ok(())
        }
        Err(why) => {
            req.unsigned.insert(key, why.clone());
            Err(refused(app, &m.digest, &why))
        }
    }
}

/// Marks an index's platform manifests as signed with it.
fn cover_children(req: &Required, up: &Upstream, m: &Manifest) {
    if let Some(bytes) = &m.bytes
        && let Ok(listing) = Listing::parse(&m.digest, bytes)
    {
        for child in listing.manifests {
            req.signed.insert((up.name.clone(), child.digest), ());
        }
    }
}

/// Whether a manifest is one of cosign's signature images (every layer a signing payload).
fn is_signing_artifact(bytes: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    let layers = v["layers"].as_array();
    layers.is_some_and(|l| {
        !l.is_empty()
            && l.iter()
                .all(|d| d["mediaType"].as_str() == Some(SIMPLE_SIGNING))
    })
}

/// Looks for `digest`'s signature image and checks it: the verdict, or the error that kept it
/// from being reached (an upstream down with nothing cached: not a verdict, and not kept).
async fn verify(
    app: &Arc<State>,
    req: &Required,
    up: &Arc<Upstream>,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Result<(), Unsigned>, ApiError> {
    let tag = Tag::parse(&signature_tag(digest)).expect("cosign's tags are tags");
    let sig = match app
        .cache
        .manifest(up, repo, &Reference::Tag(tag), false)
        .await
    {
        Ok(sig) => sig,
        // None upstream, or none held offline (where the upstream is never asked).
        Err(e)
            if matches!(
                *e,
                CacheError::Upstream(
                    UpstreamError::NotFound { .. } | UpstreamError::Offline { .. }
                )
            ) =>
        {
            return Ok(Err(Unsigned::NoSignature));
        }
        Err(e) => return Err(ApiError::from(&*e)),
    };
    let Some(bytes) = sig.bytes else {
        return Ok(Err(Unsigned::NoSignature));
    };
    let mut payloads = Vec::new();
    if let Ok(listing) = Listing::parse(&sig.digest, &bytes) {
        for layer in listing.blobs {
            if layer.size <= MAX_PAYLOAD
                && let Some(p) = read_blob(app, up, repo, &layer.digest).await
            {
                payloads.push((layer.digest, p));
            }
        }
    }
    let payload = |d: &Digest| {
        payloads
            .iter()
            .find(|(pd, _)| pd == d)
            .map(|(_, p)| p.clone())
    };
    Ok(crate::cosign::verify(
        &req.keys,
        digest,
        &[bytes.as_ref()],
        payload,
    ))
}

/// A small blob's bytes, through the cache (fetched if it is not held).
async fn read_blob(
    app: &Arc<State>,
    up: &Arc<Upstream>,
    repo: &RepoName,
    digest: &Digest,
) -> Option<Vec<u8>> {
    match app.cache.blob(up, repo, digest).await.ok()? {
        Blob::Stored { .. } => {}
        Blob::Filling { reader, file } => {
            let total = reader.fill().total().await.ok()?;
            let mut body = std::pin::pin!(reader.stream(file, 0, total));
            let mut out = Vec::new();
            while let Some(chunk) = body.next().await {
                out.extend_from_slice(&chunk.ok()?);
            }
            return Some(out);
        }
    }
    let (path, size) = app.cache.stored_file(digest)?;
    if size > MAX_PAYLOAD {
        return None;
    }
    crate::blocking::off_the_workers(move || std::fs::read(path))
        .await
        .ok()
}

/// The 403 for an unsigned manifest.
fn refused(app: &State, digest: &Digest, why: &Unsigned) -> ApiError {
    app.metrics.signature_refused();
    ApiError::new(
        StatusCode::FORBIDDEN,
        Code::Denied,
        format!(
            "{digest} is not served: [cache] require_signature wants a cosign signature by one of its keys, and {why}"
        ),
    )
}
