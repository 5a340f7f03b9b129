//! The one manifest reader: what a manifest lists (child manifests with their platforms for an
//! index, config and layers for an image) and the `subject` of a referrer. (`media_type.rs`
//! reads only a manifest's head, to decide its type.)
//!
//! A manifest's bytes are checked against its digest before this reads them, but its JSON is the
//! upstream's (or an archive's) word. Two entry points read it accordingly:
//! - strict, [`Listing::parse`], for the offline commands, which walk an image from its root
//!   manifest to every blob: descriptors that do not parse are an error, as a walk that silently
//!   skipped one would export or import an image with a hole in it;
//! - lenient, [`descriptors`] and [`referrer_of`], for the cache's links and referrers: what
//!   does not parse is skipped, as a link it cannot make only sends a request upstream.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::reference::Digest;

/// One thing a manifest points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) media_type: Option<String>,
    /// `os/architecture[/variant]`, for an index's entries that say.
    pub(crate) platform: Option<String>,
}

/// A manifest's children.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// An index's manifests.
    pub(crate) manifests: Vec<Descriptor>,
    /// An image's config and layers (and an artifact's blobs).
    pub(crate) blobs: Vec<Descriptor>,
}

#[derive(Debug, thiserror::Error)]
#[error("manifest {digest} cannot be read: {reason}")]
pub(crate) struct BadManifest {
    pub(crate) digest: Digest,
    pub(crate) reason: String,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

#[derive(Deserialize)]
struct RawDescriptor {
    digest: String,
    size: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct Schema1Layer {
    #[serde(rename = "blobSum")]
    blob_sum: String,
}

#[derive(Deserialize)]
struct RawListing {
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
    #[serde(default)]
    manifests: Vec<RawDescriptor>,
    #[serde(default)]
    blobs: Vec<RawDescriptor>,
    #[serde(default, rename = "fsLayers")]
    fs_layers: Vec<Schema1Layer>,
}

impl Listing {
    /// The children of the manifest `digest` whose bytes are `bytes`. Schema 1 layers carry no
    /// size: they are listed with size `u64::MAX`, which no check compares.
    pub(crate) fn parse(digest: &Digest, bytes: &[u8]) -> Result<Listing, BadManifest> {
        let bad = |reason: String| BadManifest {
            digest: digest.clone(),
            reason,
        };
        let raw: RawListing = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let convert = |d: RawDescriptor| -> Result<Descriptor, BadManifest> {
            let parsed = Digest::parse(&d.digest)
                .map_err(|_| bad(format!("descriptor digest {:?} is not valid", d.digest)))?;
            Ok(Descriptor {
                digest: parsed,
                size: d
                    .size
                    .ok_or_else(|| bad(format!("descriptor {} has no size", d.digest)))?,
                media_type: d.media_type,
                platform: d.platform.map(|p| match p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                }),
            })
        };
        let manifests = raw
            .manifests
            .into_iter()
            .map(convert)
            .collect::<Result<_, _>>()?;
        let mut blobs: Vec<Descriptor> = raw
            .config
            .into_iter()
            .chain(raw.layers)
            .chain(raw.blobs)
            .map(convert)
            .collect::<Result<_, _>>()?;
        for l in raw.fs_layers {
            let parsed = Digest::parse(&l.blob_sum)
                .map_err(|_| bad(format!("blobSum {:?} is not valid", l.blob_sum)))?;
            if !blobs.iter().any(|b| b.digest == parsed) {
                blobs.push(Descriptor {
                    digest: parsed,
                    size: u64::MAX,
                    media_type: None,
                    platform: None,
                });
            }
        }
        Ok(Listing { manifests, blobs })
    }
}

/// Whether `platform` (`os/arch[/variant]`) is one of `wanted` (`os/arch` matches every variant).
pub(crate) fn platform_matches(platform: Option<&str>, wanted: &[String]) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let Some(p) = platform else {
        return false;
    };
    wanted.iter().any(|w| {
        p == w
            || p.strip_prefix(w.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The lenient reader, for links: what a manifest lists, with sizes where it gives them.
/// The content a manifest lists (config, layers, child manifests, artifact blobs, and schema 1
/// layers, which have no size), with sizes. Malformed descriptors are skipped: the manifest's
/// bytes were verified against its digest, but its JSON is the upstream's word. So are foreign
/// (non-distributable) layers, those with `urls`: registries accept them without checking that
/// the digest is there, so listing one proves nothing about what the repository holds.
pub(crate) fn descriptors(manifest: &[u8]) -> Vec<(Digest, Option<u64>)> {
    #[derive(Deserialize)]
    struct Descriptor {
        digest: String,
        size: Option<u64>,
        #[serde(default)]
        urls: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Schema1Layer {
        #[serde(rename = "blobSum")]
        blob_sum: String,
    }
    #[derive(Deserialize)]
    struct Listing {
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
        #[serde(default)]
        manifests: Vec<Descriptor>,
        #[serde(default)]
        blobs: Vec<Descriptor>,
        #[serde(default, rename = "fsLayers")]
        fs_layers: Vec<Schema1Layer>,
    }
    let Ok(listing) = serde_json::from_slice::<Listing>(manifest) else {
        return Vec::new();
    };
    let sized = listing
        .config
        .into_iter()
        .chain(listing.layers)
        .chain(listing.manifests)
        .chain(listing.blobs)
        .filter(|d| d.urls.is_none())
        .map(|d| (d.digest, d.size));
    let unsized_ = listing.fs_layers.into_iter().map(|l| (l.blob_sum, None));
    sized
        .chain(unsized_)
        .filter_map(|(d, size)| Digest::parse(&d).ok().map(|d| (d, size)))
        .collect()
}

/// If this manifest refers to another (it has a `subject`), that subject and the descriptor the
/// referrers API lists for it: media type, digest, size, artifact type and annotations.
pub(crate) fn referrer_of(
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
    // The spec: `artifactType`, else (empty or missing) the config's media type.
    let artifact_type = r.artifact_type.filter(|t| !t.is_empty());
    if let Some(t) = artifact_type.or(r.config.and_then(|c| c.media_type)) {
        d["artifactType"] = Value::String(t);
    }
    if let Some(a) = r.annotations.filter(|a| !a.is_empty()) {
        d["annotations"] = Value::Object(a);
    }
    Some((subject, d.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn descriptors_of_every_manifest_kind() {
        let (a, b, c) = (
            Digest::sha256_of(b"a"),
            Digest::sha256_of(b"b"),
            Digest::sha256_of(b"c"),
        );
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{a}","size":7}},"layers":[{{"digest":"{b}","size":9}},{{"digest":"nonsense","size":1}}]}}"#
        );
        assert_eq!(
            descriptors(image.as_bytes()),
            vec![(a.clone(), Some(7)), (b.clone(), Some(9))]
        );
        let index = format!(r#"{{"manifests":[{{"digest":"{c}","size":3}}]}}"#);
        assert_eq!(descriptors(index.as_bytes()), vec![(c, Some(3))]);
        let schema1 = format!(r#"{{"fsLayers":[{{"blobSum":"{a}"}}]}}"#);
        assert_eq!(descriptors(schema1.as_bytes()), vec![(a, None)]);
        assert!(descriptors(b"not json").is_empty());
        assert!(descriptors(br#"{"layers":[{"digest":1}]}"#).is_empty());
    }

    #[test]
    fn a_signature_is_a_referrer_and_an_image_is_not() {
        const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
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
        // "If the artifactType is empty or missing in the image manifest, the value of
        // artifactType MUST be set to the config descriptor mediaType value."
        let empty = sig.replace(r#""layers":[]"#, r#""artifactType":"","layers":[]"#);
        let (_, descriptor) = referrer_of(&d, t, empty.as_bytes()).unwrap();
        let v: Value = serde_json::from_str(&descriptor).unwrap();
        assert_eq!(
            v["artifactType"],
            "application/vnd.dev.cosign.artifact.sig.v1+json"
        );
        // An index without one: omitted.
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"subject":{{"mediaType":"{t}","digest":"{subject}","size":9}}}}"#
        );
        let (_, descriptor) = referrer_of(&d, INDEX_TYPE, index.as_bytes()).unwrap();
        let v: Value = serde_json::from_str(&descriptor).unwrap();
        assert!(v.get("artifactType").is_none(), "{v}");
    }

    #[test]
    fn an_index_and_an_image() {
        let (a, b, c) = (
            Digest::sha256_of(b"a"),
            Digest::sha256_of(b"b"),
            Digest::sha256_of(b"c"),
        );
        let root = Digest::sha256_of(b"root");
        let index = format!(
            r#"{{"manifests":[{{"digest":"{a}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let l = Listing::parse(&root, index.as_bytes()).unwrap();
        assert_eq!(l.manifests[0].platform.as_deref(), Some("linux/arm64/v8"));
        assert!(l.blobs.is_empty());
        let image = format!(
            r#"{{"config":{{"digest":"{b}","size":7}},"layers":[{{"digest":"{c}","size":9}}]}}"#
        );
        let l = Listing::parse(&root, image.as_bytes()).unwrap();
        assert_eq!(l.blobs.len(), 2);
        assert_eq!(l.blobs[1].size, 9);
        assert!(Listing::parse(&root, br#"{"layers":[{"digest":"x","size":1}]}"#).is_err());
        assert!(Listing::parse(&root, b"[").is_err());
    }

    #[test]
    fn platforms() {
        let want = vec!["linux/arm64".to_owned()];
        assert!(platform_matches(Some("linux/arm64/v8"), &want));
        assert!(platform_matches(Some("linux/arm64"), &want));
        assert!(!platform_matches(Some("linux/amd64"), &want));
        assert!(!platform_matches(Some("linux/arm64v8"), &want));
        assert!(!platform_matches(None, &want));
        assert!(platform_matches(None, &[]));
    }
}
