//! The client side: one [`Upstream`] per configured registry, speaking the distribution API over
//! reqwest + rustls.
//!
//! An `Upstream` knows its base URL, its stored credentials and its token cache. Callers ask for a
//! path under `/v2/<repo>/` and get back a successful response or an [`UpstreamError`] that already
//! says what went wrong in registry terms (not found, denied, rate-limited, unreachable). The
//! token dance (challenge, token, one retry after a 401), redirects (followed with a hop limit;
//! reqwest drops `Authorization` when the host changes) and rate-limit headers live here and
//! nowhere else. Responses are never decompressed: blobs are bytes.

pub mod auth;
pub mod credentials;

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use reqwest::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::config::{RepoPattern, UpstreamConfig};
use crate::metrics::Metrics;
use crate::reference::RepoName;
use auth::Challenge;
use credentials::{Credential, Credentials};

/// What can go wrong talking to an upstream, in registry terms.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} is unreachable: {reason}")]
    Unreachable { upstream: String, reason: String },
    #[error("upstream {upstream} has no such {what}")]
    NotFound {
        upstream: String,
        what: &'static str,
    },
    #[error("upstream {upstream} refused access (status {status})")]
    Denied { upstream: String, status: u16 },
    #[error("upstream {upstream} is rate-limiting this mirror")]
    TooManyRequests {
        upstream: String,
        retry_after: Option<u64>,
    },
    #[error("upstream {upstream} answered status {status}")]
    Status { upstream: String, status: u16 },
    #[error("upstream {upstream} sent a bad answer: {reason}")]
    BadResponse { upstream: String, reason: String },
}

impl UpstreamError {
    /// Whether serving stale cached data is the right answer to this error (the upstream is
    /// unhealthy or limiting us, as opposed to telling us the thing is gone).
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. }
            | UpstreamError::TooManyRequests { .. }
            | UpstreamError::BadResponse { .. } => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            UpstreamError::NotFound { .. } | UpstreamError::Denied { .. } => false,
        }
    }
}

/// The manifest media types we ask upstreams for, all at once, so the cache holds what the
/// registry really stores whatever the client accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws, application/vnd.docker.distribution.manifest.v1+json";

/// An upstream answer, holding one of the upstream's concurrency slots until it is dropped, so
/// a slow body counts against the bound as long as it streams.
pub struct UpstreamResponse {
    resp: Response,
    _slot: OwnedSemaphorePermit,
}

impl Deref for UpstreamResponse {
    type Target = Response;
    fn deref(&self) -> &Response {
        &self.resp
    }
}

impl DerefMut for UpstreamResponse {
    fn deref_mut(&mut self) -> &mut Response {
        &mut self.resp
    }
}

/// How long a request may wait for one of the upstream's slots before giving up.
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// Retries for an idempotent request that found no connection or got a 5xx.
const RETRIES: u32 = 2;

/// A cached bearer token and when it stops being usable.
#[derive(Clone)]
struct CachedToken {
    value: String,
    usable_until: Instant,
}

/// One configured registry.
pub struct Upstream {
    pub name: String,
    base: Url,
    pub library_prefix: bool,
    pub is_default: bool,
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
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> Result<Upstream, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("entrepot/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if let Some(path) = &cfg.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| format!("upstream {}: ca_cert {}: {e}", cfg.name, path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("upstream {}: ca_cert {}: {e}", cfg.name, path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if cfg.tls_insecure_skip_verify {
            tracing::warn!(upstream = %cfg.name, "tls_insecure_skip_verify: certificates from this upstream are NOT verified");
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| format!("upstream {}: cannot build HTTP client: {e}", cfg.name))?;
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
                .time_to_live(Duration::from_secs(3600))
                .build(),
            slots: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            cool_down_until: Mutex::new(None),
            metrics,
        })
    }

    /// `HEAD` or `GET` of a blob.
    pub async fn blob(
        &self,
        method: Method,
        repo: &RepoName,
        digest: &crate::reference::Digest,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.send(
            method,
            repo,
            &format!("blobs/{digest}"),
            None,
            HeaderMap::new(),
            "blob",
        )
        .await
    }

    /// Whether the site's allow-list (if any) lets clients pull `repo` from here.
    pub fn allows(&self, repo: &RepoName) -> bool {
        let spelled = self.upstream_repo(repo);
        self.repositories
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p.matches(spelled.as_str())))
    }

    /// The repository name as this upstream spells it (Docker Hub's `library/` rule).
    pub fn upstream_repo(&self, repo: &RepoName) -> RepoName {
        if self.library_prefix {
            repo.with_library_prefix()
        } else {
            repo.clone()
        }
    }

    fn url(&self, repo: &RepoName, suffix: &str) -> Url {
        let mut url = self.base.clone();
        // `repo` and `suffix` come from parsed types, so they hold only URL-safe characters.
        url.set_path(&format!("{}v2/{}/{}", self.base.path(), repo, suffix));
        url
    }

    /// Sends `method` to `/v2/<repo>/<suffix>` with the given headers, answering the auth challenge
    /// if one comes. Returns the response if its status is 2xx (or 304); anything else becomes an
    /// [`UpstreamError`]. `what` names the thing asked for, for "no such ..." errors and metrics.
    pub async fn send(
        &self,
        method: Method,
        repo: &RepoName,
        suffix: &str,
        query: Option<&str>,
        headers: HeaderMap,
        what: &'static str,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.check_cool_down()?;
        let slot = tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| UpstreamError::Unreachable {
                upstream: self.name.clone(),
                reason: format!("no free slot for {SLOT_WAIT:?}: the registry is slow"),
            })?
            .expect("the semaphore is never closed");
        let repo = self.upstream_repo(repo);
        let mut url = self.url(&repo, suffix);
        url.set_query(query);
        let scope = format!("repository:{repo}:pull");

        let mut auth = self.cached_authorization(&scope).await;
        let mut retried = false;
        loop {
            let resp = self
                .execute(
                    method.clone(),
                    url.clone(),
                    headers.clone(),
                    auth.clone(),
                    what,
                )
                .await?;
            self.note_rate_limit(resp.headers());
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                let challenge = resp
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(auth::parse_challenges)
                    .collect::<Vec<_>>();
                let Some(challenge) = auth::preferred(challenge) else {
                    return Err(self.status_error(status, what, resp.headers()));
                };
                *self.challenge.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(challenge.clone());
                auth = self.fresh_authorization(&challenge, &scope).await?;
                if auth.is_none() {
                    return Err(self.status_error(status, what, resp.headers()));
                }
                continue;
            }
            if status.is_success() || status == StatusCode::NOT_MODIFIED {
                return Ok(UpstreamResponse { resp, _slot: slot });
            }
            let err = self.status_error(status, what, resp.headers());
            if let UpstreamError::TooManyRequests {
                retry_after: Some(secs),
                ..
            } = &err
            {
                self.start_cool_down(*secs);
            }
            return Err(err);
        }
    }

    /// One HTTP exchange, retried (twice, with a short backoff) only when no connection could be
    /// made: the request is idempotent and nothing reached the registry.
    async fn execute(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        auth: Option<HeaderValue>,
        what: &'static str,
    ) -> Result<Response, UpstreamError> {
        let kind = if method == Method::HEAD {
            match what {
                "blob" => "blob_head",
                _ => "manifest_head",
            }
        } else {
            what
        };
        let mut attempt = 0;
        loop {
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = &auth {
                req = req.header(header::AUTHORIZATION, a.clone());
            }
            attempt += 1;
            let may_retry = attempt <= RETRIES;
            match req.send().await {
                Ok(resp) => {
                    self.metrics
                        .upstream_requests
                        .with_label_values(&[self.name.as_str(), kind, resp.status().as_str()])
                        .inc();
                    // GET and HEAD are idempotent: a registry's passing 5xx is worth another try.
                    if resp.status().is_server_error() && may_retry {
                        tracing::debug!(upstream = %self.name, status = %resp.status(), attempt, "retrying");
                        backoff(attempt).await;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    self.metrics
                        .upstream_requests
                        .with_label_values(&[self.name.as_str(), kind, "error"])
                        .inc();
                    if e.is_redirect() {
                        return Err(UpstreamError::BadResponse {
                            upstream: self.name.clone(),
                            reason: format!("redirects: {}", error_chain(&e)),
                        });
                    }
                    if e.is_connect() && may_retry {
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(UpstreamError::Unreachable {
                        upstream: self.name.clone(),
                        reason: error_chain(&e),
                    });
                }
            }
        }
    }

    /// Fails fast while the registry has asked us (429 + `Retry-After`) to wait.
    fn check_cool_down(&self) -> Result<(), UpstreamError> {
        let until = *self
            .cool_down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match until {
            Some(t) if t > Instant::now() => Err(UpstreamError::TooManyRequests {
                upstream: self.name.clone(),
                retry_after: Some((t - Instant::now()).as_secs().max(1)),
            }),
            _ => Ok(()),
        }
    }

    fn start_cool_down(&self, secs: u64) {
        // A registry asking for more than an hour is capped: we will ask again then.
        let until = Instant::now() + Duration::from_secs(secs.min(3600));
        tracing::warn!(upstream = %self.name, secs, "rate-limited: not contacting this registry until Retry-After passes");
        *self
            .cool_down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    fn status_error(
        &self,
        status: StatusCode,
        what: &'static str,
        headers: &HeaderMap,
    ) -> UpstreamError {
        let upstream = self.name.clone();
        match status.as_u16() {
            404 => UpstreamError::NotFound { upstream, what },
            401 | 403 => UpstreamError::Denied {
                upstream,
                status: status.as_u16(),
            },
            429 => UpstreamError::TooManyRequests {
                upstream,
                retry_after: headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            },
            s => UpstreamError::Status {
                upstream,
                status: s,
            },
        }
    }

    fn note_rate_limit(&self, headers: &HeaderMap) {
        // Docker Hub: `ratelimit-remaining: 76;w=21600`
        if let Some(n) = headers
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            self.metrics
                .ratelimit_remaining
                .with_label_values(&[self.name.as_str()])
                .set(n);
        }
    }

    fn token_key(realm: &str, service: Option<&str>, scope: &str) -> String {
        format!("{realm}\n{}\n{scope}", service.unwrap_or(""))
    }

    /// The Authorization to send before any challenge, from what we learned earlier.
    async fn cached_authorization(&self, scope: &str) -> Option<HeaderValue> {
        let challenge = self
            .challenge
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        match challenge {
            Challenge::Basic => self.basic_authorization(false).await.ok().flatten(),
            Challenge::Bearer { realm, service, .. } => {
                let key = Self::token_key(&realm, service.as_deref(), scope);
                let tok = self.tokens.get(&key).await?;
                if tok.usable_until <= Instant::now() {
                    self.tokens.invalidate(&key).await;
                    return None;
                }
                HeaderValue::from_str(&format!("Bearer {}", tok.value)).ok()
            }
        }
    }

    /// `Basic` with the stored username and password, if there are any (not for identity tokens).
    async fn basic_authorization(&self, fresh: bool) -> Result<Option<HeaderValue>, UpstreamError> {
        match self.credential(fresh).await? {
            Some(Credential::Basic { username, password }) => {
                Ok(basic_value(&username, password.expose()))
            }
            _ => Ok(None),
        }
    }

    async fn credential(&self, fresh: bool) -> Result<Option<Credential>, UpstreamError> {
        self.credentials
            .get(fresh)
            .await
            .map_err(|reason| UpstreamError::Unreachable {
                upstream: self.name.clone(),
                reason: format!("stored credentials: {reason}"),
            })
    }

    /// Answers a challenge: Basic gets the stored credentials (if any); Bearer gets a new token.
    async fn fresh_authorization(
        &self,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        match challenge {
            Challenge::Basic => self.basic_authorization(true).await,
            Challenge::Bearer {
                realm,
                service,
                scopes,
            } => {
                let token = self
                    .fetch_token(realm, service.as_deref(), scopes, scope)
                    .await?;
                let (value, lifetime) = token;
                // Expire a little early so a token never dies in flight.
                let skew = (lifetime / 10).clamp(5, 30);
                let key = Self::token_key(realm, service.as_deref(), scope);
                self.tokens
                    .insert(
                        key,
                        CachedToken {
                            value: value.clone(),
                            usable_until: Instant::now() + Duration::from_secs(lifetime - skew),
                        },
                    )
                    .await;
                Ok(HeaderValue::from_str(&format!("Bearer {value}")).ok())
            }
        }
    }

    /// Asks the realm for a token: with stored credentials only if the realm is on this
    /// upstream's own site (invariant 7), anonymously otherwise. A refused credential from a
    /// helper or a file is fetched afresh once (ECR's passwords expire; secrets rotate).
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        challenge_scopes: &[String],
        scope: &str,
    ) -> Result<(String, u64), UpstreamError> {
        let bad = |reason: String| UpstreamError::BadResponse {
            upstream: self.name.clone(),
            reason,
        };
        let url = Url::parse(realm).map_err(|e| bad(format!("token realm {realm:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("token realm {realm:?} is not http(s)")));
        }
        let mut scopes: Vec<&str> = challenge_scopes.iter().map(String::as_str).collect();
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
        let realm_host = url.host_str().unwrap_or("");
        let own_host = self.base.host_str().unwrap_or("");
        let may_send = auth::credentials_may_go(own_host, realm_host);
        if !may_send && self.credentials.is_configured() {
            tracing::warn!(
                upstream = %self.name,
                realm = %realm_host,
                "token realm is on another site: asking for an anonymous token, credentials withheld"
            );
        }
        let mut fresh = false;
        // Plain credentials go by GET with Basic (docker's way); a token service that refuses
        // that (404/405) gets the OAuth2 password grant by POST instead (containerd's fallback).
        let mut password_grant = false;
        loop {
            let credential = if may_send {
                self.credential(fresh).await?
            } else {
                None
            };
            let oauth = |grant: &[(&str, &str)]| {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in grant {
                    form.append_pair(k, v);
                }
                form.append_pair("client_id", "entrepot");
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                form.append_pair("scope", &scopes.join(" "));
                self.client
                    .post(url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.finish())
            };
            let req = match &credential {
                // docker's identitytoken: the OAuth2 refresh-token grant, by POST.
                Some(Credential::IdentityToken(t)) => oauth(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t.expose()),
                    ("access_type", "offline"),
                ]),
                Some(Credential::Basic { username, password }) if password_grant => oauth(&[
                    ("grant_type", "password"),
                    ("username", username),
                    ("password", password.expose()),
                ]),
                basic => {
                    let mut u = url.clone();
                    {
                        let mut q = u.query_pairs_mut();
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        for s in &scopes {
                            q.append_pair("scope", s);
                        }
                    }
                    let mut req = self.client.get(u);
                    if let Some(Credential::Basic { username, password }) = basic
                        && let Some(h) = basic_value(username, password.expose())
                    {
                        req = req.header(header::AUTHORIZATION, h);
                    }
                    req
                }
            };
            let resp = req.send().await.map_err(|e| UpstreamError::Unreachable {
                upstream: self.name.clone(),
                reason: format!("token service: {}", error_chain(&e)),
            })?;
            let status = resp.status();
            self.metrics
                .token_requests
                .with_label_values(&[self.name.as_str(), status.as_str()])
                .inc();
            if status == StatusCode::UNAUTHORIZED && credential.is_some() && !fresh {
                fresh = true;
                continue;
            }
            if matches!(status.as_u16(), 404 | 405)
                && matches!(credential, Some(Credential::Basic { .. }))
                && !password_grant
            {
                password_grant = true;
                continue;
            }
            if !status.is_success() {
                return Err(match status.as_u16() {
                    401 | 403 => UpstreamError::Denied {
                        upstream: self.name.clone(),
                        status: status.as_u16(),
                    },
                    429 => self.status_error(status, "token", resp.headers()),
                    _ => UpstreamError::Status {
                        upstream: self.name.clone(),
                        status: status.as_u16(),
                    },
                });
            }
            let mut resp = resp;
            let body = read_body(&mut resp, 1 << 20, &self.name).await?;
            let answer: auth::TokenAnswer = serde_json::from_slice(&body)
                .map_err(|e| bad(format!("token answer is not JSON: {e}")))?;
            return answer
                .into_token()
                .ok_or_else(|| bad("token answer holds no token".into()));
        }
    }
}

/// An `Authorization: Basic` value, marked sensitive so it never shows in debug output.
fn basic_value(user: &str, password: &str) -> Option<HeaderValue> {
    use base64::Engine as _;
    let raw = format!("{user}:{password}");
    let mut v = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
    .ok()?;
    v.set_sensitive(true);
    Some(v)
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

/// The `Content-Length` header as sent. (reqwest's `content_length()` reports the body's size,
/// which is 0 for every HEAD answer.)
pub fn declared_length(resp: &UpstreamResponse) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Exponential backoff with a little jitter: 100ms, 200ms, ...
async fn backoff(attempt: u32) {
    let jitter = u64::from(std::process::id() % 50);
    tokio::time::sleep(Duration::from_millis(50 * (1 << attempt.min(6)) + jitter)).await;
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub async fn read_limited(
    mut resp: UpstreamResponse,
    limit: usize,
    upstream: &str,
) -> Result<Vec<u8>, UpstreamError> {
    read_body(&mut resp, limit, upstream).await
}

async fn read_body(
    resp: &mut Response,
    limit: usize,
    upstream: &str,
) -> Result<Vec<u8>, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::BadResponse {
            upstream: upstream.to_owned(),
            reason: format!("answer larger than {limit} bytes"),
        });
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(UpstreamError::BadResponse {
                        upstream: upstream.to_owned(),
                        reason: format!("answer larger than {limit} bytes"),
                    });
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(UpstreamError::Unreachable {
                    upstream: upstream.to_owned(),
                    reason: format!("body: {}", error_chain(&e)),
                });
            }
        }
    }
}

/// An error and its causes on one line (reqwest's Display hides the interesting part).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}
