//! How requests reach an upstream: the HTTP client and its TLS settings, the bound on requests in
//! flight, retries with backoff, the `Retry-After` cool-down, and the turning of statuses into
//! [`UpstreamError`]s.
//!
//! [`Upstream::send`] is the one door out: it takes a slot, attaches what we know of the
//! registry's authentication, answers a 401 challenge once (see `token.rs`), and returns a 2xx or
//! 304 answer. Redirects are followed with a hop limit; reqwest drops `Authorization` when the
//! host changes.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use reqwest::Response;
use url::Url;

use super::Upstream;
use super::auth;
use super::body::UpstreamResponse;
use super::error::{BuildError, Resource, UpstreamError, error_chain};
use crate::config::UpstreamConfig;
use crate::metrics::{NO_ANSWER, UpstreamCall};

/// How long a request may wait for one of the upstream's slots before giving up.
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// Retries for a request that found no connection or got a 5xx.
const RETRIES: u32 = 2;

/// The longest cool-down a registry's `Retry-After` can impose: we ask again after that.
const MAX_COOL_DOWN: Duration = Duration::from_secs(3600);

/// The HTTP client for one upstream, with its timeouts and trust settings.
pub(super) fn build_client(cfg: &UpstreamConfig) -> Result<reqwest::Client, BuildError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .read_timeout(cfg.read_timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("entrepot/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    if let Some(path) = &cfg.ca_cert {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| BuildError::CaCertRead {
            upstream: cfg.name.clone(),
            path: shown.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
            BuildError::CaCertParse {
                upstream: cfg.name.clone(),
                path: shown,
                source,
            }
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if cfg.tls_insecure_skip_verify {
        tracing::warn!(upstream = %cfg.name, "tls_insecure_skip_verify: certificates from this upstream are NOT verified");
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|source| BuildError::Client {
        upstream: cfg.name.clone(),
        source,
    })
}

impl Upstream {
    /// Sends `method` to `url` (under this registry's `/v2/<repo>/`) with the given headers,
    /// answering the auth challenge if one comes, with a token scoped to `scope`. Returns the
    /// response if its status is 2xx (or 304); anything else becomes an [`UpstreamError`].
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        scope: &str,
        headers: HeaderMap,
        what: Resource,
    ) -> Result<UpstreamResponse, UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Offline {
                upstream: self.name.clone(),
                what,
            });
        }
        self.check_cool_down()?;
        let slot = tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| UpstreamError::Busy {
                upstream: self.name.clone(),
                waited: SLOT_WAIT,
            })?
            .expect("the semaphore is never closed");
        let call = call_label(&method, what);
        let mut auth = self.cached_authorization(scope).await;
        let mut answered_challenge = false;
        loop {
            let resp = self
                .execute(&method, &url, &headers, auth.as_ref(), call)
                .await?;
            self.note_rate_limit(resp.headers());
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                answered_challenge = true;
                auth = self.answer_challenge(resp.headers(), scope).await?;
                if auth.is_none() {
                    return Err(self.status_error(status, what, resp.headers()));
                }
                continue;
            }
            if status.is_success() || status == StatusCode::NOT_MODIFIED {
                return Ok(UpstreamResponse::new(resp, slot));
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

    /// The Authorization that answers a 401's challenge, remembering the challenge for later
    /// requests; `None` if the answer offers no challenge we can meet.
    async fn answer_challenge(
        &self,
        headers: &HeaderMap,
        scope: &str,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        let challenges = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(auth::parse_challenges)
            .collect::<Vec<_>>();
        let Some(challenge) = auth::preferred(challenges) else {
            return Ok(None);
        };
        self.remember_challenge(challenge.clone());
        self.fresh_authorization(&challenge, scope).await
    }

    /// One HTTP exchange. GET and HEAD are idempotent, so it is retried (twice, with jittered
    /// exponential backoff) when no connection could be made or the registry answered 5xx. Other
    /// failures (a read timeout, a TLS error, a redirect loop) are returned at once.
    async fn execute(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        auth: Option<&HeaderValue>,
        call: UpstreamCall,
    ) -> Result<Response, UpstreamError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let may_retry = attempt <= RETRIES;
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a.clone());
            }
            let sent = std::time::Instant::now();
            match req.send().await {
                Ok(resp) => {
                    self.metrics.upstream_request(
                        &self.name,
                        call,
                        resp.status().as_str(),
                        sent.elapsed(),
                    );
                    if resp.status().is_server_error() && may_retry {
                        tracing::debug!(upstream = %self.name, status = %resp.status(), attempt, "retrying");
                        backoff(attempt).await;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    self.metrics
                        .upstream_request(&self.name, call, NO_ANSWER, sent.elapsed());
                    if e.is_connect() && may_retry {
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(self.transport_error(&e));
                }
            }
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> UpstreamError {
        if e.is_redirect() {
            return UpstreamError::BadResponse {
                upstream: self.name.clone(),
                reason: format!("redirects: {}", error_chain(e)),
            };
        }
        UpstreamError::Unreachable {
            upstream: self.name.clone(),
            reason: error_chain(e),
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
        let until = Instant::now() + Duration::from_secs(secs).min(MAX_COOL_DOWN);
        tracing::warn!(upstream = %self.name, secs, "rate-limited: not contacting this registry until Retry-After passes");
        *self
            .cool_down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    pub(super) fn status_error(
        &self,
        status: StatusCode,
        what: Resource,
        headers: &HeaderMap,
    ) -> UpstreamError {
        let upstream = self.name.clone();
        match status.as_u16() {
            404 => UpstreamError::NotFound { upstream, what },
            401 | 403 => UpstreamError::Denied {
                upstream,
                status: status.as_u16(),
            },
            429 => self.rate_limited(headers),
            s => UpstreamError::Status {
                upstream,
                status: s,
            },
        }
    }

    /// A 429, with the registry's `Retry-After` in seconds if it gave one.
    pub(super) fn rate_limited(&self, headers: &HeaderMap) -> UpstreamError {
        UpstreamError::TooManyRequests {
            upstream: self.name.clone(),
            retry_after: headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
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
            self.metrics.set_ratelimit_remaining(&self.name, n);
        }
    }
}

/// The metric label of a request: what it asks for, and whether it is a HEAD.
fn call_label(method: &Method, what: Resource) -> UpstreamCall {
    let head = method == Method::HEAD;
    match what {
        Resource::Blob if head => UpstreamCall::BlobHead,
        Resource::Blob => UpstreamCall::Blob,
        _ if head => UpstreamCall::ManifestHead,
        Resource::Manifest => UpstreamCall::Manifest,
        Resource::Repository => UpstreamCall::Repository,
        Resource::Referrers => UpstreamCall::Referrers,
    }
}

/// Exponential backoff with jitter: 100ms, 200ms, ... each plus a random part of up to half as
/// much again, so that requests that failed together do not come back together.
async fn backoff(attempt: u32) {
    let base = 50u64 << attempt.min(6);
    // A fresh RandomState is seeded from the OS's randomness: enough for spreading retries.
    let jitter = RandomState::new().hash_one(Instant::now()) % (base / 2 + 1);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}
