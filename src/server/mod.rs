//! The HTTP server: accepts connections, applies connection hygiene, and hands each request to a
//! handler (the API, in `run.rs`).
//!
//! Limits live here so no handler has to think about them: a cap on connections served at once
//! (more wait in the accept queue), a deadline for reading request headers (slowloris; also for
//! a socket that sends nothing, or only HTTP/2's preface, and for an idle HTTP/2 connection), a
//! cap on header size (hyper answers 431), a `send_timeout` for clients that accept no bytes
//! (`watchdog.rs`), HTTP/2 keep-alive pings, and no response compression (blobs are bytes). Shutdown is
//! graceful: stop accepting, let requests in flight finish for a while, then go. The server knows
//! nothing of registries: it serves whatever handler it is given.

mod stream;
mod tls;
mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
pub(crate) use stream::ClientName;
use stream::Stream;
use tokio_rustls::TlsAcceptor;
use watchdog::{Closing, Watch};

use crate::pem::PemError;
use crate::shutdown::Shutdown;

/// The TLS acceptor for `[server] tls_cert` and `tls_key`, if set: the pair is loaded now (a
/// failure stops start-up) and reloaded whenever the files change.
pub(crate) fn tls_acceptor(cfg: &ServerConfig) -> Result<Option<TlsAcceptor>, PemError> {
    match &cfg.tls {
        None => Ok(None),
        Some((cert, key)) => tls::Reloading::start(cert, key, cfg.client_ca.as_deref()).map(Some),
    }
}

/// How often an HTTP/2 connection is pinged, and how long its answer may take.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How long requests in flight may run on after shutdown begins.
const DRAIN: Duration = Duration::from_secs(20);

/// Serves connections from `listener` with `handler` until `shutdown` fires, then drains. With
/// `tls`, each connection's handshake runs in its own task within `header_read_timeout`.
pub(crate) async fn serve<H, F, B>(
    listener: TcpListener,
    cfg: &ServerConfig,
    tls: Option<TlsAcceptor>,
    mut shutdown: Shutdown,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = connection_builder(cfg);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.recv() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        let handler = handler.clone();
        let watch = Watch::new();
        let bodies = watch.clone();
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        let (send_timeout, header_timeout) = (cfg.send_timeout, cfg.header_read_timeout);
        tokio::spawn(async move {
            let Some(io) = handshake(prepare(stream), tls, header_timeout, peer).await else {
                return;
            };
            let client = io.client_name();
            let io = watch.socket(io);
            let service = service_fn(move |mut req: Request<Incoming>| {
                let request = bodies.request_began();
                // The handler may want to know who asked (its log line and `[auth]` do).
                req.extensions_mut().insert(peer);
                if let Some(name) = &client {
                    req.extensions_mut().insert(name.clone());
                }
                // Boxed: hyper keeps the future in its connection state, and the handler's whole
                // state machine would otherwise be copied there at every request.
                let fut = Box::pin(handler(req));
                let bodies = bodies.clone();
                async move { Ok::<_, Infallible>(fut.await.map(|b| bodies.wrap(b, request))) }
            });
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let conn = watcher.watch(conn.into_owned());
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                why = watch.closing(send_timeout, header_timeout) => match why {
                    Closing::Stalled => tracing::info!(%peer, ?send_timeout, "client accepted no bytes for send_timeout: connection closed"),
                    Closing::NoRequest => tracing::debug!(%peer, ?header_timeout, "no request head within header_read_timeout: connection closed"),
                    Closing::Idle => tracing::debug!(%peer, ?header_timeout, "no request for header_read_timeout: idle connection closed"),
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    drain(graceful).await;
}

/// The connection's byte stream: plain, or TLS once the handshake is done within `timeout`
/// (None, said at debug, when it fails or times out).
async fn handshake(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    timeout: Duration,
    peer: std::net::SocketAddr,
) -> Option<Stream> {
    let Some(acceptor) = tls else {
        return Some(Stream::Plain(stream));
    };
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            // A refused client certificate ends here: the operator wants to see it.
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// HTTP/1.1 and HTTP/2 with the configured header limits.
fn connection_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        // `Docker-Content-Digest`, not `docker-content-digest`: scripts grep for it.
        .title_case_headers(true)
        .max_buf_size(cfg.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.max_header_bytes as u32)
        // A peer that no longer answers pings is gone: its connection's slot is freed.
        .keep_alive_interval(Some(H2_PING_EVERY))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// At most this much not yet sent sits in a connection's kernel buffer (`TCP_NOTSENT_LOWAT`,
/// 16 KiB as HTTP/2 servers use): the socket takes more each time half of it has gone out, so
/// the watchdog sees a slow client's progress every few KiB (without it, the writer was woken
/// only once half a 700 KiB buffer had drained: 15 s at 24 KiB/s), and the kernel holds no
/// megabytes for a client that stopped. Bytes sent and not yet acknowledged are not counted, so
/// a fast client on a long link is not slowed.
const NOTSENT_LOWAT: u32 = 16 << 10;

fn prepare(stream: TcpStream) -> TcpStream {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
    stream
}

/// Lets requests in flight finish, for [`DRAIN`] at most.
async fn drain(graceful: GracefulShutdown) {
    tracing::info!("shutting down: draining requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway"),
    }
}
