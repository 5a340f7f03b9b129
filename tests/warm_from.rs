//! `warm --from` (issue 25, "warm from what will run"): a connected side reads the images out of
//! a `helm template`-style multi-document file (init and ephemeral containers, a CronJob, a
//! List, the `helm.sh/images` annotation) and a Compose file, `--dry-run` says what it found and
//! where and warms nothing, the warm and an export carry them, and an air-gapped side serves them
//! to skopeo with the right digests. A real `docker-registry` upstream.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::io::Write as _;
use std::process::{Command, Stdio};

use support::*;

#[test]
fn warm_from_a_chart_and_a_compose_file_then_serve_them_air_gapped() {
    let seed = seed();
    let busybox = seed.image("library/busybox");
    let app = seed.image("oci/app");
    let three = seed.image("team/project/app");
    let multi = seed.image("multi/arch");
    let many = seed.image("many/layers");
    let reg = Registry::start(&seed.storage);
    let site = Site::new("warm-from", &reg.url(), "");
    let chart = site.path("chart.yaml");
    fs::write(
        &chart,
        format!(
            r#"---
# Source: site/templates/web.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    helm.sh/images: |
      - name: helper
        image: team/project/app:v1
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: oci/app:v1
      containers:
        - name: web
          image: busybox
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: job
              image: "multi/arch:v1@{}"
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata:
      name: debug
    spec:
      containers:
        - name: shell
          image: docker.io/library/busybox:latest
      ephemeralContainers:
        - name: dbg
          image: many/layers:v1
---
apiVersion: v1
kind: Service
metadata:
  name: web
"#,
            multi.digest
        ),
    )
    .unwrap();
    let compose = site.path("compose.yaml");
    fs::write(
        &compose,
        "services:\n  db:\n    image: oci/app:v1\n  builder:\n    build: .\n",
    )
    .unwrap();

    // --dry-run: every image with where it came from, the skipped documents said, nothing warmed.
    let out = site.run(&[
        "warm",
        "--dry-run",
        "--from",
        chart.to_str().unwrap(),
        "--from",
        compose.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let said = String::from_utf8_lossy(&out.stderr);
    for (image, from) in [
        (
            "docker.io/oci/app:v1",
            "document 1, Deployment/web, initContainers migrate",
        ),
        (
            "docker.io/team/project/app:v1",
            "document 1, Deployment/web, annotation helm.sh/images",
        ),
        (
            "docker.io/library/busybox:latest",
            "document 1, Deployment/web, containers web",
        ),
        (
            &format!("docker.io/multi/arch@{}", multi.digest),
            "document 2, CronJob/nightly, containers job",
        ),
        (
            "docker.io/many/layers:v1",
            "document 3, item 1, Pod/debug, ephemeralContainers dbg",
        ),
        (
            "docker.io/oci/app:v1",
            "compose.yaml, document 1, service db",
        ),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("{image} ")) && l.contains(from)),
            "no {image} from {from}:\n{table}"
        );
    }
    assert!(
        said.contains("Service/web runs no containers: skipped"),
        "{said}"
    );
    assert!(said.contains("service builder: no image"), "{said}");
    assert!(said.contains("5 images found (7 references)"), "{said}");
    assert!(site.blobs().is_empty(), "--dry-run fetched something");

    // A YAML mistake names the file and line, and nothing is warmed.
    let bad = site.path("bad.yaml");
    fs::write(&bad, "kind: Pod\nspec:\n  containers: [\n").unwrap();
    let refused = site.fails(&["warm", "--from", bad.to_str().unwrap()]);
    assert!(refused.contains("bad.yaml: line"), "{refused}");
    assert!(site.blobs().is_empty());

    // The warm itself, the compose file from standard input; each image once.
    let mut child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .arg("--config")
        .arg(&site.config)
        .args(["warm", "--from", chart.to_str().unwrap(), "--from", "-"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&fs::read(&compose).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        table.lines().filter(|l| l.ends_with(" ok")).count(),
        5,
        "{table}"
    );
    assert_eq!(
        reg.count(&format!("\"GET /v2/oci/app/blobs/{}", app.largest_blob().0)),
        1
    );

    let archive = site.path("site.tar");
    site.ok(&["export", "-o", archive.to_str().unwrap(), "--all"]);
    let far = Site::air_gapped("warm-from-far");
    far.ok(&["import", archive.to_str().unwrap()]);
    let mut m = Mirror::of(&[Up::default("docker.io", "http://127.0.0.1:9".into())])
        .offline()
        .start();
    m.kill9();
    fs::remove_dir_all(&m.cache_dir).unwrap();
    fs::rename(far.cache(), &m.cache_dir).unwrap();
    m.restart();
    let pulls = scratch("warm-from-pulls");
    let pull = |reference: &str, all: bool| {
        let o = pulls.path().join(reference.replace(['/', ':', '@'], "_"));
        skopeo_pull(&format!("{}/{reference}", m.host()), &o, all)
    };
    assert_eq!(pull("library/busybox:latest", false), busybox.digest);
    assert_eq!(pull("oci/app:v1", false), app.digest);
    assert_eq!(pull("team/project/app:v1", false), three.digest);
    assert_eq!(pull("many/layers:v1", false), many.digest);
    assert_eq!(
        pull(&format!("multi/arch@{}", multi.digest), true),
        multi.digest
    );
}
