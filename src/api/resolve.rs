//! Which upstream serves a request, and the repository name within it.
//!
//! A configured registry name as the first path component (`/v2/quay.io/coreos/etcd/...`), else
//! `?ns=` (looked up among the configured registries, never dialed as given), else the default
//! upstream (`upstream::Upstreams::for_path`, the one place that knows which upstream a name
//! means). The name comes back spelled as the upstream spells it (Docker Hub's `library/` rule),
//! and the site's allow-list is applied here, before anything is looked up.

use std::sync::Arc;

use http::StatusCode;

use super::State;
use super::{ApiError, Code, query_param};
use crate::reference::RepoName;
use crate::upstream::{PathUnresolved, Upstream};

/// The upstream for a request naming `name`, and the repository as that upstream spells it.
pub(super) fn resolve(
    app: &State,
    name: &str,
    query: &str,
) -> Result<(Arc<Upstream>, RepoName), ApiError> {
    let (up, spelled, written) = pick_upstream(app, name, query)?;
    if !up.allows(&spelled) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::Denied,
            format!(
                "{written} is not on this mirror's list of repositories for {}",
                up.name
            ),
        ));
    }
    Ok((up, spelled))
}

fn pick_upstream(
    app: &State,
    name: &str,
    query: &str,
) -> Result<(Arc<Upstream>, RepoName, RepoName), ApiError> {
    let ns = query_param(query, "ns");
    app.upstreams
        .for_path(name, ns.as_deref())
        .map_err(|e| match e {
            PathUnresolved::NameInvalid => ApiError::name_invalid(name),
            PathUnresolved::UnknownNamespace(ns) | PathUnresolved::UnknownRegistry(ns) => {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    Code::NameUnknown,
                    format!(
                        "registry {:?} is not configured on this mirror",
                        ns.chars().take(100).collect::<String>()
                    ),
                )
            }
            PathUnresolved::NoDefault => ApiError::new(
                StatusCode::NOT_FOUND,
                Code::NameUnknown,
                "no registry named in the request and no default upstream is configured",
            ),
        })
}
