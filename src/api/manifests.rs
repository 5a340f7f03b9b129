//! `HEAD/GET /v2/<name>/manifests/<reference>`: exact bytes, the stored media type, and the
//! client's `Accept` honoured without ever relabelling `Content-Type`.

use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode, header};

use super::State;
use super::{ApiError, Body, Code, full};
use crate::cache::Manifest;
use crate::media_type::media_type_of;
use crate::metrics::{Content, ServedFrom};
use crate::reference::{DigestError, Reference, RepoName};
use crate::upstream::Upstream;

pub(super) async fn get(
    app: &Arc<State>,
    up: &Arc<Upstream>,
    repo: &RepoName,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let reference = parse_reference(reference)?;
    let m = app
        .cache
        .manifest(up, repo, &reference, head)
        .await
        .map_err(|e| ApiError::from(&*e))?;
    super::signed::check(app, up, repo, &reference, &m).await?;
    if !accepts(headers, m.media_type.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::ManifestUnknown,
            format!(
                "the manifest is {}, which the request's Accept header does not allow",
                m.media_type
            ),
        ));
    }
    if !head {
        app.cache.prefetch(up, repo, &m);
    }
    let etag = format!("\"{}\"", m.digest);
    let b = Response::builder()
        .header("docker-content-digest", m.digest.to_string())
        .header(header::ETAG, &etag);
    if not_modified(headers, &etag, &m) {
        return Ok(b
            .status(StatusCode::NOT_MODIFIED)
            .body(full(Vec::new()))
            .expect("valid"));
    }
    let b = b
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, m.media_type.as_str())
        .header(header::CONTENT_LENGTH, m.size);
    let body = match (head, m.bytes) {
        (true, _) => full(Vec::new()),
        (false, Some(bytes)) => {
            app.metrics
                .served(Content::Manifest, ServedFrom::Cache, bytes.len() as u64);
            full(bytes)
        }
        // The cache returns bytes for every GET; a HEAD-only answer here would be a bug.
        (false, None) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "manifest body unavailable",
            ));
        }
    };
    Ok(b.body(body).expect("valid"))
}

/// What follows `/manifests/`, or the OCI error for it: an unsupported algorithm, a malformed
/// digest, or an invalid tag.
fn parse_reference(reference: &str) -> Result<Reference, ApiError> {
    Reference::parse(reference).map_err(|e| match e {
        DigestError::UnsupportedAlgorithm => ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::DigestInvalid,
            "unsupported digest algorithm",
        ),
        DigestError::Invalid if reference.contains(':') => ApiError::digest_invalid(reference),
        // Neither a digest nor a tag (a leading `.` or `-`, over 128 characters, an encoding, a
        // NUL): no manifest can have that name, so it is not found (the OCI conformance suite
        // asks this of `.INVALID_MANIFEST_NAME`; the spec has no code for a bad tag).
        DigestError::Invalid => ApiError::new(
            StatusCode::NOT_FOUND,
            Code::ManifestUnknown,
            format!(
                "no manifest is named {:?}: it is not a valid tag",
                reference.chars().take(200).collect::<String>()
            ),
        ),
    })
}

/// Whether the client's `If-None-Match` already names this manifest.
fn not_modified(headers: &HeaderMap, etag: &str, m: &Manifest) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|v| v == etag || v == m.digest.to_string() || v == "*")
}

/// Whether the client's `Accept` lines allow `media_type`: all lines merged, split on commas,
/// parameters dropped; no header or `*/*` means anything.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut any_line = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let t = media_type_of(item);
            if t.is_empty() {
                continue;
            }
            any_line = true;
            if t == "*/*" || t == media_type || t == "application/*" {
                return true;
            }
        }
    }
    !any_line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(lines: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for l in lines {
            m.append(header::ACCEPT, l.parse().unwrap());
        }
        m
    }

    #[test]
    fn accept_rules() {
        let oci = "application/vnd.oci.image.index.v1+json";
        assert!(accepts(&h(&[]), oci));
        assert!(accepts(
            &h(&["application/vnd.docker.distribution.manifest.v2+json, */*;q=0.8"]),
            oci
        ));
        assert!(accepts(
            &h(&[
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.oci.image.index.v1+json; q=0.5"
            ]),
            oci
        ));
        assert!(!accepts(
            &h(&["application/vnd.docker.distribution.manifest.v2+json"]),
            oci
        ));
    }
}
