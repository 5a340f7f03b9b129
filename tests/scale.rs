//! Past one machine: three entrepot replicas sharing a cache tier on Garage (a real
//! S3-compatible store, one node on loopback), behind nginx with the shipped
//! `deploy/scale-out/nginx.conf`; a real `docker-registry` upstream; skopeo and containerd as
//! clients.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::path::Path;

use support::garage::Garage;
use support::*;

/// nginx running the shipped configuration, its replica addresses and port put in.
struct Nginx {
    _process: NginxProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(replicas: &[u16]) -> Nginx {
        let dir = scratch("nginx");
        let d = dir.path().display().to_string();
        let port = free_port();
        let shipped = fs::read_to_string(deploy_file("scale-out/nginx.conf")).unwrap();
        let mut conf = String::new();
        let mut servers = false;
        for line in shipped.lines() {
            if line.trim_start().starts_with("server replica-") {
                if !servers {
                    for p in replicas {
                        conf.push_str(&format!(
                            "    server 127.0.0.1:{p} max_fails=2 fail_timeout=10s;\n"
                        ));
                    }
                    servers = true;
                }
                continue;
            }
            if line.trim() == "listen 5000;" {
                conf.push_str(&format!("    listen 127.0.0.1:{port};\n"));
                continue;
            }
            conf.push_str(line);
            conf.push('\n');
        }
        assert!(servers, "the shipped nginx.conf names no replicas");
        fs::write(dir.path().join("entrepot.conf"), conf).unwrap();
        fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "user root;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/entrepot.conf;\n}}\n"
            ),
        )
        .unwrap();
        Nginx {
            _process: start_nginx(dir.path(), port),
            port,
            _dir: dir,
        }
    }
}

/// A replica whose `[shared]` tier is `garage` under `site-a`.
fn replica(reg: &Registry, garage: &Garage, secret_file: Option<&Path>) -> Mirror {
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let shared = garage.shared_section("site-a", secret_file);
    m.reconfigure(|cfg| format!("{cfg}{shared}"));
    m
}

/// Pulls `reference` from `host` with skopeo; returns the manifest's digest.
fn pull(host: &str, reference: &str, dest: &Path, all: bool) -> String {
    let _ = fs::remove_dir_all(dest);
    skopeo_pull(&format!("{host}/{reference}"), dest, all)
}

const REPOS: [&str; 3] = ["oci/app", "multi/arch", "many/layers"];

/// Pulls every image of [`REPOS`] by tag from `host`, checking digests.
fn pull_all(seed: &Seed, host: &str, dest: &Path) {
    for repo in REPOS {
        let img = seed.image(repo);
        let got = pull(
            host,
            &format!("{repo}:{}", img.tag),
            dest,
            repo == "multi/arch",
        );
        assert_eq!(got, img.digest, "{repo}");
    }
}

/// Upstream GETs of each blob of these images.
fn upstream_gets(reg: &Registry, seed: &Seed) -> Vec<(String, usize)> {
    REPOS
        .iter()
        .flat_map(|repo| {
            seed.image(repo)
                .blobs
                .iter()
                .map(move |(d, _)| (d.clone(), reg.count(&format!("\"GET /v2/{repo}/blobs/{d}"))))
        })
        .collect()
}

#[test]
fn replicas_share_a_tier_behind_nginx_and_survive_losing_a_replica_and_the_upstream() {
    let seed = seed();
    let mut reg = Registry::start(&seed.storage);
    let garage = Garage::start();
    let scratch_dir = scratch("scale");
    // Both forms of the secret: inline for two replicas, in a file for the third.
    let secret_file = scratch_dir.path().join("s3-secret");
    let mut replicas = [
        replica(&reg, &garage, None),
        replica(&reg, &garage, None),
        replica(&reg, &garage, Some(&secret_file)),
    ];
    let ports: Vec<u16> = replicas.iter().map(|m| m.port).collect();
    let nginx = Nginx::start(&ports);
    let front = format!("127.0.0.1:{}", nginx.port);
    let out = scratch_dir.path();

    // Through nginx: skopeo pulls arrive intact, and containerd's too.
    pull_all(seed, &front, &out.join("first"));
    let ctd = Containerd::start();
    let three = seed.image("team/project/app");
    let reference = format!("docker.io/team/project/app:{}", three.tag);
    let line = ctd.pull_line(&format!("http://{front}"), "docker.io", &reference);
    assert!(line.contains(&three.digest), "{line}");
    // Each blob came from the upstream once in the whole cluster, and every one of them is in
    // the bucket (written in the background), byte for byte.
    for (d, gets) in upstream_gets(&reg, seed) {
        assert_eq!(gets, 1, "{d} fetched {gets} times");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for repo in REPOS {
        for (d, _) in &seed.image(repo).blobs {
            let key = format!("site-a/blobs/sha256/{}", &d[7..]);
            loop {
                let (status, body) = garage.get(&key);
                if status == 200 {
                    assert_eq!(sha256(&body), *d);
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{key} never uploaded ({status}: {}); replica logs:\n{}",
                    String::from_utf8_lossy(&body),
                    replicas
                        .iter()
                        .map(Mirror::log_text)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
    assert_eq!(
        garage
            .get(&format!(
                "site-a/manifests/sha256/{}",
                &seed.image("oci/app").digest[7..]
            ))
            .0,
        200
    );

    // One replica goes: the others serve its share from the shared tier, with no new upstream
    // fetch.
    let before = upstream_gets(&reg, seed);
    replicas[1].kill9();
    pull_all(seed, &front, &out.join("second"));
    assert_eq!(
        upstream_gets(&reg, seed),
        before,
        "a blob was fetched again"
    );

    // A corrupted object is refused (never a complete body, never kept), then fetched from the
    // upstream, and put right in the bucket.
    let app = seed.image("oci/app");
    let (layer, size) = app.largest_blob();
    let key = format!("site-a/blobs/sha256/{}", &layer[7..]);
    let (_, mut bytes) = garage.get(&key);
    bytes[size as usize / 2] ^= 0x01;
    garage.put(&key, &bytes);
    let fresh = replica(&reg, &garage, None);
    let manifest = raw_request(
        fresh.port,
        "GET",
        &format!("/v2/oci/app/manifests/{}", app.tag),
        &[],
    );
    assert_eq!(manifest.status, 200);
    let path = format!("/v2/oci/app/blobs/{layer}");
    let first = stream_get(fresh.port, &path, &[]);
    assert!(
        !(first.status == 200 && first.complete()),
        "a corrupt shared copy was served whole"
    );
    fresh.wait_settled();
    assert!(!fresh.cached_files().contains(&layer));
    let second = stream_get(fresh.port, &path, &[]);
    assert!(second.complete() && second.digest == layer);
    eventually(
        std::time::Duration::from_secs(30),
        "the bucket kept the corrupt copy",
        || sha256(&garage.get(&key).1) == layer,
    );

    // The upstream goes: a new replica with an empty disk serves every image from the shared
    // tier, by tag and by digest.
    reg.stop();
    let new = replica(&reg, &garage, Some(&secret_file));
    let host = new.host();
    for repo in REPOS {
        let img = seed.image(repo);
        let all = repo == "multi/arch";
        let by_tag = pull(&host, &format!("{repo}:{}", img.tag), &out.join("tag"), all);
        assert_eq!(by_tag, img.digest, "{repo} by tag");
        let by_digest = pull(
            &host,
            &format!("{repo}@{}", img.digest),
            &out.join("digest"),
            all,
        );
        assert_eq!(by_digest, img.digest, "{repo} by digest");
    }
    drop(nginx);
}

/// The shared tier is a faster source of bytes, never a source of permission (issue 21). One
/// replica pulls `oci/app` (its layers and manifest land in the bucket); on a fresh replica, an
/// anonymous client who knows those digests asks for them under `library/busybox`, which the
/// upstream says has neither: 404 for both (before, the bucket served them whole). Under
/// `oci/app` the fresh replica serves them from the bucket, with no upstream GET. Tag records
/// written into the bucket by anyone without the replicas' signing key (unsigned, signed with
/// another key, or a genuine record moved to another name) are ignored and counted, while the
/// genuine one is served during an upstream outage.
#[test]
fn the_shared_tier_gives_bytes_never_permission() {
    let seed = seed();
    let mut reg = Registry::start(&seed.storage);
    let garage = Garage::start();
    let out = scratch("scale-permission");
    let first = replica(&reg, &garage, None);
    let app = seed.image("oci/app");
    let got = pull(
        &first.host(),
        &format!("oci/app:{}", app.tag),
        &out.path().join("a"),
        false,
    );
    assert_eq!(got, app.digest);
    let (layer, _) = app.largest_blob();
    let blob_key = format!("site-a/blobs/sha256/{}", &layer[7..]);
    let tag_key = format!("site-a/tags/docker.io/oci/app/{}", app.tag);
    eventually(
        std::time::Duration::from_secs(60),
        "the first replica's uploads never landed",
        || garage.get(&blob_key).0 == 200 && garage.get(&tag_key).0 == 200,
    );

    let fresh = replica(&reg, &garage, None);
    let under = |repo: &str, what: &str| {
        raw_request(fresh.port, "GET", &format!("/v2/{repo}/{what}"), &[]).status
    };
    assert_eq!(under("library/busybox", &format!("blobs/{layer}")), 404);
    assert_eq!(
        under("library/busybox", &format!("manifests/{}", app.digest)),
        404
    );
    let gets = reg.count(&format!("\"GET /v2/oci/app/blobs/{layer}"));
    let r = stream_get(fresh.port, &format!("/v2/oci/app/blobs/{layer}"), &[]);
    assert!(r.complete() && r.digest == layer);
    assert_eq!(
        reg.count(&format!("\"GET /v2/oci/app/blobs/{layer}")),
        gets,
        "the blob was fetched from the upstream, not the bucket"
    );

    let forged = format!("{}\n", app.digest);
    garage.put(
        "site-a/tags/docker.io/library/busybox/forged",
        forged.as_bytes(),
    );
    let other_key = format!("{}\nhmac-sha256={}\n", app.digest, "00".repeat(32));
    garage.put(
        "site-a/tags/docker.io/library/busybox/other-key",
        other_key.as_bytes(),
    );
    let (_, genuine) = garage.get(&tag_key);
    garage.put("site-a/tags/docker.io/library/busybox/moved", &genuine);
    reg.stop();
    let outage = replica(&reg, &garage, None);
    for tag in ["forged", "other-key", "moved"] {
        let r = raw_request(
            outage.port,
            "GET",
            &format!("/v2/library/busybox/manifests/{tag}"),
            &[],
        );
        assert_ne!(r.status, 200, "the bucket's {tag} tag was believed");
    }
    let r = raw_request(
        outage.port,
        "GET",
        &format!("/v2/oci/app/manifests/{}", app.tag),
        &[],
    );
    assert_eq!(r.status, 200, "the genuine signed tag was not served");
    let metrics = raw_request(outage.port, "GET", "/metrics", &[]);
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains(r#"entrepot_shared_requests_total{op="get_tag",result="unsigned"} 3"#),
        "{metrics}"
    );
}

#[test]
fn an_unreachable_shared_tier_degrades_to_upstream_fetches() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let dead = format!(
        "\n[shared]\nurl = \"s3://entrepot/site-a\"\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"garage\"\naccess_key_id = \"GK0\"\nsecret_access_key = \"x\"\nallow_http = true\n",
        free_port()
    );
    m.reconfigure(|cfg| format!("{cfg}{dead}"));
    let img = seed.image("oci/app");
    let out = scratch("scale-dead-tier");
    assert_eq!(
        pull(
            &m.host(),
            &format!("oci/app:{}", img.tag),
            &out.path().join("a"),
            false
        ),
        img.digest
    );
    assert!(
        m.log_text().contains("shared tier unavailable"),
        "{}",
        m.log_text()
    );
}
