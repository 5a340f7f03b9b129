//! The registry API: routes a request, picks the upstream, and answers in OCI terms.
//!
//! [`handle`] is the whole read side of `/v2/`. It parses the path once into typed names and
//! references, chooses the upstream (a configured registry name as the first path component, then
//! `?ns=`, then the default: `resolve.rs`), calls the cache, and writes the answer with the headers
//! clients rely on. One file per endpoint below; errors become OCI bodies in `error.rs` and
//! nowhere else. This layer calls the cache, never an upstream.

mod access;
mod blobs;
mod catalog;
mod error;
mod log;
mod manifests;
mod range;
mod referrers;
mod resolve;
mod route;
mod signed;
mod state;
mod tags;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

use error::{ApiError, Code};
use resolve::resolve;
use route::Route;
pub(crate) use signed::Required;
pub(crate) use state::State;

/// Response bodies: a small buffer or a stream of file chunks that may end in an error (which makes
/// hyper abort the connection rather than end a sized body early).
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Answers one request. Never fails: every error is an OCI error response.
pub(crate) async fn handle<B>(app: Arc<State>, req: Request<B>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = route::parse(req.uri().path());
    let kind = route.kind();
    let resource = route.resource();
    let head = method == Method::HEAD;
    let (mut resp, note) = crate::metrics::noting(async {
        if method != Method::GET && method != Method::HEAD {
            ApiError::unsupported().into_response(resource, head)
        } else {
            match dispatch(&app, &req, route, head).await {
                Ok(r) => r,
                Err(e) => {
                    crate::metrics::note_error(&e.message);
                    e.into_response(resource, head)
                }
            }
        }
    })
    .await;
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let method_label = if head {
        "HEAD"
    } else if method == Method::GET {
        "GET"
    } else {
        "other"
    };
    app.metrics
        .request(kind, method_label, resp.status().as_str());
    let line = log::Line {
        method,
        route: kind,
        status: resp.status().as_u16(),
        started,
        note,
        peer: req.extensions().get::<SocketAddr>().copied(),
        metrics: app.metrics.clone(),
        // A body of known length without the header (`/metrics`) promises its length too:
        // hyper sends it whole and stops without asking for the end.
        promised: if head {
            Some(0)
        } else {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .or_else(|| hyper::body::Body::size_hint(resp.body()).exact())
        },
    };
    resp.map(|body| log::logged(body, line))
}

/// Answers one request on `[server] metrics_listen`: `/metrics`, `/healthz` and `/readyz`, to
/// anyone who can reach that address; every other path is 404.
pub(crate) async fn handle_metrics<B>(app: Arc<State>, req: Request<B>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let route = route::parse(req.uri().path());
    let resp = match route {
        Route::Metrics | Route::Health | Route::Ready if req.method() == Method::GET || head => {
            dispatch(&app, &req, route, head).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::Uncoded,
            "this address serves /metrics, /healthz and /readyz only",
        )),
    };
    resp.unwrap_or_else(|e| e.into_response(None, head))
}

async fn dispatch<B>(
    app: &Arc<State>,
    req: &Request<B>,
    route: Route<'_>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let query = req.uri().query().unwrap_or("");
    match route {
        Route::Metrics if app.serve_metrics => Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(full(app.metrics.render()))
            .expect("valid")),
        Route::Health => Ok(text_response(StatusCode::OK, "ok\n", head)),
        Route::Ready => Ok(ready(app, head).await),
        Route::Metrics | Route::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::Uncoded,
            "404 page not found: no such endpoint",
        )),
        Route::Base => {
            let who = access::identify(app, req).await?;
            access::base(app, &who)?;
            Ok(json_response(StatusCode::OK, "{}".into(), head))
        }
        Route::Catalog => {
            let who = access::identify(app, req).await?;
            catalog::get(app, &who, query, head).await
        }
        Route::Manifest { name, reference } => {
            let (up, repo) = allowed(app, req, name, query, Some(reference)).await?;
            manifests::get(app, &up, &repo, reference, req.headers(), head).await
        }
        Route::Blob { name, digest } => {
            let (up, repo) = allowed(app, req, name, query, Some(digest)).await?;
            blobs::get(app, &up, &repo, digest, req.headers(), head).await
        }
        Route::Tags { name } => {
            let (up, repo) = allowed(app, req, name, query, None).await?;
            tags::get(app, &up, &repo, name, query, head).await
        }
        Route::Referrers { name, digest } => {
            let (up, repo) = allowed(app, req, name, query, Some(digest)).await?;
            referrers::get(app, &up, &repo, digest, query, head).await
        }
    }
}

/// The upstream and repository a request names, once `[auth]` allows its sender to pull there;
/// noted with `reference` for the request's log line.
async fn allowed<B>(
    app: &Arc<State>,
    req: &Request<B>,
    name: &str,
    query: &str,
    reference: Option<&str>,
) -> Result<(Arc<crate::upstream::Upstream>, crate::reference::RepoName), ApiError> {
    let who = access::identify(app, req).await?;
    let (up, repo) = resolve(app, name, query)?;
    crate::metrics::note_upstream(&up.name);
    crate::metrics::note_target(repo.as_str(), reference);
    access::check(app, &who, &up.name, repo.as_str())?;
    Ok((up, repo))
}

/// `/readyz`: 200 while the index answers, the cache directory takes writes and shutdown has not
/// begun; 503 with the reason otherwise (load balancers stop sending while requests drain). A
/// full disk is still 200 (serving goes on, what cannot be stored is passed through), and the
/// body says the cache cannot store.
async fn ready(app: &State, head: bool) -> Response<Body> {
    if app.shutdown.begun() {
        return text_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n", head);
    }
    match app.cache.check_ready().await {
        Ok(()) => text_response(StatusCode::OK, "ready\n", head),
        Err(e) if e.is_disk_full() => {
            tracing::warn!(error = %e, "ready, but the cache's disk is full");
            let body = "ready; cannot store: the cache's disk is full (serving what it holds, passing the rest through)\n";
            text_response(StatusCode::OK, body, head)
        }
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            text_response(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n"), head)
        }
    }
}

fn text_response(status: StatusCode, body: &str, head: bool) -> Response<Body> {
    small_response(status, "text/plain; charset=utf-8", body.to_owned(), head)
}

pub(crate) fn json_response(status: StatusCode, body: String, head: bool) -> Response<Body> {
    small_response(status, "application/json", body, head)
}

/// A whole body in one buffer, with its length; a HEAD gets the headers alone.
fn small_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    head: bool,
) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(if head { full(Vec::new()) } else { full(body) })
        .expect("valid")
}

/// A query parameter's first value.
pub(crate) fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The route a path names, as its metrics label (for the micro-benchmarks).
pub(crate) fn route_kind(path: &str) -> &'static str {
    route::parse(path).kind()
}

/// The (first) byte range `[start, end)` a `Range` value asks of a blob of `size` bytes, if it is
/// one we serve (for the micro-benchmarks).
pub(crate) fn range_of(value: &str, size: u64) -> Option<(u64, u64)> {
    range::resolve_all(&range::parse(value).ok()?, size)
        .first()
        .copied()
}
