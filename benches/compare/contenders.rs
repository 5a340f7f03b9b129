//! The systems under test, each started fresh with an empty cache: entrepot, Debian's
//! `docker-registry` in proxy mode, and nginx serving a blob's file with `sendfile`.

use std::fs;
use std::path::Path;

use crate::support::*;

/// One running contender.
pub struct Running {
    pub port: u16,
    pub pid: u32,
    _keep: Box<dyn std::any::Any>,
}

/// entrepot in front of `origin` (the default `tag_ttl`), prefetching layers or not.
pub fn entrepot(origin: &Registry, prefetch_layers: bool) -> Running {
    let m = Mirror::of(&[Up::default("docker.io", origin.url())])
        .prefetch_layers(prefetch_layers)
        .start();
    Running {
        port: m.port,
        pid: m.pid().unwrap(),
        _keep: Box::new(m),
    }
}

/// CNCF distribution's proxy mode in front of `origin`, with empty storage.
pub fn distribution(origin: &Registry) -> Running {
    let storage = scratch("proxy-storage");
    let r = Registry::start_with(
        storage.path(),
        &format!("proxy:\n  remoteurl: {}\n", origin.url()),
        None,
    );
    Running {
        port: r.port,
        pid: r.pid().unwrap(),
        _keep: Box::new((r, storage)),
    }
}

/// A fresh contender by name, as the tables print it.
pub fn fresh(kind: &str, origin: &Registry) -> Running {
    match kind {
        "entrepot" => entrepot(origin, true),
        "entrepot, no prefetch" => entrepot(origin, false),
        "distribution proxy" => distribution(origin),
        _ => unreachable!("{kind}"),
    }
}

/// nginx (two workers, as many as cores here) serving `file` at `/blob` with `sendfile` and
/// `tcp_nopush`: bytes from the page cache with no copy in user space. With `access_log`, it
/// writes a line per request (unbuffered, as nginx does by default) to a file in its directory.
pub fn nginx_sendfile(file: &Path, access_log: bool) -> Running {
    let dir = scratch("nginx-sendfile");
    let d = dir.path().display().to_string();
    let port = free_port();
    let log = if access_log {
        format!("{d}/access.log")
    } else {
        "off".to_owned()
    };
    fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "user root;\nworker_processes 2;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{}}\nhttp {{\n  access_log {log};\n  sendfile on;\n  tcp_nopush on;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n\
             location = /blob {{\n      default_type application/octet-stream;\n\
             alias {};\n    }}\n  }}\n}}\n",
            file.display()
        ),
    )
    .unwrap();
    let nginx = start_nginx(dir.path(), port);
    Running {
        port,
        pid: nginx.pid(),
        // The process stops before its directory goes.
        _keep: Box::new((nginx, dir)),
    }
}

/// Forgets a process's peak resident memory so far (`VmHWM`), so the next reading covers only
/// what follows.
pub fn reset_peak_rss(pid: u32) {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// Peak resident memory of a process (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// The body bytes an origin registry sent for GETs whose request line contains `needle`, and how
/// many such GETs there were, from its access log (`"GET path HTTP/1.1" status bytes`).
pub fn origin_sent(origin: &Registry, needle: &str) -> (u64, usize) {
    let log = fs::read_to_string(&origin.log).unwrap_or_default();
    let mut bytes = 0;
    let mut gets = 0;
    for line in log.lines() {
        let Some(at) = line.find("\"GET ") else {
            continue;
        };
        let rest = &line[at + 1..];
        let Some(end) = rest.find('"') else { continue };
        if !rest[..end].contains(needle) {
            continue;
        }
        gets += 1;
        let mut f = rest[end + 1..].split_whitespace();
        let _status = f.next();
        bytes += f.next().and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
    }
    (bytes, gets)
}

/// An origin registry holding `n` distinct blobs of `size` bytes in repository `mem/blobs`
/// (written straight into its storage, as distribution lays it out, and kept between runs).
/// Returns it and the blobs' paths.
pub fn origin_with_distinct_blobs(n: usize, size: usize) -> (Registry, Vec<String>) {
    let storage = fixtures_dir().join(format!("bench-distinct-{n}x{size}"));
    let listed = storage.join("paths.txt");
    if let Ok(text) = fs::read_to_string(&listed) {
        let paths = text.lines().map(str::to_owned).collect();
        return (Registry::start(&storage), paths);
    }
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
        let path = registry_blob_path(&storage, &digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &data).unwrap();
        let link = storage
            .join("docker/registry/v2/repositories/mem/blobs/_layers/sha256")
            .join(&digest[7..]);
        fs::create_dir_all(&link).unwrap();
        fs::write(link.join("link"), &digest).unwrap();
        paths.push(format!("/v2/mem/blobs/blobs/{digest}"));
    }
    fs::write(&listed, paths.join("\n")).unwrap();
    (Registry::start(&storage), paths)
}
