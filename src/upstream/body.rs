//! Upstream answers and their bodies: read whole with a size limit, or streamed chunk by chunk.
//!
//! An [`UpstreamResponse`] holds one of the upstream's request slots until it is dropped, so a
//! slow body counts against `max_concurrent_requests` for as long as it streams. Bodies are never
//! decompressed (blobs are bytes), and a small body is never read past its limit, whatever length
//! the upstream claims.

use std::ops::{Deref, DerefMut};

use bytes::Bytes;
use http::header;
use reqwest::Response;
use tokio::sync::OwnedSemaphorePermit;

use super::error::{UpstreamError, error_chain};

/// An upstream answer, holding one of the upstream's concurrency slots until it is dropped.
pub(crate) struct UpstreamResponse {
    resp: Response,
    _slot: OwnedSemaphorePermit,
}

impl UpstreamResponse {
    pub(super) fn new(resp: Response, slot: OwnedSemaphorePermit) -> UpstreamResponse {
        UpstreamResponse { resp, _slot: slot }
    }

    /// The `Content-Length` header as sent. (reqwest's `content_length()` reports the body's
    /// size, which is 0 for every HEAD answer.)
    pub(super) fn declared_length(&self) -> Option<u64> {
        self.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    }
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

/// A blob's body from the upstream, read as it arrives.
pub(crate) struct BlobBody {
    resp: UpstreamResponse,
    upstream: String,
}

impl BlobBody {
    pub(super) fn new(resp: UpstreamResponse, upstream: &str) -> BlobBody {
        BlobBody {
            resp,
            upstream: upstream.to_owned(),
        }
    }

    /// The length the upstream announced, if it did.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    /// The next chunk, `None` at the end. A connection cut mid-body is an error, never an end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        self.resp
            .chunk()
            .await
            .map_err(|e| UpstreamError::Unreachable {
                upstream: self.upstream.clone(),
                reason: format!("blob body cut short: {}", error_chain(&e)),
            })
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub(super) async fn read_body(
    resp: &mut Response,
    limit: usize,
    upstream: &str,
) -> Result<Vec<u8>, UpstreamError> {
    let too_large = || UpstreamError::BadResponse {
        upstream: upstream.to_owned(),
        reason: format!("answer larger than {limit} bytes"),
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(too_large());
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
