//! Shutdown as a small type: a receiver that completes once SIGTERM or SIGINT arrives, and says
//! whether it has (`/readyz` answers 503 from that moment, while requests drain).
//!
//! The handlers are installed before the mirror starts serving, so a process that cannot watch
//! for its stop signal refuses to start with a clear error, rather than running unstoppable or,
//! worse, taking a failed installation for a signal and stopping at once.

use std::io;

use futures_util::future::select_all;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Listens for the shutdown signal. Cloneable; every clone sees the same signal.
#[derive(Clone)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Starts watching SIGTERM and SIGINT (Ctrl-C).
    pub(crate) fn on_signals() -> io::Result<Shutdown> {
        Self::on(&[SignalKind::terminate(), SignalKind::interrupt()])
    }

    /// Starts watching `kinds`; fails if any of them cannot be watched.
    fn on(kinds: &[SignalKind]) -> io::Result<Shutdown> {
        let mut signals = kinds
            .iter()
            .map(|kind| signal(*kind))
            .collect::<io::Result<Vec<_>>>()?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            select_all(signals.iter_mut().map(|s| Box::pin(s.recv()))).await;
            let _ = tx.send(true);
        });
        Ok(Shutdown { rx })
    }

    /// Whether shutdown has been signalled.
    pub(crate) fn begun(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when shutdown has been signalled.
    pub(crate) async fn recv(&mut self) {
        // An error means the sender is gone, which only happens at shutdown too.
        let _ = self.rx.wait_for(|down| *down).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal that cannot be watched is an error at start-up, never a shutdown.
    #[tokio::test]
    async fn a_signal_that_cannot_be_watched_is_an_error() {
        // SIGKILL (9) can never be caught.
        let kill = SignalKind::from_raw(9);
        assert!(Shutdown::on(&[SignalKind::terminate(), kill]).is_err());
        let mut watching = Shutdown::on(&[SignalKind::terminate()]).unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), watching.recv()).await;
        assert!(waited.is_err(), "no signal came, so no shutdown");
    }
}
