//! Configuration: the TOML file, parsed once at start-up into checked values.
//!
//! Everything a user can get wrong is caught here, before a socket is opened, with a message that
//! names the key (`upstream[1].url: ...`). The rest of the program receives a [`Config`] whose
//! values are already valid (sizes in bytes, durations, parsed URLs) and never re-checks them.
//! Files: `schema.rs` (the file's shape), `units.rs` (sizes, durations), `upstream.rs` (one
//! `[[upstream]]`), `credentials.rs` (credential sources, docker `config.json`), `patterns.rs`
//! (repository patterns), `describe.rs` (the `check-config` printer).

mod auth;
mod credentials;
mod describe;
mod patterns;
mod schema;
mod shared;
mod units;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use auth::{AllowRule, AuthConfig, UserMatch};
pub(crate) use credentials::{CredentialSource, Secret};
pub(crate) use patterns::RepoPattern;
use schema::{RawCache, RawConfig, RawServer};
pub(crate) use shared::{SharedConfig, SharedSecret};
pub(crate) use units::format_size;
pub(crate) use upstream::UpstreamConfig;

/// The configuration shipped at the repository root, used when no file is given or found.
pub(crate) const EMBEDDED_DEFAULT: &str = include_str!("../../config.toml");

/// A configuration mistake, naming the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("config {origin}: {key}: {problem}")]
    Invalid {
        origin: String,
        key: String,
        problem: String,
    },
}

/// The checked configuration the program runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) cache: CacheConfig,
    pub(crate) upstreams: Vec<UpstreamConfig>,
    pub(crate) log: LogFormat,
    /// `[auth]`: None means every client may pull everything.
    pub(crate) auth: Option<AuthConfig>,
    /// `[shared]`: a second cache tier shared by replicas.
    pub(crate) shared: Option<SharedConfig>,
    /// `[credentials] docker_config`, as given (for `check-config`).
    pub(crate) docker_config: Option<PathBuf>,
}

/// How log lines are written (`[log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub(crate) listen: SocketAddr,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub(crate) max_connections: usize,
    /// How long a client may take to send its request headers (slowloris guard).
    pub(crate) header_read_timeout: Duration,
    /// Longest a response may wait for the client to accept bytes before the connection closes.
    pub(crate) send_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub(crate) max_header_bytes: usize,
    /// TLS certificate chain and private key files (PEM), reloaded when they change.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// CA certificates (PEM) whose client certificates authenticate as their common name.
    pub(crate) client_ca: Option<PathBuf>,
    /// Whether `/metrics` answers on the same listener.
    pub(crate) metrics: bool,
    /// Where `/metrics` answers instead of the client port (plain HTTP, no `[auth]`).
    pub(crate) metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub(crate) struct CacheConfig {
    pub(crate) dir: PathBuf,
    pub(crate) max_size: u64,
    pub(crate) tag_ttl: Duration,
    /// How long an upstream's "no such manifest or tag" is remembered (0: not at all).
    pub(crate) negative_ttl: Duration,
    /// Never contact an upstream: serve what is cached, tags never expire.
    pub(crate) offline: bool,
    /// Start fills of an image manifest's missing layers when a client GETs it (default: on,
    /// but off with `[shared]`, where another replica may own those layers).
    pub(crate) prefetch_layers: bool,
    /// `import_keys`: read (and checked) at start-up.
    pub(crate) import_keys: Vec<PathBuf>,
    /// `require_signature`: `serve` refuses an image it cannot verify by one of these keys.
    pub(crate) require_signature: Vec<PathBuf>,
}

/// Turns the file's raw values into checked ones; every mistake names its key and the file.
struct Checker<'a> {
    origin: &'a str,
}

impl Checker<'_> {
    fn bad(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let listen = raw.listen.as_deref().unwrap_or("0.0.0.0:5000");
        let listen: SocketAddr = listen.parse().map_err(|_| {
            self.bad(
                "server.listen",
                format!("{listen:?} is not an address:port"),
            )
        })?;
        let max_connections = raw.max_connections.unwrap_or(4096);
        if max_connections == 0 {
            return Err(self.bad("server.max_connections", "must be at least 1"));
        }
        let header_read_timeout = self.duration(
            raw.header_read_timeout.as_deref(),
            "10s",
            "server.header_read_timeout",
        )?;
        let send_timeout =
            self.duration(raw.send_timeout.as_deref(), "60s", "server.send_timeout")?;
        if send_timeout.is_zero() {
            return Err(self.bad("server.send_timeout", "must be longer than zero"));
        }
        let max_header_bytes = self.size(
            raw.max_header_size.as_deref(),
            "64KiB",
            "server.max_header_size",
        )?;
        if !(8192..=16 * 1024 * 1024).contains(&max_header_bytes) {
            return Err(self.bad("server.max_header_size", "must be between 8KiB and 16MiB"));
        }
        Ok(ServerConfig {
            listen,
            max_connections,
            header_read_timeout,
            send_timeout,
            max_header_bytes: max_header_bytes as usize,
            metrics: raw.metrics.unwrap_or(true),
            metrics_listen: self.metrics_listen(raw.metrics_listen, listen)?,
            client_ca: self.client_ca(raw.client_ca, raw.tls_cert.is_some())?,
            tls: self.tls(raw.tls_cert, raw.tls_key)?,
        })
    }

    /// `metrics_listen`: an address:port other than `listen`.
    fn metrics_listen(
        &self,
        raw: Option<String>,
        listen: SocketAddr,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let addr: SocketAddr = raw.parse().map_err(|_| {
            self.bad(
                "server.metrics_listen",
                format!("{raw:?} is not an address:port"),
            )
        })?;
        if addr == listen {
            return Err(self.bad(
                "server.metrics_listen",
                "is server.listen: give /metrics an address of its own, or leave this out",
            ));
        }
        Ok(Some(addr))
    }

    /// `tls_cert` and `tls_key` go together, and must load (checked here so `check-config`
    /// catches a wrong file).
    fn tls(
        &self,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.bad("server.tls_key", "tls_cert is set: set tls_key too")),
            (None, Some(_)) => Err(self.bad("server.tls_cert", "tls_key is set: set tls_cert too")),
            (Some(cert), Some(key)) => match crate::pem::load_pair(&cert, &key) {
                Ok(_) => Ok(Some((cert, key))),
                Err(e) => Err(self.bad("server.tls_cert/tls_key", e.to_string())),
            },
        }
    }

    /// `client_ca` needs TLS on the listener, and must hold at least one certificate.
    fn client_ca(&self, ca: Option<PathBuf>, tls: bool) -> Result<Option<PathBuf>, ConfigError> {
        let Some(ca) = ca else { return Ok(None) };
        if !tls {
            return Err(self.bad(
                "server.client_ca",
                "needs tls_cert and tls_key: client certificates come with TLS",
            ));
        }
        crate::pem::load_roots(&ca).map_err(|e| self.bad("server.client_ca", e.to_string()))?;
        Ok(Some(ca))
    }

    fn cache(&self, raw: RawCache) -> Result<CacheConfig, ConfigError> {
        let dir = raw.dir.unwrap_or_else(|| PathBuf::from("./data"));
        if dir.as_os_str().is_empty() {
            return Err(self.bad("cache.dir", "must not be empty"));
        }
        let max_size = self.size(raw.max_size.as_deref(), "20GiB", "cache.max_size")?;
        if max_size == 0 {
            return Err(self.bad("cache.max_size", "must be greater than zero"));
        }
        let tag_ttl = self.duration(raw.tag_ttl.as_deref(), "1m", "cache.tag_ttl")?;
        let negative_ttl =
            self.duration(raw.negative_ttl.as_deref(), "5s", "cache.negative_ttl")?;
        for (name, keys) in [
            ("import_keys", &raw.import_keys),
            ("require_signature", &raw.require_signature),
        ] {
            for (i, key) in keys.iter().enumerate() {
                crate::cosign::Keys::read(std::slice::from_ref(key))
                    .map_err(|e| self.bad(&format!("cache.{name}[{i}]"), e.to_string()))?;
            }
        }
        Ok(CacheConfig {
            dir,
            max_size,
            tag_ttl,
            negative_ttl,
            offline: raw.offline.unwrap_or(false),
            prefetch_layers: raw.prefetch_layers.unwrap_or(true),
            import_keys: raw.import_keys,
            require_signature: raw.require_signature,
        })
    }

    fn upstreams(
        &self,
        raw: &mut RawConfig,
        offline: bool,
    ) -> Result<Vec<UpstreamConfig>, ConfigError> {
        if raw.upstream.is_empty() {
            return Err(self.bad("upstream", "at least one [[upstream]] is required"));
        }
        let docker_config = match &raw.credentials.docker_config {
            None => None,
            Some(path) => Some(self.docker_config(path)?),
        };
        let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(raw.upstream.len());
        for (i, u) in std::mem::take(&mut raw.upstream).into_iter().enumerate() {
            let checked = self.upstream(i, u, &upstreams, docker_config.as_ref(), offline)?;
            upstreams.push(checked);
        }
        let defaults: Vec<&str> = upstreams
            .iter()
            .filter(|u| u.default)
            .map(|u| u.name.as_str())
            .collect();
        if defaults.len() > 1 {
            return Err(self.bad(
                "upstream.default",
                format!("only one upstream may be the default, found {defaults:?}"),
            ));
        }
        Ok(upstreams)
    }
}

impl Config {
    /// How log lines are to be written.
    pub fn log_format(&self) -> LogFormat {
        self.log
    }

    /// Loads the config: `path` if given (it must exist), else `./config.toml` if present, else the
    /// embedded default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Self::from_file(p),
            None if Path::new("config.toml").exists() => Self::from_file(Path::new("config.toml")),
            None => Self::parse(EMBEDDED_DEFAULT, "(embedded default)"),
        }
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Relative paths in the file are relative to its directory.
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        Self::parse_at(&text, &path.display().to_string(), base)
    }

    /// Parses and checks a config text; `origin` names it in error messages. Sections are
    /// checked in file order (server, cache, upstreams), so the first mistake is the one named.
    /// Relative paths are relative to the working directory.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::parse_at(text, origin, None)
    }

    /// As [`Config::parse`], with relative paths made relative to `base` when given.
    fn parse_at(text: &str, origin: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            // toml's own layout: the line, and a caret under the mistake.
            message: e.to_string().trim_end().to_owned(),
        })?;
        if let Some(base) = base {
            raw.rebase(base);
        }
        let check = Checker { origin };
        let server = check.server(std::mem::take(&mut raw.server))?;
        let prefetch_given = raw.cache.prefetch_layers.is_some();
        let mut cache = check.cache(std::mem::take(&mut raw.cache))?;
        let upstreams = check.upstreams(&mut raw, cache.offline)?;
        let docker_config = raw.credentials.docker_config.take();
        let log = match raw.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(check.bad(
                    "log.format",
                    format!("{other:?} is not a log format: use \"text\" or \"json\""),
                ));
            }
        };
        let auth = match raw.auth.take() {
            Some(a) => Some(check.auth(a, &upstreams)?),
            None => None,
        };
        let shared = match raw.shared.take() {
            Some(sh) => Some(check.shared(sh)?),
            None => None,
        };
        if shared.is_some() && !prefetch_given {
            // Each replica fetches only what it is asked for: its share of the digests.
            cache.prefetch_layers = false;
        }
        Ok(Config {
            server,
            cache,
            upstreams,
            log,
            auth,
            shared,
            docker_config,
        })
    }
}

#[cfg(test)]
mod tests;
