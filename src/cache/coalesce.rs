//! Request coalescing: concurrent lookups of one key share one piece of work.
//!
//! Sixteen nodes running `docker pull` at once each HEAD the same tag and GET the same manifest;
//! Docker Hub counts every manifest GET against the pull limit. [`Coalescer::run`] lets the first
//! caller for a key do the work while the others wait for its answer. If the first caller is
//! cancelled (its client went away), a waiting caller takes over, so nobody is left hanging.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub(super) struct Coalescer<K, V> {
    in_flight: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Coalescer<K, V> {
    pub(super) fn new() -> Coalescer<K, V> {
        Coalescer {
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` for `key`, unless a run for the same key is already under way, in which case
    /// its answer is shared.
    pub(super) async fn run<F, Fut>(&self, key: K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = self
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let value = cell.get_or_init(work).await.clone();
        // The answer is for this moment only: the next lookup starts afresh.
        let mut map = self.lock();
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<OnceCell<V>>>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let c = Arc::new(Coalescer::<&str, usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (c, runs) = (c.clone(), runs.clone());
                tokio::spawn(async move {
                    c.run("k", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        7
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Later calls run again.
        assert_eq!(c.run("k", || async { 8 }).await, 8);
    }

    #[tokio::test]
    async fn a_cancelled_first_caller_hands_over() {
        let c = Arc::new(Coalescer::<&str, usize>::new());
        let c2 = c.clone();
        let first = tokio::spawn(async move {
            c2.run("k", || async {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                1
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let c3 = c.clone();
        let second = tokio::spawn(async move { c3.run("k", || async { 2 }).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        first.abort();
        assert_eq!(second.await.unwrap(), 2);
    }
}
