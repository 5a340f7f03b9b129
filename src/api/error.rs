//! OCI error answers: the one place where failures become status codes and error bodies.
//!
//! Every failure the lower layers report arrives here as a typed error and leaves as
//! `{"errors":[{"code","message","detail"}]}` with `Content-Type: application/json`. Upstream
//! challenges and HTML pages never reach clients.

use http::{Response, StatusCode, header};

use super::{Body, full};
use crate::cache::CacheError;
use crate::upstream::{Resource, UpstreamError};

/// The codes of the spec's "Error Codes" table (OCI distribution spec v1.1) that a read-only
/// mirror can mean, and two answers for what the table has no code for. A JSON error body from
/// this mirror carries nothing else (`a_json_error_body_carries_only_the_specs_codes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Code {
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// The mirror or its upstream failed (a 5xx). The spec gives codes to 4xx answers only; the
    /// body carries the code of what could not be given (the route's resource: a manifest, a
    /// blob, a repository's tags or referrers), with a message saying why, so that clients show
    /// it (containerd and dockerd print a JSON body's message, not a text one).
    Unavailable,
    /// A 4xx the table has no code for (an unknown endpoint, a bad `n`, an unusable `Range`):
    /// the body is the message as plain text, which the spec allows ("a 4XX response code MAY
    /// return a body in any format").
    Uncoded,
}

impl Code {
    /// The code as it is written on the wire.
    pub(super) fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unavailable | Code::Uncoded => return None,
        })
    }
}

#[derive(Debug)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` for a 401.
    pub challenge: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            challenge: None,
        }
    }

    pub(super) fn name_invalid(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::NameInvalid,
            format!("invalid repository name {:?}", truncate(name)),
        )
    }

    pub(super) fn digest_invalid(digest: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::DigestInvalid,
            format!("invalid digest {:?}", truncate(digest)),
        )
    }

    pub(super) fn unsupported() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unsupported,
            "this mirror is read-only: only GET and HEAD are supported",
        )
    }

    /// The answer, for a request on a route whose resource is `resource` (the code a failure
    /// to give it carries: see [`Code::Unavailable`]).
    pub(super) fn into_response(self, resource: Option<Code>, head: bool) -> Response<Body> {
        let code = match self.code {
            Code::Unavailable => resource.and_then(Code::as_str),
            c => c.as_str(),
        };
        let (content_type, body) = match code {
            Some(code) => (
                "application/json",
                serde_json::json!({
                    "errors": [{"code": code, "message": self.message, "detail": null}]
                })
                .to_string(),
            ),
            None => ("text/plain; charset=utf-8", format!("{}\n", self.message)),
        };
        let mut b = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len());
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            b = b.header(header::ALLOW, "GET, HEAD");
        }
        if let Some(s) = self.retry_after {
            b = b.header(header::RETRY_AFTER, s);
        }
        if let Some(c) = &self.challenge {
            b = b.header(header::WWW_AUTHENTICATE, c);
        }
        b.body(if head { full(Vec::new()) } else { full(body) })
            .expect("static headers are valid")
    }
}

/// Names and references in messages are client input: keep them short.
fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> ApiError {
        ApiError::from(&e)
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> ApiError {
        ApiError::from(&e)
    }
}

/// By reference, because a fill's failure is shared by every client of the fill.
impl From<&CacheError> for ApiError {
    fn from(e: &CacheError) -> ApiError {
        match e {
            CacheError::Upstream(u) => u.into(),
            CacheError::NotABlob(d) => ApiError::new(
                StatusCode::NOT_FOUND,
                Code::BlobUnknown,
                format!("{d} is a manifest, not a blob"),
            ),
            CacheError::DigestMismatch { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, Code::Unavailable, e.to_string())
            }
            CacheError::Io(io) if io.raw_os_error() == Some(28) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                Code::Unavailable,
                "the mirror's disk is full",
            ),
            CacheError::NoRoom(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                e.to_string(),
            ),
            CacheError::Io(_) | CacheError::Index(_) | CacheError::Abandoned => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::Unavailable,
                    "the mirror could not complete the request",
                )
            }
        }
    }
}

impl From<&UpstreamError> for ApiError {
    fn from(e: &UpstreamError) -> ApiError {
        let msg = e.to_string();
        match e {
            UpstreamError::NotFound { what, .. } | UpstreamError::Offline { what, .. } => {
                let code = match what {
                    Resource::Manifest => Code::ManifestUnknown,
                    Resource::Blob => Code::BlobUnknown,
                    Resource::Repository | Resource::Referrers => Code::NameUnknown,
                };
                ApiError::new(StatusCode::NOT_FOUND, code, msg)
            }
            // Registries answer 401 for repositories that do not exist (or that our credentials
            // cannot see): to a client that is "no such repository".
            UpstreamError::Denied { status: 401, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, Code::NameUnknown, msg)
            }
            UpstreamError::Denied { .. } => ApiError::new(StatusCode::FORBIDDEN, Code::Denied, msg),
            UpstreamError::TooManyRequests { retry_after, .. } => ApiError {
                retry_after: Some(retry_after.unwrap_or(60)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, Code::TooManyRequests, msg)
            },
            UpstreamError::Unreachable { .. }
            | UpstreamError::Busy { .. }
            | UpstreamError::Credentials { .. }
            | UpstreamError::Status { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, msg)
            }
            UpstreamError::BadResponse { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, Code::Unavailable, msg)
            }
        }
    }
}
