//! `GET /v2/_catalog`: the repositories this mirror holds, under the names clients use for them
//! (bare for the default upstream, `<registry>/<repo>` for the others), those the caller may pull.

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};

use super::State;
use super::{ApiError, Body, json_response, query_param};
use crate::auth::Identity;
use crate::cache::paginate;

pub(super) async fn get(
    app: &Arc<State>,
    who: &Identity,
    query: &str,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let n = query_param(query, "n").and_then(|v| v.parse::<usize>().ok());
    let last = query_param(query, "last");
    let mut names: Vec<String> = app
        .cache
        .cached_repos()
        .await?
        .into_iter()
        .filter(|(up, repo)| super::access::may_pull(app, who, up, repo))
        .map(|(up, repo)| {
            if app.upstreams.is_default(&up) {
                repo
            } else {
                format!("{up}/{repo}")
            }
        })
        .collect();
    names.sort();
    names.dedup();
    let (page, more) = paginate(names, n, last.as_deref());
    let body = serde_json::json!({ "repositories": page }).to_string();
    let mut resp = json_response(StatusCode::OK, body, head);
    if let (true, Some(l)) = (more, page.last()) {
        let link = format!(
            "</v2/_catalog?n={}&last={l}>; rel=\"next\"",
            n.unwrap_or(page.len())
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}
