//! `GET /v2/<name>/tags/list?n=&last=`: the upstream's list when it answers, the cached tags when
//! it does not; always in lexical order with a `Link` to the next page under our own path.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::{ApiError, Body, json_response, query_param};
use crate::App;
use crate::reference::{RepoName, Tag};
use crate::upstream::{self, Upstream};

/// Largest page we ask for or return.
const MAX_PAGE: usize = 10_000;

pub async fn get(
    app: &Arc<App>,
    up: &Upstream,
    repo: &RepoName,
    client_name: &str,
    query: &str,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let n = match query_param(query, "n") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                "n must be a number",
            )
        })?),
    }
    .map(|n| n.min(MAX_PAGE));
    let last = query_param(query, "last").filter(|l| !l.is_empty());
    if let Some(l) = &last
        && Tag::parse(l).is_none()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            "last is not a tag",
        ));
    }

    let (mut tags, more) = match from_upstream(up, repo, n, last.as_deref()).await {
        Ok(page) => page,
        Err(e) if e.is_transient() => {
            tracing::info!(upstream = %up.name, %repo, error = %e, "tags list from the cache: upstream failing");
            let cached = app.cache.cached_tags(up, repo)?;
            if cached.is_empty() {
                return Err(e.into());
            }
            paginate(cached, n, last.as_deref())
        }
        Err(e) => return Err(e.into()),
    };
    tags.sort();
    let body = serde_json::json!({"name": client_name, "tags": tags}).to_string();
    let mut resp = json_response(StatusCode::OK, body, head);
    if let (true, Some(last_tag)) = (more, tags.last()) {
        let mut link = format!("</v2/{client_name}/tags/list?");
        if let Some(n) = n {
            link.push_str(&format!("n={n}&"));
        }
        link.push_str(&format!("last={last_tag}>; rel=\"next\""));
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// One page from the upstream, and whether it said there is more.
async fn from_upstream(
    up: &Upstream,
    repo: &RepoName,
    n: Option<usize>,
    last: Option<&str>,
) -> Result<(Vec<String>, bool), upstream::UpstreamError> {
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
    let resp = up
        .send(
            Method::GET,
            repo,
            "tags/list",
            (!q.is_empty()).then_some(q.as_str()),
            HeaderMap::new(),
            "repository",
        )
        .await?;
    let more = resp.headers().contains_key(header::LINK);
    let body = upstream::read_limited(resp, 16 << 20, &up.name).await?;
    #[derive(serde::Deserialize)]
    struct List {
        tags: Option<Vec<String>>,
    }
    let list: List =
        serde_json::from_slice(&body).map_err(|e| upstream::UpstreamError::BadResponse {
            upstream: up.name.clone(),
            reason: format!("tags list is not JSON: {e}"),
        })?;
    let tags = list
        .tags
        .unwrap_or_default()
        .into_iter()
        .filter(|t| Tag::parse(t).is_some())
        .collect();
    Ok((tags, more))
}

/// Paginates a sorted list: the tags after `last`, at most `n`, and whether more remain.
pub(super) fn paginate(
    sorted: Vec<String>,
    n: Option<usize>,
    last: Option<&str>,
) -> (Vec<String>, bool) {
    let after: Vec<String> = sorted
        .into_iter()
        .filter(|t| last.is_none_or(|l| t.as_str() > l))
        .collect();
    let n = n.unwrap_or(MAX_PAGE);
    let more = after.len() > n;
    (after.into_iter().take(n).collect(), more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let all: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            paginate(all.clone(), Some(2), None),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            (vec!["c".into()], false)
        );
        assert_eq!(paginate(all, None, None).0.len(), 3);
    }
}
