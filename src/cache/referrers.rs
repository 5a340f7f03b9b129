//! Referrers (signatures, attestations, SBOMs: manifests whose `subject` names another manifest)
//! as the cache holds them.
//!
//! Every manifest stored with a `subject` is recorded as a referrer of that subject in its
//! (upstream, repository), with the descriptor the referrers API lists for it. Online, the API is
//! passed through to the upstream (`lists.rs`); offline, it is answered from these records, so
//! signatures imported with their images can be verified on an air-gapped site.

use bytes::Bytes;
use serde_json::{Value, json};

use super::index::Batch;
use super::links::scope;
use super::{Cache, CacheError};
use crate::manifest::referrer_of;
use crate::reference::{Digest, RepoName};
use crate::upstream::ReferrersAnswer;

impl Cache {
    /// Records a stored manifest as a referrer of its subject in (upstream, repo), if it has one.
    pub(super) async fn note_referrer(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), CacheError> {
        let Some((subject, descriptor)) = referrer_of(digest, media_type, bytes) else {
            return Ok(());
        };
        let batch = Batch {
            referrers: vec![(
                subject,
                scope(upstream, repo).as_str().to_owned(),
                digest.clone(),
                descriptor,
            )],
            ..Batch::default()
        };
        self.with_index(move |ix| ix.write(&batch, super::now_millis()))
            .await
    }

    /// The referrers of `digest` in (upstream, repo) that the cache holds, as the referrers API
    /// answers: an image index, filtered by `artifact_type` if asked.
    pub(super) async fn cached_referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ReferrersAnswer, CacheError> {
        let (subject, scope) = (digest.clone(), scope(upstream, repo));
        let found = self
            .with_index(move |ix| ix.referrers(&subject, scope.as_str()))
            .await?;
        let manifests: Vec<Value> = {
            let s = self.lock();
            found
                .into_iter()
                .filter(|(d, _)| s.lru.holds(d))
                .filter_map(|(_, descriptor)| serde_json::from_str::<Value>(&descriptor).ok())
                .collect()
        };
        Ok(index_answer(manifests, artifact_type))
    }
}

/// The referrers API's answer listing `manifests` (those of `artifact_type`, if asked: the
/// filter is then said applied).
pub(super) fn index_answer(manifests: Vec<Value>, artifact_type: Option<&str>) -> ReferrersAnswer {
    let manifests: Vec<Value> = manifests
        .into_iter()
        .filter(|d| artifact_type.is_none_or(|t| d["artifactType"] == t))
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": manifests,
    });
    ReferrersAnswer {
        content_type: INDEX.to_owned(),
        filters_applied: artifact_type.map(|_| "artifactType".to_owned()),
        body: Bytes::from(body.to_string()),
    }
}

/// The descriptors an image index lists (a referrers answer, or the fallback tag's index).
pub(super) fn index_manifests(bytes: &[u8]) -> Option<Vec<Value>> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.get("manifests")?.as_array().cloned()
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
