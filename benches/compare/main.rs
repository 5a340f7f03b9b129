//! entrepot beside its peers, on this machine, all on 127.0.0.1 in front of one origin (Debian's
//! `docker-registry` holding the test images): CNCF distribution's proxy mode (the same package
//! with `proxy.remoteurl`, what most sites run), and, for warm bytes, nginx serving the blob's
//! file with `sendfile` (the practical limit for bytes from the page cache over loopback).
//!
//! Run it with `scripts/bench.sh`, which installs the Debian packages it needs (docker-registry,
//! skopeo, nginx, wrk, curl) and runs `cargo bench --bench compare`. Clients are curl and wrk
//! processes; contenders alternate run by run, so drift hits all alike; figures are medians.
//!
//! The table (no argument): warm 128 MiB blob throughput with 1 and 8 streams; warm manifest
//! GETs/s by digest and by tag (wrk, 32 connections, default `tag_ttl`); a single cold 128 MiB
//! blob and 16 concurrent cold GETs of it against 16 warm ones; a cold 25-layer skopeo pull;
//! upstream bytes per unique blob; entrepot's peak RSS under those loads and under 32 cold fills
//! of distinct 64 MiB blobs. It ends with a Markdown table for the README.
//!
//! Other figures: `-- client` (why a client's way of reading changes the cold figure),
//! `-- manifests` (the warm manifest rate beside nginx serving the same bytes), `-- auth`
//! (warm manifest rate without and with `[auth]`), `-- shared` (a shared-tier hit against a local
//! one, with Garage).
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

#[path = "../../tests/support/mod.rs"]
mod support;

mod clients;
mod contenders;
mod scale;
mod tiers;

use std::fmt::Write as _;
use std::time::Duration;

use clients::{curl_get, curl_many, raw_get, wrk};
use contenders::{Running, fresh, origin_sent, peak_rss_mib, reset_peak_rss};
use support::*;

/// Rounds of each cold figure (each on fresh, empty caches) and of each warm one.
const COLD_ROUNDS: usize = 3;
const WARM_ROUNDS: usize = 9;
/// Seconds of each wrk run.
const WRK_SECONDS: u32 = 3;

const ENTREPOT: &str = "entrepot";
const DISTRIBUTION: &str = "distribution proxy";
const NGINX: &str = "nginx sendfile";

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One row of the published table: a figure, each contender's value (None: not measured), which
/// way is better, and the target.
struct Row {
    figure: String,
    values: [Option<f64>; 3],
    higher_is_better: bool,
    target: &'static str,
    /// Digits after the point.
    precision: usize,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn add(
        &mut self,
        figure: impl Into<String>,
        values: [Option<f64>; 3],
        higher_is_better: bool,
        precision: usize,
        target: &'static str,
    ) {
        let row = Row {
            figure: figure.into(),
            values,
            higher_is_better,
            target,
            precision,
        };
        println!("  {}", self.line(&row));
        self.rows.push(row);
    }

    fn line(&self, r: &Row) -> String {
        let cell = |v: Option<f64>| match v {
            Some(v) => format!("{v:.*}", r.precision),
            None => "-".to_owned(),
        };
        // The ratio: entrepot against the best peer, as time or size over time or size
        // (lower is better), or rate over rate (higher is better).
        let peers = r.values[1..].iter().flatten().copied();
        let best = if r.higher_is_better {
            peers.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
        } else {
            peers.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.min(v))))
        };
        let ratio = match (r.values[0], best) {
            (Some(e), Some(b)) if b > 0.0 => format!("{:.2}x", e / b),
            _ => "-".to_owned(),
        };
        format!(
            "| {} | {} | {} | {} | {} | {} |",
            r.figure,
            cell(r.values[0]),
            cell(r.values[1]),
            cell(r.values[2]),
            ratio,
            r.target
        )
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "| figure | {ENTREPOT} | {DISTRIBUTION} | {NGINX} | entrepot vs best peer | target |\n|---|---:|---:|---:|---:|---|\n"
        );
        for r in &self.rows {
            s.push_str(&self.line(r));
            s.push('\n');
        }
        s
    }
}

fn gb(bytes: f64) -> f64 {
    bytes / 1e9
}

/// The machine, for the table's caption.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |k| k / (1 << 20) as f64);
    let kernel = run(std::process::Command::new("uname").arg("-r"));
    format!(
        "{cores} cores ({cpu}), {mem:.0} GiB, Linux {}",
        kernel.trim()
    )
}

/// GETs `url` until it answers fast (the blob is on the contender's disk), then once more.
fn warm_up(url: &str) {
    curl_get(url);
    std::thread::sleep(Duration::from_secs(2));
    curl_get(url);
}

fn table() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let (digest, size) = seed.image("lru/a").largest_blob();
    let blob_path = format!("/v2/lru/a/blobs/{digest}");
    let url = |port: u16| format!("http://127.0.0.1:{port}{blob_path}");
    let mut t = Table::default();

    // 1. Warm throughput, 1 and 8 streams, entrepot's peak RSS under them.
    println!("warm 128 MiB blob: {WARM_ROUNDS} rounds of 1 and of 8 curl streams");
    let e = fresh(ENTREPOT, &origin);
    let d = fresh(DISTRIBUTION, &origin);
    let n = contenders::nginx_sendfile(&registry_blob_path(&seed.storage, &digest), false);
    let urls = [
        url(e.port),
        url(d.port),
        format!("http://127.0.0.1:{}/blob", n.port),
    ];
    for u in &urls {
        warm_up(u);
    }
    reset_peak_rss(e.pid);
    let mut one: [Vec<f64>; 3] = Default::default();
    let mut eight: [Vec<f64>; 3] = Default::default();
    for _ in 0..WARM_ROUNDS {
        for (i, u) in urls.iter().enumerate() {
            let x = curl_get(u);
            assert_eq!(x.bytes, size);
            one[i].push(gb(size as f64) / x.seconds);
            let (wall, _) = curl_many(u, 8);
            eight[i].push(gb(8.0 * size as f64) / wall);
        }
    }
    let warm_rss = peak_rss_mib(e.pid);
    let med = |v: &[Vec<f64>; 3], i: usize| Some(median(v[i].clone()));
    t.add(
        "warm 128 MiB blob, 1 stream (GB/s)",
        [med(&one, 0), med(&one, 1), med(&one, 2)],
        true,
        2,
        ">= 1.0x nginx",
    );
    t.add(
        "warm 128 MiB blob, 8 streams (GB/s)",
        [med(&eight, 0), med(&eight, 1), med(&eight, 2)],
        true,
        2,
        ">= 1.0x nginx",
    );
    drop(n);

    // 2. Warm manifests by digest and by tag, wrk with 32 connections.
    println!("warm manifest GETs/s: wrk, 32 connections, {WRK_SECONDS} s, {COLD_ROUNDS} rounds");
    let app = seed.image("oci/app");
    // entrepot by digest and by tag, then distribution's.
    let rates = wrk_medians(&[
        app_manifest(e.port, &app.digest),
        app_manifest(e.port, "v1"),
        app_manifest(d.port, &app.digest),
        app_manifest(d.port, "v1"),
    ]);
    for (j, name) in ["by digest", "by tag"].iter().enumerate() {
        t.add(
            format!("warm manifest GETs/s {name} (wrk, 32 connections)"),
            [Some(rates[j]), Some(rates[2 + j]), None],
            true,
            0,
            if j == 0 { ">= 50x" } else { ">= 300x" },
        );
    }
    drop((e, d));

    // 3. A single cold blob, and 16 concurrent cold GETs of it against 16 warm ones.
    println!("cold 128 MiB blob: {COLD_ROUNDS} rounds, each contender empty");
    let kinds = [ENTREPOT, DISTRIBUTION];
    let mut cold: [Vec<f64>; 2] = Default::default();
    let mut cold_bytes: [Vec<f64>; 2] = Default::default();
    let mut cold_rss = Vec::new();
    let mut c16: [Vec<f64>; 2] = Default::default();
    let mut w16: [Vec<f64>; 2] = Default::default();
    let mut gets16: [Vec<f64>; 2] = Default::default();
    let mut bytes16: [Vec<f64>; 2] = Default::default();
    for _ in 0..COLD_ROUNDS {
        for (i, kind) in kinds.iter().enumerate() {
            let before = origin_sent(&origin, &blob_path);
            let r = fresh(kind, &origin);
            let x = curl_get(&url(r.port));
            assert_eq!(x.bytes, size);
            cold[i].push(x.seconds);
            std::thread::sleep(Duration::from_secs(2));
            let after = origin_sent(&origin, &blob_path);
            cold_bytes[i].push((after.0 - before.0) as f64 / size as f64);
            if i == 0 {
                cold_rss.push(peak_rss_mib(r.pid));
            }
            drop(r);

            let r = fresh(kind, &origin);
            let before = origin_sent(&origin, &blob_path);
            let (wall, all) = curl_many(&url(r.port), 16);
            assert!(all.iter().all(|x| x.bytes == size));
            c16[i].push(wall);
            std::thread::sleep(Duration::from_secs(2));
            let after = origin_sent(&origin, &blob_path);
            gets16[i].push((after.1 - before.1) as f64);
            bytes16[i].push((after.0 - before.0) as f64 / size as f64);
            w16[i].push(curl_many(&url(r.port), 16).0);
        }
    }
    let m2 = |v: &[Vec<f64>; 2]| [Some(median(v[0].clone())), Some(median(v[1].clone())), None];
    t.add(
        "single cold 128 MiB blob (s)",
        m2(&cold),
        false,
        3,
        "<= 1.0x",
    );
    t.add(
        "16 concurrent cold GETs of it (s, all done)",
        m2(&c16),
        false,
        3,
        "see two rows down",
    );
    t.add(
        "16 concurrent warm GETs of it (s, all done)",
        m2(&w16),
        false,
        3,
        "",
    );
    let own = |i: usize| Some(median(c16[i].clone()) / median(w16[i].clone()));
    t.add(
        "16 cold GETs' time over 16 warm GETs' time",
        [own(0), own(1), None],
        false,
        2,
        "<= 1.2 (ours)",
    );
    t.add(
        "upstream GETs for the 16 cold GETs",
        m2(&gets16),
        false,
        0,
        "1",
    );

    // 4. A cold 25-layer pull with skopeo.
    println!("cold 25-layer skopeo pull: {COLD_ROUNDS} rounds, each contender empty");
    let many = seed.image("many/layers");
    let unique: u64 = many.blobs.iter().map(|(_, s)| s).sum();
    let pull_kinds = [ENTREPOT, DISTRIBUTION, "entrepot, no prefetch"];
    let mut pull: [Vec<f64>; 3] = Default::default();
    let mut pull_bytes: [Vec<f64>; 3] = Default::default();
    for _ in 0..COLD_ROUNDS {
        for (i, kind) in pull_kinds.iter().enumerate() {
            let r: Running = fresh(kind, &origin);
            let before = origin_sent(&origin, "/v2/many/layers/blobs/");
            let out = scratch("bench-pull");
            let start = std::time::Instant::now();
            skopeo_pull(
                &format!("127.0.0.1:{}/many/layers:v1", r.port),
                &out.path().join("l"),
                false,
            );
            pull[i].push(start.elapsed().as_secs_f64());
            std::thread::sleep(Duration::from_millis(500));
            let after = origin_sent(&origin, "/v2/many/layers/blobs/");
            pull_bytes[i].push((after.0 - before.0) as f64 / unique as f64);
        }
    }
    let m3 = |v: &[Vec<f64>; 3], i: usize| Some(median(v[i].clone()));
    t.add(
        "cold 25-layer skopeo pull (s)",
        [m3(&pull, 0), m3(&pull, 1), None],
        false,
        3,
        "<= 0.5x",
    );
    t.add(
        "  the same, entrepot with prefetch_layers = false (s)",
        [m3(&pull, 2), m3(&pull, 1), None],
        false,
        3,
        "",
    );

    // 5. Upstream bytes per unique blob byte.
    t.add(
        "upstream bytes / blob bytes: single cold blob",
        m2(&cold_bytes),
        false,
        2,
        "1.0x",
    );
    t.add(
        "upstream bytes / blob bytes: 16 cold GETs of one blob",
        m2(&bytes16),
        false,
        2,
        "1.0x",
    );
    t.add(
        "upstream bytes / blob bytes: 25-layer pull",
        [m3(&pull_bytes, 0), m3(&pull_bytes, 1), None],
        false,
        2,
        "1.0x",
    );

    // 6. Peak RSS.
    let (distinct, cold32_rss) = memory_under_cold_fills();
    t.add(
        "entrepot peak RSS, 8 warm streams (MiB)",
        [Some(warm_rss), None, None],
        false,
        0,
        "<= 64",
    );
    t.add(
        "entrepot peak RSS, one cold 128 MiB fill (MiB)",
        [Some(median(cold_rss)), None, None],
        false,
        0,
        "",
    );
    t.add(
        "peak RSS, 32 cold fills of distinct 64 MiB blobs (MiB)",
        [Some(distinct), Some(cold32_rss), None],
        false,
        0,
        "<= 128",
    );

    let mut out = String::new();
    let _ = writeln!(out, "\n{}", t.markdown());
    let _ = writeln!(
        out,
        "Measured {} on {}, with `scripts/bench.sh` (`cargo bench --bench compare`); medians of {COLD_ROUNDS} rounds on fresh, empty caches for cold figures and of {WARM_ROUNDS} (blobs) or {COLD_ROUNDS} (manifests) for warm ones.",
        run(std::process::Command::new("date").args(["-u", "+%Y-%m-%d"])).trim(),
        machine()
    );
    print!("{out}");
}

/// Peak RSS of entrepot and of distribution's proxy while 32 clients each pull a different cold
/// 64 MiB blob at once.
fn memory_under_cold_fills() -> (f64, f64) {
    let (origin, paths) = contenders::origin_with_distinct_blobs(32, 64 << 20);
    println!("32 cold fills of distinct 64 MiB blobs, each contender empty");
    let mut rss = [0.0; 2];
    for (i, kind) in [ENTREPOT, DISTRIBUTION].iter().enumerate() {
        let r = fresh(kind, &origin);
        let start = std::time::Instant::now();
        let hs: Vec<_> = paths
            .iter()
            .map(|p| {
                let p = p.clone();
                let port = r.port;
                std::thread::spawn(move || clients::get_discard(port, &p))
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), 64 << 20);
        }
        let took = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        rss[i] = peak_rss_mib(r.pid);
        println!("  {kind:<20} {:>6.0} MiB  ({took:.1} s for all)", rss[i]);
    }
    (rss[0], rss[1])
}

/// Why the plain Rust client (which read with a 1 MiB buffer until the server closed the
/// connection) saw entrepot's single cold blob at another ratio to distribution's than curl
/// does: the same cold GETs with curl (16 KiB reads), and with the Rust client reading 16 KiB,
/// 256 KiB and 1 MiB at a time, timed at the last byte of the body and at the close.
fn client() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let (digest, size) = seed.image("lru/a").largest_blob();
    let path = format!("/v2/lru/a/blobs/{digest}");
    let bufs = [16 << 10, 256 << 10, 1 << 20];
    print!("{:<20} {:>10}", "single cold 128 MiB", "curl");
    for b in bufs {
        print!(" {:>18}", format!("Rust {} KiB", b >> 10));
    }
    println!("   (s to the last byte, median of {COLD_ROUNDS}; at the close in brackets)");
    for kind in [ENTREPOT, DISTRIBUTION] {
        let mut c = Vec::new();
        let mut last: Vec<Vec<f64>> = vec![Vec::new(); bufs.len()];
        let mut closed: Vec<Vec<f64>> = vec![Vec::new(); bufs.len()];
        for _ in 0..COLD_ROUNDS {
            let r = fresh(kind, &origin);
            c.push(curl_get(&format!("http://127.0.0.1:{}{path}", r.port)).seconds);
            drop(r);
            for (i, b) in bufs.iter().enumerate() {
                let r = fresh(kind, &origin);
                let x = raw_get(r.port, &path, *b);
                assert_eq!(x.bytes, size);
                last[i].push(x.last_byte);
                closed[i].push(x.closed);
            }
        }
        print!("{kind:<20} {:>10.3}", median(c));
        for (l, c) in last.into_iter().zip(closed) {
            print!(" {:>18}", format!("{:.3} ({:.3})", median(l), median(c)));
        }
        println!();
    }
}

/// The warm manifest rate beside what any server reaches here: nginx serving the same manifest
/// bytes as a static file, without and with its access log, under the same wrk load. The
/// rates alternate round by round; medians.
fn manifests() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let app = seed.image("oci/app");
    let e = fresh(ENTREPOT, &origin);
    let d = fresh(DISTRIBUTION, &origin);
    let file = registry_blob_path(&seed.storage, &app.digest);
    let quiet = contenders::nginx_sendfile(&file, false);
    let logged = contenders::nginx_sendfile(&file, true);
    let urls = [
        ("entrepot by digest", app_manifest(e.port, &app.digest)),
        ("entrepot by tag", app_manifest(e.port, "v1")),
        ("distribution by digest", app_manifest(d.port, &app.digest)),
        ("distribution by tag", app_manifest(d.port, "v1")),
        (
            "nginx static file, no log",
            format!("http://127.0.0.1:{}/blob", quiet.port),
        ),
        (
            "nginx static file, access log",
            format!("http://127.0.0.1:{}/blob", logged.port),
        ),
    ];
    let rates = wrk_medians(&urls.clone().map(|(_, u)| u));
    println!(
        "warm manifest GETs/s (wrk, 32 connections, {WRK_SECONDS} s, median of {COLD_ROUNDS})"
    );
    for ((name, _), r) in urls.iter().zip(rates) {
        println!("  {name:<32} {r:>9.0}");
    }
}

/// The URL of the seeded `oci/app` manifest on a contender, by tag or digest.
fn app_manifest(port: u16, reference: &str) -> String {
    format!("http://127.0.0.1:{port}/v2/oci/app/manifests/{reference}")
}

/// wrk's rate on each of `urls`: a 1 s warm-up each, then {COLD_ROUNDS} rounds taking the urls in
/// turn (so drift hits all alike); the median of each.
fn wrk_medians(urls: &[String]) -> Vec<f64> {
    for u in urls {
        wrk(u, 1);
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); urls.len()];
    for _ in 0..COLD_ROUNDS {
        for (i, u) in urls.iter().enumerate() {
            rates[i].push(wrk(u, WRK_SECONDS));
        }
    }
    rates.into_iter().map(median).collect()
}

fn main() {
    // entrepot logs as users run it: a line per request at `info`.
    let _ = MIRROR_LOG.set("info");
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    match arg.as_deref() {
        Some("client") => client(),
        Some("manifests") => manifests(),
        Some("auth") => tiers::auth(),
        Some("shared") => tiers::shared(),
        Some("scale") => scale::scale(),
        Some("memory") => {
            memory_under_cold_fills();
        }
        _ => table(),
    }
}
