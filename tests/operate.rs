//! Operating the mirror (issue 9): TLS on the listener, with its certificate rotated under load.

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
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--cacert",
        ])
        .arg(&pki().ca_cert)
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
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
    let mut m = Mirror::start(&[Up::default("docker.io", reg.url())], "");
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
    let rotated_at = Instant::now();
    while !served_subject(m.port).contains("rotated") {
        assert!(
            rotated_at.elapsed() < Duration::from_secs(15),
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
