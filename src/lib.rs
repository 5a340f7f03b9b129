//! entrepot: a pull-through caching mirror for container registries.
//!
//! The path of a request follows the modules: `server` (connections and limits) -> `api` (routes,
//! grammar, OCI answers) -> `cache` (store, index, fills) -> `upstream` (registries, tokens).
//! `config`, `reference` (the registry's grammar types) and `metrics` are used by all and depend on
//! none of them. `main.rs` only parses the command line and calls [`run`].
#![forbid(unsafe_code)]

pub mod api;
pub mod cache;
pub mod config;
pub mod metrics;
pub mod reference;
pub mod server;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use cache::Cache;
use config::Config;
use metrics::Metrics;
use upstream::Upstream;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub upstreams: Vec<Arc<Upstream>>,
    pub default_upstream: Option<Arc<Upstream>>,
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    pub serve_metrics: bool,
}

/// Why the mirror could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Upstream(String),
    #[error("cache directory {dir}: {source}")]
    Cache {
        dir: String,
        source: cache::CacheError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// How often batched access times are written to the index.
const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

impl App {
    pub fn new(config: &Config) -> Result<App, StartError> {
        // One process-wide TLS crypto provider (ring); a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::new(u, metrics.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Upstream)?;
        let cache = Cache::open(
            &config.cache.dir,
            config.cache.max_size,
            config.cache.tag_ttl,
            metrics.clone(),
        )
        .map_err(|source| StartError::Cache {
            dir: config.cache.dir.display().to_string(),
            source,
        })?;
        Ok(App {
            default_upstream: upstreams.iter().find(|u| u.is_default).cloned(),
            upstreams,
            cache,
            metrics,
            serve_metrics: config.server.metrics,
        })
    }
}

/// Runs the mirror until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartError> {
    let app = Arc::new(App::new(&config)?);
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
    let shutdown = server::Shutdown::on_signals();

    let flusher = {
        let cache = app.cache.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.recv() => break,
                }
                if let Err(e) = cache.flush_access_times() {
                    tracing::warn!(error = %e, "could not write access times to the index");
                }
            }
        })
    };

    server::serve(listener, app.clone(), &config.server, shutdown).await;
    let _ = flusher.await;
    if let Err(e) = app.cache.flush_access_times() {
        tracing::warn!(error = %e, "could not write access times to the index");
    }
    tracing::info!("stopped");
    Ok(())
}
