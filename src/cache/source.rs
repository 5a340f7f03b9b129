//! Where content the disk lacks comes from: the shared tier (`[shared]`) when it holds it, else
//! the upstream. A blob goes through the same fill either way, so a copy from the shared tier is
//! checked against its digest before its last byte is released, exactly as an upstream's is; a
//! manifest is checked against its digest before it is stored. A tag is read from the shared
//! tier only when the upstream fails and the replica has no tag of its own.
//!
//! The shared tier gives bytes, never permission (`shared/mod.rs`): a blob is read from it for a
//! repository only when this cache links the repository to it or the upstream's HEAD says the
//! repository has it; a manifest by digest only when linked, confirmed by the caller (the
//! upstream named it for the repository's tag), or signed for that repository by a replica.

use bytes::Bytes;
use futures_util::StreamExt as _;

use super::manifests::Manifest;
use super::{Cache, CacheError};
use crate::media_type::MediaType;
use crate::reference::{Digest, RepoName, Tag};
use crate::shared::SharedBlob;
use crate::upstream::{BlobBody, Upstream, UpstreamError};

pub(super) enum FillSource {
    Upstream(BlobBody),
    Shared { blob: SharedBlob, url: String },
}

impl FillSource {
    /// The length the source announces.
    pub(super) fn content_length(&self) -> Option<u64> {
        match self {
            FillSource::Upstream(b) => b.content_length(),
            FillSource::Shared { blob, .. } => Some(blob.size),
        }
    }

    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, CacheError> {
        match self {
            FillSource::Upstream(b) => Ok(b.chunk().await?),
            FillSource::Shared { blob, url } => match blob.body.next().await {
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
            FillSource::Upstream(_) => up.name.clone(),
            FillSource::Shared { url, .. } => format!("shared tier {url}"),
        }
    }

    pub(super) fn is_shared(&self) -> bool {
        matches!(self, FillSource::Shared { .. })
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
    ) -> Result<FillSource, CacheError> {
        if let Some(shared) = &self.shared
            && !self.lock().shared_refused.contains(digest)
        {
            match shared.blob(digest).await {
                Ok(Some(blob)) => {
                    if !self.linked(&up.name, repo, digest) {
                        // Bytes from the tier, permission from the upstream (a HEAD, which
                        // costs no pull on Docker Hub): an error here is the client's answer.
                        up.head_blob(repo, digest).await?;
                        self.link(&up.name, repo, [(digest.clone(), None)]).await?;
                    }
                    return Ok(FillSource::Shared {
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
        Ok(FillSource::Upstream(up.get_blob(repo, digest).await?))
    }

    /// Whether manifest `digest` may be read from the shared tier for `repo` without asking the
    /// upstream: this cache links them, or a replica signed that the upstream served it there.
    pub(super) async fn shared_may_serve(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        if self.linked(&up.name, repo, digest) {
            return true;
        }
        match shared.linked(&up.name, repo, digest).await {
            Ok(signed) => signed,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "shared tier unavailable: asking the upstream");
                false
            }
        }
    }

    /// A manifest from the shared tier, checked against its digest and stored, if it is there
    /// (the caller has made sure `repo` may be served it). A copy that fails its check is
    /// refused (and counted); the upstream is asked instead.
    pub(super) async fn shared_manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Manifest>, CacheError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let (media_type, bytes) = match shared.manifest(digest).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "shared tier unavailable: asking the upstream");
                return Ok(None);
            }
        };
        let media_type = MediaType::parse(&media_type);
        if digest.of_same_kind(&bytes) != *digest || !media_type.is_manifest() {
            self.metrics.shared("get_manifest", "corrupt");
            tracing::warn!(%digest, "shared tier copy of a manifest refused: it does not match");
            return Ok(None);
        }
        self.store_manifest(up, repo, digest, &media_type, &bytes)
            .await?;
        self.link_manifest(&up.name, repo, digest, &bytes).await?;
        Ok(Some(Manifest {
            digest: digest.clone(),
            media_type,
            size: bytes.len() as u64,
            bytes: Some(bytes),
        }))
    }

    /// The digest the shared tier last recorded for a tag (another replica saw the upstream
    /// answer it, and signed it), with its manifest: for serving tags while the upstream fails.
    /// The signature is the permission to serve that manifest under `repo`.
    pub(super) async fn shared_tag(
        &self,
        up: &Upstream,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<Manifest>, CacheError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let digest = match shared.tag(&up.name, repo.as_str(), tag.as_str()).await {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(%repo, %tag, error = %e, "shared tier unavailable");
                return Ok(None);
            }
        };
        let found = match self.load_manifest(up, &digest).await? {
            Some(m) => Some(m),
            None => self.shared_manifest(up, repo, &digest).await?,
        };
        Ok(found)
    }
}
