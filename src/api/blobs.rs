//! `HEAD/GET /v2/<name>/blobs/<digest>`: stored blobs from disk, cold ones from a fill, with Range.

use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};

use super::State;
use super::range::{self, ByteRange};
use super::{ApiError, Body, Code, full};
use crate::cache::{Blob, FileReader, Fill};
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
    let (status, start, end) = match range.map(|r| range::resolve_all(&r, size)) {
        None => (StatusCode::OK, 0, size),
        Some(spans) => match spans[..] {
            [(s, e)] => (StatusCode::PARTIAL_CONTENT, s, e),
            [] => {
                return Ok(Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .header(header::CONTENT_LENGTH, 0)
                    .body(full(Vec::new()))
                    .expect("valid"));
            }
            _ => {
                return Ok(multipart(
                    &digest,
                    source,
                    size,
                    &spans,
                    app.metrics.clone(),
                ));
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
    let body = match &source {
        Blob::Stored { .. } => body(source, start, end, app.metrics.clone()),
        Blob::Filling { reader, .. } => {
            let fill = reader.fill().clone();
            let body = body(source, start, end, app.metrics.clone());
            first_bytes_or_failure(body, &fill).await?
        }
    };
    Ok(b.body(body).expect("valid"))
}

/// A cold blob's body once its first bytes are ready, or the failure that came before any.
///
/// A fill that fails before its first byte is read (a short or wrong body from the upstream
/// that arrived whole, an upstream that hung up) would otherwise end the response before its
/// head was written: hyper drops the connection, and the client sees a closed socket and no
/// reason. Waiting for the first frame turns that into an answer that says what went wrong
/// (`502` for a digest mismatch, the upstream's failure as for any fetch); a failure after the
/// first byte still ends the body short, as it must.
async fn first_bytes_or_failure(mut body: Body, fill: &Arc<Fill>) -> Result<Body, ApiError> {
    let first = match body.frame().await {
        None => return Ok(full(Vec::new())),
        Some(Ok(frame)) => frame,
        Some(Err(e)) => {
            return Err(match fill.total().await {
                Err(failure) => ApiError::from(&*failure),
                Ok(_) => ApiError::new(StatusCode::BAD_GATEWAY, Code::Unavailable, e.to_string()),
            });
        }
    };
    let rest = http_body_util::BodyStream::new(body);
    let first = futures_util::stream::once(async move { Ok(first) });
    Ok(StreamBody::new(futures_util::StreamExt::chain(first, rest)).boxed_unsync())
}

/// The client's `Range`, if it sent one; a malformed or unsupported one is a 416.
fn requested_range(headers: &HeaderMap) -> Result<Option<Vec<ByteRange>>, ApiError> {
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
                Code::Uncoded,
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
            // Before an error, one turn back to hyper: it writes out what it holds (the head,
            // the bytes so far) when the body is not ready, and drops it unsent when the body
            // fails at once, so the client would see a closed socket and not a cut body.
            let s = reader
                .stream(file, start, end)
                .inspect(count)
                .then(|item| async move {
                    if item.is_err() {
                        tokio::task::yield_now().await;
                    }
                    item
                });
            StreamBody::new(s.map(|r| r.map(hyper::body::Frame::data))).boxed_unsync()
        }
    }
}

/// A 206 `multipart/byteranges` answer: each span (sorted, apart) as a part with its own
/// `Content-Range`. A held blob is read span by span from its file; a blob being filled is read
/// once from the first span's start to the last one's end as its bytes arrive, the gaps between
/// spans skipped, so a cold blob gets the same answer as soon as the bytes it needs are in.
fn multipart(
    digest: &Digest,
    source: Blob,
    size: u64,
    spans: &[(u64, u64)],
    metrics: Arc<Metrics>,
) -> Response<Body> {
    use futures_util::StreamExt as _;
    let boundary = boundary();
    let part_head = |(s, e): (u64, u64)| {
        bytes::Bytes::from(format!(
            "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {s}-{}/{size}\r\n\r\n",
            e - 1
        ))
    };
    let heads: Vec<bytes::Bytes> = spans.iter().copied().map(part_head).collect();
    let tail = bytes::Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let len = heads.iter().map(|h| h.len() as u64).sum::<u64>()
        + spans.iter().map(|(s, e)| e - s).sum::<u64>()
        + tail.len() as u64;
    let (first, last) = (spans[0].0, spans[spans.len() - 1].1);
    let data = body(source, first, last, metrics);
    let sieve = Sieve {
        spans: spans.to_vec(),
        heads,
        pos: first,
        next: 0,
    };
    let parts = data
        .into_data_stream()
        .scan(sieve, |sieve, chunk| {
            let out = match chunk {
                Ok(b) => sieve.take(b).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            std::future::ready(Some(futures_util::stream::iter(out)))
        })
        .flatten()
        .chain(futures_util::stream::once(std::future::ready(Ok(tail))));
    let mut b = blob_headers(digest, StatusCode::PARTIAL_CONTENT, len);
    if let Some(h) = b.headers_mut() {
        let value = format!("multipart/byteranges; boundary={boundary}");
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::try_from(value).expect("a boundary of hex digits"),
        );
    }
    b.body(StreamBody::new(parts.map(|r| r.map(hyper::body::Frame::data))).boxed_unsync())
        .expect("valid")
}

/// A boundary no blob is likely to hold: 128 random bits.
fn boundary() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("entrepot-{hex}")
}

/// Cuts a stream of the bytes `[first span's start, last span's end)` into the parts of a
/// multipart answer: the bytes inside the spans, each span's head before its first byte.
struct Sieve {
    spans: Vec<(u64, u64)>,
    heads: Vec<bytes::Bytes>,
    /// The blob offset of the next byte the stream gives.
    pos: u64,
    /// The span being sent (or next to send).
    next: usize,
}

impl Sieve {
    fn take(&mut self, chunk: bytes::Bytes) -> Vec<bytes::Bytes> {
        let mut out = Vec::new();
        let (start, end) = (self.pos, self.pos + chunk.len() as u64);
        self.pos = end;
        while let Some(&(s, e)) = self.spans.get(self.next) {
            if s >= end {
                break;
            }
            if s >= start {
                out.push(self.heads[self.next].clone());
            }
            let from = s.max(start);
            let to = e.min(end);
            if from < to {
                out.push(chunk.slice((from - start) as usize..(to - start) as usize));
            }
            if e > end {
                break;
            }
            self.next += 1;
        }
        out
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
