//! Manifest media types: the one list of them, and how a manifest's type is decided.
//!
//! The mirror asks upstreams for every manifest type at once (so the cache holds what the registry
//! really stores, whatever a client accepts), stores each manifest under the type the upstream
//! gave it, and never relabels it. An answer that is not a manifest (an HTML error page, a JSON
//! value of another shape) is refused here, before anything is stored.

use std::fmt;

/// A manifest's media type, parsed once where it enters (an upstream's answer, a document, the
/// index): one of the types the mirror stores and serves, or another, kept as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum MediaType {
    OciIndex,
    OciManifest,
    DockerList,
    DockerManifest,
    /// Schema 1, signed: what schema 1 manifests are stored as when the upstream does not say.
    Schema1Signed,
    Schema1,
    /// Not a manifest type we serve (parameters already dropped), kept as written.
    Other(String),
}

/// Manifest media types we store and serve, and ask upstreams for: the one list of them.
pub(crate) const MANIFEST_TYPES: [MediaType; 6] = [
    MediaType::OciIndex,
    MediaType::OciManifest,
    MediaType::DockerList,
    MediaType::DockerManifest,
    MediaType::Schema1Signed,
    MediaType::Schema1,
];

impl MediaType {
    /// A media type as written (parameters already dropped).
    pub(crate) fn parse(text: &str) -> MediaType {
        MANIFEST_TYPES
            .iter()
            .find(|t| t.as_str() == text)
            .cloned()
            .unwrap_or_else(|| MediaType::Other(text.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            MediaType::OciIndex => "application/vnd.oci.image.index.v1+json",
            MediaType::OciManifest => "application/vnd.oci.image.manifest.v1+json",
            MediaType::DockerList => "application/vnd.docker.distribution.manifest.list.v2+json",
            MediaType::DockerManifest => "application/vnd.docker.distribution.manifest.v2+json",
            MediaType::Schema1Signed => "application/vnd.docker.distribution.manifest.v1+prettyjws",
            MediaType::Schema1 => "application/vnd.docker.distribution.manifest.v1+json",
            MediaType::Other(text) => text,
        }
    }

    /// Whether it is a manifest type we store and serve.
    pub(crate) fn is_manifest(&self) -> bool {
        !matches!(self, MediaType::Other(_))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for MediaType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// `application/json; charset=utf-8` -> `application/json`
pub(crate) fn media_type_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Why an upstream answer is not a manifest we can store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotAManifest {
    #[error("manifest is not a JSON object ({error}); Content-Type was {content_type}")]
    NotJson {
        error: serde_json::Error,
        content_type: String,
    },
    #[error("not a manifest media type: {content_type}")]
    UnknownType { content_type: String },
}

/// The media type to store a manifest under: the upstream's `Content-Type` if it is a manifest
/// type, else the document's own `mediaType`, else schema 1 for `schemaVersion: 1`. An HTML page or
/// anything that is not a JSON object is refused.
pub(crate) fn manifest_media_type(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<MediaType, NotAManifest> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        schema_version: Option<u64>,
        media_type: Option<String>,
    }
    let shown = || content_type.unwrap_or("missing").to_owned();
    let head: Head = serde_json::from_slice(bytes).map_err(|error| NotAManifest::NotJson {
        error,
        content_type: shown(),
    })?;
    if let Some(ct) = content_type
        .map(MediaType::parse)
        .filter(MediaType::is_manifest)
    {
        return Ok(ct);
    }
    if let Some(mt) = head
        .media_type
        .as_deref()
        .map(MediaType::parse)
        .filter(MediaType::is_manifest)
    {
        return Ok(mt);
    }
    if head.schema_version == Some(1) {
        return Ok(MediaType::Schema1Signed);
    }
    Err(NotAManifest::UnknownType {
        content_type: shown(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let oci =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        assert_eq!(
            manifest_media_type(Some("application/vnd.oci.image.manifest.v1+json"), oci).unwrap(),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            manifest_media_type(Some("application/json"), oci).unwrap(),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert!(manifest_media_type(Some("text/html"), b"<html></html>").is_err());
        assert!(manifest_media_type(Some("application/json"), br#"{"schemaVersion":2}"#).is_err());
        assert_eq!(
            media_type_of("Application/JSON; charset=utf-8"),
            "application/json"
        );
    }
}
