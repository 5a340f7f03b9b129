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

/// The token service's answer (`token` or `access_token`, lifetime in seconds).
#[derive(serde::Deserialize)]
pub(super) struct TokenAnswer {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl TokenAnswer {
    /// The token and how long it may be used (a missing or short lifetime counts as 60s, as the
    /// spec says).
    pub(super) fn into_token(self) -> Option<(String, u64)> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        Some((token, self.expires_in.unwrap_or(60).max(60)))
    }
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

/// The registrable domain of a host: its last two labels, or three where the second-level label
/// is a common public second-level (`co.uk`, `com.au`). A host with one label has none.
fn registrable_domain(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    if labels.len() < 2 {
        return None;
    }
    let n = labels.len();
    let second = labels[n - 2];
    let public_second = labels[n - 1].len() == 2
        && matches!(
            second,
            "co" | "com" | "net" | "org" | "gov" | "ac" | "edu" | "ne" | "or"
        );
    let take = if public_second { 3 } else { 2 };
    (n >= take).then(|| labels[n - take..].join("."))
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
