//! Prometheus metrics: one registry, every counter the mirror exposes at `/metrics`.
//!
//! Every layer records into [`Metrics`]; it depends on no other module, so any layer may use it.
//! Label values are bounded sets (route kinds, upstream names from the config, outcome words),
//! never client-controlled strings, so a hostile client cannot blow up the series count.

use prometheus::{
    Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    register_int_counter_vec_with_registry, register_int_gauge_vec_with_registry,
    register_int_gauge_with_registry,
};

pub struct Metrics {
    registry: Registry,
    /// Client requests by route kind, method and status code.
    pub requests: IntCounterVec,
    /// Cache lookups by kind (`blob`, `manifest`, `tag`) and result (`hit`, `miss`, `stale`).
    pub cache_lookups: IntCounterVec,
    /// Requests sent upstream by upstream, kind and status (`error` when none came back).
    pub upstream_requests: IntCounterVec,
    /// Bytes fetched from upstreams into the cache.
    pub upstream_bytes: IntCounterVec,
    /// Bytes served to clients, by kind.
    pub served_bytes: IntCounterVec,
    /// Fills that ended badly, by reason (`digest_mismatch`, `short_body`, `upstream`, `io`).
    pub fill_failures: IntCounterVec,
    /// Token requests made to upstream token services.
    pub token_requests: IntCounterVec,
    /// Bytes held in the cache directory (index aside).
    pub cache_bytes: IntGauge,
    /// Files evicted by the LRU.
    pub evictions: IntCounterVec,
    /// The last `ratelimit-remaining` an upstream reported.
    pub ratelimit_remaining: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("entrepot".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register_int_counter_vec_with_registry!(Opts::new(name, help), labels, registry)
                .expect("metric names are unique and valid")
        };
        Metrics {
            requests: counter(
                "requests_total",
                "Client requests by route, method and status.",
                &["route", "method", "status"],
            ),
            cache_lookups: counter(
                "cache_lookups_total",
                "Cache lookups by kind and result (hit, miss, stale).",
                &["kind", "result"],
            ),
            upstream_requests: counter(
                "upstream_requests_total",
                "Requests sent to upstream registries by kind and status.",
                &["upstream", "kind", "status"],
            ),
            upstream_bytes: counter(
                "upstream_bytes_total",
                "Bytes fetched from upstreams into the cache.",
                &["upstream"],
            ),
            served_bytes: counter(
                "served_bytes_total",
                "Body bytes sent to clients, by kind.",
                &["kind"],
            ),
            fill_failures: counter(
                "fill_failures_total",
                "Upstream fetches that were rejected or failed, by reason.",
                &["reason"],
            ),
            token_requests: counter(
                "token_requests_total",
                "Requests to upstream token services.",
                &["upstream", "status"],
            ),
            evictions: counter(
                "evictions_total",
                "Entries evicted from the cache by the LRU.",
                &["kind"],
            ),
            cache_bytes: register_int_gauge_with_registry!(
                Opts::new(
                    "cache_bytes",
                    "Bytes held in the cache directory, index aside."
                ),
                registry
            )
            .expect("unique"),
            ratelimit_remaining: register_int_gauge_vec_with_registry!(
                Opts::new(
                    "upstream_ratelimit_remaining",
                    "The last ratelimit-remaining value an upstream reported."
                ),
                &["upstream"],
                registry
            )
            .expect("unique"),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
