//! Prometheus metrics: one registry, every series the mirror exposes at `/metrics`.
//!
//! Every layer records into [`Metrics`] through the small methods below; it depends on no other
//! module, so any layer may use it. Label values are the typed sets of `labels.rs`, upstream names
//! from the configuration, and HTTP statuses: never client-controlled strings, so a hostile client
//! cannot blow up the series count.

mod labels;
mod request;

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, register_histogram_vec_with_registry,
    register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, register_int_gauge_with_registry,
};

pub(crate) use labels::{
    AuthFailure, Content, FillFailure, Lookup, LookupResult, NO_ANSWER, ServedFrom, UpstreamCall,
};
pub(crate) use request::{RequestNote, note_error, note_target, note_upstream, note_user, noting};

/// The shared tier's operations and the results each can have.
const SHARED_SERIES: &[(&str, &[&str])] = &[
    ("get_blob", &["hit", "miss", "error", "corrupt"]),
    ("get_manifest", &["hit", "miss", "error", "corrupt"]),
    ("get_tag", &["hit", "miss", "error"]),
    ("put_blob", &["ok", "error"]),
    ("put_manifest", &["ok", "error"]),
    ("put_tag", &["ok", "error"]),
];

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
    /// Bytes served to clients, by kind (`blob`, `manifest`) and source (`cache`: a stored file
    /// or a manifest held; `fill`: a blob being fetched).
    served_bytes: IntCounterVec,
    /// Seconds from a request's arrival until its response was sent, by route kind.
    request_duration: HistogramVec,
    /// Seconds until an upstream's response headers arrived, by upstream and kind.
    upstream_duration: HistogramVec,
    /// Blob fills running now.
    fills_in_flight: IntGauge,
    /// Blob fills that ended with every byte verified.
    fills_completed: IntCounter,
    signature_refusals: IntCounter,
    /// Bytes evicted by the LRU, by kind.
    evicted_bytes: IntCounterVec,
    /// Fills that ended badly, by reason (`digest_mismatch`, `bad_response`, `unreachable`,
    /// `credentials`, `upstream_status`, `storage`, `other`).
    fill_failures: IntCounterVec,
    /// Token requests made to upstream token services, by upstream and status.
    token_requests: IntCounterVec,
    /// Client requests refused by `[auth]` (or slowed down), by reason.
    auth_failures: IntCounterVec,
    /// Shared-tier operations, by operation and result.
    shared: IntCounterVec,
    /// Bytes held in the cache directory (index aside).
    cache_bytes: IntGauge,
    /// The configured `max_size`.
    cache_max_bytes: IntGauge,
    /// The bound the cache keeps: the smaller of `max_size` and what its filesystem holds.
    cache_bound_bytes: IntGauge,
    /// Writes to the cache directory refused for want of space (`ENOSPC`).
    disk_full: IntCounterVec,
    /// Files evicted by the LRU, by kind (`blob`, `manifest`).
    evictions: IntCounterVec,
    /// The last `ratelimit-remaining` an upstream reported.
    ratelimit_remaining: IntGaugeVec,
}

/// What every metric's name starts with.
const PREFIX: &str = "entrepot";

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new_custom(Some(PREFIX.into()), None).expect("valid prefix");
        let counter =
            |name: &str, help: &str, labels: &[&str]| counter(&registry, name, help, labels);
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
            "Body bytes sent to clients, by kind and source (cache or fill).",
            &["kind", "source"],
        );
        let evicted_bytes = counter(
            "evicted_bytes_total",
            "Bytes evicted from the cache by the LRU.",
            &["kind"],
        );
        let (request_duration, upstream_duration) = durations(&registry);
        let fill_failures = counter(
            "fill_failures_total",
            "Upstream fetches that were rejected or failed, by reason.",
            &["reason"],
        );
        let evictions = counter(
            "evictions_total",
            "Entries evicted from the cache by the LRU.",
            &["kind"],
        );
        let disk_full = counter(
            "disk_full_total",
            "Writes to the cache directory refused for want of space, by what was written.",
            &["kind"],
        );
        let (token_requests, auth_failures, shared) = access_counters(&registry);
        let fills_completed = register_int_counter_with_registry!(
            Opts::new(
                "fills_completed_total",
                "Blob fills that ended with every byte verified (stored, or streamed through when it could not be kept)."
            ),
            registry
        )
        .expect("unique");
        let signature_refusals = register_int_counter_with_registry!(
            Opts::new(
                "signature_refusals_total",
                "Image manifests refused with 403 because no cosign signature by a key in [cache] require_signature was found for them."
            ),
            registry
        )
        .expect("unique");
        let g = gauges(&registry);
        let metrics = Metrics {
            registry,
            requests,
            cache_lookups,
            upstream_requests,
            upstream_bytes,
            served_bytes,
            request_duration,
            upstream_duration,
            fills_in_flight: g.fills_in_flight,
            fills_completed,
            signature_refusals,
            evicted_bytes,
            fill_failures,
            token_requests,
            auth_failures,
            shared,
            cache_bytes: g.cache_bytes,
            cache_max_bytes: g.cache_max_bytes,
            cache_bound_bytes: g.cache_bound_bytes,
            disk_full,
            evictions,
            ratelimit_remaining: g.ratelimit_remaining,
        };
        metrics.zero_series();
        metrics
    }

    /// Series with bounded labels exist at 0 from the start, so rules and dashboards see them
    /// before the first event (an absent series is not a zero to `rate`).
    fn zero_series(&self) {
        for reason in AuthFailure::ALL {
            self.auth_failures.with_label_values(&[reason.label()]);
        }
        for (op, results) in SHARED_SERIES {
            for r in *results {
                self.shared.with_label_values(&[op, r]);
            }
        }
        for kind in Lookup::ALL {
            for result in LookupResult::ALL {
                self.cache_lookups
                    .with_label_values(&[kind.label(), result.label()]);
            }
        }
        for reason in FillFailure::ALL {
            self.fill_failures.with_label_values(&[reason.label()]);
        }
        for kind in Content::ALL {
            self.disk_full.with_label_values(&[kind.label()]);
            self.evictions.with_label_values(&[kind.label()]);
            self.evicted_bytes.with_label_values(&[kind.label()]);
            for source in ServedFrom::ALL {
                self.served_bytes
                    .with_label_values(&[kind.label(), source.label()]);
            }
        }
    }

    /// The text exposition format. Families whose labels cannot be known before their first
    /// event (an upstream's token service status, its rate limit) still say what they are, with
    /// a HELP and TYPE line and no sample: a gauge made at 0 would claim a rate limit hit.
    pub(crate) fn render(&self) -> Vec<u8> {
        use prometheus::core::Collector as _;
        let families = self.registry.gather();
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        let described = [
            (self.token_requests.desc(), "counter"),
            (self.ratelimit_remaining.desc(), "gauge"),
        ];
        for (descs, kind) in described {
            for d in descs {
                // The registry adds its prefix when it gathers.
                let name = format!("{PREFIX}_{}", d.fq_name);
                if !families.iter().any(|f| f.name() == name) {
                    let help = &d.help;
                    buf.extend_from_slice(
                        format!("# HELP {name} {help}\n# TYPE {name} {kind}\n").as_bytes(),
                    );
                }
            }
        }
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

    /// An exchange with an upstream; `status` is the HTTP status or [`NO_ANSWER`], `took` the
    /// time until its headers (or the failure).
    pub(crate) fn upstream_request(
        &self,
        upstream: &str,
        call: UpstreamCall,
        status: &str,
        took: Duration,
    ) {
        self.upstream_requests
            .with_label_values(&[upstream, call.label(), status])
            .inc();
        self.upstream_duration
            .with_label_values(&[upstream, call.label()])
            .observe(took.as_secs_f64());
    }

    /// A response sent (or abandoned), `took` after its request arrived.
    pub(crate) fn request_done(&self, route: &'static str, took: Duration) {
        self.request_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// A blob fill started (`+1`) or ended (`-1`).
    pub(crate) fn fills_in_flight(&self, delta: i64) {
        self.fills_in_flight.add(delta);
    }

    /// A blob fill ended with every byte verified.
    pub(crate) fn fill_completed(&self) {
        self.fills_completed.inc();
    }

    /// An image manifest was refused for want of a trusted signature.
    pub(crate) fn signature_refused(&self) {
        self.signature_refusals.inc();
    }

    /// Fills running now, each until it has recorded its blob (or failed).
    pub(crate) fn fills_running(&self) -> i64 {
        self.fills_in_flight.get()
    }

    /// Makes an upstream's byte counter exist (at 0) before its first fill.
    pub(crate) fn known_upstream(&self, upstream: &str) {
        self.upstream_bytes.with_label_values(&[upstream]);
    }

    pub(crate) fn upstream_bytes(&self, upstream: &str, bytes: u64) {
        self.upstream_bytes
            .with_label_values(&[upstream])
            .inc_by(bytes);
    }

    pub(crate) fn served(&self, kind: Content, source: ServedFrom, bytes: u64) {
        self.served_bytes
            .with_label_values(&[kind.label(), source.label()])
            .inc_by(bytes);
    }

    pub(crate) fn fill_failed(&self, reason: FillFailure) {
        self.fill_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// A shared-tier operation and its result (one of [`SHARED_SERIES`]).
    pub(crate) fn shared(&self, op: &'static str, result: &'static str) {
        self.shared.with_label_values(&[op, result]).inc();
    }

    pub(crate) fn auth_failed(&self, reason: AuthFailure) {
        self.auth_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub(crate) fn token_request(&self, upstream: &str, status: &str) {
        self.token_requests
            .with_label_values(&[upstream, status])
            .inc();
    }

    pub(crate) fn evicted(&self, kind: Content, bytes: u64) {
        self.evictions.with_label_values(&[kind.label()]).inc();
        self.evicted_bytes
            .with_label_values(&[kind.label()])
            .inc_by(bytes);
    }

    pub(crate) fn set_cache_bytes(&self, bytes: u64) {
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_cache_max_bytes(&self, bytes: u64) {
        self.cache_max_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The bound the cache keeps now (`max_size`, or less when the filesystem holds less).
    pub(crate) fn set_cache_bound_bytes(&self, bytes: u64) {
        self.cache_bound_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A write of a blob or manifest to the cache directory was refused: the disk is full.
    pub(crate) fn disk_full(&self, kind: Content) {
        self.disk_full.with_label_values(&[kind.label()]).inc();
    }

    pub(crate) fn set_ratelimit_remaining(&self, upstream: &str, remaining: i64) {
        self.ratelimit_remaining
            .with_label_values(&[upstream])
            .set(remaining);
    }
}

/// The gauges.
/// A counter with labels, registered.
fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec_with_registry!(Opts::new(name, help), labels, registry)
        .expect("metric names are unique and valid")
}

/// The counters of requests to token services, `[auth]` refusals, and shared-tier operations.
fn access_counters(registry: &Registry) -> (IntCounterVec, IntCounterVec, IntCounterVec) {
    let token_requests = counter(
        registry,
        "token_requests_total",
        "Requests to upstream token services.",
        &["upstream", "status"],
    );
    let auth_failures = counter(
        registry,
        "auth_failures_total",
        "Client requests refused by [auth] (or answered late after repeated failures), by reason.",
        &["reason"],
    );
    let shared = counter(
        registry,
        "shared_requests_total",
        "Shared-tier ([shared]) operations, by operation (get_blob, get_manifest, get_tag, put_blob, put_manifest, put_tag) and result (hit, miss, ok, error, corrupt).",
        &["op", "result"],
    );
    (token_requests, auth_failures, shared)
}

/// The two duration histograms: requests (by route), and upstream answers (by upstream and
/// kind).
fn durations(registry: &Registry) -> (HistogramVec, HistogramVec) {
    let histogram = |name: &str, help: &str, labels: &[&str]| {
        let buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        register_histogram_vec_with_registry!(
            HistogramOpts::new(name, help).buckets(buckets),
            labels,
            registry
        )
        .expect("metric names are unique and valid")
    };
    let request_duration = histogram(
        "request_duration_seconds",
        "Seconds from a request's arrival until its response was sent, by route.",
        &["route"],
    );
    let upstream_duration = histogram(
        "upstream_request_duration_seconds",
        "Seconds until an upstream's response headers arrived, by upstream and kind.",
        &["upstream", "kind"],
    );
    (request_duration, upstream_duration)
}

struct Gauges {
    cache_bytes: IntGauge,
    cache_max_bytes: IntGauge,
    cache_bound_bytes: IntGauge,
    fills_in_flight: IntGauge,
    ratelimit_remaining: IntGaugeVec,
}

/// The gauges: the cache's size and bound, fills running, each upstream's last reported
/// rate-limit budget, and `build_info` (always 1, the version as a label).
fn gauges(registry: &Registry) -> Gauges {
    let gauge = |name: &str, help: &str| {
        register_int_gauge_with_registry!(Opts::new(name, help), registry).expect("unique")
    };
    let cache_bytes = gauge(
        "cache_bytes",
        "Bytes held in the cache directory, index aside.",
    );
    let cache_max_bytes = gauge(
        "cache_max_bytes",
        "The cache's configured max_size in bytes.",
    );
    let cache_bound_bytes = gauge(
        "cache_bound_bytes",
        "The bound the cache keeps: the smaller of max_size and what its filesystem holds.",
    );
    let fills_in_flight = gauge("fills_in_flight", "Blob fills from upstreams running now.");
    let ratelimit_remaining = register_int_gauge_vec_with_registry!(
        Opts::new(
            "upstream_ratelimit_remaining",
            "The last ratelimit-remaining value an upstream reported."
        ),
        &["upstream"],
        registry
    )
    .expect("unique");
    register_int_gauge_vec_with_registry!(
        Opts::new("build_info", "Always 1; the running version as a label."),
        &["version"],
        registry
    )
    .expect("unique")
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);
    Gauges {
        cache_bytes,
        cache_max_bytes,
        cache_bound_bytes,
        fills_in_flight,
        ratelimit_remaining,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
