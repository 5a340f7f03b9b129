//! The OCI distribution spec v1.1, its "Pull" section point by point (issue 23): each MUST as an
//! assertion against the mirror over a real upstream (Debian's docker-registry, distribution
//! 2.8), cold and then from the cache. The "Content Discovery" section's points are tested where
//! the mirror does more than that upstream: tags paging and order in `api.rs`
//! (`tags_are_paged_by_n_and_last_over_an_upstream_that_ignores_both`,
//! `tags_are_listed_in_the_specs_case_insensitive_order`), referrers in `airgap.rs`
//! (`referrers_are_answered_from_the_fallback_tag_over_an_upstream_without_the_api`); the
//! README's "The distribution spec" table maps every point to its test.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use support::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// "Pulling manifests": a GET of an existing manifest, by tag or by digest, MUST give the
/// manifest with 200; the `Content-Type` is the manifest's media type; the
/// `Docker-Content-Digest` is the digest of the body (the one asked for, by digest); a manifest
/// or repository that does not exist MUST be 404; `<reference>` MUST be a tag or a digest, so
/// nothing else names a manifest (404), and a `<name>` outside the grammar is refused (400).
#[test]
fn pulling_manifests() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let accept = [("Accept", ACCEPT_ALL)];
    for repo in ["oci/app", "multi/arch"] {
        let img = seed.image(repo);
        let upstream = raw_request(
            reg.port,
            "GET",
            &format!("/v2/{repo}/manifests/{}", img.tag),
            &accept,
        );
        for round in ["cold", "cached"] {
            for reference in [img.tag.clone(), img.digest.clone()] {
                let r = raw_request(
                    m.port,
                    "GET",
                    &format!("/v2/{repo}/manifests/{reference}"),
                    &accept,
                );
                let at = format!("{round} {repo}:{reference}");
                assert_eq!(r.status, 200, "{at}");
                assert!(r.body == upstream.body, "{at}: the manifest, byte for byte");
                assert_eq!(
                    r.header("content-type"),
                    Some(img.media_type.as_str()),
                    "{at}"
                );
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["mediaType"], img.media_type, "{at}");
                assert_eq!(
                    r.header("docker-content-digest"),
                    Some(sha256(&r.body).as_str()),
                    "{at}"
                );
                assert_eq!(sha256(&r.body), img.digest, "{at}");
            }
        }
    }
    assert!([OCI_MANIFEST, OCI_INDEX].contains(&seed.image("multi/arch").media_type.as_str()));
    let zeros = "0".repeat(64);
    for (path, status) in [
        ("/v2/oci/app/manifests/no-such-tag".to_owned(), 404),
        (format!("/v2/oci/app/manifests/sha256:{zeros}"), 404),
        ("/v2/no/such/repository/manifests/v1".to_owned(), 404),
        (
            "/v2/oci/app/manifests/.INVALID_MANIFEST_NAME".to_owned(),
            404,
        ),
        (format!("/v2/oci/app/manifests/{}", "t".repeat(129)), 404),
        ("/v2/Oci/App/manifests/v1".to_owned(), 400),
        ("/v2/oci//app/manifests/v1".to_owned(), 400),
        ("/v2/oci/app-/manifests/v1".to_owned(), 400),
    ] {
        for method in ["GET", "HEAD"] {
            let r = raw_request(m.port, method, &path, &accept);
            assert_eq!(r.status, status, "{method} {path}");
        }
    }
}

/// "Pulling blobs": a GET of an existing blob MUST give the blob with 200, and its
/// `Docker-Content-Digest`, when present (it is), MUST be a digest matching the body; a blob
/// that does not exist MUST be 404. `Range` (a SHOULD, RFC 9110) gives a 206 of the bytes asked.
#[test]
fn pulling_blobs() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let img = seed.image("oci/app");
    for round in ["cold", "cached"] {
        for (digest, size) in &img.blobs {
            let path = format!("/v2/oci/app/blobs/{digest}");
            let r = raw_request(m.port, "GET", &path, &[]);
            assert_eq!(r.status, 200, "{round} {digest}");
            assert!(r.complete, "{round} {digest}");
            assert_eq!(r.body.len() as u64, *size);
            assert_eq!(&sha256(&r.body), digest, "{round}: the blob");
            assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
            let r = raw_request(m.port, "GET", &path, &[("Range", "bytes=1-3")]);
            assert_eq!(r.status, 206, "{round} {digest}");
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes 1-3/{size}").as_str())
            );
            assert_eq!(r.body.len(), 3);
        }
        assert!(m.wait_cached(&img.blobs[0].0));
    }
    let zeros = "0".repeat(64);
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/oci/app/blobs/sha256:{zeros}"),
        &[],
    );
    assert_eq!(r.status, 404);
    // A blob of another repository is not this one's.
    let other = &seed.image("multi/arch").blobs[0].0;
    let r = raw_request(m.port, "GET", &format!("/v2/oci/app/blobs/{other}"), &[]);
    assert_eq!(r.status, 404);
}

/// "Checking if content exists in the registry": a HEAD of an existing manifest or blob MUST be
/// 200, with `Docker-Content-Digest` and the exact `Content-Length`, and MUST NOT have a body;
/// one that does not exist MUST be 404.
#[test]
fn checking_if_content_exists() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let img = seed.image("oci/app");
    let accept = [("Accept", ACCEPT_ALL)];
    let manifest_len = raw_request(
        reg.port,
        "GET",
        &format!("/v2/oci/app/manifests/{}", img.digest),
        &accept,
    )
    .body
    .len() as u64;
    for round in ["cold", "cached"] {
        let mut things: Vec<(String, String, u64)> = vec![
            (
                format!("/v2/oci/app/manifests/{}", img.tag),
                img.digest.clone(),
                manifest_len,
            ),
            (
                format!("/v2/oci/app/manifests/{}", img.digest),
                img.digest.clone(),
                manifest_len,
            ),
        ];
        for (d, size) in &img.blobs {
            things.push((format!("/v2/oci/app/blobs/{d}"), d.clone(), *size));
        }
        for (path, digest, len) in things {
            let r = raw_request(m.port, "HEAD", &path, &accept);
            assert_eq!(r.status, 200, "{round} {path}");
            assert_eq!(
                r.header("docker-content-digest"),
                Some(digest.as_str()),
                "{round} {path}"
            );
            assert_eq!(
                r.header("content-length"),
                Some(len.to_string().as_str()),
                "{round} {path}"
            );
            assert!(r.body.is_empty(), "{round} {path}: a HEAD has no body");
            if round == "cold" {
                raw_request(m.port, "GET", &path, &accept);
            }
        }
        assert!(m.wait_cached(&img.blobs[0].0));
    }
    let zeros = "0".repeat(64);
    for path in [
        format!("/v2/oci/app/blobs/sha256:{zeros}"),
        format!("/v2/oci/app/manifests/sha256:{zeros}"),
        "/v2/oci/app/manifests/no-such-tag".to_owned(),
    ] {
        let r = raw_request(m.port, "HEAD", &path, &accept);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.body.is_empty(), "{path}: a HEAD has no body");
    }
}

/// "Determining support": `GET /v2/` is 200 (with `Docker-Distribution-API-Version:
/// registry/2.0`, which the spec leaves optional and clients check).
#[test]
fn determining_support() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let r = raw_request(m.port, "GET", "/v2/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}
