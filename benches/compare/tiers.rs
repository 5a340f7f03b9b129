//! Figures for the optional layers: what `[auth]` costs a warm manifest request, and what a
//! shared-tier hit costs against a local one.

use std::time::{Duration, Instant};

use crate::clients::{get_discard, keep_alive_rps};
use crate::median;
use crate::support::*;

/// Warm manifest-by-tag requests per second on one keep-alive connection, without `[auth]` and
/// with it (a signed-in user, bcrypt at `htpasswd -B`'s cost), alternating run by run.
pub fn auth() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let dir = scratch("bench-auth");
    let htpasswd = dir.path().join("htpasswd");
    run(std::process::Command::new("htpasswd")
        .arg("-cbB")
        .arg(&htpasswd)
        .args(["ci", "ci-pass"]));
    let up = [Up::default("docker.io", origin.url())];
    let plain = Mirror::of(&up).tag_ttl("5m").start();
    let mut secured = Mirror::of(&up).tag_ttl("5m").start();
    secured.reconfigure(|c| {
        format!("{c}\n[auth]\nhtpasswd = {htpasswd:?}\n[[auth.allow]]\nusers = [\"ci\"]\nrepositories = [\"docker.io/**\"]\n")
    });
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("ci:ci-pass");
    let header = format!("Authorization: Basic {basic}\r\n");
    let path = "/v2/oci/app/manifests/v1";
    keep_alive_rps(plain.port, path, 50, "");
    keep_alive_rps(secured.port, path, 50, &header);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        without.push(keep_alive_rps(plain.port, path, 3000, ""));
        with.push(keep_alive_rps(secured.port, path, 3000, &header));
    }
    let (a, b) = (median(without), median(with));
    println!("manifest/tag req/s, one keep-alive connection, median of 5");
    println!("{:<24} {a:>10.0}", "without [auth]");
    println!("{:<24} {b:>10.0}  ({:.2}x)", "with [auth], Basic", b / a);
}

/// The extra latency of a shared-tier hit against a local hit: a blob GET from a replica with an
/// empty disk whose shared tier (Garage, S3 on loopback) holds the blob, then the same GET again
/// from its disk. Medians of 5 fresh replicas, for a 5 KB layer and a 64 MiB one.
pub fn shared() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let garage = garage::Garage::start();
    let section = garage.shared_section("bench", None);
    let replica = || {
        let mut m = Mirror::of(&[Up::default("docker.io", origin.url())]).start();
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
