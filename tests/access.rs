//! Who may pull (`[auth]`), with the real clients: skopeo with `--src-creds`, containerd's
//! `ctr images pull --user`, and dockerd after `docker login`, all to the mirror as a registry
//! over TLS with a private CA. The htpasswd files are written by Debian's `htpasswd -B`.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::auth::pki;
use support::*;

/// A TLS mirror with `[auth]`: anonymous clients may pull `library/**`, `ci` and `deploy`
/// everything; `bob` signs in but has no rule of his own.
struct Secured {
    m: Mirror,
    htpasswd: PathBuf,
    certs: tempfile::TempDir,
}

fn htpasswd(file: &Path, user: &str, password: &str) {
    let mut cmd = Command::new("htpasswd");
    if !file.exists() {
        cmd.arg("-c");
    }
    run(cmd.arg("-bB").arg(file).args([user, password]));
}

fn secured(reg: &Registry) -> Secured {
    secured_with(reg, "")
}

/// As [`secured`], with more `[server]` lines.
fn secured_with(reg: &Registry, server_extra: &str) -> Secured {
    let certs = scratch("access-certs");
    let htpw = certs.path().join("htpasswd");
    htpasswd(&htpw, "ci", "ci-pass");
    htpasswd(&htpw, "bob", "bob-pass");
    // skopeo's --cert-dir wants the CA as `*.crt` in a directory.
    fs::copy(&pki().ca_cert, certs.path().join("ca.crt")).unwrap();
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let (cert, key) = (&pki().server_cert, &pki().server_key);
    m.reconfigure(|cfg| {
        let cfg = cfg.replace(
            "[server]\n",
            &format!("[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\n{server_extra}"),
        );
        format!(
            "{cfg}\n[auth]\nhtpasswd = {htpw:?}\nrealm = \"test mirror\"\n\n[[auth.allow]]\nusers = [\"anonymous\"]\nrepositories = [\"docker.io/library/**\"]\n\n[[auth.allow]]\nusers = [\"ci\", \"deploy\"]\nrepositories = [\"docker.io/**\"]\n"
        )
    });
    Secured {
        m,
        htpasswd: htpw,
        certs,
    }
}

/// `curl` over TLS with the private CA: status and response headers.
fn curl(port: u16, path: &str, user: Option<&str>) -> (u16, String) {
    let mut args = vec!["-o", "/dev/null", "-D", "-"];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    let out = support::auth::curl_tls(port, path, &args);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out.to_ascii_lowercase())
}

fn skopeo(s: &Secured, reference: &str, creds: Option<&str>, dest: &Path) -> std::process::Output {
    Skopeo::pull(&format!("127.0.0.1:{}/{reference}", s.m.port), dest)
        .cert_dir(s.certs.path())
        .creds(creds)
        .output()
}

#[test]
fn rules_decide_who_pulls_what_and_htpasswd_changes_apply_at_once() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let s = secured(&reg);
    let port = s.m.port;
    let out = scratch("access-pulls");
    let public = seed.image("library/busybox");
    let private = seed.image("oci/app");

    // `GET /v2/` asks anonymous clients to sign in, and tells a user whether the credentials work.
    let (status, headers) = curl(port, "/v2/", None);
    assert_eq!(status, 401);
    assert!(
        headers.contains("www-authenticate: basic realm=\"test mirror\""),
        "{headers}"
    );
    assert_eq!(curl(port, "/v2/", Some("ci:ci-pass")).0, 200);
    assert_eq!(curl(port, "/v2/", Some("ci:wrong")).0, 401);

    // Anonymous pulls of allowed repositories work (empty credentials count as anonymous).
    let pulled = skopeo(
        &s,
        &format!("library/busybox:{}", public.tag),
        None,
        &out.path().join("a"),
    );
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert_eq!(
        sha256(&fs::read(out.path().join("a/manifest.json")).unwrap()),
        public.digest
    );
    // A private repository: 401 with the challenge without credentials, 403 for bob, and a
    // pull for ci.
    let path = format!("/v2/oci/app/manifests/{}", private.tag);
    let (status, headers) = curl(port, &path, None);
    assert_eq!(status, 401);
    assert!(headers.contains("www-authenticate: basic"), "{headers}");
    assert_eq!(curl(port, &path, Some("bob:bob-pass")).0, 403);
    let refused = skopeo(
        &s,
        &format!("oci/app:{}", private.tag),
        None,
        &out.path().join("b"),
    );
    assert!(!refused.status.success());
    let pulled = skopeo(
        &s,
        &format!("oci/app:{}", private.tag),
        Some("ci:ci-pass"),
        &out.path().join("c"),
    );
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert_eq!(
        sha256(&fs::read(out.path().join("c/manifest.json")).unwrap()),
        private.digest
    );
    // The private layer is cached now, but not readable through a repository anonymous
    // clients may pull: the upstream is asked there, and has no such blob.
    let (layer, _) = private.largest_blob();
    assert!(s.m.wait_cached(&layer));
    assert_eq!(
        curl(port, &format!("/v2/library/busybox/blobs/{layer}"), None).0,
        404
    );
    assert_eq!(
        curl(port, &format!("/v2/oci/app/blobs/{layer}"), None).0,
        401
    );
    // Lists show only what the caller may pull.
    assert_eq!(curl(port, "/v2/oci/app/tags/list", None).0, 401);
    let catalog = |user: &str| {
        let out = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(&pki().ca_cert)
            .args(["-u", user])
            .arg(format!("https://127.0.0.1:{port}/v2/_catalog"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(catalog("ci:ci-pass").contains("oci/app"));
    let bobs = catalog("bob:bob-pass");
    assert!(
        bobs.contains("library/busybox") && !bobs.contains("oci/app"),
        "{bobs}"
    );

    // `deploy` has a rule but no password yet; adding one to the file works without a restart.
    assert_eq!(curl(port, &path, Some("deploy:d-pass")).0, 401);
    htpasswd(&s.htpasswd, "deploy", "d-pass");
    eventually(
        std::time::Duration::from_secs(15),
        "the new htpasswd was not picked up",
        || curl(port, &path, Some("deploy:d-pass")).0 == 200,
    );

    // A burst of wrong passwords is answered, and slowed down past the first few.
    for _ in 0..7 {
        assert_eq!(curl(port, "/v2/", Some("ci:guess")).0, 401);
    }
    let metrics = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&pki().ca_cert)
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let throttled = metrics
        .lines()
        .find(|l| l.starts_with("entrepot_auth_failures_total{reason=\"throttled\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .unwrap();
    assert!(throttled >= 4.0, "{metrics}");
    // The log names the user, and never a password.
    let log = s.m.log_text();
    assert!(log.contains("user=ci"), "{log}");
    assert!(!log.contains("ci-pass") && !log.contains("Basic "));
}

/// A guesser that abandons each guess after 0.35 s (as a fast guessing tool does) gets no faster
/// answers than one that waits: past a burst of failures, every attempt from the address waits
/// its turn before it is checked, even with the right password, and a flood is refused
/// unchecked with 429. Before, only wrong answers were slowed: a right guess came back at once.
#[test]
fn a_guesser_waits_its_turn_before_each_guess_is_checked() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let s = secured(&reg);
    let port = s.m.port;
    let quick = |creds: &str| {
        let out = support::auth::curl_tls(
            port,
            "/v2/",
            &[
                "--max-time",
                "0.35",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-u",
                creds,
            ],
        );
        out.trim().parse::<u16>().unwrap_or(0)
    };
    for i in 0..12 {
        assert_ne!(quick(&format!("ci:guess{i}")), 200);
    }
    assert_ne!(
        quick("ci:ci-pass"),
        200,
        "the right password was checked at once after a burst of guesses"
    );
    // Another name from the same address waits as well.
    assert_ne!(quick("bob:bob-pass"), 200);
    // Many guesses at once: past the queue's bound they are refused unchecked.
    let flood: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                support::auth::curl_tls(
                    port,
                    "/v2/",
                    &["-o", "/dev/null", "-D", "-", "-u", &format!("ci:flood{i}")],
                )
            })
        })
        .collect();
    let answers: Vec<String> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    let refused = answers
        .iter()
        .find(|a| a.starts_with("HTTP/1.1 429") || a.starts_with("HTTP/2 429"));
    let refused = refused.unwrap_or_else(|| panic!("no 429 in {answers:?}"));
    assert!(
        refused.to_ascii_lowercase().contains("retry-after:"),
        "{refused}"
    );
    assert!(answers.iter().all(|a| !a.contains(" 200")), "{answers:?}");
    // The right password, patiently: in once its turn comes, and remembered after that.
    eventually(
        std::time::Duration::from_secs(90),
        "the right password never got its turn",
        || curl(port, "/v2/", Some("ci:ci-pass")).0 == 200,
    );
    assert_eq!(quick("ci:ci-pass"), 200);
}

/// A user removed from the htpasswd file is refused within moments, even when the file is
/// rewritten with its old mtime (compared by content now), and a deleted file signs everyone
/// out. skopeo pulls with the credentials before and after.
#[test]
fn a_removed_user_is_signed_out_however_the_file_changes() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let s = secured(&reg);
    let out = scratch("access-removed");
    let private = seed.image("oci/app");
    let reference = format!("oci/app:{}", private.tag);
    let pull = |creds: &str, to: &str| skopeo(&s, &reference, Some(creds), &out.path().join(to));
    let pulled = pull("ci:ci-pass", "a");
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert!(!pull("bob:bob-pass", "b").status.success());

    // `htpasswd -D`, then the old mtime put back (as a restore from backup or `cp -p` would).
    let before = fs::metadata(&s.htpasswd).unwrap().modified().unwrap();
    run(Command::new("htpasswd")
        .arg("-D")
        .arg(&s.htpasswd)
        .arg("ci"));
    fs::File::options()
        .write(true)
        .open(&s.htpasswd)
        .unwrap()
        .set_modified(before)
        .unwrap();
    eventually(
        std::time::Duration::from_secs(20),
        "ci still signs in after htpasswd -D with the mtime kept",
        || curl(s.m.port, "/v2/", Some("ci:ci-pass")).0 == 401,
    );
    assert!(!pull("ci:ci-pass", "c").status.success());
    assert_eq!(curl(s.m.port, "/v2/", Some("bob:bob-pass")).0, 200);

    fs::remove_file(&s.htpasswd).unwrap();
    eventually(
        std::time::Duration::from_secs(20),
        "bob still signs in with the htpasswd file gone",
        || curl(s.m.port, "/v2/", Some("bob:bob-pass")).0 == 401,
    );
    assert!(s.m.log_text().contains("htpasswd file is gone"));
}

/// Under `[auth]`, `/metrics` on the client port answers anyone (Prometheus scrapes without
/// credentials): `[server] metrics_listen` moves it to an address of its own, and the client
/// port answers 404 for it. A `metrics_listen` equal to `listen` is refused at start-up, naming
/// the key.
#[test]
fn metrics_listen_keeps_metrics_off_the_client_port() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let metrics_port = free_port();
    let s = secured_with(
        &reg,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let (status, _) = curl(s.m.port, "/metrics", None);
    assert_eq!(status, 404, "/metrics is still on the client port");
    wait_for_port(metrics_port, "the metrics listener");
    let r = raw_request(metrics_port, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("entrepot_requests_total"));
    assert_eq!(raw_request(metrics_port, "GET", "/readyz", &[]).status, 200);
    assert_eq!(raw_request(metrics_port, "GET", "/v2/", &[]).status, 404);

    let dir = scratch("metrics-listen");
    let p = dir.path().join("c.toml");
    fs::write(
        &p,
        "[server]\nlisten = \"127.0.0.1:5000\"\nmetrics_listen = \"127.0.0.1:5000\"\n[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["check-config", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.metrics_listen"));
}

#[test]
fn containerd_and_dockerd_sign_in_to_the_mirror() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let s = secured(&reg);
    let host = format!("127.0.0.1:{}", s.m.port);
    let private = seed.image("oci/app");
    let reference = format!("{host}/oci/app:{}", private.tag);

    // containerd: `ctr images pull --user`, trusting the CA through its hosts directory.
    let ctd = Containerd::start();
    let hosts = scratch("access-hosts");
    let dir = hosts.path().join(&host);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {:?}\n",
            pki().ca_cert
        ),
    )
    .unwrap();
    let pull = |user: Option<&str>| {
        let mut cmd = ctd.ctr();
        cmd.args(["images", "pull", "--hosts-dir"])
            .arg(hosts.path());
        if let Some(u) = user {
            cmd.args(["--user", u]);
        }
        cmd.arg(&reference).output().unwrap()
    };
    assert!(
        !pull(None).status.success(),
        "an anonymous pull of a private repository"
    );
    let pulled = pull(Some("ci:ci-pass"));
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let list = run(ctd.ctr().args(["images", "ls"]));
    let line = list
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains(&private.digest), "{line}");

    // dockerd: `docker login` to the mirror as a registry, the CA in /etc/docker/certs.d.
    let certs_d = PathBuf::from("/etc/docker/certs.d").join(&host);
    fs::create_dir_all(&certs_d).unwrap();
    fs::copy(&pki().ca_cert, certs_d.join("ca.crt")).unwrap();
    let dockerd = Dockerd::start(&ctd, serde_json::json!({}));
    let client_config = scratch("access-docker-config");
    let docker = || {
        let mut c = dockerd.docker();
        c.env("DOCKER_CONFIG", client_config.path());
        c
    };
    let login = |password: &str| {
        let mut child = docker()
            .args(["login", &host, "-u", "ci", "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let wrong = login("nope");
    let right = login("ci-pass");
    let pulled = docker().args(["pull", &reference]).output().unwrap();
    let digests = docker()
        .args([
            "image",
            "inspect",
            &reference,
            "--format",
            "{{json .RepoDigests}}",
        ])
        .output()
        .unwrap();
    drop(dockerd);
    let _ = fs::remove_dir_all(&certs_d);
    assert!(!wrong.status.success(), "a wrong password signed in");
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert!(String::from_utf8_lossy(&digests.stdout).contains(&private.digest));
}

/// A client certificate for `cn`, signed by `ca` (the test CA unless another is given).
fn client_cert(dir: &Path, cn: &str, ca: Option<(&Path, &Path)>) -> (PathBuf, PathBuf) {
    let (key, csr, cert) = (
        dir.join(format!("{cn}.key")),
        dir.join(format!("{cn}.csr")),
        dir.join(format!("{cn}.crt")),
    );
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj"])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let test_ca_key = pki().dir.join("ca.key");
    let (ca_cert, ca_key) = ca.unwrap_or((&pki().ca_cert, &test_ca_key));
    // A v3 certificate for client authentication (webpki refuses v1 ones).
    let ext = dir.join("client.ext");
    fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(ca_cert)
        .arg("-CAkey")
        .arg(ca_key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

#[test]
fn a_client_certificate_from_client_ca_names_the_user() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let ca = format!("client_ca = {:?}\n", pki().ca_cert);
    let s = secured_with(&reg, &ca);
    let dir = scratch("access-mtls");
    let private = seed.image("oci/app");
    let path = format!("/v2/oci/app/manifests/{}", private.tag);
    let with_cert = |cert: &(PathBuf, PathBuf)| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&pki().ca_cert)
            .arg("--cert")
            .arg(&cert.0)
            .arg("--key")
            .arg(&cert.1)
            .arg(format!("https://127.0.0.1:{}{path}", s.m.port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(with_cert(&client_cert(dir.path(), "ci", None)), "200");
    assert_eq!(with_cert(&client_cert(dir.path(), "bob", None)), "403");
    // No certificate: HTTP authentication as before.
    assert_eq!(curl(s.m.port, &path, None).0, 401);
    assert_eq!(curl(s.m.port, &path, Some("ci:ci-pass")).0, 200);
    // A certificate from another CA fails the handshake.
    let other_key = dir.path().join("other-ca.key");
    let other_ca = dir.path().join("other-ca.crt");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=other-ca",
            "-keyout",
        ])
        .arg(&other_key)
        .arg("-out")
        .arg(&other_ca));
    let foreign = client_cert(dir.path(), "mallory", Some((&other_ca, &other_key)));
    assert_eq!(with_cert(&foreign), "000");
    let log = s.m.log_text();
    assert!(log.contains("user=ci"));
    // The refused handshake has its line, naming the peer.
    assert!(log.contains("TLS handshake failed"), "{log}");
    // A common name that would forge fields in the log line is written quoted.
    assert_eq!(
        with_cert(&client_cert(dir.path(), "ci user=root", None)),
        "403"
    );
    let log = s.m.log_text();
    assert!(log.contains(r#"user="ci user=root""#), "{log}");
    assert!(!log.contains("user=ci user=root"), "{log}");
}

/// dockerd cannot send credentials to a `registry-mirrors` entry, and gives up on a mirror whose
/// `GET /v2/` asks for them (it falls back to Docker Hub, unreachable here). With
/// `anonymous_ping = true` and an anonymous rule for what nodes pull through it, it pulls.
#[test]
fn dockerd_pulls_through_registry_mirrors_with_anonymous_ping() {
    let seed = seed();
    let img = seed.image("library/busybox");
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let dir = scratch("access-dockerd-mirror");
    let htpw = dir.path().join("htpasswd");
    htpasswd(&htpw, "ci", "ci-pass");
    let auth = |ping: bool| {
        format!(
            "\n[auth]\nhtpasswd = {htpw:?}\nanonymous_ping = {ping}\n\n[[auth.allow]]\nusers = [\"anonymous\"]\nrepositories = [\"docker.io/library/**\"]\n"
        )
    };
    let base = fs::read_to_string(&m.config).unwrap();
    m.reconfigure(|cfg| format!("{cfg}{}", auth(false)));
    let ctd = Containerd::start();
    let dockerd = Dockerd::with_shipped_mirror(&ctd, &m.url());
    let refused = dockerd.pull("busybox");
    m.reconfigure(|_| format!("{base}{}", auth(true)));
    let pulled = dockerd.pull("busybox");
    let digests = dockerd.repo_digests("busybox");
    drop(dockerd);
    assert!(
        !refused.status.success(),
        "dockerd answered a Basic challenge"
    );
    assert!(
        pulled.status.success(),
        "{}{}",
        String::from_utf8_lossy(&pulled.stderr),
        m.log_text()
    );
    assert!(String::from_utf8_lossy(&digests.stdout).contains(&img.digest));
    // Anonymous clients still get nothing else, and signed-in users still sign in.
    let anonymous = raw_request(m.port, "GET", "/v2/oci/app/manifests/v1", &[]);
    assert_eq!(anonymous.status, 401);
    assert!(reg.count("\"GET /v2/library/busybox/blobs/") > 0);
}
