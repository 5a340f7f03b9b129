//! Blob single-flight: the table of fills in flight, at most one per digest.
//!
//! It exists so that N concurrent requests for one cold blob cause one upstream fetch
//! (ARCHITECTURE.md, invariant 5): the first request starts a fill and puts it here, later ones
//! join it, and the fill task takes it out when it ends (kept or failed), so the next request
//! after a failure starts afresh. It lives in the cache's `State`, under the cache's lock, because
//! "neither stored nor in flight, so start one" must be decided in one step with the entries
//! (`blobs.rs`); the lock is never held across an await or a system call.
//!
//! Whoever puts a fill in the table gets a [`FillPermit`] for it, the duty to end it, which the
//! fill's task holds (pingora's `lock.rs` is the model). However the task ends, the fill ends with
//! it: failing, or dropped unfinished (a panic, an early return, the runtime going away), the
//! permit ends every waiter's body with an error, removes the temp file, takes the fill out of the
//! table and gives back the bytes it reserved, so no client waits forever on a fill nobody runs.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use tokio::sync::watch;

use super::fill::{FillState, Outcome};
use super::{Cache, CacheError, Fill};
use crate::blocking::off_the_workers;
use crate::reference::Digest;

/// How a fill's task tells its clients how far it has got.
pub(super) type Progress = Arc<watch::Sender<FillState>>;

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

/// The duty to end one fill, held by its task from the moment the fill is in the table: see the
/// module's comment. [`FillPermit::finish`] is the kept (or streamed-through) end, after which the
/// store holds the file and the accounting its bytes; [`FillPermit::fail`] and dropping it
/// unfinished keep nothing.
pub(super) struct FillPermit {
    cache: Arc<Cache>,
    pub(super) fill: Arc<Fill>,
    pub(super) tx: Progress,
    /// Bytes reserved for the fill so far (moved to the stored bytes when it is kept, given back
    /// when it fails).
    pub(super) reserved: u64,
    /// The bytes come from the shared tier, not the upstream.
    pub(super) shared: bool,
    ended: bool,
}

impl FillPermit {
    /// The permit for `fill`, just made the one in flight for its digest (counted in the
    /// fills-in-flight gauge until the permit is gone).
    pub(super) fn new(
        cache: Arc<Cache>,
        fill: Arc<Fill>,
        tx: watch::Sender<FillState>,
    ) -> FillPermit {
        cache.metrics.fills_in_flight(1);
        FillPermit {
            cache,
            fill,
            tx: Arc::new(tx),
            reserved: 0,
            shared: false,
            ended: false,
        }
    }

    /// The fill was kept (or streamed through): its file and bytes belong to the store now.
    pub(super) fn finish(mut self) {
        self.ended = true;
        self.cache.metrics.fill_completed();
    }

    /// The fill failed: nothing is kept. Clients that were given the last byte (`verified`: the
    /// digest matched, only keeping the file failed) keep what they have; the others' bodies end
    /// with `error`.
    pub(super) async fn fail(mut self, error: CacheError, verified: bool) {
        self.ended = true;
        self.fill.remove_temp().await;
        if !verified {
            self.tx
                .send_modify(|s| s.outcome = Outcome::Failed(Arc::new(error)));
        }
        self.forget();
    }

    /// Takes the fill out of the table and gives back its reservation.
    fn forget(&mut self) {
        self.cache.forget_fill(&self.fill);
        self.cache.release(std::mem::take(&mut self.reserved));
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        if !self.ended {
            tracing::error!(digest = %self.fill.digest, "a fill's task ended before the fill: failing its clients");
            self.tx.send_if_modified(|s| {
                let running = matches!(s.outcome, Outcome::Running);
                if running {
                    let e = io::Error::other("the fill's task ended before the fill did");
                    s.outcome = Outcome::Failed(Arc::new(CacheError::Io(e)));
                }
                running
            });
            let temp = self.fill.temp_path.clone();
            // With no runtime left to hand it to, the start-up sweep of the temp directory gets it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                drop(rt.spawn(off_the_workers(move || std::fs::remove_file(temp))));
            }
            self.forget();
        }
        self.cache.metrics.fills_in_flight(-1);
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

    /// A fill's task that ends before its fill (here, a panic) still ends it: its clients see a
    /// failure rather than waiting forever, its temp file goes, the next request starts afresh,
    /// and its reservation and the fills-in-flight gauge are given back.
    #[test]
    fn a_permit_dropped_unfinished_fails_its_clients_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let minute = std::time::Duration::from_secs(60);
        let zero = std::time::Duration::ZERO;
        let cache = Cache::open(
            dir.path(),
            1 << 20,
            minute,
            zero,
            metrics.clone(),
            None,
            false,
        )
        .unwrap();
        let d = Digest::sha256_of(b"blob");
        let temp = cache.store.temp_path(&d);
        let (fill, tx) = Fill::create(d.clone(), temp.clone(), scope("u", "r")).unwrap();
        assert!(cache.lock().fills.start(&fill));
        cache.lock().lru.reserved += 100;
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut permit = FillPermit::new(cache.clone(), fill.clone(), tx);
            permit.reserved = 100;
            assert_eq!(metrics.fills_running(), 1);
            let task = tokio::spawn(async move {
                let _held = permit;
                panic!("the fill's task panics");
            });
            assert!(task.await.is_err());
            assert!(fill.total().await.is_err(), "its client sees the fill fail");
            for _ in 0..500 {
                if !temp.exists() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
        assert!(!temp.exists(), "the temp file is removed");
        assert!(
            !cache.lock().fills.contains(&d),
            "the next request starts afresh"
        );
        assert_eq!(cache.lock().lru.reserved, 0);
        assert_eq!(metrics.fills_running(), 0);
    }
}
