//! The distribution API calls the mirror makes, one typed method per endpoint.
//!
//! Each builds its wire path and headers, sends through [`Upstream::send`], and reads the answer
//! into a plain value: the cache never sees a URL, an `Accept` header or a response header.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};

use super::Upstream;
use super::body::{BlobBody, UpstreamResponse, read_body};
use super::error::{Resource, UpstreamError};
use crate::media_type::{MANIFEST_TYPES, MediaType, media_type_of};
use crate::reference::{Digest, Reference, RepoName, Tag};

/// Largest manifest we accept from an upstream (distribution's own limit is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// The `Accept` header of every manifest request: all of [`MANIFEST_TYPES`] at once.
static ACCEPT_MANIFESTS: LazyLock<HeaderValue> = LazyLock::new(|| {
    let types: Vec<&str> = MANIFEST_TYPES.iter().map(MediaType::as_str).collect();
    HeaderValue::from_str(&types.join(", ")).expect("media types are valid header text")
});

/// Largest tags list we read.
const MAX_TAGS_LIST_BYTES: usize = 16 << 20;
/// Largest referrers index we read.
const MAX_REFERRERS_BYTES: usize = 4 << 20;

/// What a manifest HEAD told: the digest, media type and length, where the upstream gave them.
pub(crate) struct ManifestHead {
    pub(crate) digest: Option<Digest>,
    /// Parameters dropped; not yet checked to be a manifest type.
    pub(crate) media_type: Option<String>,
    pub(crate) size: Option<u64>,
}

/// A manifest as the upstream sent it: its bytes, unverified, and what the headers claimed.
pub(crate) struct ManifestAnswer {
    /// Parameters dropped; not yet checked to be a manifest type.
    pub(crate) content_type: Option<String>,
    /// `Docker-Content-Digest`, if it held a valid digest.
    pub(crate) digest: Option<Digest>,
    pub(crate) bytes: Vec<u8>,
}

/// One page of a tags list, valid tags only, and whether the upstream said there is more.
pub(crate) struct TagsPage {
    pub(crate) tags: Vec<String>,
    /// The `last` of the next page, when the upstream's `Link` header says one follows.
    pub(crate) next: Option<String>,
}

/// Pages of an upstream's tags list followed, at most: a registry that pages by 100 lists
/// 10,000 tags before the mirror stops asking.
const MAX_TAGS_PAGES: usize = 100;

/// A referrers answer, passed on as it came (header values as text: the cache speaks no HTTP).
#[derive(Clone)]
pub(crate) struct ReferrersAnswer {
    pub(crate) content_type: String,
    /// `OCI-Filters-Applied`, if the upstream applied the `artifactType` filter.
    pub(crate) filters_applied: Option<String>,
    pub(crate) body: Bytes,
}

impl Upstream {
    pub(crate) async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestHead, UpstreamError> {
        let resp = self.manifest_request(Method::HEAD, repo, reference).await?;
        Ok(ManifestHead {
            digest: content_digest(resp.headers()),
            media_type: content_type(resp.headers()),
            size: resp.declared_length(),
        })
    }

    pub(crate) async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestAnswer, UpstreamError> {
        let mut resp = self.manifest_request(Method::GET, repo, reference).await?;
        let (content_type, digest) = (content_type(resp.headers()), content_digest(resp.headers()));
        let bytes = read_body(&mut resp, MAX_MANIFEST_BYTES, &self.name).await?;
        Ok(ManifestAnswer {
            content_type,
            digest,
            bytes,
        })
    }

    /// A blob's size, from a HEAD's `Content-Length`.
    pub(crate) async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64, UpstreamError> {
        let resp = self.blob(Method::HEAD, repo, digest).await?;
        resp.declared_length()
            .ok_or_else(|| UpstreamError::BadResponse {
                upstream: self.name.clone(),
                reason: "blob HEAD without Content-Length".into(),
            })
    }

    pub(crate) async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<BlobBody, UpstreamError> {
        let resp = self.blob(Method::GET, repo, digest).await?;
        Ok(BlobBody::new(resp, &self.name))
    }

    /// Every tag of the repository the upstream lists, in lexical order: its pages followed
    /// through their `Link` headers (at most [`MAX_TAGS_PAGES`]), whether or not it pages (the
    /// mirror pages the answer itself).
    pub(crate) async fn all_tags(&self, repo: &RepoName) -> Result<Vec<String>, UpstreamError> {
        let mut tags = Vec::new();
        let mut last: Option<String> = None;
        for _ in 0..MAX_TAGS_PAGES {
            let page = self.tags_list(repo, None, last.as_deref()).await?;
            tags.extend(page.tags);
            match page.next {
                // A next page that does not move on would be asked for for ever.
                Some(next) if last.as_ref() != Some(&next) => last = Some(next),
                _ => break,
            }
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// One page of the repository's tags (`n` at most, after `last`).
    pub(crate) async fn tags_list(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<TagsPage, UpstreamError> {
        // The serializer is not Send: finish it before any await.
        let q = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if let Some(n) = n {
                q.append_pair("n", &n.to_string());
            }
            if let Some(l) = last {
                q.append_pair("last", l);
            }
            q.finish()
        };
        let query = (!q.is_empty()).then_some(q.as_str());
        let url = self.url(repo, "tags/list", query);
        let mut resp = self
            .send(
                Method::GET,
                url,
                &scope(repo),
                HeaderMap::new(),
                Resource::Repository,
            )
            .await?;
        let next = resp
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_last);
        let body = read_body(&mut resp, MAX_TAGS_LIST_BYTES, &self.name).await?;
        #[derive(serde::Deserialize)]
        struct List {
            tags: Option<Vec<String>>,
        }
        let list: List = serde_json::from_slice(&body).map_err(|e| UpstreamError::BadResponse {
            upstream: self.name.clone(),
            reason: format!("tags list is not JSON: {e}"),
        })?;
        let tags = list
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter(|t| Tag::parse(t).is_some())
            .collect();
        Ok(TagsPage { tags, next })
    }

    /// The referrers of a manifest, optionally filtered by artifact type.
    pub(crate) async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ReferrersAnswer, UpstreamError> {
        let query = artifact_type.map(|t| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("artifactType", t)
                .finish()
        });
        let url = self.url(repo, &format!("referrers/{digest}"), query.as_deref());
        let mut resp = self
            .send(
                Method::GET,
                url,
                &scope(repo),
                HeaderMap::new(),
                Resource::Referrers,
            )
            .await?;
        let text = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = text(header::CONTENT_TYPE.as_str())
            .unwrap_or_else(|| "application/vnd.oci.image.index.v1+json".to_owned());
        let filters_applied = text("oci-filters-applied");
        let body = read_body(&mut resp, MAX_REFERRERS_BYTES, &self.name).await?;
        Ok(ReferrersAnswer {
            content_type,
            filters_applied,
            body: Bytes::from(body),
        })
    }

    /// A manifest request, asking for every manifest type at once.
    async fn manifest_request(
        &self,
        method: Method,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, ACCEPT_MANIFESTS.clone());
        let url = self.url(repo, &format!("manifests/{reference}"), None);
        self.send(method, url, &scope(repo), headers, Resource::Manifest)
            .await
    }

    async fn blob(
        &self,
        method: Method,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let url = self.url(repo, &format!("blobs/{digest}"), None);
        self.send(method, url, &scope(repo), HeaderMap::new(), Resource::Blob)
            .await
    }
}

/// The token scope for pulling from `repo`.
fn scope(repo: &RepoName) -> String {
    format!("repository:{repo}:pull")
}

/// An answer's `Docker-Content-Digest`, if it holds a valid digest.
fn content_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v.trim()).ok())
}

/// An answer's media type, parameters dropped.
fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type_of)
}

/// The `last` parameter of a `Link: <...?n=..&last=..>; rel="next"` header's target.
fn next_last(link: &str) -> Option<String> {
    let next = link
        .split(',')
        .find(|l| l.contains("rel=\"next\"") || l.contains("rel=next"))?;
    let target = next.split_once('<')?.1.split_once('>')?.0;
    let query = target.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "last")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::next_last;

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        assert_eq!(
            next_last("</v2/a/b/tags/list?n=2&last=v%2B2>; rel=\"next\"").as_deref(),
            Some("v+2")
        );
        assert_eq!(
            next_last("<https://r.example/v2/a/tags/list?last=x&n=100>; rel=next").as_deref(),
            Some("x")
        );
        assert_eq!(next_last("</v2/a/tags/list?n=2>; rel=\"next\""), None);
        assert_eq!(next_last("<https://docs.example>; rel=\"help\""), None);
    }
}
