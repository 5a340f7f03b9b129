//! `HEAD/GET /v2/<name>/blobs/<digest>`: stored blobs from disk, cold ones from a fill, with Range.

use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};

use super::State;
use super::range::{self, ByteRange};
use super::{ApiError, Body, full};
use crate::cache::{Blob, FileReader};
use crate::metrics::{Content, Metrics, ServedFrom};
use crate::reference::{Digest, RepoName};
use crate::upstream::Upstream;

pub(super) async fn get(
    app: &Arc<State>,
    up: &Arc<Upstream>,
    repo: &RepoName,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let digest = Digest::parse(digest).map_err(|_| ApiError::digest_invalid(digest))?;
    let range = requested_range(headers)?;
    if head {
        let size = app
            .cache
            .blob_size(up, repo, &digest)
            .await
            .map_err(|e| ApiError::from(&*e))?;
        return Ok(blob_headers(&digest, StatusCode::OK, size)
            .body(full(Vec::new()))
            .expect("valid"));
    }

    let source = app.cache.blob(up, repo, &digest).await?;
    let size = match &source {
        Blob::Stored { size, .. } => *size,
        Blob::Filling { reader, .. } => reader
            .fill()
            .total()
            .await
            .map_err(|e| ApiError::from(&*e))?,
    };
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, size),
        Some(r) => match r.resolve(size) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
            None => {
                return Ok(Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .header(header::CONTENT_LENGTH, 0)
                    .body(full(Vec::new()))
                    .expect("valid"));
            }
        },
    };
    let mut b = blob_headers(&digest, status, end - start);
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    Ok(b.body(body(source, start, end, app.metrics.clone()))
        .expect("valid"))
}

/// The client's `Range`, if it sent one; a malformed or unsupported one is a 416.
fn requested_range(headers: &HeaderMap) -> Result<Option<ByteRange>, ApiError> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| range::parse(s).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                "unsupported or malformed Range header",
            )
        })
}

/// The bytes `[start, end)` of the blob as a response body, counted as they go out.
fn body(source: Blob, start: u64, end: u64, metrics: Arc<Metrics>) -> Body {
    use futures_util::StreamExt as _;
    let from = match &source {
        Blob::Stored { .. } => ServedFrom::Cache,
        Blob::Filling { .. } => ServedFrom::Fill,
    };
    let count = move |r: &std::io::Result<bytes::Bytes>| {
        if let Ok(b) = r {
            metrics.served(Content::Blob, from, b.len() as u64);
        }
    };
    match source {
        Blob::Stored { file, .. } => {
            let s = FileReader::new(file, start, end)
                .into_stream()
                .inspect(count);
            StreamBody::new(s.map(|r| r.map(hyper::body::Frame::data))).boxed_unsync()
        }
        Blob::Filling { reader, file } => {
            let s = reader.stream(file, start, end).inspect(count);
            StreamBody::new(s.map(|r| r.map(hyper::body::Frame::data))).boxed_unsync()
        }
    }
}

fn blob_headers(digest: &Digest, status: StatusCode, len: u64) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.to_string())
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::CACHE_CONTROL, "max-age=31536000")
}
