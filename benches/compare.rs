//! entrepot against CNCF distribution's proxy mode (Debian's docker-registry with `proxy:`), on
//! this machine, in front of the same origin registry. Run with `cargo bench --bench compare`
//! (as root on Debian, with the test suite's packages installed).
//!
//! Figures: a cold pull of one 105 MiB blob; warm blob throughput with 16 concurrent clients;
//! warm manifest-by-tag requests per second on one keep-alive connection; and how many origin
//! GETs 16 concurrent cold requests for one 64 MiB blob cause. Then memory: the peak RSS of each
//! server while 32 clients each pull a different cold 64 MiB blob at once.
//! `cargo bench --bench compare -- memory` runs the memory figure alone; `-- auth` compares
//! warm manifest requests per second without `[auth]` and with it; `-- shared` the latency of a
//! shared-tier hit (Garage) against a local hit; `-- pull` a cold 25-layer pull with skopeo.

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
    keep_alive_rps_with(port, path, n, "")
}

/// As [`keep_alive_rps`], each request carrying `extra` header lines (`Name: value\r\n`).
fn keep_alive_rps_with(port: u16, path: &str, n: usize, extra: &str) -> f64 {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
    let start = Instant::now();
    for _ in 0..n {
        write!(
            w,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n{extra}\r\n"
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

/// A fresh instance of one system under test, with an empty cache.
fn fresh(kind: &str, origin: &Registry) -> (u16, Box<dyn std::any::Any>) {
    if kind == "entrepot" {
        let m = Mirror::start(
            &[Up::default("docker.io", origin.url())],
            "tag_ttl = \"5m\"",
        );
        (m.port, Box::new(m))
    } else {
        let storage = scratch("proxy-storage");
        let r = Registry::start_with(
            storage.path(),
            &format!("proxy:\n  remoteurl: {}\n", origin.url()),
            None,
        );
        (r.port, Box::new((r, storage)))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Seconds until `n` clients have each received the whole blob at `path`.
fn all_clients(port: u16, path: &str, n: usize) -> f64 {
    let start = Instant::now();
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_owned();
            std::thread::spawn(move || get_discard(port, &path))
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start.elapsed().as_secs_f64()
}

/// Peak resident memory of a process so far (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// An origin registry holding `n` distinct blobs of `size` bytes in repository `mem/blobs`
/// (written straight into its storage, as distribution lays it out). Returns it, its storage,
/// and the blobs' paths.
fn origin_with_distinct_blobs(n: usize, size: usize) -> (Registry, tempfile::TempDir, Vec<String>) {
    let storage = scratch("distinct-blobs");
    let mut paths = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..n {
        let mut data = vec![0u8; size];
        for chunk in data.chunks_mut(8) {
            // xorshift64: incompressible, and different for every blob.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let digest = sha256(&data);
        let path = registry_blob_path(storage.path(), &digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        let link = storage
            .path()
            .join("docker/registry/v2/repositories/mem/blobs/_layers/sha256")
            .join(&digest[7..]);
        std::fs::create_dir_all(&link).unwrap();
        std::fs::write(link.join("link"), &digest).unwrap();
        paths.push(format!("/v2/mem/blobs/blobs/{digest}"));
    }
    (Registry::start(storage.path()), storage, paths)
}

/// Peak RSS of each server while 32 clients each pull a different cold 64 MiB blob at once.
fn memory() {
    let (origin, _storage, paths) = origin_with_distinct_blobs(32, 64 << 20);
    println!("{:<20} {:>24}", "", "peak RSS, 32 cold fills");
    println!("{:<20} {:>24}", "", "of distinct 64 MiB (MiB)");
    for kind in ["distribution proxy", "entrepot"] {
        let (port, keep) = fresh(kind, &origin);
        let pid = match keep.downcast_ref::<Mirror>() {
            Some(m) => m.pid(),
            None => keep
                .downcast_ref::<(Registry, tempfile::TempDir)>()
                .unwrap()
                .0
                .pid(),
        }
        .unwrap();
        let start = Instant::now();
        let hs: Vec<_> = paths
            .iter()
            .map(|p| {
                let p = p.clone();
                std::thread::spawn(move || get_discard(port, &p))
            })
            .collect();
        for h in hs {
            assert!(h.join().unwrap() > 64 << 20);
        }
        let took = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "{kind:<20} {:>24.0}   ({took:.1} s for all)",
            peak_rss_mib(pid)
        );
    }
}

/// Warm manifest-by-tag requests per second on one keep-alive connection, without `[auth]` and
/// with it (a signed-in user, bcrypt at `htpasswd -B`'s cost), alternating run by run.
fn auth() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let dir = scratch("bench-auth");
    let htpasswd = dir.path().join("htpasswd");
    run(std::process::Command::new("htpasswd")
        .arg("-cbB")
        .arg(&htpasswd)
        .args(["ci", "ci-pass"]));
    let up = [Up::default("docker.io", origin.url())];
    let plain = Mirror::start(&up, "tag_ttl = \"5m\"");
    let mut secured = Mirror::start(&up, "tag_ttl = \"5m\"");
    secured.reconfigure(|c| {
        format!("{c}\n[auth]\nhtpasswd = {htpasswd:?}\n[[auth.allow]]\nusers = [\"ci\"]\nrepositories = [\"docker.io/**\"]\n")
    });
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("ci:ci-pass");
    let header = format!("Authorization: Basic {basic}\r\n");
    let path = "/v2/oci/app/manifests/v1";
    keep_alive_rps(plain.port, path, 50);
    keep_alive_rps_with(secured.port, path, 50, &header);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        without.push(keep_alive_rps(plain.port, path, 3000));
        with.push(keep_alive_rps_with(secured.port, path, 3000, &header));
    }
    let (a, b) = (median(without), median(with));
    println!("manifest/tag req/s, one keep-alive connection, median of 5");
    println!("{:<24} {a:>10.0}", "without [auth]");
    println!("{:<24} {b:>10.0}  ({:.2}x)", "with [auth], Basic", b / a);
}

/// The extra latency of a shared-tier hit against a local hit: a blob GET from a replica with an
/// empty disk whose shared tier (Garage, S3 on loopback) holds the blob, then the same GET again
/// from its disk. Medians of 5 fresh replicas, for a 5 KB layer and a 64 MiB one.
fn shared() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let garage = support::garage::Garage::start();
    let section = garage.shared_section("bench", None);
    let replica = || {
        let mut m = Mirror::start(&[Up::default("docker.io", origin.url())], "");
        m.reconfigure(|c| format!("{c}{section}"));
        m
    };
    let blobs = [
        (
            "5 KB layer",
            "oci/app",
            seed.image("oci/app").largest_blob(),
        ),
        ("64 MiB layer", "lru/b", seed.image("lru/b").largest_blob()),
    ];
    // One replica fetches everything from the upstream and uploads it.
    let first = replica();
    for (_, repo, (d, size)) in &blobs {
        assert!(get_discard(first.port, &format!("/v2/{repo}/manifests/v1")) > 0);
        assert!(get_discard(first.port, &format!("/v2/{repo}/blobs/{d}")) >= *size);
    }
    first.wait_settled();
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "{:<14} {:>16} {:>16} {:>12}",
        "", "shared hit (ms)", "local hit (ms)", "extra (ms)"
    );
    for (name, repo, (d, _)) in &blobs {
        let path = format!("/v2/{repo}/blobs/{d}");
        let (mut shared, mut local) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let m = replica();
            // The manifest links the blob to the repository, as a client's pull would.
            get_discard(m.port, &format!("/v2/{repo}/manifests/v1"));
            let t = Instant::now();
            get_discard(m.port, &path);
            shared.push(t.elapsed().as_secs_f64() * 1000.0);
            m.wait_settled();
            let t = Instant::now();
            get_discard(m.port, &path);
            local.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (s, l) = (median(shared), median(local));
        println!("{name:<14} {s:>16.1} {l:>16.1} {:>12.1}", s - l);
    }
}

/// A cold pull of the 25-layer image with skopeo, each mirror empty: distribution's proxy,
/// entrepot with layer prefetch, and entrepot without it, alternating; medians of 5.
fn cold_pull() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let kinds = ["distribution proxy", "entrepot", "entrepot, no prefetch"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..5 {
        for (i, kind) in kinds.iter().enumerate() {
            let (port, _keep): (u16, Box<dyn std::any::Any>) = if *kind == "entrepot, no prefetch" {
                let m = Mirror::start(
                    &[Up::default("docker.io", origin.url())],
                    "tag_ttl = \"5m\"\nprefetch_layers = false",
                );
                (m.port, Box::new(m))
            } else {
                fresh(kind, &origin)
            };
            let out = scratch("bench-pull");
            let start = Instant::now();
            skopeo_pull(
                &format!("127.0.0.1:{port}/many/layers:v1"),
                &out.path().join("l"),
                false,
            );
            times[i].push(start.elapsed().as_secs_f64());
        }
    }
    println!("cold 25-layer skopeo pull, each mirror empty (s, median of 5)");
    let base = median(times[0].clone());
    for (kind, t) in kinds.iter().zip(times) {
        let m = median(t);
        println!("{kind:<24} {m:>8.3}  ({:.2}x distribution)", m / base);
    }
}

fn main() {
    if std::env::args().any(|a| a == "memory") {
        return memory();
    }
    if std::env::args().any(|a| a == "pull") {
        return cold_pull();
    }
    if std::env::args().any(|a| a == "shared") {
        return shared();
    }
    if std::env::args().any(|a| a == "auth") {
        return auth();
    }
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let big = seed.image("big/blob").largest_blob();
    let mid = seed.image("lru/b").largest_blob();
    let big_path = format!("/v2/big/blob/blobs/{}", big.0);
    let mid_path = format!("/v2/lru/b/blobs/{}", mid.0);

    println!(
        "{:<20} {:>12} {:>14} {:>16} {:>14} {:>16}",
        "", "cold 105 MiB", "16 cold 64 MiB", "warm 16x105 MiB", "manifest/tag", "origin GETs for"
    );
    println!(
        "{:<20} {:>12} {:>14} {:>16} {:>14} {:>16}",
        "", "(s, median)", "(s, all done)", "(MiB/s total)", "(req/s)", "16 cold clients"
    );
    for kind in ["distribution proxy", "entrepot"] {
        // Cold, one client: the median of five fresh caches.
        let cold = median(
            (0..5)
                .map(|_| {
                    let (port, _keep) = fresh(kind, &origin);
                    let start = Instant::now();
                    assert!(get_discard(port, &big_path) > big.1);
                    start.elapsed().as_secs_f64()
                })
                .collect(),
        );

        // Sixteen nodes pulling one cold 64 MiB layer at once.
        let (port, _keep) = fresh(kind, &origin);
        let before = origin.count(&format!("\"GET {mid_path}"));
        let sixteen = all_clients(port, &mid_path, 16);
        std::thread::sleep(Duration::from_secs(2));
        let fetches = origin.count(&format!("\"GET {mid_path}")) - before;

        // Warm: 16 clients at once on a cached 105 MiB blob.
        get_discard(port, &big_path);
        std::thread::sleep(Duration::from_secs(2));
        get_discard(port, &big_path);
        let warm = median(
            (0..3)
                .map(|_| 16.0 * big.1 as f64 / (1 << 20) as f64 / all_clients(port, &big_path, 16))
                .collect(),
        );

        // A manifest by tag, warm, on one keep-alive connection.
        let mpath = "/v2/oci/app/manifests/v1";
        keep_alive_rps(port, mpath, 50);
        let rps = median((0..3).map(|_| keep_alive_rps(port, mpath, 2000)).collect());
        println!("{kind:<20} {cold:>12.2} {sixteen:>14.2} {warm:>16.0} {rps:>14.0} {fetches:>16}");
    }
    println!();
    memory();
}
