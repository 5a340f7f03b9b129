//! Issue 3's misbehaving upstreams. A real registry cannot be made to send an HTML page for a
//! manifest, lie about lengths, loop redirects, or answer 503/429 on cue, so these tests use a
//! scripted upstream (`FakeUpstream`) that does exactly that, on 127.0.0.1.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

fn metrics(m: &Mirror) -> String {
    String::from_utf8(raw_request(m.port, "GET", "/metrics", &[]).body).unwrap()
}

#[test]
fn html_pages_lying_lengths_and_redirect_loops_are_clean_errors() {
    let blob = b"0123456789".repeat(100);
    let digest = sha256(&blob);
    let manifest =
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI}","config":{{}},"layers":[]}}"#);
    let mdigest = sha256(manifest.as_bytes());
    let (b2, m2) = (blob.clone(), manifest.clone());
    let up = FakeUpstream::start(move |r| {
        let p = r.path.as_str();
        if p.starts_with("/v2/html/") {
            FakeAnswer::new(200, "<html><body>Sign in</body></html>")
                .header("Content-Type", "text/html")
        } else if p.starts_with("/v2/short/") && p.contains("/blobs/") {
            FakeAnswer {
                declared_len: Some(b2.len()),
                ..FakeAnswer::new(200, &b2[..10])
            }
        } else if p.starts_with("/v2/short/") {
            FakeAnswer {
                declared_len: Some(m2.len()),
                ..FakeAnswer::new(200, &m2.as_bytes()[..20])
            }
            .header("Content-Type", OCI)
        } else if p.starts_with("/v2/loop/") {
            FakeAnswer::new(307, "").header("Location", p)
        } else {
            FakeAnswer::new(404, "{}")
        }
    });
    let m = Mirror::of(&[Up::default("docker.io", up.url())]).start();

    let r = raw_request(m.port, "GET", "/v2/html/app/manifests/v1", &[]);
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(!String::from_utf8_lossy(&r.body).contains("<html"));

    let r = stream_get(m.port, &format!("/v2/short/app/blobs/{digest}"), &[]);
    assert!(
        !(r.status == 200 && r.complete()),
        "a short body looked complete"
    );
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/short/app/manifests/{mdigest}"),
        &[],
    );
    assert!(
        r.status > 500,
        "a short manifest must be a clean 5xx, not {}",
        r.status
    );

    let r = raw_request(m.port, "GET", &format!("/v2/loop/app/blobs/{digest}"), &[]);
    assert_eq!(r.status, 502);
    assert!(
        up.seen("GET", "/v2/loop/") <= 6 * 3,
        "the redirect loop was followed too far"
    );

    m.wait_settled();
    assert!(m.cached_files().is_empty(), "{:?}", m.cached_files());
    assert_eq!(m.temp_files(), 0);
    let text = metrics(&m);
    assert!(
        text.contains("entrepot_fill_failures_total{reason=\"bad_response\"}"),
        "{text}"
    );
}

/// An upstream that answers a blob's head and hangs up before its first byte: the fill fails
/// before the client has a byte, and the client gets an answer that says so (the `503` of an
/// upstream that failed mid-fetch, with an error body), not a `200` cut at once or a connection closed before any response head (which
/// of the two depended on whether the failure came before hyper first read the body). Twenty
/// digests, each a fill of its own, because of that race.
#[test]
fn a_fill_that_fails_before_its_first_byte_is_an_answer_not_a_closed_socket() {
    let up = FakeUpstream::start(move |r| {
        if r.path.contains("/blobs/") {
            FakeAnswer {
                declared_len: Some(4096),
                ..FakeAnswer::new(200, Vec::new())
            }
        } else {
            FakeAnswer::new(404, "{}")
        }
    });
    let m = Mirror::of(&[Up::default("docker.io", up.url())]).start();
    for i in 0..20u8 {
        let digest = sha256(&[i; 4096]);
        let r = try_stream_get(m.port, &format!("/v2/app/x/blobs/{digest}"), &[])
            .unwrap_or_else(|| panic!("fill {i}: the connection closed before any response"));
        assert_eq!(r.status, 503, "fill {i}: {:?}", r.headers);
        let content_type = r.headers.iter().find(|(k, _)| k == "content-type");
        assert_eq!(
            content_type.map(|(_, v)| v.as_str()),
            Some("application/json"),
            "fill {i}"
        );
        assert!(r.complete(), "fill {i}: the error body is whole");
    }
    m.wait_settled();
    assert!(m.cached_files().is_empty(), "{:?}", m.cached_files());
    assert_eq!(m.temp_files(), 0);
}

/// A blob whose whole body arrives at once and does not match its digest: the fill fails right
/// after the client's first bytes are ready. The client gets a response head each time (a `200`
/// cut short, or an error answer), never a connection closed before any head: hyper dropped
/// what it held unsent when the body failed at once. Fifty digests, because that was a race.
#[test]
fn a_wrong_body_that_arrives_whole_still_gets_a_response_head() {
    let up = FakeUpstream::start(move |r| {
        if r.path.contains("/blobs/") {
            FakeAnswer::new(200, vec![7u8; 4096])
        } else {
            FakeAnswer::new(404, "{}")
        }
    });
    let m = Mirror::of(&[Up::default("docker.io", up.url())]).start();
    for i in 0..50u8 {
        // Never the digest of the body (sevens).
        let digest = sha256(&[i + 8; 4096]);
        let r = try_stream_get(m.port, &format!("/v2/app/x/blobs/{digest}"), &[])
            .unwrap_or_else(|| panic!("fill {i}: the connection closed before any response"));
        assert!(
            !(r.status == 200 && r.complete()),
            "fill {i}: a wrong body looked complete"
        );
    }
    m.wait_settled();
    assert!(m.cached_files().is_empty(), "{:?}", m.cached_files());
}

/// Passing 5xx answers are retried (GET and HEAD are idempotent); the client never sees them.
#[test]
fn passing_server_errors_are_retried() {
    let blob = b"retry me".repeat(1000);
    let digest = sha256(&blob);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let up = FakeUpstream::start(move |r| {
        if r.path.contains("/blobs/") && c.fetch_add(1, Ordering::SeqCst) < 2 {
            FakeAnswer::new(503, "busy")
        } else if r.path.contains("/blobs/") {
            FakeAnswer::new(200, blob.clone())
        } else {
            FakeAnswer::new(404, "{}")
        }
    });
    let m = Mirror::of(&[Up::default("docker.io", up.url())]).start();
    let r = stream_get(m.port, &format!("/v2/app/x/blobs/{digest}"), &[]);
    assert_eq!(r.status, 200);
    assert!(r.complete() && r.digest == digest);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A 429 with `Retry-After`: the cached tag is served, the registry is left alone until the time
/// is up, and what is not cached gets 429 TOOMANYREQUESTS with `Retry-After`.
#[test]
fn rate_limits_serve_the_cache_and_honour_retry_after() {
    let manifest =
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI}","config":{{}},"layers":[]}}"#);
    let mdigest = sha256(manifest.as_bytes());
    let limited = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let l = limited.clone();
    let md = mdigest.clone();
    let up = FakeUpstream::start(move |r| {
        if l.load(Ordering::SeqCst) {
            return FakeAnswer::new(429, r#"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#)
                .header("Retry-After", "30")
                .header("ratelimit-remaining", "0;w=21600");
        }
        if r.path.contains("/manifests/") {
            FakeAnswer::new(200, manifest.clone())
                .header("Content-Type", OCI)
                .header("Docker-Content-Digest", &md)
                .header("ratelimit-remaining", "76;w=21600")
        } else {
            FakeAnswer::new(404, "{}")
        }
    });
    let m = Mirror::of(&[Up::default("docker.io", up.url())])
        .tag_ttl("1s")
        .start();
    let r = raw_request(m.port, "GET", "/v2/app/x/manifests/v1", &[]);
    assert_eq!(r.status, 200);
    assert!(
        metrics(&m).contains("entrepot_upstream_ratelimit_remaining{upstream=\"docker.io\"} 76")
    );
    limited.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1100));
    let before = up.requests.lock().unwrap().len();
    for _ in 0..3 {
        let r = raw_request(m.port, "GET", "/v2/app/x/manifests/v1", &[]);
        assert_eq!(
            r.status, 200,
            "the cached tag was not served under a rate limit"
        );
        assert_eq!(sha256(&r.body), mdigest);
    }
    let r = raw_request(m.port, "GET", "/v2/app/other/manifests/v1", &[]);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert!(String::from_utf8_lossy(&r.body).contains("TOOMANYREQUESTS"));
    // One request met the 429; after that, nothing until Retry-After has passed.
    assert_eq!(up.requests.lock().unwrap().len(), before + 1);
    assert!(
        metrics(&m).contains("entrepot_upstream_ratelimit_remaining{upstream=\"docker.io\"} 0")
    );
}

/// One slow registry gets at most `max_concurrent_requests` requests at once, however many
/// clients ask.
#[test]
fn concurrency_per_upstream_is_bounded() {
    let up = FakeUpstream::start(move |r| {
        let mut a = if r.path.contains("/blobs/") {
            FakeAnswer::new(200, "slow")
        } else {
            FakeAnswer::new(404, "{}")
        };
        a.delay = Duration::from_millis(400);
        a
    });
    let mut up_cfg = Up::default("docker.io", up.url());
    up_cfg.extra = "max_concurrent_requests = 2".into();
    let m = Mirror::of(&[up_cfg]).start();
    let port = m.port;
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let digest = sha256(format!("blob {i}").as_bytes());
                try_stream_get(port, &format!("/v2/app/x/blobs/{digest}"), &[])
            })
        })
        .collect();
    for h in handles {
        // The fake's bodies never match their digests: each answer is cut off, or a clean error
        // if the fill had already failed when the client asked.
        if let Some(r) = h.join().unwrap() {
            assert!(!(r.status == 200 && r.complete()), "a complete wrong body");
        }
    }
    assert_eq!(up.seen("GET", "/blobs/"), 6);
    assert_eq!(up.max_in_flight.load(Ordering::SeqCst), 2);
}

/// An upstream that accepts and then says nothing: the idle-read timeout ends the wait with a
/// clean 503, and a cached tag is served instead.
#[test]
fn a_stalled_upstream_times_out_cleanly() {
    let manifest =
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI}","config":{{}},"layers":[]}}"#);
    let stall = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stall.clone();
    let up = FakeUpstream::start(move |_| {
        let mut a = FakeAnswer::new(200, manifest.clone()).header("Content-Type", OCI);
        if s2.load(Ordering::SeqCst) {
            a.delay = Duration::from_secs(20);
        }
        a
    });
    let mut cfg = Up::default("docker.io", up.url());
    cfg.extra = "read_timeout = \"500ms\"".into();
    let m = Mirror::of(&[cfg]).tag_ttl("1s").start();
    assert_eq!(
        raw_request(m.port, "GET", "/v2/app/x/manifests/v1", &[]).status,
        200
    );
    stall.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1100));
    let start = std::time::Instant::now();
    let r = raw_request(m.port, "GET", "/v2/app/x/manifests/v1", &[]);
    assert_eq!(r.status, 200, "the cached tag was not served");
    let r = raw_request(m.port, "GET", "/v2/app/y/manifests/v1", &[]);
    assert_eq!(r.status, 503);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
}

/// A registry that is not listening yet: the connection is refused, and the mirror tries again
/// with backoff (GET and HEAD are idempotent) until it is up.
#[test]
fn refused_connections_are_retried() {
    let manifest =
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI}","config":{{}},"layers":[]}}"#);
    let port = free_port();
    let m = Mirror::of(&[Up::default("docker.io", format!("http://127.0.0.1:{port}"))]).start();
    // The registry comes up 150 ms after the request: after the first try (refused at once),
    // before the last (which comes after 100-150 ms and then 200-250 ms more of backoff).
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let _ = support::auth::read_request(&mut conn);
        let _ = std::io::Write::write_all(
            &mut conn,
            format!("HTTP/1.1 200 OK\r\nContent-Type: {OCI}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", 0).as_bytes(),
        );
        // Answer the HEAD (no digest header), then the GET.
        let (mut conn, _) = listener.accept().unwrap();
        let _ = support::auth::read_request(&mut conn);
        let _ = std::io::Write::write_all(
            &mut conn,
            format!("HTTP/1.1 200 OK\r\nContent-Type: {OCI}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{manifest}", manifest.len()).as_bytes(),
        );
    });
    let r = raw_request(m.port, "GET", "/v2/app/x/manifests/v1", &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    server.join().unwrap();
    let metrics = String::from_utf8(raw_request(m.port, "GET", "/metrics", &[]).body).unwrap();
    assert!(
        metrics.contains("status=\"error\""),
        "the refused try was not counted: {metrics}"
    );
}

/// A registry whose accept queue is full drops new connection attempts (SYNs go unanswered, as
/// with a host that is down): the connect timeout ends the wait with a clean 503.
#[test]
fn a_connect_that_hangs_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Fill the accept queue (nobody accepts), until new connections no longer complete.
    let mut held = Vec::new();
    for _ in 0..1000 {
        match std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_millis(200),
        ) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(held.len() < 1000, "the accept queue never filled");
    let mut cfg = Up::default("docker.io", format!("http://127.0.0.1:{port}"));
    cfg.extra = "connect_timeout = \"500ms\"".into();
    let m = Mirror::of(&[cfg]).start();
    let start = std::time::Instant::now();
    let r = raw_request(m.port, "GET", "/v2/app/x/manifests/v1", &[]);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("MANIFEST_UNKNOWN"));
    // Three tries of 500 ms each, with backoff: seconds, not the kernel's minutes.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    drop(listener);
}

/// A blob whose size a cached manifest gives is refused, before any byte reaches a client, when
/// the upstream answers with another length (here a body padded past the real one: no real
/// registry can be made to do that, so the upstream is scripted).
#[test]
fn a_length_that_contradicts_the_manifest_is_refused_up_front() {
    let layer = b"the real layer".repeat(1000);
    let digest = sha256(&layer);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":{}}},"layers":[]}}"#,
        layer.len()
    );
    let mdigest = sha256(manifest.as_bytes());
    let (l2, m2, md2) = (layer.clone(), manifest.clone(), mdigest.clone());
    let up = FakeUpstream::start(move |r| {
        if r.path.contains("/manifests/") {
            FakeAnswer::new(200, m2.clone())
                .header("Content-Type", OCI)
                .header("Docker-Content-Digest", &md2)
        } else if r.path.contains("/blobs/") {
            let mut padded = l2.clone();
            padded.extend_from_slice(&[0u8; 4096]);
            FakeAnswer::new(200, padded)
        } else {
            FakeAnswer::new(404, "{}")
        }
    });
    let m = Mirror::of(&[Up::default("docker.io", up.url())]).start();
    let r = raw_request(
        m.port,
        "GET",
        "/v2/sized/app/manifests/v1",
        &[("Accept", OCI)],
    );
    assert_eq!(r.status, 200);
    let r = stream_get(m.port, &format!("/v2/sized/app/blobs/{digest}"), &[]);
    assert_eq!(r.status, 502, "the padded blob was streamed");
    assert!(r.received < 1024, "more than an error body was sent");
    assert!(!m.cached_files().contains(&digest));
}

/// Tags paging over an upstream that pages itself (issue 23: "follow its `Link` pages to build
/// the answer, bounded"). A fake, because the real registry here (distribution 2.8) ignores `n`
/// and `last` and lists every tag at once: this one imitates a registry that caps its pages (as
/// Docker Hub and Harbor do), two tags a page whatever `n` says, with RFC 5988 `Link: <...>;
/// rel="next"` to the next page. The mirror follows the pages and gives exactly the page asked.
#[test]
fn tags_over_an_upstream_that_pages_are_followed_and_paged_here() {
    let all = ["t1", "t2", "t3", "t4", "t5"];
    let up = FakeUpstream::start(move |r| {
        let Some(query) = r.path.strip_prefix("/v2/paged/app/tags/list") else {
            return FakeAnswer::new(404, "{}");
        };
        let last = query
            .trim_start_matches('?')
            .split('&')
            .find_map(|kv| kv.strip_prefix("last="))
            .unwrap_or("");
        let page: Vec<&str> = all.iter().copied().filter(|t| *t > last).take(2).collect();
        let body = serde_json::json!({"name": "paged/app", "tags": page}).to_string();
        let answer = FakeAnswer::new(200, body).header("Content-Type", "application/json");
        match page.last() {
            Some(l) if *l != "t5" => answer.header(
                "Link",
                &format!("</v2/paged/app/tags/list?n=2&last={l}>; rel=\"next\""),
            ),
            _ => answer,
        }
    });
    let m = Mirror::of(&[Up::default("docker.io", up.url())]).start();
    let list = |query: &str| {
        let page = tags_page(m.port, "paged/app", query);
        (page.tags, page.link)
    };
    assert_eq!(list("").0, all, "every page followed");
    let asked = up.requests.lock().unwrap().len();
    assert_eq!(asked, 3, "three pages of two");
    assert_eq!(
        list("?n=3"),
        (
            vec!["t1".to_owned(), "t2".to_owned(), "t3".to_owned()],
            Some("</v2/paged/app/tags/list?n=3&last=t3>; rel=\"next\"".to_owned())
        )
    );
    assert_eq!(
        list("?n=3&last=t3"),
        (vec!["t4".to_owned(), "t5".to_owned()], None)
    );
}
