//! The registry API: routes a request, picks the upstream, and answers in OCI terms.
//!
//! [`handle`] is the whole read side of `/v2/`. It parses the path once into typed names and
//! references, chooses the upstream (a configured registry name as the first path component, then
//! `?ns=`, then the default), calls the cache, and writes the answer with the headers clients rely
//! on. One file per endpoint below; errors become OCI bodies in `error.rs` and nowhere else.

mod blobs;
mod catalog;
pub mod error;
mod manifests;
pub mod range;
mod referrers;
pub mod route;
mod tags;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

use crate::App;
use crate::reference::RepoName;
use crate::upstream::Upstream;
pub use error::ApiError;
use route::Route;

/// Response bodies: a small buffer or a stream of file chunks that may end in an error (which makes
/// hyper abort the connection rather than end a sized body early).
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Answers one request. Never fails: every error is an OCI error response.
pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> Response<Body> {
    let method = req.method().clone();
    let route = route::parse(req.uri().path());
    let kind = route.kind();
    let head = method == Method::HEAD;
    let mut resp = if method != Method::GET && method != Method::HEAD {
        ApiError::unsupported().into_response(head)
    } else {
        match dispatch(&app, &req, route, head).await {
            Ok(r) => r,
            Err(e) => e.into_response(head),
        }
    };
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
        .requests
        .with_label_values(&[kind, method_label, resp.status().as_str()])
        .inc();
    resp
}

async fn dispatch<B>(
    app: &Arc<App>,
    req: &Request<B>,
    route: Route<'_>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let query = req.uri().query().unwrap_or("");
    match route {
        Route::Base => Ok(json_response(StatusCode::OK, "{}".into(), head)),
        Route::Metrics if app.serve_metrics => Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(full(app.metrics.render()))
            .expect("valid")),
        Route::Metrics | Route::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such endpoint",
        )),
        Route::Catalog => catalog::get(app, query, head),
        Route::Manifest { name, reference } => {
            let (up, repo) = app.resolve(name, query)?;
            manifests::get(app, &up, &repo, reference, req.headers(), head).await
        }
        Route::Blob { name, digest } => {
            let (up, repo) = app.resolve(name, query)?;
            blobs::get(app, &up, &repo, digest, req.headers(), head).await
        }
        Route::Tags { name } => {
            let (up, repo) = app.resolve(name, query)?;
            tags::get(app, &up, &repo, name, query, head).await
        }
        Route::Referrers { name, digest } => {
            let (up, repo) = app.resolve(name, query)?;
            referrers::get(&up, &repo, digest, query, head).await
        }
    }
}

pub fn json_response(status: StatusCode, body: String, head: bool) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(if head { full(Vec::new()) } else { full(body) })
        .expect("valid")
}

/// A query parameter's first value.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl App {
    /// Picks the upstream for a request and the repository name within it: a configured registry
    /// named by the first path component, else `?ns=` (looked up among the configured registries,
    /// never dialed as given), else the default.
    pub fn resolve(&self, name: &str, query: &str) -> Result<(Arc<Upstream>, RepoName), ApiError> {
        let (up, repo) = self.pick_upstream(name, query)?;
        if !up.allows(&repo) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "{repo} is not on this mirror's list of repositories for {}",
                    up.name
                ),
            ));
        }
        Ok((up, repo))
    }

    fn pick_upstream(
        &self,
        name: &str,
        query: &str,
    ) -> Result<(Arc<Upstream>, RepoName), ApiError> {
        if let Some((first, rest)) = name.split_once('/')
            && let Some(up) = self.upstream(first)
        {
            let repo = RepoName::parse(rest).ok_or_else(|| ApiError::name_invalid(name))?;
            return Ok((up, repo));
        }
        let repo = RepoName::parse(name).ok_or_else(|| ApiError::name_invalid(name))?;
        if let Some(ns) = query_param(query, "ns") {
            return match self.upstream(&ns) {
                Some(up) => Ok((up, repo)),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NAME_UNKNOWN",
                    format!(
                        "registry {:?} is not configured on this mirror",
                        ns.chars().take(100).collect::<String>()
                    ),
                )),
            };
        }
        match &self.default_upstream {
            Some(up) => Ok((up.clone(), repo)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                "no registry named in the request and no default upstream is configured",
            )),
        }
    }

    fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        // `index.docker.io` and `registry-1.docker.io` are what clients call Docker Hub too.
        let name = match name {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            n => n,
        };
        self.upstreams.iter().find(|u| u.name == name).cloned()
    }
}
