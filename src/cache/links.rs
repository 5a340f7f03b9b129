//! Blob links: which repositories may be served which cached content.
//!
//! Content is stored once by digest, but a registry grants it per repository: a client that
//! knows a private layer's digest must not read it through a public repository's name, or
//! through another upstream. So a cached blob or manifest is served under (upstream, repository)
//! only if that pair is linked to its digest: the mirror fetched it from there, a manifest fetched
//! from (or confirmed by) there lists it, or an upstream HEAD there answered 200. Anything else
//! goes upstream like a miss (ARCHITECTURE.md, invariant 10).
//!
//! Links also carry the size a manifest's descriptor gave, so an upstream answer of another
//! length is refused before a byte is released. They live in memory under the cache's lock and
//! in the index's `links` table (so they hold across restarts and offline), and go when their
//! digest is evicted.

use std::collections::HashMap;

use serde::Deserialize;

use super::{Cache, CacheError};
use crate::reference::{Digest, RepoName};

/// The links of every digest the cache knows of.
#[derive(Default)]
pub(super) struct Links {
    by_digest: HashMap<Digest, Vec<Link>>,
}

struct Link {
    /// `upstream\0repository`.
    scope: String,
    size: Option<u64>,
}

/// How a link names an (upstream, repository) pair.
pub(super) fn scope(upstream: &str, repo: impl std::fmt::Display) -> String {
    format!("{upstream}\0{repo}")
}

impl Links {
    pub(super) fn has(&self, digest: &Digest, scope: &str) -> bool {
        self.by_digest
            .get(digest)
            .is_some_and(|l| l.iter().any(|l| l.scope == scope))
    }

    /// The size some manifest gave for this digest, if any did.
    pub(super) fn size(&self, digest: &Digest) -> Option<u64> {
        self.by_digest.get(digest)?.iter().find_map(|l| l.size)
    }

    /// Adds a link; true if it is new (or now carries a size it lacked).
    pub(super) fn add(&mut self, digest: &Digest, scope: &str, size: Option<u64>) -> bool {
        let links = self.by_digest.entry(digest.clone()).or_default();
        match links.iter_mut().find(|l| l.scope == scope) {
            Some(l) if l.size.is_none() && size.is_some() => {
                l.size = size;
                true
            }
            Some(_) => false,
            None => {
                links.push(Link {
                    scope: scope.to_owned(),
                    size,
                });
                true
            }
        }
    }

    pub(super) fn forget(&mut self, digest: &Digest) {
        self.by_digest.remove(digest);
    }
}

/// The content a manifest lists (config, layers, child manifests, artifact blobs, and schema 1
/// layers, which have no size), with sizes. Malformed descriptors are skipped: the manifest's
/// bytes were verified against its digest, but its JSON is the upstream's word.
pub(super) fn descriptors(manifest: &[u8]) -> Vec<(Digest, Option<u64>)> {
    #[derive(Deserialize)]
    struct Descriptor {
        digest: String,
        size: Option<u64>,
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
        .map(|d| (d.digest, d.size));
    let unsized_ = listing.fs_layers.into_iter().map(|l| (l.blob_sum, None));
    sized
        .chain(unsized_)
        .filter_map(|(d, size)| Digest::parse(&d).ok().map(|d| (d, size)))
        .collect()
}

impl Cache {
    /// Whether (upstream, repo) may be served this cached digest.
    pub(super) fn linked(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> bool {
        self.lock().links.has(digest, &scope(upstream, repo))
    }

    /// Links these digests to (upstream, repo), in memory and (for the new ones) in the index.
    pub(super) async fn link(
        &self,
        upstream: &str,
        repo: &RepoName,
        items: impl IntoIterator<Item = (Digest, Option<u64>)>,
    ) -> Result<(), CacheError> {
        let scope = scope(upstream, repo);
        let new: Vec<(Digest, String, Option<u64>)> = {
            let mut s = self.lock();
            items
                .into_iter()
                .filter(|(d, size)| s.links.add(d, &scope, *size))
                .map(|(d, size)| (d, scope.clone(), size))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        self.with_index(move |ix| ix.put_links(&new)).await
    }

    /// Links a manifest and everything it lists to (upstream, repo).
    pub(super) async fn link_manifest(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), CacheError> {
        let size = Some(bytes.len() as u64);
        let items = std::iter::once((digest.clone(), size)).chain(descriptors(bytes));
        self.link(upstream, repo, items).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn links_are_per_scope_and_keep_sizes() {
        let d = Digest::sha256_of(b"x");
        let mut l = Links::default();
        assert!(!l.has(&d, "u\0public"));
        assert!(l.add(&d, "u\0private", None));
        assert!(!l.has(&d, "u\0public"));
        assert!(l.has(&d, "u\0private"));
        assert_eq!(l.size(&d), None);
        assert!(l.add(&d, "u\0private", Some(5)));
        assert!(!l.add(&d, "u\0private", Some(5)));
        assert_eq!(l.size(&d), Some(5));
        l.forget(&d);
        assert!(!l.has(&d, "u\0private"));
    }
}
