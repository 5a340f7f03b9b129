//! Layer prefetch (`[cache] prefetch_layers`): when a client GETs an image manifest whose config
//! or layers the cache lacks, their fills start at once, a few at a time, so each is warm or in
//! flight by the time the client asks for it. A fill started here is the same single fill a
//! client joins; nothing is fetched twice.

use std::sync::Arc;

use futures_util::StreamExt as _;

use super::{Blob, Cache, Manifest};
use crate::manifest::Listing;
use crate::reference::{Digest, RepoName};
use crate::upstream::Upstream;

/// Prefetch fills running at once for one manifest.
const AT_ONCE: usize = 4;

impl Cache {
    /// Starts fills of the blobs `manifest` lists that are neither held nor in flight.
    pub(crate) fn prefetch(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &RepoName,
        manifest: &Manifest,
    ) {
        if !self.prefetch_layers || up.offline {
            return;
        }
        let Some(bytes) = &manifest.bytes else { return };
        // A warm pull's manifest: everything it lists was held, and nothing has been removed
        // since, so nothing is missing and it need not be parsed again.
        {
            let s = self.lock();
            if s.held_all.held_at(&manifest.digest, s.lru.removals) {
                return;
            }
        }
        let Ok(listing) = Listing::parse(&manifest.digest, bytes) else {
            return;
        };
        let missing: Vec<Digest> = {
            let mut s = self.lock();
            let mut in_flight = false;
            let missing = listing
                .blobs
                .into_iter()
                .map(|b| b.digest)
                .filter(|d| {
                    let flying = s.fills.contains(d);
                    in_flight |= flying;
                    !s.lru.holds(d) && !flying
                })
                .collect::<Vec<_>>();
            if missing.is_empty() && !in_flight {
                let removals = s.lru.removals;
                s.held_all.put(&manifest.digest, removals);
            }
            missing
        };
        if missing.is_empty() {
            return;
        }
        let (this, up, repo) = (self.clone(), up.clone(), repo.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(missing)
                .for_each_concurrent(AT_ONCE, |d| {
                    let (this, up, repo) = (this.clone(), up.clone(), repo.clone());
                    async move {
                        match this.blob(&up, &repo, &d).await {
                            Ok(Blob::Filling { reader, .. }) => {
                                // Not a client: let go at once, and wait for the fill's end.
                                let fill = reader.fill().clone();
                                drop(reader);
                                fill.finished().await;
                            }
                            Ok(Blob::Stored { .. }) => {}
                            Err(e) => tracing::debug!(digest = %d, error = %e, "prefetch failed"),
                        }
                    }
                })
                .await;
        });
    }
}
