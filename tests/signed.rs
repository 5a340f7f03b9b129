//! `import --require-signature` (issue 25, "let in only what is signed"): an air-gapped side
//! loads an archive only if every image in it carries a cosign signature by a trusted key, and
//! loads nothing of an archive holding one unsigned image, one signed by another key, or one
//! whose signature is over another digest; `warm --require-signature` keeps an unsigned image
//! out of the connected side's cache; `[cache] require_signature` makes `serve` itself refuse
//! (403 DENIED) an image it cannot verify, while skopeo, ctr and dockerd pull the signed one.
//!
//! cosign is not packaged for this machine, so the signatures are made here as cosign makes
//! them (sigstore/cosign `specs/SIGNATURE_SPEC.md`): a key pair from Python's `cryptography`
//! (ECDSA P-256; the public key as a PKIX `PUBLIC KEY` PEM, as `cosign generate-key-pair`
//! writes `cosign.pub`), a simple-signing payload naming the image's digest in
//! `critical.image.docker-manifest-digest`, its ASN.1 DER signature over SHA-256 in the layer
//! annotation `dev.cosignproject.cosign/signature` (base64), the layer of media type
//! `application/vnd.dev.cosign.simplesigning.v1+json`, in an OCI manifest pushed under the tag
//! `sha256-<hex>.sig`. A real `docker-registry` upstream; skopeo pulls from the far side.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::*;

const SIGNER: &str = r#"
import base64, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
if sys.argv[1] == "keygen":
    k = ec.generate_private_key(ec.SECP256R1())
    open(sys.argv[2], "wb").write(k.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    open(sys.argv[3], "wb").write(k.public_key().public_bytes(serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo))
else:
    k = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
    sig = k.sign(open(sys.argv[3], "rb").read(), ec.ECDSA(hashes.SHA256()))
    sys.stdout.write(base64.b64encode(sig).decode())
"#;

/// A key pair: (private key file, public key file).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let script = dir.join("signer.py");
    fs::write(&script, SIGNER).unwrap();
    let (private, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    run(Command::new("python3")
        .arg(&script)
        .arg("keygen")
        .arg(&private)
        .arg(&public));
    let pem = fs::read_to_string(&public).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    (private, public)
}

/// Pushes a cosign signature of `subject` (in `repo`) whose payload names `signed` (the subject
/// itself, unless a test lies), signed with `key`.
fn sign(port: u16, dir: &Path, key: &Path, repo: &str, subject: &str, signed: &str) {
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": format!("127.0.0.1:{port}/{repo}")},
            "image": {"docker-manifest-digest": signed},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string();
    let payload_file = dir.join("payload.json");
    fs::write(&payload_file, &payload).unwrap();
    let sig = run(Command::new("python3")
        .arg(dir.join("signer.py"))
        .arg("sign")
        .arg(key)
        .arg(&payload_file));
    let layer = push_blob(port, repo, payload.as_bytes());
    let config = b"{}";
    let config_digest = push_blob(port, repo, config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": layer,
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": sig},
        }],
    })
    .to_string();
    let tag = format!("sha256-{}.sig", &subject[7..]);
    push_manifest(
        port,
        repo,
        &tag,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );
}

#[test]
fn only_images_signed_by_a_trusted_key_are_let_in() {
    let seed = seed();
    let app = seed.image("oci/app");
    let busybox = seed.image("library/busybox");
    let three = seed.image("team/project/app");
    let storage = storage_copy();
    let reg = Registry::start(storage.path());
    let keys = scratch("signed-keys");
    let (ours, ours_pub) = keygen(keys.path(), "ours");
    let (theirs, _) = keygen(keys.path(), "theirs");
    sign(
        reg.port,
        keys.path(),
        &ours,
        "oci/app",
        &app.digest,
        &app.digest,
    );
    sign(
        reg.port,
        keys.path(),
        &theirs,
        "library/busybox",
        &busybox.digest,
        &busybox.digest,
    );
    // Signed with our key, but the payload names another image.
    sign(
        reg.port,
        keys.path(),
        &ours,
        "team/project/app",
        &three.digest,
        &app.digest,
    );

    let connected = Site::new("signed-src", &reg.url(), "");
    connected.ok(&[
        "warm",
        "oci/app:v1",
        "busybox",
        "team/project/app:v1",
        "multi/arch:v1",
    ]);
    let export = |name: &str, images: &[&str]| {
        let path = connected.path(name);
        let mut args = vec!["export", "-o", path.to_str().unwrap()];
        args.extend(images);
        connected.ok(&args);
        path
    };
    let good = export("good.tar", &["oci/app:v1"]);
    let key = ours_pub.to_str().unwrap();

    // warm --require-signature on the connected side: an unsigned image fails, and nothing of
    // it stays in the cache, so it can never reach an archive.
    let strict = Site::new("signed-warm", &reg.url(), "");
    let out = strict.run(&[
        "warm",
        "--require-signature",
        key,
        "oci/app:v1",
        "multi/arch:v1",
    ]);
    assert!(!out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("not signed: it has no cosign signature; nothing of it is kept"),
        "{table}"
    );
    let ls = strict.ok(&["ls"]);
    assert!(ls.contains("docker.io/oci/app:v1"), "{ls}");
    assert!(!ls.contains("multi/arch"), "{ls}");
    let held = strict.blobs();
    for (b, _) in &seed.image("multi/arch").blobs {
        assert!(!held.contains(&b[7..].to_owned()), "{b} stayed");
    }
    let cases = [
        (
            export("unsigned.tar", &["oci/app:v1", "multi/arch:v1"]),
            "docker.io/multi/arch:v1 is not signed: it has no cosign signature",
        ),
        (
            export("other-key.tar", &["oci/app:v1", "busybox"]),
            "docker.io/library/busybox:latest is not signed: none of its 1 signatures is by a trusted key",
        ),
        (
            export("other-image.tar", &["oci/app:v1", "team/project/app:v1"]),
            &format!(
                "docker.io/team/project/app:v1 is not signed: its signature is over {}, another image",
                app.digest
            ),
        ),
    ];
    for (archive, why) in &cases {
        let far = Site::air_gapped("signed-refused");
        let refused = far.fails(&[
            "import",
            archive.to_str().unwrap(),
            "--require-signature",
            key,
        ]);
        assert!(refused.contains(why), "{refused}");
        assert!(refused.contains("nothing was loaded"), "{refused}");
        assert!(far.blobs().is_empty(), "{:?}", far.blobs());
        assert_eq!(far.temp_files(), 0);
    }

    // --skip-unsigned loads the signed image and names the one left out.
    let far = Site::air_gapped("signed-skip");
    let said = far.ok(&[
        "import",
        cases[0].0.to_str().unwrap(),
        "--require-signature",
        key,
        "--skip-unsigned",
    ]);
    assert!(
        said.contains("left out docker.io/multi/arch:v1: it has no cosign signature"),
        "{said}"
    );
    let ls = far.ok(&["ls"]);
    assert!(ls.contains("docker.io/oci/app:v1"), "{ls}");
    assert!(!ls.contains("multi/arch"), "{ls}");

    // A bad key file is named; the key given in the config works as the flag does; the signed
    // archive loads and is served, its signature with it.
    let junk = keys.path().join("junk.pub");
    fs::write(&junk, "not a key\n").unwrap();
    let far = Site::air_gapped("signed-ok");
    let refused = far.fails(&[
        "import",
        good.to_str().unwrap(),
        "--require-signature",
        junk.to_str().unwrap(),
    ]);
    assert!(
        refused.contains("signing key") && refused.contains("junk.pub"),
        "{refused}"
    );
    let config = fs::read_to_string(&far.config).unwrap().replace(
        "offline = true",
        &format!(
            "offline = true\nimport_keys = [{:?}]",
            ours_pub.display().to_string()
        ),
    );
    fs::write(&far.config, config).unwrap();
    far.ok(&["import", good.to_str().unwrap()]);
    let row = far
        .ok(&["ls"])
        .lines()
        .find(|l| l.starts_with("docker.io/oci/app:v1"))
        .map(str::to_owned)
        .unwrap();
    assert!(row.trim_end().ends_with('1'), "{row}");
    let refused = far.fails(&["import", cases[0].0.to_str().unwrap()]);
    assert!(refused.contains("multi/arch:v1 is not signed"), "{refused}");
    let bad_config = fs::read_to_string(&far.config)
        .unwrap()
        .replace(&ours_pub.display().to_string(), junk.to_str().unwrap());
    fs::write(&far.config, bad_config).unwrap();
    let refused = far.fails(&["check-config"]);
    assert!(refused.contains("cache.import_keys[0]"), "{refused}");
    let bad_config = fs::read_to_string(&far.config)
        .unwrap()
        .replace("import_keys", "require_signature");
    fs::write(&far.config, bad_config).unwrap();
    let refused = far.fails(&["check-config"]);
    assert!(
        refused.contains("cache.require_signature[0]") && refused.contains("junk.pub"),
        "{refused}"
    );

    let mut m = Mirror::of(&[Up::default("docker.io", "http://127.0.0.1:9".into())])
        .offline()
        .start();
    m.kill9();
    let beside = Site {
        dir: scratch("signed-serve"),
        config: m.config.clone(),
    };
    beside.ok(&["import", good.to_str().unwrap(), "--require-signature", key]);
    // An unsigned image beside it, imported without keys.
    beside.ok(&["import", cases[0].0.to_str().unwrap()]);
    // [cache] require_signature: serve itself refuses what it cannot verify, offline too.
    m.reconfigure(|c| {
        c.replacen(
            "[cache]\n",
            &format!("[cache]\nrequire_signature = [{key:?}]\n"),
            1,
        )
    });
    let out = scratch("signed-pull");
    assert_eq!(
        skopeo_pull(
            &format!("{}/oci/app:v1", m.host()),
            &out.path().join("a"),
            false
        ),
        app.digest
    );
    let r = raw_request(m.port, "GET", "/v2/multi/arch/manifests/v1", &[]);
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 403, "{body}");
    assert!(
        body.contains("DENIED")
            && body.contains("require_signature")
            && body.contains("it has no cosign signature"),
        "{body}"
    );
    let metrics =
        String::from_utf8_lossy(&raw_request(m.port, "GET", "/metrics", &[]).body).into_owned();
    assert!(
        metrics.contains("entrepot_signature_refusals_total 1"),
        "{metrics}"
    );
    // The signature itself is served (cosign verify reads it through the mirror).
    let sig = format!("/v2/oci/app/manifests/sha256-{}.sig", &app.digest[7..]);
    assert_eq!(raw_request(m.port, "GET", &sig, &[]).status, 200);
    // ctr and dockerd pull the signed image from the air-gapped side, by its digest.
    let ctd = Containerd::start();
    let reference = format!("docker.io/oci/app:{}", app.tag);
    let line = ctd.pull_line(&m.url(), "docker.io", &reference);
    assert!(line.contains(&app.digest), "{line}");
    let dockerd = Dockerd::with_shipped_mirror(&ctd, &m.url());
    let pulled = dockerd.pull(&format!("oci/app:{}", app.tag));
    let inspect = dockerd.repo_digests(&format!("oci/app:{}", app.tag));
    let refused = dockerd.pull("multi/arch:v1");
    drop(dockerd);
    assert!(
        pulled.status.success(),
        "docker pull failed: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert!(
        String::from_utf8_lossy(&inspect.stdout).contains(&app.digest),
        "{}",
        String::from_utf8_lossy(&inspect.stdout)
    );
    assert!(
        !refused.status.success(),
        "dockerd pulled an unsigned image"
    );
}
