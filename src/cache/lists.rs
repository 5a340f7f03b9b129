//! Lists the mirror passes on from the upstream: a repository's tags (with the cached tags as a
//! fallback when the upstream fails) and a manifest's referrers (passed through, so an upstream
//! 404 stays a 404 and clients fall back to the tag schema as they should; offline, from the
//! cache).

use crate::reference::{Digest, RepoName};
use crate::upstream::{ReferrersAnswer, Upstream};

use super::{Cache, CacheError};

/// Largest page of tags or repositories returned.
pub(crate) const MAX_PAGE: usize = 10_000;

impl Cache {
    /// One page of a repository's tags, in lexical order, and whether more follow: paged here
    /// (exactly `n`, fewer only at the end, after `last`) from every tag the upstream lists
    /// (its own pages followed), or the tags the cache holds when it fails. Upstreams that ignore
    /// `n` and `last` (distribution 2.8) are paged right all the same.
    pub(crate) async fn tags_list(
        &self,
        up: &Upstream,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), CacheError> {
        let (tags, more) = match up.all_tags(repo).await {
            Ok(all) => paginate(all, n, last),
            Err(e) if e.stale_ok() => {
                tracing::info!(upstream = %up.name, %repo, error = %e, "tags list from the cache: upstream failing");
                let (upstream, r) = (up.name.clone(), repo.to_string());
                let cached = self.with_index(move |ix| ix.tags(&upstream, &r)).await?;
                if cached.is_empty() {
                    return Err(e.into());
                }
                paginate(cached, n, last)
            }
            Err(e) => return Err(e.into()),
        };
        Ok((tags, more))
    }

    /// The referrers of a manifest, as the upstream lists them; offline, as the cache holds them
    /// (`referrers.rs`).
    pub(crate) async fn referrers(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ReferrersAnswer, CacheError> {
        if up.offline {
            return self
                .cached_referrers(&up.name, repo, digest, artifact_type)
                .await;
        }
        Ok(up.referrers(repo, digest, artifact_type).await?)
    }
}

/// Paginates a sorted list: the entries after `last`, at most `n`, and whether more remain.
pub(crate) fn paginate(
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
