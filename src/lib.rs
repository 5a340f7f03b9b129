//! entrepot: a pull-through caching mirror for container registries.
//!
//! The path of a request follows the modules: `server` (connections and limits) -> `api` (routes,
//! grammar, OCI answers) -> `cache` (store, index, fills) -> `upstream` (registries, tokens).
//! `config`, `reference` and `media_type` (the registry's vocabulary) and `metrics` are used by
//! all and depend on none of them. `app` builds the layers and runs them; `main.rs` only parses
//! the command line and calls [`run`]. ARCHITECTURE.md walks the whole design.

// Nothing is `pub` that only the crate uses: what `main.rs` needs is re-exported below.
#![warn(unreachable_pub)]

mod airgap;
mod api;
mod app;
mod auth;
mod cache;
mod config;
mod manifest;
mod media_type;
mod metrics;
mod reference;
mod server;
mod shared;
mod upstream;

pub use airgap::{
    CommandError, ExportOptions, ImportOptions, WarmOptions, export, gc, import, ls, rm, warm,
};
pub use app::{CacheSetupError, StartError, TlsSetupError, UpstreamSetupError, run};
pub use config::{Config, ConfigError, LogFormat};
