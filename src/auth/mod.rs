//! Who may pull what (`[auth]`): clients authenticate with HTTP Basic against an htpasswd file
//! of bcrypt entries, and `[[auth.allow]]` rules say which users (or anonymous clients) may pull
//! which `<upstream>/<repository>` patterns.
//!
//! bcrypt is slow on purpose, so a verified credential is remembered for a few minutes, keyed by
//! a SHA-256 of it (never the password itself), and a pull of many layers costs one
//! verification. Verifications run on the blocking pool. Failures from one address are counted,
//! and past a few in a minute each answer is delayed, doubling up to a cap. The htpasswd file is
//! re-read when it changes, and the remembered credentials are forgotten then.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::blocking::off_the_workers;
use crate::config::{AllowRule, AuthConfig, UserMatch};
use crate::htpasswd::{HtpasswdError, Users, load_htpasswd};
use crate::metrics::{AuthFailure, Metrics};
use crate::shutdown::Shutdown;

/// How long a verified credential is remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(300);
/// Failures from one address within this window count towards slowing it down.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Failures answered at once before the delays begin.
const FREE_FAILURES: u32 = 3;
/// The longest delay before a failure is answered.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// How often the htpasswd file is looked at.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    Anonymous,
    User(String),
}

/// Credentials were given and are wrong.
#[derive(Debug)]
pub(crate) struct BadCredentials;

pub(crate) struct Auth {
    realm: String,
    anonymous_ping: bool,
    rules: Vec<AllowRule>,
    htpasswd: Option<PathBuf>,
    users: RwLock<(Arc<Users>, Option<SystemTime>)>,
    verified: moka::sync::Cache<[u8; 32], String>,
    failures: moka::sync::Cache<IpAddr, u32>,
    metrics: Arc<Metrics>,
}

impl Auth {
    pub(crate) fn new(cfg: &AuthConfig, metrics: Arc<Metrics>) -> Result<Auth, HtpasswdError> {
        let (users, mtime) = match &cfg.htpasswd {
            Some(p) => (load_htpasswd(p)?, modified(p)),
            None => (Users::default(), None),
        };
        Ok(Auth {
            realm: cfg.realm.clone(),
            anonymous_ping: cfg.anonymous_ping,
            rules: cfg.allow.clone(),
            htpasswd: cfg.htpasswd.clone(),
            users: RwLock::new((Arc::new(users), mtime)),
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(REMEMBER_FOR)
                .build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(FAILURE_WINDOW)
                .build(),
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
    /// `skopeo --no-creds` sends, are anonymous). Wrong credentials are answered late when the
    /// address has failed often.
    pub(crate) async fn identify(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Result<Identity, BadCredentials> {
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
        let verified = match decoded.as_deref().and_then(|c| c.split_once(':')) {
            Some(("", "")) => return Ok(Identity::Anonymous),
            Some((user, password)) => self.verify(user, password).await,
            None => None,
        };
        match verified {
            Some(user) => Ok(Identity::User(user)),
            None => {
                self.failed(peer, AuthFailure::BadCredentials).await;
                Err(BadCredentials)
            }
        }
    }

    /// The user, if the password is theirs: remembered, or checked with bcrypt off the workers.
    async fn verify(&self, user: &str, password: &str) -> Option<String> {
        let key: [u8; 32] = Sha256::digest(format!("{user}\0{password}")).into();
        if let Some(u) = self.verified.get(&key) {
            return Some(u);
        }
        let users = self
            .users
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone();
        let (u, p) = (user.to_owned(), password.to_owned());
        let ok = off_the_workers(move || match users.hash(&u) {
            Some(hash) => bcrypt::verify(&p, hash).unwrap_or(false),
            // As slow for an unknown user as for a known one: names cannot be probed.
            None => {
                let _ = bcrypt::verify(&p, dummy_hash());
                false
            }
        })
        .await;
        ok.then(|| {
            self.verified.insert(key, user.to_owned());
            user.to_owned()
        })
    }

    /// Counts a refusal (in the metrics, by reason).
    pub(crate) fn refused(&self, reason: AuthFailure) {
        self.metrics.auth_failed(reason);
    }

    /// Counts wrong credentials; past [`FREE_FAILURES`] from one address in a minute, waits
    /// before the answer (100 ms, doubling, at most [`MAX_DELAY`]).
    async fn failed(&self, peer: Option<IpAddr>, reason: AuthFailure) {
        self.metrics.auth_failed(reason);
        let Some(ip) = peer else { return };
        let n = self.failures.get(&ip).unwrap_or(0) + 1;
        self.failures.insert(ip, n);
        if n > FREE_FAILURES {
            let shift = (n - FREE_FAILURES - 1).min(16);
            let delay = (Duration::from_millis(100) * (1u32 << shift)).min(MAX_DELAY);
            self.metrics.auth_failed(AuthFailure::Throttled);
            tokio::time::sleep(delay).await;
        }
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

    /// Re-reads the htpasswd file when it changes, until shutdown. A file that no longer loads
    /// keeps the old users, and says so.
    pub(crate) async fn watch(self: Arc<Self>, mut shutdown: Shutdown) {
        let Some(path) = self.htpasswd.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let p = path.clone();
            let mtime = off_the_workers(move || modified(&p)).await;
            if mtime == self.users.read().unwrap_or_else(|e| e.into_inner()).1 {
                continue;
            }
            let p = path.clone();
            match off_the_workers(move || load_htpasswd(&p)).await {
                Ok(users) => {
                    tracing::info!(path = %path.display(), users = users.len(), "htpasswd reloaded");
                    *self.users.write().unwrap_or_else(|e| e.into_inner()) =
                        (Arc::new(users), mtime);
                    self.verified.invalidate_all();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "htpasswd changed but does not load: keeping the previous users");
                    self.users.write().unwrap_or_else(|e| e.into_inner()).1 = mtime;
                }
            }
        }
    }
}

/// A bcrypt hash (at `htpasswd -B`'s cost) of nothing anyone knows, checked for unknown users.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash(Sha256::digest(b"nobody").as_slice(), 5).unwrap_or_default())
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
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
        assert!(a.identify(Some(b"Bearer x"), None).await.is_err());
        assert!(a.identify(Some(b"Basic !!!"), None).await.is_err());
        assert!(a.identify(Some(b"Basic dTpw"), None).await.is_err()); // u:p, no such user
    }
}
