//! The real clients our users point at the mirror: containerd (`ctr` with a `hosts.toml`, whose
//! requests carry `?ns=<registry>`) and dockerd (`registry-mirrors`). Both run as root with all
//! their state in temp dirs; with no network here, a pull can only succeed through the mirror.

mod support;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn containerd_pulls_a_non_default_registry_through_hosts_toml() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let empty = scratch("empty-storage");
    let other = Registry::start(empty.path());
    // The default upstream holds nothing: the pull works only if `?ns=quay.io` picks `quay.io`.
    let mirror = Mirror::start(
        &[
            Up::default("docker.io", other.url()),
            Up::new("quay.io", reg.url()),
        ],
        "",
    );
    let ctd = Containerd::start();
    for repo in ["team/project/app", "multi/arch", "many/layers"] {
        let img = seed.image(repo);
        let reference = format!("quay.io/{repo}:{}", img.tag);
        let list = ctd.pull_through(&mirror.url(), "quay.io", &reference);
        let line = list
            .lines()
            .find(|l| l.starts_with(&reference))
            .unwrap_or_else(|| panic!("{reference} not in {list}"));
        assert!(line.contains(&img.digest), "{line}");
    }
    // Everything came through the mirror's `quay.io` upstream, none through the default.
    assert!(reg.count("\"GET /v2/team/project/app/blobs/") > 0);
    assert_eq!(other.count("GET /v2/team"), 0);
}

#[test]
fn dockerd_pulls_through_registry_mirrors() {
    let seed = seed();
    let img = seed.image("library/busybox");
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::start(&[Up::default("docker.io", reg.url())], "");
    let ctd = Containerd::start();
    let dir = tempfile::Builder::new()
        .prefix("dkd")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path().display();
    let sock = format!("{d}/docker.sock");
    let pidfile = format!("{d}/docker.pid");
    // The shipped daemon.json with the mirror's address, plus what keeps this dockerd in its
    // sandbox.
    let shipped = fs::read_to_string(deploy_file("clients/docker/daemon.json")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&with_mirror(&shipped, &mirror.url())).unwrap();
    let sandbox = serde_json::json!({
        "iptables": false,
        "bridge": "none",
        "storage-driver": "vfs",
        "data-root": format!("{d}/root"),
        "exec-root": format!("{d}/exec"),
        "pidfile": pidfile,
        "hosts": [format!("unix://{sock}")],
        "containerd": ctd.socket,
    });
    for (k, v) in sandbox.as_object().unwrap() {
        config[k] = v.clone();
    }
    fs::write(dir.path().join("daemon.json"), config.to_string()).unwrap();
    let log = fs::File::create(dir.path().join("dockerd.log")).unwrap();
    let mut dockerd = Command::new("dockerd")
        .arg("--config-file")
        .arg(dir.path().join("daemon.json"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("dockerd (Debian package docker.io) must be installed");
    let host = format!("unix://{sock}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Command::new("docker")
        .args(["-H", &host, "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "dockerd did not start: {}",
            fs::read_to_string(dir.path().join("dockerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pulled = Command::new("docker")
        .args(["-H", &host, "pull", "busybox"])
        .output()
        .unwrap();
    let inspect = Command::new("docker")
        .args([
            "-H",
            &host,
            "image",
            "inspect",
            "busybox",
            "--format",
            "{{json .RepoDigests}}",
        ])
        .output()
        .unwrap();
    // Stop dockerd with SIGTERM so it unmounts its root, whatever happened.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(dockerd.id().to_string())
        .status();
    let _ = dockerd.wait();
    assert!(
        pulled.status.success(),
        "docker pull failed: {}{}",
        String::from_utf8_lossy(&pulled.stdout),
        String::from_utf8_lossy(&pulled.stderr)
    );
    let digests = String::from_utf8_lossy(&inspect.stdout);
    assert!(digests.contains(&img.digest), "{digests}");
    // dockerd HEADs the tag, then GETs by digest: the mirror asked the upstream once for the
    // manifest bytes and cached every blob.
    mirror.wait_settled();
    let cached = mirror.cached_files();
    for (b, _) in &img.blobs {
        assert!(cached.contains(b));
    }
    assert!(reg.count("\"GET /v2/library/busybox/blobs/") >= img.blobs.len());
}

/// skopeo (and podman, which reads the same file) with the shipped `registries.conf`, the
/// mirror's address put in: `docker.io/...` resolves through the mirror's `docker.io` upstream
/// (there is no network to reach the real one).
#[test]
fn skopeo_pulls_through_the_shipped_registries_conf() {
    let seed = seed();
    let img = seed.image("oci/app");
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::start(&[Up::default("docker.io", reg.url())], "");
    let dir = scratch("registries-conf");
    // skopeo 1.9 reads only /etc/containers: give it its own, in a private mount namespace, with
    // the shipped registries.conf (and the machine's policy.json).
    let etc = dir.path().join("etc-containers");
    fs::create_dir_all(&etc).unwrap();
    let shipped = fs::read_to_string(deploy_file("clients/podman/registries.conf")).unwrap();
    fs::write(
        etc.join("registries.conf"),
        with_mirror(&shipped, &mirror.url()),
    )
    .unwrap();
    fs::copy("/etc/containers/policy.json", etc.join("policy.json")).unwrap();
    // A pull (mirrors serve pulls; `inspect` asks the registry itself).
    let digest_file = dir.path().join("digest");
    let script = format!(
        "mount --bind {} /etc/containers && skopeo copy --digestfile {} docker://docker.io/oci/app:{} oci:{}",
        etc.display(),
        digest_file.display(),
        img.tag,
        dir.path().join("layout").display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mirror.log_text()
    );
    assert_eq!(fs::read_to_string(&digest_file).unwrap().trim(), img.digest);
    assert!(
        reg.count("\"GET /v2/oci/app/manifests/") + reg.count("\"HEAD /v2/oci/app/manifests/") > 0
    );
}
