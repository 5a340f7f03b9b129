//! Pulling through the mirror from a real registry (Debian's docker-registry) with skopeo, and the
//! fill's guarantees: one upstream fetch however many clients, never a complete wrong body, and
//! everything cached still served when the upstream is gone.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashSet;
use std::fs;

use support::*;

/// skopeo pulls every seeded image through the mirror, by tag, and gets the registry's digests:
/// Docker schema2, OCI, a multi-arch index (`--all`), 25 layers, a 105 MiB layer, and a name with
/// three components (through a non-default upstream named by path prefix).
#[test]
fn skopeo_pulls_every_image_with_the_right_digests() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::of(&[
        Up::default("docker.io", reg.url()),
        Up::new("quay.io", reg.url()),
    ])
    .start();
    let out = scratch("skopeo-out");
    for img in &seed.images {
        let all = !img.children.is_empty();
        let name = if img.repo == "library/busybox" {
            "busybox".to_owned()
        } else {
            img.repo.clone()
        };
        // The three-component name goes through the `quay.io` upstream by path prefix.
        let reference = if img.repo == "team/project/app" {
            format!("{}/quay.io/{}:{}", mirror.host(), name, img.tag)
        } else {
            format!("{}/{}:{}", mirror.host(), name, img.tag)
        };
        let dest = out.path().join(img.repo.replace('/', "_"));
        let got = skopeo_pull(&reference, &dest, all);
        assert_eq!(got, img.digest, "{reference}");
        // Every blob arrived and hashes to its name.
        for (digest, size) in &img.blobs {
            let dirs: Vec<_> = if all {
                img.children.iter().map(|c| dest.join(&c[7..])).collect()
            } else {
                vec![dest.clone()]
            };
            let found = dirs
                .iter()
                .find_map(|d| fs::read(d.join(&digest[7..])).ok());
            let found = found.or_else(|| fs::read(dest.join(&digest[7..])).ok());
            let bytes = found.unwrap_or_else(|| panic!("{reference}: blob {digest} missing"));
            assert_eq!(bytes.len() as u64, *size);
            assert_eq!(&sha256(&bytes), digest);
        }
    }
    // All of it is now cached: the index, its children, every blob.
    mirror.wait_settled();
    let cached: HashSet<String> = mirror.cached_files().into_iter().collect();
    for img in &seed.images {
        assert!(
            cached.contains(&img.digest),
            "{} manifest not cached",
            img.repo
        );
        for c in &img.children {
            assert!(cached.contains(c), "{} child not cached", img.repo);
        }
        for (b, _) in &img.blobs {
            assert!(cached.contains(b), "{} blob {b} not cached", img.repo);
        }
    }
    assert_eq!(mirror.temp_files(), 0);
}

/// 16 concurrent cold GETs of one 105 MiB blob: one upstream GET, 16 right answers.
#[test]
fn sixteen_concurrent_cold_gets_cause_one_upstream_fetch() {
    let seed = seed();
    let img = seed.image("big/blob");
    let (digest, size) = img.largest_blob();
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let path = format!("/v2/big/blob/blobs/{digest}");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (path, barrier, port) = (path.clone(), barrier.clone(), mirror.port);
            std::thread::spawn(move || {
                barrier.wait();
                stream_get(port, &path, &[])
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.declared, Some(size));
        assert!(r.complete());
        assert_eq!(r.digest, digest);
    }
    assert_eq!(reg.count(&format!("\"GET /v2/big/blob/blobs/{digest}")), 1);
    assert!(mirror.wait_cached(&digest));
}

/// Range on a cold blob is served from the fill (206 with the right tail), not ignored.
#[test]
fn range_on_a_cold_blob_gets_the_right_bytes() {
    let seed = seed();
    let img = seed.image("big/blob");
    let (digest, size) = img.largest_blob();
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let start = 100_000_001u64;
    let r = raw_request(
        mirror.port,
        "GET",
        &format!("/v2/big/blob/blobs/{digest}"),
        &[("Range", &format!("bytes={start}-"))],
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {start}-{}/{size}", size - 1).as_str())
    );
    let full = fs::read(registry_blob_path(&seed.storage, &digest)).unwrap();
    assert!(r.complete);
    assert!(r.body == full[start as usize..], "tail bytes differ");
    // Past the end: 416 with the size.
    let r = raw_request(
        mirror.port,
        "GET",
        &format!("/v2/big/blob/blobs/{digest}"),
        &[("Range", &format!("bytes={size}-"))],
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
}

/// An upstream whose stored blob has one byte flipped: no client ever gets a complete body, and
/// nothing is cached under the digest. Likewise for a flipped manifest.
#[test]
fn a_flipped_byte_upstream_never_yields_a_complete_wrong_body() {
    let seed = seed();
    let img = seed.image("oci/app");
    let storage = storage_copy();
    let (layer, _) = img.blobs.last().unwrap().clone();
    let path = registry_blob_path(storage.path(), &layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let mpath = registry_blob_path(storage.path(), &img.digest);
    let mut m = fs::read(&mpath).unwrap();
    let last = m.len() - 2;
    m[last] = b' ';
    fs::write(&mpath, &m).unwrap();

    let reg = Registry::start(storage.path());
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    for _ in 0..2 {
        // A connection closed before any head is also "not complete": when the whole blob
        // arrives in one chunk, the fill can fail before the response's first byte goes out.
        let r = try_stream_get(mirror.port, &format!("/v2/oci/app/blobs/{layer}"), &[]);
        assert!(
            !r.is_some_and(|r| r.status == 200 && r.complete()),
            "a complete wrong body was served"
        );
        let r = raw_request(
            mirror.port,
            "GET",
            &format!("/v2/oci/app/manifests/{}", img.digest),
            &[],
        );
        assert_ne!(r.status, 200, "a wrong manifest was served");
        assert!(r.body.starts_with(b"{\"errors\""));
        let r = raw_request(mirror.port, "GET", "/v2/oci/app/manifests/v1", &[]);
        assert_ne!(r.status, 200, "a wrong manifest was served by tag");
    }
    // Every fill has ended (kept or not) before what it kept is looked at.
    mirror.wait_settled();
    assert!(
        !mirror.cached_files().contains(&layer),
        "a corrupt blob was kept"
    );
    assert!(
        !mirror.cached_files().contains(&img.digest),
        "a corrupt manifest was kept"
    );
    assert_eq!(mirror.temp_files(), 0);
    let metrics = raw_request(mirror.port, "GET", "/metrics", &[]);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("entrepot_fill_failures_total{reason=\"digest_mismatch\"}"),
        "{text}"
    );
}

/// A blob whose upstream stored copy was truncated, and an upstream connection cut mid-body:
/// neither yields a complete body, neither leaves anything cached.
#[test]
fn a_short_upstream_body_never_yields_a_complete_body() {
    let seed = seed();
    // Truncated at the source.
    let img = seed.image("many/layers");
    let storage = storage_copy();
    let (layer, _) = img.blobs[3].clone();
    let path = registry_blob_path(storage.path(), &layer);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let reg = Registry::start(storage.path());
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let r = stream_get(mirror.port, &format!("/v2/many/layers/blobs/{layer}"), &[]);
    assert!(!(r.status == 200 && r.complete()));

    // Cut mid-body by the network.
    let big = seed.image("big/blob");
    let (digest, size) = big.largest_blob();
    let proxy = Proxy::cutting(reg.port, 8 << 20);
    let mirror2 = Mirror::of(&[Up::default(
        "docker.io",
        format!("http://127.0.0.1:{}", proxy.port),
    )])
    .start();
    let r = stream_get(mirror2.port, &format!("/v2/big/blob/blobs/{digest}"), &[]);
    assert!(
        !(r.status == 200 && r.complete()),
        "a cut body looked complete"
    );
    assert!(r.received < size);
    mirror.wait_settled();
    mirror2.wait_settled();
    assert!(!mirror.cached_files().contains(&layer));
    assert!(!mirror2.cached_files().contains(&digest));
    assert_eq!(mirror2.temp_files(), 0);
}

/// Stop the upstream, restart the mirror: every cached image still pulls, by tag too (the tag TTL
/// has passed, so this is stale-if-error at work).
#[test]
fn with_the_upstream_gone_a_restarted_mirror_serves_everything_cached() {
    let seed = seed();
    let mut reg = Registry::start(&seed.storage);
    let mut mirror = Mirror::of(&[
        Up::default("docker.io", reg.url()),
        Up::new("quay.io", reg.url()),
    ])
    .tag_ttl("1s")
    .start();
    let refs = [
        (
            format!("{}/busybox:latest", mirror.host()),
            "library/busybox",
            false,
        ),
        (format!("{}/oci/app:v1", mirror.host()), "oci/app", false),
        (
            format!("{}/multi/arch:v1", mirror.host()),
            "multi/arch",
            true,
        ),
        (
            format!("{}/quay.io/team/project/app:v1", mirror.host()),
            "team/project/app",
            false,
        ),
    ];
    let out = scratch("offline");
    for (i, (r, repo, all)) in refs.iter().enumerate() {
        let d = skopeo_pull(r, &out.path().join(format!("a{i}")), *all);
        assert_eq!(d, seed.image(repo).digest);
    }
    reg.stop();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    mirror.restart();
    for (i, (r, repo, all)) in refs.iter().enumerate() {
        let d = skopeo_pull(r, &out.path().join(format!("b{i}")), *all);
        assert_eq!(
            d,
            seed.image(repo).digest,
            "{r} after the upstream went away"
        );
    }
    let metrics = String::from_utf8(raw_request(mirror.port, "GET", "/metrics", &[]).body).unwrap();
    assert!(
        metrics.contains("entrepot_cache_lookups_total{kind=\"tag\",result=\"stale\"}"),
        "{metrics}"
    );
}

/// A client that leaves mid-blob does not cancel the fill: the blob ends up cached, verified,
/// from the one upstream GET.
#[test]
fn the_fill_finishes_when_every_client_leaves() {
    use std::io::{Read, Write};
    let seed = seed();
    let img = seed.image("big/blob");
    let (digest, size) = img.largest_blob();
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", mirror.port)).unwrap();
        write!(
            s,
            "GET /v2/big/blob/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).unwrap();
        // Dropped here, long before the end.
    }
    eventually(
        std::time::Duration::from_secs(60),
        "the fill did not finish",
        || mirror.cached_files().contains(&digest),
    );
    let r = stream_get(mirror.port, &format!("/v2/big/blob/blobs/{digest}"), &[]);
    assert!(r.complete() && r.digest == digest && r.declared == Some(size));
    assert_eq!(reg.count(&format!("\"GET /v2/big/blob/blobs/{digest}")), 1);
}

/// A cached blob or manifest is served under a repository only if that repository is linked to
/// it (a manifest fetched there lists it, or the upstream confirmed it there): a client that
/// knows a private layer's digest cannot read it through another repository or upstream. A
/// normal pull costs no extra upstream request, and links hold across restarts, offline.
#[test]
fn cached_content_is_served_only_where_it_belongs() {
    let seed = seed();
    let mut reg = Registry::start(&seed.storage);
    let empty = scratch("empty-registry");
    let other = Registry::start(empty.path());
    let mut m = Mirror::of(&[
        Up::default("docker.io", reg.url()),
        Up::new("other.example", other.url()),
    ])
    .start();
    // `oci/app` stands for a private image; `lru/b` is a repository it does not belong to.
    let private = seed.image("oci/app");
    let out = scratch("belongs");
    for i in 0..2 {
        let reference = format!("{}/oci/app:{}", m.host(), private.tag);
        skopeo_pull(&reference, &out.path().join(format!("p{i}")), false);
    }
    assert_eq!(
        reg.count("\"HEAD /v2/oci/app/blobs/"),
        0,
        "a normal pull asked the upstream about its blobs"
    );
    let (layer, _) = private.largest_blob();
    assert!(m.wait_cached(&layer));
    let elsewhere = [
        format!("/v2/lru/b/blobs/{layer}"),
        format!("/v2/other.example/oci/app/blobs/{layer}"),
    ];
    let check_refused = |m: &Mirror, path: &str| {
        for method in ["GET", "HEAD"] {
            let r = raw_request(m.port, method, path, &[]);
            assert!(
                r.status >= 400,
                "{method} {path} served the private layer: {}",
                r.status
            );
        }
        let r = raw_request(
            m.port,
            "GET",
            &path
                .replace("/blobs/", "/manifests/")
                .replace(&layer, &private.digest),
            &[("Accept", &private.media_type)],
        );
        assert!(r.status >= 400, "{path}: the private manifest was served");
    };
    for path in &elsewhere {
        check_refused(&m, path);
    }
    assert_eq!(
        raw_request(m.port, "GET", &elsewhere[0], &[]).status,
        404,
        "the upstream's answer (404) was not passed on"
    );
    // Links hold across a restart, with the upstream gone.
    reg.stop();
    m.restart();
    let r = stream_get(m.port, &format!("/v2/oci/app/blobs/{layer}"), &[]);
    assert!(r.complete() && r.digest == layer, "status {}", r.status);
    for path in &elsewhere {
        check_refused(&m, path);
    }
}

/// `[cache] offline = true` (issue 10): the upstream is never contacted; what is cached is served,
/// tags included however old; anything else is a clean 404 at once.
#[test]
fn offline_serves_the_cache_and_never_contacts_the_upstream() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let img = seed.image("oci/app");
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .tag_ttl("1s")
        .start();
    let out = scratch("offline-mode");
    let reference = format!("{}/oci/app:{}", m.host(), img.tag);
    assert_eq!(
        skopeo_pull(&reference, &out.path().join("a"), false),
        img.digest
    );
    m.wait_settled();
    m.reconfigure(|cfg| cfg.replace("[cache]\n", "[cache]\noffline = true\n"));
    let asked = std::fs::read_to_string(&reg.log).unwrap().lines().count();
    std::thread::sleep(std::time::Duration::from_millis(1500)); // past tag_ttl
    assert_eq!(
        skopeo_pull(&reference, &out.path().join("b"), false),
        img.digest
    );
    let tags = raw_request(m.port, "GET", "/v2/oci/app/tags/list", &[]);
    assert_eq!(tags.status, 200);
    assert!(String::from_utf8_lossy(&tags.body).contains(&img.tag));
    // Not cached: 404 with the registry's codes, and a message that says why.
    let other = seed.image("lru/a");
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/lru/a/manifests/{}", other.tag),
        &[],
    );
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("MANIFEST_UNKNOWN"));
    assert!(String::from_utf8_lossy(&r.body).contains("offline"));
    let (blob, _) = other.largest_blob();
    let r = raw_request(m.port, "GET", &format!("/v2/lru/a/blobs/{blob}"), &[]);
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("BLOB_UNKNOWN"));
    assert_eq!(m.temp_files(), 0);
    let after = std::fs::read_to_string(&reg.log).unwrap().lines().count();
    assert_eq!(after, asked, "the upstream was contacted while offline");
}

/// `[cache] prefetch_layers` (on by default): a client's GET of an image manifest starts the
/// fills of the layers the cache lacks, each fetched once; off, nothing is fetched unasked.
#[test]
fn an_image_manifest_get_prefetches_its_layers_once() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let img = seed.image("many/layers");
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/many/layers/manifests/{}", img.tag),
        &[],
    );
    assert_eq!(r.status, 200);
    for (d, _) in &img.blobs {
        assert!(m.wait_cached(d), "{d} was not prefetched");
    }
    // The client's own pull then finds every layer warm: no second upstream fetch.
    let out = scratch("prefetch");
    assert_eq!(
        skopeo_pull(
            &format!("{}/many/layers:{}", m.host(), img.tag),
            out.path(),
            false
        ),
        img.digest
    );
    for (d, _) in &img.blobs {
        assert_eq!(
            reg.count(&format!("\"GET /v2/many/layers/blobs/{d}")),
            1,
            "{d}"
        );
    }

    let off = Mirror::of(&[Up::default("docker.io", reg.url())])
        .prefetch_layers(false)
        .start();
    let r = raw_request(
        off.port,
        "GET",
        &format!("/v2/many/layers/manifests/{}", img.tag),
        &[],
    );
    assert_eq!(r.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(500));
    off.wait_settled();
    for (d, _) in &img.blobs {
        assert!(!off.cached_files().contains(d), "{d} fetched unasked");
    }
}

#[test]
fn layers_evicted_after_a_warm_pull_are_prefetched_again() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let img = seed.image("many/layers");
    let (big, big_size) = seed.image("lru/b").largest_blob();
    // Room for the 64 MiB layer, not for it and the 25 small ones: keeping it evicts them.
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .max_size(big_size + 20_000)
        .start();
    let manifest = format!("/v2/many/layers/manifests/{}", img.tag);
    assert_eq!(raw_request(m.port, "GET", &manifest, &[]).status, 200);
    for (d, _) in &img.blobs {
        assert!(m.wait_cached(d), "{d} was not prefetched");
    }
    // A warm GET: everything it lists is held.
    assert_eq!(raw_request(m.port, "GET", &manifest, &[]).status, 200);

    assert_eq!(
        raw_request(m.port, "GET", "/v2/lru/b/manifests/v1", &[]).status,
        200
    );
    assert!(m.wait_cached(&big));
    m.wait_settled();
    let held = m.cached_files();
    assert!(
        img.blobs.iter().any(|(d, _)| !held.contains(d)),
        "nothing of many/layers was evicted"
    );

    // The same manifest again: what was evicted is fetched again, before any client asks.
    assert_eq!(raw_request(m.port, "GET", &manifest, &[]).status, 200);
    for (d, _) in &img.blobs {
        assert!(m.wait_cached(d), "{d} was not prefetched again");
    }
}

/// The parts of a `multipart/byteranges` body: each part's `Content-Range` and bytes.
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let delimiter = format!("\r\n--{boundary}");
    let mut out = Vec::new();
    let first = find(body, delimiter.as_bytes()).expect("a first boundary");
    let mut rest = &body[first + delimiter.len()..];
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a boundary");
        let end = find(rest, b"\r\n\r\n").expect("a part's headers");
        let headers = String::from_utf8_lossy(&rest[..end]).into_owned();
        let range = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("a Content-Range per part")
            .to_owned();
        assert!(
            headers.contains("Content-Type: application/octet-stream"),
            "{headers}"
        );
        rest = &rest[end + 4..];
        let next = find(rest, delimiter.as_bytes()).expect("a boundary after each part");
        out.push((range, rest[..next].to_vec()));
        rest = &rest[next + delimiter.len()..];
    }
    out
}

/// Many ranges in one request, as podman's partial pulls of zstd:chunked images send (issue 23):
/// a 206 `multipart/byteranges` whose parts carry the right bytes and `Content-Range`s, on a
/// cold blob (cut from the fill as it arrives) and on the held one; the ranges sorted, the
/// overlapping merged, as RFC 9110 §14.2 lets a server, adjacent ones kept apart (one part per
/// range, as containers/image counts); 416 when none can be satisfied, or when more than 1,024
/// are asked; never a 200 with the whole blob.
#[test]
fn many_ranges_get_a_multipart_answer_cold_and_held() {
    let seed = seed();
    let img = seed.image("big/blob");
    let (digest, size) = img.largest_blob();
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let full = fs::read(registry_blob_path(&seed.storage, &digest)).unwrap();
    let path = format!("/v2/big/blob/blobs/{digest}");
    let ask = "bytes=100000000-100000099,0-99,50-149,-10";
    let want = [
        (0u64, 150u64),
        (100_000_000, 100_000_100),
        (size - 10, size),
    ];
    for round in ["cold", "held"] {
        let r = raw_request(mirror.port, "GET", &path, &[("Range", ask)]);
        assert_eq!(r.status, 206, "{round}");
        assert!(r.complete, "{round}");
        let ct = r.header("content-type").unwrap().to_owned();
        let boundary = ct
            .strip_prefix("multipart/byteranges; boundary=")
            .unwrap_or_else(|| panic!("{ct}"));
        let parts = parse_multipart(&r.body, boundary);
        assert_eq!(parts.len(), want.len(), "{round}");
        for ((range, bytes), (s, e)) in parts.iter().zip(want) {
            assert_eq!(range, &format!("bytes {s}-{}/{size}", e - 1), "{round}");
            assert!(
                bytes[..] == full[s as usize..e as usize],
                "{round}: {range}"
            );
        }
        assert!(mirror.wait_cached(&digest));
    }
    assert_eq!(reg.count(&format!("\"GET /v2/big/blob/blobs/{digest}")), 1);
    // Overlapping, merged into one span: a plain 206.
    let r = raw_request(mirror.port, "GET", &path, &[("Range", "bytes=10-19,0-10")]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-19/{size}").as_str())
    );
    assert!(r.body == full[..20]);
    let none = format!("bytes={size}-,{}-{}", size + 5, size + 9);
    let r = raw_request(mirror.port, "GET", &path, &[("Range", none.as_str())]);
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    // Adjacent: a part each.
    let r = raw_request(mirror.port, "GET", &path, &[("Range", "bytes=0-9,10-19")]);
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_owned();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    assert_eq!(parse_multipart(&r.body, boundary).len(), 2);
    let many = format!("bytes={}", vec!["0-0"; 1025].join(","));
    let r = raw_request(mirror.port, "GET", &path, &[("Range", many.as_str())]);
    assert_eq!(r.status, 416);
}
