//! Who may pull what (`[auth]`): clients authenticate with HTTP Basic against an htpasswd file
//! of bcrypt entries, and `[[auth.allow]]` rules say which users (or anonymous clients) may pull
//! which `<upstream>/<repository>` patterns.
//!
//! `passwords` holds the users and checks passwords (remembered once right, bounded in
//! parallel, re-read when the file changes); `throttle` makes guessers wait their turn before a
//! guess is checked at all.

mod passwords;
mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::blocking::off_the_workers;
use crate::config::{AllowRule, AuthConfig, UserMatch};
use crate::htpasswd::HtpasswdError;
use crate::metrics::{AuthFailure, Metrics};
use crate::shutdown::Shutdown;
use passwords::{Passwords, Reload};
use throttle::{Throttle, Turn};

/// How often the htpasswd file is looked at.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    Anonymous,
    User(String),
}

/// Why credentials were not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Given, checked, and wrong (or not Basic credentials at all).
    Wrong,
    /// Too many recent failures from this address or for this name: not checked; try again
    /// after this long.
    TooMany(Duration),
}

pub(crate) struct Auth {
    realm: String,
    anonymous_ping: bool,
    rules: Vec<AllowRule>,
    passwords: Passwords,
    throttle: Throttle,
    metrics: Arc<Metrics>,
}

impl Auth {
    pub(crate) fn new(cfg: &AuthConfig, metrics: Arc<Metrics>) -> Result<Auth, HtpasswdError> {
        Ok(Auth {
            realm: cfg.realm.clone(),
            anonymous_ping: cfg.anonymous_ping,
            rules: cfg.allow.clone(),
            passwords: Passwords::new(cfg.htpasswd.clone())?,
            throttle: Throttle::default(),
            metrics,
        })
    }

    /// Whether `GET /v2/` answers anonymous clients 200 (`[auth] anonymous_ping`).
    pub(crate) fn anonymous_ping(&self) -> bool {
        self.anonymous_ping
    }

    /// `WWW-Authenticate` for a 401.
    pub(crate) fn challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.realm)
    }

    /// Who sent a request with this `Authorization` header (empty Basic credentials, as
    /// `skopeo --no-creds` sends, are anonymous). After failures from the address or for the
    /// name, a credential not already known to be right waits its turn before it is checked.
    pub(crate) async fn identify(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Result<Identity, Refusal> {
        let Some(value) = authorization else {
            return Ok(Identity::Anonymous);
        };
        let decoded = value
            .strip_prefix(b"Basic ")
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim_ascii())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let (user, password) = match decoded.as_deref().and_then(|c| c.split_once(':')) {
            Some(("", "")) => return Ok(Identity::Anonymous),
            Some(pair) => pair,
            None => {
                self.metrics.auth_failed(AuthFailure::BadCredentials);
                self.throttle.failed(peer, "");
                return Err(Refusal::Wrong);
            }
        };
        if let Some(u) = self.passwords.remembered(user, password) {
            return Ok(Identity::User(u));
        }
        match self.throttle.turn(peer, user) {
            Turn::Now => {}
            Turn::After(wait) => {
                self.metrics.auth_failed(AuthFailure::Throttled);
                tokio::time::sleep(wait).await;
            }
            Turn::Refused(wait) => {
                self.metrics.auth_failed(AuthFailure::Throttled);
                return Err(Refusal::TooMany(wait));
            }
        }
        match self.passwords.verify(user, password).await {
            Some(u) => Ok(Identity::User(u)),
            None => {
                self.metrics.auth_failed(AuthFailure::BadCredentials);
                self.throttle.failed(peer, user);
                Err(Refusal::Wrong)
            }
        }
    }

    /// Counts a refusal (in the metrics, by reason).
    pub(crate) fn refused(&self, reason: AuthFailure) {
        self.metrics.auth_failed(reason);
    }

    /// Whether `who` may pull `repo` (as the upstream spells it) from `upstream`. A signed-in
    /// user may pull what anonymous clients may.
    pub(crate) fn allows(&self, who: &Identity, upstream: &str, repo: &str) -> bool {
        self.rules.iter().any(|rule| {
            let user_matches = rule.users.iter().any(|u| match (u, who) {
                (UserMatch::Anonymous, _) => true,
                (UserMatch::AnySignedIn, Identity::User(_)) => true,
                (UserMatch::User(allowed), Identity::User(name)) => allowed == name,
                (_, Identity::Anonymous) => false,
            });
            user_matches
                && rule
                    .repositories
                    .iter()
                    .any(|(up, pattern)| up == upstream && pattern.matches(repo))
        })
    }

    /// Re-reads the htpasswd file when its content changes, until shutdown. A file that no
    /// longer loads keeps the old users, and says so; a file that is gone signs everyone out.
    pub(crate) async fn watch(self: Arc<Self>, mut shutdown: Shutdown) {
        let Some(path) = self.passwords.path().map(|p| p.display().to_string()) else {
            return;
        };
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let me = self.clone();
            match off_the_workers(move || me.passwords.reload()).await {
                Reload::Unchanged => {}
                Reload::Loaded(users) => tracing::info!(path = %path, users, "htpasswd reloaded"),
                Reload::Gone => tracing::warn!(
                    path = %path,
                    "the htpasswd file is gone: nobody can sign in until it is back"
                ),
                Reload::Refused(e) => tracing::warn!(
                    error = %e,
                    "htpasswd changed but does not load: keeping the previous users"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoPattern;

    /// Users, and (upstream, pattern) pairs.
    type Rule<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

    fn auth(rules: Vec<Rule<'_>>) -> Auth {
        let cfg = AuthConfig {
            htpasswd: None,
            realm: "r".into(),
            anonymous_ping: false,
            allow: rules
                .into_iter()
                .map(|(users, repos)| AllowRule {
                    users: users.into_iter().map(UserMatch::parse).collect(),
                    repositories: repos
                        .into_iter()
                        .map(|(u, p)| (u.to_owned(), RepoPattern::parse(p).unwrap()))
                        .collect(),
                })
                .collect(),
        };
        Auth::new(&cfg, Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn rules_allow_by_user_and_pattern() {
        let a = auth(vec![
            (vec!["anonymous"], vec![("docker.io", "library/**")]),
            (
                vec!["ci"],
                vec![("docker.io", "**"), ("quay.io", "private/*")],
            ),
            (vec!["*"], vec![("quay.io", "shared/**")]),
        ]);
        let anon = Identity::Anonymous;
        let ci = Identity::User("ci".into());
        let bob = Identity::User("bob".into());
        assert!(a.allows(&anon, "docker.io", "library/busybox"));
        assert!(!a.allows(&anon, "docker.io", "me/app"));
        assert!(!a.allows(&anon, "quay.io", "library/busybox"));
        assert!(a.allows(&ci, "docker.io", "me/app"));
        assert!(a.allows(&ci, "quay.io", "private/x"));
        assert!(!a.allows(&ci, "quay.io", "private/x/y"));
        assert!(
            a.allows(&bob, "docker.io", "library/busybox"),
            "users may pull what anonymous may"
        );
        assert!(!a.allows(&bob, "docker.io", "me/app"));
        assert!(a.allows(&bob, "quay.io", "shared/a/b"));
        assert!(!a.allows(&anon, "quay.io", "shared/a/b"));
    }

    #[tokio::test]
    async fn empty_basic_credentials_are_anonymous_and_nonsense_is_refused() {
        let a = auth(vec![]);
        assert_eq!(a.identify(None, None).await.unwrap(), Identity::Anonymous);
        assert_eq!(
            a.identify(Some(b"Basic Og=="), None).await.unwrap(),
            Identity::Anonymous
        );
        assert_eq!(
            a.identify(Some(b"Bearer x"), None).await,
            Err(Refusal::Wrong)
        );
        assert!(a.identify(Some(b"Basic !!!"), None).await.is_err());
        assert!(a.identify(Some(b"Basic dTpw"), None).await.is_err()); // u:p, no such user
    }
}
