//! What can go wrong in the cache, and what each failure is counted as.
//!
//! A [`CacheError`] is either the upstream's (carried whole, so the API can answer in registry
//! terms), content that failed its digest, or local storage. Fill failures are shared by every
//! client of the fill, so they travel as `Arc<CacheError>`.

use std::io;

use super::index::IndexError;
use crate::media_type::NotAManifest;
use crate::metrics::FillFailure;
use crate::reference::Digest;
use crate::upstream::{Origin, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("content from upstream {upstream} does not match digest {digest}")]
    DigestMismatch { upstream: String, digest: Digest },
    #[error("{0} is a manifest, not a blob")]
    NotABlob(Digest),
    #[error("cache storage: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the fill was abandoned")]
    Abandoned,
    /// The bound is reached and no room was made: the fills in flight alone fill it, or
    /// eviction did not make room within `ROOM_WAIT` (`evictor.rs`).
    #[error(
        "no room in the cache's bound ({0} bytes): the blobs being fetched at once fill it, or eviction did not make room within a second"
    )]
    NoRoom(u64),
}

impl CacheError {
    /// A manifest answer that is not a manifest: the upstream's fault.
    pub(super) fn not_a_manifest(upstream: &str, e: NotAManifest) -> CacheError {
        CacheError::Upstream(UpstreamError::BadResponse {
            upstream: upstream.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Where the failure came from: the registry (including content that failed its digest),
    /// the network, or this mirror (its disk, its index, its credentials).
    pub(crate) fn origin(&self) -> Origin {
        match self {
            CacheError::Upstream(e) => e.origin(),
            CacheError::DigestMismatch { .. } => Origin::Registry,
            CacheError::NotABlob(_)
            | CacheError::Io(_)
            | CacheError::Index(_)
            | CacheError::Abandoned
            | CacheError::NoRoom(_) => Origin::Mirror,
        }
    }

    /// Whether this is the cache's disk (or its bound) being full: `ENOSPC` anywhere in the
    /// chain, or no room left beside the fills in flight.
    pub(crate) fn is_disk_full(&self) -> bool {
        if matches!(self, CacheError::NoRoom(_)) {
            return true;
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<io::Error>()
                && io.kind() == io::ErrorKind::StorageFull
            {
                return true;
            }
            next = e.source();
        }
        // redb reports an I/O error by its text alone.
        self.to_string().contains("No space left on device")
    }

    /// What a failed fill is counted as in `fill_failures_total`.
    pub(super) fn failure_reason(&self) -> FillFailure {
        match self {
            CacheError::DigestMismatch { .. } => FillFailure::DigestMismatch,
            CacheError::Upstream(UpstreamError::BadResponse { .. }) => FillFailure::BadResponse,
            CacheError::Upstream(
                UpstreamError::Unreachable { .. } | UpstreamError::Busy { .. },
            ) => FillFailure::Unreachable,
            CacheError::Upstream(UpstreamError::Credentials { .. }) => FillFailure::Credentials,
            CacheError::Upstream(_) => FillFailure::UpstreamStatus,
            CacheError::Io(_) | CacheError::Index(_) | CacheError::NoRoom(_) => {
                FillFailure::Storage
            }
            CacheError::NotABlob(_) | CacheError::Abandoned => FillFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reservation refused for want of room says both of the reasons it can have: the log of
    /// a manifest passed through uncached is all an operator sees of it.
    #[test]
    fn no_room_names_the_fills_in_flight_and_a_slow_eviction() {
        let said = CacheError::NoRoom(1000).to_string();
        assert!(said.contains("1000 bytes"), "{said}");
        assert!(said.contains("fetched at once"), "{said}");
        assert!(said.contains("eviction did not make room"), "{said}");
    }
}
