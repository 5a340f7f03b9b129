//! What a manifest lists: child manifests (with their platforms) for an index, config and layers
//! for an image, and the `subject` of a referrer. Read by the offline commands, which walk an
//! image from its root manifest to every blob.
//!
//! A manifest's bytes are checked against its digest before this reads them, but its JSON is the
//! upstream's (or an archive's) word: descriptors that do not parse are an error here, as a
//! walk that silently skipped one would export or import an image with a hole in it.

use serde::Deserialize;

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

#[cfg(test)]
mod tests {
    use super::*;

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
