//! Blob single-flight: the table of fills in flight, at most one per digest.
//!
//! It exists so that N concurrent requests for one cold blob cause one upstream fetch
//! (ARCHITECTURE.md, invariant 5): the first request starts a fill and puts it here, later ones
//! join it, and the fill task takes it out when it ends (kept or failed), so the next request
//! after a failure starts afresh. It lives in the cache's `State`, under the cache's lock, because
//! "neither stored nor in flight, so start one" must be decided in one step with the entries
//! (`blobs.rs`); the lock is never held across an await or a system call.

use std::collections::HashMap;
use std::sync::Arc;

use super::Fill;
use crate::reference::Digest;

/// The fills in flight, by digest.
#[derive(Default)]
pub(super) struct Fills {
    by_digest: HashMap<Digest, Arc<Fill>>,
}

impl Fills {
    /// The fill in flight for `digest`, if any.
    pub(super) fn get(&self, digest: &Digest) -> Option<&Arc<Fill>> {
        self.by_digest.get(digest)
    }

    /// Whether a fill of `digest` is in flight.
    pub(super) fn contains(&self, digest: &Digest) -> bool {
        self.by_digest.contains_key(digest)
    }

    /// Makes `fill` the one in flight for its digest, unless another is: true if `fill` now is
    /// (the caller runs it), false if the caller should join the other one instead.
    pub(super) fn start(&mut self, fill: &Arc<Fill>) -> bool {
        if self.by_digest.contains_key(&fill.digest) {
            return false;
        }
        self.by_digest.insert(fill.digest.clone(), fill.clone());
        true
    }

    /// Forgets `fill` if it is still the one in flight for its digest (a fill streamed through
    /// leaves early, and a later fill of the same digest may have taken its place).
    pub(super) fn forget(&mut self, fill: &Arc<Fill>) {
        if self
            .by_digest
            .get(&fill.digest)
            .is_some_and(|f| Arc::ptr_eq(f, fill))
        {
            self.by_digest.remove(&fill.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::links::scope;

    fn fill(dir: &std::path::Path, name: &str, digest: &Digest) -> Arc<Fill> {
        let (fill, _tx) = Fill::create(digest.clone(), dir.join(name), scope("u", "r")).unwrap();
        fill
    }

    #[test]
    fn one_fill_a_digest_and_only_its_own_end_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::sha256_of(b"blob");
        let (first, second) = (fill(dir.path(), "a", &d), fill(dir.path(), "b", &d));
        let mut fills = Fills::default();
        assert!(!fills.contains(&d));
        assert!(fills.start(&first));
        assert!(
            !fills.start(&second),
            "a second fill of one digest joins the first"
        );
        assert!(Arc::ptr_eq(fills.get(&d).unwrap(), &first));
        fills.forget(&second);
        assert!(
            fills.contains(&d),
            "another fill's end leaves the one in flight"
        );
        fills.forget(&first);
        assert!(!fills.contains(&d));
        assert!(
            fills.start(&second),
            "after the end, the next request starts afresh"
        );
    }
}
