//! Which upstream serves a request, and the repository name within it.
//!
//! A configured registry name as the first path component (`/v2/quay.io/coreos/etcd/...`), else
//! `?ns=` (looked up among the configured registries, never dialed as given), else the default
//! upstream. The name comes back spelled as the upstream spells it (Docker Hub's `library/`
//! rule), once, here; and the site's allow-list is applied before anything is looked up.

use std::sync::Arc;

use http::StatusCode;

use super::{ApiError, query_param};
use crate::app::App;
use crate::reference::RepoName;
use crate::upstream::Upstream;

/// The upstream for a request naming `name`, and the repository as that upstream spells it.
pub(super) fn resolve(
    app: &App,
    name: &str,
    query: &str,
) -> Result<(Arc<Upstream>, RepoName), ApiError> {
    let (up, repo) = pick_upstream(app, name, query)?;
    let spelled = up.spell(repo.clone());
    if !up.allows(&spelled) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!(
                "{repo} is not on this mirror's list of repositories for {}",
                up.name
            ),
        ));
    }
    Ok((up, spelled))
}

fn pick_upstream(
    app: &App,
    name: &str,
    query: &str,
) -> Result<(Arc<Upstream>, RepoName), ApiError> {
    if let Some((first, rest)) = name.split_once('/')
        && let Some(up) = app.upstream_named(first)
    {
        let repo = RepoName::parse(rest).ok_or_else(|| ApiError::name_invalid(name))?;
        return Ok((up, repo));
    }
    let repo = RepoName::parse(name).ok_or_else(|| ApiError::name_invalid(name))?;
    if let Some(ns) = query_param(query, "ns") {
        return match app.upstream_named(&ns) {
            Some(up) => Ok((up, repo)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                format!(
                    "registry {:?} is not configured on this mirror",
                    ns.chars().take(100).collect::<String>()
                ),
            )),
        };
    }
    match &app.default_upstream {
        Some(up) => Ok((up.clone(), repo)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "no registry named in the request and no default upstream is configured",
        )),
    }
}
