//! Lists the mirror answers from the upstream's: a repository's tags (paged here, with the cached
//! tags as a fallback when the upstream fails) and a manifest's referrers (the upstream's API,
//! else its fallback tag, else what the cache holds: always an answer).

use crate::reference::{Digest, Reference, RepoName, Tag};
use crate::upstream::{ReferrersAnswer, Upstream, UpstreamError};

use super::referrers::{index_answer, index_manifests};
use super::{Cache, CacheError};

/// Largest page of tags or repositories returned.
const MAX_PAGE: usize = 10_000;

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

    /// The referrers of a manifest, whatever the upstream supports (OCI distribution-spec v1.1,
    /// "Listing Referrers"): the upstream's API when it has one (filtered here by
    /// `artifact_type` if it did not); else the fallback tag `<alg>-<hex>` that clients pushing to
    /// a registry without the API keep the list in (through the tag cache, so with its TTL);
    /// else, and when the upstream fails or offline, what the cache holds (`referrers.rs`),
    /// which may be an empty index. An answer from the upstream is kept for `tag_ttl`.
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
        // An answer the upstream (or its fallback tag) gave is good for `tag_ttl`, like a tag.
        let key = (
            up.name.clone(),
            repo.to_string(),
            digest.clone(),
            artifact_type.map(str::to_owned),
        );
        if let Some(answer) = self.hot.referrers(&key) {
            return Ok(answer);
        }
        let fresh = match up.referrers(repo, digest, artifact_type).await {
            Ok(answer) if answer.filters_applied.is_some() || artifact_type.is_none() => {
                Some(answer)
            }
            Ok(answer) => Some(match index_manifests(&answer.body) {
                Some(listed) => index_answer(listed, artifact_type),
                None => answer,
            }),
            Err(UpstreamError::NotFound { .. }) => self
                .fallback_referrers(up, repo, digest)
                .await
                .map(|listed| index_answer(listed, artifact_type)),
            Err(e) if e.stale_ok() => {
                tracing::info!(upstream = %up.name, %repo, error = %e, "referrers from the cache: upstream failing");
                // The fallback tag as the tag cache holds it (stale is fine now), not kept.
                if let Some(listed) = self.fallback_referrers(up, repo, digest).await {
                    return Ok(index_answer(listed, artifact_type));
                }
                None
            }
            Err(e) => return Err(e.into()),
        };
        match fresh {
            Some(answer) => {
                self.hot.put_referrers(key, answer.clone());
                Ok(answer)
            }
            None => {
                self.cached_referrers(&up.name, repo, digest, artifact_type)
                    .await
            }
        }
    }

    /// The referrers kept in the fallback tag `<alg>-<hex>` (an image index), if the upstream
    /// (or the cache) has it. Any failure to get it is the same as none: the referrers the cache
    /// holds are the answer then.
    async fn fallback_referrers(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> Option<Vec<serde_json::Value>> {
        let tag = Tag::parse(&digest.to_string().replacen(':', "-", 1))?;
        match self.manifest(up, repo, &Reference::Tag(tag), false).await {
            Ok(m) => m.bytes.as_deref().and_then(index_manifests),
            Err(e) => {
                tracing::debug!(upstream = %up.name, %repo, %digest, error = %e, "no referrers fallback tag");
                None
            }
        }
    }
}

/// The spec's order for tags ("Listing Tags": "lexical order (i.e. case-insensitive alphanumeric
/// order)"); names that differ only in case (`Latest`, `latest`) go by their bytes, so that the
/// order is total and `last` pages the same way every time. distribution sorts by bytes alone
/// (`B` before `a`).
pub(crate) fn spec_order(a: &str, b: &str) -> std::cmp::Ordering {
    let fold = |s: &str| {
        s.bytes()
            .map(|c| c.to_ascii_lowercase())
            .collect::<Vec<u8>>()
    };
    fold(a).cmp(&fold(b)).then_with(|| a.cmp(b))
}

/// Paginates a list in the spec's order: the entries after `last`, at most `n` (10,000 when the
/// client does not say), and whether more remain.
pub(crate) fn paginate(
    mut all: Vec<String>,
    n: Option<usize>,
    last: Option<&str>,
) -> (Vec<String>, bool) {
    all.sort_unstable_by(|a, b| spec_order(a, b));
    let after: Vec<String> = all
        .into_iter()
        .filter(|t| last.is_none_or(|l| spec_order(t, l).is_gt()))
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

    #[test]
    fn tags_are_in_case_insensitive_order_and_last_pages_by_it() {
        let all: Vec<String> = ["C1", "b", "latest", "A", "c0", "Latest", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            paginate(all.clone(), None, None).0,
            ["A", "a", "b", "c0", "C1", "Latest", "latest"]
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            (vec!["c0".into(), "C1".into()], true)
        );
        assert_eq!(paginate(all, Some(9), Some("Latest")).0, ["latest"]);
    }
}
