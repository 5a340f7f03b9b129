//! The configured upstreams as one set, and the one place that knows which upstream a name means.
//!
//! Names reach the mirror in two forms. A request path (`/v2/<name>/...`) names an upstream by a
//! configured registry name as its first component (`quay.io/coreos/etcd`), else by `?ns=`, else
//! it means the default upstream. A command line or an archive names an image as dockerd reads
//! it (`busybox`, `quay.io/org/app:v1@sha256:...`: a first component with a `.` or a `:`, or
//! `localhost`, is a registry), and also accepts a configured name as the first component. Both
//! come back with the repository spelled as the upstream spells it (Docker Hub's `library/`
//! rule), so nothing after this point asks which registry, or how it spells names, again.

use std::sync::Arc;

use super::Upstream;
use crate::reference::{ImageName, ImageNameError, Reference, RepoName, is_registry_host};

/// Every configured upstream, and the default one (if any).
pub(crate) struct Upstreams {
    all: Vec<Arc<Upstream>>,
    default: Option<Arc<Upstream>>,
}

/// Why a command-line or archive name names no configured upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unresolved {
    /// Not an image name at all.
    #[error(transparent)]
    BadName(#[from] ImageNameError),
    /// The name gives a registry that no `[[upstream]]` is named.
    #[error("{image}: no [[upstream]] is named {registry:?} in the configuration")]
    NoSuchRegistry { image: String, registry: String },
    /// The name gives no registry, and no upstream is the default.
    #[error("{image}: names no registry, and no upstream is the default")]
    NoDefault { image: String },
}

/// Why a request path's name names no configured upstream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathUnresolved {
    /// The repository part is not a valid repository name.
    NameInvalid,
    /// `?ns=` names a registry no `[[upstream]]` is named (the value as given).
    UnknownNamespace(String),
    /// The first component is a registry host by dockerd's rule (a `.` or a `:`, or
    /// `localhost`) that no `[[upstream]]` is named: never looked up on the default upstream.
    UnknownRegistry(String),
    /// The path names no registry, and no upstream is the default.
    NoDefault,
}

impl Upstreams {
    /// The set; the default is the first upstream configured as `default`.
    pub(crate) fn new(all: Vec<Arc<Upstream>>) -> Upstreams {
        let default = all.iter().find(|u| u.is_default).cloned();
        Upstreams { all, default }
    }

    /// Every upstream, in the order configured.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.all.iter()
    }

    /// Whether `name` is the default upstream's name.
    pub(crate) fn is_default(&self, name: &str) -> bool {
        self.default.as_ref().is_some_and(|d| d.name == name)
    }

    /// The upstream configured under this registry name (`index.docker.io` and
    /// `registry-1.docker.io` are what clients call Docker Hub too).
    pub(crate) fn named(&self, name: &str) -> Option<&Arc<Upstream>> {
        let name = match name {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            n => n,
        };
        self.all.iter().find(|u| u.name == name)
    }

    /// A request path's name (`<name>` in `/v2/<name>/...`, with the request's `?ns=` value): a
    /// configured registry name as the first component, else `ns`, else the default upstream;
    /// with the repository as that upstream spells it, and as the path wrote it. Without `ns`, a
    /// first component that is a registry host but names no upstream is refused: the default
    /// upstream is not asked for `ghcr.io/foo/bar`.
    pub(crate) fn for_path(
        &self,
        name: &str,
        ns: Option<&str>,
    ) -> Result<(Arc<Upstream>, RepoName, RepoName), PathUnresolved> {
        if let Some((first, rest)) = name.split_once('/')
            && let Some(up) = self.named(first)
        {
            let repo = RepoName::parse(rest).ok_or(PathUnresolved::NameInvalid)?;
            return Ok((up.clone(), up.spell(repo.clone()), repo));
        }
        if let (Some((first, rest)), None) = (name.split_once('/'), ns)
            && is_registry_host(first)
        {
            // Only a well-formed name names a registry; anything else is not a name at all.
            if !is_host_and_port(first) || RepoName::parse(rest).is_none() {
                return Err(PathUnresolved::NameInvalid);
            }
            return Err(PathUnresolved::UnknownRegistry(first.to_owned()));
        }
        let repo = RepoName::parse(name).ok_or(PathUnresolved::NameInvalid)?;
        let up = match ns {
            Some(ns) => self
                .named(ns)
                .ok_or_else(|| PathUnresolved::UnknownNamespace(ns.to_owned()))?,
            None => self.default.as_ref().ok_or(PathUnresolved::NoDefault)?,
        };
        Ok((up.clone(), up.spell(repo.clone()), repo))
    }

    /// The upstream an image name points at (its registry, else the default upstream), and the
    /// repository as that upstream spells it.
    pub(crate) fn for_image(
        &self,
        image: &ImageName,
    ) -> Result<(Arc<Upstream>, RepoName), Unresolved> {
        let up = match &image.registry {
            Some(r) => self.named(r).ok_or_else(|| Unresolved::NoSuchRegistry {
                image: image.to_string(),
                registry: r.clone(),
            })?,
            None => self.default.as_ref().ok_or_else(|| Unresolved::NoDefault {
                image: image.to_string(),
            })?,
        };
        Ok((up.clone(), up.spell(image.repo.clone())))
    }

    /// An image named on the command line or in an archive: a configured upstream's name as the
    /// first component (as in request paths), else a registry as dockerd reads names, else the
    /// default upstream; with the repository spelled as that upstream spells it.
    pub(crate) fn locate(
        &self,
        name: &str,
    ) -> Result<(Arc<Upstream>, RepoName, Reference), Unresolved> {
        if let Some((first, rest)) = name.split_once('/')
            && let Some(up) = self.named(first)
        {
            let image = ImageName::parse(rest)?;
            return Ok((up.clone(), up.spell(image.repo), image.reference));
        }
        let image = ImageName::parse(name)?;
        let (up, repo) = self.for_image(&image)?;
        Ok((up, repo, image.reference))
    }
}

/// `host[:port]`: dot-separated labels of letters, digits and inner hyphens, and a port of
/// digits.
fn is_host_and_port(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.split('.').all(label)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        for ok in [
            "ghcr.io",
            "localhost",
            "registry.example:5000",
            "127.0.0.1:5000",
            "a-b.c",
        ] {
            assert!(is_host_and_port(ok), "{ok}");
        }
        for bad in [
            "..%2f..%2fetc",
            ".io",
            "a..b",
            "-a.io",
            "host:",
            "host:port",
            "a.io:123456",
        ] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }
}
