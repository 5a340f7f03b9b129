//! Operating the mirror (issue 9): TLS on the listener, with its certificate rotated under load.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::auth::pki;
use support::*;

/// A server certificate for 127.0.0.1 signed by the test CA, with `org` in its subject so a test
/// can tell which one is served.
fn issue_cert(dir: &Path, org: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pki = pki();
    let (key, csr, cert) = (
        dir.join(format!("{org}.key")),
        dir.join(format!("{org}.csr")),
        dir.join(format!("{org}.crt")),
    );
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj"])
        .arg(format!("/CN=127.0.0.1/O={org}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-CAcreateserial", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&pki.ca_cert)
        .arg("-CAkey")
        .arg(pki.dir.join("ca.key"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// The subject of the certificate the mirror presents to a new connection.
fn served_subject(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | openssl s_client -connect 127.0.0.1:{port} 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One request over TLS with curl, trusting only the test CA: (status, HTTP version).
fn curl(port: u16, path: &str, http2: bool) -> (String, String) {
    let protocol = if http2 { "--http2" } else { "--http1.1" };
    let text = support::auth::curl_tls(
        port,
        path,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            protocol,
        ],
    );
    let (status, version) = text.split_once(' ').unwrap_or((&text, ""));
    (status.to_owned(), version.to_owned())
}

/// TLS on the listener, HTTP/2 by ALPN; the certificate files replaced under load are picked up
/// without a restart: new connections get the new certificate, and no request fails.
#[test]
fn tls_certificates_rotate_under_load() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let dir = scratch("tls");
    let (first_cert, first_key) = issue_cert(dir.path(), "first");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    m.reconfigure(|cfg| {
        cfg.replace(
            "[server]\n",
            &format!(
                "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
        )
    });
    assert_eq!(curl(m.port, "/v2/", false), ("200".into(), "1.1".into()));
    assert_eq!(curl(m.port, "/v2/", true), ("200".into(), "2".into()));
    assert!(
        served_subject(m.port).contains("first"),
        "{}",
        served_subject(m.port)
    );
    let (digest, _) = seed.image("oci/app").largest_blob();
    let path = format!("/v2/oci/app/blobs/{digest}");
    assert_eq!(curl(m.port, &path, false).0, "200");

    // Load: new connections all the time, over both protocols.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2)
        .map(|i| {
            let (stop, done, failed, path, port) = (
                stop.clone(),
                done.clone(),
                failed.clone(),
                path.clone(),
                m.port,
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = curl(port, &path, i == 1);
                    if status != "200" {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Rotate as cert-manager does: new files renamed into place, the certificate first.
    let (next_cert, next_key) = issue_cert(dir.path(), "rotated");
    let swap = |from: &Path, to: &Path| {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    };
    swap(&next_cert, &cert);
    swap(&next_key, &key);
    eventually(
        Duration::from_secs(15),
        "the new certificate was never served",
        || served_subject(m.port).contains("rotated"),
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 10, "too little load");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during rotation"
    );
    assert!(m.log_text().contains("TLS certificate reloaded"));

    // A pair that does not load stops start-up, naming the keys.
    std::fs::write(&key, "not a key").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["check-config", "--config"])
        .arg(&m.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls_cert/tls_key"));
}

/// `deploy/systemd/entrepot.service` passes `systemd-analyze verify` (with `ExecStart` pointing
/// at the binary under test, as an install would put it at /usr/local/bin).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy_file("systemd/entrepot.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/entrepot serve"));
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=entrepot",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(hardening), "no {hardening:?}");
    }
    let dir = scratch("systemd");
    let path = dir.path().join("entrepot.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/entrepot", env!("CARGO_BIN_EXE_entrepot")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("entrepot.service:"), "{said}");
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy_file("prometheus"))
        .output()
        .expect("promtool (Debian package prometheus) must be installed");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `deploy/prometheus/`: the scrape config and the alert rules check, and each alert fires on
/// exactly the series its unit test gives (`promtool test rules`).
#[test]
fn the_prometheus_rules_check_and_fire_as_tested() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "entrepot.rules.yml"]);
    promtool(&["test", "rules", "entrepot.rules.test.yml"]);
    // Every metric the rules name is one the mirror exports.
    let exported = exported_metrics();
    let rules = std::fs::read_to_string(deploy_file("prometheus/entrepot.rules.yml")).unwrap();
    // The expressions, not the prose of the annotations.
    let exprs: String = rules
        .lines()
        .filter(|l| !l.contains("description:") && !l.contains("summary:"))
        .collect::<Vec<_>>()
        .join("\n");
    for name in metric_names(&exprs) {
        assert!(
            exported.contains(&format!("\n{name}"))
                || exported.contains(&format!("# TYPE {name} ")),
            "the rules use {name}, which the mirror does not export"
        );
    }
}

/// What a fresh mirror's `/metrics` says after serving one manifest.
fn exported_metrics() -> String {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    raw_request(m.port, "GET", "/v2/oci/app/manifests/v1", &[]);
    String::from_utf8(raw_request(m.port, "GET", "/metrics", &[]).body).unwrap()
}

/// Every `entrepot_*` metric name in a text (rules, dashboards).
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("entrepot_"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    assert!(!names.is_empty());
    names
}

/// A real Prometheus with `deploy/prometheus/prometheus.yml` (the target address replaced)
/// scrapes the mirror, and its API shows the mirror's series.
#[test]
fn prometheus_scrapes_the_mirror() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let dir = scratch("prometheus");
    let config = std::fs::read_to_string(deploy_file("prometheus/prometheus.yml")).unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        config.replace("localhost:5000", &format!("127.0.0.1:{}", m.port)),
    )
    .unwrap();
    std::fs::copy(
        deploy_file("prometheus/entrepot.rules.yml"),
        dir.path().join("entrepot.rules.yml"),
    )
    .unwrap();
    let port = free_port();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian package prometheus) must be installed");
    wait_for_port(port, "prometheus");
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let r = raw_request(
            port,
            "GET",
            "/api/v1/query?query=entrepot_build_info%7Bjob%3D%22entrepot%22%7D",
            &[],
        );
        let body = String::from_utf8_lossy(&r.body).to_string();
        if body.contains("\"version\"") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(
        found.contains("\"version\""),
        "no entrepot series in Prometheus: {found}"
    );
}

/// `deploy/grafana/entrepot.json` is a dashboard whose every expression names only metrics the
/// mirror exports (and each of those at least once in a panel).
#[test]
fn the_grafana_dashboard_uses_only_exported_metrics() {
    let text = std::fs::read_to_string(deploy_file("grafana/entrepot.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned()),
        );
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    let exported = exported_metrics();
    for name in metric_names(&exprs.join("\n")) {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_count")
            .trim_end_matches("_sum");
        assert!(
            exported.contains(&format!("# TYPE {base} ")),
            "the dashboard uses {name}, which the mirror does not export"
        );
    }
}

/// Every document under `deploy/kubernetes/`, parsed (by PyYAML) into JSON.
fn kubernetes_documents() -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import glob, json, sys, yaml\n\
             docs = [d for f in sorted(glob.glob(sys.argv[1] + '/*.yaml')) for d in yaml.safe_load_all(open(f)) if d]\n\
             print(json.dumps(docs))",
        ])
        .arg(deploy_file("kubernetes"))
        .output()
        .expect("python3 with PyYAML (Debian package python3-yaml) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `deploy/kubernetes/`: the kinds a site needs, names and labels that refer to each other
/// correctly, probes on the health endpoints, and the embedded config accepted by `check-config`
/// (with the Secret's credentials where the config expects them).
#[test]
fn the_kubernetes_manifests_hold_together() {
    let docs = kubernetes_documents();
    let of = |kind: &str| -> &serde_json::Value {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let (cm, secret, sts, svc, mon) = (
        of("ConfigMap"),
        of("Secret"),
        of("StatefulSet"),
        of("Service"),
        of("ServiceMonitor"),
    );
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    let spec = &sts["spec"];
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], labels);
    assert_eq!(spec["serviceName"], svc["metadata"]["name"]);
    assert_eq!(&svc["spec"]["selector"], labels);
    assert_eq!(
        &mon["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    );
    let container = &pod["containers"][0];
    let port_name = container["ports"][0]["name"].as_str().unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port_name);
    assert_eq!(
        mon["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    // Volumes: each mount is a declared volume or claim, and they name the ConfigMap and Secret.
    let volumes = pod["volumes"].as_array().unwrap();
    let claims = spec["volumeClaimTemplates"].as_array().unwrap();
    let mount_of = |name: &str| -> String {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("volume {name} is not mounted"))["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for m in container["volumeMounts"].as_array().unwrap() {
        let n = &m["name"];
        assert!(
            volumes.iter().any(|v| &v["name"] == n)
                || claims.iter().any(|c| &c["metadata"]["name"] == n),
            "mount {n} has no volume"
        );
    }
    let config_volume = volumes.iter().find(|v| v["configMap"].is_object()).unwrap();
    assert_eq!(config_volume["configMap"]["name"], cm["metadata"]["name"]);
    let secret_volume = volumes.iter().find(|v| v["secret"].is_object()).unwrap();
    assert_eq!(
        secret_volume["secret"]["secretName"],
        secret["metadata"]["name"]
    );

    // The config: where the pod mounts things is where the config looks for them.
    let config = cm["data"]["config.toml"].as_str().unwrap();
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let config_dir = mount_of(config_volume["name"].as_str().unwrap());
    assert_eq!(config_path, format!("{config_dir}/config.toml"));
    let cache_dir = mount_of(claims[0]["metadata"]["name"].as_str().unwrap());
    assert!(
        config.contains(&format!("dir = \"{cache_dir}\"")),
        "{config}"
    );
    let secret_dir = mount_of(secret_volume["name"].as_str().unwrap());
    let docker_config = format!("{secret_dir}/.dockerconfigjson");
    assert!(config.contains(&docker_config), "{config}");

    // check-config accepts it, with the Secret's content where the pod would have it.
    use base64::Engine as _;
    let dir = scratch("kubernetes");
    let creds = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let creds_path = dir.path().join("dockerconfigjson");
    std::fs::write(&creds_path, creds).unwrap();
    let local = config.replace(&docker_config, &creds_path.display().to_string());
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["check-config", "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Said as coming from the docker config, not as if set on the upstream (issue 24).
    assert!(
        shown.contains("from [credentials] docker_config (username \"robot\")"),
        "{shown}"
    );
    assert!(!shown.contains("example-password"), "{shown}");
}
