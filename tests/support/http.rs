//! HTTP as a client sees it: raw requests read to EOF, and streaming GETs that hash the body
//! as it arrives (whether a body was complete, cut short, or the connection aborted).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::*;

/// A minimal HTTP/1.1 response, read off a raw socket so tests can see exactly what a client
/// would: whether the body was complete, cut short, or the connection aborted.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body had as many bytes as `Content-Length` promised.
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the answer to EOF.
pub fn raw_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    // An aborted connection shows up as a reset or an early EOF: keep what arrived.
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    parse_raw(&buf, method == "HEAD")
}

fn parse_raw(buf: &[u8], head: bool) -> RawResponse {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head_text = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = buf[split + 4..].to_vec();
    let declared = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let complete = head || declared.is_some_and(|n| n == body.len());
    RawResponse {
        status,
        headers,
        body,
        complete,
    }
}

/// What a streaming GET saw: status, headers, how many body bytes arrived, and their digest.
pub struct Streamed {
    pub status: u16,
    pub declared: Option<u64>,
    pub received: u64,
    pub digest: String,
    pub headers: Vec<(String, String)>,
}

impl Streamed {
    /// A complete body: exactly as many bytes as `Content-Length` promised.
    pub fn complete(&self) -> bool {
        self.declared == Some(self.received)
    }
}

/// GETs `path` over a raw socket, hashing the body as it arrives (no buffering of big blobs).
pub fn stream_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Streamed {
    try_stream_get(port, path, headers).expect("a response")
}

/// Like [`stream_get`], but `None` when no response head arrived (refused, reset).
pub fn try_stream_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<Streamed> {
    use sha2::Digest as _;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut hasher = sha2::Sha256::new();
    let mut head: Option<(u16, Vec<(String, String)>)> = None;
    let mut received = 0u64;
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if head.is_some() {
            hasher.update(&chunk[..n]);
            received += n as u64;
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse_raw(&buf[..split + 4], true);
            let body = &buf[split + 4..];
            hasher.update(body);
            received += body.len() as u64;
            head = Some((r.status, r.headers));
        }
    }
    let (status, headers) = head?;
    let declared = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    Some(Streamed {
        status,
        declared,
        received,
        digest: format!("sha256:{}", hex(&hasher.finalize())),
        headers,
    })
}

/// One HTTP/1.1 exchange with the registry; returns the status and the response head.
pub fn http(port: u16, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

/// Uploads a blob (POST, then PUT with the digest), as `cosign` does.
pub fn push_blob(port: u16, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let (status, head) = http(
        port,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        "application/octet-stream",
        b"",
    );
    assert_eq!(status, 202, "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .unwrap()
        .trim()
        .replace(&format!("http://127.0.0.1:{port}"), "");
    let sep = if location.contains('?') { '&' } else { '?' };
    let (status, head) = http(
        port,
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        "application/octet-stream",
        bytes,
    );
    assert_eq!(status, 201, "{head}");
    digest
}

/// Pushes a manifest (PUT under `reference`, a tag or its digest), as a client would; returns its
/// digest.
pub fn push_manifest(
    port: u16,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &str,
) -> String {
    let (status, head) = http(
        port,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        media_type,
        manifest.as_bytes(),
    );
    assert_eq!(status, 201, "{head}");
    sha256(manifest.as_bytes())
}

/// One page of `GET /v2/<repo>/tags/list<query>` from the mirror (or a registry) on `port`.
pub struct TagsPage {
    /// The `name` the answer gives.
    pub name: String,
    pub tags: Vec<String>,
    /// The `Link` header, if any.
    pub link: Option<String>,
}

/// Asks for one page of a repository's tags; the answer must be 200.
pub fn tags_page(port: u16, repo: &str, query: &str) -> TagsPage {
    let r = raw_request(port, "GET", &format!("/v2/{repo}/tags/list{query}"), &[]);
    assert_eq!(r.status, 200, "{repo} {query}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    TagsPage {
        name: v["name"].as_str().unwrap_or_default().to_owned(),
        tags: serde_json::from_value(v["tags"].clone()).unwrap(),
        link: r.header("link").map(str::to_owned),
    }
}
