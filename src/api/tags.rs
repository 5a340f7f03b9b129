//! `GET /v2/<name>/tags/list?n=&last=`: the upstream's list when it answers, the cached tags when
//! it does not; always in lexical order with a `Link` to the next page under our own path.

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};

use super::State;
use super::{ApiError, Body, Code, json_response, query_param};
use crate::reference::RepoName;
use crate::upstream::Upstream;

pub(super) async fn get(
    app: &Arc<State>,
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
                Code::Uncoded,
                "n must be a whole number, 0 or more",
            )
        })?),
    };
    // Any `last` pages lexically after itself: the spec has no error for one that is no tag.
    let last = query_param(query, "last").filter(|l| !l.is_empty());
    let (tags, more) = app.cache.tags_list(up, repo, n, last.as_deref()).await?;
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
