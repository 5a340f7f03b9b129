//! The label values the mirror's metrics carry, as types.
//!
//! Every label value is one of these enums (or an upstream name from the configuration, or an HTTP
//! status), so the set of series is bounded and the values a dashboard or an alert relies on are
//! written down once, here. A client-controlled string never becomes a label.

/// What a cache lookup was for (`cache_lookups_total{kind}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Blob,
    Manifest,
    Tag,
}

/// How a cache lookup was answered (`cache_lookups_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LookupResult {
    /// From what the cache holds.
    Hit,
    /// Not held: fetched from the upstream.
    Miss,
    /// Joined a fill already in flight.
    Join,
    /// Served from the cache because the upstream failed (stale-if-error).
    Stale,
    /// A tag past its TTL, checked with the upstream.
    Revalidate,
    /// Answered "not found" from memory: the upstream said so within `negative_ttl`.
    Negative,
}

/// Why a fill or a manifest fetch was rejected (`fill_failures_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FillFailure {
    /// The content did not match its digest.
    DigestMismatch,
    /// The upstream's answer was malformed (lengths, media types, redirects).
    BadResponse,
    /// No answer: connection failures, timeouts, a body cut short, no free upstream slot.
    Unreachable,
    /// The stored credentials could not be read (a missing `password_file`, a failing helper).
    Credentials,
    /// The upstream answered with an error status.
    UpstreamStatus,
    /// The local disk or index failed.
    Storage,
    /// Anything else (a fill abandoned by its task).
    Other,
}

/// Where served bytes came from (`served_bytes_total{source}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServedFrom {
    /// A stored file, or a manifest the cache holds.
    Cache,
    /// A blob being fetched from its upstream.
    Fill,
}

impl ServedFrom {
    /// Every value, so each series exists (at 0) from the start.
    pub(crate) const ALL: [ServedFrom; 2] = [ServedFrom::Cache, ServedFrom::Fill];

    pub(crate) fn label(self) -> &'static str {
        match self {
            ServedFrom::Cache => "cache",
            ServedFrom::Fill => "fill",
        }
    }
}

/// What kind of content (`served_bytes_total{kind}`, `evictions_total{kind}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Content {
    Blob,
    Manifest,
}

/// What a request to an upstream asked for (`upstream_requests_total{kind}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamCall {
    Manifest,
    ManifestHead,
    Blob,
    BlobHead,
    /// A tags list.
    Repository,
    Referrers,
}

/// The status label of an upstream exchange: the HTTP status, or `error` when none came back.
pub(crate) const NO_ANSWER: &str = "error";

impl Lookup {
    /// Every value, so each series exists (at 0) from the start.
    pub(crate) const ALL: [Lookup; 3] = [Lookup::Blob, Lookup::Manifest, Lookup::Tag];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Lookup::Blob => "blob",
            Lookup::Manifest => "manifest",
            Lookup::Tag => "tag",
        }
    }
}

impl LookupResult {
    /// Every value, so each series exists (at 0) from the start.
    pub(crate) const ALL: [LookupResult; 6] = [
        LookupResult::Hit,
        LookupResult::Miss,
        LookupResult::Join,
        LookupResult::Stale,
        LookupResult::Revalidate,
        LookupResult::Negative,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            LookupResult::Hit => "hit",
            LookupResult::Miss => "miss",
            LookupResult::Join => "join",
            LookupResult::Stale => "stale",
            LookupResult::Revalidate => "revalidate",
            LookupResult::Negative => "negative",
        }
    }
}

/// Why a client's request was refused by `[auth]`, or slowed down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// Credentials that did not verify (401).
    BadCredentials,
    /// No credentials where a rule asks for them (401 with the challenge).
    Challenged,
    /// Authenticated, but no rule allows the repository (403).
    Denied,
    /// A failure answered late, after many from the same address.
    Throttled,
}

impl AuthFailure {
    pub(crate) const ALL: [AuthFailure; 4] = [
        AuthFailure::BadCredentials,
        AuthFailure::Challenged,
        AuthFailure::Denied,
        AuthFailure::Throttled,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            AuthFailure::BadCredentials => "bad_credentials",
            AuthFailure::Challenged => "challenged",
            AuthFailure::Denied => "denied",
            AuthFailure::Throttled => "throttled",
        }
    }
}

impl FillFailure {
    /// Every value, so each series exists (at 0) from the start.
    pub(crate) const ALL: [FillFailure; 7] = [
        FillFailure::DigestMismatch,
        FillFailure::BadResponse,
        FillFailure::Unreachable,
        FillFailure::Credentials,
        FillFailure::UpstreamStatus,
        FillFailure::Storage,
        FillFailure::Other,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            FillFailure::DigestMismatch => "digest_mismatch",
            FillFailure::BadResponse => "bad_response",
            FillFailure::Unreachable => "unreachable",
            FillFailure::Credentials => "credentials",
            FillFailure::UpstreamStatus => "upstream_status",
            FillFailure::Storage => "storage",
            FillFailure::Other => "other",
        }
    }
}

impl Content {
    /// Every value, so each series exists (at 0) from the start.
    pub(crate) const ALL: [Content; 2] = [Content::Blob, Content::Manifest];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Content::Blob => "blob",
            Content::Manifest => "manifest",
        }
    }
}

impl UpstreamCall {
    pub(crate) fn label(self) -> &'static str {
        match self {
            UpstreamCall::Manifest => "manifest",
            UpstreamCall::ManifestHead => "manifest_head",
            UpstreamCall::Blob => "blob",
            UpstreamCall::BlobHead => "blob_head",
            UpstreamCall::Repository => "repository",
            UpstreamCall::Referrers => "referrers",
        }
    }
}
