//! Docker Hub's own flow, end to end (issue 23): the registry at `registry-1.docker.io`, its
//! token realm on the sibling host `auth.docker.io`, `library/` names, and `docker.io` as the
//! name clients use, with the shipped `config.toml` changed in nothing but `ca_cert`.
//!
//! Two names in one domain resolve here: the mirror runs in a private mount namespace whose
//! `/etc/hosts` (bind-mounted) maps `registry-1.docker.io` and `auth.docker.io` to two loopback
//! addresses, where a real `docker-registry` (token auth, TLS) and the token service (behind a
//! real nginx for TLS) listen on port 443 with certificates for those names from a private CA.
//! Real skopeo, ctr and dockerd pull `busybox` by its short names.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::auth::{ISSUER, TokenService, pki};
use support::*;

/// Where the two Docker Hub names live in the test.
const REGISTRY_IP: &str = "127.0.1.2";
const AUTH_IP: &str = "127.0.1.3";
/// Docker Hub's service name, as its registry's challenge gives it.
const SERVICE: &str = "registry.docker.io";

/// A certificate for both Docker Hub names, signed by the test CA.
fn hub_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let p = pki();
    let (key, csr, cert, ext) = (
        dir.join("hub.key"),
        dir.join("hub.csr"),
        dir.join("hub.crt"),
        dir.join("hub.ext"),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=registry-1.docker.io",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    fs::write(
        &ext,
        "subjectAltName=DNS:registry-1.docker.io,DNS:auth.docker.io\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-CAcreateserial", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&p.ca_cert)
        .arg("-CAkey")
        .arg(p.dir.join("ca.key"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// `auth.docker.io:443`: nginx terminating TLS in front of the token service. It listens on a
/// port of 127.0.0.1 too, which `start_nginx` waits for.
fn auth_front(dir: &Path, cert: &Path, key: &Path, ts: &TokenService) -> NginxProcess {
    let local = free_port();
    fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\nerror_log stderr;\npid nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  server {{\n    listen {AUTH_IP}:443 ssl;\n    listen 127.0.0.1:{local} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    location / {{ proxy_pass http://127.0.0.1:{}; }}\n  }}\n}}\n",
            cert.display(),
            key.display(),
            ts.port
        ),
    )
    .unwrap();
    let nginx = start_nginx(dir, local);
    wait_for_address(AUTH_IP, 443, "nginx for auth.docker.io");
    nginx
}

#[test]
fn the_shipped_config_pulls_from_docker_hub_by_short_name() {
    let seed = seed();
    let img = seed.image("library/busybox");
    let dir = scratch("dockerhub");
    let (cert, key) = hub_certificate(dir.path());
    let ts = TokenService::start();
    let _auth = auth_front(dir.path(), &cert, &key, &ts);
    // registry-1.docker.io:443, with Docker Hub's challenge: Bearer, realm on auth.docker.io.
    let yaml = format!(
        "  tls:\n    certificate: {}\n    key: {}\nauth:\n  token:\n    realm: https://auth.docker.io/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        cert.display(),
        key.display(),
        pki().token_cert.display()
    );
    let reg = Registry::start_on(&seed.storage, &yaml, REGISTRY_IP, 443);
    let hosts = dir.path().join("hosts");
    fs::write(
        &hosts,
        format!(
            "127.0.0.1 localhost\n{REGISTRY_IP} registry-1.docker.io\n{AUTH_IP} auth.docker.io\n"
        ),
    )
    .unwrap();
    let ca = pki().ca_cert.display().to_string();
    let mirror = Mirror::shipped(
        |shipped| {
            let changed = shipped.replacen(
                "url = \"https://registry-1.docker.io\"",
                &format!("url = \"https://registry-1.docker.io\"\nca_cert = \"{ca}\""),
                1,
            );
            assert_ne!(
                changed, shipped,
                "the shipped config names registry-1.docker.io"
            );
            changed
        },
        &hosts,
    );

    // skopeo, `docker.io/busybox`: the client adds `library/`.
    let out = scratch("dockerhub-skopeo");
    let digest = Skopeo::pull(
        &format!("{}/busybox:{}", mirror.host(), img.tag),
        &out.path().join("a"),
    )
    .try_digest();
    assert_eq!(
        digest.as_deref(),
        Ok(img.digest.as_str()),
        "{}",
        mirror.log_text()
    );
    assert!(reg.count("\"GET /v2/library/busybox/manifests/") > 0);
    let tokens = ts.seen.lock().unwrap().clone();
    assert!(
        tokens
            .iter()
            .any(|t| t.scopes.iter().any(|s| s.contains("library/busybox"))),
        "no token for library/busybox was asked of auth.docker.io: {tokens:?}"
    );
    assert!(
        tokens.iter().all(|t| !t.had_authorization),
        "no credentials are configured: none may be sent"
    );

    // dockerd with the shipped daemon.json: `docker pull busybox`.
    let ctd = Containerd::start();
    let dockerd = Dockerd::with_shipped_mirror(&ctd, &mirror.url());
    let pulled = dockerd.pull("busybox");
    let inspect = dockerd.repo_digests("busybox");
    drop(dockerd);
    assert!(
        pulled.status.success(),
        "docker pull busybox failed: {}{}",
        String::from_utf8_lossy(&pulled.stdout),
        String::from_utf8_lossy(&pulled.stderr)
    );
    let digests = String::from_utf8_lossy(&inspect.stdout);
    assert!(digests.contains(&img.digest), "{digests}");

    // ctr with the shipped hosts.toml: `docker.io/library/busybox`.
    let reference = format!("docker.io/library/busybox:{}", img.tag);
    let line = ctd.pull_line(&mirror.url(), "docker.io", &reference);
    assert!(line.contains(&img.digest), "{line}");
}
