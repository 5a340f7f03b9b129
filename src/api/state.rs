//! What every endpoint reaches: the API's own state, built by `app.rs` from the layers below.
//!
//! It exists so that the API depends only on the layers it calls (the cache, the upstreams, the
//! access rules, the metrics) and never on the program that assembles them.

use std::sync::Arc;

use crate::auth::Auth;
use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::upstream::Upstreams;

/// Shared by all connections.
pub(crate) struct State {
    pub(crate) cache: Arc<Cache>,
    pub(crate) upstreams: Arc<Upstreams>,
    /// `[auth]`: who may pull what; None lets everyone pull everything.
    pub(crate) auth: Option<Arc<Auth>>,
    pub(crate) metrics: Arc<Metrics>,
    /// `[server] metrics`: whether `/metrics` is answered.
    pub(crate) serve_metrics: bool,
    /// Once it has begun, `/readyz` answers 503 while requests drain.
    pub(crate) shutdown: Shutdown,
    /// `[cache] require_signature`: None serves every manifest.
    pub(crate) required: Option<Arc<super::signed::Required>>,
}
