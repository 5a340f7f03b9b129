//! Issue 3's crash safety: `kill -9` at any moment, then restart, leaves no partial or unverified
//! file, an index that agrees with the files, and every verified blob served; a full disk fails a
//! fill cleanly.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

/// What a client should get for each path: digest and whether it is a manifest.
fn catalogue(seed: &Seed, repos: &[&str]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for repo in repos {
        let img = seed.image(repo);
        out.insert(
            format!("/v2/{repo}/manifests/{}", img.digest),
            img.digest.clone(),
        );
        for c in &img.children {
            out.insert(format!("/v2/{repo}/manifests/{c}"), c.clone());
        }
        for (b, _) in &img.blobs {
            out.insert(format!("/v2/{repo}/blobs/{b}"), b.clone());
        }
    }
    out
}

/// After a crash and restart with the upstream gone: no temp files, and every file in the cache
/// is known to the index and served whole with the right digest.
fn assert_consistent_and_served(m: &Mirror, paths: &HashMap<String, String>) {
    assert_eq!(m.temp_files(), 0, "temp files survived a restart");
    let cached = m.cached_files();
    for digest in &cached {
        let path = paths
            .iter()
            .find(|(_, d)| *d == digest)
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| panic!("cache holds {digest}, which no test image has"));
        let r = stream_get(m.port, &path, &[("Accept", "*/*")]);
        assert_eq!(r.status, 200, "{path} is cached but not served");
        assert!(r.complete(), "{path}");
        assert_eq!(&r.digest, digest, "{path} served wrong bytes");
    }
}

#[test]
fn kill_9_during_a_slow_fill_leaves_nothing_partial() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let proxy = Proxy::slow(reg.port, 4 << 20);
    let mut m = Mirror::of(&[Up::default("docker.io", proxy.url())]).start();
    let (digest, size) = seed.image("lru/c").largest_blob();
    let path = format!("/v2/lru/c/blobs/{digest}");
    let port = m.port;
    let p2 = path.clone();
    let client = std::thread::spawn(move || try_stream_get(port, &p2, &[]));
    std::thread::sleep(Duration::from_millis(1500));
    m.kill9();
    let seen = client.join().unwrap();
    if let Some(r) = seen {
        assert!(
            !(r.status == 200 && r.complete()),
            "a fill killed midway gave a complete body"
        );
    }
    m.restart();
    assert_eq!(m.temp_files(), 0);
    assert!(!m.cached_files().contains(&digest));
    // The blob fills again, whole, once the upstream is fast.
    proxy.rate.store(0, Ordering::Relaxed);
    let r = stream_get(m.port, &path, &[]);
    assert!(r.complete() && r.digest == digest && r.declared == Some(size));
    assert!(m.wait_cached(&digest));
}

#[test]
fn kill_9_five_times_under_load_never_serves_wrong_bytes() {
    let seed = seed();
    let mut reg = Registry::start(&seed.storage);
    // A moderately slow upstream, so kills land mid-fill as well as mid-serve; and a cache too
    // small for everything, so they land mid-eviction too.
    let proxy = Proxy::slow(reg.port, 40 << 20);
    let mut m = Mirror::of(&[Up::default("docker.io", proxy.url())])
        .max_size("150MiB")
        .start();
    let paths = catalogue(
        seed,
        &[
            "oci/app",
            "many/layers",
            "multi/arch",
            "library/busybox",
            "big/blob",
            "lru/b",
        ],
    );
    let list: Vec<(String, String)> = paths.iter().map(|(p, d)| (p.clone(), d.clone())).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let port = m.port;
    let complete_ok = Arc::new(Mutex::new(0usize));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (list, stop, ok) = (list.clone(), stop.clone(), complete_ok.clone());
            std::thread::spawn(move || {
                let mut i = t * 7;
                while !stop.load(Ordering::Relaxed) {
                    let (path, digest) = &list[i % list.len()];
                    i += 1;
                    if let Some(r) = try_stream_get(port, path, &[("Accept", "*/*")]) {
                        if r.status == 200 && r.complete() {
                            assert_eq!(
                                &r.digest, digest,
                                "{path}: a complete response with wrong bytes"
                            );
                            *ok.lock().unwrap() += 1;
                        }
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    for round in 0..5u64 {
        std::thread::sleep(Duration::from_millis(700 + 211 * round));
        m.kill9();
        m.restart();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client saw wrong bytes");
    }
    assert!(
        *complete_ok.lock().unwrap() > 0,
        "no request completed at all"
    );
    // Last crash, then the upstream goes away: everything cached is served, nothing partial.
    m.kill9();
    reg.stop();
    m.restart();
    assert_consistent_and_served(&m, &paths);
}

/// ENOSPC on a small tmpfs: the fill fails cleanly, the client's body is not complete, the cache
/// stays consistent, and the mirror keeps serving and caching what fits.
#[test]
fn a_full_disk_fails_the_fill_cleanly() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mount = scratch("tmpfs");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(mount.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount.path().to_owned());
    let cache = mount.path().join("cache");
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let old_dir = format!("dir = \"{}\"", m.cache_dir.display());
    let new_dir = format!("dir = \"{}\"", cache.display());
    m.cache_dir = cache;
    m.reconfigure(|cfg| cfg.replace(&old_dir, &new_dir));

    let small = seed.image("oci/app");
    let (small_layer, _) = small.blobs.last().unwrap().clone();
    let r = stream_get(m.port, &format!("/v2/oci/app/blobs/{small_layer}"), &[]);
    assert!(r.complete() && r.digest == small_layer);

    let (big, _) = seed.image("lru/b").largest_blob();
    let r = stream_get(m.port, &format!("/v2/lru/b/blobs/{big}"), &[]);
    assert!(
        !(r.status == 200 && r.complete()),
        "a fill that hit ENOSPC looked complete"
    );
    eventually(
        Duration::from_secs(10),
        "the failed fill left its temp file",
        || m.temp_files() == 0,
    );
    assert_eq!(m.temp_files(), 0, "the failed fill left its temp file");
    assert!(!m.cached_files().contains(&big));

    // Still serving what it has, and caching what fits.
    let r = stream_get(m.port, &format!("/v2/oci/app/blobs/{small_layer}"), &[]);
    assert!(r.complete() && r.digest == small_layer);
    let r = raw_request(m.port, "GET", "/v2/oci/app/manifests/v1", &[]);
    assert_eq!(r.status, 200);
    assert!(m.cached_files().contains(&small.digest));
    m.restart();
    assert_consistent_and_served(&m, &catalogue(seed, &["oci/app"]));
}

/// A graceful stop right after cold fills keeps every blob the clients got (issue 22, "a graceful
/// stop that keeps every fill"): 16 concurrent cold GETs (one 64 MiB layer, 15 small ones) all
/// complete, SIGTERM at once, and the next start neither throws a verified file away nor fetches
/// any blob again.
#[test]
fn a_graceful_stop_right_after_cold_fills_keeps_every_blob() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let mut paths = vec![format!(
        "/v2/lru/c/blobs/{}",
        seed.image("lru/c").largest_blob().0
    )];
    let small = &seed.image("many/layers").blobs;
    paths.extend(
        small
            .iter()
            .take(15)
            .map(|(d, _)| format!("/v2/many/layers/blobs/{d}")),
    );
    let port = m.port;
    let clients: Vec<_> = paths
        .iter()
        .cloned()
        .map(|p| std::thread::spawn(move || stream_get(port, &p, &[])))
        .collect();
    for (c, path) in clients.into_iter().zip(&paths) {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(r.complete(), "{path}");
        assert!(path.ends_with(&r.digest), "{path} served wrong bytes");
    }
    // Every client has every byte: stop at once, as a rolling restart does.
    m.stop();
    let logged = m.log_text().len();
    m.restart();
    for path in &paths {
        let r = stream_get(m.port, path, &[]);
        assert_eq!(r.status, 200, "{path} after the restart");
        assert!(r.complete() && path.ends_with(&r.digest), "{path}");
    }
    let after = m.log_text()[logged..].to_owned();
    assert!(
        !after.contains("file unknown to the index"),
        "a verified blob was thrown away at start-up:\n{after}"
    );
    for path in &paths {
        assert_eq!(
            reg.count(&format!("\"GET {path}")),
            1,
            "{path} was fetched again after a graceful stop"
        );
    }
}
