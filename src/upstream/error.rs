//! What can go wrong talking to an upstream, in registry terms, and what each failure means.
//!
//! An [`UpstreamError`] says where it came from ([`Origin`]: the registry's own answer, the
//! network, or this mirror's side of the exchange) and whether asking again may help, so callers
//! decide between serving stale content, retrying and giving up without matching on text. The API
//! layer turns these into OCI error bodies; nothing here knows about clients.

use std::fmt;
use std::time::Duration;

use super::credentials::CredentialError;

/// What an upstream request asked for: names the thing in "no such ..." errors and picks the
/// OCI error code a client gets for a 404.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    Manifest,
    Blob,
    /// A repository's tags list.
    Repository,
    Referrers,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Manifest => "manifest",
            Resource::Blob => "blob",
            Resource::Repository => "repository",
            Resource::Referrers => "referrers",
        })
    }
}

/// Where a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The registry answered, and the answer was an error or unusable.
    Registry,
    /// No answer came back: connection, TLS, timeout, a body cut short.
    Network,
    /// This mirror's side: its credentials could not be read, or its own limit on requests to
    /// this registry was reached.
    Mirror,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Registry => "registry",
            Origin::Network => "network",
            Origin::Mirror => "mirror",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream {upstream} is unreachable: {reason}")]
    Unreachable { upstream: String, reason: String },
    #[error(
        "upstream {upstream} is busy: no free request slot for {waited:?} (max_concurrent_requests)"
    )]
    Busy { upstream: String, waited: Duration },
    #[error("upstream {upstream}: stored credentials: {source}")]
    Credentials {
        upstream: String,
        source: CredentialError,
    },
    #[error("upstream {upstream} has no such {what}")]
    NotFound { upstream: String, what: Resource },
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
    #[error(
        "{what} not in the cache, and upstream {upstream} is never contacted ([cache] offline = true)"
    )]
    Offline { upstream: String, what: Resource },
}

impl UpstreamError {
    pub(crate) fn origin(&self) -> Origin {
        match self {
            UpstreamError::Unreachable { .. } => Origin::Network,
            UpstreamError::Busy { .. }
            | UpstreamError::Credentials { .. }
            | UpstreamError::Offline { .. } => Origin::Mirror,
            UpstreamError::NotFound { .. }
            | UpstreamError::Denied { .. }
            | UpstreamError::TooManyRequests { .. }
            | UpstreamError::Status { .. }
            | UpstreamError::BadResponse { .. } => Origin::Registry,
        }
    }

    /// Whether the same request, asked again later, may succeed: the registry or the way to it
    /// is unhealthy or limiting us, as opposed to having said no.
    pub(crate) fn retry_may_help(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. }
            | UpstreamError::Busy { .. }
            | UpstreamError::TooManyRequests { .. } => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            UpstreamError::Credentials { .. }
            | UpstreamError::NotFound { .. }
            | UpstreamError::Denied { .. }
            | UpstreamError::BadResponse { .. }
            | UpstreamError::Offline { .. } => false,
        }
    }

    /// Whether serving stale cached content is the right answer: the upstream cannot give a
    /// usable answer now (it is unhealthy, limiting us, sending garbage, or we cannot
    /// authenticate), as opposed to telling us the thing is gone or forbidden.
    pub(crate) fn stale_ok(&self) -> bool {
        self.retry_may_help()
            || matches!(
                self,
                UpstreamError::BadResponse { .. }
                    | UpstreamError::Credentials { .. }
                    | UpstreamError::Offline { .. }
            )
    }
}

/// An error and its causes on one line (reqwest's Display hides the interesting part).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_where_they_came_from() {
        let up = || "quay.io".to_owned();
        let credentials = UpstreamError::Credentials {
            upstream: up(),
            source: CredentialError::HelperAnswer {
                program: "docker-credential-x".into(),
            },
        };
        assert_eq!(credentials.origin(), Origin::Mirror);
        assert!(!credentials.retry_may_help() && credentials.stale_ok());
        let busy = UpstreamError::Busy {
            upstream: up(),
            waited: Duration::from_secs(30),
        };
        assert_eq!(busy.origin(), Origin::Mirror);
        assert!(busy.retry_may_help());
        let gone = UpstreamError::NotFound {
            upstream: up(),
            what: Resource::Blob,
        };
        assert_eq!(gone.origin(), Origin::Registry);
        assert!(!gone.retry_may_help() && !gone.stale_ok());
        let down = UpstreamError::Status {
            upstream: up(),
            status: 503,
        };
        assert!(down.retry_may_help() && down.stale_ok());
        assert!(!credentials.to_string().contains("unreachable"));
    }
}

/// Why an upstream could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("upstream {upstream}: ca_cert {path}: {source}")]
    CaCertRead {
        upstream: String,
        path: String,
        source: std::io::Error,
    },
    #[error("upstream {upstream}: ca_cert {path}: {source}")]
    CaCertParse {
        upstream: String,
        path: String,
        source: reqwest::Error,
    },
    #[error("upstream {upstream}: cannot build HTTP client: {source}")]
    Client {
        upstream: String,
        source: reqwest::Error,
    },
}
