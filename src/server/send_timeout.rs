//! `send_timeout`: a connection whose client accepts no bytes for that long is closed.
//!
//! Each response body is wrapped so the connection knows when it last handed hyper a frame and
//! whether hyper has come back for the next one. hyper asks for the next frame as soon as it has
//! room to write it; if it has not asked for `send_timeout` after taking one, its buffers and the
//! socket's are full because the client reads nothing, and [`Watch::stalled`] returns so the
//! caller can drop the connection (which frees its slot). A body that is itself waiting (a cold
//! fill waiting for the upstream) is not the client's fault and never counts.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};

/// No frame is waiting for the client.
const IDLE: u64 = u64::MAX;

/// The response bodies of one connection, as seen by its watchdog.
pub(super) struct Watch {
    started: Instant,
    bodies: Mutex<Vec<Weak<AtomicU64>>>,
}

impl Watch {
    pub(super) fn new() -> Arc<Watch> {
        Arc::new(Watch {
            started: Instant::now(),
            bodies: Mutex::new(Vec::new()),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Wraps a response body so this connection's watchdog sees its progress.
    pub(super) fn wrap<B>(self: &Arc<Self>, body: B) -> Watched<B> {
        let handed_at = Arc::new(AtomicU64::new(IDLE));
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies.retain(|b| b.strong_count() > 0);
        bodies.push(Arc::downgrade(&handed_at));
        Watched {
            inner: Box::pin(body),
            handed_at,
            watch: self.clone(),
        }
    }

    /// Returns once some response of this connection has waited `timeout` for its client to
    /// accept bytes; never returns while every client keeps reading.
    pub(super) async fn stalled(&self, timeout: Duration) {
        let tick = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let limit = timeout.as_millis() as u64;
        loop {
            tokio::time::sleep(tick).await;
            let now = self.now_ms();
            let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
            let stuck = bodies
                .iter()
                .filter_map(Weak::upgrade)
                .map(|t| t.load(Ordering::Relaxed))
                .any(|t| t != IDLE && now.saturating_sub(t) >= limit);
            if stuck {
                return;
            }
        }
    }
}

/// A response body that tells its connection's [`Watch`] when it handed hyper a frame.
pub(super) struct Watched<B> {
    inner: Pin<Box<B>>,
    /// When (ms after the connection began) a frame was last handed over and hyper has not asked
    /// for the next one since; [`IDLE`] otherwise.
    handed_at: Arc<AtomicU64>,
    watch: Arc<Watch>,
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
