//! Upstream authentication: `WWW-Authenticate` challenges, the token request, and the rule for
//! where stored credentials may go.
//!
//! Registries answer an anonymous request with `401` and a challenge naming a token realm. We
//! parse every challenge in the header (schemes are case-insensitive; values may be quoted with
//! escapes), pick Bearer over Basic, and ask the realm for a token, with our stored credentials
//! only when the realm is on the upstream's own site (ARCHITECTURE.md, invariant 7).

use std::net::IpAddr;

/// One parsed challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scopes: Vec<String>,
    },
    Basic,
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges
/// (`Bearer realm="a",service="b", Basic realm="c"`). Unknown schemes are skipped; a Bearer
/// challenge without a realm is unusable and skipped too.
pub(super) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut rest = header.trim_start();
    while !rest.is_empty() {
        // scheme token
        let end = rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(rest.len());
        let scheme = rest[..end].to_ascii_lowercase();
        let (params, remain) = parse_params(rest[end..].trim_start_matches([' ', '\t']));
        rest = remain;
        out.extend(challenge(&scheme, &params));
        if end == 0 && params.is_empty() {
            // Nothing consumed: skip one character to guarantee progress on garbage.
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str();
        }
        rest = rest.trim_start_matches([' ', '\t', ',']);
    }
    out
}

/// The challenge a scheme and its parameters make, if it is one we can answer.
fn challenge(scheme: &str, params: &[(String, String)]) -> Option<Challenge> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match scheme {
        "bearer" => get("realm")
            .filter(|r| !r.is_empty())
            .map(|realm| Challenge::Bearer {
                realm,
                service: get("service"),
                scopes: get("scope")
                    .map(|s| s.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default(),
            }),
        "basic" => Some(Challenge::Basic),
        _ => None,
    }
}

/// Auth-params: `name=value` pairs separated by commas, until the next scheme token. Returns
/// them (names lowercased) and what follows.
fn parse_params(mut rest: &str) -> (Vec<(String, String)>, &str) {
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t', ',']);
        let Some(eq) = trimmed.find('=') else {
            return (params, trimmed);
        };
        let name = &trimmed[..eq];
        if name.is_empty() || name.contains([' ', '\t', ',', '"']) {
            // Not a param: the start of the next challenge.
            return (params, trimmed);
        }
        let (value, remain) = parse_value(trimmed[eq + 1..].trim_start());
        params.push((name.to_ascii_lowercase(), value));
        rest = remain;
    }
}

/// A parameter's value, quoted (with `\` escapes; an unclosed quote runs to the end) or a bare
/// token up to the next comma; and what follows it.
fn parse_value(after: &str) -> (String, &str) {
    let Some(q) = after.strip_prefix('"') else {
        let e = after.find(',').unwrap_or(after.len());
        return (after[..e].trim().to_owned(), &after[e..]);
    };
    let mut value = String::new();
    let mut chars = q.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    value.push(n);
                }
            }
            '"' => return (value, &q[i + 1..]),
            _ => value.push(c),
        }
    }
    (value, "")
}

/// Picks the challenge to answer: Bearer if offered, else Basic.
pub(super) fn preferred(challenges: Vec<Challenge>) -> Option<Challenge> {
    let mut basic = None;
    for c in challenges {
        match c {
            Challenge::Bearer { .. } => return Some(c),
            Challenge::Basic => basic = Some(c),
        }
    }
    basic
}

/// The shortest token lifetime we assume: the spec's default, for a missing or shorter one.
const MIN_TOKEN_LIFETIME: u64 = 60;
/// The longest token lifetime we believe, whatever the token service says: a day.
const MAX_TOKEN_LIFETIME: u64 = 24 * 3600;

/// The token service's answer (`token` or `access_token`, lifetime in seconds).
#[derive(serde::Deserialize)]
pub(super) struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    /// Any JSON number: negative, fractional or absurd lifetimes are clamped, not refused.
    expires_in: Option<serde_json::Number>,
}

impl TokenAnswer {
    /// The token and how long it may be used: a missing or short lifetime counts as 60s, as the
    /// spec says, and a longer one than a day as a day, so no lifetime a token service sends
    /// can overflow a deadline.
    pub(super) fn into_token(self) -> Option<(String, u64)> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = match &self.expires_in {
            None => MIN_TOKEN_LIFETIME,
            Some(n) => match (n.as_u64(), n.as_f64()) {
                (Some(secs), _) => secs,
                (None, Some(secs)) if secs >= MAX_TOKEN_LIFETIME as f64 => MAX_TOKEN_LIFETIME,
                // Negative, fractional below a day, or not a number we can read.
                (None, Some(secs)) if secs > 0.0 => secs as u64,
                _ => MIN_TOKEN_LIFETIME,
            },
        };
        Some((
            token,
            lifetime.clamp(MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME),
        ))
    }
}

/// Whether stored credentials for the upstream at `upstream` may be sent to the token realm at
/// `realm`: never over plain http when the upstream itself is https (a downgrade), and only to
/// the upstream's own host or registrable domain.
pub(super) fn credentials_may_go_to(upstream: &url::Url, realm: &url::Url) -> bool {
    if upstream.scheme() == "https" && realm.scheme() != "https" {
        return false;
    }
    credentials_may_go(
        upstream.host_str().unwrap_or(""),
        realm.host_str().unwrap_or(""),
    )
}

/// Whether stored credentials for `upstream_host` may be sent to `realm_host`: the same host, or
/// the same registrable domain (`auth.docker.io` for `registry-1.docker.io`). IP addresses must
/// match exactly.
pub(super) fn credentials_may_go(upstream_host: &str, realm_host: &str) -> bool {
    let (u, r) = (
        upstream_host.to_ascii_lowercase(),
        realm_host.to_ascii_lowercase(),
    );
    if u == r {
        return true;
    }
    if u.parse::<IpAddr>().is_ok() || r.parse::<IpAddr>().is_ok() {
        return false;
    }
    match (registrable_domain(&u), registrable_domain(&r)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Registry hosting domains whose hosts belong to different customers but that the public suffix
/// list does not (yet) list as suffixes: Azure Container Registry (`<name>.azurecr.io`) and all of
/// AWS (ECR is `<account>.dkr.ecr.<region>.amazonaws.com`; the list names only some AWS services).
const SHARED_REGISTRY_DOMAINS: &[&str] = &["azurecr.io", "amazonaws.com", "amazonaws.com.cn"];

/// The registrable domain of a host, from the public suffix list (`docker.io` for
/// `auth.docker.io`; `example.co.uk` for `registry.example.co.uk`; `me.github.io` for
/// `me.github.io`, since `github.io` is a public suffix). A host that is itself a public suffix,
/// or has no known suffix, has none.
fn registrable_domain(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    if SHARED_REGISTRY_DOMAINS
        .iter()
        .any(|d| host.ends_with(&format!(".{d}")))
    {
        // Every host under these is its own tenant: only the exact host is the same site.
        return None;
    }
    let domain = psl::domain_str(host)?;
    // A bare name with no suffix the list knows is matched by the list's `*` rule: no site.
    domain.contains('.').then(|| domain.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenges(h),
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scopes: vec!["repository:library/busybox:pull".into()],
            }]
        );
    }

    #[test]
    fn several_challenges_case_and_escapes() {
        let h = r#"basic realm="x", BEARER realm="https://a/t\"x",scope="a:b:pull c:d:pull",service=svc"#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], Challenge::Basic);
        assert_eq!(
            c[1],
            Challenge::Bearer {
                realm: "https://a/t\"x".into(),
                service: Some("svc".into()),
                scopes: vec!["a:b:pull".into(), "c:d:pull".into()],
            }
        );
        assert!(matches!(preferred(c), Some(Challenge::Bearer { .. })));
    }

    #[test]
    fn garbage_does_not_loop() {
        for h in [
            "",
            ",,,",
            "=",
            "\"",
            "Bearer",
            "Bearer realm",
            "Bearer realm=\"",
            "Bearer ,=,",
            "x=y=z",
        ] {
            let _ = parse_challenges(h);
        }
        assert!(parse_challenges("Bearer service=\"x\"").is_empty());
    }

    #[test]
    fn where_credentials_go() {
        assert!(credentials_may_go("registry-1.docker.io", "auth.docker.io"));
        assert!(credentials_may_go("quay.io", "quay.io"));
        assert!(!credentials_may_go("quay.io", "evil.io"));
        assert!(!credentials_may_go("registry.example.co.uk", "other.co.uk"));
        assert!(credentials_may_go(
            "registry.example.co.uk",
            "auth.example.co.uk"
        ));
        assert!(!credentials_may_go("127.0.0.1", "127.0.0.2"));
        assert!(credentials_may_go("127.0.0.1", "127.0.0.1"));
        assert!(!credentials_may_go("localhost", "otherhost"));
    }

    /// Other tenants of a shared hosting domain are other sites.
    #[test]
    fn registrable_domains_come_from_the_public_suffix_list() {
        assert!(!credentials_may_go("me.github.io", "evil.github.io"));
        assert!(!credentials_may_go("myreg.azurecr.io", "other.azurecr.io"));
        assert!(!credentials_may_go(
            "mine.s3.amazonaws.com",
            "theirs.s3.amazonaws.com"
        ));
        assert!(!credentials_may_go(
            "111.dkr.ecr.us-east-1.amazonaws.com",
            "222.dkr.ecr.us-east-1.amazonaws.com"
        ));
        assert!(credentials_may_go(
            "111.dkr.ecr.us-east-1.amazonaws.com",
            "111.dkr.ecr.us-east-1.amazonaws.com"
        ));
        assert!(credentials_may_go("registry-1.docker.io", "auth.docker.io"));
        assert!(credentials_may_go("ghcr.io", "ghcr.io"));
    }

    /// An https upstream's credentials never go to a realm over plain http, even on its host.
    #[test]
    fn no_credentials_over_a_downgraded_realm() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        let up = u("https://registry.example.com/");
        assert!(!credentials_may_go_to(
            &up,
            &u("http://registry.example.com/token")
        ));
        assert!(!credentials_may_go_to(
            &up,
            &u("http://auth.example.com/token")
        ));
        assert!(credentials_may_go_to(
            &up,
            &u("https://auth.example.com/token")
        ));
        let plain = u("http://127.0.0.1:5000/");
        assert!(credentials_may_go_to(
            &plain,
            &u("http://127.0.0.1:5000/token")
        ));
    }

    /// No lifetime a token service can send breaks the token cache's deadline arithmetic.
    #[test]
    fn absurd_token_lifetimes_are_clamped() {
        for (answer, lifetime) in [
            (r#"{"token":"t","expires_in":18446744073709551615}"#, 86400),
            (r#"{"token":"t","expires_in":-5}"#, 60),
            (r#"{"token":"t","expires_in":1e300}"#, 86400),
            (
                r#"{"token":"t","expires_in":99999999999999999999999}"#,
                86400,
            ),
            (r#"{"token":"t","expires_in":-1e300}"#, 60),
            (r#"{"token":"t","expires_in":300.7}"#, 300),
        ] {
            let a: TokenAnswer = serde_json::from_str(answer).unwrap();
            let (_, secs) = a.into_token().unwrap();
            assert_eq!(secs, lifetime, "{answer}");
            assert!(
                std::time::Instant::now()
                    .checked_add(std::time::Duration::from_secs(secs))
                    .is_some()
            );
        }
    }

    #[test]
    fn token_answers() {
        let a: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"t","expires_in":10}"#).unwrap();
        assert_eq!(a.into_token(), Some(("t".into(), 60)));
        let a: TokenAnswer = serde_json::from_str(r#"{"token":"u","expires_in":300}"#).unwrap();
        assert_eq!(a.into_token(), Some(("u".into(), 300)));
        let a: TokenAnswer = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(a.into_token(), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any header value parses to something, quickly, without panicking.
            #[test]
            fn challenges_never_panic(s in "\\PC{0,300}") {
                let _ = parse_challenges(&s);
            }

            /// A challenge we build is read back whole, whatever the quoting needs.
            #[test]
            fn built_challenges_read_back(realm in "https://[a-z]{1,10}/[a-z\"\\\\]{0,10}", service in "[a-z.]{1,20}", scope in "[a-z:/]{1,30}") {
                let q = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
                let h = format!("Bearer realm=\"{}\",service=\"{}\",scope=\"{}\"", q(&realm), q(&service), q(&scope));
                let c = parse_challenges(&h);
                prop_assert_eq!(c, vec![Challenge::Bearer { realm, service: Some(service), scopes: vec![scope] }]);
            }
        }
    }
}
