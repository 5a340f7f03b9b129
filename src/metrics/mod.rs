//! Prometheus metrics: one registry, every series the mirror exposes at `/metrics`.
//!
//! Every layer records into [`Metrics`] through the small methods below; it depends on no other
//! module, so any layer may use it. Label values are the typed sets of `labels.rs`, upstream names
//! from the configuration, and HTTP statuses: never client-controlled strings, so a hostile client
//! cannot blow up the series count.

mod labels;
mod request;

use prometheus::{
    Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    register_int_counter_vec_with_registry, register_int_gauge_vec_with_registry,
    register_int_gauge_with_registry,
};

pub(crate) use labels::{Content, FillFailure, Lookup, LookupResult, NO_ANSWER, UpstreamCall};
pub(crate) use request::{RequestNote, note_upstream, noting};

pub(crate) struct Metrics {
    registry: Registry,
    /// Client requests by route kind, method and status code.
    requests: IntCounterVec,
    /// Cache lookups by kind (`blob`, `manifest`, `tag`) and result (`hit`, `miss`, `join`,
    /// `stale`, `revalidate`).
    cache_lookups: IntCounterVec,
    /// Requests sent upstream by upstream, kind (`manifest`, `manifest_head`, `blob`,
    /// `blob_head`, `repository`, `referrers`) and status (`error` when none came back).
    upstream_requests: IntCounterVec,
    /// Bytes fetched from upstreams into the cache, by upstream.
    upstream_bytes: IntCounterVec,
    /// Bytes served to clients, by kind (`blob`, `manifest`).
    served_bytes: IntCounterVec,
    /// Fills that ended badly, by reason (`digest_mismatch`, `bad_response`, `unreachable`,
    /// `credentials`, `upstream_status`, `storage`, `other`).
    fill_failures: IntCounterVec,
    /// Token requests made to upstream token services, by upstream and status.
    token_requests: IntCounterVec,
    /// Bytes held in the cache directory (index aside).
    cache_bytes: IntGauge,
    /// Files evicted by the LRU, by kind (`blob`, `manifest`).
    evictions: IntCounterVec,
    /// The last `ratelimit-remaining` an upstream reported.
    ratelimit_remaining: IntGaugeVec,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new_custom(Some("entrepot".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register_int_counter_vec_with_registry!(Opts::new(name, help), labels, registry)
                .expect("metric names are unique and valid")
        };
        let requests = counter(
            "requests_total",
            "Client requests by route, method and status.",
            &["route", "method", "status"],
        );
        let cache_lookups = counter(
            "cache_lookups_total",
            "Cache lookups by kind and result (hit, miss, join, stale, revalidate).",
            &["kind", "result"],
        );
        let upstream_requests = counter(
            "upstream_requests_total",
            "Requests sent to upstream registries by kind and status.",
            &["upstream", "kind", "status"],
        );
        let upstream_bytes = counter(
            "upstream_bytes_total",
            "Bytes fetched from upstreams into the cache.",
            &["upstream"],
        );
        let served_bytes = counter(
            "served_bytes_total",
            "Body bytes sent to clients, by kind.",
            &["kind"],
        );
        let fill_failures = counter(
            "fill_failures_total",
            "Upstream fetches that were rejected or failed, by reason.",
            &["reason"],
        );
        let token_requests = counter(
            "token_requests_total",
            "Requests to upstream token services.",
            &["upstream", "status"],
        );
        let evictions = counter(
            "evictions_total",
            "Entries evicted from the cache by the LRU.",
            &["kind"],
        );
        let (cache_bytes, ratelimit_remaining) = gauges(&registry);
        Metrics {
            registry,
            requests,
            cache_lookups,
            upstream_requests,
            upstream_bytes,
            served_bytes,
            fill_failures,
            token_requests,
            cache_bytes,
            evictions,
            ratelimit_remaining,
        }
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }

    /// A client request answered. `route` is a route kind, `method` `GET`, `HEAD` or `other`.
    pub(crate) fn request(&self, route: &'static str, method: &'static str, status: &str) {
        self.requests
            .with_label_values(&[route, method, status])
            .inc();
    }

    pub(crate) fn lookup(&self, kind: Lookup, result: LookupResult) {
        request::note_lookup(result);
        self.cache_lookups
            .with_label_values(&[kind.label(), result.label()])
            .inc();
    }

    /// An exchange with an upstream; `status` is the HTTP status or [`NO_ANSWER`].
    pub(crate) fn upstream_request(&self, upstream: &str, call: UpstreamCall, status: &str) {
        self.upstream_requests
            .with_label_values(&[upstream, call.label(), status])
            .inc();
    }

    pub(crate) fn upstream_bytes(&self, upstream: &str, bytes: u64) {
        self.upstream_bytes
            .with_label_values(&[upstream])
            .inc_by(bytes);
    }

    pub(crate) fn served(&self, kind: Content, bytes: u64) {
        self.served_bytes
            .with_label_values(&[kind.label()])
            .inc_by(bytes);
    }

    pub(crate) fn fill_failed(&self, reason: FillFailure) {
        self.fill_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub(crate) fn token_request(&self, upstream: &str, status: &str) {
        self.token_requests
            .with_label_values(&[upstream, status])
            .inc();
    }

    pub(crate) fn evicted(&self, kind: Content) {
        self.evictions.with_label_values(&[kind.label()]).inc();
    }

    pub(crate) fn set_cache_bytes(&self, bytes: u64) {
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_ratelimit_remaining(&self, upstream: &str, remaining: i64) {
        self.ratelimit_remaining
            .with_label_values(&[upstream])
            .set(remaining);
    }
}

/// The gauges: the cache's size and each upstream's last reported rate-limit budget.
fn gauges(registry: &Registry) -> (IntGauge, IntGaugeVec) {
    let cache_bytes = register_int_gauge_with_registry!(
        Opts::new(
            "cache_bytes",
            "Bytes held in the cache directory, index aside."
        ),
        registry
    )
    .expect("unique");
    let ratelimit_remaining = register_int_gauge_vec_with_registry!(
        Opts::new(
            "upstream_ratelimit_remaining",
            "The last ratelimit-remaining value an upstream reported."
        ),
        &["upstream"],
        registry
    )
    .expect("unique");
    (cache_bytes, ratelimit_remaining)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
