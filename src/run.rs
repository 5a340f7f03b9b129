//! `serve`: builds the [`App`], listens, serves until SIGTERM or Ctrl-C, and shuts down cleanly.
//!
//! This is the one place that knows every layer: it hands the API's state and handler to the
//! server, flushes the cache's batched access times on a timer and at shutdown, and answers the
//! admin socket (`admin/`) with the offline commands' work (`airgap/`) on its own cache.

use std::sync::Arc;
use std::time::Duration;

use crate::admin::{Console, Handler, Request};
use crate::app::{App, StartError, TlsSetupError};
use crate::cache::Cache;
use crate::config::Config;
use crate::server;
use crate::shutdown::Shutdown;

/// How long a stop waits, once requests have drained, for fills still running to store and
/// record their blobs (their clients may already have every byte).
const SETTLE: Duration = Duration::from_secs(10);

/// How often batched access times are written to the index.
const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// Runs the mirror until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Opening the cache reads the index and walks the store: blocking work.
    let app = {
        let config = config.clone();
        Arc::new(crate::blocking::off_the_workers(move || App::new(&config)).await?)
    };
    let shutdown = Shutdown::on_signals().map_err(StartError::Signals)?;
    let tls =
        server::tls_acceptor(&config.server).map_err(|e| StartError::Tls(TlsSetupError(e)))?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.server.listen);
    tracing::info!(
        %addr,
        cache = %config.cache.dir.display(),
        max_size = %crate::config::format_size(config.cache.max_size),
        cached = %crate::config::format_size(app.cache.stored_bytes()),
        offline = config.cache.offline,
        tls = tls.is_some(),
        client_certificates = config.server.client_ca.is_some(),
        auth = app.auth.is_some(),
        upstreams = ?app.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        "entrepot listening"
    );
    match &app.auth {
        Some(auth) => {
            tokio::spawn(auth.clone().watch(shutdown.clone()));
        }
        None => tracing::info!("no [auth] section: every client may pull everything"),
    }
    let flusher = tokio::spawn(flush_access_times(app.cache.clone(), shutdown.clone()));
    tokio::spawn(crate::admin::serve(
        admin_handler(app.clone()),
        config.cache.dir.clone(),
        shutdown.clone(),
    ));
    if let Some(addr) = config.server.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!(%addr, "metrics listening");
        let state = Arc::new(crate::api::State {
            serve_metrics: config.server.metrics,
            ..app.api_state(shutdown.clone())
        });
        let handler = move |req| crate::api::handle_metrics(state.clone(), req);
        let (cfg, shutdown) = (config.server.clone(), shutdown.clone());
        tokio::spawn(async move { server::serve(metrics, &cfg, None, shutdown, handler).await });
    }
    let state = Arc::new(app.api_state(shutdown.clone()));
    let handler = move |req| crate::api::handle(state.clone(), req);
    server::serve(listener, &config.server, tls, shutdown, handler).await;
    // A fill whose clients have every byte still fsyncs, renames and records its blob: let it,
    // so a rolling restart fetches nothing again.
    if tokio::time::timeout(SETTLE, app.cache.settle())
        .await
        .is_err()
    {
        tracing::warn!(
            fills = app.metrics.fills_running(),
            "fills still running at stop: their blobs will be fetched again"
        );
    }
    let _ = flusher.await;
    if let Err(e) = app.cache.flush_access_times().await {
        tracing::warn!(error = %e, "could not write access times to the index");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes the cache's batched access times to the index every [`ACCESS_FLUSH_INTERVAL`], and
/// measures the room on its filesystem again (`cache/room.rs`), until shutdown.
async fn flush_access_times(cache: Arc<Cache>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => break,
        }
        if let Err(e) = cache.flush_access_times().await {
            tracing::warn!(error = %e, "could not write access times to the index");
        }
        cache.refresh_room().await;
    }
}

/// The admin socket's work: the offline commands, on this process's cache.
fn admin_handler(app: Arc<App>) -> Handler {
    Arc::new(move |request: Request, console: &mut Console<'_>| {
        let done = match request {
            Request::Ls => crate::airgap::ls_in(&app, console),
            Request::Rm { images } => crate::airgap::rm_in(&app, &images, console),
            Request::Gc { grace } => crate::airgap::gc_in(&app, grace, console),
            Request::Export {
                output,
                images,
                all,
                strict,
                exclude_from,
            } => {
                let opts = crate::airgap::ExportOptions {
                    output,
                    images,
                    all,
                    strict,
                    exclude_from,
                };
                crate::airgap::export_in(&app, opts, console)
            }
        };
        done.map_err(|e| e.to_string())
    })
}
