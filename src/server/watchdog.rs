//! Each connection's watchdog: it closes a connection whose client accepts no bytes for
//! `send_timeout`, one that has sent no request head within `header_read_timeout` of opening
//! (whatever protocol it would speak: hyper has no timer before it tells HTTP/1 from HTTP/2), and
//! one with no request in flight for `header_read_timeout` (an idle HTTP/2 connection; hyper's
//! own header timer does this for HTTP/1 keep-alive).
//!
//! Each response body is wrapped so the connection knows when it handed hyper a frame and
//! whether hyper has come back for the next one, and the socket is wrapped so it knows when bytes
//! last went out. A response stalls when hyper holds a frame it could not write and nothing has
//! gone out for `send_timeout`: the client accepts nothing. A client reading slowly keeps the
//! socket moving and is never cut. A body that is itself waiting (a cold fill waiting for the
//! upstream) is not the client's fault and never counts.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// No frame is waiting for the client.
const IDLE: u64 = u64::MAX;

/// Why the watchdog closes a connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Closing {
    /// A response waited `send_timeout` with nothing going out.
    Stalled,
    /// No request head arrived within `header_read_timeout` of the connection opening.
    NoRequest,
    /// No request in flight for `header_read_timeout`.
    Idle,
}

/// The response bodies of one connection, as seen by its watchdog.
pub(super) struct Watch {
    started: Instant,
    bodies: Mutex<Vec<Weak<AtomicU64>>>,
    /// When bytes last went out on the socket (ms after the connection began).
    wrote_at: AtomicU64,
    /// Requests whose head has arrived, ever.
    requests: AtomicU64,
    /// Requests whose response body has not been dropped yet.
    in_flight: AtomicU64,
    /// When the last request began or ended (ms after the connection began).
    active_at: AtomicU64,
}

impl Watch {
    pub(super) fn new() -> Arc<Watch> {
        Arc::new(Watch {
            started: Instant::now(),
            bodies: Mutex::new(Vec::new()),
            wrote_at: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            active_at: AtomicU64::new(0),
        })
    }

    /// A request head has arrived: in flight until the guard (handed to [`Watch::wrap`] with
    /// its response) is dropped.
    pub(super) fn request_began(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.active_at.store(self.now_ms(), Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.active_at.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Wraps the connection's socket so this watchdog sees bytes go out.
    pub(super) fn socket<S>(self: &Arc<Self>, inner: S) -> Socket<S> {
        Socket {
            inner,
            watch: self.clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Wraps a response body so this connection's watchdog sees its progress.
    pub(super) fn wrap<B>(self: &Arc<Self>, body: B, request: InFlight) -> Watched<B> {
        let handed_at = Arc::new(AtomicU64::new(IDLE));
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies.retain(|b| b.strong_count() > 0);
        bodies.push(Arc::downgrade(&handed_at));
        Watched {
            inner: Box::pin(body),
            handed_at,
            watch: self.clone(),
            _request: request,
        }
    }

    /// Returns once the connection should be closed, and why: a response waited `send` with
    /// nothing going out, no request came within `idle` of opening, or none has been in flight
    /// for `idle`. Never returns while clients keep reading and asking.
    pub(super) async fn closing(&self, send: Duration, idle: Duration) -> Closing {
        let tick = (send.min(idle) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let (send, idle) = (send.as_millis() as u64, idle.as_millis() as u64);
        loop {
            tokio::time::sleep(tick).await;
            let now = self.now_ms();
            let wrote = self.wrote_at.load(Ordering::Relaxed);
            let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
            let stuck = bodies
                .iter()
                .filter_map(Weak::upgrade)
                .map(|t| t.load(Ordering::Relaxed))
                .any(|t| t != IDLE && now.saturating_sub(t.max(wrote)) >= send);
            drop(bodies);
            if stuck {
                return Closing::Stalled;
            }
            if self.in_flight.load(Ordering::Relaxed) == 0
                && now.saturating_sub(self.active_at.load(Ordering::Relaxed)) >= idle
            {
                return if self.requests.load(Ordering::Relaxed) == 0 {
                    Closing::NoRequest
                } else {
                    Closing::Idle
                };
            }
        }
    }
}

/// The connection's socket, telling its [`Watch`] when bytes go out.
pub(super) struct Socket<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S> Socket<S> {
    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.watch
                .wrote_at
                .store(self.watch.now_ms(), Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that tells its connection's [`Watch`] when it handed hyper a frame.
pub(super) struct Watched<B> {
    inner: Pin<Box<B>>,
    /// When (ms after the connection began) a frame was last handed over and hyper has not asked
    /// for the next one since; [`IDLE`] otherwise.
    handed_at: Arc<AtomicU64>,
    watch: Arc<Watch>,
    _request: InFlight,
}

/// A request in flight, from its head's arrival until its response body is dropped (or its
/// handler is, when the client goes away first).
pub(super) struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl<B: Body> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        let handed_at = match &polled {
            Poll::Ready(Some(Ok(_))) => self.watch.now_ms(),
            // Waiting for our own data, finished, or failed: nothing waits for the client.
            _ => IDLE,
        };
        self.handed_at.store(handed_at, Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
