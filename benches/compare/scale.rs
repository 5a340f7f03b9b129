//! `-- scale`: a year of content. Caches of 10k, 100k and 1M small blobs (sizes from
//! `ENTREPOT_SCALE`, default `10000,100000,1000000`), built the cheap honest way: `entrepot
//! import` of generated OCI layouts (3 layers, a config and a manifest per image), then driven
//! as a site would drive them. Per size it reports:
//!
//! - the import rate (blobs/s, fsync on) and its peak RSS;
//! - `serve` start until `/readyz` answers 200, idle RSS, RSS after warm traffic;
//! - `index.redb` bytes per entry (on the disk: its length less its holes);
//! - the first 5 s of manifest and blob GETs by digest after start, uniform over every image,
//!   and how many passes of that traffic it took until the rates stopped rising (see
//!   [`warm_up`]);
//! - warm manifest and blob GETs by digest, uniform over every image (wrk, 32 connections): rate,
//!   p50, p99 of the median of [`WARM_ROUNDS`] runs each (manifests and blobs taking turns), and
//!   the lowest and highest rate of them, once the warm-up is done;
//! - cold fills (8 clients, distinct 64 KiB blobs from a real docker-registry): rate, p99, p999
//!   and the longest, once with room to spare and once with eviction running all the time
//!   (`max_size` just above what the cache holds);
//! - `_catalog`, `ls` (first row and whole), `gc`, `rm` of one image and what each image past the
//!   first adds to one `rm`, beside the running `serve` (the admin socket).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clients::{ACCEPT, raw_get};
use crate::contenders::origin_with_distinct_blobs;
use crate::support::images::Rng;
use crate::support::*;

/// Blobs per generated layout (and per import run): index.json stays a few MiB.
const CHUNK_BLOBS: usize = 100_000;
/// Bytes of each generated layer.
const LAYER_BYTES: usize = 512;
/// Cold blobs the origin holds, and their size.
const COLD_BLOBS: usize = 3000;
const COLD_SIZE: usize = 64 << 10;
/// Seconds of each wrk run.
const WRK_SECONDS: u32 = 5;
/// wrk runs of each warm figure. One run of 5 s swung by a fifth from one to the next on this
/// 2-core machine (manifests at a million blobs: 30.5k-43.0k GET/s in 10 runs by hand within
/// an hour), more than the gap the 1M target asks about: the median of three says more.
const WARM_ROUNDS: usize = 3;
/// Passes of warm-up traffic (one wrk run over the manifests, one over the blobs), at most.
const WARMUP_PASSES: usize = 8;
/// A set of paths is warm once a pass over it is within this share of the pass before.
const WARMUP_STEADY: f64 = 0.05;

/// One image of a generated layout: where clients find its manifest and a layer.
struct Generated {
    manifest_path: String,
    blob_path: String,
    name: String,
}

/// Figures for one cache size.
#[derive(Default)]
struct Figures {
    blobs: usize,
    import_rate: f64,
    import_rss_mib: f64,
    start_s: f64,
    idle_rss_mib: f64,
    warm_rss_mib: f64,
    index_bytes_per_entry: f64,
    /// The first wrk run over the manifests and over the blobs after start.
    first_manifests: f64,
    first_blobs: f64,
    /// Warm-up passes until both rates stopped rising.
    warmup_passes: usize,
    manifests: Wrk,
    blob_gets: Wrk,
    cold: Cold,
    cold_evicting: Cold,
    catalog_s: f64,
    ls_first_s: f64,
    ls_s: f64,
    gc_s: f64,
    rm_s: f64,
    /// What each image past the first adds to one `rm` command.
    rm_extra_s: f64,
}

#[derive(Default, Clone)]
struct Wrk {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The lowest and highest rate of the runs this one is the median of.
    low: f64,
    high: f64,
}

#[derive(Default)]
struct Cold {
    rate: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

pub fn scale() {
    let sizes: Vec<usize> = std::env::var("ENTREPOT_SCALE")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("ENTREPOT_SCALE: blob counts, comma-separated")
        })
        .collect();
    let (origin, cold) = origin_with_distinct_blobs(COLD_BLOBS, COLD_SIZE);
    let mut all = Vec::new();
    for n in sizes {
        let f = one_size(n, &origin, &cold);
        print_table(std::slice::from_ref(&f));
        all.push(f);
    }
    println!("\n## Scale ({})\n", today());
    print_table(&all);
}

fn today() -> String {
    run(Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .trim()
        .to_owned()
}

fn one_size(n: usize, origin: &Registry, cold: &[String]) -> Figures {
    eprintln!("== a cache of {n} blobs");
    let site = Site::new("bench-scale", &origin.url(), "max_size = \"500GiB\"");
    let mut f = Figures {
        blobs: n,
        ..Figures::default()
    };
    let mut images = Vec::new();
    let (mut import_secs, mut made) = (0.0, 0);
    while made < n {
        let count = CHUNK_BLOBS.min(n - made);
        let layout = site.dir.path().join("layout");
        images.extend(generate(&layout, made / 5, count / 5));
        let start = Instant::now();
        let rss = timed_rss(
            Command::new("/usr/bin/time")
                .args(["-f", "%M"])
                .arg(env!("CARGO_BIN_EXE_entrepot"))
                .arg("--config")
                .arg(&site.config)
                .args(["import", "--unpinned"])
                .arg(&layout),
        );
        import_secs += start.elapsed().as_secs_f64();
        f.import_rss_mib = f.import_rss_mib.max(rss);
        fs::remove_dir_all(&layout).unwrap();
        made += count / 5 * 5;
    }
    f.import_rate = made as f64 / import_secs;
    eprintln!("imported {made} blobs at {:.0}/s", f.import_rate);

    let mut serve = Serve::start(&site);
    f.start_s = serve.started_s;
    std::thread::sleep(Duration::from_secs(1));
    f.idle_rss_mib = rss_mib(serve.pid());
    let index = index_on_disk(&site);
    f.index_bytes_per_entry = index as f64 / made as f64;

    let manifests: Vec<&str> = images.iter().map(|i| i.manifest_path.as_str()).collect();
    let blobs: Vec<&str> = images.iter().map(|i| i.blob_path.as_str()).collect();
    (f.first_manifests, f.first_blobs, f.warmup_passes) =
        warm_up(serve.port, &manifests, &blobs, site.dir.path());
    let (mut m, mut b) = (Vec::new(), Vec::new());
    for _ in 0..WARM_ROUNDS {
        m.push(wrk_over(serve.port, &manifests, site.dir.path()));
        b.push(wrk_over(serve.port, &blobs, site.dir.path()));
    }
    (f.manifests, f.blob_gets) = (median(m), median(b));
    f.warm_rss_mib = rss_mib(serve.pid());

    let start = Instant::now();
    let (status, _) = curl(serve.port, "/v2/_catalog?n=100000");
    assert_eq!(status, 200);
    f.catalog_s = start.elapsed().as_secs_f64();
    (f.ls_first_s, f.ls_s) = ls_times(&site);
    let start = Instant::now();
    site.ok(&["gc", "--grace", "1h"]);
    f.gc_s = start.elapsed().as_secs_f64();
    let mid = images.len() / 2;
    let start = Instant::now();
    site.ok(&["rm", &images[mid].name]);
    f.rm_s = start.elapsed().as_secs_f64();
    // Five more in one command (each in a repository of its own): what each one adds.
    let mut five = vec!["rm"];
    five.extend(images[mid + 1..mid + 6].iter().map(|i| i.name.as_str()));
    let start = Instant::now();
    site.ok(&five);
    f.rm_extra_s = (start.elapsed().as_secs_f64() - f.rm_s).max(0.0) / 4.0;

    let half = cold.len() / 2;
    f.cold = cold_fills(serve.port, &cold[..half]);
    serve.stop();
    // Just above what it holds: every cold fill from here on passes the bound. The index's file
    // counts towards `max_size` beyond its first 2 MiB (room.rs): without it, the bound was
    // below what is held, and the run measured one long shrink (at 1M, an empty cache passing
    // every fill through) instead of eviction keeping pace with fills.
    let index = index_on_disk(&site);
    let held = held_bytes(&site) + index.saturating_sub(2 << 20);
    let config = fs::read_to_string(&site.config).unwrap().replace(
        "max_size = \"500GiB\"",
        &format!("max_size = \"{}B\"", held + (8 << 20)),
    );
    fs::write(&site.config, config).unwrap();
    let mut serve = Serve::start(&site);
    f.cold_evicting = cold_fills(serve.port, &cold[half..]);
    serve.stop();
    f
}

/// Writes an OCI layout of `images` images (numbered from `first`), 5 blobs each.
fn generate(layout: &Path, first: usize, images: usize) -> Vec<Generated> {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let put = |bytes: &[u8]| -> String {
        let d = sha256(bytes);
        fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let mut out = Vec::new();
    let mut index = String::from(r#"{"schemaVersion":2,"manifests":["#);
    let mut rng = Rng(0x5EED ^ first as u64);
    let mut layer = vec![0u8; LAYER_BYTES];
    for i in first..first + images {
        let mut layers = Vec::new();
        for _ in 0..3 {
            rng.fill(&mut layer);
            layers.push(put(&layer));
        }
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"n":"{i}"}}}},"rootfs":{{"type":"layers","diff_ids":["{}","{}","{}"]}}}}"#,
            layers[0], layers[1], layers[2]
        );
        let config_digest = put(config.as_bytes());
        let layer_list: Vec<String> = layers
            .iter()
            .map(|d| {
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{LAYER_BYTES}}}"#
                )
            })
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            layer_list.join(",")
        );
        let manifest_digest = put(manifest.as_bytes());
        let (repo, tag) = (format!("scale/r{}", i % 100), format!("t{i}"));
        if i > first {
            index.push(',');
        }
        write!(
            index,
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{repo}:{tag}"}}}}"#,
            manifest.len()
        )
        .unwrap();
        out.push(Generated {
            manifest_path: format!("/v2/{repo}/manifests/{manifest_digest}"),
            blob_path: format!("/v2/{repo}/blobs/{}", layers[0]),
            name: format!("{repo}:{tag}"),
        });
    }
    index.push_str("]}");
    fs::write(layout.join("index.json"), index).unwrap();
    out
}

/// Runs a command under `/usr/bin/time -f %M` that must succeed; returns its peak RSS in MiB.
fn timed_rss(cmd: &mut Command) -> f64 {
    let out = cmd.env("RUST_LOG", "warn").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {err}");
    let kib: f64 = err
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {err}"));
    kib / 1024.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// `entrepot serve` on a site's config, as users run it (release build, `info` log to a file).
struct Serve {
    child: Child,
    port: u16,
    started_s: f64,
}

impl Serve {
    fn start(site: &Site) -> Serve {
        let config = fs::read_to_string(&site.config).unwrap();
        let port: u16 = config
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|p| p.parse().ok())
            .expect("the site's listen port");
        let log = fs::File::create(site.dir.path().join("serve.log")).unwrap();
        let start = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
            .arg("--config")
            .arg(&site.config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        loop {
            if curl(port, "/readyz").0 == 200 {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let log = fs::read_to_string(site.dir.path().join("serve.log")).unwrap();
                panic!("serve exited ({status}) before it was ready:\n{log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "serve never got ready"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let started_s = start.elapsed().as_secs_f64();
        eprintln!("serve ready in {started_s:.2} s");
        Serve {
            child,
            port,
            started_s,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        terminate(&mut self.child);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET with curl: status and body (empty when nobody answers).
fn curl(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "120", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Accept: {ACCEPT}"))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// wrk over `paths`, each request a uniformly random one of them.
fn wrk_over(port: u16, paths: &[&str], dir: &Path) -> Wrk {
    let script = dir.join("uniform.lua");
    let mut lua = String::from("paths = {\n");
    for p in paths {
        writeln!(lua, "\"{p}\",").unwrap();
    }
    lua.push_str(
        "}\nrequest = function()\n  return wrk.format(\"GET\", paths[math.random(#paths)])\nend\n",
    );
    fs::write(&script, lua).unwrap();
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            &format!("-d{WRK_SECONDS}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg("-H")
        .arg(format!("Accept: {ACCEPT}"))
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .expect("wrk (Debian package wrk) must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk: {text}"
    );
    let find = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
            .map(|v| parse_duration_ms(&v).unwrap_or_else(|| v.parse().unwrap_or(0.0)))
            .unwrap_or_else(|| panic!("wrk printed no {prefix}: {text}"))
    };
    let rate = find("Requests/sec:");
    Wrk {
        rate,
        p50_ms: find("50%"),
        p99_ms: find("99%"),
        low: rate,
        high: rate,
    }
}

/// Uniform traffic over the manifests and the blobs, a wrk run over each in turn, until a pass
/// over each is within [`WARMUP_STEADY`] of the pass before (or [`WARMUP_PASSES`] passes): the
/// first pass's rates, and the passes it took.
///
/// Why: "warm" is the cache's word for what it holds, but the kernel holds the bytes too. At 10k
/// every file is in the page cache from the import; at a million, most files of an import have
/// left it by the time the bench reads them (this machine's host reclaims pages unused for a
/// minute: of 2,000 files of a cache read whole 45 minutes before, 3 were resident), and 32
/// connections over 200,000 paths touch a third of them in a 5-second run. Measured right after
/// start, a warm run at 1M was mostly disk reads (p99 12-23 ms against 4 ms at 10k). The first
/// pass's rates stay in the table: what a site sees when its nodes first pull after a restart.
fn warm_up(port: u16, manifests: &[&str], blobs: &[&str], dir: &Path) -> (f64, f64, usize) {
    let (mut first, mut last) = ((0.0, 0.0), (0.0, 0.0));
    for pass in 1..=WARMUP_PASSES {
        let now = (
            wrk_over(port, manifests, dir).rate,
            wrk_over(port, blobs, dir).rate,
        );
        eprintln!(
            "warm-up pass {pass}: manifests {:.0}/s, blobs {:.0}/s",
            now.0, now.1
        );
        let steady = |a: f64, b: f64| b <= a * (1.0 + WARMUP_STEADY);
        if pass == 1 {
            first = now;
        } else if steady(last.0, now.0) && steady(last.1, now.1) {
            return (first.0, first.1, pass);
        }
        last = now;
    }
    (first.0, first.1, WARMUP_PASSES)
}

/// The run of median rate, with the lowest and highest rate of them all.
fn median(mut runs: Vec<Wrk>) -> Wrk {
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    Wrk {
        low: runs[0].rate,
        high: runs[runs.len() - 1].rate,
        ..runs[runs.len() / 2].clone()
    }
}

/// wrk's durations: `812.00us`, `1.20ms`, `1.02s`.
fn parse_duration_ms(v: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    n.parse::<f64>().ok().map(|n| n * scale)
}

/// `entrepot ls` beside the running serve: seconds to its first row, and to its end.
fn ls_times(site: &Site) -> (f64, f64) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .arg("--config")
        .arg(&site.config)
        .arg("ls")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The header, then the first row.
    let _ = lines.next();
    let _ = lines.next();
    let first = start.elapsed().as_secs_f64();
    for _ in lines {}
    assert!(child.wait().unwrap().success(), "entrepot ls failed");
    (first, start.elapsed().as_secs_f64())
}

/// The bytes the cache holds, from the index (`entrepot ls`'s closing line is per image, so
/// read the file sizes instead).
/// The bytes `index.redb` takes on the disk, as the cache counts it (`Index::file_size`): its
/// length less its holes (redb doubles the length as it grows; after an import at 1M, 539 MB
/// long and 416 MB on disk).
fn index_on_disk(site: &Site) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(site.dir.path().join("cache/index.redb"))
        .map_or(0, |m| m.len().min(m.blocks() * 512))
}

fn held_bytes(site: &Site) -> u64 {
    fn walk(dir: &Path, sum: &mut u64) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(&e.path(), sum);
            } else {
                *sum += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    let mut sum = 0;
    walk(&site.dir.path().join("cache/blobs"), &mut sum);
    sum
}

/// Cold GETs of distinct blobs by 8 clients at once: rate and latencies.
fn cold_fills(port: u16, paths: &[String]) -> Cold {
    let next = Arc::new(Mutex::new(paths.to_vec()));
    let times = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (next, times) = (next.clone(), times.clone());
            std::thread::spawn(move || {
                // The lock is held for the pop alone.
                let take = || next.lock().unwrap().pop();
                while let Some(path) = take() {
                    let t = raw_get(port, &path, 64 << 10);
                    assert_eq!(t.bytes, COLD_SIZE as u64, "a cold fill of {path}");
                    times.lock().unwrap().push(t.last_byte * 1000.0);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let mut t = times.lock().unwrap().clone();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    Cold {
        rate: t.len() as f64 / secs,
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: *t.last().unwrap(),
    }
}

fn print_table(all: &[Figures]) {
    let mut out = String::new();
    let head: Vec<String> = all.iter().map(|f| format!("{} blobs", f.blobs)).collect();
    writeln!(out, "| figure | {} |", head.join(" | ")).unwrap();
    writeln!(out, "|---|{}", "---|".repeat(all.len())).unwrap();
    let row = |out: &mut String, name: &str, cell: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = all.iter().map(cell).collect();
        writeln!(out, "| {name} | {} |", cells.join(" | ")).unwrap();
    };
    row(&mut out, "import, blobs/s (fsync on); peak RSS", &|f| {
        format!("{:.0}; {:.0} MiB", f.import_rate, f.import_rss_mib)
    });
    row(&mut out, "`serve` start until `/readyz`", &|f| {
        format!("{:.2} s", f.start_s)
    });
    row(&mut out, "RSS idle / after warm traffic", &|f| {
        format!("{:.0} / {:.0} MiB", f.idle_rss_mib, f.warm_rss_mib)
    });
    row(&mut out, "`index.redb` bytes on disk per entry", &|f| {
        format!("{:.0}", f.index_bytes_per_entry)
    });
    let warm = |w: &Wrk| {
        format!(
            "{:.0} ({:.0}-{:.0}); {:.2} / {:.2} ms",
            w.rate, w.low, w.high, w.p50_ms, w.p99_ms
        )
    };
    row(
        &mut out,
        "first 5 s after start, manifests / blobs by digest, uniform: GET/s; warm-up passes",
        &|f| {
            format!(
                "{:.0} / {:.0}; {}",
                f.first_manifests, f.first_blobs, f.warmup_passes
            )
        },
    );
    row(
        &mut out,
        &format!(
            "warm manifests by digest, uniform: GET/s, median (range) of {WARM_ROUNDS}; p50 / p99"
        ),
        &|f| warm(&f.manifests),
    );
    row(
        &mut out,
        &format!("warm blobs, uniform: GET/s, median (range) of {WARM_ROUNDS}; p50 / p99"),
        &|f| warm(&f.blob_gets),
    );
    let cold = |c: &Cold| {
        format!(
            "{:.0}/s; p99 {:.0} / p999 {:.0} / max {:.0} ms",
            c.rate, c.p99_ms, c.p999_ms, c.max_ms
        )
    };
    row(&mut out, "cold fills, room to spare", &|f| cold(&f.cold));
    row(&mut out, "cold fills, eviction all the time", &|f| {
        cold(&f.cold_evicting)
    });
    row(&mut out, "`_catalog`", &|f| format!("{:.2} s", f.catalog_s));
    row(&mut out, "`ls` first row / whole", &|f| {
        format!("{:.2} / {:.2} s", f.ls_first_s, f.ls_s)
    });
    row(&mut out, "`gc`", &|f| format!("{:.2} s", f.gc_s));
    row(&mut out, "`rm` of one image; each extra image", &|f| {
        format!("{:.2}; {:.2} s", f.rm_s, f.rm_extra_s)
    });
    println!("{out}");
    let _ = std::io::stdout().flush();
}
