//! The real clients our users point at the mirror: containerd (`ctr` with a `hosts.toml`, whose
//! requests carry `?ns=<registry>`) and dockerd (`registry-mirrors`). Both run as root with all
//! their state in temp dirs; with no network here, a pull can only succeed through the mirror.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::process::Command;

use support::images::Rng;
use support::*;

#[test]
fn containerd_pulls_a_non_default_registry_through_hosts_toml() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let empty = scratch("empty-storage");
    let other = Registry::start(empty.path());
    // The default upstream holds nothing: the pull works only if `?ns=quay.io` picks `quay.io`.
    let mirror = Mirror::of(&[
        Up::default("docker.io", other.url()),
        Up::new("quay.io", reg.url()),
    ])
    .start();
    let ctd = Containerd::start();
    for repo in ["team/project/app", "multi/arch", "many/layers"] {
        let img = seed.image(repo);
        let reference = format!("quay.io/{repo}:{}", img.tag);
        let line = ctd.pull_line(&mirror.url(), "quay.io", &reference);
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
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let ctd = Containerd::start();
    // The shipped daemon.json with the mirror's address.
    let dockerd = Dockerd::with_shipped_mirror(&ctd, &mirror.url());
    let pulled = dockerd.pull("busybox");
    let inspect = dockerd.repo_digests("busybox");
    // Stop dockerd with SIGTERM so it unmounts its root, whatever happened.
    drop(dockerd);
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
    // containerd with the shipped `certs.d/docker.io/hosts.toml` pulls Docker Hub names through
    // the same mirror.
    let reference = format!("docker.io/library/busybox:{}", img.tag);
    let line = ctd.pull_line(&mirror.url(), "docker.io", &reference);
    assert!(line.contains(&img.digest), "{line}");
}

/// skopeo (and podman, which reads the same file) with the shipped `registries.conf`, the
/// mirror's address put in: `docker.io/...` resolves through the mirror's `docker.io` upstream
/// (there is no network to reach the real one).
#[test]
fn skopeo_pulls_through_the_shipped_registries_conf() {
    let seed = seed();
    let img = seed.image("oci/app");
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
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

/// `deploy/docker/`: the image builds with dockerd's classic builder from the context
/// `build-context.sh` makes (`FROM scratch`: no base image to pull), runs as a non-root user
/// with `--network host`, and serves a pull through it.
#[test]
fn the_container_image_builds_runs_as_non_root_and_serves_pulls() {
    use std::os::unix::fs::PermissionsExt as _;
    let seed = seed();
    let img = seed.image("oci/app");
    let reg = Registry::start(&seed.storage);
    let ctd = Containerd::start();
    let dockerd = Dockerd::start(&ctd, serde_json::json!({}));
    let context = scratch("image-context");
    run(Command::new("bash")
        .arg(deploy_file("docker/build-context.sh"))
        .arg(env!("CARGO_BIN_EXE_entrepot"))
        .arg(context.path()));
    let tag = "entrepot-test:latest";
    let built = dockerd
        .docker()
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", tag, "-f"])
        .arg(context.path().join("Dockerfile"))
        .arg(context.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    // Its config: the shipped one's shape, listening on a free port, upstream the test registry.
    let port = free_port();
    let config = scratch("image-config");
    fs::write(
        config.path().join("config.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[cache]\ndir = \"/var/cache/entrepot\"\n\n\
             [[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ndefault = true\n",
            reg.url()
        ),
    )
    .unwrap();
    fs::set_permissions(config.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        config.path().join("config.toml"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let name = format!("entrepot-test-{port}");
    let started = dockerd
        .docker()
        .args(["run", "-d", "--network", "host", "--name", &name, "-v"])
        .arg(format!("{}:/etc/entrepot:ro", config.path().display()))
        .arg(tag)
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    wait_for_port(port, "the entrepot container");
    let pid = String::from_utf8(
        dockerd
            .docker()
            .args(["inspect", "--format", "{{.State.Pid}}", &name])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65532"),
        "not running as the image's non-root user: {uid}"
    );
    let out = scratch("image-pull");
    let digest = skopeo_pull(
        &format!("127.0.0.1:{port}/oci/app:{}", img.tag),
        &out.path().join("p"),
        false,
    );
    let logs = dockerd.docker().args(["logs", &name]).output().unwrap();
    let _ = dockerd.docker().args(["rm", "-f", &name]).output();
    assert_eq!(
        digest,
        img.digest,
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
}

/// podman as a real client (Debian's 4.3; issue 23): with the shipped `registries.conf` (the
/// path-form mirror `mirror/docker.io`) named by `CONTAINERS_REGISTRIES_CONF`, its own
/// `--root`/`--runroot`, `vfs` storage, `cgroupfs` and no events, it pulls `docker.io/oci/app`
/// through the mirror by tag and by digest (there is no network to reach the real Docker Hub).
#[test]
fn podman_pulls_through_the_shipped_registries_conf_by_tag_and_by_digest() {
    let seed = seed();
    let img = seed.image("oci/app");
    let reg = Registry::start(&seed.storage);
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let dir = scratch("podman");
    let conf = dir.path().join("registries.conf");
    let shipped = fs::read_to_string(deploy_file("clients/podman/registries.conf")).unwrap();
    fs::write(&conf, with_mirror(&shipped, &mirror.url())).unwrap();
    // podman refuses a runroot longer than 50 characters: a short one under /tmp.
    let runroot = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(runroot.path())
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            mirror.log_text()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let by_tag = format!("docker.io/oci/app:{}", img.tag);
    podman(&["pull", "-q", &by_tag]);
    assert_eq!(
        podman(&["image", "inspect", "--format", "{{.Digest}}", &by_tag]),
        img.digest
    );
    podman(&["rmi", "-a", "-f"]);
    let by_digest = format!("docker.io/oci/app@{}", img.digest);
    podman(&["pull", "-q", &by_digest]);
    assert_eq!(
        podman(&["image", "inspect", "--format", "{{.Digest}}", &by_digest]),
        img.digest
    );
    assert!(reg.count("\"GET /v2/oci/app/manifests/") > 0);
}

/// podman's partial pulls of zstd:chunked images, through the mirror (issue 23). Debian's podman
/// 4.3 pushes zstd:chunked (`--compression-format zstd:chunked`) and, with overlay storage and
/// `enable_partial_images`, pulls it by asking for the chunks of the files it lacks in one
/// multi-range request. The first pull asks for every file's chunks (back to back: the mirror
/// must answer a part per range, else containers/image says "invalid number of chunks returned
/// by the server" and downloads the whole layer again); the second, of an image with one file
/// added, fetches little more than that file. Both layers are checked file by file.
#[test]
fn podman_pulls_zstd_chunked_images_partially_through_the_mirror() {
    let storage = scratch("zstd-storage");
    let reg = Registry::start_with(storage.path(), "", None);
    let mirror = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let dir = scratch("zstd-podman");
    let conf = dir.path().join("registries.conf");
    let shipped = fs::read_to_string(deploy_file("clients/podman/registries.conf")).unwrap();
    fs::write(&conf, with_mirror(&shipped, &mirror.url())).unwrap();
    // Two podman stores, on overlay (partial pulls need it): the builder's, which pushes to the
    // registry, and the puller's. podman refuses a runroot longer than 50 characters.
    let runroots = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let storage_confs: Vec<_> = (0..2)
        .map(|who| {
            let path = dir.path().join(format!("storage{who}.conf"));
            let text = format!(
                "[storage]\ndriver = \"overlay\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n\
                 [storage.options]\npull_options = {{enable_partial_images = \"true\", \
                 use_hard_links = \"false\", ostree_repos = \"\"}}\n",
                runroots[who].path().display(),
                dir.path().join(format!("root{who}")).display()
            );
            fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let podman = |who: usize, args: &[&str]| {
        let out = Command::new("podman")
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env("CONTAINERS_STORAGE_CONF", &storage_confs[who])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "podman {args:?}: {stderr}\n{}",
            mirror.log_text()
        );
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            stderr,
        )
    };
    let ctx = dir.path().join("context");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY f* /data/\n").unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut file = |name: &str| {
        let mut bytes = vec![0u8; 200_000];
        rng.fill(&mut bytes);
        fs::write(ctx.join(name), &bytes).unwrap();
    };
    for i in 0..40 {
        file(&format!("f{i:02}"));
    }
    let push = |tag: &str| {
        let local = format!("127.0.0.1:{}/zs/app:{tag}", reg.port);
        podman(0, &["build", "-q", "-t", &local, &ctx.to_string_lossy()]);
        podman(
            0,
            &[
                "push",
                "-q",
                "--tls-verify=false",
                "--compression-format",
                "zstd:chunked",
                &local,
            ],
        );
    };
    push("v1");
    file("f40");
    push("v2");
    // What the mirror sent of a layer: the bytes of its 206 answers.
    let served = |layer: &str| -> u64 {
        mirror
            .log_text()
            .lines()
            .filter(|l| l.contains("status=206") && l.contains(layer))
            .filter_map(|l| {
                l.split(" bytes=")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let mut layers = Vec::new();
    for tag in ["v1", "v2"] {
        let r = raw_request(
            reg.port,
            "GET",
            &format!("/v2/zs/app/manifests/{tag}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        );
        let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let layer = &m["layers"][0];
        assert!(
            layer["annotations"]["io.containers.zstd-chunked.manifest-position"].is_string(),
            "podman pushed zstd:chunked: {m}"
        );
        let (digest, size) = (
            layer["digest"].as_str().unwrap().to_owned(),
            layer["size"].as_u64().unwrap(),
        );
        let name = format!("docker.io/zs/app:{tag}");
        let (_, log) = podman(1, &["--log-level", "debug", "pull", "-q", &name]);
        assert!(
            log.contains(&format!("Retrieved partial blob {digest}")),
            "podman pulled {tag} whole, not partially:\n{}",
            log.lines()
                .filter(|l| l.contains("partial") || l.contains("chunk"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let (root, _) = podman(1, &["image", "mount", &name]);
        for i in 0..if tag == "v1" { 40 } else { 41 } {
            let f = format!("f{i:02}");
            assert!(
                fs::read(std::path::Path::new(&root).join("data").join(&f)).unwrap()
                    == fs::read(ctx.join(&f)).unwrap(),
                "{tag}: /data/{f}"
            );
        }
        podman(1, &["image", "umount", &name]);
        layers.push((digest, size));
    }
    let (v1, v2) = (&layers[0], &layers[1]);
    assert!(served(&v1.0) >= 40 * 200_000, "{}", served(&v1.0));
    // The one new file and the layer's table of contents, not the 41 files again.
    assert!(
        served(&v2.0) < v2.1 / 4,
        "v2: {} of {} bytes sent",
        served(&v2.0),
        v2.1
    );
}
