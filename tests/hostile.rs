//! Issue 3's hostile input: anything outside the grammar is a 4xx with an OCI error body, never a
//! 5xx, a panic, a hang or a file outside the cache; and connection hygiene (header size, header
//! read timeout, connection cap) keeps slow or greedy clients from starving the others.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// A small deterministic generator for paths.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn path(&mut self) -> String {
        const PARTS: &[&str] = &[
            "v2",
            "oci",
            "app",
            "blobs",
            "manifests",
            "tags",
            "list",
            "referrers",
            "_catalog",
            "..",
            ".",
            "%2e%2e",
            "%2F",
            "%00",
            "%",
            "%zz",
            "library",
            "busybox",
            "quay.io",
            "docker.io",
            "A",
            "a__b",
            "a---b",
            "latest",
            "v1",
            "sha256:",
            "sha512:abc",
            "md5:00",
            ";",
            "~",
            "*",
            "%20",
            "'",
            "\"",
            "\\",
            "é",
            "%C3%A9",
            "?ns=quay.io",
            "?ns=evil.example",
            "?n=-1",
            "?last=..",
            "&",
            "#frag",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ];
        let mut p = String::from(if self.next().is_multiple_of(8) {
            "/"
        } else {
            "/v2/"
        });
        for _ in 0..(self.next() % 7) {
            p.push_str(self.pick(PARTS));
            if !self.next().is_multiple_of(4) {
                p.push('/');
            }
        }
        // Keep what goes on the wire a valid request line: no spaces or control characters.
        p.replace([' ', '\r', '\n', '#', '"', '\\'], "_")
    }
}

#[test]
fn thousands_of_random_paths_never_get_a_5xx_or_a_dropped_connection() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[
        Up::default("docker.io", reg.url()),
        Up::new("quay.io", reg.url()),
    ])
    .start();
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    let methods = ["GET", "HEAD", "GET", "PUT", "DELETE", "OPTIONS"];
    for i in 0..3000 {
        let path = g.path();
        let method = methods[i % methods.len()];
        let range = [
            "",
            "bytes=0-",
            "bytes=-1",
            "bytes=99999999999999999999-",
            "bytes=5-1",
            "bytes=0-1,2-3",
            "lines=1-",
        ][i % 7];
        let headers: Vec<(&str, &str)> = if range.is_empty() {
            vec![]
        } else {
            vec![("Range", range)]
        };
        let r = raw_request(m.port, method, &path, &headers);
        assert!(r.status < 500, "{method} {path} ({range}) got {}", r.status);
        if method != "HEAD" && r.status >= 400 && r.status != 431 {
            // An OCI error body, or (what the spec has no code for: an unknown endpoint, an
            // unusable Range) a plain-text message; never an HTML page.
            let text = r.header("content-type") == Some("text/plain; charset=utf-8");
            assert!(
                r.body.starts_with(b"{\"errors\"") || r.body.is_empty() || text,
                "{method} {path}: not an OCI error body: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    // Still healthy, and nothing was written outside the cache directory.
    assert_eq!(raw_request(m.port, "GET", "/v2/", &[]).status, 200);
    let cwd: Vec<_> = std::fs::read_dir(m.dir().join("cwd")).unwrap().collect();
    assert!(
        cwd.is_empty(),
        "the mirror wrote into its working directory"
    );
    let mut top: Vec<String> = std::fs::read_dir(m.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, vec!["cache", "config.toml", "cwd", "mirror.log"]);
    let mut inside: Vec<String> = std::fs::read_dir(&m.cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    inside.sort();
    // And the admin socket `ls`, `rm`, `gc` and `export` talk to (issue 24).
    assert_eq!(inside, vec!["admin.sock", "blobs", "index.redb", "tmp"]);
}

#[test]
fn traversal_and_encodings_are_refused() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    for path in [
        "/v2/..%2f..%2fetc/passwd/manifests/latest",
        "/v2/oci/app%00/manifests/v1",
        "/v2/oci/%2e%2e/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "/v2/oci/app/blobs/..%2f..%2fetc%2fpasswd",
        "/v2/oci/app/blobs/sha256:..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd0000000",
        "/v2/oci/app/manifests/sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ] {
        let r = raw_request(m.port, "GET", path, &[]);
        assert_eq!(r.status, 400, "{path}");
        assert!(r.body.starts_with(b"{\"errors\""), "{path}");
    }
    // Longer than any tag can be, or with a NUL in it: no manifest has that name.
    let long_tag = "t".repeat(129);
    for path in [
        format!("/v2/oci/app/manifests/{long_tag}"),
        "/v2/oci/app/manifests/v1%00".into(),
    ] {
        let r = raw_request(m.port, "GET", &path, &[]);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.body.starts_with(b"{\"errors\""), "{path}");
    }
}

#[test]
fn oversized_headers_get_431() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let huge = "x".repeat(200 * 1024);
    let r = raw_request(m.port, "GET", "/v2/", &[("X-Big", &huge)]);
    assert!(r.status == 431 || r.status == 400, "{}", r.status);
    assert_eq!(raw_request(m.port, "GET", "/v2/", &[]).status, 200);
}

/// Opens `n` connections that send half a request head and then nothing.
fn half_open(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect()
}

#[test]
fn slowloris_connections_do_not_starve_real_clients() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let idle = half_open(m.port, 300);
    let start = Instant::now();
    let r = raw_request(m.port, "GET", "/v2/", &[]);
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a normal request waited behind slowloris connections"
    );
    drop(idle);
}

/// With the connection cap reached by clients that never finish their headers, the header-read
/// timeout frees the slots and a real client is served.
#[test]
fn the_header_timeout_frees_capped_connections() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    m.reconfigure(|cfg| {
        cfg.replace(
            "[server]\n",
            "[server]\nmax_connections = 8\nheader_read_timeout = \"1s\"\n",
        )
    });
    let mut idle = half_open(m.port, 8);
    let r = raw_request(m.port, "GET", "/v2/", &[]);
    assert_eq!(r.status, 200);
    // The slow ones were cut off by the timeout.
    let mut buf = [0u8; 64];
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = s.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            n == 0 || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 400"),
            "{text}"
        );
    }
}

/// A mirror holding `lru/a`'s largest blob (over 64 MiB), restarted with these `[server]` lines:
/// the mirror, the blob's path and its size.
fn holding_a_large_blob(seed: &Seed, reg: &Registry, server: &str) -> (Mirror, String, u64) {
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let (digest, size) = seed.image("lru/a").largest_blob();
    let path = format!("/v2/lru/a/blobs/{digest}");
    let r = stream_get(m.port, &path, &[]);
    assert!(r.complete() && r.digest == digest);
    m.wait_settled();
    m.reconfigure(|cfg| cfg.replace("[server]\n", &format!("[server]\n{server}")));
    (m, path, size)
}

/// Clients that ask for a large blob and never read cannot hold the mirror: with
/// `max_connections = 4` and `send_timeout = "2s"`, their connections are closed once their
/// socket buffers are full and nothing moves for 2 s, and a fifth client is served.
#[test]
fn clients_that_stop_reading_are_cut_off_by_send_timeout() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    // Cached, so the stuck clients read a stored file at full speed until their buffers fill.
    let (m, path, size) =
        holding_a_large_blob(seed, &reg, "max_connections = 4\nsend_timeout = \"2s\"\n");
    let request = format!("GET {path} HTTP/1.1\r\nHost: mirror\r\n\r\n");
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", m.port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        stuck.push(s);
    }
    // Every slot is taken by a client that reads nothing of a blob far larger than its buffers.
    assert!(size > 64 << 20);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let port = m.port;
    std::thread::spawn(move || {
        let _ = tx.send(raw_request(port, "GET", "/v2/", &[]).status);
    });
    let status = rx.recv_timeout(Duration::from_secs(30));
    assert_eq!(
        status,
        Ok(200),
        "the fifth client was not served while four clients read nothing"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // The stuck connections were closed, not left open: each ends before the whole blob. (The
    // fifth was served when the first was closed; the others are closed within a quarter of
    // `send_timeout` of it. Reading earlier would unstick them.)
    std::thread::sleep(Duration::from_secs(2));
    for mut s in stuck {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        assert!(total < size, "a stuck client got the whole blob");
    }
    // A client that reads a whole response and waits longer than `send_timeout` (but less than
    // the idle timeout) before its next request keeps its connection.
    let mut s = TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s), (200, size));
    std::thread::sleep(Duration::from_secs(3));
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).0, 200);
}

/// Reads one HTTP/1.1 response with a `Content-Length` off `s`: its status and body length.
fn read_response(s: &mut TcpStream) -> (u16, u64) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed mid-head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: u64 = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = s.read(&mut buf[..left.min(1 << 20) as usize]).unwrap();
        assert!(n > 0, "connection closed mid-body");
        left -= n as u64;
    }
    (status, len)
}

/// Sockets that send nothing, or only HTTP/2's preface (hyper has no timer before it knows the
/// protocol), hold no slot past `header_read_timeout`: with `max_connections = 4` and four such
/// sockets, a fifth client is answered within seconds, and the four are closed. Before, the
/// fifth waited for ever.
#[test]
fn sockets_that_never_send_a_request_head_free_their_slots() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    m.reconfigure(|cfg| {
        cfg.replace(
            "[server]\n",
            "[server]\nmax_connections = 4\nheader_read_timeout = \"2s\"\n",
        )
    });
    let connect = || TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    let (silent, other_silent) = (connect(), connect());
    let mut preface = connect();
    preface.write_all(H2_PREFACE).unwrap();
    let mut settings = connect();
    settings.write_all(H2_PREFACE).unwrap();
    settings.write_all(&h2_frame(4, 0, 0, &[])).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (tx, rx) = std::sync::mpsc::channel();
    let port = m.port;
    std::thread::spawn(move || {
        let _ = tx.send(raw_request(port, "GET", "/v2/", &[]).status);
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(200),
        "a fifth client waited behind four sockets that sent no request"
    );
    for mut s in [silent, other_silent, preface, settings] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1024];
        let mut closed = false;
        for _ in 0..100 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => {} // HTTP/2's SETTINGS, or a GOAWAY
            }
        }
        assert!(closed, "an idle socket was left open");
    }
}

/// An HTTP/2 (prior knowledge, plain text) connection that has had its answer and then sends
/// nothing is closed after `header_read_timeout`, as an idle HTTP/1.1 keep-alive one is. Before,
/// it stayed open for ever. The frames are written by hand (HPACK literals without indexing).
#[test]
fn an_idle_http2_connection_is_closed() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    m.reconfigure(|cfg| cfg.replace("[server]\n", "[server]\nheader_read_timeout = \"2s\"\n"));
    let mut s = TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    s.write_all(H2_PREFACE).unwrap();
    s.write_all(&h2_frame(4, 0, 0, &[])).unwrap();
    let mut block = Vec::new();
    for (k, v) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/v2/"),
        (":authority", "mirror"),
    ] {
        block.push(0);
        block.push(k.len() as u8);
        block.extend_from_slice(k.as_bytes());
        block.push(v.len() as u8);
        block.extend_from_slice(v.as_bytes());
    }
    // HEADERS on stream 1, END_STREAM | END_HEADERS.
    s.write_all(&h2_frame(1, 0x5, 1, &block)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the idle HTTP/2 connection was not closed: {e}"),
        }
    }
    // Frames: 9-byte heads; one of them HEADERS (type 1) on stream 1, the answer.
    let mut at = 0;
    let mut answered = false;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        let stream = u32::from_be_bytes([got[at + 5], got[at + 6], got[at + 7], got[at + 8]]);
        answered |= got[at + 3] == 1 && stream == 1;
        at += 9 + len;
    }
    assert!(answered, "no HEADERS answer on stream 1: {got:?}");
    assert!(started.elapsed() < Duration::from_secs(12));
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A client that reads slowly but steadily (24 KiB/s over a link-sized segment and receive
/// buffer, as on a slow WAN: on loopback's 64 KiB segments the kernel's buffers hide everything)
/// is never cut by `send_timeout`: only one that accepts no bytes for that long is. Before,
/// progress counted only when hyper took the next 256 KiB chunk, so this client was cut at
/// `send_timeout = 2s`. The client is a few lines of Python, for `TCP_MAXSEG`.
#[test]
fn a_slow_steady_reader_is_not_cut_by_send_timeout() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    // 5 s: well past a scheduling hiccup of a loaded machine, well short of the 10 s a 256 KiB
    // chunk takes to drain at 24 KiB/s (what the old progress measure waited for).
    let (m, path, _) = holding_a_large_blob(seed, &reg, "send_timeout = \"5s\"\n");
    // Slowly for 15 s, then at full speed to the end: a connection the mirror closed meanwhile
    // (its FIN queued behind what the kernel still holds) ends short.
    let script = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(("GET %s HTTP/1.1\r\nHost: mirror\r\n\r\n" % sys.argv[2]).encode())
start, data = time.time(), b""
while b"\r\n\r\n" not in data:
    data += s.recv(4096)
head, body = data.split(b"\r\n\r\n", 1)
length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
got = len(body)
while got < length:
    b = s.recv(4096 if time.time() - start < 15 else 1 << 20)
    if not b:
        print("cut after", got, "of", length); sys.exit(1)
    got += len(b)
    if time.time() - start < 15:
        time.sleep(max(0, got / (24 * 1024) - (time.time() - start)))
print("read all", got)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &m.port.to_string(), &path])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the slow reader was {said}");
}

/// An idle keep-alive connection is closed after `header_read_timeout`: waiting for the next
/// request is waiting for its headers.
#[test]
fn idle_keep_alive_connections_are_closed() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    m.reconfigure(|cfg| cfg.replace("[server]\n", "[server]\nheader_read_timeout = \"1s\"\n"));
    let mut s = TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was not closed");
    assert!(idle.elapsed() < Duration::from_secs(5));
}

/// A foreign layer links nothing (issue 21, "foreign layers link private bytes"): a tenant
/// pushes to a repository of their own a manifest listing a private layer's digest as a
/// non-distributable layer with `urls` (distribution accepts it without checking the digest is
/// there). Once the mirror holds that layer from the private repository, the tenant's repository
/// must not be served it from the cache: its upstream says it has no such blob.
#[test]
fn a_foreign_layer_never_links_a_private_blob_to_another_repository() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let storage = scratch("foreign-registry");
    let reg = Registry::start_with(
        storage.path(),
        "validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n",
        None,
    );
    reg.copy_from(&origin, "oci/app:v1", "private/app:v1");
    let (private_layer, size) = seed.image("oci/app").largest_blob();
    let config = push_blob(reg.port, "tenant/evil", b"{}");
    let evil = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "digest": private_layer,
            "size": size,
            "urls": ["https://example.invalid/layer"],
        }],
    })
    .to_string();
    push_manifest(
        reg.port,
        "tenant/evil",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &evil,
    );

    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let r = stream_get(
        m.port,
        &format!("/v2/private/app/blobs/{private_layer}"),
        &[],
    );
    assert!(r.complete() && r.digest == private_layer);
    assert!(m.wait_cached(&private_layer));
    let r = raw_request(m.port, "GET", "/v2/tenant/evil/manifests/v1", &[]);
    assert_eq!(r.status, 200);
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/tenant/evil/blobs/{private_layer}"),
        &[],
    );
    assert_eq!(
        r.status, 404,
        "a foreign layer listed by the tenant's manifest linked the private blob"
    );
}
