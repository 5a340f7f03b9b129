//! The mirror as a running program: [`App`] holds the layers built from a [`Config`] (the
//! upstreams, the cache, the access rules), and [`run`] builds them, listens, serves until
//! SIGTERM or Ctrl-C, and shuts down cleanly.
//!
//! This is the one place that knows every layer: it builds the upstreams and the cache, hands the
//! API's state and handler to the server, and flushes the cache's batched access times on a
//! timer and at shutdown. The offline commands (`airgap/`) open the same `App`.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::cache::{Cache, CacheError};
use crate::config::{Config, ConfigError};
use crate::htpasswd::HtpasswdError;
use crate::metrics::Metrics;
use crate::server;
use crate::shared::Shared;
use crate::shutdown::Shutdown;
use crate::upstream::{BuildError, Upstream, Upstreams};

/// The layers built from the configuration, shared by all connections (and used by the offline
/// commands).
pub(crate) struct App {
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) metrics: Arc<Metrics>,
    /// `[auth]`: who may pull what; None lets everyone pull everything.
    pub(crate) auth: Option<Arc<Auth>>,
    serve_metrics: bool,
}

/// Why the mirror could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
    #[error("cache directory {dir}: {source}")]
    Cache {
        dir: String,
        #[source]
        source: CacheSetupError,
    },
    #[error("auth.htpasswd: {0}")]
    Auth(#[source] AuthSetupError),
    #[error("shared: {0}")]
    Shared(#[source] SharedSetupError),
    #[error("cannot watch for SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
    #[error("server.tls_cert/tls_key: {0}")]
    Tls(#[source] TlsSetupError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// An upstream that could not be set up (its CA file, its HTTP client).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UpstreamSetupError(BuildError);

/// An htpasswd file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AuthSetupError(HtpasswdError);

/// A `[shared]` store that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SharedSetupError(crate::shared::SharedOpenError);

/// A TLS certificate or key that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TlsSetupError(crate::pem::PemError);

/// A cache directory that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CacheSetupError(CacheError);

/// How long a stop waits, once requests have drained, for fills still running to store and
/// record their blobs (their clients may already have every byte).
const SETTLE: Duration = Duration::from_secs(10);

/// How often batched access times are written to the index.
const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

impl App {
    /// Builds the upstreams and opens the cache (blocking: it reads the index and walks the
    /// store). The offline commands use it as `serve` does.
    pub(crate) fn new(config: &Config) -> Result<App, StartError> {
        // One process-wide TLS crypto provider (ring); a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                metrics.known_upstream(&u.name);
                Upstream::new(u, metrics.clone(), config.cache.offline).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StartError::Upstream(UpstreamSetupError(e)))?;
        let shared = match &config.shared {
            Some(sh) => Some(Arc::new(
                Shared::open(sh, metrics.clone())
                    .map_err(|e| StartError::Shared(SharedSetupError(e)))?,
            )),
            None => None,
        };
        let cache = Cache::open(
            &config.cache.dir,
            config.cache.max_size,
            config.cache.tag_ttl,
            config.cache.negative_ttl,
            metrics.clone(),
            shared,
            config.cache.prefetch_layers,
        )
        .map_err(|e| StartError::Cache {
            dir: config.cache.dir.display().to_string(),
            source: CacheSetupError(e),
        })?;
        let auth = match &config.auth {
            Some(a) => Some(Arc::new(
                Auth::new(a, metrics.clone()).map_err(|e| StartError::Auth(AuthSetupError(e)))?,
            )),
            None => None,
        };
        Ok(App {
            auth,
            upstreams: Arc::new(Upstreams::new(upstreams)),
            cache,
            metrics,
            // With a listener of its own, /metrics is not on the client port.
            serve_metrics: config.server.metrics && config.server.metrics_listen.is_none(),
        })
    }

    /// The API's state: these layers, and the shutdown that `/readyz` watches.
    fn api_state(&self, shutdown: Shutdown) -> crate::api::State {
        crate::api::State {
            cache: self.cache.clone(),
            upstreams: self.upstreams.clone(),
            auth: self.auth.clone(),
            metrics: self.metrics.clone(),
            serve_metrics: self.serve_metrics,
            shutdown,
        }
    }
}

/// Runs the mirror until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Opening the cache reads the index and walks the store: blocking work.
    let app = {
        let config = config.clone();
        Arc::new(crate::blocking::off_the_workers(move || App::new(&config)).await?)
    };
    let shutdown = Shutdown::on_signals().map_err(StartError::Signals)?;
    let tls =
        server::tls_acceptor(&config.server).map_err(|e| StartError::Tls(TlsSetupError(e)))?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.server.listen);
    tracing::info!(
        %addr,
        cache = %config.cache.dir.display(),
        max_size = config.cache.max_size,
        cached_bytes = app.cache.stored_bytes(),
        upstreams = ?app.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        "entrepot listening"
    );
    match &app.auth {
        Some(auth) => {
            tokio::spawn(auth.clone().watch(shutdown.clone()));
        }
        None => tracing::info!("no [auth] section: every client may pull everything"),
    }
    let flusher = tokio::spawn(flush_access_times(app.cache.clone(), shutdown.clone()));
    if let Some(addr) = config.server.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!(%addr, "metrics listening");
        let state = Arc::new(crate::api::State {
            serve_metrics: config.server.metrics,
            ..app.api_state(shutdown.clone())
        });
        let handler = move |req| crate::api::handle_metrics(state.clone(), req);
        let (cfg, shutdown) = (config.server.clone(), shutdown.clone());
        tokio::spawn(async move { server::serve(metrics, &cfg, None, shutdown, handler).await });
    }
    let state = Arc::new(app.api_state(shutdown.clone()));
    let handler = move |req| crate::api::handle(state.clone(), req);
    server::serve(listener, &config.server, tls, shutdown, handler).await;
    // A fill whose clients have every byte still fsyncs, renames and records its blob: let it,
    // so a rolling restart fetches nothing again.
    if tokio::time::timeout(SETTLE, app.cache.settle())
        .await
        .is_err()
    {
        tracing::warn!(
            fills = app.metrics.fills_running(),
            "fills still running at stop: their blobs will be fetched again"
        );
    }
    let _ = flusher.await;
    if let Err(e) = app.cache.flush_access_times().await {
        tracing::warn!(error = %e, "could not write access times to the index");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes the cache's batched access times to the index every [`ACCESS_FLUSH_INTERVAL`], and
/// measures the room on its filesystem again (`cache/room.rs`), until shutdown.
async fn flush_access_times(cache: Arc<Cache>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => break,
        }
        if let Err(e) = cache.flush_access_times().await {
            tracing::warn!(error = %e, "could not write access times to the index");
        }
        cache.refresh_room().await;
    }
}
