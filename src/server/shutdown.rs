//! Shutdown as a small type: a receiver that completes once SIGTERM or Ctrl-C arrives.

use tokio::sync::watch;

/// Listens for the shutdown signal. Cloneable; every clone sees the same signal.
#[derive(Clone)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Starts watching SIGTERM and SIGINT.
    pub(crate) fn on_signals() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            let _ = tx.send(true);
        });
        Shutdown { rx }
    }

    /// Completes when shutdown has been signalled.
    pub(crate) async fn recv(&mut self) {
        // An error means the sender is gone, which only happens at shutdown too.
        let _ = self.rx.wait_for(|down| *down).await;
    }
}
