//! The mirror as a running program: [`App`] holds what every request needs, and [`run`] builds
//! it from a [`Config`], listens, serves until SIGTERM or Ctrl-C, and shuts down cleanly.
//!
//! This is the one place that knows every layer: it builds the upstreams and the cache, hands the
//! API's handler to the server, and flushes the cache's batched access times on a timer and at
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::cache::{Cache, CacheError};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::reference::{ImageName, RepoName};
use crate::server::{self, Shutdown};
use crate::shared::Shared;
use crate::upstream::{BuildError, Upstream};

/// Everything a request handler needs, shared by all connections.
pub(crate) struct App {
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    pub(crate) default_upstream: Option<Arc<Upstream>>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) metrics: Arc<Metrics>,
    /// `[auth]`: who may pull what; None lets everyone pull everything.
    pub(crate) auth: Option<Arc<Auth>>,
    pub(crate) serve_metrics: bool,
    /// Set when shutdown begins: `/readyz` answers 503 while requests drain.
    pub(crate) draining: std::sync::atomic::AtomicBool,
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
    Auth(String),
    #[error("shared: {0}")]
    Shared(String),
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

/// A TLS certificate or key that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TlsSetupError(crate::server::TlsError);

/// A cache directory that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CacheSetupError(CacheError);

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
                Shared::open(sh, metrics.clone()).map_err(StartError::Shared)?,
            )),
            None => None,
        };
        let cache = Cache::open(
            &config.cache.dir,
            config.cache.max_size,
            config.cache.tag_ttl,
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
                Auth::new(a, metrics.clone()).map_err(StartError::Auth)?,
            )),
            None => None,
        };
        Ok(App {
            auth,
            default_upstream: upstreams.iter().find(|u| u.is_default).cloned(),
            upstreams,
            cache,
            metrics,
            serve_metrics: config.server.metrics,
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

impl App {
    /// The upstream configured under this registry name (`index.docker.io` and
    /// `registry-1.docker.io` are what clients call Docker Hub too).
    pub(crate) fn upstream_named(&self, name: &str) -> Option<Arc<Upstream>> {
        let name = match name {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            n => n,
        };
        self.upstreams.iter().find(|u| u.name == name).cloned()
    }

    /// The upstream an image name points at (its registry, else the default upstream), and the
    /// repository as that upstream spells it.
    pub(crate) fn upstream_for(
        &self,
        image: &ImageName,
    ) -> Result<(Arc<Upstream>, RepoName), String> {
        let up = match &image.registry {
            Some(r) => self.upstream_named(r).ok_or_else(|| {
                format!("{image}: no [[upstream]] is named {r:?} in the configuration")
            })?,
            None => self.default_upstream.clone().ok_or_else(|| {
                format!("{image}: names no registry, and no upstream is the default")
            })?,
        };
        let repo = up.spell(image.repo.clone());
        Ok((up, repo))
    }
}

/// Runs the mirror until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Opening the cache reads the index and walks the store: blocking work.
    let app = {
        let config = config.clone();
        Arc::new(crate::cache::off_the_workers(move || App::new(&config)).await?)
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
    let (ready_app, mut stopping) = (app.clone(), shutdown.clone());
    tokio::spawn(async move {
        stopping.recv().await;
        ready_app
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let handler_app = app.clone();
    let handler = move |req| crate::api::handle(handler_app.clone(), req);
    server::serve(listener, &config.server, tls, shutdown, handler).await;
    let _ = flusher.await;
    if let Err(e) = app.cache.flush_access_times().await {
        tracing::warn!(error = %e, "could not write access times to the index");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes the cache's batched access times to the index every [`ACCESS_FLUSH_INTERVAL`], until
/// shutdown.
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
    }
}
