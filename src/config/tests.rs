//! The configuration's checks, as a user meets them: whole files, and the messages they get.

use std::time::Duration;

use super::*;

fn err(text: &str) -> String {
    Config::parse(text, "t").unwrap_err().to_string()
}

const UP: &str =
    "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n";

#[test]
fn embedded_default_parses() {
    let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
    assert_eq!(c.cache.max_size, 20 << 30);
    assert_eq!(c.cache.tag_ttl, Duration::from_secs(60));
    assert_eq!(c.upstreams[0].name, "docker.io");
    assert!(c.upstreams[0].library_prefix);
}

/// `check-config` prints sizes and durations as people write them, and its output is itself a
/// config that reads back to the same settings.
#[test]
fn check_config_prints_units_people_write() {
    let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
    let shown = c.describe();
    for line in [
        "max_size = \"20GiB\"",
        "tag_ttl = \"1m\"",
        "max_header_size = \"64KiB\"",
        "send_timeout = \"1m\"",
        "format = \"text\"",
    ] {
        assert!(shown.contains(line), "no {line} in\n{shown}");
    }
    let again = Config::parse(&shown, "shown").unwrap();
    assert_eq!(again.describe(), shown);
}

#[test]
fn mistakes_name_the_key() {
    assert!(err(&format!("{UP}[cache]\nmax_size = \"lots\"\n")).contains("cache.max_size"));
    assert!(err(&format!("{UP}[cache]\ntag_ttl = \"soon\"\n")).contains("cache.tag_ttl"));
    assert!(err(&format!("{UP}[cache]\nbogus = 1\n")).contains("bogus"));
    assert!(err(&format!("{UP}{UP}")).contains("configured twice"));
    let two_defaults = format!(
        "{UP}[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\ndefault = true\n"
    );
    assert!(err(&two_defaults).contains("upstream.default"));
    let no_scheme = "[[upstream]]\nname = \"quay.io\"\nurl = \"quay.io\"\n";
    assert!(err(no_scheme).contains("upstream[0].url"));
    assert!(err("[server]\nlisten = \"nowhere\"\n").contains("server.listen"));
    let no_send_timeout = format!("[server]\nsend_timeout = \"0s\"\n{UP}");
    assert!(err(&no_send_timeout).contains("server.send_timeout"));
    assert!(err(&format!("{UP}[log]\nformat = \"xml\"\n")).contains("log.format"));
    let half_tls = format!("[server]\ntls_cert = \"/etc/entrepot/tls.crt\"\n{UP}");
    assert!(err(&half_tls).contains("server.tls_key"));
    let missing_tls =
        format!("[server]\ntls_cert = \"/nonexistent\"\ntls_key = \"/nonexistent\"\n{UP}");
    assert!(err(&missing_tls).contains("server.tls_cert/tls_key"));
    assert!(err("").contains("upstream"));
    let bad_name = "[[upstream]]\nname = \"Quay.IO\"\nurl = \"https://quay.io\"\n";
    assert!(err(bad_name).contains("upstream[0].name"));
}

#[test]
fn docker_config_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpzM2NyM3QtcGFzcw=="},"quay.io":{"username":"q","password":"p"},"ghcr.io":{"identitytoken":"tok-s3cr3t"}}}"#,
    )
    .unwrap();
    let text = format!(
        "[credentials]\ndocker_config = {:?}\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\n[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\n[[upstream]]\nname = \"gcr.io\"\nurl = \"https://gcr.io\"\nusername = \"_json_key\"\npassword = \"{{}}\"\n",
        path.display().to_string()
    );
    let c = Config::parse(&text, "t").unwrap();
    assert!(
        matches!(&c.upstreams[0].credentials, CredentialSource::Password { username, password } if username == "user" && password.expose() == "s3cr3t-pass")
    );
    assert!(
        matches!(&c.upstreams[1].credentials, CredentialSource::Password { username, .. } if username == "q")
    );
    assert!(
        matches!(&c.upstreams[2].credentials, CredentialSource::IdentityToken(t) if t.expose() == "tok-s3cr3t")
    );
    assert!(
        matches!(&c.upstreams[3].credentials, CredentialSource::Password { username, .. } if username == "_json_key")
    );
    let shown = c.describe();
    assert!(!shown.contains("s3cr3t"), "{shown}");
    // The docker config is named as the setting it is; what it gave is not printed as if it
    // were settings of each upstream, so the output reads back to the same config.
    assert!(
        shown.contains(&format!(
            "[credentials]\ndocker_config = {:?}",
            path.display().to_string()
        )),
        "{shown}"
    );
    assert!(!shown.contains("username = \"q\""), "{shown}");
    assert!(!shown.contains("username = \"user\""), "{shown}");
    assert!(shown.contains("username = \"_json_key\""), "{shown}");
    assert_eq!(Config::parse(&shown, "shown").unwrap().describe(), shown);
}

/// An air-gapped site names its upstreams only; elsewhere a missing url names the key.
#[test]
fn an_offline_upstream_may_be_a_name_alone() {
    let text = "[cache]\noffline = true\n[[upstream]]\nname = \"docker.io\"\ndefault = true\n[[upstream]]\nname = \"quay.io\"\n";
    let c = Config::parse(text, "t").unwrap();
    assert_eq!(c.upstreams.len(), 2);
    let shown = c.describe();
    assert!(!shown.contains("url ="), "{shown}");
    assert_eq!(Config::parse(&shown, "shown").unwrap().describe(), shown);
    let e = err("[[upstream]]\nname = \"docker.io\"\n");
    assert!(
        e.contains("upstream[0].url: missing") && e.contains("cache.offline"),
        "{e}"
    );
}

/// A TOML mistake keeps toml's layout: the line, and a caret under the mistake.
#[test]
fn a_syntax_error_shows_the_line_and_a_caret() {
    let e = err(&format!("{UP}[cache]\nmax_size = 20GiB\n"));
    assert!(e.contains("line 6"), "{e}");
    assert!(e.contains("\n6 | max_size = 20GiB"), "{e}");
    assert!(
        e.lines()
            .any(|l| l.trim_start().starts_with('|') && l.contains('^')),
        "{e}"
    );
}

/// Decimal units are read as decimal, and the message says both kinds.
#[test]
fn sizes_say_binary_and_decimal_units() {
    let c = Config::parse(&format!("{UP}[cache]\nmax_size = \"20GB\"\n"), "t").unwrap();
    assert_eq!(c.cache.max_size, 20_000_000_000);
    let e = err(&format!("{UP}[cache]\nmax_size = \"20 gigs\"\n"));
    assert!(
        e.contains("decimal KB, MB, GB, TB") && e.contains("GiB"),
        "{e}"
    );
}

#[test]
fn secrets_are_redacted() {
    let c = Config::parse(
        "[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        "t",
    )
    .unwrap();
    assert!(!c.describe().contains("hunter2"));
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn auth_mistakes_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let md5 = dir.path().join("md5");
    std::fs::write(&md5, "old:$apr1$salt$hash\n").unwrap();
    let bcrypt = dir.path().join("bcrypt");
    std::fs::write(
        &bcrypt,
        "ci:$2y$05$abcdefghijklmnopqrstuu5sPQ7G9xkQ4cJ2hA1FzF8qO9W1eX6\n",
    )
    .unwrap();
    let with = |auth: &str| format!("{UP}\n[auth]\n{auth}");
    let e = err(&with(&format!("htpasswd = {md5:?}\n")));
    assert!(e.contains("auth.htpasswd") && e.contains("bcrypt"), "{e}");
    let e = err(&with(
        "[[auth.allow]]\nusers = [\"ci\"]\nrepositories = [\"docker.io/**\"]\n",
    ));
    assert!(
        e.contains("auth.allow[0].users") && e.contains("htpasswd"),
        "{e}"
    );
    let e = err(&with(&format!(
        "htpasswd = {bcrypt:?}\n[[auth.allow]]\nusers = [\"ci\"]\nrepositories = [\"quay.io/**\"]\n"
    )));
    assert!(
        e.contains("auth.allow[0].repositories[0]") && e.contains("quay.io"),
        "{e}"
    );
    let e = err(&with(
        "[[auth.allow]]\nusers = [\"anonymous\"]\nrepositories = [\"docker.io/UPPER\"]\n",
    ));
    assert!(e.contains("auth.allow[0].repositories[0]"), "{e}");
    let e = err(&with(&format!(
        "htpasswd = {bcrypt:?}\nanonymous_ping = true\n[[auth.allow]]\nusers = [\"ci\"]\nrepositories = [\"docker.io/**\"]\n"
    )));
    assert!(e.contains("auth.anonymous_ping"), "{e}");
    let e = err(&with("realm = \"a\\\"b\"\n"));
    assert!(e.contains("auth.realm"), "{e}");
    // A good section reads back from check-config's output.
    let good = Config::parse(
        &with(&format!(
            "htpasswd = {bcrypt:?}\n[[auth.allow]]\nusers = [\"anonymous\", \"ci\"]\nrepositories = [\"docker.io/library/**\"]\n"
        )),
        "t",
    )
    .unwrap();
    let shown = good.describe();
    assert!(shown.contains("[[auth.allow]]"), "{shown}");
    assert_eq!(Config::parse(&shown, "shown").unwrap().describe(), shown);
}

#[test]
fn client_ca_needs_tls_and_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = err(&format!("[server]\nclient_ca = {empty:?}\n{UP}"));
    assert!(
        e.contains("server.client_ca") && e.contains("tls_cert"),
        "{e}"
    );
}

#[test]
fn shared_mistakes_name_their_key() {
    let e = err(&format!("{UP}\n[shared]\nurl = \"ftp://x/y\"\n"));
    assert!(e.contains("shared.url"), "{e}");
    let e = err(&format!("{UP}\n[shared]\nurl = \"s3:///nobucket\"\n"));
    assert!(e.contains("shared.url") && e.contains("bucket"), "{e}");
    let e = err(&format!(
        "{UP}\n[shared]\nurl = \"s3://b/p\"\nsecret_access_key = \"a\"\nsecret_access_key_file = \"/nonexistent\"\n"
    ));
    assert!(e.contains("shared.secret_access_key"), "{e}");
    let e = err(&format!(
        "{UP}\n[shared]\nurl = \"s3://b/p\"\nsecret_access_key_file = \"/nonexistent/secret\"\n"
    ));
    assert!(e.contains("shared.secret_access_key_file"), "{e}");
    let good = Config::parse(
        &format!("{UP}\n[shared]\nurl = \"s3://b/p\"\nsecret_access_key = \"hush\"\n"),
        "t",
    )
    .unwrap();
    let shown = good.describe();
    assert!(
        shown.contains("[shared]") && !shown.contains("hush"),
        "{shown}"
    );
}

#[test]
fn a_shared_signing_key_is_long_enough_one_way_and_never_printed() {
    let e = err(&format!(
        "{UP}\n[shared]\nurl = \"s3://b/p\"\nsigning_key = \"short\"\n"
    ));
    assert!(
        e.contains("shared.signing_key") && e.contains("at least 32"),
        "{e}"
    );
    let e = err(&format!(
        "{UP}\n[shared]\nurl = \"s3://b/p\"\nsigning_key = \"k\"\nsigning_key_file = \"/x\"\n"
    ));
    assert!(e.contains("not both"), "{e}");
    let e = err(&format!(
        "{UP}\n[shared]\nurl = \"s3://b/p\"\nsigning_key_file = \"/nonexistent/key\"\n"
    ));
    assert!(e.contains("shared.signing_key_file"), "{e}");
    let key = "0123456789abcdef0123456789abcdef-secret";
    let good = Config::parse(
        &format!("{UP}\n[shared]\nurl = \"s3://b/p\"\nsigning_key = \"{key}\"\n"),
        "t",
    )
    .unwrap();
    let shown = good.describe();
    assert!(
        shown.contains("signing_key = \"<redacted>\"") && !shown.contains(key),
        "{shown}"
    );
}
