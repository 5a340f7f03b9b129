//! What the cache holds, as an operator sees it (issue 24): images pulled by digest are listed
//! and exported like tagged ones; archives that name images the short ways skopeo and umoci
//! write import (with `--name` where they name none); and `ls`, `rm`, `gc` and `export` work
//! beside a running `serve`, through its admin socket. Real skopeo and umoci, a real
//! `docker-registry` upstream.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use support::*;

/// A Site running commands on a mirror's own config and cache.
fn beside(m: &Mirror) -> Site {
    Site {
        dir: scratch("inventory-cmds"),
        config: m.config.clone(),
    }
}

/// The row of `ls` for `name` (its first column), if listed.
fn row<'a>(ls: &'a str, name: &str) -> Option<&'a str> {
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

/// Kubernetes pulls digest-pinned images by digest, and `warm name@sha256:...` is the README's
/// own example: both kinds are listed by `ls`, go into `export --all`, and are served by digest
/// on the air-gapped side.
#[test]
fn images_pulled_by_digest_are_listed_exported_and_served_air_gapped() {
    let seed = seed();
    let app = seed.image("oci/app");
    let multi = seed.image("multi/arch");
    let three = seed.image("team/project/app");
    let reg = Registry::start(&seed.storage);
    let mut m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let dest = scratch("inventory-pulled");
    let by_digest = |repo: &str, digest: &str, all: bool| {
        let out = dest.path().join(repo.replace('/', "_"));
        skopeo_pull(&format!("{}/{repo}@{digest}", m.host()), &out, all)
    };
    assert_eq!(by_digest("oci/app", &app.digest, false), app.digest);
    assert_eq!(by_digest("multi/arch", &multi.digest, true), multi.digest);
    m.wait_settled();
    m.kill9();
    let site = beside(&m);
    site.ok(&["warm", &format!("team/project/app@{}", three.digest)]);

    let ls = site.ok(&["ls"]);
    for (repo, image) in [
        ("oci/app", app),
        ("multi/arch", multi),
        ("team/project/app", three),
    ] {
        let name = format!("docker.io/{repo}@{}", image.digest);
        let r = row(&ls, &name).unwrap_or_else(|| panic!("{name} not listed:\n{ls}"));
        assert!(!r.contains("incomplete"), "{r}");
    }
    assert!(
        row(&ls, &format!("docker.io/multi/arch@{}", multi.digest))
            .unwrap()
            .contains("linux/amd64,linux/arm64")
    );
    // The index's platform manifests are part of it, not images of their own.
    for child in &multi.children {
        assert!(!ls.contains(&format!("@{child}")), "{ls}");
    }
    assert!(ls.contains("3 images"), "{ls}");

    let archive = site.path("digests.tar");
    let said = site.ok(&["export", "-o", archive.to_str().unwrap(), "--all"]);
    assert!(said.contains("exported 3 images"), "{said}");

    // The air-gapped side runs the shipped deploy/airgap/config.toml, its listen address and
    // cache directory put in: upstreams are names alone.
    let mut gapped = Mirror::of(&[Up::default("docker.io", "http://127.0.0.1:9".into())])
        .offline()
        .start();
    let shipped = fs::read_to_string(deploy_file("airgap/config.toml")).unwrap();
    let cache_dir = gapped.cache_dir.clone();
    gapped.reconfigure(|cfg| {
        let listen = cfg.lines().find(|l| l.starts_with("listen = ")).unwrap();
        let shipped = shipped.replace("listen = \"0.0.0.0:5000\"", listen);
        assert!(shipped.contains("dir = \"/var/lib/entrepot\""));
        shipped.replace(
            "dir = \"/var/lib/entrepot\"",
            &format!("dir = {:?}", cache_dir.display().to_string()),
        )
    });
    assert!(
        !fs::read_to_string(&gapped.config)
            .unwrap()
            .contains("url =")
    );
    gapped.kill9();
    let far = beside(&gapped);
    far.ok(&["import", archive.to_str().unwrap()]);
    let ls = far.ok(&["ls"]);
    assert!(
        row(&ls, &format!("docker.io/oci/app@{}", app.digest)).is_some(),
        "{ls}"
    );
    gapped.restart();
    // The start-up line says how the mirror runs (issue 24).
    let started = gapped.log_text();
    let line = started
        .lines()
        .find(|l| l.contains("entrepot listening"))
        .unwrap();
    for said in [
        "offline=true",
        "tls=false",
        "client_certificates=false",
        "auth=false",
        "max_size=20GiB",
    ] {
        assert!(line.contains(said), "no {said} in {line}");
    }
    let out = scratch("inventory-far");
    let pull = |repo: &str, digest: &str, all: bool| {
        let o = out.path().join(repo.replace('/', "_"));
        skopeo_pull(&format!("{}/{repo}@{digest}", gapped.host()), &o, all)
    };
    assert_eq!(pull("oci/app", &app.digest, false), app.digest);
    assert_eq!(pull("multi/arch", &multi.digest, true), multi.digest);
    assert_eq!(pull("team/project/app", &three.digest, false), three.digest);

    // `rm` of one digest image leaves the others whole.
    gapped.kill9();
    far.ok(&["rm", &format!("docker.io/oci/app@{}", app.digest)]);
    let ls = far.ok(&["ls"]);
    assert!(!ls.contains(&app.digest), "{ls}");
    let r = row(&ls, &format!("docker.io/multi/arch@{}", multi.digest)).unwrap();
    assert!(!r.contains("incomplete"), "{r}");
}

/// `skopeo copy ... oci-archive:x.tar:busybox:1.36` writes the short name dockerd reads as
/// docker.io/library/busybox:1.36; `oci:DIR:TAG` and umoci write a tag alone, which needs
/// `--name` to say whose it is; `--name NAME:TAG` names a layout of one image and is refused
/// for more.
#[test]
fn import_reads_short_names_and_name_says_whose_a_bare_tag_is() {
    let seed = seed();
    let busybox = seed.image("library/busybox");
    let app = seed.image("oci/app");
    let reg = Registry::start(&seed.storage);
    let mut gapped = Mirror::of(&[Up::default("docker.io", "http://127.0.0.1:9".into())])
        .offline()
        .start();
    gapped.kill9();
    let site = beside(&gapped);
    let skopeo_copy = |from: &str, to: String| {
        run(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--preserve-digests"])
            .arg(format!("docker://127.0.0.1:{}/{from}", reg.port))
            .arg(to));
    };

    // A short name, as skopeo writes it.
    let short = site.path("short.tar");
    skopeo_copy(
        "library/busybox:latest",
        format!("oci-archive:{}:busybox:1.36", short.display()),
    );
    let said = site.ok(&["import", short.to_str().unwrap()]);
    assert!(said.contains("imported 1 images"), "{said}");
    assert!(
        row(&site.ok(&["ls"]), "docker.io/library/busybox:1.36").is_some(),
        "{}",
        site.ok(&["ls"])
    );

    // Two images named by tags alone (`oci:DIR:TAG`), in one layout.
    let dir = site.path("bare");
    skopeo_copy("oci/app:v1", format!("oci:{}:v1", dir.display()));
    skopeo_copy(
        "library/busybox:latest",
        format!("oci:{}:v2", dir.display()),
    );
    let refused = site.fails(&["import", dir.to_str().unwrap()]);
    assert!(refused.contains("give --name REPOSITORY"), "{refused}");
    assert!(refused.contains("nothing was loaded"), "{refused}");
    let refused = site.fails(&[
        "import",
        dir.to_str().unwrap(),
        "--name",
        "docker.io/org/app:x",
    ]);
    assert!(
        refused.contains("names a layout of one image, and this one holds 2"),
        "{refused}"
    );
    site.ok(&[
        "import",
        dir.to_str().unwrap(),
        "--name",
        "docker.io/org/app",
    ]);
    let ls = site.ok(&["ls"]);
    assert!(row(&ls, "docker.io/org/app:v1").is_some(), "{ls}");
    assert!(row(&ls, "docker.io/org/app:v2").is_some(), "{ls}");

    // umoci's own layout (a tag alone), named whole.
    let umoci = site.path("umoci");
    run(Command::new("umoci").args(["init", "--layout"]).arg(&umoci));
    run(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:latest", umoci.display())));
    let refused = site.fails(&["import", umoci.to_str().unwrap()]);
    assert!(refused.contains("give --name"), "{refused}");
    site.ok(&[
        "import",
        umoci.to_str().unwrap(),
        "--name",
        "docker.io/tools/base:1.0",
    ]);
    assert!(row(&site.ok(&["ls"]), "docker.io/tools/base:1.0").is_some());

    gapped.restart();
    let out = scratch("inventory-short");
    let pull = |reference: &str| {
        let o = out.path().join(reference.replace(['/', ':'], "_"));
        skopeo_pull(&format!("{}/{reference}", gapped.host()), &o, false)
    };
    assert_eq!(pull("library/busybox:1.36"), busybox.digest);
    assert_eq!(pull("org/app:v1"), app.digest);
    assert_eq!(pull("org/app:v2"), busybox.digest);
    pull("tools/base:1.0");
}

/// Beside a running `serve`, `ls`, `rm`, `gc` and `export` are carried out by that `serve`
/// over its admin socket (mode 0600 in the cache directory); `rm` takes effect for the clients
/// at once, and a relative `export -o` lands where the operator stands. A stale socket (the
/// `serve` was killed) does not stop the commands from opening the cache themselves.
#[test]
fn a_running_mirror_answers_ls_rm_gc_and_export() {
    let seed = seed();
    let app = seed.image("oci/app");
    let busybox = seed.image("library/busybox");
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[Up::default("docker.io", reg.url())]).start();
    let out = scratch("inventory-live");
    assert_eq!(
        skopeo_pull(
            &format!("{}/oci/app:v1", m.host()),
            &out.path().join("a"),
            false
        ),
        app.digest
    );
    assert_eq!(
        skopeo_pull(
            &format!("{}/library/busybox:latest", m.host()),
            &out.path().join("b"),
            false
        ),
        busybox.digest
    );
    m.wait_settled();
    let socket = m.cache_dir.join("admin.sock");
    let mode = fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let site = beside(&m);
    let ls = site.ok(&["ls"]);
    assert!(row(&ls, "docker.io/oci/app:v1").is_some(), "{ls}");
    // A reader that stops reading (`entrepot ls | head`) is no failure.
    let mut child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .arg("--config")
        .arg(&m.config)
        .arg("ls")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&closed.stderr);
    assert!(closed.status.success(), "{said}");
    assert!(!said.contains("Broken pipe"), "{said}");
    assert!(
        row(&ls, "docker.io/library/busybox:latest").is_some(),
        "{ls}"
    );

    // export -o with a relative path: written where the command runs, by the serve process.
    let here = scratch("inventory-here");
    let exported = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .arg("--config")
        .arg(&m.config)
        .args(["export", "-o", "live.tar", "oci/app:v1"])
        .current_dir(here.path())
        .output()
        .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(String::from_utf8_lossy(&exported.stderr).contains("exported 1 images"));
    assert!(here.path().join("live.tar").is_file());

    // rm: gone from the listing and from the clients' view at once (the tag goes upstream).
    let asked =
        || reg.count("\"GET /v2/oci/app/manifests/") + reg.count("\"HEAD /v2/oci/app/manifests/");
    let before = asked();
    site.ok(&["rm", "oci/app:v1"]);
    assert!(row(&site.ok(&["ls"]), "docker.io/oci/app:v1").is_none());
    let r = raw_request(m.port, "GET", "/v2/oci/app/manifests/v1", &[]);
    assert_eq!(r.status, 200);
    assert!(asked() > before, "the removed tag was answered from memory");

    // gc, and a failure said as serve said it.
    let said = site.ok(&["gc", "--grace", "1h"]);
    assert!(said.contains("removed 0 blobs"), "{said}");
    // The index's file is compacted too, beside a running serve.
    assert!(said.contains("index compacted: "), "{said}");
    let refused = site.fails(&["rm", "never/was:here"]);
    assert!(refused.contains("is not in the cache"), "{refused}");
    assert!(m.log_text().contains("admin command"), "{}", m.log_text());

    // The serve is killed: its socket stays behind, and the commands open the cache themselves.
    let mut m = m;
    m.kill9();
    assert!(socket.exists());
    let ls = site.ok(&["ls"]);
    assert!(
        row(&ls, "docker.io/library/busybox:latest").is_some(),
        "{ls}"
    );
}

/// `rm` looks at the image's own repository only (issue 22: its time is proportional to the
/// image, not the cache), yet what another repository's image shares stays until the last
/// image using it goes: then it goes too.
#[test]
fn shared_content_stays_until_the_last_image_using_it_is_removed() {
    let seed = seed();
    let origin = Registry::start(&seed.storage);
    let storage = scratch("inventory-shared-storage");
    let reg = Registry::start(storage.path());
    reg.copy_from(&origin, "oci/app:v1", "one/app:v1");
    reg.copy_from(&origin, "oci/app:v1", "two/app:v1");
    let site = Site::new("inventory-shared", &reg.url(), "");
    site.ok(&["warm", "one/app:v1", "two/app:v1"]);
    let held = site.blobs();
    let app = seed.image("oci/app");
    for (d, _) in &app.blobs {
        assert!(held.contains(&d[7..].to_owned()), "{d} not warmed");
    }

    site.ok(&["rm", "one/app:v1"]);
    let after_one = site.blobs();
    for (d, _) in &app.blobs {
        assert!(
            after_one.contains(&d[7..].to_owned()),
            "{d}, which two/app uses, was removed"
        );
    }
    assert!(row(&site.ok(&["ls"]), "docker.io/two/app:v1").is_some());

    site.ok(&["rm", "two/app:v1"]);
    let left = site.blobs();
    for (d, _) in &app.blobs {
        assert!(
            !left.contains(&d[7..].to_owned()),
            "{d} outlived the last image using it"
        );
    }
    assert!(
        !left.contains(&app.digest[7..].to_owned()),
        "the manifest outlived its image"
    );
}
