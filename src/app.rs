//! The layers of the mirror: [`App`] holds what is built from a [`Config`] (the upstreams, the
//! cache, the access rules), and the errors that stop a start. `serve` (`run.rs`) and the
//! offline commands (`airgap/`) open the same `App`.

use std::sync::Arc;

use crate::auth::Auth;
use crate::cache::{Cache, CacheError};
use crate::config::{Config, ConfigError};
use crate::htpasswd::HtpasswdError;
use crate::metrics::Metrics;
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
    /// `[cache] require_signature`, for `serve`'s manifests.
    required: Option<Arc<crate::api::Required>>,
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
    #[error("cache.require_signature: {0}")]
    SigningKey(#[source] SigningKeySetupError),
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

/// A `[cache] require_signature` key that could not be read.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SigningKeySetupError(crate::cosign::KeyError);

/// A `[shared]` store that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SharedSetupError(crate::shared::SharedOpenError);

/// A TLS certificate or key that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TlsSetupError(pub(crate) crate::pem::PemError);

/// A cache directory that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CacheSetupError(CacheError);

/// The configured upstreams, counted in `metrics`; for `entrepot import` without the rest of
/// an [`App`].
pub(crate) fn upstreams_of(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Upstreams, StartError> {
    // One process-wide TLS crypto provider (ring), before any client is built; a second
    // install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| {
            metrics.known_upstream(&u.name);
            Upstream::new(u, metrics.clone(), config.cache.offline).map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Upstream(UpstreamSetupError(e)))?;
    Ok(Upstreams::new(upstreams))
}

/// The cache opened to load into, without its records (`entrepot import`).
pub(crate) fn open_loader(config: &Config) -> Result<crate::cache::Loader, StartError> {
    crate::cache::Loader::open(&config.cache.dir, config.cache.max_size).map_err(|e| {
        StartError::Cache {
            dir: config.cache.dir.display().to_string(),
            source: CacheSetupError(e),
        }
    })
}

impl App {
    /// Builds the upstreams and opens the cache (blocking: it reads the index and walks the
    /// store). The offline commands use it as `serve` does, except `import` (`open_loader`).
    pub(crate) fn new(config: &Config) -> Result<App, StartError> {
        let metrics = Arc::new(Metrics::new());
        let upstreams = upstreams_of(config, &metrics)?;
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
        let required = crate::api::Required::from_config(&config.cache.require_signature)
            .map_err(|e| StartError::SigningKey(SigningKeySetupError(e)))?
            .map(Arc::new);
        Ok(App {
            required,
            auth,
            upstreams: Arc::new(upstreams),
            cache,
            metrics,
            // With a listener of its own, /metrics is not on the client port.
            serve_metrics: config.server.metrics && config.server.metrics_listen.is_none(),
        })
    }

    /// The API's state: these layers, and the shutdown that `/readyz` watches.
    pub(crate) fn api_state(&self, shutdown: Shutdown) -> crate::api::State {
        crate::api::State {
            cache: self.cache.clone(),
            upstreams: self.upstreams.clone(),
            auth: self.auth.clone(),
            metrics: self.metrics.clone(),
            serve_metrics: self.serve_metrics,
            shutdown,
            required: self.required.clone(),
        }
    }
}
