//! The index's tables, written and read back.

use super::*;

#[test]
fn round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("i.redb")).unwrap();
    let d = Digest::sha256_of(b"x");
    let m = EntryMeta {
        size: 1,
        last_access_ms: 7,
        kinds: KIND_MANIFEST,
    };
    idx.put_manifest(
        "docker.io",
        "library/a",
        &d,
        m,
        "application/vnd.oci.image.manifest.v1+json",
    )
    .unwrap();
    assert_eq!(idx.entries().unwrap(), vec![(d.clone(), m)]);
    assert_eq!(
        idx.manifest_type("docker.io", &d).unwrap().as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(idx.manifest_type("quay.io", &d).unwrap(), None);
    let t = TagEntry {
        digest: d.clone(),
        checked_at_ms: 9,
    };
    idx.put_tag("docker.io", "library/a", "v1", &t).unwrap();
    idx.put_tag("docker.io", "library/ab", "v0", &t).unwrap();
    assert_eq!(idx.tag("docker.io", "library/a", "v1").unwrap(), Some(t));
    assert_eq!(idx.tags("docker.io", "library/a").unwrap(), vec!["v1"]);
    let link = (d.clone(), "docker.io\0library/a".to_owned(), Some(1));
    idx.put_links(std::slice::from_ref(&link)).unwrap();
    assert_eq!(idx.links().unwrap(), vec![link]);
    idx.remove_entries(std::slice::from_ref(&d)).unwrap();
    assert!(idx.entries().unwrap().is_empty());
    assert!(idx.links().unwrap().is_empty());
    assert_eq!(idx.manifest_type("docker.io", &d).unwrap(), None);
    let mut repos = idx.repos().unwrap();
    repos.sort();
    assert_eq!(repos.len(), 2);
}

/// Eviction churn leaves the file mostly free pages; `compact` gives them back.
#[test]
fn compaction_gives_back_what_removals_freed() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("i.redb")).unwrap();
    let meta = EntryMeta {
        size: 1,
        last_access_ms: 7,
        kinds: KIND_BLOB,
    };
    let digests: Vec<Digest> = (0u32..20_000)
        .map(|i| Digest::sha256_of(&i.to_le_bytes()))
        .collect();
    for chunk in digests.chunks(1000) {
        let entries: Vec<_> = chunk.iter().map(|d| (d.clone(), meta)).collect();
        idx.put_entries(&entries).unwrap();
    }
    idx.remove_entries(&digests[..19_000]).unwrap();
    let (before, after) = idx.compact().unwrap().expect("nothing in flight");
    assert!(after < before / 2, "{before} -> {after}");
    assert_eq!(idx.entries().unwrap().len(), 1000);
}

/// An evicted blob's entry and links go; a manifest's type and referrers go with a manifest.
#[test]
fn removals_by_kind_take_what_each_kind_has() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("i.redb")).unwrap();
    let (blob, manifest) = (Digest::sha256_of(b"blob"), Digest::sha256_of(b"manifest"));
    let meta = |kinds| EntryMeta {
        size: 1,
        last_access_ms: 7,
        kinds,
    };
    idx.put_entries(&[(blob.clone(), meta(KIND_BLOB))]).unwrap();
    let t = "application/vnd.oci.image.manifest.v1+json";
    idx.put_manifest("docker.io", "library/a", &manifest, meta(KIND_MANIFEST), t)
        .unwrap();
    let scope = "docker.io\0library/a".to_owned();
    idx.put_links(&[
        (blob.clone(), scope.clone(), Some(1)),
        (manifest.clone(), scope, Some(1)),
    ])
    .unwrap();
    idx.remove_entries_of(&[(&blob, KIND_BLOB), (&manifest, KIND_MANIFEST)])
        .unwrap();
    assert!(idx.entries().unwrap().is_empty());
    assert!(idx.links().unwrap().is_empty());
    assert_eq!(idx.manifest_type("docker.io", &manifest).unwrap(), None);
}
