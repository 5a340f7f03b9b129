//! Issue 3's crash safety: `kill -9` at any moment, then restart, leaves no partial or unverified
//! file, an index that agrees with the files, and every verified blob served; a disk smaller than
//! `max_size`, or one that fills up, costs cached content, never a client's bytes.
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

/// A small tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = scratch("tmpfs");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Bytes an unprivileged writer may still use on it.
    fn free(&self) -> u64 {
        let out = run(std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path()));
        out.lines().nth(1).unwrap().trim().parse().unwrap()
    }

    /// Another user of the filesystem takes all but `leave` of its free bytes (in a file of its
    /// own, `name`).
    fn fill_leaving(&self, name: &str, leave: u64) -> std::path::PathBuf {
        let filler = self.path().join(name);
        let blocks = self.free().saturating_sub(leave) / 4096;
        // dd stops at ENOSPC with an error when the count is a block too many: either way the
        // disk is as full as asked.
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=4096", "status=none"])
            .arg(format!("of={}", filler.display()))
            .arg(format!("count={blocks}"))
            .status()
            .unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The mirror's cache moved onto `fs` (default `max_size`, 20 GiB: far more than it holds), with
/// no layer prefetch (each test says which fills it starts).
fn mirror_on(fs: &Tmpfs, upstream: String) -> Mirror {
    let cache = fs.path().join("cache");
    let mut m = Mirror::of(&[Up::default("docker.io", upstream)])
        .prefetch_layers(false)
        .start();
    let old_dir = format!("dir = \"{}\"", m.cache_dir.display());
    let new_dir = format!("dir = \"{}\"", cache.display());
    m.cache_dir = cache;
    m.reconfigure(|cfg| cfg.replace(&old_dir, &new_dir));
    m
}

/// A metric's value in the mirror's `/metrics`.
fn metric(m: &Mirror, series: &str) -> f64 {
    let r = raw_request(m.port, "GET", "/metrics", &[]);
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// A 24 MiB tmpfs under a 20 GiB `max_size` (issue 22, "a disk smaller than max_size"): start-up
/// warns naming both figures, a blob larger than the disk is passed through whole and not kept,
/// the cache stays consistent, and the mirror keeps serving and caching what fits.
#[test]
fn a_blob_larger_than_the_disk_is_passed_through_whole() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let fs = Tmpfs::mount("24m");
    let mut m = mirror_on(&fs, reg.url());
    let warned = m.log_text().lines().any(|l| {
        l.contains("max_size is larger than the cache's filesystem")
            && l.contains("max_size=21474836480")
            && l.contains("holds=")
    });
    assert!(
        warned,
        "start-up did not warn, naming both figures:\n{}",
        m.log_text()
    );
    assert!(metric(&m, "entrepot_cache_bound_bytes") < (24 << 20) as f64);

    let small = seed.image("oci/app");
    let (small_layer, _) = small.blobs.last().unwrap().clone();
    let r = stream_get(m.port, &format!("/v2/oci/app/blobs/{small_layer}"), &[]);
    assert!(r.complete() && r.digest == small_layer);

    let (big, _) = seed.image("lru/b").largest_blob();
    let r = stream_get(m.port, &format!("/v2/lru/b/blobs/{big}"), &[]);
    assert!(
        r.status == 200 && r.complete() && r.digest == big,
        "a blob larger than the disk was not passed through whole"
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

/// The disk fills up under the cache (another user of a 160 MiB volume grows; issue 22): a fill
/// that meets `ENOSPC` evicts least-recently-used entries and its client gets every byte; a blob
/// that no longer fits is passed through; with no space at all, manifests are passed through and
/// `/readyz` says the cache cannot store; once space comes back, blobs are cached again without a
/// restart; and `kill -9` during a fill on the full disk loses nothing that was verified.
#[test]
fn a_full_disk_evicts_to_make_room_and_caches_again_when_space_comes_back() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let fs = Tmpfs::mount("160m");
    let mut m = mirror_on(&fs, reg.url());
    let (b, _) = seed.image("lru/b").largest_blob();
    let (c, _) = seed.image("lru/c").largest_blob();
    let (a, _) = seed.image("lru/a").largest_blob();
    let get =
        |m: &Mirror, repo: &str, d: &str| stream_get(m.port, &format!("/v2/{repo}/blobs/{d}"), &[]);

    let r = get(&m, "lru/b", &b);
    assert!(r.complete() && r.digest == b);
    assert!(m.wait_cached(&b));

    // Something else takes the disk but 24 MiB: the next 64 MiB fill meets ENOSPC midway.
    let filler = fs.fill_leaving("grown", 24 << 20);
    let r = get(&m, "lru/c", &c);
    assert!(
        r.status == 200 && r.complete() && r.digest == c,
        "the client of a fill that met ENOSPC did not get every byte:\n{}",
        m.log_text()
    );
    assert!(
        m.wait_cached(&c),
        "the fill was not kept after eviction made room"
    );
    assert!(
        !m.cached_files().contains(&b),
        "the least-recently-used blob was not evicted"
    );
    assert!(metric(&m, "entrepot_disk_full_total{kind=\"blob\"}") >= 1.0);

    // 128 MiB no longer fits: passed through whole, not kept.
    let r = get(&m, "lru/a", &a);
    assert!(
        r.complete() && r.digest == a,
        "a blob too large for the room left was not passed through"
    );
    m.wait_settled();
    assert!(!m.cached_files().contains(&a));

    // No space at all: a manifest is passed through and /readyz says the cache cannot store.
    let rest = fs.fill_leaving("the-rest", 0);
    let app = seed.image("oci/app");
    let r = raw_request(
        m.port,
        "GET",
        &format!("/v2/oci/app/manifests/{}", app.digest),
        &[],
    );
    assert_eq!(
        r.status, 200,
        "a manifest on a full disk was not passed through"
    );
    assert_eq!(sha256(&r.body), app.digest);
    let ready = raw_request(m.port, "GET", "/readyz", &[]);
    assert_eq!(
        ready.status, 200,
        "a full disk took the mirror out of service"
    );
    assert!(String::from_utf8_lossy(&ready.body).contains("cannot store"));
    std::fs::remove_file(&rest).unwrap();

    // Space comes back: the blob that did not fit is cached now, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let r = get(&m, "lru/a", &a);
    assert!(r.complete() && r.digest == a, "{}", m.log_text());
    assert!(
        m.wait_cached(&a),
        "blobs were not cached again once space came back"
    );

    // kill -9 during a fill on a full disk, then a restart: everything held is served intact.
    let proxy = Proxy::slow(reg.port, 4 << 20);
    m.reconfigure(|cfg| cfg.replace(&reg.url(), &proxy.url()));
    let _filler = fs.fill_leaving("grown-again", 8 << 20);
    let port = m.port;
    let path = format!("/v2/lru/b/blobs/{b}");
    let client = std::thread::spawn(move || try_stream_get(port, &path, &[]));
    eventually(Duration::from_secs(30), "no fill started", || {
        m.temp_files() > 0
    });
    std::thread::sleep(Duration::from_secs(4));
    m.kill9();
    let _ = client.join();
    m.restart();
    assert_consistent_and_served(
        &m,
        &catalogue(seed, &["lru/a", "lru/b", "lru/c", "oci/app"]),
    );
}

/// The disk fills under a fill and there is nothing to evict (issue 22: "the client of the fill
/// still gets every byte ... or the blob is passed through uncached when no room can be made"):
/// an empty cache on a 160 MiB volume that something else has filled but for 24 MiB. Two clients
/// of one 64 MiB fill get every byte although the file could not be finished (they got 24 MiB
/// and an error before); nothing half-written stays; the next GET is passed through whole; once
/// space comes back the blob is cached.
#[test]
fn a_fill_that_meets_a_full_disk_with_nothing_to_evict_gives_every_byte() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let fs = Tmpfs::mount("160m");
    let m = mirror_on(&fs, reg.url());
    let filler = fs.fill_leaving("grown", 24 << 20);
    let (c, _) = seed.image("lru/c").largest_blob();
    let path = format!("/v2/lru/c/blobs/{c}");
    let port = m.port;
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || stream_get(port, &path, &[]))
        })
        .collect();
    for client in clients {
        let r = client.join().unwrap();
        assert!(
            r.status == 200 && r.complete() && r.digest == c,
            "a client of a fill that met a full disk got {} bytes of {:?}:\n{}",
            r.received,
            r.declared,
            m.log_text()
        );
    }
    eventually(
        Duration::from_secs(10),
        "the fill left its temp file",
        || m.temp_files() == 0,
    );
    assert!(!m.cached_files().contains(&c));
    assert!(metric(&m, "entrepot_disk_full_total{kind=\"blob\"}") >= 1.0);
    assert!(
        m.log_text()
            .contains("passing the rest of it through uncached")
    );
    let r = stream_get(m.port, &path, &[]);
    assert!(r.complete() && r.digest == c, "{}", m.log_text());

    std::fs::remove_file(&filler).unwrap();
    let r = stream_get(m.port, &path, &[]);
    assert!(r.complete() && r.digest == c);
    assert!(
        m.wait_cached(&c),
        "the blob was not cached once space came back"
    );
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

/// Issue 22's own sequence, with curl: a cold 64 MiB blob, curl gets every byte, SIGTERM at once,
/// start again. On the code the issue was filed against, the next start said `file unknown to
/// the index: removing it` and fetched the blob again, 4 times in 4; here each of 4 rounds (a
/// cache of its own each time, so that the blob is cold) keeps it and fetches it once. It guards
/// the sequence as reported: it passes on the code just before the stop's drain (43cde73^),
/// where the 16 concurrent fills above are the test that failed.
#[test]
fn curl_then_sigterm_at_once_keeps_the_cold_blob_four_times_in_four() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let (digest, size) = seed.image("lru/c").largest_blob();
    let path = format!("/v2/lru/c/blobs/{digest}");
    let out = scratch("curl-sigterm");
    for round in 0..4 {
        let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
        let body = out.path().join(format!("blob-{round}"));
        let curl = std::process::Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .arg(format!("{}{path}", m.url()))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&curl.stdout),
            "200",
            "round {round}"
        );
        let bytes = std::fs::read(&body).unwrap();
        assert_eq!(
            bytes.len() as u64,
            size,
            "round {round}: curl got part of it"
        );
        assert_eq!(sha256(&bytes), digest, "round {round}: wrong bytes");
        m.stop();
        let logged = m.log_text().len();
        m.restart();
        let r = stream_get(m.port, &path, &[]);
        assert_eq!(r.status, 200, "round {round}, after the restart");
        assert!(r.complete() && r.digest == digest, "round {round}");
        let after = m.log_text()[logged..].to_owned();
        assert!(
            !after.contains("file unknown to the index"),
            "round {round}: the verified blob was thrown away at start-up:\n{after}"
        );
        assert_eq!(
            reg.count(&format!("\"GET {path}")),
            round + 1,
            "round {round}: the blob was fetched again after a graceful stop"
        );
    }
}

/// Start-up reads the index alone and serves; the files are checked against it afterwards
/// (issue 22, "start-up that does not stat every file"): an entry whose file was deleted by hand
/// is forgotten and fetched again when asked for, and a verified file whose record was lost (a
/// stop between its rename and its index write) is kept, with the bytes the cache counts right.
#[test]
fn the_files_are_checked_against_the_index_after_serve_starts() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())])
        .prefetch_layers(false)
        .start();
    let blobs = &seed.image("many/layers").blobs;
    let (gone, _) = &blobs[0];
    let (kept, _) = &blobs[1];
    let (lost_record, lost_size) = &blobs[2];
    let path = |d: &str| format!("/v2/many/layers/blobs/{d}");
    for d in [gone, kept] {
        let r = stream_get(m.port, &path(d), &[]);
        assert!(r.complete() && r.digest == *d, "{d}");
    }
    // The third blob's bytes, straight from the registry.
    let bytes = raw_request(reg.port, "GET", &path(lost_record), &[]).body;
    assert_eq!(bytes.len() as u64, *lost_size);
    m.stop();
    let store = m.cache_dir.join("blobs/sha256");
    let file = |d: &str| {
        let hex = &d["sha256:".len()..];
        store.join(&hex[..2]).join(hex)
    };
    std::fs::remove_file(file(gone)).unwrap();
    let unrecorded = file(lost_record);
    std::fs::create_dir_all(unrecorded.parent().unwrap()).unwrap();
    std::fs::write(&unrecorded, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&unrecorded)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(600))
        .unwrap();
    let logged = m.log_text().len();
    m.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let checked = loop {
        let log = m.log_text()[logged..].to_owned();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("files checked against the index"))
        {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no check of the files:\n{log}"
        );
    };
    assert!(checked.contains("forgotten=1"), "{checked}");
    assert!(checked.contains("kept=1"), "{checked}");
    let held: u64 = m
        .cached_files()
        .iter()
        .map(|d| std::fs::metadata(file(d)).unwrap().len())
        .sum();
    assert_eq!(metric(&m, "entrepot_cache_bytes ") as u64, held);

    // The deleted one is fetched again; the one whose record was lost is served from the disk.
    for d in [gone, kept, lost_record] {
        let r = stream_get(m.port, &path(d), &[]);
        assert!(r.complete() && r.digest == *d, "{d}");
    }
    assert_eq!(reg.count(&format!("\"GET {}", path(gone))), 2);
    assert_eq!(reg.count(&format!("\"GET {}", path(kept))), 1);
    assert_eq!(
        reg.count(&format!("\"GET {}", path(lost_record))),
        1,
        "only the test's own GET"
    );
}
