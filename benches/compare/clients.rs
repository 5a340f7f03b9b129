//! The clients the benchmark measures with: curl processes for blobs, wrk for request rates, and
//! a plain Rust socket client (for the figures that need many connections from one process, and
//! to show how a client's own reading changes a cold figure).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The `Accept` header a pulling client sends for manifests.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// What one curl transfer reported.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    pub bytes: u64,
    /// curl's `time_total`: from its start of the transfer to the last byte of the body.
    pub seconds: f64,
}

fn curl(url: &str) -> Command {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download} %{time_total}",
    ])
    .arg(url)
    .stdout(Stdio::piped());
    c
}

fn transfer(out: std::process::Output, url: &str) -> Transfer {
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    assert!(
        out.status.success() && f.first() == Some(&"200"),
        "curl {url}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Transfer {
        bytes: f[1].parse().unwrap(),
        seconds: f[2].parse().unwrap(),
    }
}

/// One curl GET of `url`, body discarded.
pub fn curl_get(url: &str) -> Transfer {
    transfer(curl(url).output().unwrap(), url)
}

/// `n` curl processes GETting `url` at once; the wall time until the last one is done, and what
/// each reported.
pub fn curl_many(url: &str, n: usize) -> (f64, Vec<Transfer>) {
    let start = Instant::now();
    let children: Vec<_> = (0..n).map(|_| curl(url).spawn().unwrap()).collect();
    let all: Vec<Transfer> = children
        .into_iter()
        .map(|c| transfer(c.wait_with_output().unwrap(), url))
        .collect();
    (start.elapsed().as_secs_f64(), all)
}

/// Requests per second from `wrk` with 32 connections on two threads for `seconds`, sending a
/// pulling client's `Accept`. Panics if any answer was not a 2xx.
pub fn wrk(url: &str, seconds: u32) -> f64 {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "-H"])
        .arg(format!("Accept: {ACCEPT}"))
        .arg(url)
        .output()
        .expect("wrk (Debian package wrk) must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk {url}: {text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk printed no rate: {text}"))
}

/// What the plain Rust client saw of one GET.
#[derive(Clone, Copy, Debug)]
pub struct RawTimes {
    pub bytes: u64,
    /// Seconds to the last byte of the body (by `Content-Length`).
    pub last_byte: f64,
    /// Seconds until the server closed the connection (`Connection: close`).
    pub closed: f64,
}

/// GETs `path` with `Connection: close`, reading with a buffer of `buf` bytes, and discards the
/// body.
pub fn raw_get(port: u16, path: &str, buf: usize) -> RawTimes {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; buf];
    let mut head = Vec::new();
    let mut body = 0u64;
    let mut declared = None;
    let mut last_byte = None;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if declared.is_none() {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                declared = Some(
                    text.lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(u64::MAX),
                );
                body = (head.len() - end - 4) as u64;
            }
        } else {
            body += n as u64;
        }
        if last_byte.is_none() && declared.is_some_and(|d| body >= d) {
            last_byte = Some(start.elapsed().as_secs_f64());
        }
    }
    let closed = start.elapsed().as_secs_f64();
    RawTimes {
        bytes: body,
        last_byte: last_byte.unwrap_or(closed),
        closed,
    }
}

/// GETs a path and discards the body; returns the body's length.
pub fn get_discard(port: u16, path: &str) -> u64 {
    raw_get(port, path, 1 << 20).bytes
}

/// `n` GETs of `path` on one keep-alive connection, each carrying `extra` header lines
/// (`Name: value\r\n`); returns requests per second.
pub fn keep_alive_rps(port: u16, path: &str, n: usize, extra: &str) -> f64 {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let start = Instant::now();
    for _ in 0..n {
        write!(
            w,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {ACCEPT}\r\n{extra}\r\n"
        )
        .unwrap();
        let mut len = 0usize;
        let mut line = String::new();
        let mut status = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if status.is_empty() {
                status = line.clone();
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        assert!(status.contains(" 200 "), "{status}");
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}
