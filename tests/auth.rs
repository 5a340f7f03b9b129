//! Issue 4: upstream credentials and the registries that need them, against real registries:
//! Debian's docker-registry with `auth: token` (fronted by the test's token service), with
//! htpasswd Basic auth, and over TLS with a private CA. Where a behaviour needs an answer no real
//! registry gives on cue (a 307 to a CDN on another host), a scripted upstream stands in.
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;

use support::auth::{self, PASSWORD, TokenService, USER};
use support::*;

fn token_registry(ts: &TokenService, realm_host: &str) -> Registry {
    Registry::start_with(&seed().storage, &ts.registry_yaml(realm_host), None)
}

/// A config with `[credentials] docker_config` set (it must come before the upstreams).
fn with_docker_config(path: &std::path::Path, cfg: String) -> String {
    format!(
        "[credentials]\ndocker_config = \"{}\"\n{cfg}",
        path.display()
    )
}

fn creds() -> String {
    format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"")
}

fn up_with<'a>(name: &'a str, url: String, extra: String) -> Up<'a> {
    let mut u = Up::new(name, url);
    u.extra = extra;
    u
}

/// Pulls `repo` (by tag) through the mirror's `reg.example` upstream with skopeo; the digest.
fn pull(m: &Mirror, repo: &str, dir: &std::path::Path) -> Result<String, String> {
    let img = seed().image(repo);
    Skopeo::pull(&format!("{}/reg.example/{repo}:{}", m.host(), img.tag), dir).try_digest()
}

#[test]
fn token_auth_public_and_private_with_tokens_reused() {
    let ts = TokenService::start();
    let reg = token_registry(&ts, "127.0.0.1");
    let m = Mirror::of(&[up_with("reg.example", reg.url(), creds())]).start();
    let out = scratch("token-pulls");
    for repo in ["oci/app", "team/project/app", "many/layers"] {
        let d = pull(&m, repo, &out.path().join(repo.replace('/', "_"))).unwrap();
        assert_eq!(d, seed().image(repo).digest, "{repo}");
    }
    // One token per repository scope, reused for every manifest and blob (28+ requests).
    let seen = ts.seen.lock().unwrap().clone();
    assert!(
        !seen.is_empty(),
        "the registry asked for no token: is token auth on?"
    );
    assert!(seen.len() <= 3, "{} token requests: {seen:#?}", seen.len());
    assert!(
        seen.iter().all(|r| r.user.as_deref() == Some(USER)),
        "{seen:#?}"
    );
    // Later pulls of cached content need no token at all.
    let before = ts.count();
    pull(&m, "team/project/app", &out.path().join("again")).unwrap();
    assert_eq!(ts.count(), before);
}

#[test]
fn without_credentials_private_repositories_are_refused_cleanly() {
    let ts = TokenService::start();
    let reg = token_registry(&ts, "127.0.0.1");
    let m = Mirror::of(&[Up::new("reg.example", reg.url())]).start();
    let out = scratch("anon");
    assert!(pull(&m, "oci/app", &out.path().join("a")).is_ok());
    let r = raw_request(
        m.port,
        "GET",
        "/v2/reg.example/team/project/app/manifests/v1",
        &[],
    );
    assert!(r.status == 404 || r.status == 403, "{}", r.status);
    assert!(
        r.header("www-authenticate").is_none(),
        "the upstream's challenge leaked to the client"
    );
    assert!(String::from_utf8_lossy(&r.body).contains("\"errors\""));
    assert!(ts.seen.lock().unwrap().iter().all(|r| !r.had_authorization));
}

/// A token service that takes credentials only as an OAuth2 password grant (POST): the GET with
/// Basic is refused with 405, and the mirror falls back.
#[test]
fn plain_credentials_fall_back_to_the_oauth2_password_grant() {
    let ts = TokenService::start_with(true);
    let reg = token_registry(&ts, "127.0.0.1");
    let m = Mirror::of(&[up_with("reg.example", reg.url(), creds())]).start();
    let out = scratch("password-grant");
    let d = pull(&m, "team/project/app", &out.path().join("a")).unwrap();
    assert_eq!(d, seed().image("team/project/app").digest);
    let seen = ts.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|r| r.method == "GET") && seen.iter().any(|r| r.method == "POST"),
        "{seen:#?}"
    );
}

/// The registry names a realm on another host: stored credentials never go there.
#[test]
fn credentials_never_go_to_a_realm_on_another_host() {
    // The upstream is 127.0.0.1; the realm is 127.0.0.2: another host.
    let ts = TokenService::start_elsewhere();
    let reg = token_registry(&ts, "127.0.0.2");
    let m = Mirror::of(&[up_with("reg.example", reg.url(), creds())]).start();
    let out = scratch("foreign-realm");
    assert!(
        pull(&m, "oci/app", &out.path().join("a")).is_ok(),
        "public pulls work anonymously"
    );
    let r = raw_request(
        m.port,
        "GET",
        "/v2/reg.example/team/project/app/manifests/v1",
        &[],
    );
    assert!(r.status == 404 || r.status == 403, "{}", r.status);
    let seen = ts.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| !r.had_authorization),
        "credentials reached a foreign realm: {seen:#?}"
    );
}

#[test]
fn credentials_from_a_file_a_docker_config_a_helper_and_an_identity_token() {
    let ts = TokenService::start();
    let reg = token_registry(&ts, "127.0.0.1");
    let dir = scratch("cred-sources");
    let secret = dir.path().join("password");
    fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    // A docker config.json (the shape of a Kubernetes .dockerconfigjson secret).
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let docker_config = dir.path().join("config.json");
    fs::write(&docker_config, format!(r#"{{"auths":{{"reg.example":{{"auth":"{auth}"}},"idtok.example":{{"identitytoken":"{}"}}}}}}"#, auth::REFRESH_TOKEN)).unwrap();
    // A credential helper speaking docker's protocol; it logs each call.
    let helper = dir.path().join("docker-credential-test");
    let calls = dir.path().join("helper-calls");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" >> {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&helper)
        .status()
        .unwrap();

    let variants = [
        format!(
            "username = \"{USER}\"\npassword_file = \"{}\"",
            secret.display()
        ),
        String::new(), // from the docker config
        format!("credential_helper = \"{}\"", helper.display()),
    ];
    for (i, extra) in variants.iter().enumerate() {
        let mut m = Mirror::of(&[up_with("reg.example", reg.url(), extra.clone())]).start();
        if i == 1 {
            m.reconfigure(|cfg| with_docker_config(&docker_config, cfg));
        }
        for repo in ["team/project/app", "oci/app"] {
            let d = pull(
                &m,
                repo,
                &dir.path().join(format!("v{i}-{}", repo.replace('/', "_"))),
            );
            assert_eq!(
                d.as_deref(),
                Ok(seed().image(repo).digest.as_str()),
                "variant {i}: {repo}"
            );
        }
    }
    // The helper was asked once (its answer is cached), about the registry's host.
    let asked = fs::read_to_string(&calls).unwrap();
    assert_eq!(asked.lines().count(), 1, "{asked}");
    assert_eq!(asked.trim(), format!("127.0.0.1:{}", reg.port));

    // An identitytoken is exchanged with the OAuth2 refresh-token POST.
    let mut m = Mirror::of(&[up_with("reg.example", reg.url(), String::new())]).start();
    m.reconfigure(|cfg| {
        with_docker_config(
            &docker_config,
            cfg.replace("name = \"reg.example\"", "name = \"idtok.example\""),
        )
    });
    let r = raw_request(
        m.port,
        "GET",
        "/v2/idtok.example/team/project/app/manifests/v1",
        &[],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(ts.seen.lock().unwrap().iter().any(|r| r.method == "POST"));
    // Secrets never reach the log.
    assert!(!m.log_text().contains(PASSWORD) && !m.log_text().contains(auth::REFRESH_TOKEN));
}

#[test]
fn tls_with_a_private_ca() {
    let p = auth::pki();
    let reg = Registry::start_with(&seed().storage, &auth::tls_yaml(), None);
    let url = format!("https://127.0.0.1:{}", reg.port);
    let out = scratch("tls");
    let trusted = Mirror::of(&[up_with(
        "reg.example",
        url.clone(),
        format!("ca_cert = \"{}\"", p.ca_cert.display()),
    )])
    .start();
    assert_eq!(
        pull(&trusted, "oci/app", &out.path().join("a")).unwrap(),
        seed().image("oci/app").digest
    );
    let untrusted = Mirror::of(&[Up::new("reg.example", url.clone())]).start();
    let r = raw_request(
        untrusted.port,
        "GET",
        "/v2/reg.example/oci/app/manifests/v1",
        &[],
    );
    assert_eq!(r.status, 503, "an unknown CA must be refused");
    let insecure = Mirror::of(&[up_with(
        "reg.example",
        url,
        "tls_insecure_skip_verify = true".into(),
    )])
    .start();
    assert!(pull(&insecure, "oci/app", &out.path().join("b")).is_ok());
    assert!(insecure.log_text().contains("NOT verified"));
}

#[test]
fn htpasswd_basic_auth() {
    let reg = Registry::start_with(&seed().storage, &auth::htpasswd_yaml(), None);
    let out = scratch("basic");
    let m = Mirror::of(&[up_with("reg.example", reg.url(), creds())]).start();
    assert_eq!(
        pull(&m, "team/project/app", &out.path().join("a")).unwrap(),
        seed().image("team/project/app").digest
    );
    let anon = Mirror::of(&[Up::new("reg.example", reg.url())]).start();
    let r = raw_request(
        anon.port,
        "GET",
        "/v2/reg.example/oci/app/manifests/v1",
        &[],
    );
    assert_eq!(r.status, 404);
    assert!(r.header("www-authenticate").is_none());
}

/// A node with no secrets pulls a private image of a non-default registry through the mirror.
#[test]
fn containerd_pulls_a_private_image_through_the_mirror() {
    let ts = TokenService::start();
    let reg = token_registry(&ts, "127.0.0.1");
    let m = Mirror::of(&[
        Up::default("docker.io", reg.url()),
        up_with("reg.example", reg.url(), creds()),
    ])
    .start();
    let ctd = Containerd::start();
    let img = seed().image("team/project/app");
    let reference = format!("reg.example/team/project/app:{}", img.tag);
    let list = ctd.pull_through(&m.url(), "reg.example", &reference);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&reference) && l.contains(&img.digest)),
        "{list}"
    );
}

#[test]
fn the_allow_list_refuses_other_repositories() {
    let seed = seed();
    let reg = Registry::start(&seed.storage);
    let m = Mirror::of(&[up_with(
        "reg.example",
        reg.url(),
        "repositories = [\"oci/*\", \"many/**\"]".into(),
    )])
    .start();
    assert_eq!(
        raw_request(m.port, "GET", "/v2/reg.example/oci/app/manifests/v1", &[]).status,
        200
    );
    let r = raw_request(
        m.port,
        "GET",
        "/v2/reg.example/team/project/app/manifests/v1",
        &[],
    );
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("DENIED"));
    assert_eq!(
        reg.count("/v2/team/"),
        0,
        "a refused repository reached the upstream"
    );
}

/// A client's own Authorization never goes upstream, and a blob redirect to another host (a CDN)
/// carries no Authorization. Scripted upstreams: a registry that answers 307 on cue, and the CDN.
#[test]
fn client_credentials_stay_home_and_redirects_drop_authorization() {
    let blob = b"layer bytes from the CDN".repeat(100);
    let digest = sha256(&blob);
    let b2 = blob.clone();
    // The CDN is another host: 127.0.0.2, where the registry is 127.0.0.1.
    let cdn = FakeUpstream::start_on("127.0.0.2", move |_| FakeAnswer::new(200, b2.clone()));
    let cdn_url = format!("http://127.0.0.2:{}", cdn.port);
    let registry = FakeUpstream::start(move |r| {
        let authed = r
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("Basic "));
        if !authed {
            return FakeAnswer::new(401, "{}").header("WWW-Authenticate", "Basic realm=\"test\"");
        }
        if r.path.contains("/blobs/") {
            FakeAnswer::new(307, "").header("Location", &format!("{cdn_url}/cdn{}", r.path))
        } else {
            FakeAnswer::new(404, "{}")
        }
    });
    let m = Mirror::of(&[up_with("reg.example", registry.url(), creds())]).start();
    let r = try_stream_get(
        m.port,
        &format!("/v2/reg.example/app/x/blobs/{digest}"),
        &[("Authorization", "Bearer client-secret")],
    )
    .unwrap_or_else(|| panic!("no response; mirror log:\n{}", m.log_text()));
    assert!(r.complete() && r.digest == digest, "{}", m.log_text());
    let cdn_seen = cdn.requests.lock().unwrap().clone();
    assert_eq!(cdn_seen.len(), 1);
    assert!(
        cdn_seen[0]
            .headers
            .iter()
            .all(|(k, _)| k != "authorization"),
        "Authorization followed the redirect"
    );
    let reg_seen = registry.requests.lock().unwrap().clone();
    assert!(
        reg_seen
            .iter()
            .all(|r| r.headers.iter().all(|(_, v)| !v.contains("client-secret"))),
        "the client's credentials went upstream"
    );
    assert!(m.wait_cached(&digest));
}

/// A credential helper whose first answer has gone stale (as ECR's 12-hour passwords do) is run
/// again after the 401, and the pull goes through.
#[test]
fn a_stale_helper_answer_is_refreshed_after_a_401() {
    let ts = TokenService::start();
    let reg = token_registry(&ts, "127.0.0.1");
    let dir = scratch("stale-helper");
    let helper = dir.path().join("docker-credential-rotating");
    let calls = dir.path().join("calls");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho x >> {calls}\nif [ \"$(wc -l < {calls})\" -eq 1 ]; then p=expired; else p={PASSWORD}; fi\nprintf '{{\"Username\":\"{USER}\",\"Secret\":\"%s\"}}' \"$p\"\n",
            calls = calls.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&helper)
        .status()
        .unwrap();
    let m = Mirror::of(&[up_with(
        "reg.example",
        reg.url(),
        format!("credential_helper = \"{}\"", helper.display()),
    )])
    .start();
    let d = pull(&m, "team/project/app", &dir.path().join("out")).unwrap();
    assert_eq!(d, seed().image("team/project/app").digest);
    assert_eq!(fs::read_to_string(&calls).unwrap().lines().count(), 2);
    assert!(!m.log_text().contains(PASSWORD));
}
