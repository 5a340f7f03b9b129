//! The read side of the protocol, header by header (protocol.md), against a real upstream.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::process::Command;

use support::*;

fn error_code(r: &RawResponse) -> String {
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "error bodies are JSON"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

#[test]
fn base_endpoint_and_push_methods() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let r = raw_request(m.port, "GET", "/v2/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{}");
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    for (method, path) in [
        ("PUT", "/v2/oci/app/manifests/v1"),
        ("POST", "/v2/oci/app/blobs/uploads/"),
        ("PATCH", "/v2/oci/app/blobs/uploads/x"),
        ("DELETE", "/v2/oci/app/manifests/v1"),
    ] {
        let r = raw_request(m.port, method, path, &[]);
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(error_code(&r), "UNSUPPORTED");
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }
    assert_eq!(reg.count("\"PUT "), 0);
}

/// dockerd and containerd HEAD by tag first: that costs no upstream GET, and answers with the
/// digest and exact length. The GET by digest that follows is the one upstream GET; later tag
/// lookups within the TTL cost nothing upstream.
#[test]
fn head_by_tag_costs_no_upstream_get() {
    let seed = seed();
    let img = seed.image("oci/app");
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .tag_ttl("1h")
        .start();
    let r = raw_request(
        m.port,
        "HEAD",
        "/v2/oci/app/manifests/v1",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(img.digest.as_str()));
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(reg.count("\"GET /v2/oci/app/manifests/"), 0);

    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/oci/app/manifests/{}", img.digest),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), len);
    assert_eq!(sha256(&r.body), img.digest);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", img.digest).as_str())
    );
    assert_eq!(reg.count("\"GET /v2/oci/app/manifests/"), 1);

    let heads = reg.count("\"HEAD /v2/oci/app/manifests/v1");
    for _ in 0..3 {
        let r = raw_request(m.port, "GET", "/v2/oci/app/manifests/v1", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(sha256(&r.body), img.digest);
    }
    let log = std::fs::read_to_string(&reg.log).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/manifests/") && l.starts_with("127"))
        .collect();
    assert_eq!(
        reg.count("\"HEAD /v2/oci/app/manifests/v1"),
        heads,
        "{lines:#?}"
    );
    assert_eq!(reg.count("\"GET /v2/oci/app/manifests/"), 1);

    // If-None-Match with the digest: 304.
    let etag = format!("\"{}\"", img.digest);
    let r = raw_request(
        m.port,
        "GET",
        "/v2/oci/app/manifests/v1",
        &[("If-None-Match", &etag)],
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
}

/// A client that does not accept the stored type gets 404, never a relabelled Content-Type; a
/// manifest digest asked for as a blob is 404 too.
#[test]
fn accept_and_manifest_digests_as_blobs() {
    let seed = seed();
    let img = seed.image("multi/arch");
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let docker_only = [(
        "Accept",
        "application/vnd.docker.distribution.manifest.v2+json",
    )];
    let r = raw_request(m.port, "GET", "/v2/multi/arch/manifests/v1", &docker_only);
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "MANIFEST_UNKNOWN");
    // Several Accept lines are merged; `*/*` means anything.
    let r = raw_request(
        m.port,
        "GET",
        "/v2/multi/arch/manifests/v1",
        &[
            (
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            ),
            ("Accept", "application/vnd.oci.image.index.v1+json"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/multi/arch/manifests/{}", img.children[0]),
        &[("Accept", "*/*")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(sha256(&r.body), img.children[0]);
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/multi/arch/blobs/{}", img.digest),
        &[],
    );
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "BLOB_UNKNOWN");
}

#[test]
fn tags_list_catalog_and_referrers() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[
        Up::default("docker.io", reg.url()),
        Up::new("quay.io", reg.url()),
    ])
    .start();
    let r = raw_request(
        m.port,
        "GET",
        "/v2/quay.io/team/project/app/tags/list?n=1",
        &[],
    );
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["name"], "quay.io/team/project/app");
    assert_eq!(v["tags"], serde_json::json!(["v1"]));
    // Docker Hub's library/ rule for a single-component name on docker.io.
    let r = raw_request(m.port, "GET", "/v2/busybox/tags/list", &[]);
    assert_eq!(r.status, 200);
    assert!(reg.count("GET /v2/library/busybox/tags/list") >= 1);

    let img = seed.image("oci/app");
    raw_request(m.port, "GET", "/v2/oci/app/manifests/v1", &[]);
    raw_request(
        m.port,
        "GET",
        "/v2/team/project/app/manifests/v1?ns=quay.io",
        &[],
    );
    let r = raw_request(m.port, "GET", "/v2/_catalog", &[]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["oci/app", "quay.io/team/project/app"])
    );
    let r = raw_request(m.port, "GET", "/v2/_catalog?n=1", &[]);
    assert_eq!(
        r.header("link"),
        Some("</v2/_catalog?n=1&last=oci/app>; rel=\"next\"")
    );

    // distribution 2.8 has no referrers API: the mirror has one all the same, and with neither
    // the API nor a fallback tag upstream, a manifest's referrers are an empty index.
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/oci/app/referrers/{}", img.digest),
        &[],
    );
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["manifests"], serde_json::json!([]));
}

/// Bad names, references and digests are 400s with OCI bodies; an unconfigured `?ns=` is never
/// dialed.
/// The codes of the spec's "Error Codes" table (distribution-spec v1.1).
const SPEC_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// Issue 23: "every error code the mirror sends is one the spec lists". A JSON error body carries
/// one of the table's codes; what the table has no code for (an unknown endpoint, a bad `n`, an
/// unusable `Range`) is a plain-text message; a failure of the mirror or its upstream (5xx) carries
/// the code of what could not be given, and says why.
#[test]
fn a_json_error_body_carries_only_the_specs_codes() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let down = Mirror::of(&[Up::default("docker.io", dead_url)]).start();
    let zeros = "0".repeat(64);
    let blob = format!("/v2/oci/app/blobs/sha256:{zeros}");
    let layer = format!("/v2/oci/app/blobs/{}", seed.image("oci/app").blobs[1].0);
    // (mirror, method, path, headers, status, Some(code) for JSON or None for text)
    type Case<'a> = (
        u16,
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            m.port,
            "GET",
            "/v2/oci/app/nothing".into(),
            vec![],
            404,
            None,
        ),
        (
            m.port,
            "GET",
            "/v2/oci/app/manifests/v1%00".into(),
            vec![],
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        (
            m.port,
            "GET",
            "/v2/oci/app/manifests/v%E2%82%AC".into(),
            vec![],
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        (
            m.port,
            "HEAD",
            "/v2/oci/app/manifests/-v1".into(),
            vec![],
            404,
            Some("MANIFEST_UNKNOWN"),
        ),
        (
            m.port,
            "GET",
            "/v2/oci/app/tags/list?n=-1".into(),
            vec![],
            400,
            None,
        ),
        (
            m.port,
            "GET",
            "/v2/oci/app/tags/list?n=many".into(),
            vec![],
            400,
            None,
        ),
        (
            m.port,
            "GET",
            layer.clone(),
            vec![("Range", "bytes=x-y")],
            416,
            None,
        ),
        (
            m.port,
            "GET",
            layer.clone(),
            vec![("Range", "lines=0-1")],
            416,
            None,
        ),
        (
            m.port,
            "DELETE",
            layer.clone(),
            vec![],
            405,
            Some("UNSUPPORTED"),
        ),
        (
            m.port,
            "PUT",
            "/v2/oci/app/manifests/v1".into(),
            vec![],
            405,
            Some("UNSUPPORTED"),
        ),
        (
            m.port,
            "GET",
            blob.clone(),
            vec![],
            404,
            Some("BLOB_UNKNOWN"),
        ),
        (
            down.port,
            "GET",
            "/v2/oci/app/manifests/v1".into(),
            vec![],
            503,
            Some("MANIFEST_UNKNOWN"),
        ),
        (down.port, "GET", blob, vec![], 503, Some("BLOB_UNKNOWN")),
        (
            down.port,
            "GET",
            "/v2/oci/app/tags/list".into(),
            vec![],
            503,
            Some("NAME_UNKNOWN"),
        ),
    ];
    for (port, method, path, headers, status, code) in cases {
        let r = raw_request(port, method, &path, &headers);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, status, "{method} {path}: {body}");
        if method == "HEAD" {
            continue;
        }
        match code {
            Some(code) => {
                let got = error_code(&r);
                assert_eq!(got, code, "{method} {path}");
                assert!(SPEC_CODES.contains(&got.as_str()), "{got}");
            }
            None => {
                assert_eq!(
                    r.header("content-type"),
                    Some("text/plain; charset=utf-8"),
                    "{method} {path}: {body}"
                );
                assert!(
                    !body.trim().is_empty() && !body.contains("errors"),
                    "{body}"
                );
            }
        }
        if status >= 500 {
            assert!(body.contains("127.0.0.1"), "a 5xx says why: {body}");
        }
    }
}

#[test]
fn bad_input_gets_oci_errors() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let zeros = "0".repeat(64);
    let cases: Vec<(String, u16, &str)> = vec![
        ("/v2/Upper/manifests/v1".into(), 400, "NAME_INVALID"),
        ("/v2/a/../b/manifests/v1".into(), 400, "NAME_INVALID"),
        ("/v2/a%2fb/manifests/v1".into(), 400, "NAME_INVALID"),
        ("/v2/a/%2e%2e/manifests/v1".into(), 400, "NAME_INVALID"),
        (
            format!("/v2/{}/manifests/v1", "a".repeat(300)),
            400,
            "NAME_INVALID",
        ),
        ("/v2/oci/app/manifests/.bad".into(), 404, "MANIFEST_UNKNOWN"),
        (
            "/v2/oci/app/manifests/.INVALID_MANIFEST_NAME".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("/v2/oci/app/blobs/sha256:abc".into(), 400, "DIGEST_INVALID"),
        (
            format!(
                "/v2/oci/app/blobs/sha256:{}",
                zeros.to_uppercase().replace('0', "A")
            ),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/oci/app/blobs/md5:{zeros}"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/oci/app/blobs/sha256:{zeros}"),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            "/v2/nothing/here/manifests/v1".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/oci/app/manifests/v1?ns=evil.example".into(),
            404,
            "NAME_UNKNOWN",
        ),
    ];
    for (path, status, code) in cases {
        let r = raw_request(m.port, "GET", &path, &[]);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(error_code(&r), code, "{path}");
    }
    // The conformance suite's HEAD of a name no manifest can have.
    let r = raw_request(
        m.port,
        "HEAD",
        "/v2/oci/app/manifests/.INVALID_MANIFEST_NAME",
        &[],
    );
    assert_eq!(r.status, 404);
    assert!(m.log_text().len() < 1_000_000);
}

#[test]
fn config_mistakes_name_the_key_and_secrets_never_print() {
    let dir = scratch("config");
    let check = |text: &str| check_config(dir.path(), text);
    let up = "[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\n";
    for (text, key) in [
        (
            format!("{up}[cache]\nmax_size = \"big\"\n"),
            "cache.max_size",
        ),
        (format!("{up}[cache]\ncolour = \"blue\"\n"), "colour"),
        (
            "[[upstream]]\nname = \"quay.io\"\nurl = \"quay.io\"\n".to_owned(),
            "upstream[0].url",
        ),
        (
            format!(
                "{up}default = true\n[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\ndefault = true\n"
            ),
            "upstream.default",
        ),
    ] {
        let out = check(&text);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{err} should name {key}");
    }
    let out = check(&format!(
        "{up}username = \"robot\"\npassword = \"s3cret-value\"\n"
    ));
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("robot") && !shown.contains("s3cret-value"),
        "{shown}"
    );
    // `serve` refuses a bad config at start-up, naming the key.
    let p = dir.path().join("c.toml");
    std::fs::write(&p, format!("{up}[cache]\ntag_ttl = \"later\"\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["serve", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache.tag_ttl"));
}

/// `/metrics` is valid Prometheus exposition, as Prometheus's own `promtool` reads it.
#[test]
fn metrics_pass_promtool() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    // No layer prefetch: the figures are those of the two manifest requests alone.
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .prefetch_layers(false)
        .start();
    raw_request(m.port, "GET", "/v2/oci/app/manifests/v1", &[]);
    raw_request(m.port, "GET", "/v2/oci/app/manifests/nope", &[]);
    let r = raw_request(m.port, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains(
            "entrepot_requests_total{method=\"GET\",route=\"manifest\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("entrepot_upstream_requests_total"), "{text}");
    for series in [
        "entrepot_request_duration_seconds_bucket{route=\"manifest\",le=",
        "entrepot_upstream_request_duration_seconds_count{kind=\"manifest",
        "entrepot_fills_in_flight 0",
        "entrepot_served_bytes_total{kind=\"manifest\",source=\"cache\"}",
        "entrepot_cache_max_bytes 21474836480",
        &format!(
            "entrepot_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    // Clean means no format error and no lint complaint either.
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sixteen nodes asking for one tag at once (cold) cost the upstream one HEAD and one GET.
#[test]
fn concurrent_tag_lookups_are_coalesced() {
    let seed = seed();
    let img = seed.image("many/layers");
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (port, barrier) = (m.port, barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                raw_request(port, "GET", "/v2/many/layers/manifests/v1", &[])
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(sha256(&r.body), img.digest);
    }
    assert_eq!(reg.count("\"HEAD /v2/many/layers/manifests/v1"), 1);
    assert_eq!(reg.count("\"GET /v2/many/layers/manifests/"), 1);
}

/// `/healthz` says the process serves; `/readyz` also checks that the index answers and the
/// cache directory takes writes (503 with the reason when it does not, and 200 again once it
/// does). Response header names come in their usual case on HTTP/1.1, as scripts grep for
/// `Docker-Content-Digest`.
#[test]
fn health_readiness_and_header_case() {
    use std::io::{Read, Write};
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    assert_eq!(raw_request(m.port, "GET", "/healthz", &[]).status, 200);
    assert_eq!(raw_request(m.port, "GET", "/readyz", &[]).status, 200);
    assert_eq!(raw_request(m.port, "HEAD", "/readyz", &[]).status, 200);

    // A cache directory that cannot take writes: its tmp/ is a file now.
    let tmp = m.cache_dir.join("tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"not a directory").unwrap();
    let r = raw_request(m.port, "GET", "/readyz", &[]);
    assert_eq!(r.status, 503);
    assert!(!r.body.is_empty(), "no reason given");
    assert_eq!(raw_request(m.port, "GET", "/healthz", &[]).status, 200);
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    assert_eq!(raw_request(m.port, "GET", "/readyz", &[]).status, 200);

    let image = seed.image("oci/app");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    write!(
        s,
        "HEAD /v2/oci/app/manifests/{} HTTP/1.1\r\nHost: m\r\nAccept: {}\r\nConnection: close\r\n\r\n",
        image.tag, image.media_type
    )
    .unwrap();
    let mut head = String::new();
    s.read_to_string(&mut head).unwrap();
    for name in ["Docker-Content-Digest:", "Content-Type:", "Content-Length:"] {
        assert!(head.contains(name), "no {name} in\n{head}");
    }
}

/// One log line per request, naming the route, status, bytes, cache result and upstream; no
/// colour escapes in a log written to a file; `[log] format = "json"` writes one JSON object a
/// line; a client's `Authorization` never reaches the log.
#[test]
fn every_request_leaves_one_log_line() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let (digest, size) = seed.image("oci/app").largest_blob();
    let path = format!("/v2/oci/app/blobs/{digest}");
    let secret = "Basic c2VjcmV0LXVzZXI6aHVudGVyMg==";
    for _ in 0..2 {
        let r = raw_request(m.port, "GET", &path, &[("Authorization", secret)]);
        assert_eq!(r.status, 200);
        m.wait_settled();
    }
    let text = m.log_text();
    assert!(!text.contains('\u{1b}'), "colour escapes in a log file");
    assert!(
        !text.contains("c2VjcmV0"),
        "an Authorization value was logged"
    );
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("entrepot::request") && l.contains("route=blob"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("cache=miss") && lines[1].contains("cache=hit"),
        "{lines:?}"
    );
    for l in &lines {
        assert!(
            l.contains("status=200") && l.contains("upstream=docker.io"),
            "{l}"
        );
        assert!(
            l.contains(&format!("bytes={size}")) && l.contains("complete=true"),
            "{l}"
        );
    }

    m.reconfigure(|cfg| format!("{cfg}\n[log]\nformat = \"json\"\n"));
    assert_eq!(raw_request(m.port, "GET", &path, &[]).status, 200);
    m.wait_settled();
    let line = m
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains("\"route\":\"blob\""))
        .map(str::to_owned)
        .expect("a JSON request line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["cache"], "hit");
    assert_eq!(v["bytes"], size);
    assert_eq!(v["method"], "GET");
}

/// Lines are written in batches (`src/log_out.rs`): under concurrent requests on both workers,
/// every request still leaves exactly one whole line, none torn or lost.
#[test]
fn log_lines_stay_whole_when_batched() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .json_log()
        .start();
    let image = seed.image("oci/app");
    let path = format!("/v2/oci/app/manifests/{}", image.digest);
    assert_eq!(raw_request(m.port, "GET", &path, &[]).status, 200);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    assert_eq!(raw_request(m.port, "GET", &path, &[]).status, 200);
                }
            });
        }
    });
    let text = m.log_text();
    let mut requests = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: a torn line: {line}"));
        if v["route"] == "manifest" {
            assert_eq!(v["status"], 200, "{line}");
            requests += 1;
        }
    }
    assert_eq!(requests, 401, "{text}");
}

/// A first path component that is a registry host by dockerd's rule (a dot, a colon, or
/// `localhost`) and names no configured upstream gets 404 NAME_UNKNOWN naming it, and no upstream
/// is asked (issue 24, point 8): before, `/v2/ghcr.io/foo/bar/...` went to Docker Hub as the
/// repository `ghcr.io/foo/bar`.
#[test]
fn an_unknown_registry_host_is_never_looked_up_on_the_default_upstream() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let zeros = "0".repeat(64);
    for (path, host) in [
        ("/v2/ghcr.io/foo/bar/manifests/latest".to_owned(), "ghcr.io"),
        (
            format!("/v2/localhost/foo/blobs/sha256:{zeros}"),
            "localhost",
        ),
        (
            "/v2/registry.example:5000/a/tags/list".to_owned(),
            "registry.example:5000",
        ),
    ] {
        let r = raw_request(m.port, "GET", &path, &[]);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(error_code(&r), "NAME_UNKNOWN", "{path}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains(host), "{path}: {body}");
    }
    // skopeo, as a user would pull it, is told why.
    let out = scratch("unknown-host");
    let refused = Skopeo::pull(&format!("{}/ghcr.io/foo/bar:latest", m.host()), out.path())
        .try_digest()
        .unwrap_err();
    assert!(refused.contains("not configured"), "{refused}");
    for host in ["ghcr.io", "localhost/foo", "registry.example"] {
        assert_eq!(reg.count(host), 0, "the upstream was asked about {host}");
    }
}

/// The first pull of a tag is logged (and counted) as a miss, a pull within `tag_ttl` as a hit,
/// and one after it as a revalidation (issue 24, point 9: every first pull said `revalidate`, so
/// hit ratios read from the logs were wrong).
#[test]
fn the_first_pull_of_a_tag_is_a_miss_and_a_later_one_a_revalidation() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .tag_ttl("1s")
        .start();
    let out = scratch("tag-miss");
    let tag_lines = |m: &Mirror| -> Vec<String> {
        m.log_text()
            .lines()
            .filter(|l| l.contains("route=manifest") && l.contains("cache="))
            .map(str::to_owned)
            .collect()
    };
    Skopeo::pull(&format!("{}/oci/app:v1", m.host()), &out.path().join("a")).digest();
    let first = tag_lines(&m);
    assert!(first[0].contains("cache=miss"), "{first:?}");
    assert!(
        !first.iter().any(|l| l.contains("cache=revalidate")),
        "{first:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1200));
    Skopeo::pull(&format!("{}/oci/app:v1", m.host()), &out.path().join("b")).digest();
    let later = tag_lines(&m);
    assert!(
        later[first.len()..]
            .iter()
            .any(|l| l.contains("cache=revalidate")),
        "{later:?}"
    );
}

/// A `/metrics` request that curl reads whole is logged `complete=true` (issue 24, point 9: it
/// said `complete=false`, as its body carries no `Content-Length` header of its own).
#[test]
fn a_metrics_scrape_read_whole_is_logged_complete() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/metrics", m.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let text = m.log_text();
    let line = text
        .lines()
        .find(|l| l.contains("route=metrics"))
        .unwrap_or_else(|| panic!("no line for /metrics in\n{text}"));
    assert!(line.contains("complete=true"), "{line}");
}

/// Credentials written into an upstream's `url` or a `[shared]` endpoint are refused at start-up,
/// naming the key and where credentials go instead, and never printed (issue 21, "Secrets and
/// exposure": `check-config` printed them verbatim).
#[test]
fn credentials_in_urls_are_refused_naming_the_key_and_never_printed() {
    let dir = scratch("config-userinfo");
    let check = |text: &str| check_config(dir.path(), text);
    let up = "[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\ndefault = true\n";
    for (text, key, instead) in [
        (
            "[[upstream]]\nname = \"quay.io\"\nurl = \"https://robot:hunter2-secret@quay.io\"\n"
                .to_owned(),
            "upstream[0].url",
            "password_file",
        ),
        (
            format!(
                "{up}[shared]\nurl = \"s3://bucket\"\nendpoint = \"http://key:hunter2-secret@127.0.0.1:3900\"\n"
            ),
            "shared.endpoint",
            "secret_access_key_file",
        ),
    ] {
        let out = check(&text);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{text} was accepted:\n{stdout}");
        assert!(stderr.contains(key) && stderr.contains(instead), "{stderr}");
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "{stdout}{stderr}"
        );
    }
}

/// `entrepot check-config` on `text`, written as `dir/c.toml`.
fn check_config(dir: &std::path::Path, text: &str) -> std::process::Output {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["check-config", "--config"])
        .arg(&p)
        .output()
        .unwrap()
}

/// Tags paging (OCI distribution-spec v1.1, "Listing Tags"), over Debian's docker-registry,
/// which ignores `n` and `last` (issue 23): exactly `n` tags in lexical order, fewer only at the
/// end, starting after `last`, a `Link` to the next page while more remain, `n=0` an empty list;
/// and the same paging from the tags the mirror holds once the upstream is gone.
#[test]
fn tags_are_paged_by_n_and_last_over_an_upstream_that_ignores_both() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let storage = scratch("paged-registry");
    let mut reg = Registry::start(storage.path());
    let tags = ["t1", "t2", "t3", "t4", "t5"];
    for t in tags {
        reg.copy_from(&origin, "oci/app:v1", &format!("paged/app:{t}"));
    }
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let list = |query: &str| {
        let page = tags_page(m.port, "paged/app", query);
        assert_eq!(page.name, "paged/app");
        (page.tags, page.link)
    };
    let next = |link: &str| {
        link.split_once("?")
            .unwrap()
            .1
            .split_once('>')
            .unwrap()
            .0
            .to_owned()
    };

    // The upstream gives every tag whatever n says; the mirror gives exactly n.
    let (page, link) = list("?n=2");
    assert_eq!(page, ["t1", "t2"]);
    let link = link.expect("a Link while more tags remain");
    assert_eq!(link, "</v2/paged/app/tags/list?n=2&last=t2>; rel=\"next\"");
    let (page, link) = list(&format!("?{}", next(&link)));
    assert_eq!(page, ["t3", "t4"]);
    let (page, link) = list(&format!("?{}", next(&link.unwrap())));
    assert_eq!(page, ["t5"], "fewer than n only at the end");
    assert_eq!(link, None, "no Link on the last page");
    assert_eq!(list("?n=0"), (vec![], None));
    assert_eq!(list("?last=t3").0, ["t4", "t5"]);
    assert_eq!(list("?n=5").1, None, "no Link when exactly n remain");
    assert_eq!(list("").0, tags);

    // The upstream goes: the tags the mirror holds are paged the same way.
    for t in ["t1", "t2", "t3"] {
        let r = raw_request(m.port, "GET", &format!("/v2/paged/app/manifests/{t}"), &[]);
        assert_eq!(r.status, 200);
    }
    reg.stop();
    let (page, link) = list("?n=2");
    assert_eq!(page, ["t1", "t2"]);
    assert!(link.is_some());
    assert_eq!(list("?n=2&last=t2"), (vec!["t3".to_owned()], None));
}

/// "If the list is not empty, the tags MUST be in lexical order (i.e. case-insensitive
/// alphanumeric order)" (distribution-spec, "Listing Tags"): distribution 2.8 lists by bytes
/// (`B` before `a`); the mirror lists, and pages with `last`, in the spec's order.
#[test]
fn tags_are_listed_in_the_specs_case_insensitive_order() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let storage = scratch("cased-registry");
    let reg = Registry::start(storage.path());
    for t in ["B", "a", "C1", "c0", "Latest"] {
        reg.copy_from(&origin, "oci/app:v1", &format!("cased/app:{t}"));
    }
    let upstream = raw_request(reg.port, "GET", "/v2/cased/app/tags/list", &[]);
    let v: serde_json::Value = serde_json::from_slice(&upstream.body).unwrap();
    assert_eq!(v["tags"][0], "B", "distribution lists by bytes: {v}");
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let list = |query: &str| tags_page(m.port, "cased/app", query).tags;
    assert_eq!(list(""), ["a", "B", "c0", "C1", "Latest"]);
    assert_eq!(list("?n=2&last=B"), ["c0", "C1"]);
}

/// Negative caching (issue 23): an upstream's 404 for a tag is remembered for `negative_ttl`, so
/// a loop asking for a tag not pushed yet costs one upstream request a TTL, counted as
/// `negative`; past the TTL the upstream is asked again.
#[test]
fn a_missing_tag_is_asked_for_once_a_negative_ttl() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .negative_ttl("2s")
        .start();
    let path = "/v2/oci/app/manifests/not-pushed-yet";
    let asked = || reg.count("/v2/oci/app/manifests/not-pushed-yet");
    let mut first = 0;
    for i in 0..5 {
        let r = raw_request(m.port, "GET", path, &[]);
        assert_eq!(r.status, 404);
        assert_eq!(error_code(&r), "MANIFEST_UNKNOWN");
        if i == 0 {
            first = asked();
            assert!(first > 0);
        }
    }
    assert_eq!(
        asked(),
        first,
        "the upstream was asked again within negative_ttl"
    );
    let metrics = raw_request(m.port, "GET", "/metrics", &[]);
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains("entrepot_cache_lookups_total{kind=\"tag\",result=\"negative\"} 4")
    );
    std::thread::sleep(std::time::Duration::from_millis(2500)); // past negative_ttl
    assert_eq!(raw_request(m.port, "GET", path, &[]).status, 404);
    assert!(
        asked() > first,
        "past negative_ttl, the upstream is asked again"
    );
}

/// The log says who pulled what and why it failed (issue 24): each request's line names the
/// repository and the tag or digest, and an error answer's line carries the message the client
/// got (before, a 503 read `route=manifest status=503 cache=revalidate upstream=docker.io`).
#[test]
fn the_log_says_what_was_pulled_and_why_it_failed() {
    let seed = seed();
    let mut reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let out = scratch("api-log-lines");
    let app = seed.image("oci/app");
    Skopeo::pull(
        &format!("{}/oci/app:{}", m.host(), app.tag),
        &out.path().join("a"),
    )
    .digest();
    let (layer, _) = app.largest_blob();
    let log = m.log_text();
    let has = |parts: &[&str]| log.lines().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&[
            "route=manifest",
            "status=200",
            "repository=oci/app",
            &format!("reference={}", app.tag)
        ]),
        "{log}"
    );
    assert!(
        has(&[
            "route=blob",
            "repository=oci/app",
            &format!("reference={layer}")
        ]),
        "{log}"
    );
    reg.stop();
    let r = raw_request(
        m.port,
        "GET",
        "/v2/library/busybox/manifests/never-seen",
        &[],
    );
    assert_eq!(r.status, 503);
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("status=503") && l.contains("reference=never-seen"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("repository=library/busybox"), "{line}");
    assert!(
        line.contains("error=\"upstream docker.io is unreachable"),
        "{line}"
    );
}
