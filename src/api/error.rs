//! OCI error answers: the one place where failures become status codes and error bodies.
//!
//! Every failure the lower layers report arrives here as a typed error and leaves as
//! `{"errors":[{"code","message","detail"}]}` with `Content-Type: application/json`. Upstream
//! challenges and HTML pages never reach clients.

use http::{Response, StatusCode, header};

use super::{Body, full};
use crate::cache::CacheError;
use crate::upstream::{Resource, UpstreamError};

#[derive(Debug)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` for a 401.
    pub challenge: Option<String>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
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
            "NAME_INVALID",
            format!("invalid repository name {:?}", truncate(name)),
        )
    }

    pub(super) fn digest_invalid(digest: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid digest {:?}", truncate(digest)),
        )
    }

    pub(super) fn unsupported() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this mirror is read-only: only GET and HEAD are supported",
        )
    }

    pub(super) fn into_response(self, head: bool) -> Response<Body> {
        let body = serde_json::json!({
            "errors": [{"code": self.code, "message": self.message, "detail": null}]
        })
        .to_string();
        let mut b = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json")
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
                "BLOB_UNKNOWN",
                format!("{d} is a manifest, not a blob"),
            ),
            CacheError::DigestMismatch { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", e.to_string())
            }
            CacheError::Io(io) if io.raw_os_error() == Some(28) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "UNAVAILABLE",
                "the mirror's disk is full",
            ),
            CacheError::NoRoom(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            ),
            CacheError::Io(_) | CacheError::Index(_) | CacheError::Abandoned => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
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
                    Resource::Manifest => "MANIFEST_UNKNOWN",
                    Resource::Blob => "BLOB_UNKNOWN",
                    Resource::Repository | Resource::Referrers => "NAME_UNKNOWN",
                };
                ApiError::new(StatusCode::NOT_FOUND, code, msg)
            }
            // Registries answer 401 for repositories that do not exist (or that our credentials
            // cannot see): to a client that is "no such repository".
            UpstreamError::Denied { status: 401, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", msg)
            }
            UpstreamError::Denied { .. } => ApiError::new(StatusCode::FORBIDDEN, "DENIED", msg),
            UpstreamError::TooManyRequests { retry_after, .. } => ApiError {
                retry_after: Some(retry_after.unwrap_or(60)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", msg)
            },
            UpstreamError::Unreachable { .. }
            | UpstreamError::Busy { .. }
            | UpstreamError::Credentials { .. }
            | UpstreamError::Status { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", msg)
            }
            UpstreamError::BadResponse { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", msg)
            }
        }
    }
}
