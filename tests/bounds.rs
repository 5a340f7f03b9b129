//! Issue 3's bounded disk: LRU by bytes within `max_size`, real recency, blobs larger than the
//! cache streamed through, and a lowered `max_size` applied at start.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

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
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .max_size("220MiB")
        .start();
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
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .max_size("50MiB")
        .start();
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

/// Lowering `max_size` and restarting shrinks the cache at start: in the background, right after
/// the mirror listens (a large cache shrinking before it listened was minutes without a listener).
#[test]
fn a_lowered_max_size_shrinks_the_cache_at_start() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .max_size("1GiB")
        .start();
    let (b, c) = (
        seed.image("lru/b").largest_blob(),
        seed.image("lru/c").largest_blob(),
    );
    get_blob(&m, "lru/b", &b.0);
    get_blob(&m, "lru/c", &c.0);
    assert!(stored_bytes(&m.cache_dir) > 128 << 20);
    m.reconfigure(|cfg| cfg.replace("max_size = \"1GiB\"", "max_size = \"100MiB\""));
    eventually(
        Duration::from_secs(10),
        "the cache did not shrink to the lowered max_size",
        || stored_bytes(&m.cache_dir) <= 100 << 20,
    );
    // What is left is whole and served.
    let kept: Vec<_> = m.cached_files();
    assert_eq!(kept.iter().filter(|d| **d == b.0 || **d == c.0).count(), 1);
}

/// Bytes under the cache's `blobs/` and `tmp/`, tolerating files that vanish mid-walk (for
/// sampling while the mirror works).
fn bytes_now(cache: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(entries) = fs::read_dir(p) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(&cache.join("blobs")) + walk(&cache.join("tmp"))
}

/// `n` distinct 8 MiB blobs with their digests.
fn good_blobs(n: u8) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let bytes: Vec<u8> = (0..8u32 << 20)
                .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i)
                .collect();
            (sha256(&bytes), bytes)
        })
        .collect()
}

/// A scripted upstream (no real registry can be made to lie about a length or never end a
/// body): `good/blob` serves `good` honestly; `liar/<n>` claims `n` bytes and sends 1 MiB;
/// `endless/blob` sends a chunked body that never ends.
fn lying_upstream(good: Vec<(String, Vec<u8>)>) -> FakeUpstream {
    FakeUpstream::start(move |r| {
        let p = r.path.as_str();
        if let Some(rest) = p.strip_prefix("/v2/liar/") {
            let claimed: usize = rest.split('/').next().unwrap().parse().unwrap();
            FakeAnswer {
                declared_len: Some(claimed),
                ..FakeAnswer::new(200, vec![7u8; 1 << 20])
            }
        } else if p.starts_with("/v2/endless/") {
            FakeAnswer {
                endless: true,
                ..FakeAnswer::new(200, Vec::new())
            }
        } else if let Some((_, bytes)) = good.iter().find(|(d, _)| p.ends_with(d.as_str())) {
            FakeAnswer::new(200, bytes.clone())
        } else {
            FakeAnswer::new(404, "{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}")
        }
    })
}

/// An upstream that claims a blob is just under `max_size` (or 50 GiB) and sends 1 MiB evicts
/// nothing: space is reserved as bytes arrive, never from what the upstream says will.
#[test]
fn a_lying_content_length_evicts_nothing() {
    let good = good_blobs(4);
    let up = lying_upstream(good.clone());
    let m = Mirror::of(&[Up::default("fake", up.url())])
        .max_size("64MiB")
        .start();
    for (d, _) in &good {
        get_blob(&m, "good/blob", d);
    }
    let lie = sha256(b"not what it claims");
    for claimed in [(64u64 << 20) - 1, 50 << 30] {
        let r = stream_get(m.port, &format!("/v2/liar/{claimed}/blobs/{lie}"), &[]);
        assert!(
            !(r.status == 200 && r.complete()),
            "a short body was served as complete"
        );
        m.wait_settled();
        let cached = m.cached_files();
        for (d, _) in &good {
            assert!(cached.contains(d), "a claim of {claimed} bytes evicted {d}");
        }
    }
    assert_eq!(m.temp_files(), 0);
}

/// A body with no length that never ends cannot fill the disk: the bytes under the cache stay
/// within `max_size` at every moment (sampled), the fill fails once it passes the bound, and
/// the mirror goes on serving.
#[test]
fn an_endless_body_stays_within_the_bound() {
    let good = good_blobs(2);
    let up = lying_upstream(good.clone());
    let max = 32u64 << 20;
    let m = Mirror::of(&[Up::default("fake", up.url())])
        .max_size("32MiB")
        .start();
    for (d, _) in &good {
        get_blob(&m, "good/blob", d);
    }
    let endless = sha256(b"endless");
    let port = m.port;
    let client = std::thread::spawn(move || {
        try_stream_get(port, &format!("/v2/endless/blob/blobs/{endless}"), &[])
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut peak = 0;
    while !client.is_finished() && std::time::Instant::now() < deadline && peak <= max {
        peak = peak.max(bytes_now(&m.cache_dir));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        peak <= max,
        "{peak} bytes under the cache, max_size is {max}"
    );
    assert!(client.is_finished(), "the endless fill was never stopped");
    if let Some(r) = client.join().unwrap() {
        assert!(r.status != 200 || !r.complete());
    }
    m.wait_settled();
    assert!(bytes_now(&m.cache_dir) <= max);
    assert_eq!(m.temp_files(), 0);
    // The mirror still serves (what the endless body evicted comes back).
    for (d, _) in &good {
        get_blob(&m, "good/blob", d);
    }
}

/// A blob larger than the whole cache is streamed through without touching the disk: two
/// clients at once both get it whole, and the bytes under the cache never pass `max_size`.
#[test]
fn a_blob_larger_than_the_cache_never_lands_on_disk() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let max = 50u64 << 20;
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .max_size("50MiB")
        .start();
    let (digest, size) = seed.image("big/blob").largest_blob();
    assert!(size > max);
    let path = format!("/v2/big/blob/blobs/{digest}");
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (port, path) = (m.port, path.clone());
            std::thread::spawn(move || stream_get(port, &path, &[]))
        })
        .collect();
    let mut peak = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        peak = peak.max(bytes_now(&m.cache_dir));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for c in clients {
        let r = c.join().unwrap();
        assert!(r.complete() && r.digest == digest);
    }
    assert!(
        peak <= max,
        "{peak} bytes under the cache, max_size is {max}"
    );
}
