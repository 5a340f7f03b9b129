//! Request paths to routes, parsed from the right and anchored.
//!
//! A repository name may itself contain components called `blobs`, `manifests` or `tags`, so the
//! endpoint is found from the end of the path: `/v2/<name>/(manifests|blobs|referrers)/<ref>` and
//! `/v2/<name>/tags/list`. The name and reference come back as raw text; the handlers parse them
//! into types (which refuse `%`, `..`, NUL and everything else outside the grammar).

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Base,
    Catalog,
    Metrics,
    /// `/healthz`: the process serves.
    Health,
    /// `/readyz`: the cache can be used and the mirror is not shutting down.
    Ready,
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    Tags {
        name: &'a str,
    },
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
    /// A `/v2/` path that names no endpoint we serve.
    Unknown,
}

impl Route<'_> {
    /// What a request on this route asks for, as the code a failure to give it carries.
    pub(super) fn resource(&self) -> Option<super::Code> {
        use super::Code;
        match self {
            Route::Manifest { .. } => Some(Code::ManifestUnknown),
            Route::Blob { .. } => Some(Code::BlobUnknown),
            Route::Tags { .. } | Route::Referrers { .. } => Some(Code::NameUnknown),
            _ => None,
        }
    }

    /// A bounded label for metrics.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Metrics => "metrics",
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::Tags { .. } => "tags",
            Route::Referrers { .. } => "referrers",
            Route::Unknown => "unknown",
        }
    }
}

pub(super) fn parse(path: &str) -> Route<'_> {
    match path {
        "/v2" | "/v2/" => return Route::Base,
        "/v2/_catalog" => return Route::Catalog,
        "/metrics" => return Route::Metrics,
        "/healthz" => return Route::Health,
        "/readyz" => return Route::Ready,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::Unknown;
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags { name };
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return Route::Unknown;
    };
    let Some((name, kind)) = head.rsplit_once('/') else {
        return Route::Unknown;
    };
    match kind {
        "manifests" => Route::Manifest {
            name,
            reference: last,
        },
        "blobs" => Route::Blob { name, digest: last },
        "referrers" => Route::Referrers { name, digest: last },
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Route::Base);
        assert_eq!(parse("/v2"), Route::Base);
        assert_eq!(parse("/v2/_catalog"), Route::Catalog);
        assert_eq!(
            parse("/v2/library/busybox/manifests/latest"),
            Route::Manifest {
                name: "library/busybox",
                reference: "latest"
            }
        );
        assert_eq!(
            parse("/v2/a/blobs/manifests/blobs/sha256:x"),
            Route::Blob {
                name: "a/blobs/manifests",
                digest: "sha256:x"
            }
        );
        assert_eq!(parse("/v2/tags/tags/list"), Route::Tags { name: "tags" });
        assert_eq!(
            parse("/v2/quay.io/coreos/etcd/referrers/sha256:x"),
            Route::Referrers {
                name: "quay.io/coreos/etcd",
                digest: "sha256:x"
            }
        );
        assert_eq!(parse("/v2/a/blobs/uploads/"), Route::Unknown);
        assert_eq!(parse("/v3/"), Route::Unknown);
        assert_eq!(parse("/v2/x"), Route::Unknown);
        assert_eq!(parse("/"), Route::Unknown);
    }
}
