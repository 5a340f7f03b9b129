//! One log line per request, written when its response has been sent (or abandoned): method,
//! route kind, status, body bytes, duration, how the cache answered, the upstream, the
//! repository and reference (tag or digest) as the upstream spells them, the user, the peer, and
//! for an error answer the message the client got: who pulled what, and why it failed.
//! Never a header's value: no client `Authorization` can reach the log.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use super::Body;
use crate::log_out::printable;
use crate::metrics::{Metrics, RequestNote};

/// What the line will say, but for the bytes and the end.
pub(super) struct Line {
    pub(super) method: http::Method,
    pub(super) route: &'static str,
    pub(super) status: u16,
    pub(super) started: Instant,
    pub(super) note: RequestNote,
    pub(super) peer: Option<SocketAddr>,
    /// The body length the response promised (`Content-Length`; 0 for a HEAD).
    pub(super) promised: Option<u64>,
    pub(super) metrics: Arc<Metrics>,
}

/// A response body that writes its request's log line when it ends or is dropped.
struct Logged {
    inner: Body,
    line: Option<Line>,
    bytes: u64,
}

/// Wraps `body` so the request is logged once it has been sent.
pub(super) fn logged(body: Body, line: Line) -> Body {
    Logged {
        inner: body,
        line: Some(line),
        bytes: 0,
    }
    .boxed_unsync()
}

impl Logged {
    fn emit(&mut self, complete: bool) {
        let Some(l) = self.line.take() else { return };
        let took = l.started.elapsed();
        l.metrics.request_done(l.route, took);
        let cache = l.note.cache.map_or("-", |c| c.label());
        let upstream = l.note.upstream.as_deref().unwrap_or("-");
        let user = l.note.user.as_deref().unwrap_or("-");
        let repository = l.note.repository.as_deref().unwrap_or("-");
        let reference = l.note.reference.as_deref().unwrap_or("-");
        let error = l.note.error.as_deref().unwrap_or("-");
        let peer = l.peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        tracing::info!(
            target: "entrepot::request",
            method = %l.method,
            route = %l.route,
            status = l.status,
            bytes = self.bytes,
            duration_ms = took.as_secs_f64() * 1000.0,
            cache = %cache,
            upstream = %upstream,
            repository = %repository,
            reference = %printable(reference),
            user = %printable(user),
            peer = %peer,
            complete,
            error = %printable(error),
            "request"
        );
    }
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.emit(false),
            Poll::Ready(None) => self.emit(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // hyper stops at Content-Length without asking for the end, or the client left: complete
        // if every byte promised went out.
        let complete = self.line.as_ref().and_then(|l| l.promised) == Some(self.bytes);
        self.emit(complete);
    }
}
