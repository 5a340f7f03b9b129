//! `GET /v2/<name>/referrers/<digest>`: passed through to the upstream. An upstream 404 stays a
//! 404, so clients fall back to the tag schema as they should.

use http::{HeaderMap, Method, Response, StatusCode, header};

use super::{ApiError, Body, full, query_param};
use crate::reference::{Digest, RepoName};
use crate::upstream::{self, Upstream};

pub async fn get(
    up: &Upstream,
    repo: &RepoName,
    digest: &str,
    query: &str,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let digest = Digest::parse(digest).map_err(|_| ApiError::digest_invalid(digest))?;
    let q = query_param(query, "artifactType").map(|t| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("artifactType", &t)
            .finish()
    });
    let resp = up
        .send(
            Method::GET,
            repo,
            &format!("referrers/{digest}"),
            q.as_deref(),
            HeaderMap::new(),
            "referrers",
        )
        .await?;
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| {
            http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json")
        });
    let filtered = resp.headers().get("oci-filters-applied").cloned();
    let body = upstream::read_limited(resp, 4 << 20, &up.name).await?;
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(f) = filtered {
        b = b.header("oci-filters-applied", f);
    }
    Ok(b.body(if head { full(Vec::new()) } else { full(body) })
        .expect("valid"))
}
