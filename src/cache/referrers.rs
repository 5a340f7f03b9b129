//! Referrers (signatures, attestations, SBOMs: manifests whose `subject` names another manifest)
//! as the cache holds them.
//!
//! Every manifest stored with a `subject` is recorded as a referrer of that subject in its
//! (upstream, repository), with the descriptor the referrers API lists for it. Online, the API is
//! passed through to the upstream (`lists.rs`); offline, it is answered from these records, so
//! signatures imported with their images can be verified on an air-gapped site.

use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::index::Batch;
use super::links::scope;
use super::{Cache, CacheError};
use crate::reference::{Digest, RepoName};
use crate::upstream::ReferrersAnswer;

/// If this manifest refers to another (it has a `subject`), that subject and the descriptor the
/// referrers API lists for it: media type, digest, size, artifact type and annotations.
pub(super) fn referrer_of(
    digest: &Digest,
    media_type: &str,
    bytes: &[u8],
) -> Option<(Digest, String)> {
    #[derive(Deserialize)]
    struct Subject {
        digest: String,
    }
    #[derive(Deserialize)]
    struct Config {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    #[derive(Deserialize)]
    struct Referrer {
        subject: Option<Subject>,
        #[serde(rename = "artifactType")]
        artifact_type: Option<String>,
        config: Option<Config>,
        annotations: Option<Map<String, Value>>,
    }
    let r: Referrer = serde_json::from_slice(bytes).ok()?;
    let subject = Digest::parse(&r.subject?.digest).ok()?;
    let mut d = json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": bytes.len(),
    });
    // The spec: `artifactType`, else the config's media type.
    if let Some(t) = r.artifact_type.or(r.config.and_then(|c| c.media_type)) {
        d["artifactType"] = Value::String(t);
    }
    if let Some(a) = r.annotations.filter(|a| !a.is_empty()) {
        d["annotations"] = Value::Object(a);
    }
    Some((subject, d.to_string()))
}

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
            referrers: vec![(subject, scope(upstream, repo), digest.clone(), descriptor)],
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
            .with_index(move |ix| ix.referrers(&subject, &scope))
            .await?;
        let manifests: Vec<Value> = {
            let s = self.lock();
            found
                .into_iter()
                .filter(|(d, _)| s.entries.contains_key(d))
                .filter_map(|(_, descriptor)| serde_json::from_str::<Value>(&descriptor).ok())
                .filter(|d| artifact_type.is_none_or(|t| d["artifactType"] == t))
                .collect()
        };
        let body = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        Ok(ReferrersAnswer {
            content_type: HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
            filters_applied: artifact_type.map(|_| HeaderValue::from_static("artifactType")),
            body: Bytes::from(body.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_a_referrer_and_an_image_is_not() {
        let subject = Digest::sha256_of(b"image");
        let sig = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.dev.cosign.artifact.sig.v1+json","digest":"{subject}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{subject}","size":9}},"annotations":{{"k":"v"}}}}"#
        );
        let d = Digest::sha256_of(sig.as_bytes());
        let t = "application/vnd.oci.image.manifest.v1+json";
        let (s, descriptor) = referrer_of(&d, t, sig.as_bytes()).unwrap();
        assert_eq!(s, subject);
        let v: Value = serde_json::from_str(&descriptor).unwrap();
        assert_eq!(
            v["artifactType"],
            "application/vnd.dev.cosign.artifact.sig.v1+json"
        );
        assert_eq!(v["size"], sig.len());
        assert_eq!(v["annotations"]["k"], "v");
        assert!(referrer_of(&d, t, br#"{"schemaVersion":2,"layers":[]}"#).is_none());
    }
}
