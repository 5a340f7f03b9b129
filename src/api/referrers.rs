//! `GET /v2/<name>/referrers/<digest>`: always answered, over any upstream: its own API, else the
//! fallback tag, else what the cache holds, possibly an empty index (`cache/lists.rs`).

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};

use super::State;
use super::{ApiError, Body, full, query_param};
use crate::reference::{Digest, RepoName};
use crate::upstream::Upstream;

pub(super) async fn get(
    app: &Arc<State>,
    up: &Upstream,
    repo: &RepoName,
    digest: &str,
    query: &str,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let digest = Digest::parse(digest).map_err(|_| ApiError::digest_invalid(digest))?;
    let artifact_type = query_param(query, "artifactType");
    let answer = app
        .cache
        .referrers(up, repo, &digest, artifact_type.as_deref())
        .await?;
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, header_value(&answer.content_type))
        .header(header::CONTENT_LENGTH, answer.body.len());
    if let Some(f) = answer
        .filters_applied
        .and_then(|f| HeaderValue::from_str(&f).ok())
    {
        b = b.header("oci-filters-applied", f);
    }
    Ok(b.body(if head {
        full(Vec::new())
    } else {
        full(answer.body)
    })
    .expect("valid"))
}

/// The content type from the cache's text (an upstream's visible ASCII, or our own); anything
/// else becomes the index type, so a response is always well formed.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text)
        .unwrap_or_else(|_| HeaderValue::from_static("application/vnd.oci.image.index.v1+json"))
}
