//! entrepot: a pull-through caching mirror for container registries.
//!
//! The path of a request follows the modules: `server` (connections and limits) -> `api` (routes,
//! grammar, OCI answers) -> `cache` (store, index, fills) -> `upstream` (registries, tokens).
//! `config`, `reference` and `media_type` (the registry's vocabulary) and `metrics` are used by
//! all and depend on none of them. `app` builds the layers and runs them; `main.rs` only parses
//! the command line and calls [`run`]. ARCHITECTURE.md walks the whole design.

// Nothing is `pub` that only the crate uses: what `main.rs` needs is re-exported below.
#![warn(unreachable_pub)]

mod admin;
mod airgap;
mod api;
mod app;
mod auth;
mod blocking;
mod cache;
mod config;
mod cosign;
mod htpasswd;
mod log_out;
mod manifest;
mod media_type;
mod metrics;
mod pem;
mod reference;
mod run;
mod server;
mod shared;
mod shutdown;
mod upstream;

pub use airgap::{
    CommandError, ExportOptions, ImportOptions, WarmOptions, export, gc, import, ls, rm, warm,
};
pub use app::{
    AuthSetupError, CacheSetupError, SharedSetupError, StartError, TlsSetupError,
    UpstreamSetupError,
};
pub use config::{Config, ConfigError, LogFormat};
pub use log_out::{BatchedStderr, flush as flush_log, log_json};
pub use run::run;

/// The request path's hot functions, for the micro-benchmarks in `benches/hot.rs` only: not an
/// API, and free to change.
#[doc(hidden)]
pub mod hot_paths {
    /// Parses a request path into its route; returns the route's label.
    pub fn route(path: &str) -> &'static str {
        crate::api::route_kind(path)
    }

    /// Parses a repository name and a manifest reference (tag or digest); true if both are valid.
    pub fn reference(name: &str, reference: &str) -> bool {
        crate::reference::RepoName::parse(name).is_some()
            && crate::reference::Reference::parse(reference).is_ok()
    }

    /// Parses and resolves a `Range` header against a blob's size.
    pub fn range(value: &str, size: u64) -> Option<(u64, u64)> {
        crate::api::range_of(value, size)
    }

    /// The SHA-256 of `bytes` fed in `chunk`-byte pieces, as a fill hashes what arrives.
    pub fn sha256(bytes: &[u8], chunk: usize) -> String {
        let mut h = crate::reference::Hasher::new(crate::reference::Algorithm::Sha256);
        for c in bytes.chunks(chunk) {
            h.update(c);
        }
        h.finish().to_string()
    }
}
