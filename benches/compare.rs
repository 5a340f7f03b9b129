//! entrepot against CNCF distribution's proxy mode (Debian's docker-registry with `proxy:`), on
//! this machine, in front of the same origin registry. Run with `cargo bench --bench compare`
//! (as root on Debian, with the test suite's packages installed).
//!
//! Figures: a cold pull of one 105 MiB blob; warm blob throughput with 16 concurrent clients;
//! warm manifest-by-tag requests per second on one keep-alive connection; and how many origin
//! GETs 16 concurrent cold requests for one 64 MiB blob cause.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// GETs a path and discards the body; returns the body length.
fn get_discard(port: u16, path: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    total
}

/// `n` GETs of `path` on one keep-alive connection; returns requests per second.
fn keep_alive_rps(port: u16, path: &str, n: usize) -> f64 {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
    let start = Instant::now();
    for _ in 0..n {
        write!(
            w,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n"
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

struct Target {
    name: &'static str,
    port: u16,
}

fn main() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let big = seed
        .image("big/blob")
        .blobs
        .iter()
        .max_by_key(|(_, s)| *s)
        .unwrap()
        .clone();
    let mid = seed
        .image("lru/b")
        .blobs
        .iter()
        .max_by_key(|(_, s)| *s)
        .unwrap()
        .clone();

    let proxy_storage = scratch("proxy-storage");
    let proxy = Registry::start_with(
        proxy_storage.path(),
        &format!("proxy:\n  remoteurl: {}\n", origin.url()),
        None,
    );
    let mirror = Mirror::start(
        &[Up::default("docker.io", origin.url())],
        "tag_ttl = \"5m\"",
    );
    let targets = [
        Target {
            name: "distribution proxy",
            port: proxy.port,
        },
        Target {
            name: "entrepot",
            port: mirror.port,
        },
    ];

    println!(
        "{:<22} {:>14} {:>16} {:>16} {:>18}",
        "", "cold 105 MiB", "warm 16x105 MiB", "manifest by tag", "origin GETs, 16"
    );
    println!(
        "{:<22} {:>14} {:>16} {:>16} {:>18}",
        "", "(s)", "(MiB/s total)", "(req/s)", "cold clients"
    );
    for t in &targets {
        // Cold: one client, one 105 MiB blob.
        let path = format!("/v2/big/blob/blobs/{}", big.0);
        let start = Instant::now();
        assert!(get_discard(t.port, &path) > big.1);
        let cold = start.elapsed().as_secs_f64();
        // Let a proxy that stores after serving finish storing.
        std::thread::sleep(Duration::from_secs(2));
        get_discard(t.port, &path);

        // Warm: 16 clients at once.
        let start = Instant::now();
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let (port, path) = (t.port, path.clone());
                std::thread::spawn(move || get_discard(port, &path))
            })
            .collect();
        let bytes: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        let warm = bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();

        // Manifest by tag, warm.
        let mpath = "/v2/oci/app/manifests/v1";
        keep_alive_rps(t.port, mpath, 50);
        let rps = keep_alive_rps(t.port, mpath, 3000);

        // 16 concurrent cold requests for one 64 MiB blob: origin GETs.
        let before = origin.count(&format!("\"GET /v2/lru/b/blobs/{}", mid.0));
        let mpath = format!("/v2/lru/b/blobs/{}", mid.0);
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let (port, p) = (t.port, mpath.clone());
                std::thread::spawn(move || get_discard(port, &p))
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
        let fetches = origin.count(&format!("\"GET /v2/lru/b/blobs/{}", mid.0)) - before;
        println!(
            "{:<22} {:>14.2} {:>16.0} {:>16.0} {:>18}",
            t.name, cold, warm, rps, fetches
        );
    }
}
