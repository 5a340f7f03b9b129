//! Where a fill's bytes come from: the shared tier (`[shared]`) when it holds the blob, else
//! the upstream. Either way they go through the same fill, so a copy from the shared tier is
//! checked against its digest before its last byte is released, exactly as an upstream's is.

use bytes::Bytes;
use futures_util::StreamExt as _;

use super::{Cache, CacheError};
use crate::reference::{Digest, RepoName};
use crate::shared::SharedBlob;
use crate::upstream::{BlobBody, Upstream, UpstreamError};

pub(super) enum Source {
    Upstream(BlobBody),
    Shared { blob: SharedBlob, url: String },
}

impl Source {
    /// The length the source announces.
    pub(super) fn content_length(&self) -> Option<u64> {
        match self {
            Source::Upstream(b) => b.content_length(),
            Source::Shared { blob, .. } => Some(blob.size),
        }
    }

    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, CacheError> {
        match self {
            Source::Upstream(b) => Ok(b.chunk().await?),
            Source::Shared { blob, url } => match blob.body.next().await {
                None => Ok(None),
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(e)) => Err(CacheError::Upstream(UpstreamError::Unreachable {
                    upstream: format!("shared tier {url}"),
                    reason: e.to_string(),
                })),
            },
        }
    }

    /// What to call the source in errors: the upstream's name, or the shared tier's URL.
    pub(super) fn name(&self, up: &Upstream) -> String {
        match self {
            Source::Upstream(_) => up.name.clone(),
            Source::Shared { url, .. } => format!("shared tier {url}"),
        }
    }

    pub(super) fn is_shared(&self) -> bool {
        matches!(self, Source::Shared { .. })
    }
}

impl Cache {
    /// The shared tier's copy of a blob if it has one (and it has not failed its check here
    /// before), else the upstream's. A shared tier that cannot be reached is skipped with a
    /// warning.
    pub(super) async fn blob_source(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Source, CacheError> {
        if let Some(shared) = &self.shared
            && !self.lock().shared_refused.contains(digest)
        {
            match shared.blob(digest).await {
                Ok(Some(blob)) => {
                    return Ok(Source::Shared {
                        blob,
                        url: shared.shown.clone(),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "shared tier unavailable: asking the upstream")
                }
            }
        }
        Ok(Source::Upstream(up.get_blob(repo, digest).await?))
    }
}
