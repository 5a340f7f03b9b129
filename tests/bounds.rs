//! Issue 3's bounded disk: LRU by bytes within `max_size`, real recency, blobs larger than the
//! cache streamed through, and a lowered `max_size` applied at start.

mod support;

use std::fs;
use std::path::Path;

use support::*;

/// Bytes of stored files under the cache's `blobs/` (what `max_size` bounds; the index aside).
fn stored_bytes(cache: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() { walk(&e.path()) } else { m.len() }
            })
            .sum()
    }
    walk(&cache.join("blobs")) + walk(&cache.join("tmp"))
}

fn get_blob(m: &Mirror, repo: &str, digest: &str) {
    let r = stream_get(m.port, &format!("/v2/{repo}/blobs/{digest}"), &[]);
    assert_eq!(r.status, 200);
    assert!(r.complete(), "{repo}");
    assert_eq!(r.digest, digest, "{repo}");
    // The fill commits just after its clients are done: let it, so LRU order is what we did.
    m.wait_settled();
}

/// The scenario: with ~220 MiB, pull 128 MiB (A) then 64 MiB (B), read A again, pull
/// another 64 MiB (C): B, the least recently used, is evicted; A is kept (no new upstream GET);
/// the disk stays within the bound; B comes back from upstream intact.
#[test]
fn lru_evicts_the_least_recently_used_and_stays_within_the_bound() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let max = 220u64 << 20;
    let m = Mirror::start(
        &[Up::default("docker.io", reg.url())],
        "max_size = \"220MiB\"",
    );
    let (a, b, c) = (
        seed.image("lru/a").largest_blob(),
        seed.image("lru/b").largest_blob(),
        seed.image("lru/c").largest_blob(),
    );
    get_blob(&m, "lru/a", &a.0);
    get_blob(&m, "lru/b", &b.0);
    get_blob(&m, "lru/a", &a.0); // A is now younger than B
    get_blob(&m, "lru/c", &c.0);
    let cached = m.cached_files();
    assert!(cached.contains(&a.0), "A (recently read) was evicted");
    assert!(!cached.contains(&b.0), "B (least recently used) was kept");
    assert!(cached.contains(&c.0));
    assert!(
        stored_bytes(&m.cache_dir) <= max,
        "{} > {max}",
        stored_bytes(&m.cache_dir)
    );
    get_blob(&m, "lru/a", &a.0);
    assert_eq!(
        reg.count(&format!("\"GET /v2/lru/a/blobs/{}", a.0)),
        1,
        "A was fetched again"
    );
    // B comes back intact, and the bound still holds.
    get_blob(&m, "lru/b", &b.0);
    assert_eq!(reg.count(&format!("\"GET /v2/lru/b/blobs/{}", b.0)), 2);
    assert!(stored_bytes(&m.cache_dir) <= max);
    let metrics = String::from_utf8(raw_request(m.port, "GET", "/metrics", &[]).body).unwrap();
    assert!(
        metrics.contains("entrepot_evictions_total{kind=\"blob\"}"),
        "{metrics}"
    );
}

/// A blob larger than the whole cache is still served, is not kept, and does not wedge anything.
#[test]
fn a_blob_larger_than_the_cache_is_streamed_through() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::start(
        &[Up::default("docker.io", reg.url())],
        "max_size = \"50MiB\"",
    );
    let big = seed.image("big/blob").largest_blob();
    for _ in 0..2 {
        get_blob(&m, "big/blob", &big.0);
    }
    assert!(!m.cached_files().contains(&big.0));
    assert_eq!(m.temp_files(), 0);
    // Smaller things are still cached as usual.
    let small = seed.image("oci/app").largest_blob();
    get_blob(&m, "oci/app", &small.0);
    assert!(m.wait_cached(&small.0));
}

/// Lowering `max_size` and restarting shrinks the cache at start.
#[test]
fn a_lowered_max_size_shrinks_the_cache_at_start() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::start(
        &[Up::default("docker.io", reg.url())],
        "max_size = \"1GiB\"",
    );
    let (b, c) = (
        seed.image("lru/b").largest_blob(),
        seed.image("lru/c").largest_blob(),
    );
    get_blob(&m, "lru/b", &b.0);
    get_blob(&m, "lru/c", &c.0);
    assert!(stored_bytes(&m.cache_dir) > 128 << 20);
    m.reconfigure(|cfg| cfg.replace("max_size = \"1GiB\"", "max_size = \"100MiB\""));
    assert!(stored_bytes(&m.cache_dir) <= 100 << 20);
    // What is left is whole and served.
    let kept: Vec<_> = m.cached_files();
    assert_eq!(kept.iter().filter(|d| **d == b.0 || **d == c.0).count(), 1);
}
