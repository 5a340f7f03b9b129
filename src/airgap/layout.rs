//! The OCI image layout (image-spec `image-layout.md`) as `export` writes it and `import` reads
//! it: `oci-layout`, `index.json`, and `blobs/<alg>/<hex>`.
//!
//! `index.json` lists each image with `org.opencontainers.image.ref.name` set to its full
//! reference (`docker.io/library/busybox:latest`), so `skopeo copy oci-archive:FILE:REF` finds
//! it. Referrers (signatures, attestations) are listed too, unnamed, with the repository they
//! belong to in `dev.entrepot.repository`. `docker save` (Docker 25 and later) names images in
//! `io.containerd.image.name` instead, and puts only the tag in `ref.name`; skopeo's `oci:`
//! and umoci write what they were given (`busybox:1.36`, or a tag alone), read as containerd
//! reads them.

use serde_json::{Value, json};

use super::import::ImportError;
use crate::manifest::Descriptor;
use crate::reference::Digest;

pub(super) const OCI_LAYOUT: &str = "oci-layout";
pub(super) const INDEX_JSON: &str = "index.json";
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
pub(super) const REPOSITORY: &str = "dev.entrepot.repository";

/// Largest `index.json` read.
pub(super) const MAX_INDEX_JSON: u64 = 64 << 20;

pub(super) fn oci_layout() -> Vec<u8> {
    br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()
}

/// Where a blob lives inside the layout.
pub(super) fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

/// The digest a path inside a layout names, if it is a blob's path (`./` prefixes allowed).
pub(super) fn blob_at(path: &str) -> Option<Digest> {
    let path = path.trim_start_matches("./");
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// One `index.json` entry as `export` writes it.
pub(super) fn entry(
    digest: &Digest,
    media_type: &str,
    size: u64,
    annotation: (&str, &str),
) -> Value {
    json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": size,
        "annotations": { annotation.0: annotation.1 },
    })
}

pub(super) fn index_json(entries: Vec<Value>) -> Vec<u8> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    serde_json::to_vec_pretty(&index).expect("JSON values serialize")
}

/// What an `index.json` entry is, as `import` reads it.
#[derive(Debug)]
pub(super) enum Entry {
    /// An image with its reference (`docker.io/library/busybox:1.36`, or a short one as
    /// dockerd reads it: `busybox:1.36`).
    Named(Descriptor, String),
    /// An image named by a tag alone (`latest`), as `skopeo copy ... oci:DIR:TAG` and umoci
    /// write them: `--name REPOSITORY` says whose tag it is.
    Tagged(Descriptor, String),
    /// A referrer, for this `upstream/repository`.
    Referrer(Descriptor, String),
    /// Neither: nothing says which repository it belongs to.
    Unnamed(Descriptor),
}

/// The entries of an `index.json`. Read without a tree of JSON values (an archive's index can
/// name tens of thousands of images): each entry's annotations are read as they are parsed and
/// only the names kept.
pub(super) fn entries(index_json: &[u8]) -> Result<Vec<Entry>, ImportError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(index_json)
        .map_err(ImportError::IndexNotJson)?;
    let root = Digest::sha256_of(index_json);
    let listing = crate::manifest::Listing::parse(&root, index_json)
        .map_err(|e| ImportError::IndexInvalid(e.reason.to_string()))?;
    let raw: RawIndex =
        serde_json::from_slice(index_json).map_err(|e| ImportError::IndexInvalid(e.to_string()))?;
    Ok(listing
        .manifests
        .into_iter()
        .zip(raw.manifests)
        .map(|(d, raw)| {
            let Names {
                containerd,
                ref_name,
                repository,
            } = raw.annotations;
            if let Some(name) = containerd {
                return Entry::Named(d, name);
            }
            match (ref_name, repository) {
                // containerd's rule (`images/archive`): a name holding any of `/:@` is a
                // reference; anything else is a tag, of the repository the importer says.
                (Some(name), _) if name.contains(['/', ':', '@']) => Entry::Named(d, name),
                (_, Some(repo)) => Entry::Referrer(d, repo),
                (Some(tag), None) if !tag.is_empty() => Entry::Tagged(d, tag),
                _ => Entry::Unnamed(d),
            }
        })
        .collect())
}

#[derive(serde::Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<RawEntry>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    #[serde(default, deserialize_with = "names")]
    annotations: Names,
}

/// The annotations that name an entry; any other, and any that is not a string, is ignored.
#[derive(Default)]
struct Names {
    containerd: Option<String>,
    ref_name: Option<String>,
    repository: Option<String>,
}

fn names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Names, D::Error> {
    let v = <Value as serde::Deserialize>::deserialize(d)?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(Names {
        containerd: text(CONTAINERD_NAME),
        ref_name: text(REF_NAME),
        repository: text(REPOSITORY),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_round_trip_and_nothing_else_is_a_blob() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(blob_at(&blob_path(&d)), Some(d.clone()));
        assert_eq!(blob_at(&format!("./{}", blob_path(&d))), Some(d));
        for other in [
            "index.json",
            "blobs/sha256/zz",
            "blobs/sha256/",
            "../blobs/x/y",
            "manifest.json",
        ] {
            assert_eq!(blob_at(other), None, "{other}");
        }
    }

    #[test]
    fn entries_are_named_by_reference_or_repository() {
        let d = Digest::sha256_of(b"m");
        let t = "application/vnd.oci.image.manifest.v1+json";
        let index = index_json(vec![
            entry(&d, t, 1, (REF_NAME, "docker.io/library/a:v1")),
            entry(&d, t, 1, (REPOSITORY, "docker.io/library/a")),
            entry(&d, t, 1, (REF_NAME, "latest")),
            entry(&d, t, 1, (CONTAINERD_NAME, "docker.io/library/b:latest")),
            entry(&d, t, 1, (REF_NAME, "busybox:1.36")),
            entry(&d, t, 1, ("other", "x")),
        ]);
        let e = entries(&index).unwrap();
        assert!(matches!(&e[0], Entry::Named(_, n) if n == "docker.io/library/a:v1"));
        assert!(matches!(&e[1], Entry::Referrer(_, r) if r == "docker.io/library/a"));
        assert!(matches!(&e[2], Entry::Tagged(_, t) if t == "latest"));
        assert!(matches!(&e[3], Entry::Named(_, n) if n == "docker.io/library/b:latest"));
        assert!(matches!(&e[4], Entry::Named(_, n) if n == "busybox:1.36"));
        assert!(matches!(&e[5], Entry::Unnamed(_)));
        assert!(entries(b"{").is_err());
    }
}
