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

/// Puts `n` one-byte blob entries, `per_commit` to a transaction; returns their digests.
fn blobs_put(idx: &Index, n: u32, per_commit: usize) -> Vec<Digest> {
    let meta = EntryMeta {
        size: 1,
        last_access_ms: 7,
        kinds: KIND_BLOB,
    };
    let digests: Vec<Digest> = (0..n)
        .map(|i| Digest::sha256_of(&i.to_le_bytes()))
        .collect();
    for chunk in digests.chunks(per_commit) {
        let entries: Vec<_> = chunk.iter().map(|d| (d.clone(), meta)).collect();
        idx.put_entries(&entries).unwrap();
    }
    digests
}

/// A compaction's sizes before and after; it must have run.
fn compacted(c: Compaction) -> (u64, u64) {
    match c {
        Compaction::Done { before, after } => (before, after),
        other => panic!("not compacted: {other:?}"),
    }
}

/// A large file is compacted only when a quarter of it is free: the compaction stops every
/// transaction (5.2 s at a million blobs, for a tenth of the file). Here every file counts as
/// large (`compact_past(0)`).
#[test]
fn a_file_with_little_free_is_not_compacted_and_one_mostly_free_is() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("i.redb")).unwrap();
    let digests = blobs_put(&idx, 40_000, 4000);
    // Tight, as after an import or a compaction.
    compacted(idx.compact_past(u64::MAX).unwrap());
    match idx.compact_past(0).unwrap() {
        Compaction::NotWorthIt { file, free } => {
            assert!(free < file / 4, "{free} of {file}");
            assert_eq!(file, idx.file_size());
        }
        other => panic!("a tight file was compacted: {other:?}"),
    }
    idx.remove_entries(&digests[..36_000]).unwrap();
    let (before, after) = compacted(idx.compact_past(0).unwrap());
    assert!(after < before / 2, "{before} -> {after}");
    assert_eq!(idx.entries().unwrap().len(), 4000);
}

/// Eviction churn leaves the file mostly free pages; `compact` gives them back.
#[test]
fn compaction_gives_back_what_removals_freed() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("i.redb")).unwrap();
    let digests = blobs_put(&idx, 20_000, 1000);
    idx.remove_entries(&digests[..19_000]).unwrap();
    let (before, after) = compacted(idx.compact().unwrap());
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

/// Start-up's one pass: each entry once, each link with its own entry's digest, whatever the
/// order of entries without links and links without entries, and sha512 after sha256.
#[test]
fn one_pass_gives_every_entry_and_each_link_with_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("i.redb")).unwrap();
    let meta = |size| EntryMeta {
        size,
        last_access_ms: 1,
        kinds: KIND_BLOB,
    };
    let mut held: Vec<Digest> = (0u8..40).map(|i| Digest::sha256_of(&[i])).collect();
    held.push(Digest::parse(&format!("sha512:{}", "ab".repeat(64))).unwrap());
    let entries: Vec<(Digest, EntryMeta)> = held
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), meta(i as u64)))
        .collect();
    idx.put_entries(&entries).unwrap();
    // Every third held digest has two links, the others none; some digests held nowhere.
    let mut links = Vec::new();
    for d in held.iter().step_by(3) {
        links.push((d.clone(), "u\0a".to_owned(), Some(1)));
        links.push((d.clone(), "u\0b".to_owned(), None));
    }
    let last = held.last().unwrap().clone();
    links.push((last.clone(), "u\0c".to_owned(), None));
    let unheld: Vec<Digest> = (100u8..110).map(|i| Digest::sha256_of(&[i])).collect();
    for d in &unheld {
        links.push((d.clone(), "u\0a".to_owned(), None));
    }
    idx.put_links(&links).unwrap();

    let (mut seen, mut linked) = (Vec::new(), Vec::new());
    let mut found_unheld = idx
        .each_entry_and_link(|row| match row {
            Row::Entry(d, m) => seen.push((d.clone(), m)),
            Row::Link(d, scope, size) => linked.push((d.clone(), scope.to_owned(), size)),
        })
        .unwrap();
    let (mut want, mut got) = (entries.clone(), seen);
    want.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
    let mut want_links: Vec<_> = links
        .iter()
        .filter(|(d, _, _)| !unheld.contains(d))
        .cloned()
        .collect();
    want_links.sort();
    linked.sort();
    assert_eq!(linked, want_links);
    assert!(linked.iter().any(|(d, s, _)| *d == last && s == "u\0c"));
    found_unheld.sort();
    let mut want_unheld = unheld.clone();
    want_unheld.sort();
    assert_eq!(found_unheld, want_unheld);
}

/// A long eviction with no fill committing beside it (a lowered `max_size`, a cache far over its
/// bound at start) removes batch after batch without an fsync of its own. redb gives back the
/// pages such a commit leaves behind only at a durable commit: with none, every batch took new
/// pages and the file kept growing. And redb grows its file by doubling its length (up to 4 GiB),
/// the new half a hole until written: counted towards `max_size` as its length, a million-entry
/// index taking one page more made the bound 539 MB smaller at once, and half the cache was
/// evicted for space the disk did not lose.
#[test]
fn a_long_eviction_alone_grows_the_file_little_and_its_holes_are_not_counted() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.redb");
    let idx = Index::open(&path).unwrap();
    let meta = EntryMeta {
        size: 1,
        last_access_ms: 7,
        kinds: KIND_BLOB,
    };
    let digests: Vec<Digest> = (0u32..40_000)
        .map(|i| Digest::sha256_of(&i.to_le_bytes()))
        .collect();
    for chunk in digests.chunks(4000) {
        let entries: Vec<_> = chunk.iter().map(|d| (d.clone(), meta)).collect();
        idx.put_entries(&entries).unwrap();
        let links: Vec<_> = chunk
            .iter()
            .map(|d| (d.clone(), "docker.io\0library/a".to_owned(), Some(1)))
            .collect();
        idx.put_links(&links).unwrap();
    }
    // A tight file, as after an import or `gc`: no free pages to take.
    let (_, before) = compacted(idx.compact().unwrap());
    for batch in digests[..30_000].chunks(32) {
        let victims: Vec<_> = batch.iter().map(|d| (d, KIND_BLOB)).collect();
        idx.unindex_evicted(&victims).unwrap();
    }
    idx.persist().unwrap();
    assert_eq!(idx.entries().unwrap().len(), 10_000);
    let file = std::fs::metadata(&path).unwrap();
    let on_disk = file.blocks() * 512;
    // Without a durable commit now and then: 2.04 times what it took before.
    assert!(
        on_disk < before / 2 * 3,
        "{before} -> {on_disk} bytes on disk"
    );
    // redb doubled the length: the index counts what the disk holds.
    assert!(file.len() > before / 2 * 3, "{before} -> {}", file.len());
    assert!(
        idx.file_size() <= on_disk,
        "{} > {on_disk}",
        idx.file_size()
    );
}
