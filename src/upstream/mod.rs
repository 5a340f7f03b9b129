//! The client side: one [`Upstream`] per configured registry, speaking the distribution API over
//! reqwest + rustls.
//!
//! An `Upstream` knows its base URL, its stored credentials and its token cache. The cache asks it
//! for things in registry terms (`calls.rs`: a manifest, a blob, a tags list, referrers) and gets
//! back typed answers or an [`UpstreamError`] that says what went wrong (not found, denied,
//! rate-limited, unreachable) and whether asking again may help. Wire paths, `Accept` headers and
//! header parsing live in this module and nowhere else. Files: `transport.rs` (client, TLS,
//! retries, cool-down, the request bound), `token.rs` (tokens and grants), `auth.rs` (challenges
//! and where credentials may go), `credentials.rs` (where they come from), `body.rs`, `error.rs`.
//! `set.rs` holds every configured upstream as one [`Upstreams`]: the one place that knows which
//! upstream a name means.

mod auth;
mod body;
mod calls;
mod credentials;
mod error;
mod set;
mod token;
mod transport;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use url::Url;

use crate::config::{RepoPattern, UpstreamConfig};
use crate::metrics::Metrics;
use crate::reference::RepoName;
use auth::Challenge;
pub(crate) use body::BlobBody;
pub(crate) use calls::ReferrersAnswer;
use credentials::Credentials;
pub(crate) use error::{BuildError, Origin, Resource, UpstreamError};
pub(crate) use set::{PathUnresolved, Unresolved, Upstreams};
use token::CachedToken;

/// How long a token is kept at most, whatever lifetime the token service gave it.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(3600);

/// One configured registry.
pub(crate) struct Upstream {
    pub(crate) name: String,
    base: Url,
    library_prefix: bool,
    pub(crate) is_default: bool,
    client: reqwest::Client,
    credentials: Credentials,
    /// The allow-list, if the site set one.
    repositories: Option<Vec<RepoPattern>>,
    /// The last challenge this registry sent, so later requests can go straight for a token.
    challenge: RwLock<Option<Challenge>>,
    /// Tokens by (realm, service, scope).
    tokens: moka::future::Cache<String, CachedToken>,
    /// Requests in flight to this registry at once: one slow registry cannot take every
    /// connection the mirror has.
    slots: Arc<Semaphore>,
    /// After a 429 with `Retry-After`: no request goes out before this instant.
    cool_down_until: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
    /// `[cache] offline`: every call fails at once with [`UpstreamError::Offline`].
    pub(crate) offline: bool,
}

impl Upstream {
    /// An upstream as configured; `offline` (`[cache] offline`) means it is never contacted.
    pub(crate) fn new(
        cfg: &UpstreamConfig,
        metrics: Arc<Metrics>,
        offline: bool,
    ) -> Result<Upstream, BuildError> {
        let client = transport::build_client(cfg)?;
        let mut base = cfg.url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Upstream {
            name: cfg.name.clone(),
            base,
            library_prefix: cfg.library_prefix,
            is_default: cfg.default,
            client,
            credentials: Credentials::new(cfg.credentials.clone(), helper_server(cfg)),
            repositories: cfg.repositories.clone(),
            challenge: RwLock::new(None),
            tokens: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TOKEN_CACHE_TTL)
                .build(),
            slots: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            cool_down_until: Mutex::new(None),
            metrics,
            offline,
        })
    }

    /// The repository name as this upstream spells it (Docker Hub's `library/` rule). Applied
    /// once, when a request's upstream is picked; everything below works with the result.
    pub(crate) fn spell(&self, repo: RepoName) -> RepoName {
        if self.library_prefix {
            repo.with_library_prefix()
        } else {
            repo
        }
    }

    /// Whether the site's allow-list (if any) lets clients pull `repo` (as spelled) from here.
    pub(crate) fn allows(&self, repo: &RepoName) -> bool {
        self.repositories
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p.matches(repo.as_str())))
    }

    /// `/v2/<repo>/<suffix>` under this registry's URL.
    fn url(&self, repo: &RepoName, suffix: &str, query: Option<&str>) -> Url {
        let mut url = self.base.clone();
        // `repo` and `suffix` come from parsed types, so they hold only URL-safe characters.
        url.set_path(&format!("{}v2/{}/{}", self.base.path(), repo, suffix));
        url.set_query(query);
        url
    }
}

/// What a credential helper is asked about: Docker Hub's historical server URL, else the host.
fn helper_server(cfg: &UpstreamConfig) -> String {
    if cfg.name == "docker.io" {
        return "https://index.docker.io/v1/".into();
    }
    match (cfg.url.host_str(), cfg.url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => cfg.name.clone(),
    }
}
